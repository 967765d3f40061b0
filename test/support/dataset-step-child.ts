import { writeSync } from 'node:fs';
import { BotStore } from '../../src/store/database.js';

// A process that changes the training set and stops at one of its steps, so a test can SIGKILL it exactly there:
//   node dataset-step-child.js DATA_DIR STEP curate JOB_ID PANEL_INDEX
//   node dataset-step-child.js DATA_DIR STEP reject ENTRY_ID
// It prints each step as it passes it, then "done" if it was not stopped.

/** Long enough for any test to kill it; a child nobody kills goes on and says "done", which fails its test. */
const PAUSE_LIMIT_MS = 60_000;

const [dataDir, stopAt, action, ...args] = process.argv.slice(2);
const store = BotStore.open(dataDir!, {
  afterDatasetStep(step) {
    writeSync(1, `${step}\n`);
    // Blocks the whole process: nothing after this step happens before the kill.
    if (step === stopAt) Atomics.wait(new Int32Array(new SharedArrayBuffer(4)), 0, 0, PAUSE_LIMIT_MS);
  },
});
if (action === 'curate') {
  const [jobId, panelIndex] = [args[0]!, Number(args[1])];
  const panel = store.images.get(jobId, panelIndex);
  if (panel === null) throw new Error(`job ${jobId} panelIndex ${panelIndex} is not kept`);
  store.dataset.curate(panel, store.votes.of(jobId, panelIndex));
} else if (action === 'reject') {
  store.dataset.reject(Number(args[0]), 'admin-1');
} else {
  throw new Error(`action = ${JSON.stringify(action)} must be curate or reject`);
}
store.close();
writeSync(1, 'done\n');
