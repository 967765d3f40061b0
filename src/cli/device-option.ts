import { parseDevice, type Device } from '../gpu/providers.js';
import { UsageError } from './options.js';

// Kept apart from options.ts so that commands without a model (the bot) do not import the GPU code.

export function deviceOption(value: string | undefined): Device {
  const spec = value ?? process.env['WORKER_DEVICE'] ?? 'cpu';
  try {
    return parseDevice(spec);
  } catch (error) {
    throw new UsageError(`${value === undefined && process.env['WORKER_DEVICE'] !== undefined ? 'WORKER_DEVICE' : '--provider'}: ${(error as Error).message}`);
  }
}
