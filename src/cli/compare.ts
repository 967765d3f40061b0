import path from 'node:path';
import { compareFooter, comparePanels } from '../common/triptych.js';
import { composePanels } from '../gpu/compose.js';
import { GENERATION_OPTIONS, GENERATION_USAGE, parseGenerationJob, runGenerationJob, writeOutput } from './generation-options.js';
import { UsageError, type OptionSpec } from './options.js';

// The /compare triptych from the command line: one prompt, one seed, three panels that differ only in what the
// "wrong" experiment varies, generated in one batch.

export const COMPARE_USAGE = `wrongbot compare [--model DIR] --lora FILE [--strength S] --prompt TEXT ${GENERATION_USAGE} `
  + '--out FILE.png [--panels-dir DIR]';
const OWN_OPTIONS = {
  'panels-dir': { type: 'string', value: 'DIR', description: 'also write the three panels here, lossless: panel-1.png … panel-3.png' },
} as const satisfies OptionSpec;
export const COMPARE_OPTIONS = { ...GENERATION_OPTIONS, ...OWN_OPTIONS };

export async function runCompare(argv: string[]): Promise<void> {
  const { job, values } = parseGenerationJob(argv, COMPARE_OPTIONS, (parsed, shared) => {
    if (parsed.lora === undefined) throw new UsageError('--lora is required: panel 3 applies it');
    return comparePanels(shared.loraStrength).map(({ negativePrompt, loraStrength }) => ({
      prompt: parsed.prompt!, guidanceScale: shared.guidanceScale, guidanceRescale: shared.guidanceRescale, negativePrompt, loraStrength,
    }));
  });
  const result = await runGenerationJob(job);
  const { request } = job;
  const captions = comparePanels(job.loraStrength).map((panel) => panel.caption);
  // The same footer as the queue's compare jobs, so a triptych looks alike whichever way it was made.
  const footer = compareFooter({
    ...request, guidanceScale: job.guidanceScale, prompt: request.panels[0]!.prompt,
    lora: `${job.lora!.version} ×${job.loraStrength}`,
  });
  const composite = await composePanels(result.panels.map((panel, i) => ({ png: panel.png, caption: captions[i]! })), footer);
  await writeOutput(job.out, composite.data);
  console.log(`wrote ${job.out} (${composite.width}x${composite.height}, ${composite.encoding}, ${composite.data.length} bytes)`);
  const panelsDir = values['panels-dir'];
  if (panelsDir !== undefined) {
    for (const [i, panel] of result.panels.entries()) await writeOutput(path.join(panelsDir, `panel-${i + 1}.png`), panel.png);
    console.log(`wrote ${panelsDir}/panel-1.png … panel-${result.panels.length}.png (lossless)`);
  }
}
