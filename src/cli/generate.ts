import { GENERATION_USAGE, parseGenerationJob, runGenerationJob, writeOutput } from './generation-options.js';

export const GENERATE_USAGE = `wrongbot generate [--model DIR] --prompt TEXT [--negative TEXT] [--lora FILE [--strength S]] ${GENERATION_USAGE} --out FILE.png`;

export async function runGenerate(argv: string[]): Promise<void> {
  const { job } = parseGenerationJob(argv, { negative: { type: 'string' } }, (values, shared) => [{
    prompt: values.prompt!,
    negativePrompt: values.negative ?? null,
    ...shared,
  }]);
  const result = await runGenerationJob(job);
  await writeOutput(job.out, result.panels[0]!.png);
  console.log(`wrote ${job.out} (${job.request.width}x${job.request.height}, ${job.request.steps} steps)`);
}
