import { resolveModel, type ResolvedModel } from '../models/resolve.js';
import { optionOrEnvironment } from './options.js';

/** `--model`, else MODEL_DIR: a model folder, or a repo in the Hugging Face cache; errors name whichever was given. */
export function modelOption(value: string | undefined): ResolvedModel {
  return resolveModel(optionOrEnvironment('model', value, 'MODEL_DIR'), value === undefined ? 'MODEL_DIR' : '--model');
}

/** What --model, --lora and --refiner accept besides a path, for their lines in --help. */
export const REPO_ALTERNATIVE = 'or a Hub repo owner/name[@revision] that `wrongbot models pull` put in the Hugging Face cache';
