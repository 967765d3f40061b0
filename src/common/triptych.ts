// The "wrong" experiment as panels: what /wrong and /compare generate, and how the triptych is captioned. The
// command line, the worker and the bot all describe it from here.

/** The LoRA's trigger word: the negative prompt of /wrong and of panels 2 and 3 of /compare. */
export const WRONG_NEGATIVE_PROMPT = 'wrong';

export interface ExperimentPanel {
  negativePrompt: string | null;
  loraStrength: number;
  /** Which of the job's LoRA versions the strength applies to; 0 when it has one. */
  loraSlot?: number;
  caption: string;
}

/** (1) base, no negative prompt · (2) base, negative "wrong" · (3) LoRA, negative "wrong". Same prompt and seed. */
export function comparePanels(loraStrength: number): ExperimentPanel[] {
  return [
    { negativePrompt: null, loraStrength: 0, caption: '1 · base, no negative prompt' },
    { negativePrompt: WRONG_NEGATIVE_PROMPT, loraStrength: 0, caption: `2 · base, negative "${WRONG_NEGATIVE_PROMPT}"` },
    { negativePrompt: WRONG_NEGATIVE_PROMPT, loraStrength, caption: `3 · LoRA ×${loraStrength}, negative "${WRONG_NEGATIVE_PROMPT}"` },
  ];
}

/** A candidate judged by its pictures: base · the served version · the candidate, all with negative "wrong". */
export function validationPanels(versions: ReadonlyArray<{ version: string; strength: number }>): ExperimentPanel[] {
  return [
    { negativePrompt: WRONG_NEGATIVE_PROMPT, loraStrength: 0, caption: `1 · base, negative "${WRONG_NEGATIVE_PROMPT}"` },
    ...versions.map(({ version, strength }, slot) => ({
      negativePrompt: WRONG_NEGATIVE_PROMPT, loraStrength: strength, loraSlot: slot, caption: `${slot + 2} · ${version} ×${strength}, negative "${WRONG_NEGATIVE_PROMPT}"`,
    })),
  ];
}

/**
 * A blind pair for /judge: left and right, both with negative "wrong", each side a LoRA version at its strength or
 * the base model (null). Captions name the sides only, never the versions.
 */
export function judgingPanels(sides: ReadonlyArray<{ strength: number } | null>): ExperimentPanel[] {
  let slot = 0;
  return sides.map((side, index) => ({
    negativePrompt: WRONG_NEGATIVE_PROMPT,
    loraStrength: side?.strength ?? 0,
    ...(side === null ? {} : { loraSlot: slot++ }),
    caption: JUDGING_CAPTIONS[index]!,
  }));
}

export const JUDGING_CAPTIONS = ['Left', 'Right'] as const;

export function wrongPanel(loraStrength: number): ExperimentPanel {
  return { negativePrompt: WRONG_NEGATIVE_PROMPT, loraStrength, caption: `LoRA ×${loraStrength}, negative "${WRONG_NEGATIVE_PROMPT}"` };
}

export interface FooterFacts {
  seed: number;
  steps: number;
  guidanceScale: number;
  width: number;
  height: number;
  /** Left out of a blind pair's footer. */
  lora?: string;
  prompt: string;
  denoisingEnd?: number | null;
}

export function compareFooter(facts: FooterFacts): string {
  return [
    `seed ${facts.seed}`, `${facts.steps} steps`, `guidance ${facts.guidanceScale}`, `${facts.width}x${facts.height}`,
    ...(facts.lora === undefined ? [] : [`LoRA ${facts.lora}`]),
    ...(facts.denoisingEnd ? [`refiner from ${facts.denoisingEnd}`] : []),
    `"${facts.prompt}"`,
  ].join(' · ');
}
