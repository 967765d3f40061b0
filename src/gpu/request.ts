import {
  MAX_IMAGE_SIDE_PX, MAX_LORA_STRENGTH, MAX_PANELS, MAX_PROMPT_CHARS, MAX_SEED, MAX_STEPS, WEIGHTING_SYNTAXES,
  type WeightingSyntax,
} from '../common/generation-limits.js';
import { checkChoice, checkInteger, checkNumber, checkText, fail } from '../common/validation.js';

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
  /** The LoRA file the panels' strengths apply to from this request on; null (the default): the one fed before. */
  loraPath?: string | null;
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
  /** A LoRA is fed to the UNet's branches now. */
  hasLora: boolean;
  /** The UNet has LoRA branches, so a request may bring a LoRA. */
  takesLora: boolean;
  hasRefiner: boolean;
}

export function validateSeed(value: unknown, field = 'seed'): number {
  return checkInteger(field, value, 0, MAX_SEED);
}

const NO_EXTRAS: PipelineCapabilities = { multipleOf: 8, hasLora: false, takesLora: false, hasRefiner: false };

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
  const weighting = checkChoice('weighting', request.weighting ?? 'auto', WEIGHTING_SYNTAXES);
  const denoisingEnd = request.denoisingEnd ?? null;
  if (denoisingEnd !== null) {
    if (typeof denoisingEnd !== 'number' || !(denoisingEnd > 0 && denoisingEnd < 1)) fail('denoisingEnd', denoisingEnd, 'must be a number between 0 and 1');
    if (!capabilities.hasRefiner) fail('denoisingEnd', denoisingEnd, 'needs a refiner model, and none is loaded');
  }
  const loraPath = request.loraPath ?? null;
  if (loraPath !== null) {
    if (typeof loraPath !== 'string' || loraPath === '') fail('loraPath', loraPath, 'must be the path of a LoRA file');
    if (!capabilities.takesLora) fail('loraPath', loraPath, 'needs a pipeline loaded with LoRA branches');
  }
  const loraStrength = (field: string, value: unknown): number => {
    const strength = checkNumber(field, value ?? 0, -MAX_LORA_STRENGTH, MAX_LORA_STRENGTH);
    if (strength !== 0 && !capabilities.hasLora && loraPath === null) fail(field, strength, 'needs a LoRA, and none is loaded');
    return strength;
  };
  return {
    seed: validateSeed(request.seed),
    steps: checkInteger('steps', request.steps, 1, MAX_STEPS),
    width: side('width', request.width),
    height: side('height', request.height),
    weighting,
    denoisingEnd,
    loraPath,
    panels: request.panels.map((panel, index) => ({
      prompt: checkText(`${panelLabel(index)}prompt`, panel.prompt, MAX_PROMPT_CHARS),
      negativePrompt: panel.negativePrompt === null ? null : checkText(`${panelLabel(index)}negativePrompt`, panel.negativePrompt, MAX_PROMPT_CHARS),
      guidanceScale: checkNumber(`${panelLabel(index)}guidanceScale`, panel.guidanceScale, 0, 100),
      guidanceRescale: checkNumber(`${panelLabel(index)}guidanceRescale`, panel.guidanceRescale, 0, 1),
      loraStrength: loraStrength(`${panelLabel(index)}loraStrength`, panel.loraStrength),
    })),
  };
}
