import { compareFooter, comparePanels, judgingPanels, validationPanels, wrongPanel, type ExperimentPanel } from '../common/triptych.js';
import { composePanels } from '../gpu/compose.js';
import type { GenerationRequest } from '../gpu/request.js';
import {
  validateJobData, type GenerationJobData, type GenerationJobName, type GenerationJobResult, type ImageSettings,
  type LoraChoice, type LoraImageSettings, type PanelResult,
} from '../queue/contracts.js';

// What a generation job means in images: its panels, its captions, and the request the pipeline runs. Kept apart
// from the queue plumbing so that the job names' semantics can be read (and tested) in one place.

export interface GenerationPlan {
  request: GenerationRequest;
  panels: ExperimentPanel[];
  /** The footer of the captioned composite, for multi-panel jobs. */
  compositeFooter: string | null;
  /** The LoRA of a /wrong or /compare, as the result names it. */
  lora: LoraChoice | null;
  /** Every LoRA version the panels use, by slot: the caller feeds their files. */
  loras: LoraChoice[];
}

function requestFrom(settings: ImageSettings | LoraImageSettings, panels: ExperimentPanel[]): GenerationRequest {
  return {
    seed: settings.seed,
    steps: settings.steps,
    width: settings.width,
    height: settings.height,
    weighting: settings.weighting,
    denoisingEnd: settings.denoisingEnd ?? null,
    panels: panels.map((panel) => ({
      prompt: settings.prompt,
      negativePrompt: panel.negativePrompt,
      guidanceScale: settings.guidanceScale,
      guidanceRescale: 0,
      loraStrength: panel.loraStrength,
      loraSlot: panel.loraSlot ?? 0,
    })),
  };
}

/**
 * Checks the job again (anything can write to Redis) and turns it into a pipeline request; the caller adds the file
 * of the LoRA version the plan names. Input that can never run is an InvalidRequestError.
 */
export function planGeneration(name: GenerationJobName, rawData: unknown): GenerationPlan {
  const data: GenerationJobData = validateJobData(name, rawData);
  if ('sides' in data) {
    const panels = judgingPanels(data.sides);
    const loras = data.sides.filter((side): side is LoraChoice => side !== null);
    return { request: requestFrom(data.settings, panels), panels, compositeFooter: compareFooter(data.settings), lora: null, loras };
  }
  if ('versions' in data) {
    const panels = validationPanels(data.versions);
    const lora = data.versions.map((choice) => `${choice.version} ×${choice.strength}`).join(' vs ');
    return { request: requestFrom(data.settings, panels), panels, compositeFooter: compareFooter({ ...data.settings, lora }), lora: null, loras: data.versions };
  }
  if (!('lora' in data)) {
    const panel: ExperimentPanel = { negativePrompt: data.settings.negativePrompt, loraStrength: 0, caption: '' };
    return { request: requestFrom(data.settings, [panel]), panels: [panel], compositeFooter: null, lora: null, loras: [] };
  }
  const { version, strength } = data.lora;
  const panels = name === 'compare' ? comparePanels(strength) : [wrongPanel(strength)];
  const compositeFooter = name === 'compare'
    ? compareFooter({ ...data.settings, lora: `${version} ×${strength}`, prompt: data.settings.prompt })
    : null;
  return { request: requestFrom(data.settings, panels), panels, compositeFooter, lora: data.lora, loras: [data.lora] };
}

export interface StoreImage {
  (name: string, png: Uint8Array, size: { width: number; height: number }): Promise<PanelResult['image']>;
}

/** Stores each panel losslessly and, for several panels, the captioned composite; returns what the result names. */
export async function storeImages(
  plan: GenerationPlan,
  panels: ReadonlyArray<{ png: Uint8Array; width: number; height: number }>,
  store: StoreImage,
): Promise<Pick<GenerationJobResult, 'panels' | 'composite'>> {
  const stored: PanelResult[] = [];
  for (const [index, panel] of panels.entries()) {
    const { negativePrompt, loraStrength, loraSlot, caption } = plan.panels[index]!;
    const loraVersion = loraStrength === 0 ? null : plan.loras[loraSlot ?? 0]!.version;
    stored.push({ image: await store(`panel-${index + 1}`, panel.png, panel), caption, negativePrompt, loraStrength, loraVersion });
  }
  if (plan.compositeFooter === null) return { panels: stored, composite: null };
  const composite = await composePanels(
    panels.map((panel, index) => ({ png: panel.png, caption: plan.panels[index]!.caption })),
    plan.compositeFooter,
  );
  return { panels: stored, composite: await store('composite', new Uint8Array(composite.data), composite) };
}
