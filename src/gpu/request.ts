import type { WeightingSyntax } from './prompt-weighting.js';

// What a generation asks for, and the checks that turn bad input into an error naming the field and its value
// rather than a confusing onnxruntime failure or a silently "corrected" value.

export interface PanelSettings {
  prompt: string;
  /** `null`: no negative prompt (diffusers' `negative_prompt=None`); `""` is an empty prompt and is encoded. */
  negativePrompt: string | null;
  guidanceScale: number;
  /** diffusers' guidance_rescale φ in [0, 1]; 0 leaves the guided noise as it is. */
  guidanceRescale: number;
  /** How strongly the loaded LoRA applies to this panel; 0 (the default) is the base model. */
  loraStrength?: number;
}

export interface GenerationRequest {
  seed: number;
  steps: number;
  width: number;
  height: number;
  /** Prompt-weighting syntax; `auto` (the default) detects it, `none` encodes the text literally as diffusers does. */
  weighting?: WeightingSyntax;
  /** Fraction of the schedule the base runs before the refiner takes over; null (the default) is the base alone. */
  denoisingEnd?: number | null;
  panels: PanelSettings[];
}

export type ValidatedPanel = Required<PanelSettings>;

export interface ValidatedRequest extends Required<GenerationRequest> {
  panels: ValidatedPanel[];
}

/** What the loaded pipeline can do, so that a request that needs more fails before any model runs. */
export interface PipelineCapabilities {
  /** The VAE's scale factor: image sides must be multiples of it. */
  multipleOf: number;
  hasLora: boolean;
  hasRefiner: boolean;
}

export const DEFAULT_STEPS = 30;
export const DEFAULT_GUIDANCE_SCALE = 5;
export const MAX_STEPS = 500;
export const MAX_IMAGE_SIDE_PX = 4096;
export const MAX_PROMPT_CHARS = 4000;
export const MAX_PANELS = 8;
export const MAX_LORA_STRENGTH = 4;
export const DEFAULT_DENOISING_END = 0.8;
const WEIGHTING_SYNTAXES: readonly WeightingSyntax[] = ['auto', 'compel', 'a1111', 'none'];

export class InvalidRequestError extends Error {
  override name = 'InvalidRequestError';

  constructor(readonly field: string, readonly shownValue: string, readonly rule: string) {
    super(`${field} = ${shownValue} ${rule}`);
  }
}

function fail(field: string, value: unknown, rule: string): never {
  // String() keeps NaN and Infinity readable; JSON.stringify would print them as null.
  const shown = typeof value === 'number' ? String(value) : JSON.stringify(value) ?? String(value);
  throw new InvalidRequestError(field, shown, rule);
}

function checkInteger(field: string, value: unknown, min: number, max: number): number {
  if (typeof value !== 'number' || !Number.isInteger(value) || value < min || value > max) {
    fail(field, value, `must be an integer from ${min} to ${max}`);
  }
  return value;
}

function checkNumber(field: string, value: unknown, min: number, max: number): number {
  if (typeof value !== 'number' || !Number.isFinite(value) || value < min || value > max) {
    fail(field, value, `must be a number from ${min} to ${max}`);
  }
  return value;
}

function checkText(field: string, value: unknown): string {
  if (typeof value !== 'string') fail(field, value, 'must be text');
  if (value.length > MAX_PROMPT_CHARS) fail(field, `${value.slice(0, 40)}…`, `is ${value.length} characters; the limit is ${MAX_PROMPT_CHARS}`);
  return value;
}

export function validateSeed(value: unknown, field = 'seed'): number {
  return checkInteger(field, value, 0, Number.MAX_SAFE_INTEGER);
}

const NO_EXTRAS: PipelineCapabilities = { multipleOf: 8, hasLora: false, hasRefiner: false };

export function validateGenerationRequest(request: GenerationRequest, capabilities: PipelineCapabilities = NO_EXTRAS): ValidatedRequest {
  const { multipleOf } = capabilities;
  const side = (field: string, value: unknown): number => {
    const size = checkInteger(field, value, multipleOf, MAX_IMAGE_SIDE_PX);
    if (size % multipleOf !== 0) fail(field, size, `must be a multiple of ${multipleOf}`);
    return size;
  };
  if (!Array.isArray(request.panels) || request.panels.length === 0 || request.panels.length > MAX_PANELS) {
    fail('panels', request.panels?.length, `must hold 1 to ${MAX_PANELS} panels`);
  }
  const panelLabel = (index: number) => (request.panels.length > 1 ? `panels[${index}].` : '');
  const weighting = request.weighting ?? 'auto';
  if (!WEIGHTING_SYNTAXES.includes(weighting)) fail('weighting', weighting, `must be one of ${WEIGHTING_SYNTAXES.join(', ')}`);
  const denoisingEnd = request.denoisingEnd ?? null;
  if (denoisingEnd !== null) {
    if (typeof denoisingEnd !== 'number' || !(denoisingEnd > 0 && denoisingEnd < 1)) fail('denoisingEnd', denoisingEnd, 'must be a number between 0 and 1');
    if (!capabilities.hasRefiner) fail('denoisingEnd', denoisingEnd, 'needs a refiner model, and none is loaded');
  }
  const loraStrength = (field: string, value: unknown): number => {
    const strength = checkNumber(field, value ?? 0, -MAX_LORA_STRENGTH, MAX_LORA_STRENGTH);
    if (strength !== 0 && !capabilities.hasLora) fail(field, strength, 'needs a LoRA, and none is loaded');
    return strength;
  };
  return {
    seed: validateSeed(request.seed),
    steps: checkInteger('steps', request.steps, 1, MAX_STEPS),
    width: side('width', request.width),
    height: side('height', request.height),
    weighting,
    denoisingEnd,
    panels: request.panels.map((panel, index) => ({
      prompt: checkText(`${panelLabel(index)}prompt`, panel.prompt),
      negativePrompt: panel.negativePrompt === null ? null : checkText(`${panelLabel(index)}negativePrompt`, panel.negativePrompt),
      guidanceScale: checkNumber(`${panelLabel(index)}guidanceScale`, panel.guidanceScale, 0, 100),
      guidanceRescale: checkNumber(`${panelLabel(index)}guidanceRescale`, panel.guidanceRescale, 0, 1),
      loraStrength: loraStrength(`${panelLabel(index)}loraStrength`, panel.loraStrength),
    })),
  };
}
