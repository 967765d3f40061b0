import { DataType } from './onnx-proto.js';
import type { GraphBuilder } from './graph-builder.js';
import type { GraphNode, OnnxGraph } from './onnx-graph.js';

// Gradient checkpointing for a backward pass appended to its forward graph. Without it, every forward value a
// gradient rule reads stays alive from the forward pass until the backward pass reaches it. With it, the forward
// nodes are grouped into segments (a UNet's resnets and transformer blocks); the backward nodes of a segment read a
// second copy of the segment's forward nodes instead, computed from the segment's inputs just before they need it,
// so only the values that cross segment borders are held through the whole step.
//
// onnxruntime orders nodes by their data dependencies alone, so nothing would stop it from computing the copy right
// after the forward pass, which saves nothing. The copy therefore reads its inputs through a "gate": x + z, where z is
// a scalar 0 computed from the gradient arriving at the segment's output, and x + 0 is x exactly. That gradient exists
// only once the backward pass has reached the segment. z also waits for the weight gradients of the segment before:
// each is an output of its own, and onnxruntime might otherwise compute one late, holding that segment's copies
// (which it reads) while later segments are recomputed.

/** The segment a forward node belongs to, or undefined for nodes that belong to none (they are never recomputed). */
export type SegmentOf = (node: GraphNode) => string | undefined;

/** Consecutive forward nodes of one segment, as the backward walk meets them (last node first). */
interface Run {
  segment: string;
  members: Set<GraphNode>;
  /** The first output gradient of a member that the walk met: the copy waits for it. */
  gate?: string;
  /** The weight gradients of the run before: the copy waits for them too. */
  after: string[];
  /** Index in the builder's nodes of the first backward node of the run. */
  start: number;
}

export class SegmentRecomputer {
  private run: Run | undefined;
  private weightGradients: string[] = [];

  /** `isActivation`: whether a forward value is computed from the graph's inputs (weights and constants are not). */
  constructor(
    private readonly graph: OnnxGraph,
    private readonly builder: GraphBuilder,
    private readonly segmentOf: SegmentOf,
    private readonly isActivation: (name: string) => boolean,
  ) {}

  /** Every forward node, in reverse order, before the backward walk differentiates it (or passes it by). */
  visit(node: GraphNode): void {
    const segment = this.segmentOf(node);
    // Nodes of no segment (the exporter's weight Identities) sit among a segment's nodes without ending its run.
    if (segment === undefined) return;
    if (this.run?.segment !== segment) {
      this.finish();
      this.run = { segment, members: new Set(), start: this.builder.nodes.length, after: this.weightGradients };
      this.weightGradients = [];
    }
    this.run.members.add(node);
  }

  /** A node's output gradients are summed and its rule is about to add the nodes of its input gradients. */
  differentiating(node: GraphNode, dy: readonly (string | undefined)[]): void {
    const run = this.run;
    if (run === undefined || run.gate !== undefined || !run.members.has(node)) return;
    run.gate = dy.find((gradient) => gradient !== undefined);
    run.start = this.builder.nodes.length;
  }

  /** The backward walk has produced (a contribution to) the gradient of a trained weight. */
  weightGradient(gradient: string): void {
    this.weightGradients.push(gradient);
  }

  /** Recomputes what the backward nodes of the current run read, and points them at the copies. */
  finish(): void {
    const run = this.run;
    this.run = undefined;
    if (run?.gate === undefined) return;
    const { graph, builder } = this;
    const producers = new Map<string, GraphNode>();
    for (const member of run.members) for (const output of member.output) producers.set(output, member);
    // Integer values (shapes, indices) are a few bytes: the backward keeps reading the forward's own.
    const recomputed = (value: string) => producers.has(value) && graph.isFloat(value);

    const backwardEnd = builder.nodes.length;
    const toCopy = new Set<GraphNode>();
    const pending = builder.nodes.slice(run.start).flatMap((node) => node.input.filter(recomputed));
    for (let value = pending.pop(); value !== undefined; value = pending.pop()) {
      const producer = producers.get(value)!;
      if (toCopy.has(producer)) continue;
      toCopy.add(producer);
      pending.push(...producer.input.filter(recomputed));
    }
    if (toCopy.size === 0) return;

    const copies = new Map<string, string>();
    const gated = new Map<string, string>();
    let zero: string | undefined;
    const gate = (value: string): string => {
      zero ??= this.zeroAfter([run.gate!, ...run.after]);
      let through = gated.get(value);
      if (through === undefined) gated.set(value, (through = builder.op('Add', [value, zero])));
      return through;
    };
    const ordered = [...toCopy].sort((a, b) => a.fieldIndex - b.fieldIndex);
    for (const node of ordered) {
      const input = node.input.map((value) => copies.get(value) ?? (value !== '' && !producers.has(value) && graph.isFloat(value) && this.isActivation(value) ? gate(value) : value));
      builder.copy(node, input).forEach((copy, i) => {
        if (copy !== '') copies.set(node.output[i]!, copy);
      });
    }
    for (let index = run.start; index < backwardEnd; index++) {
      const node = builder.nodes[index]!;
      if (node.input.some((value) => copies.has(value))) builder.nodes[index] = { ...node, input: node.input.map((value) => copies.get(value) ?? value) };
    }
    // Nodes stay in topological order: the gate and the copy go right before the run's backward nodes.
    builder.nodes.splice(run.start, 0, ...builder.nodes.splice(backwardEnd));
  }

  /** A float32 scalar 0 that onnxruntime can compute only once all `gradients` exist; a NaN in them still gives 0. */
  private zeroAfter(gradients: readonly string[]): string {
    const { builder } = this;
    const index = builder.constant(DataType.int64, [], [0]);
    const firsts = gradients.map((gradient) => builder.op('Gather', [builder.reshape(gradient, [-1]), index]));
    const zero = builder.scalar(0);
    return builder.op('Where', [builder.op('IsNaN', [firsts.length === 1 ? firsts[0]! : builder.op('Sum', firsts)]), zero, zero]);
  }
}
