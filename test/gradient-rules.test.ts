import { test, type TestContext } from 'node:test';
import assert from 'node:assert/strict';
import { tmpdir } from 'node:os';
import ort from 'onnxruntime-node';
import { addBackwardPass } from '../src/gpu/onnx/backward-graph.js';
import { attr, GraphBuilder, rewriteModel } from '../src/gpu/onnx/graph-builder.js';
import { OnnxGraph } from '../src/gpu/onnx/onnx-graph.js';
import { DataType, type AttributeValue, type NodeSpec } from '../src/gpu/onnx/onnx-proto.js';
import { OnnxModel, RunClock } from '../src/gpu/onnx-session.js';
import { probeValueFacts } from '../src/gpu/training/value-facts.js';
import { encodeTestModel, type InitializerSpec, type ModelSpec } from './support/onnx-model.js';

// Every gradient rule against onnxruntime itself: a model of one or a few nodes computes y, the loss is L = Σ y·r for
// a random r (so dL/dy = r seeds the backward pass), and the gradients the backward graph computes must agree with
// central differences of L taken by running the forward model on perturbed inputs.

/** Central-difference step; every input is O(1). */
const H = 1e-2;
/** float32's unit roundoff: the relative rounding of each stored value. */
const ROUNDOFF = 2 ** -24;
/**
 * Tolerance: float32 rounds each output by ~6e-8 relative; 16 such roundings of every output that moved, in each of
 * L(x±hv), amplified by 1/2h (~1e-6 per unit output), plus the central difference's truncation h²·L‴/6, allowed up to
 * 10·h² = 1e-3 of Σ|∂L/∂x·v| (L‴/L′ stays under 60 for the input ranges below).
 */
const ROUNDINGS_PER_OUTPUT = 16;
const TRUNCATION = 10 * H * H;

const CPU = { kind: 'cpu', index: 0 } as const;
const INT64_MAX = 2n ** 63n - 1n;

/** mulberry32: a seeded stream of uniform numbers in [0, 1). */
function seededRandom(seed: number): () => number {
  let state = seed >>> 0;
  return () => {
    state = (state + 0x6d2b79f5) >>> 0;
    let t = Math.imul(state ^ (state >>> 15), state | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 2 ** 32;
  };
}

/** FNV-1a, so each case draws its own numbers whichever cases run before it. */
function seedOf(text: string): number {
  let hash = 0x811c9dc5;
  for (let i = 0; i < text.length; i++) hash = Math.imul(hash ^ text.charCodeAt(i), 0x01000193);
  return hash >>> 0;
}

const count = (dims: readonly number[]): number => dims.reduce((product, dim) => product * dim, 1);

function uniform(random: () => number, length: number, [low, high]: readonly [number, number]): Float32Array {
  return Float32Array.from({ length }, () => low + (high - low) * random());
}

function node(opType: string, input: readonly string[], output = 'y', attributes?: Record<string, AttributeValue>): NodeSpec {
  return { name: `${opType}_${output}`, opType, input, output: [output], ...(attributes ? { attributes } : {}) };
}

const int64s = (name: string, values: readonly (number | bigint)[], dims: readonly number[] = [values.length]): InitializerSpec =>
  ({ name, dataType: DataType.int64, dims, values: values.map((value) => BigInt(value)) });

const floats = (name: string, dims: readonly number[], values: readonly number[]): InitializerSpec =>
  ({ name, dataType: DataType.float, dims, values });

/** Random constant operands (weights, scales), drawn from their own stream named by `seed`. */
function randomFloats(name: string, dims: readonly number[], seed: string): InitializerSpec {
  return floats(name, dims, Array.from(uniform(seededRandom(seedOf(seed)), count(dims), [-1, 1])));
}

interface GradientCase {
  name: string;
  opset?: number;
  /** Float inputs and their shapes. */
  inputs: Record<string, readonly number[]>;
  /** The inputs to differentiate with respect to; every input when absent. */
  wrt?: readonly string[];
  /** Where the inputs' values are drawn from. */
  range?: readonly [number, number];
  initializers?: readonly InitializerSpec[];
  /** Nodes computing y from the inputs. */
  nodes: readonly NodeSpec[];
}

const gradientOutput = (input: string): string => `gradient_of_${input}`;

/**
 * The forward model plus its backward pass seeded with dL/dy = r (a new input), the gradient of each `wrt` input as an
 * output; the shapes come from probing the forward model as the trainer does.
 */
async function buildGradientModel(forward: Uint8Array, inputShapes: Record<string, readonly number[]>, wrt: readonly string[]): Promise<{ bytes: Uint8Array; yShape: readonly number[] }> {
  const facts = await probeValueFacts(forward, tmpdir(), inputShapes, CPU);
  const graph = OnnxGraph.decode(forward);
  const builder = new GraphBuilder(graph.names, graph.opset, 'grad');
  builder.input('r', DataType.float, facts.shape('y'));
  const gradients = addBackwardPass(graph, builder, facts, { wrt, seeds: new Map([['y', 'r']]) });
  for (const input of wrt) {
    builder.op('Identity', [gradients.get(input)!], undefined, builder.claim(gradientOutput(input)));
    builder.output(gradientOutput(input), DataType.float, facts.shape(input));
  }
  return { bytes: rewriteModel(graph, builder), yShape: facts.shape('y') };
}

function loadModel(label: string, bytes: Uint8Array): Promise<OnnxModel> {
  return OnnxModel.load(label, { bytes, externalDataDir: tmpdir() }, CPU, new RunClock());
}

function feedsOf(values: ReadonlyMap<string, Float32Array>, shapes: Record<string, readonly number[]>): Record<string, ort.Tensor> {
  return Object.fromEntries([...values].map(([name, data]) => [name, new ort.Tensor('float32', data, shapes[name]!)]));
}

interface Check {
  error: number;
  tolerance: number;
  /** Σ|∂L/∂x·v|: the size of the directional derivative before its terms cancel. */
  scale: number;
}

/**
 * ⟨∂L/∂x, v⟩ against (L(x+hv) − L(x−hv)) / 2h. The difference is taken against the float32 inputs actually fed, so
 * rounding x ± hv to float32 costs nothing, and output by output, so outputs that did not move add no noise.
 */
async function checkDirection(
  forward: OnnxModel, base: ReadonlyMap<string, Float32Array>, shapes: Record<string, readonly number[]>,
  input: string, gradient: Float32Array, direction: Float32Array, r: Float32Array,
): Promise<Check> {
  const x = base.get(input)!;
  const plus = Float32Array.from(x, (value, i) => value + H * direction[i]!);
  const minus = Float32Array.from(x, (value, i) => value - H * direction[i]!);
  const run = async (moved: Float32Array) => (await forward.run(feedsOf(new Map([...base, [input, moved]]), shapes), ['y']))['y']!;
  const [yPlus, yMinus] = [await run(plus), await run(minus)];
  let numeric = 0;
  let noise = 0;
  for (let i = 0; i < r.length; i++) {
    if (yPlus[i] === yMinus[i]) continue;
    numeric += r[i]! * (yPlus[i]! - yMinus[i]!);
    noise += Math.abs(r[i]!) * (Math.abs(yPlus[i]!) + Math.abs(yMinus[i]!));
  }
  let analytic = 0;
  let scale = 0;
  for (let i = 0; i < x.length; i++) {
    const step = plus[i]! - minus[i]!;
    analytic += gradient[i]! * step;
    scale += Math.abs(gradient[i]! * step);
  }
  const tolerance = (ROUNDINGS_PER_OUTPUT * ROUNDOFF * noise + TRUNCATION * scale) / (2 * H);
  return { error: Math.abs(numeric - analytic) / (2 * H), tolerance, scale: scale / (2 * H) };
}

async function checkGradients(t: TestContext, c: GradientCase): Promise<void> {
  const random = seededRandom(seedOf(c.name));
  const wrt = c.wrt ?? Object.keys(c.inputs);
  const spec: ModelSpec = {
    opset: c.opset ?? 17,
    inputs: Object.entries(c.inputs).map(([name, dims]) => ({ name, dims })),
    initializers: c.initializers ?? [],
    nodes: c.nodes,
    outputs: [{ name: 'y', dims: null }],
  };
  const forwardBytes = encodeTestModel(spec);
  const { bytes, yShape } = await buildGradientModel(forwardBytes, c.inputs, wrt);
  const base = new Map(Object.entries(c.inputs).map(([name, dims]) => [name, uniform(random, count(dims), c.range ?? [-1, 1])]));
  const r = uniform(random, count(yShape), [-1, 1]);
  const shapes = { ...c.inputs, r: yShape };

  const training = await loadModel('gradients', bytes);
  let gradients: Record<string, Float32Array>;
  try {
    gradients = await training.run(feedsOf(new Map([...base, ['r', r]]), shapes), wrt.map(gradientOutput));
  } finally {
    await training.dispose();
  }

  const forward = await loadModel('forward', forwardBytes);
  try {
    let worst = 0;
    for (const input of wrt) {
      const gradient = gradients[gradientOutput(input)]!;
      const length = gradient.length;
      assert.equal(length, base.get(input)!.length, `${input}: gradient length`);
      const unit = (index: number) => Float32Array.from({ length }, (_, i) => (i === index ? 1 : 0));
      const directions: [string, Float32Array][] = [
        ['random direction', uniform(random, length, [-1, 1])],
        ['first element', unit(0)],
        ['last element', unit(length - 1)],
        ['a random element', unit(Math.floor(random() * length))],
      ];
      for (const [label, direction] of directions) {
        const check = await checkDirection(forward, base, shapes, input, gradient, direction, r);
        assert.ok(check.error <= check.tolerance,
          `${input}, ${label}: |finite difference − gradient| = ${check.error.toExponential(2)} > ${check.tolerance.toExponential(2)} (Σ|∂L/∂x·v| = ${check.scale.toExponential(3)})`);
        // Over 1% of the derivative's size, a gradient off by a few percent (or a zero one, where nothing moved) would pass.
        if (label === 'random direction') {
          assert.ok(check.tolerance < 0.01 * check.scale, `${input}: the tolerance ${check.tolerance.toExponential(2)} is over 1% of Σ|∂L/∂x·v| = ${check.scale.toExponential(2)}`);
        }
        if (check.error > 0) worst = Math.max(worst, check.error / check.tolerance);
      }
    }
    t.diagnostic(`worst error ${(100 * worst).toFixed(1)}% of the tolerance`);
  } finally {
    await forward.dispose();
  }
}

const BROADCASTS: readonly [string, readonly number[], readonly number[]][] = [
  ['[2,3,4] with [4]', [2, 3, 4], [4]],
  ['[3,1] with [2,3,4]', [3, 1], [2, 3, 4]],
  ['[2,3,4] with [1,3,4]', [2, 3, 4], [1, 3, 4]],
  ['[2,1,4] with [3,1], both stretched', [2, 1, 4], [3, 1]],
];

const binaryCases: GradientCase[] = ['Add', 'Sub', 'Mul', 'Div'].flatMap((opType) =>
  BROADCASTS.map(([label, a, b]): GradientCase => ({
    name: `${opType}: ${label}`,
    inputs: { a, b },
    // b ≥ 0.5 keeps the truncation of a/b within the tolerance: L‴/L′ = 6/b² ≤ 24.
    ...(opType === 'Div' ? { range: [0.5, 1.5] as const } : {}),
    nodes: [node(opType, ['a', 'b'])],
  })));

const unaryCases: GradientCase[] = [
  ...[floats('exponent', [], [2]), floats('exponent', [], [3]), int64s('exponent', [3], [])].map((exponent): GradientCase => ({
    name: `Pow: constant ${exponent.dataType === DataType.int64 ? 'int64' : 'float'} exponent ${exponent.values[0]}`,
    inputs: { x: [2, 3, 4] },
    // Negative bases, which an integral exponent allows; |x| ≥ 0.5 keeps x³'s truncation h² within 10h² of 3x².
    range: [-1.5, -0.5],
    initializers: [exponent],
    nodes: [node('Pow', ['x', 'exponent'])],
  })),
  ...(['Neg', 'Reciprocal', 'Exp', 'Sigmoid', 'Tanh', 'Erf', 'Sin', 'Cos', 'Identity'] as const).map((opType): GradientCase => ({
    name: opType,
    inputs: { x: [2, 3, 4] },
    // x ≥ 0.7 keeps the truncation of 1/x within the tolerance: L‴/L′ = 6/x² ≤ 13.
    ...(opType === 'Reciprocal' ? { range: [0.7, 1.5] as const } : { range: [-1.5, 1.5] as const }),
    nodes: [node(opType, ['x'])],
  })),
  { name: 'Sqrt: positive inputs', inputs: { x: [2, 3, 4] }, range: [0.5, 2], nodes: [node('Sqrt', ['x'])] },
  ...[-1, 1].map((axis): GradientCase => ({
    name: `Softmax: axis ${axis}`,
    inputs: { x: [2, 3, 4] },
    range: [-2, 2],
    nodes: [node('Softmax', ['x'], 'y', { axis: attr.int(axis) })],
  })),
];

const matrixCases: GradientCase[] = [
  { name: 'MatMul: 3-D × 2-D weight', inputs: { a: [2, 3, 4], b: [4, 5] }, nodes: [node('MatMul', ['a', 'b'])] },
  { name: 'MatMul: 4-D × 4-D', inputs: { a: [2, 3, 4, 5], b: [2, 3, 5, 2] }, nodes: [node('MatMul', ['a', 'b'])] },
  { name: 'MatMul: batch broadcast [2,1,3,4] × [5,4,2]', inputs: { a: [2, 1, 3, 4], b: [5, 4, 2] }, nodes: [node('MatMul', ['a', 'b'])] },
  ...[[0, 0], [0, 1], [1, 0], [1, 1]].map(([transA, transB]): GradientCase => ({
    name: `Gemm: transA ${transA}, transB ${transB}, alpha 0.7, beta 1.3, C broadcast from [N]`,
    // M = 3, K = 4, N = 5: all different, so a transpose the wrong way round is a shape error, not a silent one.
    inputs: { a: transA ? [4, 3] : [3, 4], b: transB ? [5, 4] : [4, 5], c: [5] },
    nodes: [node('Gemm', ['a', 'b', 'c'], 'y', { alpha: attr.float(0.7), beta: attr.float(1.3), transA: attr.int(transA!), transB: attr.int(transB!) })],
  })),
];

function convCase(name: string, x: readonly number[], weight: readonly number[], attributes: Record<string, AttributeValue>): GradientCase {
  return {
    name: `Conv: ${name}`,
    inputs: { x },
    initializers: [randomFloats('weight', weight, `${name} weight`), randomFloats('bias', [weight[0]!], `${name} bias`)],
    nodes: [node('Conv', ['x', 'weight', 'bias'], 'y', attributes)],
  };
}

const convCases: GradientCase[] = [
  convCase('3×3, pad 1, stride 1', [1, 2, 5, 5], [3, 2, 3, 3], { pads: attr.ints([1, 1, 1, 1]) }),
  // 6 rows, pad 1, stride 2 give 3 rows back; the transpose gives 5 without an output padding of 1.
  convCase('3×3, pad 1, stride 2 on an even input', [1, 2, 6, 6], [3, 2, 3, 3], { pads: attr.ints([1, 1, 1, 1]), strides: attr.ints([2, 2]) }),
  convCase('3×3, pad 1, groups 2', [1, 4, 5, 5], [6, 2, 3, 3], { pads: attr.ints([1, 1, 1, 1]), group: attr.int(2) }),
  convCase('1×1', [2, 3, 4, 4], [2, 3, 1, 1], {}),
];

const normalizationCases: GradientCase[] = [
  ...[17, 18].flatMap((opset) => [
    { axis: -1, scale: [8] },
    { axis: -2, scale: [3, 8] },
  ].map(({ axis, scale }): GradientCase => ({
    name: `LayerNormalization: axis ${axis}, opset ${opset}`,
    opset,
    // Curvature grows as 1/σ²: 8 values per row seldom bunch up the way 4 can.
    inputs: { x: [2, 3, 8] },
    range: [-2, 2],
    initializers: [randomFloats('scale', scale, `scale ${axis}`), randomFloats('bias', scale, `bias ${axis}`)],
    nodes: [node('LayerNormalization', ['x', 'scale', 'bias'], 'y', { axis: attr.int(axis) })],
  }))),
  ...[14, 17, 18].map((opset): GradientCase => ({
    name: `InstanceNormalization: opset ${opset}`,
    opset,
    inputs: { x: [2, 3, 4, 5] },
    range: [-2, 2],
    initializers: [randomFloats('scale', [3], 'instance scale'), randomFloats('bias', [3], 'instance bias')],
    nodes: [node('InstanceNormalization', ['x', 'scale', 'bias'])],
  })),
];

/** ReduceMean takes its axes as an attribute before opset 18 and as an input from it; ReduceSum from opset 13. */
function reduceCase(opType: 'ReduceMean' | 'ReduceSum', opset: number, axes: readonly number[], keepdims: number): GradientCase {
  const axesAsInput = opType === 'ReduceSum' || opset >= 18;
  const keep = { keepdims: attr.int(keepdims) };
  return {
    name: `${opType}: opset ${opset}, axes [${axes.join(',')}] as ${axesAsInput ? 'input' : 'attribute'}, keepdims ${keepdims}`,
    opset,
    inputs: { x: [2, 3, 4] },
    ...(axesAsInput
      ? { initializers: [int64s('axes', axes)], nodes: [node(opType, ['x', 'axes'], 'y', keep)] }
      : { nodes: [node(opType, ['x'], 'y', { ...keep, axes: attr.ints(axes) })] }),
  };
}

const reductionCases: GradientCase[] = [
  reduceCase('ReduceMean', 17, [1], 0),
  reduceCase('ReduceMean', 17, [0, -1], 1),
  reduceCase('ReduceMean', 18, [1], 0),
  reduceCase('ReduceMean', 18, [0, -1], 1),
  reduceCase('ReduceSum', 14, [0, -1], 1),
  reduceCase('ReduceSum', 17, [1], 0),
  reduceCase('ReduceSum', 17, [0, -1], 1),
  reduceCase('ReduceSum', 18, [1], 0),
  { name: 'ReduceMean: no axes, every element', inputs: { x: [2, 3, 4] }, nodes: [node('ReduceMean', ['x'], 'y', { keepdims: attr.int(0) })] },
];

const shapeCases: GradientCase[] = [
  { name: 'Reshape', inputs: { x: [2, 3, 4] }, initializers: [int64s('shape', [4, -1])], nodes: [node('Reshape', ['x', 'shape'])] },
  { name: 'Flatten', inputs: { x: [2, 3, 4] }, nodes: [node('Flatten', ['x'], 'y', { axis: attr.int(2) })] },
  { name: 'Squeeze', inputs: { x: [2, 1, 4, 1] }, initializers: [int64s('axes', [1, -1])], nodes: [node('Squeeze', ['x', 'axes'])] },
  { name: 'Unsqueeze', inputs: { x: [2, 3] }, initializers: [int64s('axes', [0, -1])], nodes: [node('Unsqueeze', ['x', 'axes'])] },
  { name: 'Expand: [3,1] to [2,3,4]', inputs: { x: [3, 1] }, initializers: [int64s('shape', [2, 3, 4])], nodes: [node('Expand', ['x', 'shape'])] },
  { name: 'Transpose: explicit perm', inputs: { x: [2, 3, 4] }, nodes: [node('Transpose', ['x'], 'y', { perm: attr.ints([1, 2, 0]) })] },
  { name: 'Transpose: default perm (reversed)', inputs: { x: [2, 3, 4] }, nodes: [node('Transpose', ['x'])] },
  {
    name: 'Concat: 3 inputs, the middle one not differentiated',
    inputs: { a: [2, 1, 4], b: [2, 3, 4], c: [2, 2, 4] },
    wrt: ['a', 'c'],
    nodes: [node('Concat', ['a', 'b', 'c'], 'y', { axis: attr.int(-2) })],
  },
  {
    name: 'Split: the middle output unused',
    inputs: { x: [2, 5, 3] },
    initializers: [int64s('split', [2, 1, 2])],
    nodes: [{ name: 'Split_x', opType: 'Split', input: ['x', 'split'], output: ['s0', 's1', 's2'], attributes: { axis: attr.int(1) } }, node('Mul', ['s0', 's2'])],
  },
  {
    name: 'Slice: negative start, INT64_MAX end, explicit axes',
    inputs: { x: [2, 5, 6] },
    initializers: [int64s('starts', [-4, 1]), int64s('ends', [INT64_MAX, 4]), int64s('axes', [2, 1])],
    nodes: [node('Slice', ['x', 'starts', 'ends', 'axes'])],
  },
  {
    name: 'Gather: negative scalar index',
    inputs: { x: [3, 4, 5] },
    initializers: [int64s('index', [-2], [])],
    nodes: [node('Gather', ['x', 'index'], 'y', { axis: attr.int(1) })],
  },
  {
    name: 'Gather: contiguous range',
    inputs: { x: [3, 4, 5] },
    initializers: [int64s('indices', [1, 2, 3])],
    nodes: [node('Gather', ['x', 'indices'], 'y', { axis: attr.int(2) })],
  },
  {
    name: 'Cast: float → double, a double Mul, → float',
    inputs: { x: [2, 3, 4] },
    nodes: [
      node('Cast', ['x'], 'wide', { to: attr.int(DataType.double) }),
      node('Mul', ['wide', 'wide'], 'square'),
      node('Cast', ['square'], 'y', { to: attr.int(DataType.float) }),
    ],
  },
  {
    name: 'Where: condition from an initializer, b broadcast from [3,1]',
    inputs: { a: [2, 3, 4], b: [3, 1] },
    initializers: [{ name: 'condition', dataType: DataType.bool, dims: [2, 3, 4], values: Array.from({ length: 24 }, (_, i) => (i * 7) % 3 === 0 ? 1 : 0) }],
    nodes: [node('Where', ['condition', 'a', 'b'])],
  },
  ...[['asymmetric', 'floor'], ['half_pixel', 'round_prefer_floor']].map(([transform, rounding]): GradientCase => ({
    name: `Resize: nearest ×2, ${transform}, ${rounding}`,
    inputs: { x: [1, 2, 3, 4] },
    initializers: [floats('scales', [4], [1, 1, 2, 2])],
    nodes: [node('Resize', ['x', '', 'scales'], 'y', {
      mode: attr.string('nearest'),
      coordinate_transformation_mode: attr.string(transform!),
      nearest_mode: attr.string(rounding!),
    })],
  })),
];

for (const c of [...binaryCases, ...unaryCases, ...matrixCases, ...convCases, ...normalizationCases, ...reductionCases, ...shapeCases]) {
  test(`gradient of ${c.name} matches central differences`, (t) => checkGradients(t, c));
}

/** A model of y = Exp(Neg(x)) with `middle` in between, to put an operator on the path from x to y. */
function chainModel(opset: number, middle: NodeSpec, initializers: readonly InitializerSpec[] = []): ModelSpec {
  return {
    opset,
    inputs: [{ name: 'x', dims: [4, 3] }],
    initializers,
    nodes: [node('Neg', ['x'], 'negated'), middle, node('Exp', [middle.output[0]!])],
    outputs: [{ name: 'y', dims: null }],
  };
}

test('an operator without a rule on the path is named, with its node', async () => {
  const model = chainModel(17, node('Tile', ['negated', 'repeats'], 'tiled'), [int64s('repeats', [2, 1])]);
  await assert.rejects(buildGradientModel(encodeTestModel(model), { x: [4, 3] }, ['x']), {
    name: 'GradientRuleError',
    message: /no gradient rule for operator Tile \(node Tile_tiled\)/,
  });
});

test('Gather with non-contiguous indices is refused, naming the node', async () => {
  const model = chainModel(17, node('Gather', ['negated', 'indices'], 'gathered'), [int64s('indices', [0, 2])]);
  await assert.rejects(buildGradientModel(encodeTestModel(model), { x: [4, 3] }, ['x']), {
    name: 'GradientRuleError',
    message: /node Gather_gathered \(Gather\): only a scalar index or a contiguous range/,
  });
});

test('a model of opset 12 is refused', async () => {
  const model = chainModel(12, node('Sigmoid', ['negated'], 'squashed'));
  await assert.rejects(buildGradientModel(encodeTestModel(model), { x: [4, 3] }, ['x']), {
    name: 'BackwardGraphError',
    message: /opset 13 or later; this one is opset 12/,
  });
});

test('an input that does not reach the seeded output is named', async () => {
  // z feeds a node, just not one on the way to y: its gradient would be silently zero.
  const model: ModelSpec = {
    opset: 17,
    inputs: [{ name: 'x', dims: [4, 3] }, { name: 'z', dims: [4, 3] }],
    nodes: [node('Neg', ['x']), node('Exp', ['z'], 'elsewhere')],
    outputs: [{ name: 'y', dims: null }, { name: 'elsewhere', dims: null }],
  };
  await assert.rejects(buildGradientModel(encodeTestModel(model), { x: [4, 3], z: [4, 3] }, ['x', 'z']), {
    name: 'BackwardGraphError',
    message: /^z does not affect the loss/,
  });
});
