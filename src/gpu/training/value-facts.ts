import ort from 'onnxruntime-node';
import type { ValueFacts } from '../onnx/backward-graph.js';
import { OnnxGraph } from '../onnx/onnx-graph.js';
import { buildShapeProbe } from '../onnx/training-graph.js';
import { OnnxModel, RunClock } from '../onnx-session.js';
import type { Device } from '../providers.js';

// The static shape of every value of the training forward graph, learnt by running it once on zeros of the shapes
// the training will feed: onnxruntime's own shape inference, so no operator's shape rule is written twice.

export class ProbedValueFacts implements ValueFacts {
  constructor(
    private readonly shapes: ReadonlyMap<string, readonly number[]>,
    private readonly integerValues: ReadonlyMap<string, readonly number[]>,
  ) {}

  shape(name: string): readonly number[] {
    const shape = this.shapes.get(name);
    if (shape === undefined) throw new Error(`no shape was measured for ${name}`);
    return shape;
  }

  values(name: string): readonly number[] {
    const values = this.integerValues.get(name);
    if (values === undefined) throw new Error(`no values were measured for ${name}`);
    return values;
  }
}

/** Zero feeds of the given shapes: float32 for every input, which is what the training graph declares. */
export function zeroFeeds(shapes: Readonly<Record<string, readonly number[]>>): Record<string, ort.Tensor> {
  const feeds: Record<string, ort.Tensor> = {};
  for (const [name, dims] of Object.entries(shapes)) feeds[name] = new ort.Tensor('float32', new Float32Array(dims.reduce((a, b) => a * b, 1)), dims);
  return feeds;
}

export async function probeValueFacts(
  forwardBytes: Uint8Array,
  externalDataDir: string,
  inputShapes: Readonly<Record<string, readonly number[]>>,
  device: Device,
): Promise<ProbedValueFacts> {
  const graph = OnnxGraph.decode(forwardBytes);
  const probe = buildShapeProbe(forwardBytes);
  const shapes = new Map<string, readonly number[]>(Object.entries(inputShapes));
  for (const [name, initializer] of graph.initializers) shapes.set(name, initializer.dims);
  const integerValues = new Map<string, readonly number[]>();
  const model = await OnnxModel.load('shape probe', { bytes: probe.bytes, externalDataDir }, device, new RunClock());
  try {
    const results = await model.runTensors(zeroFeeds(inputShapes), [...probe.shapeOutputs.values(), ...probe.valueOutputs.values()]);
    const numbers = (name: string) => Array.from(results[name]!.data as BigInt64Array | Int32Array, Number);
    for (const [value, output] of probe.shapeOutputs) shapes.set(value, numbers(output));
    for (const [value, output] of probe.valueOutputs) integerValues.set(value, numbers(output));
  } finally {
    await model.dispose();
  }
  return new ProbedValueFacts(shapes, integerValues);
}
