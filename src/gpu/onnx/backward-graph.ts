import { gradientRule, type GradientContext } from './gradient-rules.js';
import type { GraphBuilder } from './graph-builder.js';
import type { OnnxGraph } from './onnx-graph.js';
import { SegmentRecomputer, type SegmentOf } from './recompute.js';

// Reverse-mode differentiation over an ONNX graph: from the gradients of some values (the seeds, e.g. d loss /
// d prediction), the gradients of the chosen inputs, as nodes appended to the same graph so the backward pass reads
// the forward activations it needs where the forward pass left them.

export class BackwardGraphError extends Error {
  override name = 'BackwardGraphError';
}

/** Static facts about every value of the forward graph, measured once for the batch size and resolution trained at. */
export interface ValueFacts {
  shape(name: string): readonly number[];
  /** Integer tensors (shapes, axes, indices): their values. */
  values(name: string): readonly number[];
}

export interface BackwardRequest {
  /** The values to differentiate with respect to: graph inputs holding trained weights. */
  wrt: readonly string[];
  /** Forward value → the name of its gradient, already added to the builder. */
  seeds: ReadonlyMap<string, string>;
  /** Gradient checkpointing: each segment's forward values are recomputed for its backward instead of kept. */
  segmentOf?: SegmentOf;
}

/** Values computed from the graph's inputs, the inputs themselves excluded: what a forward pass produces anew. */
function activations(graph: OnnxGraph): Set<string> {
  const fromInputs = new Set(graph.inputs.keys());
  const computed = new Set<string>();
  for (const node of graph.nodes) {
    if (!node.input.some((input) => fromInputs.has(input))) continue;
    for (const output of node.output) {
      fromInputs.add(output);
      computed.add(output);
    }
  }
  return computed;
}

/** Appends the backward pass to `builder`; returns the name of each `wrt` value's gradient. */
export function addBackwardPass(graph: OnnxGraph, builder: GraphBuilder, facts: ValueFacts, request: BackwardRequest): Map<string, string> {
  if (graph.opset < 13) throw new BackwardGraphError(`training needs a model of ONNX opset 13 or later; this one is opset ${graph.opset}`);
  const wrt = new Set(request.wrt);
  const dependsOnWeights = new Set(request.wrt);
  for (const node of graph.nodes) {
    if (node.input.some((input) => dependsOnWeights.has(input))) {
      for (const output of node.output) if (graph.isFloat(output)) dependsOnWeights.add(output);
    }
  }
  const context: GradientContext = {
    graph,
    builder,
    shape: (name) => facts.shape(name),
    values: (name) => graph.constant(name)?.values ?? facts.values(name),
    needs: (name) => dependsOnWeights.has(name),
  };
  const contributions = new Map<string, string[]>();
  const add = (name: string, gradient: string) => {
    const list = contributions.get(name);
    if (list) list.push(gradient);
    else contributions.set(name, [gradient]);
  };
  const total = (name: string): string | undefined => {
    const list = contributions.get(name);
    if (list === undefined) return undefined;
    if (list.length > 1) contributions.set(name, [builder.op('Sum', list)]);
    return contributions.get(name)![0];
  };
  for (const [value, gradient] of request.seeds) add(value, gradient);
  let recomputer: SegmentRecomputer | undefined;
  if (request.segmentOf) {
    const computed = activations(graph);
    recomputer = new SegmentRecomputer(graph, builder, request.segmentOf, (name) => computed.has(name));
  }

  for (let index = graph.nodes.length - 1; index >= 0; index--) {
    const node = graph.nodes[index]!;
    recomputer?.visit(node);
    if (!node.input.some((input) => dependsOnWeights.has(input))) continue;
    const dy = node.output.map(total);
    if (dy.every((gradient) => gradient === undefined)) continue;
    recomputer?.differentiating(node, dy);
    const gradients = gradientRule(node)(node, dy, context);
    node.input.forEach((input, i) => {
      if (!input || !dependsOnWeights.has(input)) return;
      const gradient = gradients[i];
      if (gradient === undefined) throw new BackwardGraphError(`node ${node.name} (${node.opType}) gave no gradient for its input ${input}`);
      add(input, gradient);
      if (wrt.has(input)) recomputer?.weightGradient(gradient);
    });
  }
  recomputer?.finish();

  const result = new Map<string, string>();
  for (const name of request.wrt) {
    const gradient = total(name);
    if (gradient === undefined) throw new BackwardGraphError(`${name} does not affect the loss: no path leads from it to the seeded values`);
    result.set(name, gradient);
  }
  return result;
}
