import { attr, type GraphBuilder } from './graph-builder.js';
import type { GraphNode, OnnxGraph } from './onnx-graph.js';

// Vector–Jacobian products, one rule per ONNX operator: given the gradients of a node's outputs, the nodes that
// compute the gradients of its inputs, in standard operators of the model's opset so every execution provider runs
// them. Shapes are static (the training graph is built for one batch size and resolution), so broadcasting is undone
// with plain reductions and reshapes to known shapes.

export class GradientRuleError extends Error {
  override name = 'GradientRuleError';
}

export interface GradientContext {
  graph: OnnxGraph;
  builder: GraphBuilder;
  /** The static shape of a value of the forward graph. */
  shape(name: string): readonly number[];
  /** The values of an integer tensor of the forward graph (shapes, axes, indices, Slice bounds). */
  values(name: string): readonly number[];
  /** Whether the gradient of this forward value is wanted (it depends on a trained weight). */
  needs(name: string): boolean;
}

/**
 * `dy[i]`: the gradient of output i, undefined where nothing downstream needs it. Returns the gradient of each input,
 * undefined where the input needs none.
 */
export type GradientRule = (node: GraphNode, dy: readonly (string | undefined)[], context: GradientContext) => (string | undefined)[];

function fail(node: GraphNode, why: string): never {
  throw new GradientRuleError(`cannot differentiate node ${node.name} (${node.opType}): ${why}`);
}

function onlyOutput(node: GraphNode, dy: readonly (string | undefined)[]): string {
  const gradient = dy[0];
  if (gradient === undefined || dy.slice(1).some((g) => g !== undefined)) fail(node, 'only the gradient of its first output is supported');
  return gradient;
}

function normalizeAxis(node: GraphNode, axis: number, rank: number): number {
  const normalized = axis < 0 ? axis + rank : axis;
  if (normalized < 0 || normalized >= rank) fail(node, `axis ${axis} is out of range for rank ${rank}`);
  return normalized;
}

export function broadcastShape(a: readonly number[], b: readonly number[]): number[] {
  const rank = Math.max(a.length, b.length);
  const out: number[] = [];
  for (let i = 0; i < rank; i++) {
    const da = a[a.length - rank + i] ?? 1;
    const db = b[b.length - rank + i] ?? 1;
    if (da !== db && da !== 1 && db !== 1) throw new GradientRuleError(`shapes [${a.join(',')}] and [${b.join(',')}] do not broadcast`);
    out.push(Math.max(da, db));
  }
  return out;
}

/** Sums a gradient of shape `from` over the axes that broadcasting stretched, giving shape `to`. */
function reduceTo(builder: GraphBuilder, gradient: string, from: readonly number[], to: readonly number[]): string {
  if (from.length === to.length && from.every((d, i) => d === to[i])) return gradient;
  const lead = from.length - to.length;
  const axes: number[] = [];
  from.forEach((d, i) => {
    if (i < lead || (to[i - lead] === 1 && d !== 1)) axes.push(i);
  });
  const summed = axes.length === 0 ? gradient : builder.reduce('ReduceSum', gradient, axes, true);
  return builder.reshape(summed, to);
}

function swapLastTwo(rank: number): number[] {
  const perm = Array.from({ length: rank }, (_, i) => i);
  [perm[rank - 2], perm[rank - 1]] = [perm[rank - 1]!, perm[rank - 2]!];
  return perm;
}

/** Gradients of a binary elementwise node, each from its own expression, reduced to its input's shape. */
function elementwise(
  node: GraphNode,
  context: GradientContext,
  gradients: readonly ((() => string) | null)[],
): (string | undefined)[] {
  const out = context.shape(node.output[0]!);
  return node.input.map((input, index) => {
    const gradient = gradients[index];
    if (!context.needs(input)) return undefined;
    if (!gradient) fail(node, `input ${index} (${input}) has no gradient rule`);
    return reduceTo(context.builder, gradient(), out, context.shape(input));
  });
}

function unary(build: (b: GraphBuilder, node: GraphNode, dy: string) => string): GradientRule {
  return (node, dy, context) => [build(context.builder, node, onlyOutput(node, dy))];
}

/** mean and 1/std over `axes`, recomputed from x: cheaper to hold than two more activations per norm layer. */
function normalizationInputGradient(b: GraphBuilder, x: string, g: string, axes: readonly number[], epsilon: number): string {
  const mean = b.reduce('ReduceMean', x, axes, true);
  const centred = b.op('Sub', [x, mean]);
  const variance = b.reduce('ReduceMean', b.op('Mul', [centred, centred]), axes, true);
  const inverseStd = b.op('Reciprocal', [b.op('Sqrt', [b.op('Add', [variance, b.scalar(epsilon)])])]);
  const normalized = b.op('Mul', [centred, inverseStd]);
  const meanG = b.reduce('ReduceMean', g, axes, true);
  const meanGx = b.reduce('ReduceMean', b.op('Mul', [g, normalized]), axes, true);
  const inner = b.op('Sub', [b.op('Sub', [g, meanG]), b.op('Mul', [normalized, meanGx])]);
  return b.op('Mul', [inner, inverseStd]);
}

function requireFrozen(node: GraphNode, context: GradientContext, indices: readonly number[]): void {
  for (const index of indices) {
    const input = node.input[index];
    if (input && context.needs(input)) fail(node, `the gradient of input ${index} (${input}) is not supported; only its data input may be trained through`);
  }
}

function reduceAxes(node: GraphNode, context: GradientContext): number[] {
  const rank = context.shape(node.input[0]!).length;
  const fromInput = node.input[1] ? context.values(node.input[1]) : null;
  const axes = fromInput ?? context.graph.intsAttribute(node, 'axes', []);
  if (axes.length === 0) {
    if (context.graph.intAttribute(node, 'noop_with_empty_axes', 0) === 1) fail(node, 'noop_with_empty_axes is not supported');
    return Array.from({ length: rank }, (_, i) => i);
  }
  return axes.map((axis) => normalizeAxis(node, axis, rank));
}

/** The source index nearest-neighbour Resize reads for each output index, per the node's attributes. */
function nearestSource(node: GraphNode, context: GradientContext, inSize: number, outSize: number): number[] {
  const g = context.graph;
  const transform = g.stringAttribute(node, 'coordinate_transformation_mode', 'half_pixel');
  const rounding = g.stringAttribute(node, 'nearest_mode', 'round_prefer_floor');
  const scale = outSize / inSize;
  return Array.from({ length: outSize }, (_, j) => {
    let x: number;
    switch (transform) {
      case 'asymmetric': x = j / scale; break;
      case 'half_pixel': x = (j + 0.5) / scale - 0.5; break;
      case 'pytorch_half_pixel': x = outSize > 1 ? (j + 0.5) / scale - 0.5 : 0; break;
      default: fail(node, `coordinate_transformation_mode ${transform} is not supported`);
    }
    let index: number;
    switch (rounding) {
      case 'floor': index = Math.floor(x); break;
      case 'ceil': index = Math.ceil(x); break;
      case 'round_prefer_floor': index = x - Math.floor(x) === 0.5 ? Math.floor(x) : Math.round(x); break;
      case 'round_prefer_ceil': index = Math.round(x); break;
      default: fail(node, `nearest_mode ${rounding} is not supported`);
    }
    return Math.min(Math.max(index, 0), inSize - 1);
  });
}

export const GRADIENT_RULES: Readonly<Record<string, GradientRule>> = Object.freeze({
  Identity: (node, dy) => [onlyOutput(node, dy)],
  Add: (node, dy, context) => {
    const g = onlyOutput(node, dy);
    return elementwise(node, context, [() => g, () => g]);
  },
  Sub: (node, dy, context) => {
    const g = onlyOutput(node, dy);
    return elementwise(node, context, [() => g, () => context.builder.op('Neg', [g])]);
  },
  Mul: (node, dy, context) => {
    const g = onlyOutput(node, dy);
    const [a, b] = node.input as [string, string];
    return elementwise(node, context, [() => context.builder.op('Mul', [g, b]), () => context.builder.op('Mul', [g, a])]);
  },
  Div: (node, dy, context) => {
    const g = onlyOutput(node, dy);
    const [, b] = node.input as [string, string];
    const y = node.output[0]!;
    const bd = context.builder;
    return elementwise(node, context, [() => bd.op('Div', [g, b]), () => bd.op('Neg', [bd.op('Div', [bd.op('Mul', [g, y]), b])])]);
  },
  Pow: (node, dy, context) => {
    const g = onlyOutput(node, dy);
    const [a, exponent] = node.input as [string, string];
    const bd = context.builder;
    requireFrozen(node, context, [1]);
    return elementwise(node, context, [
      () => {
        // ONNX lets the exponent have its own type (an int64 2 is common); the product with the base needs the base's.
        const type = context.graph.elemType(a);
        const p = context.graph.elemType(exponent) === type ? exponent : bd.op('Cast', [exponent], { to: attr.int(type) });
        return bd.op('Mul', [g, bd.op('Mul', [p, bd.op('Pow', [a, bd.op('Sub', [p, bd.constant(type, [], [1])])])])]);
      },
      null,
    ]);
  },
  Neg: unary((b, _node, g) => b.op('Neg', [g])),
  Sqrt: unary((b, node, g) => b.op('Div', [b.op('Mul', [g, b.scalar(0.5)]), node.output[0]!])),
  Reciprocal: unary((b, node, g) => { const y = node.output[0]!; return b.op('Neg', [b.op('Mul', [g, b.op('Mul', [y, y])])]); }),
  Exp: unary((b, node, g) => b.op('Mul', [g, node.output[0]!])),
  Sigmoid: unary((b, node, g) => {
    const y = node.output[0]!;
    return b.op('Mul', [g, b.op('Mul', [y, b.op('Sub', [b.scalar(1), y])])]);
  }),
  Tanh: unary((b, node, g) => {
    const y = node.output[0]!;
    return b.op('Mul', [g, b.op('Sub', [b.scalar(1), b.op('Mul', [y, y])])]);
  }),
  Erf: unary((b, node, g) => {
    const x = node.input[0]!;
    return b.op('Mul', [g, b.op('Mul', [b.scalar(2 / Math.sqrt(Math.PI)), b.op('Exp', [b.op('Neg', [b.op('Mul', [x, x])])])])]);
  }),
  Sin: unary((b, node, g) => b.op('Mul', [g, b.op('Cos', [node.input[0]!])])),
  Cos: unary((b, node, g) => b.op('Neg', [b.op('Mul', [g, b.op('Sin', [node.input[0]!])])])),
  Softmax: (node, dy, context) => {
    if (context.graph.opset < 13) fail(node, `Softmax before opset 13 flattens its input; this model is opset ${context.graph.opset}`);
    const g = onlyOutput(node, dy);
    const y = node.output[0]!;
    const b = context.builder;
    const axis = normalizeAxis(node, context.graph.intAttribute(node, 'axis', -1), context.shape(y).length);
    const dot = b.reduce('ReduceSum', b.op('Mul', [g, y]), [axis], true);
    return [b.op('Mul', [y, b.op('Sub', [g, dot])])];
  },
  MatMul: (node, dy, context) => {
    const g = onlyOutput(node, dy);
    const [a, bInput] = node.input as [string, string];
    const shapeA = context.shape(a);
    const shapeB = context.shape(bInput);
    if (shapeA.length < 2 || shapeB.length < 2) fail(node, 'one-dimensional MatMul operands are not supported');
    const b = context.builder;
    const batch = broadcastShape(shapeA.slice(0, -2), shapeB.slice(0, -2));
    const gradA = context.needs(a)
      ? reduceTo(b, b.op('MatMul', [g, b.op('Transpose', [bInput], { perm: attr.ints(swapLastTwo(shapeB.length)) })]), [...batch, shapeA.at(-2)!, shapeA.at(-1)!], shapeA)
      : undefined;
    const gradB = context.needs(bInput)
      ? reduceTo(b, b.op('MatMul', [b.op('Transpose', [a], { perm: attr.ints(swapLastTwo(shapeA.length)) }), g]), [...batch, shapeB.at(-2)!, shapeB.at(-1)!], shapeB)
      : undefined;
    return [gradA, gradB];
  },
  Gemm: (node, dy, context) => {
    const g = onlyOutput(node, dy);
    const graph = context.graph;
    const b = context.builder;
    const [a, bInput, c] = node.input as [string, string, string | undefined];
    const alpha = graph.floatAttribute(node, 'alpha', 1);
    const beta = graph.floatAttribute(node, 'beta', 1);
    const transA = graph.intAttribute(node, 'transA', 0) === 1;
    const transB = graph.intAttribute(node, 'transB', 0) === 1;
    // d op(A) = alpha·dy·op(B)ᵀ and d op(B) = alpha·op(A)ᵀ·dy; a transposed operand takes the transpose back.
    const gradA = context.needs(a)
      ? (transA
        ? b.op('Gemm', [bInput, g], { alpha: attr.float(alpha), transA: attr.int(transB ? 1 : 0), transB: attr.int(1) })
        : b.op('Gemm', [g, bInput], { alpha: attr.float(alpha), transB: attr.int(transB ? 0 : 1) }))
      : undefined;
    const gradB = context.needs(bInput)
      ? (transB
        ? b.op('Gemm', [g, a], { alpha: attr.float(alpha), transA: attr.int(1), transB: attr.int(transA ? 1 : 0) })
        : b.op('Gemm', [a, g], { alpha: attr.float(alpha), transA: attr.int(transA ? 0 : 1) }))
      : undefined;
    const gradC = c && context.needs(c)
      ? reduceTo(b, b.op('Mul', [g, b.scalar(beta)]), context.shape(node.output[0]!), context.shape(c))
      : undefined;
    return [gradA, gradB, gradC];
  },
  Conv: (node, dy, context) => {
    const g = onlyOutput(node, dy);
    requireFrozen(node, context, [1, 2]);
    const graph = context.graph;
    const [x, weight] = node.input as [string, string];
    const autoPad = graph.stringAttribute(node, 'auto_pad', 'NOTSET');
    if (autoPad !== 'NOTSET') fail(node, `auto_pad ${autoPad} is not supported; explicit pads are`);
    const xShape = context.shape(x);
    const yShape = context.shape(node.output[0]!);
    const kernel = context.shape(weight).slice(2);
    const spatial = kernel.length;
    const strides = graph.intsAttribute(node, 'strides', Array(spatial).fill(1));
    const dilations = graph.intsAttribute(node, 'dilations', Array(spatial).fill(1));
    const pads = graph.intsAttribute(node, 'pads', Array(spatial * 2).fill(0));
    // A strided conv drops the rows its last window did not reach; the transpose must give them back as zeros.
    const outputPadding = kernel.map((k, i) =>
      xShape[i + 2]! - ((yShape[i + 2]! - 1) * strides[i]! + (k - 1) * dilations[i]! + 1 - pads[i]! - pads[i + spatial]!));
    if (outputPadding.some((p, i) => p < 0 || p >= Math.max(strides[i]!, dilations[i]!))) fail(node, `no ConvTranspose gives back its input shape (output padding ${outputPadding.join(',')})`);
    return [context.builder.op('ConvTranspose', [g, weight], {
      strides: attr.ints(strides),
      dilations: attr.ints(dilations),
      pads: attr.ints(pads),
      group: attr.int(graph.intAttribute(node, 'group', 1)),
      kernel_shape: attr.ints(kernel),
      output_padding: attr.ints(outputPadding),
    }), undefined, undefined];
  },
  LayerNormalization: (node, dy, context) => {
    const g = onlyOutput(node, dy);
    requireFrozen(node, context, [1, 2]);
    const [x, scale] = node.input as [string, string];
    const rank = context.shape(x).length;
    const axis = normalizeAxis(node, context.graph.intAttribute(node, 'axis', -1), rank);
    const axes = Array.from({ length: rank - axis }, (_, i) => axis + i);
    const b = context.builder;
    const scaled = b.op('Mul', [g, scale]);
    return [normalizationInputGradient(b, x, scaled, axes, context.graph.floatAttribute(node, 'epsilon', 1e-5)), undefined, undefined];
  },
  InstanceNormalization: (node, dy, context) => {
    const g = onlyOutput(node, dy);
    requireFrozen(node, context, [1, 2]);
    const [x, scale] = node.input as [string, string];
    const shape = context.shape(x);
    const b = context.builder;
    const perChannel = b.reshape(scale, [1, shape[1]!, ...Array(shape.length - 2).fill(1)]);
    const axes = Array.from({ length: shape.length - 2 }, (_, i) => i + 2);
    return [normalizationInputGradient(b, x, b.op('Mul', [g, perChannel]), axes, context.graph.floatAttribute(node, 'epsilon', 1e-5)), undefined, undefined];
  },
  ReduceMean: (node, dy, context) => {
    const g = onlyOutput(node, dy);
    const x = node.input[0]!;
    const shape = context.shape(x);
    const axes = reduceAxes(node, context);
    const count = axes.reduce((product, axis) => product * shape[axis]!, 1);
    const b = context.builder;
    const kept = b.reshape(g, shape.map((d, i) => (axes.includes(i) ? 1 : d)));
    return [b.op('Mul', [b.op('Expand', [kept, b.int64s(shape)]), b.scalar(1 / count)])];
  },
  ReduceSum: (node, dy, context) => {
    const g = onlyOutput(node, dy);
    const x = node.input[0]!;
    const shape = context.shape(x);
    const axes = reduceAxes(node, context);
    const b = context.builder;
    return [b.op('Expand', [b.reshape(g, shape.map((d, i) => (axes.includes(i) ? 1 : d))), b.int64s(shape)])];
  },
  Reshape: (node, dy, context) => [context.builder.reshape(onlyOutput(node, dy), context.shape(node.input[0]!))],
  Flatten: (node, dy, context) => [context.builder.reshape(onlyOutput(node, dy), context.shape(node.input[0]!))],
  Squeeze: (node, dy, context) => [context.builder.reshape(onlyOutput(node, dy), context.shape(node.input[0]!))],
  Unsqueeze: (node, dy, context) => [context.builder.reshape(onlyOutput(node, dy), context.shape(node.input[0]!))],
  Expand: (node, dy, context) => [reduceTo(context.builder, onlyOutput(node, dy), context.shape(node.output[0]!), context.shape(node.input[0]!))],
  Transpose: (node, dy, context) => {
    const rank = context.shape(node.input[0]!).length;
    const perm = context.graph.intsAttribute(node, 'perm', Array.from({ length: rank }, (_, i) => rank - 1 - i));
    const inverse: number[] = Array(rank);
    perm.forEach((axis, i) => { inverse[axis] = i; });
    return [context.builder.op('Transpose', [onlyOutput(node, dy)], { perm: attr.ints(inverse) })];
  },
  Concat: (node, dy, context) => {
    const g = onlyOutput(node, dy);
    const rank = context.shape(node.output[0]!).length;
    const axis = normalizeAxis(node, context.graph.intAttribute(node, 'axis'), rank);
    let offset = 0;
    return node.input.map((input) => {
      const length = context.shape(input)[axis]!;
      const start = offset;
      offset += length;
      if (!context.needs(input)) return undefined;
      const b = context.builder;
      return b.op('Slice', [g, b.int64s([start]), b.int64s([start + length]), b.int64s([axis])]);
    });
  },
  Split: (node, dy, context) => {
    const x = node.input[0]!;
    const rank = context.shape(x).length;
    const axis = normalizeAxis(node, context.graph.intAttribute(node, 'axis', 0), rank);
    const b = context.builder;
    const parts = node.output.map((output, i) => dy[i] ?? b.op('ConstantOfShape', [b.int64s(context.shape(output))]));
    return [b.op('Concat', parts, { axis: attr.int(axis) })];
  },
  Slice: (node, dy, context) => {
    const g = onlyOutput(node, dy);
    const [x, startsName, endsName, axesName, stepsName] = node.input as [string, string, string, string?, string?];
    const shape = context.shape(x);
    const starts = context.values(startsName);
    const ends = context.values(endsName);
    const axes = axesName ? context.values(axesName) : starts.map((_, i) => i);
    if (stepsName && context.values(stepsName).some((step) => step !== 1)) fail(node, 'only steps of 1 are supported');
    const before = Array(shape.length).fill(0) as number[];
    const after = Array(shape.length).fill(0) as number[];
    axes.forEach((rawAxis, i) => {
      const axis = normalizeAxis(node, rawAxis, shape.length);
      const dim = shape[axis]!;
      const clamp = (v: number) => Math.min(Math.max(v < 0 ? v + dim : v, 0), dim);
      const start = clamp(starts[i]!);
      const end = Math.max(clamp(ends[i]!), start);
      before[axis] = start;
      after[axis] = dim - end;
    });
    const b = context.builder;
    return [b.op('Pad', [g, b.int64s([...before, ...after])]), undefined, undefined, undefined, undefined];
  },
  Gather: (node, dy, context) => {
    const g = onlyOutput(node, dy);
    const [data, indicesName] = node.input as [string, string];
    const shape = context.shape(data);
    const axis = normalizeAxis(node, context.graph.intAttribute(node, 'axis', 0), shape.length);
    const indexShape = context.shape(indicesName);
    const dim = shape[axis]!;
    const indices = context.values(indicesName).map((i) => (i < 0 ? i + dim : i));
    const first = indices[0]!;
    const contiguous = indexShape.length <= 1 && indices.every((index, i) => index === first + i);
    if (!contiguous) fail(node, 'only a scalar index or a contiguous range of indices is supported');
    const b = context.builder;
    const asSlice = indexShape.length === 0 ? b.reshape(g, shape.map((d, i) => (i === axis ? 1 : d))) : g;
    const before = shape.map((_, i) => (i === axis ? first : 0));
    const after = shape.map((_, i) => (i === axis ? dim - first - indices.length : 0));
    return [b.op('Pad', [asSlice, b.int64s([...before, ...after])]), undefined];
  },
  Cast: (node, dy, context) => {
    const x = node.input[0]!;
    if (!context.graph.isFloat(x)) fail(node, `its input ${context.graph.describe(x)} is not a float type`);
    return [context.builder.op('Cast', [onlyOutput(node, dy)], { to: attr.int(context.graph.elemType(x)) })];
  },
  Where: (node, dy, context) => {
    const g = onlyOutput(node, dy);
    const [condition, a, bInput] = node.input as [string, string, string];
    const b = context.builder;
    const out = context.shape(node.output[0]!);
    const zero = b.constant(context.graph.elemType(a), [], [0]);
    return [
      undefined,
      context.needs(a) ? reduceTo(b, b.op('Where', [condition, g, zero]), out, context.shape(a)) : undefined,
      context.needs(bInput) ? reduceTo(b, b.op('Where', [condition, zero, g]), out, context.shape(bInput)) : undefined,
    ];
  },
  Resize: (node, dy, context) => {
    const g = onlyOutput(node, dy);
    const mode = context.graph.stringAttribute(node, 'mode', 'nearest');
    if (mode !== 'nearest') fail(node, `mode ${mode} is not supported; nearest is`);
    const x = node.input[0]!;
    const inShape = context.shape(x);
    const outShape = context.shape(node.output[0]!);
    if (inShape.length !== 4 || inShape[0] !== outShape[0] || inShape[1] !== outShape[1]) fail(node, 'only 4-D spatial resizing is supported');
    const factors = [2, 3].map((axis) => {
      const factor = outShape[axis]! / inShape[axis]!;
      const sources = nearestSource(node, context, inShape[axis]!, outShape[axis]!);
      if (!Number.isInteger(factor) || sources.some((source, j) => source !== Math.floor(j / factor))) {
        fail(node, `axis ${axis}: ${inShape[axis]} → ${outShape[axis]} is not an integer nearest-neighbour upsampling`);
      }
      return factor;
    });
    const b = context.builder;
    const blocks = b.reshape(g, [inShape[0]!, inShape[1]!, inShape[2]!, factors[0]!, inShape[3]!, factors[1]!]);
    return [b.reduce('ReduceSum', blocks, [3, 5], false)];
  },
});

export function gradientRule(node: GraphNode): GradientRule {
  const rule = GRADIENT_RULES[node.opType];
  if (rule === undefined) {
    throw new GradientRuleError(`no gradient rule for operator ${node.opType} (node ${node.name}), which lies between a trained weight and the loss`);
  }
  return rule;
}
