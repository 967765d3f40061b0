import { loraFromFile } from '../../src/gpu/training/lora-parameters.js';
import { LoraTrainingRun, type TrainingOutcome } from '../../src/gpu/training/lora-training.js';
import { readReplayCase } from '../../src/gpu/training/replay-case.js';
import { fixturePath } from './fixtures.js';

// Does training fit? The experiment, shared by the test that holds it to a floor and the benchmark that
// records the figure: 200 steps at lr 1e-3 at 128² on case b1's images, then the mean loss over 24 fixed
// (image, noise, timestep) triples before and after (torch and diffusers: 1.1723 → 1.1492, 2.0 % lower).

export const HELD_OUT_EXPERIMENT = {
  recipe: { steps: 200, learningRate: 1e-3, resolution: 128, seed: 7 },
  /** A seed the training's own draws never use. */
  heldOutSeed: 987_654,
  triples: 24,
} as const;

export interface HeldOutResult {
  before: number;
  after: number;
  /** (before − after) / before */
  drop: number;
  outcome: TrainingOutcome;
  trainingSetSha256: string;
}

export async function runHeldOutExperiment(outPath: string): Promise<HeldOutResult> {
  const { recipe, heldOutSeed, triples } = HELD_OUT_EXPERIMENT;
  const run = await LoraTrainingRun.prepare({
    modelDir: fixturePath('tiny-sdxl'), device: { kind: 'cpu', index: 0 }, gradientCheckpointing: false, recipe,
    images: readReplayCase(fixturePath('training-reference', 'b1')).images, draws: { kind: 'seeded' }, start: { kind: 'fresh' }, outPath, checkpoint: null,
  });
  try {
    const heldOut = { seed: heldOutSeed, draws: triples };
    const { parameters: initial } = await run.start();
    const before = await run.heldOutLoss(initial, heldOut);
    const outcome = await run.train();
    const { parameters: trained } = await loraFromFile(outPath, run.targets, initial);
    const after = await run.heldOutLoss(trained, heldOut);
    return { before, after, drop: (before - after) / before, outcome, trainingSetSha256: run.trainingSetSha256 };
  } finally {
    await run.dispose();
  }
}
