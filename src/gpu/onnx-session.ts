import { existsSync } from 'node:fs';
import ort from 'onnxruntime-node';
import { EXECUTION_PROVIDERS, formatDevice, ProviderError, type Device } from './providers.js';
import { fromFloat16Array, toFloat16Array } from './float16.js';

// The one place that creates and disposes onnxruntime sessions. Callers describe tensors as float32 or integer
// arrays; the dtype and rank each model actually wants are read from its metadata here, so fp16 exports and older
// optimum exports (int32 ids, int64 timesteps) load without a code path of their own.

export type TensorMetadata = ort.InferenceSession.TensorValueMetadata;

/** A model file, or a graph rewritten in memory whose external weights stay in their folder. */
export type ModelSource = string | { bytes: Uint8Array; externalDataDir: string };

/** Wall time spent inside onnxruntime's run(), summed over every model that shares the clock. */
export class RunClock {
  totalMs = 0;
  runs = 0;

  reset(): void {
    this.totalMs = 0;
    this.runs = 0;
  }
}

export class ModelLoadError extends Error {
  override name = 'ModelLoadError';
}

/** onnxruntime refused to run a model (a graph error, or memory it could not allocate), naming the model. */
export class OnnxRunError extends Error {
  override name = 'OnnxRunError';
}

export class OnnxModel {
  private constructor(
    readonly label: string,
    private readonly session: ort.InferenceSession,
    private readonly clock: RunClock,
  ) {}

  /**
   * A path loads the graph from disk so that external weights (`model.onnx_data`) are found beside it; a rewritten
   * graph comes as bytes together with the folder that holds its external weights.
   */
  static async load(label: string, source: ModelSource, device: Device, clock: RunClock): Promise<OnnxModel> {
    const modelPath = typeof source === 'string' ? source : source.externalDataDir;
    if (!existsSync(modelPath)) throw new ModelLoadError(`${label}: ${modelPath} does not exist`);
    const provider = EXECUTION_PROVIDERS[device.kind];
    provider.checkInstalled();
    // Spinning pool threads would compete with the JS between runs on small hosts; runs are long enough without.
    const sessionConfig: Record<string, unknown> = { intra_op: { allow_spinning: '0' } };
    if (typeof source !== 'string') sessionConfig['model_external_initializers_file_folder_path'] = source.externalDataDir;
    const options: ort.InferenceSession.SessionOptions = {
      executionProviders: provider.executionProviders(device.index),
      graphOptimizationLevel: 'all',
      logSeverityLevel: 3,
      extra: { session: sessionConfig },
    };
    let session: ort.InferenceSession;
    try {
      session = typeof source === 'string'
        ? await ort.InferenceSession.create(source, options)
        : await ort.InferenceSession.create(source.bytes, options);
    } catch (cause) {
      const message = (cause as Error).message ?? String(cause);
      if (device.kind !== 'cpu') {
        throw new ProviderError(`${label} on ${formatDevice(device)}: ${provider.explainStartFailure(message)}`);
      }
      throw new ModelLoadError(`${label}: cannot load ${modelPath}: ${message.trim()}`);
    }
    return new OnnxModel(label, session, clock);
  }

  hasInput(name: string): boolean {
    return this.session.inputNames.includes(name);
  }

  input(name: string): TensorMetadata {
    return this.tensorMetadata(this.session.inputMetadata, name, 'input');
  }

  output(name: string): TensorMetadata {
    return this.tensorMetadata(this.session.outputMetadata, name, 'output');
  }

  get outputNames(): readonly string[] {
    return this.session.outputNames;
  }

  private tensorMetadata(list: readonly ort.InferenceSession.ValueMetadata[], name: string, kind: string): TensorMetadata {
    const found = list.find((entry) => entry.name === name);
    if (!found || !found.isTensor) {
      const names = list.map((entry) => entry.name).join(', ');
      throw new ModelLoadError(`${this.label}: the model has no tensor ${kind} named ${name} (it has ${names})`);
    }
    return found;
  }

  /** A float tensor in the dtype the model declares for `name` (float32 or float16). */
  floatInput(name: string, values: Float32Array, dims: readonly number[]): ort.Tensor {
    const type = this.input(name).type;
    switch (type) {
      case 'float32':
        return new ort.Tensor('float32', values, dims);
      case 'float16':
        return new ort.Tensor('float16', toFloat16Array(values), dims);
      default:
        throw new ModelLoadError(`${this.label}: input ${name} has dtype ${type}; expected float32 or float16`);
    }
  }

  /** An integer (or, for timesteps, float) tensor in the dtype the model declares for `name`. */
  numberInput(name: string, values: readonly number[], dims: readonly number[]): ort.Tensor {
    const type = this.input(name).type;
    switch (type) {
      case 'int32':
        return new ort.Tensor('int32', Int32Array.from(values), dims);
      case 'int64':
        return new ort.Tensor('int64', BigInt64Array.from(values, (v) => BigInt(Math.trunc(v))), dims);
      case 'float32':
      case 'float16':
        return this.floatInput(name, Float32Array.from(values), dims);
      default:
        throw new ModelLoadError(`${this.label}: input ${name} has dtype ${type}; expected an integer or float type`);
    }
  }

  /** Runs the model and returns the requested outputs as onnxruntime gives them. */
  async runTensors(feeds: Record<string, ort.Tensor>, outputs: readonly string[]): Promise<ort.InferenceSession.ReturnType> {
    const started = performance.now();
    try {
      return await this.session.run(feeds, outputs);
    } catch (cause) {
      throw new OnnxRunError(`${this.label} failed: ${((cause as Error).message ?? String(cause)).trim()}`);
    } finally {
      this.clock.totalMs += performance.now() - started;
      this.clock.runs += 1;
    }
  }

  /** Runs the model and returns the requested outputs as float32, whatever dtype the model computes in. */
  async run(feeds: Record<string, ort.Tensor>, outputs: readonly string[]): Promise<Record<string, Float32Array>> {
    const results = await this.runTensors(feeds, outputs);
    const converted: Record<string, Float32Array> = {};
    for (const name of outputs) {
      const tensor = results[name];
      if (!tensor) throw new Error(`${this.label} returned no output ${name}`);
      converted[name] = readFloats(this.label, name, tensor);
    }
    return converted;
  }

  async dispose(): Promise<void> {
    await this.session.release();
  }
}

function readFloats(label: string, name: string, tensor: ort.Tensor): Float32Array {
  switch (tensor.type) {
    case 'float32':
      // onnxruntime-node copies CPU outputs into arrays that JS owns, so they can be handed on as they are.
      return tensor.data as Float32Array;
    case 'float16':
      return fromFloat16Array(tensor.data as Uint16Array);
    default:
      throw new Error(`${label}: output ${name} has dtype ${tensor.type}; expected float32 or float16`);
  }
}
