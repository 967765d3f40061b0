import path from 'node:path';
import { composePanels } from '../gpu/compose.js';
import { GENERATION_USAGE, parseGenerationJob, runGenerationJob, writeOutput } from './generation-options.js';
import { UsageError } from './options.js';

// The /compare triptych from the command line: one prompt, one seed, three panels that differ only in what the
// "wrong" experiment varies, generated in one batch.

export const COMPARE_USAGE = `wrongbot compare [--model DIR] --lora FILE [--strength S] --prompt TEXT ${GENERATION_USAGE} `
  + '--out FILE.png [--panels-dir DIR]';

/** The LoRA's trigger word, used as the negative prompt in panels 2 and 3. */
export const WRONG_NEGATIVE_PROMPT = 'wrong';

export async function runCompare(argv: string[]): Promise<void> {
  const { job, values } = parseGenerationJob(argv, { 'panels-dir': { type: 'string' } }, (parsed, shared) => {
    if (parsed.lora === undefined) throw new UsageError('--lora is required: panel 3 applies it');
    const base = { prompt: parsed.prompt!, guidanceScale: shared.guidanceScale, guidanceRescale: shared.guidanceRescale };
    return [
      { ...base, negativePrompt: null, loraStrength: 0 },
      { ...base, negativePrompt: WRONG_NEGATIVE_PROMPT, loraStrength: 0 },
      { ...base, negativePrompt: WRONG_NEGATIVE_PROMPT, loraStrength: shared.loraStrength },
    ];
  });
  const result = await runGenerationJob(job);
  const { request } = job;
  const captions = [
    '1 · base, no negative prompt',
    `2 · base, negative "${WRONG_NEGATIVE_PROMPT}"`,
    `3 · LoRA ×${job.loraStrength}, negative "${WRONG_NEGATIVE_PROMPT}"`,
  ];
  const footer = [
    `seed ${request.seed}`, `${request.steps} steps`, `guidance ${job.guidanceScale}`, `${request.width}x${request.height}`,
    `LoRA ${path.basename(job.pipeline.loraPath!)}`,
    ...(request.denoisingEnd ? [`refiner from ${request.denoisingEnd}`] : []),
    `"${request.panels[0]!.prompt}"`,
  ].join(' · ');
  const composite = await composePanels(result.panels.map((panel, i) => ({ png: panel.png, caption: captions[i]! })), footer);
  await writeOutput(job.out, composite.data);
  console.log(`wrote ${job.out} (${composite.width}x${composite.height}, ${composite.encoding}, ${composite.data.length} bytes)`);
  const panelsDir = values['panels-dir'];
  if (panelsDir !== undefined) {
    for (const [i, panel] of result.panels.entries()) await writeOutput(path.join(panelsDir, `panel-${i + 1}.png`), panel.png);
    console.log(`wrote ${panelsDir}/panel-1.png … panel-${result.panels.length}.png (lossless)`);
  }
}
