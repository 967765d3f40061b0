import { GENERATION_OPTIONS, GENERATION_USAGE, parseGenerationJob, runGenerationJob, writeOutput } from './generation-options.js';
import type { OptionSpec } from './options.js';

export const GENERATE_USAGE = `wrongbot generate [--model DIR] --prompt TEXT [--negative TEXT] [--lora FILE [--strength S]] ${GENERATION_USAGE} --out FILE.png`;
const OWN_OPTIONS = {
  negative: { type: 'string', value: 'TEXT', description: 'the negative prompt (default: none, which is not "": "" is encoded, none is all zeros)' },
} as const satisfies OptionSpec;
export const GENERATE_OPTIONS = { ...GENERATION_OPTIONS, ...OWN_OPTIONS };

export async function runGenerate(argv: string[]): Promise<void> {
  const { job } = parseGenerationJob(argv, GENERATE_OPTIONS, (values, shared) => [{
    prompt: values.prompt!,
    negativePrompt: values.negative ?? null,
    ...shared,
  }]);
  const result = await runGenerationJob(job);
  await writeOutput(job.out, result.panels[0]!.png);
  console.log(`wrote ${job.out} (${job.request.width}x${job.request.height}, ${job.request.steps} steps)`);
}
