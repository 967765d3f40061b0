import { existsSync } from 'node:fs';
import { createRequire } from 'node:module';
import path from 'node:path';
import type { InferenceSession } from 'onnxruntime-node';

// Which onnxruntime execution provider serves each device name, in one table: the CLI, the worker and the tests
// all go through parseDevice, so an unknown name fails the same way everywhere.

export type DeviceKind = 'cpu' | 'cuda' | 'webgpu';

export interface Device {
  kind: DeviceKind;
  /** GPU ordinal for CUDA; 0 elsewhere. */
  index: number;
}

interface ProviderEntry {
  readonly takesIndex: boolean;
  readonly executionProviders: (index: number) => InferenceSession.ExecutionProviderConfig[];
  /** Throws with a fix when the provider cannot possibly start; cheap, runs before any model loads. */
  readonly checkInstalled: () => void;
  /** Turns onnxruntime's message for a failed session start into one that says how to fix it. */
  readonly explainStartFailure: (message: string) => string;
}

const ORT_BINARY_DIR = (() => {
  const require = createRequire(import.meta.url);
  const packageRoot = path.dirname(require.resolve('onnxruntime-node/package.json'));
  return path.join(packageRoot, 'bin', 'napi-v6', process.platform, process.arch);
})();

const CUDA_PROVIDER_LIBRARY = process.platform === 'win32'
  ? 'onnxruntime_providers_cuda.dll'
  : 'libonnxruntime_providers_cuda.so';

const CUDA_FIX = 'run `npm run setup:cuda` (downloads onnxruntime\'s CUDA provider) on a host with CUDA 12 and cuDNN 9 '
  + 'on the library path, or use --provider cpu';

export const EXECUTION_PROVIDERS: Readonly<Record<DeviceKind, ProviderEntry>> = Object.freeze({
  cpu: Object.freeze({
    takesIndex: false,
    executionProviders: () => ['cpu'],
    checkInstalled: () => {},
    explainStartFailure: (message: string) => message,
  }),
  cuda: Object.freeze({
    takesIndex: true,
    executionProviders: (index: number) => [{ name: 'cuda', deviceId: index }],
    checkInstalled: () => {
      const library = path.join(ORT_BINARY_DIR, CUDA_PROVIDER_LIBRARY);
      if (!existsSync(library)) {
        throw new ProviderError(`the CUDA provider is not installed (${library} is missing): ${CUDA_FIX}`);
      }
    },
    explainStartFailure: (message: string) => `CUDA provider failed to start (${message.trim()}): ${CUDA_FIX}`,
  }),
  webgpu: Object.freeze({
    takesIndex: false,
    executionProviders: () => ['webgpu'],
    checkInstalled: () => {},
    // onnxruntime prefixes the reason with the failed C++ check; the reason alone is what a user can act on.
    explainStartFailure: (message: string) =>
      `WebGPU provider failed to start (${message.replace(/^.*\bwas false\.\s*/s, '').trim()}): it needs a GPU with a Vulkan, Metal or D3D12 driver `
      + '(on Linux also the Vulkan loader, Debian package libvulkan1), or use --provider cpu',
  }),
});

export class ProviderError extends Error {
  override name = 'ProviderError';
}

const DEVICE_PATTERN = /^(?<kind>[a-z]+)(?::(?<index>\d+))?$/;

/** `cpu`, `cuda`, `cuda:1`, `webgpu`. */
export function parseDevice(spec: string): Device {
  const match = DEVICE_PATTERN.exec(spec.trim().toLowerCase());
  const kind = match?.groups?.['kind'];
  const choices = 'cpu, cuda, cuda:N, webgpu';
  if (!match || kind === undefined || !Object.hasOwn(EXECUTION_PROVIDERS, kind)) {
    throw new ProviderError(`device ${JSON.stringify(spec)} is not supported; choose one of ${choices}`);
  }
  const entry = EXECUTION_PROVIDERS[kind as DeviceKind];
  const indexText = match.groups?.['index'];
  if (indexText !== undefined && !entry.takesIndex) {
    throw new ProviderError(`device ${JSON.stringify(spec)}: ${kind} takes no device index; choose one of ${choices}`);
  }
  return { kind: kind as DeviceKind, index: indexText === undefined ? 0 : Number(indexText) };
}

export function formatDevice(device: Device): string {
  return EXECUTION_PROVIDERS[device.kind].takesIndex ? `${device.kind}:${device.index}` : device.kind;
}
