import {
  MAX_IMAGE_SIDE_PX, MAX_LORA_STRENGTH, MAX_PANELS, MAX_PROMPT_CHARS, MAX_SEED, MAX_STEPS, WEIGHTING_SYNTAXES,
  checkDenoisingEnd, type WeightingSyntax,
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
  /** Which LoRA slot the strength applies to (see `loraPaths`); 0 by default. */
  loraSlot?: number;
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
  /**
   * Per LoRA slot, the file its panels use from this request on; null or absent: the one fed before. One request with
   * two slots draws panels of two LoRA versions in one UNet batch.
   */
  loraPaths?: readonly (string | null)[];
  panels: PanelSettings[];
}

export type ValidatedPanel = Required<PanelSettings>;

export interface ValidatedRequest extends Required<GenerationRequest> {
  panels: ValidatedPanel[];
}

/** What the loaded pipeline can do, so that a request that needs more fails before any model runs. */
export interface PipelineCapabilities {
  /** Image sides must be multiples of it (see SdxlModelFolder.sizeMultiple). */
  multipleOf: number;
  /** The side the model was trained at, for requests that name no size. */
  defaultSizePx: number;
  /** How many LoRAs the UNet's branches take at once (0: none). */
  loraSlots: number;
  /** Per slot, whether a LoRA is fed to it now. */
  fedLoraSlots: readonly boolean[];
  hasRefiner: boolean;
}

export function validateSeed(value: unknown, field = 'seed'): number {
  return checkInteger(field, value, 0, MAX_SEED);
}

const NO_EXTRAS: PipelineCapabilities = { multipleOf: 8, defaultSizePx: 1024, loraSlots: 0, fedLoraSlots: [], hasRefiner: false };

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
    checkDenoisingEnd('denoisingEnd', denoisingEnd);
    if (!capabilities.hasRefiner) fail('denoisingEnd', denoisingEnd, 'needs a refiner model, and none is loaded');
  }
  const loraPaths = request.loraPaths ?? [];
  if (!Array.isArray(loraPaths) || loraPaths.length > capabilities.loraSlots) {
    fail('loraPaths', loraPaths, `must list at most ${capabilities.loraSlots} LoRA file(s), one per slot this pipeline was loaded with`);
  }
  loraPaths.forEach((file, slot) => {
    if (file !== null && (typeof file !== 'string' || file === '')) fail(`loraPaths[${slot}]`, file, 'must be the path of a LoRA file or null');
  });
  const loraSlot = (field: string, value: unknown): number => checkInteger(field, value ?? 0, 0, Math.max(0, capabilities.loraSlots - 1));
  const loraStrength = (field: string, value: unknown, slot: number): number => {
    const strength = checkNumber(field, value ?? 0, -MAX_LORA_STRENGTH, MAX_LORA_STRENGTH);
    if (strength !== 0 && !capabilities.fedLoraSlots[slot] && (loraPaths[slot] ?? null) === null) fail(field, strength, 'needs a LoRA, and none is loaded');
    return strength;
  };
  return {
    seed: validateSeed(request.seed),
    steps: checkInteger('steps', request.steps, 1, MAX_STEPS),
    width: side('width', request.width),
    height: side('height', request.height),
    weighting,
    denoisingEnd,
    loraPaths: [...loraPaths],
    panels: request.panels.map((panel, index) => {
      const label = panelLabel(index);
      const slot = loraSlot(`${label}loraSlot`, panel.loraSlot);
      return {
        prompt: checkText(`${label}prompt`, panel.prompt, MAX_PROMPT_CHARS),
        negativePrompt: panel.negativePrompt === null ? null : checkText(`${label}negativePrompt`, panel.negativePrompt, MAX_PROMPT_CHARS),
        guidanceScale: checkNumber(`${label}guidanceScale`, panel.guidanceScale, 0, 100),
        guidanceRescale: checkNumber(`${label}guidanceRescale`, panel.guidanceRescale, 0, 1),
        loraSlot: slot,
        loraStrength: loraStrength(`${label}loraStrength`, panel.loraStrength, slot),
      };
    }),
  };
}
