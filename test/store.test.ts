import { test, type TestContext } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { createHash, randomBytes, randomUUID } from 'node:crypto';
import { existsSync, mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { createInterface } from 'node:readline';
import { fileURLToPath } from 'node:url';
import Database from 'better-sqlite3';
import { BotStore, migrate, MIGRATIONS } from '../src/store/database.js';
import type { DatasetEntry, DatasetRecovery, DatasetSidecar, DatasetStep } from '../src/store/dataset.js';
import { exportDataset } from '../src/store/dataset-export.js';
import type { PanelProvenance } from '../src/store/images.js';
import { SqliteJobRecords, type NewJobRecord } from '../src/store/jobs.js';
import { DATABASE_FILE_NAME } from '../src/store/layout.js';

// The bot's store on real SQLite files and real folders, one temporary data dir per test, with a clock the tests move.

const START_MS = Date.UTC(2025, 0, 1);
const DAY_MS = 24 * 3600 * 1000;

interface Harness {
  dataDir: string;
  clock: { ms: number };
  open(): BotStore;
}

function harness(t: TestContext): Harness {
  const dataDir = mkdtempSync(path.join(tmpdir(), 'wrongbot-store-'));
  const clock = { ms: START_MS };
  const opened: BotStore[] = [];
  t.after(() => {
    for (const store of opened) store.close();
    rmSync(dataDir, { recursive: true, force: true });
  });
  return {
    dataDir,
    clock,
    open() {
      const store = BotStore.open(dataDir, { now: () => clock.ms });
      opened.push(store);
      return store;
    },
  };
}

/** Closing twice is harmless, so the harness may close a store a test already closed. */
function reopen(h: Harness, store: BotStore): BotStore {
  store.close();
  return h.open();
}

function newJob(overrides: Partial<NewJobRecord> = {}): NewJobRecord {
  return {
    jobId: randomUUID(),
    kind: 'compare',
    userId: 'user-1',
    userName: 'Ada',
    guildId: 'guild-1',
    channelId: 'channel-1',
    applicationId: 'app-1',
    interactionToken: 'token-1',
    tokenExpiresAt: START_MS + 900_000,
    request: { settings: { prompt: 'a cat', seed: 42, steps: 20 }, lora: { version: 'v1', strength: 1 } },
    ...overrides,
  };
}

function fakePng(): Buffer {
  return Buffer.concat([Buffer.from([0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a]), randomBytes(256)]);
}

function provenance(jobId: string, panelIndex: number): PanelProvenance {
  return {
    jobId, kind: 'compare', panelIndex, caption: `panel ${panelIndex + 1}`, prompt: 'a cat',
    negativePrompt: panelIndex === 0 ? null : 'wrong', seed: 42, steps: 20, guidanceScale: 5, width: 64, height: 64,
    model: 'tiny-sdxl', loraVersion: 'v1', loraStrength: panelIndex === 2 ? 1 : 0, requesterId: 'user-1',
    guildId: 'guild-1', channelId: 'channel-1', workerId: 'worker-1', generatedAt: START_MS,
  };
}

/** A recorded job with `count` kept panels, all shown by one message. */
function keepJob(store: BotStore, keptUntil: number, count = 3) {
  const job = store.jobs.insert(newJob());
  const pngs = Array.from({ length: count }, fakePng);
  const kept = store.images.keep(pngs.map((png, index) => ({ png, provenance: provenance(job.jobId, index) })), keptUntil);
  const messageId = `message-${job.jobId}`;
  store.images.attachMessage(job.jobId, messageId);
  return { job, pngs, kept, messageId };
}

function sha256(data: Uint8Array): string {
  return createHash('sha256').update(data).digest('hex');
}

test('a job goes queued → running → delivered, and only the first finish() claims it, also after a reopen', (t) => {
  const h = harness(t);
  let store = h.open();
  const input = newJob();
  const inserted = store.jobs.insert(input);
  assert.deepEqual(inserted, { ...input, status: 'queued', messageId: null, createdAt: START_MS, finishedAt: null, error: null });
  assert.deepEqual(store.jobs.get(input.jobId), inserted);

  store.jobs.setMessageId(input.jobId, 'message-1');
  assert.equal(store.jobs.markRunning(input.jobId), true);
  assert.equal(store.jobs.markRunning(input.jobId), false, 'running → running is no transition');
  h.clock.ms += 5_000;
  const claims = [1, 2, 3, 4].map(() => store.jobs.finish(input.jobId, 'delivered'));
  assert.deepEqual(claims, [true, false, false, false]);
  assert.equal(store.jobs.finish(input.jobId, 'failed', 'late failure'), false);

  store = reopen(h, store);
  assert.equal(store.jobs.finish(input.jobId, 'delivered'), false);
  assert.equal(store.jobs.markRunning(input.jobId), false);
  assert.deepEqual(store.jobs.get(input.jobId), {
    ...inserted, status: 'delivered', messageId: 'message-1', finishedAt: START_MS + 5_000, error: null,
  });

  const failing = store.jobs.insert(newJob());
  assert.equal(store.jobs.finish(failing.jobId, 'failed', 'out of GPU memory'), true);
  assert.equal(store.jobs.get(failing.jobId)?.error, 'out of GPU memory');
  assert.equal(store.jobs.get(randomUUID()), null);
  assert.throws(() => store.jobs.insert(input), new RegExp(`jobId = "${input.jobId}" is already recorded`));
  assert.throws(() => store.jobs.setMessageId(randomUUID(), 'message-2'), /is not a recorded job/);
});

test('unfinished() and activeForUser() list queued and running jobs, oldest first', (t) => {
  const h = harness(t);
  const store = h.open();
  const recordAt = (ms: number, userId: string) => {
    h.clock.ms = ms;
    return store.jobs.insert(newJob({ userId })).jobId;
  };
  const adaFirst = recordAt(START_MS + 1, 'ada');
  const bob = recordAt(START_MS + 2, 'bob');
  const adaDone = recordAt(START_MS + 3, 'ada');
  const adaLast = recordAt(START_MS + 4, 'ada');
  store.jobs.markRunning(adaLast);
  store.jobs.finish(adaDone, 'cancelled');

  assert.deepEqual(store.jobs.unfinished().map((job) => job.jobId), [adaFirst, bob, adaLast]);
  assert.deepEqual(store.jobs.activeForUser('ada').map((job) => [job.jobId, job.status]), [[adaFirst, 'queued'], [adaLast, 'running']]);
  assert.deepEqual(store.jobs.activeForUser('nobody'), []);
});

test('pruneFinishedBefore() deletes old finished jobs once their panels are no longer kept', (t) => {
  const h = harness(t);
  const store = h.open();
  const plain = store.jobs.insert(newJob()).jobId;
  const queued = store.jobs.insert(newJob()).jobId;
  const { job: withPanels } = keepJob(store, START_MS + DAY_MS);
  store.jobs.finish(plain, 'delivered');
  store.jobs.finish(withPanels.jobId, 'delivered');
  h.clock.ms = START_MS + 2 * DAY_MS;
  const recent = store.jobs.insert(newJob()).jobId;
  store.jobs.finish(recent, 'failed', 'boom');

  assert.equal(store.jobs.pruneFinishedBefore(START_MS + DAY_MS), 1);
  assert.equal(store.jobs.get(plain), null);
  assert.notEqual(store.jobs.get(queued), null);
  assert.notEqual(store.jobs.get(withPanels.jobId), null, 'its panels are still kept');
  assert.notEqual(store.jobs.get(recent), null);

  store.images.sweep();
  assert.equal(store.jobs.pruneFinishedBefore(START_MS + DAY_MS), 1);
  assert.equal(store.jobs.get(withPanels.jobId), null);
});

test('kept panels come back by message with identical bytes and sha256, in panel order', (t) => {
  const h = harness(t);
  const store = h.open();
  const { job, pngs, kept, messageId } = keepJob(store, START_MS + DAY_MS);

  const shown = store.images.byMessage(messageId);
  assert.deepEqual(shown.map((panel) => panel.panelIndex), [0, 1, 2]);
  shown.forEach((panel, index) => {
    assert.equal(panel.messageId, messageId);
    assert.equal(panel.path, path.join(h.dataDir, 'images', job.jobId, `panel-${index + 1}.png`));
    assert.equal(panel.sha256, sha256(pngs[index]!));
    assert.equal(panel.bytes, pngs[index]!.length);
    assert.equal(panel.keptUntil, START_MS + DAY_MS);
    assert.deepEqual(panel.provenance, provenance(job.jobId, index));
    assert.deepEqual(store.images.read(panel), pngs[index]);
    assert.deepEqual(store.images.get(job.jobId, index), panel);
  });
  assert.deepEqual(kept.map((panel) => ({ ...panel, messageId })), shown);
  assert.deepEqual(readdirSync(path.join(h.dataDir, 'images', job.jobId)).sort(), ['panel-1.png', 'panel-2.png', 'panel-3.png'],
    'no temporary files are left behind');
  assert.deepEqual(store.images.byMessage('another message'), []);
  assert.equal(store.images.get(job.jobId, 3), null);
});

test('keeping a panel twice is refused and leaves the first copy alone', (t) => {
  const h = harness(t);
  const store = h.open();
  const { job, pngs } = keepJob(store, START_MS + DAY_MS, 1);
  const again = [{ png: fakePng(), provenance: provenance(job.jobId, 0) }];
  assert.throws(() => store.images.keep(again, START_MS + DAY_MS), new RegExp(`job ${job.jobId} panelIndex 0 is already kept`));
  const panel = store.images.get(job.jobId, 0)!;
  assert.deepEqual(store.images.read(panel), pngs[0]);

  const twiceInOneCall = [1, 1].map((index) => ({ png: fakePng(), provenance: provenance(job.jobId, index) }));
  assert.throws(() => store.images.keep(twiceInOneCall, START_MS), /panelIndex 1 appears twice/);
  assert.equal(store.images.get(job.jobId, 1), null);
  assert.equal(existsSync(path.join(h.dataDir, 'images', job.jobId, 'panel-2.png')), false);

  const stranger = randomUUID();
  assert.throws(() => store.images.keep([{ png: fakePng(), provenance: provenance(stranger, 0) }], START_MS),
    new RegExp(`job ${stranger} is not recorded`));
  assert.throws(() => store.images.keep([{ png: Buffer.from('GIF89a'), provenance: provenance(job.jobId, 1) }], START_MS),
    /panels\[0\]\.png = .* is not a PNG/);
});

test('read() names the path of a kept file that is gone', (t) => {
  const h = harness(t);
  const store = h.open();
  const { kept } = keepJob(store, START_MS + DAY_MS, 1);
  rmSync(kept[0]!.path);
  assert.throws(() => store.images.read(kept[0]!), (error: Error) => error.message.includes(kept[0]!.path));
});

test('sweep() removes expired panels, files and rows and votes, and leaves the dataset copy of a curated one', (t) => {
  const h = harness(t);
  const store = h.open();
  const early = keepJob(store, START_MS + DAY_MS);
  const late = keepJob(store, START_MS + 3 * DAY_MS);
  store.votes.add({ jobId: early.job.jobId, panelIndex: 2, userId: 'ada', isAdmin: false });
  const entry = store.dataset.curate(early.kept[2]!, store.votes.of(early.job.jobId, 2));

  assert.equal(store.images.sweep(START_MS + DAY_MS - 1), 0);
  h.clock.ms = START_MS + 2 * DAY_MS;
  assert.equal(store.images.sweep(), 3);

  assert.equal(existsSync(path.join(h.dataDir, 'images', early.job.jobId)), false);
  assert.deepEqual(store.images.byMessage(early.messageId), []);
  assert.deepEqual(store.votes.of(early.job.jobId, 2), []);
  assert.equal(store.images.byMessage(late.messageId).length, 3);
  for (const panel of late.kept) assert.deepEqual(store.images.read(panel), late.pngs[panel.panelIndex]);
  assert.deepEqual(store.dataset.get(entry.id), entry);
  assert.deepEqual(readFileSync(entry.imagePath), early.pngs[2]);
  assert.equal(store.images.sweep(), 0);
});

test('a user votes once per panel, and can take the vote back', (t) => {
  const h = harness(t);
  const store = h.open();
  const { job } = keepJob(store, START_MS + DAY_MS);
  const panel = { jobId: job.jobId, panelIndex: 1 };

  assert.equal(store.votes.add({ ...panel, userId: 'ada', isAdmin: false }), true);
  h.clock.ms += 1_000;
  assert.equal(store.votes.add({ ...panel, userId: 'bob', isAdmin: true }), true);
  assert.equal(store.votes.add({ ...panel, userId: 'ada', isAdmin: true }), false);
  assert.deepEqual(store.votes.of(panel.jobId, panel.panelIndex), [
    { userId: 'ada', isAdmin: false, votedAt: START_MS },
    { userId: 'bob', isAdmin: true, votedAt: START_MS + 1_000 },
  ]);
  assert.deepEqual(store.votes.of(job.jobId, 0), []);

  assert.equal(store.votes.remove({ ...panel, userId: 'ada' }), true);
  assert.equal(store.votes.remove({ ...panel, userId: 'ada' }), false);
  assert.deepEqual(store.votes.of(panel.jobId, panel.panelIndex).map((vote) => vote.userId), ['bob']);
  assert.throws(() => store.votes.add({ jobId: job.jobId, panelIndex: 5, userId: 'ada', isAdmin: false }), /not kept/);
});

test('curate() copies the PNG and writes a sidecar; curating again only updates the voters', (t) => {
  const h = harness(t);
  const store = h.open();
  const { job, pngs, kept } = keepJob(store, START_MS + DAY_MS);
  const panel = kept[1]!;
  store.votes.add({ jobId: job.jobId, panelIndex: 1, userId: 'ada', isAdmin: false });
  h.clock.ms += 60_000;

  const entry = store.dataset.curate(panel, store.votes.of(job.jobId, 1));
  const imagePath = path.join(h.dataDir, 'dataset', `${job.jobId}-panel-2.png`);
  const sidecarPath = path.join(h.dataDir, 'dataset', `${job.jobId}-panel-2.json`);
  assert.deepEqual(entry, {
    id: entry.id, jobId: job.jobId, panelIndex: 1, imagePath, sha256: sha256(pngs[1]!),
    provenance: provenance(job.jobId, 1), voters: [{ userId: 'ada', isAdmin: false, votedAt: START_MS }], curatedAt: START_MS + 60_000,
  });
  assert.deepEqual(readFileSync(imagePath), pngs[1]);
  const sidecar = JSON.parse(readFileSync(sidecarPath, 'utf8')) as DatasetSidecar;
  assert.deepEqual(sidecar, {
    id: entry.id, image: `${job.jobId}-panel-2.png`, sha256: entry.sha256, curatedAt: entry.curatedAt,
    provenance: entry.provenance, voters: entry.voters,
  });

  store.votes.add({ jobId: job.jobId, panelIndex: 1, userId: 'bob', isAdmin: true });
  const again = store.dataset.curate(panel, store.votes.of(job.jobId, 1));
  assert.equal(again.id, entry.id);
  assert.deepEqual(again.voters.map((vote) => vote.userId), ['ada', 'bob']);
  assert.equal(again.curatedAt, entry.curatedAt);
  assert.deepEqual(store.dataset.list(), [again]);
  assert.deepEqual(store.dataset.find(job.jobId, 1), again);
  assert.deepEqual((JSON.parse(readFileSync(sidecarPath, 'utf8')) as DatasetSidecar).voters, again.voters);
  assert.deepEqual(readdirSync(path.join(h.dataDir, 'dataset')).sort(), [`${job.jobId}-panel-2.json`, `${job.jobId}-panel-2.png`]);
});

test('curate() refuses a kept file whose bytes no longer match its sha256', (t) => {
  const h = harness(t);
  const store = h.open();
  const { kept } = keepJob(store, START_MS + DAY_MS, 1);
  writeFileSync(kept[0]!.path, fakePng());
  assert.throws(() => store.dataset.curate(kept[0]!, []), new RegExp(`has sha256 [0-9a-f]{64}, but .* was kept with ${kept[0]!.sha256}`));
  assert.equal(store.dataset.find(kept[0]!.jobId, 0), null);
  assert.deepEqual(readdirSync(path.join(h.dataDir, 'dataset')), []);
});

test('remove() deletes the entry and its files; list() is newest first; counts() tells entries from waiting votes', (t) => {
  const h = harness(t);
  const store = h.open();
  const { job, kept } = keepJob(store, START_MS + DAY_MS);
  assert.deepEqual(store.dataset.counts(), { entries: 0, panelsWithVotes: 0, votes: 0 });

  for (const userId of ['ada', 'bob']) store.votes.add({ jobId: job.jobId, panelIndex: 0, userId, isAdmin: false });
  store.votes.add({ jobId: job.jobId, panelIndex: 1, userId: 'ada', isAdmin: false });
  store.votes.add({ jobId: job.jobId, panelIndex: 2, userId: 'ada', isAdmin: false });
  assert.deepEqual(store.dataset.counts(), { entries: 0, panelsWithVotes: 3, votes: 4 });

  const entries = kept.map((panel) => {
    h.clock.ms += 1_000;
    return store.dataset.curate(panel, store.votes.of(job.jobId, panel.panelIndex));
  });
  assert.deepEqual(store.dataset.counts(), { entries: 3, panelsWithVotes: 0, votes: 0 });
  assert.deepEqual(store.dataset.list().map((entry) => entry.panelIndex), [2, 1, 0]);
  assert.deepEqual(store.dataset.list({ limit: 1, offset: 1 }).map((entry) => entry.panelIndex), [1]);
  assert.throws(() => store.dataset.list({ limit: -1 }), /limit = -1/);

  const removed = store.dataset.remove(entries[0]!.id);
  assert.deepEqual(removed, entries[0]);
  assert.equal(existsSync(entries[0]!.imagePath), false);
  assert.equal(existsSync(entries[0]!.imagePath.replace(/\.png$/, '.json')), false);
  assert.equal(store.dataset.get(entries[0]!.id), null);
  assert.equal(store.dataset.remove(entries[0]!.id), null);
  assert.deepEqual(store.dataset.counts(), { entries: 2, panelsWithVotes: 1, votes: 2 });
  assert.equal(readdirSync(path.join(h.dataDir, 'dataset')).length, 4);
});

test('reject() removes an entry and remembers the panel as rejected, also after a reopen', (t) => {
  const h = harness(t);
  let store = h.open();
  const { job, kept } = keepJob(store, START_MS + DAY_MS);
  const entry = store.dataset.curate(kept[1]!, []);
  assert.equal(store.dataset.isRejected(job.jobId, 1), false);
  assert.equal(store.dataset.reject(entry.id, 'admin-1')?.id, entry.id);
  assert.equal(existsSync(entry.imagePath), false);
  store = reopen(h, store);
  assert.equal(store.dataset.isRejected(job.jobId, 1), true);
  assert.equal(store.dataset.isRejected(job.jobId, 0), false);
  assert.equal(store.dataset.reject(entry.id, 'admin-1'), null, 'nothing left to reject');
});

// A real process changing the training set, SIGKILLed right after one of its steps; the store is then reopened here.
const STEP_CHILD = fileURLToPath(new URL('./support/dataset-step-child.js', import.meta.url));
const CHILD_BOUND_MS = 30_000;
const NOTHING_TO_RECOVER: DatasetRecovery = { completed: [], undone: [], removed: [], sidecarsRewritten: [], strayFiles: [] };

async function killedAfter(dataDir: string, step: DatasetStep, action: string[]): Promise<void> {
  const child = spawn(process.execPath, [STEP_CHILD, dataDir, step, ...action], { stdio: ['ignore', 'pipe', 'pipe'] });
  const exited = new Promise<NodeJS.Signals | null>((resolve) => child.once('exit', (_code, signal) => resolve(signal)));
  let output = '';
  child.stderr.on('data', (chunk: Buffer) => { output += chunk.toString(); });
  let reached = false;
  const timer = setTimeout(() => child.kill('SIGKILL'), CHILD_BOUND_MS);
  for await (const line of createInterface({ input: child.stdout })) {
    output += `${line}\n`;
    if (line === step) {
      reached = true;
      child.kill('SIGKILL');
      break;
    }
  }
  clearTimeout(timer);
  const signal = await exited;
  assert.ok(reached && signal === 'SIGKILL', `the child was killed after ${step} (it ended with ${signal}):\n${output}`);
}

function datasetFiles(h: Harness): string[] {
  return readdirSync(path.join(h.dataDir, 'dataset')).sort();
}

function sidecarOf(entry: DatasetEntry): DatasetSidecar {
  return JSON.parse(readFileSync(entry.imagePath.replace(/\.png$/, '.json'), 'utf8')) as DatasetSidecar;
}

/** What anyone reading the set (a list, /train's snapshot, the export, a trainer) relies on at every moment. */
function assertReadersSeeWholeEntries(store: BotStore): void {
  for (const entry of store.dataset.list()) {
    assert.equal(sha256(readFileSync(entry.imagePath)), entry.sha256, `entry #${entry.id}'s PNG`);
    assert.deepEqual(sidecarOf(entry).voters, entry.voters, `entry #${entry.id}'s sidecar`);
  }
}

/** Rows and folder agree: each entry's PNG and current sidecar, nothing else, and nothing left for recover(). */
function assertAgree(h: Harness, store: BotStore): void {
  assertReadersSeeWholeEntries(store);
  const owned = store.dataset.list().flatMap((entry) => [path.basename(entry.imagePath), path.basename(entry.imagePath).replace(/\.png$/, '.json')]);
  assert.deepEqual(datasetFiles(h), owned.sort());
  assert.deepEqual(store.dataset.recover(), NOTHING_TO_RECOVER);
}

/** Every id the data dir has shown: in the rows readers see and in the sidecars on disk. */
function idsSeen(h: Harness, store: BotStore): number[] {
  const sidecars = datasetFiles(h).filter((name) => name.endsWith('.json'))
    .map((name) => (JSON.parse(readFileSync(path.join(h.dataDir, 'dataset', name), 'utf8')) as DatasetSidecar).id);
  return [...store.dataset.list().map((entry) => entry.id), ...sidecars];
}

test('a curation killed after any step is completed at the next start, readers never see it half done, and its id is not handed out again', async (t) => {
  const steps = ['curate:row-pending', 'curate:image-written', 'curate:sidecar-written'] satisfies DatasetStep[];
  for (const step of steps) {
    await t.test(step, async (st) => {
      const h = harness(st);
      let store = h.open();
      const { job, kept } = keepJob(store, START_MS + DAY_MS);
      store.votes.add({ jobId: job.jobId, panelIndex: 0, userId: 'ada', isAdmin: false });
      const earlier = store.dataset.curate(kept[1]!, []);
      store.close();

      await killedAfter(h.dataDir, step, ['curate', job.jobId, '0']);
      store = h.open();
      assertReadersSeeWholeEntries(store);
      assert.deepEqual(store.dataset.list(), [earlier], 'the interrupted entry is not in the set yet');
      assert.equal(store.dataset.find(job.jobId, 0), null);
      assert.deepEqual(store.dataset.counts(), { entries: 1, panelsWithVotes: 1, votes: 1 });
      const out = path.join(h.dataDir, 'export');
      assert.equal(exportDataset(store, { outDir: out, format: 'kohya', caption: 'wrong', snapshotId: null }).images, 1);
      assert.deepEqual(readdirSync(out).filter((name) => name.endsWith('.png')), [`${earlier.sha256}.png`]);
      const seen = idsSeen(h, store);

      const recovery = store.dataset.recover();
      const completed = store.dataset.find(job.jobId, 0);
      assert.ok(completed, 'the curation was completed');
      assert.deepEqual(recovery, { ...NOTHING_TO_RECOVER, completed: [completed.id] });
      assert.deepEqual(completed.voters.map((vote) => vote.userId), ['ada']);
      assert.ok(completed.id > earlier.id);
      assertAgree(h, store);

      const next = store.dataset.curate(kept[2]!, []);
      assert.ok(next.id > Math.max(completed.id, ...seen), `the next entry's id ${next.id} is new (seen: ${seen.join(', ')})`);
      store = reopen(h, store);
      assertAgree(h, store);
    });
  }
});

test('a curation killed after its row whose kept image has expired since is undone, its id not reused', async (t) => {
  const h = harness(t);
  let store = h.open();
  const { job, kept } = keepJob(store, START_MS + DAY_MS);
  store.close();
  await killedAfter(h.dataDir, 'curate:row-pending', ['curate', job.jobId, '0']);
  rmSync(kept[0]!.path);

  store = h.open();
  const recovery = store.dataset.recover();
  assert.equal(recovery.undone.length, 1);
  assert.deepEqual(recovery, { ...NOTHING_TO_RECOVER, undone: recovery.undone });
  assert.equal(store.dataset.find(job.jobId, 0), null);
  assertAgree(h, store);
  assert.ok(store.dataset.curate(kept[1]!, []).id > recovery.undone[0]!, 'the undone entry\'s id is not handed out again');
});

test('a removal killed after any step is finished at the next start, and the rejection stays', async (t) => {
  const steps = ['remove:row-marked', 'remove:sidecar-removed', 'remove:image-removed'] satisfies DatasetStep[];
  for (const step of steps) {
    await t.test(step, async (st) => {
      const h = harness(st);
      let store = h.open();
      const { job, kept } = keepJob(store, START_MS + DAY_MS);
      const doomed = store.dataset.curate(kept[0]!, []);
      const staying = store.dataset.curate(kept[1]!, []);
      store.close();

      await killedAfter(h.dataDir, step, ['reject', String(doomed.id)]);
      store = h.open();
      assertReadersSeeWholeEntries(store);
      assert.deepEqual(store.dataset.list(), [staying], 'the entry being removed is out of the set already');
      assert.equal(store.dataset.get(doomed.id), null);
      assert.equal(store.dataset.isRejected(job.jobId, 0), true);

      assert.deepEqual(store.dataset.recover(), { ...NOTHING_TO_RECOVER, removed: [doomed.id] });
      assertAgree(h, store);
      assert.ok(store.dataset.curate(kept[2]!, []).id > staying.id);
      assert.equal(store.dataset.isRejected(job.jobId, 0), true);
    });
  }
});

test('new voters killed before their sidecar: the next start rewrites it', async (t) => {
  const h = harness(t);
  let store = h.open();
  const { job, kept } = keepJob(store, START_MS + DAY_MS);
  store.votes.add({ jobId: job.jobId, panelIndex: 0, userId: 'ada', isAdmin: false });
  const entry = store.dataset.curate(kept[0]!, store.votes.of(job.jobId, 0));
  store.votes.add({ jobId: job.jobId, panelIndex: 0, userId: 'bob', isAdmin: false });
  store.close();

  await killedAfter(h.dataDir, 'curate:voters-updated', ['curate', job.jobId, '0']);
  store = h.open();
  assert.deepEqual(sidecarOf(entry).voters.map((vote) => vote.userId), ['ada'], 'the kill left the sidecar behind the row');
  assert.deepEqual(store.dataset.recover(), { ...NOTHING_TO_RECOVER, sidecarsRewritten: [entry.id] });
  assert.deepEqual(sidecarOf(entry).voters.map((vote) => vote.userId), ['ada', 'bob']);
  assertAgree(h, store);
});

test('recover() deletes dataset files no entry owns and half-written temporaries, and leaves other files alone', (t) => {
  const h = harness(t);
  const store = h.open();
  const { kept } = keepJob(store, START_MS + DAY_MS);
  const entry = store.dataset.curate(kept[0]!, []);
  const orphan = `${randomUUID()}-panel-1`;
  const temporary = `.${path.basename(entry.imagePath)}.4242.0123456789ab.tmp`;
  for (const name of [`${orphan}.png`, `${orphan}.json`, temporary, 'notes.txt']) writeFileSync(path.join(h.dataDir, 'dataset', name), 'x');

  assert.deepEqual(store.dataset.recover(), { ...NOTHING_TO_RECOVER, strayFiles: [`${orphan}.json`, `${orphan}.png`, temporary].sort() });
  assert.deepEqual(datasetFiles(h), [path.basename(entry.imagePath).replace(/\.png$/, '.json'), path.basename(entry.imagePath), 'notes.txt'].sort());
  assert.equal(sha256(readFileSync(entry.imagePath)), entry.sha256);
});

test('guild defaults start unset, merge partial changes, clear with null and survive a reopen', (t) => {
  const h = harness(t);
  let store = h.open();
  const unset = { size: null, steps: null, guidanceScale: null, loraStrength: null, refinerHandoff: null };
  assert.deepEqual(store.guilds.get('guild-1'), unset);

  assert.deepEqual(store.guilds.set('guild-1', { size: '1024x1024', steps: 25 }, 'admin-1'), { ...unset, size: '1024x1024', steps: 25 });
  assert.deepEqual(store.guilds.set('guild-1', { guidanceScale: 7.5, steps: undefined }, 'admin-2'),
    { ...unset, size: '1024x1024', steps: 25, guidanceScale: 7.5 });
  assert.deepEqual(store.guilds.set('guild-1', { size: null, loraStrength: -0.5 }, 'admin-1'),
    { ...unset, steps: 25, guidanceScale: 7.5, loraStrength: -0.5 });
  assert.deepEqual(store.guilds.get('guild-2'), unset);

  store = reopen(h, store);
  assert.deepEqual(store.guilds.get('guild-1'), { ...unset, steps: 25, guidanceScale: 7.5, loraStrength: -0.5 });
  assert.throws(() => store.guilds.set('guild-1', { steps: 2.5 }, 'admin-1'), /steps = 2\.5 must be an integer/);
  assert.throws(() => store.guilds.set('guild-1', { seed: 1 } as never, 'admin-1'), /changes = "seed" is not a guild default/);
  assert.deepEqual(store.guilds.get('guild-1'), { ...unset, steps: 25, guidanceScale: 7.5, loraStrength: -0.5 });
  assert.equal(store.guilds.set('guild-1', { refinerHandoff: 0.8 }, 'admin-1').refinerHandoff, 0.8);
  assert.throws(() => store.guilds.set('guild-1', { refinerHandoff: 1 }, 'admin-1'), /refinerHandoff = 1 must be a number between 0 and 1/);
  assert.equal(store.guilds.set('guild-1', { refinerHandoff: null }, 'admin-1').refinerHandoff, null, 'the refiner off again');
});

test('a fresh data dir gets the whole schema in WAL mode, and a reopen keeps the rows', (t) => {
  const h = harness(t);
  let store = h.open();
  const { job, messageId } = keepJob(store, START_MS + DAY_MS);
  store.votes.add({ jobId: job.jobId, panelIndex: 0, userId: 'ada', isAdmin: false });
  store.guilds.set('guild-1', { steps: 40 }, 'admin-1');
  store = reopen(h, store);

  assert.equal(store.jobs.get(job.jobId)?.jobId, job.jobId);
  assert.equal(store.images.byMessage(messageId).length, 3);
  assert.equal(store.votes.of(job.jobId, 0).length, 1);
  assert.equal(store.guilds.get('guild-1').steps, 40);

  const db = new Database(path.join(h.dataDir, DATABASE_FILE_NAME), { readonly: true });
  t.after(() => db.close());
  assert.equal(db.pragma('user_version', { simple: true }), MIGRATIONS.length);
  assert.equal(db.pragma('journal_mode', { simple: true }), 'wal');
});

test('a database at an older schema is upgraded with its rows kept', (t) => {
  const h = harness(t);
  const file = path.join(h.dataDir, DATABASE_FILE_NAME);
  const old = new Database(file);
  migrate(old, MIGRATIONS.slice(0, 2));
  assert.equal(old.pragma('user_version', { simple: true }), 2);
  const job = new SqliteJobRecords(old, () => START_MS).insert(newJob());
  old.close();

  const store = h.open();
  assert.deepEqual(store.jobs.get(job.jobId), job);
  const { kept } = keepJob(store, START_MS + DAY_MS, 1);
  assert.equal(store.dataset.curate(kept[0]!, []).jobId, kept[0]!.jobId, 'the dataset step ran');
  assert.equal(store.guilds.set('guild-1', { steps: 40 }, 'admin-1').steps, 40, 'the guild defaults step ran');
});

test('the rebuilds of the jobs table for validate and judge jobs keep every job and the panels that refer to them', (t) => {
  const h = harness(t);
  // Two steps, the validate and the judge one, each rebuild the table for a new job kind.
  const beforeRebuild = MIGRATIONS.findIndex((step) => step.includes("'validate'"));
  const old = new Database(path.join(h.dataDir, DATABASE_FILE_NAME));
  old.pragma('foreign_keys = ON');
  migrate(old, MIGRATIONS.slice(0, beforeRebuild));
  const job = new SqliteJobRecords(old, () => START_MS).insert(newJob());
  old.prepare('INSERT INTO kept_panels (job_id, panel_index, message_id, sha256, bytes, provenance, kept_until) VALUES (?, 0, NULL, ?, 1, ?, ?)')
    .run(job.jobId, 'a'.repeat(64), '{}', START_MS + DAY_MS);
  assert.throws(() => new SqliteJobRecords(old, () => START_MS).insert(newJob({ kind: 'validate' })), /CHECK constraint/);
  old.close();

  const store = h.open();
  assert.deepEqual(store.jobs.get(job.jobId), job);
  assert.equal(store.jobs.insert(newJob({ kind: 'validate' })).kind, 'validate');
  assert.equal(store.jobs.insert(newJob({ kind: 'judge' })).kind, 'judge');
  // migrate() checks every foreign key once the steps are in: the kept panel still refers to a job that exists.
  assert.ok(store.trainings.validationPrompts().length >= 3, 'the default validation prompts');
});

test('entries curated before the pending mark existed stay in the set after the upgrade', (t) => {
  const h = harness(t);
  const old = new Database(path.join(h.dataDir, DATABASE_FILE_NAME));
  migrate(old, MIGRATIONS.slice(0, MIGRATIONS.findIndex((step) => step.includes('ADD COLUMN pending'))));
  const jobId = randomUUID();
  old.prepare('INSERT INTO dataset_entries (job_id, panel_index, sha256, provenance, voters, curated_at) VALUES (?, 0, ?, ?, ?, ?)')
    .run(jobId, 'a'.repeat(64), JSON.stringify(provenance(jobId, 0)), '[]', START_MS);
  old.close();

  const store = h.open();
  assert.deepEqual(store.dataset.list().map((entry) => [entry.id, entry.jobId]), [[1, jobId]]);
  assert.equal(store.dataset.counts().entries, 1);
});

test('a database from a newer wrongbot is refused with a clear error and left unchanged', (t) => {
  const h = harness(t);
  const file = path.join(h.dataDir, DATABASE_FILE_NAME);
  // Left in the default rollback journal, so switching it to WAL too early would show in the file's header.
  const newer = new Database(file);
  migrate(newer);
  newer.pragma(`user_version = ${MIGRATIONS.length + 2}`);
  newer.close();
  const before = readFileSync(file);

  assert.throws(() => BotStore.open(h.dataDir),
    new RegExp(`was written by a newer wrongbot \\(schema ${MIGRATIONS.length + 2}, this one knows ${MIGRATIONS.length}\\); upgrade wrongbot`));
  assert.deepEqual(readFileSync(file), before);
});

test('an invalid job id is refused with an error naming it, before any file is written', (t) => {
  const h = harness(t);
  const store = h.open();
  const badId = '../../etc/passwd';
  assert.throws(() => store.jobs.insert(newJob({ jobId: badId })), /jobId = "\.\.\/\.\.\/etc\/passwd" must be a lowercase UUID/);
  assert.throws(() => store.jobs.insert(newJob({ jobId: randomUUID().toUpperCase() })), /must be a lowercase UUID/);
  assert.throws(() => store.images.keep([{ png: fakePng(), provenance: provenance(badId, 0) }], START_MS),
    /panels\[0\]\.provenance\.jobId = "\.\.\/\.\.\/etc\/passwd" must be a lowercase UUID/);
  assert.throws(() => store.images.keep([{ png: fakePng(), provenance: provenance(randomUUID(), 8) }], START_MS),
    /panels\[0\]\.provenance\.panelIndex = 8 must be an integer from 0 to 7/);
  assert.deepEqual(readdirSync(path.join(h.dataDir, 'images')), []);
});

test('training snapshots: frozen and sorted entries, a version number never handed out twice, a candidate recorded once', (t) => {
  const h = harness(t);
  let store = h.open();
  const hash = (digit: string) => digit.repeat(64);
  const first = store.trainings.snapshot({
    jobId: store.jobs.insert(newJob({ kind: 'train' })).jobId, baseVersion: null, steps: 30, seed: 4, createdBy: 'admin-1',
    entries: [{ id: 9, sha256: hash('b') }, { id: 3, sha256: hash('a') }],
  });
  assert.equal(first.version, 'wrong-v1');
  assert.deepEqual(first.entries.map((entry) => entry.id), [3, 9], 'sorted by image hash, as the train job lists them');
  const second = store.trainings.snapshot({
    jobId: store.jobs.insert(newJob({ kind: 'train' })).jobId, baseVersion: 'wrong-v1', steps: 30, seed: 5, createdBy: 'admin-1', entries: [],
  });
  assert.equal(second.version, 'wrong-v2');

  h.clock.ms += 60_000;
  const candidate = store.trainings.addCandidate(second, 0.25);
  assert.deepEqual(candidate, {
    name: 'wrong-v2', origin: 'trained', parent: 'wrong-v1', snapshotId: second.id, steps: 30, seed: 5, finalLoss: 0.25,
    createdBy: 'admin-1', createdAt: h.clock.ms,
  });
  h.clock.ms += 60_000;
  assert.deepEqual(store.trainings.addCandidate(second, 0.5), candidate, 'delivering the result again changes nothing');

  store = reopen(h, store);
  assert.deepEqual(store.trainings.snapshotOfJob(first.jobId), first);
  assert.deepEqual(store.trainings.versions().map((version) => version.name), ['wrong-v2']);
  // A failed training's number stays used: the next snapshot does not reuse it.
  const third = store.trainings.snapshot({ jobId: store.jobs.insert(newJob({ kind: 'train' })).jobId, baseVersion: null, steps: 1, seed: 1, createdBy: 'admin-1', entries: [] });
  assert.equal(third.version, 'wrong-v3');
});

test('the served LoRA version: LORA_PATH\'s at first start, an admin\'s promotion over it at every later start, rollback walks back', (t) => {
  const h = harness(t);
  let store = h.open();
  assert.equal(store.trainings.served(), null);
  store.trainings.start(null);
  assert.equal(store.trainings.served(), null, 'no LORA_PATH, nothing served');
  store.trainings.start('wrong');
  store.trainings.start('wrong');
  assert.equal(store.trainings.served(), 'wrong');
  assert.throws(() => store.trainings.rollback('admin-1'), /no other version was served before/);

  const snapshot = store.trainings.snapshot({ jobId: store.jobs.insert(newJob({ kind: 'train' })).jobId, baseVersion: 'wrong', steps: 5, seed: 1, createdBy: 'admin-1', entries: [] });
  store.trainings.addCandidate(snapshot, 0.5);
  assert.throws(() => store.trainings.promote('wrong-v9', 'admin-1'), /there is no LoRA version wrong-v9/);
  assert.deepEqual(store.trainings.promote('wrong-v1', 'admin-1'), { previous: 'wrong', served: 'wrong-v1' });
  assert.throws(() => store.trainings.promote('wrong-v1', 'admin-1'), /wrong-v1 is served already/);

  store = reopen(h, store);
  store.trainings.start('wrong');
  assert.equal(store.trainings.served(), 'wrong-v1', 'the promotion wins over LORA_PATH at a restart');
  store.trainings.start('wrong-2024');
  assert.equal(store.trainings.served(), 'wrong-v1', 'even over a new LORA_PATH');
  assert.deepEqual(store.trainings.versions().map((version) => [version.name, version.origin]).sort(), [['wrong', 'lora_path'], ['wrong-2024', 'lora_path'], ['wrong-v1', 'trained']]);

  assert.deepEqual(store.trainings.rollback('admin-2'), { previous: 'wrong-v1', served: 'wrong' });
  assert.deepEqual(store.trainings.rollback('admin-2'), { previous: 'wrong', served: 'wrong-v1' }, 'rolling back again returns to the one before');
  assert.throws(() => store.trainings.start('wrong-v7'), /LORA_PATH's version wrong-v7 has the form of the versions \/train names/);
});

test('blind judging: pairs keep their sides and shuffle seed, each member\'s vote counts once, tallies count votes for the candidate\'s side', (t) => {
  const h = harness(t);
  let store = h.open();
  store.trainings.start('wrong');
  const candidate = store.trainings.addCandidate(
    store.trainings.snapshot({ jobId: store.jobs.insert(newJob({ kind: 'train' })).jobId, baseVersion: 'wrong', steps: 5, seed: 1, createdBy: 'admin-1', entries: [] }), 0.5);
  assert.equal(store.trainings.newestCandidate()?.name, 'wrong-v1');
  const pair = (candidateSide: 'left' | 'right', opponent: string | null) => store.judging.recordPair({
    jobId: store.jobs.insert(newJob({ kind: 'judge' })).jobId, candidate: candidate.name, opponent, candidateSide,
    shuffleSeed: 1234, prompt: 'a red bicycle', seed: 5, guildId: 'guild-1', createdBy: 'member-1',
  });
  const left = pair('left', 'wrong');
  const right = pair('right', 'wrong');
  assert.equal(store.judging.pairCount(), 2);
  assert.deepEqual(store.judging.pairOfJob(right.jobId), right);
  assert.equal(right.createdAt, START_MS);

  assert.deepEqual(store.judging.vote(left.id, 'alice', 'left'), { counted: true });
  assert.deepEqual(store.judging.vote(left.id, 'alice', 'right'), { counted: false, earlier: 'left' }, 'a second vote on one pair is refused');
  assert.deepEqual(store.judging.vote(left.id, 'bob', 'right'), { counted: true });
  assert.deepEqual(store.judging.vote(right.id, 'alice', 'right'), { counted: true });
  assert.deepEqual(store.judging.tally('wrong-v1', 'wrong'), { candidate: 'wrong-v1', opponent: 'wrong', votes: 3, wins: 2 });
  assert.deepEqual(store.judging.tally('wrong-v1', null), { candidate: 'wrong-v1', opponent: null, votes: 0, wins: 0 });

  // Against the base model (nothing served): a NULL opponent is its own tally.
  const againstBase = pair('right', null);
  store.judging.vote(againstBase.id, 'carol', 'left');
  store = reopen(h, store);
  assert.deepEqual(store.judging.tally('wrong-v1', null), { candidate: 'wrong-v1', opponent: null, votes: 1, wins: 0 });
  assert.deepEqual(store.judging.tallies(), [
    { candidate: 'wrong-v1', opponent: 'wrong', votes: 3, wins: 2 },
    { candidate: 'wrong-v1', opponent: null, votes: 1, wins: 0 },
  ]);

  assert.equal(store.trainings.everServed('wrong-v1'), false);
  store.trainings.promote('wrong-v1', null);
  assert.equal(store.trainings.newestCandidate(), null, 'the served version is no candidate');
  store.trainings.rollback('admin-1');
  assert.equal(store.trainings.everServed('wrong-v1'), true, 'served once, even after the rollback');
  assert.equal(store.trainings.newestCandidate()?.name, 'wrong-v1', 'a rolled-back version can be judged again');
  assert.throws(() => pair('left', 'wrong-v77'), /FOREIGN KEY/, 'a pair names known versions only');
});

test('each server sees its own: dataset entries and waiting votes by the server the image was made in, trainings counted per server', (t) => {
  const h = harness(t);
  const store = h.open();
  const inGuild = (guildId: string) => {
    const job = store.jobs.insert(newJob({ guildId }));
    const kept = store.images.keep([0, 1].map((index) => ({ png: fakePng(), provenance: { ...provenance(job.jobId, index), guildId } })), START_MS + DAY_MS);
    return kept;
  };
  const [a0, a1] = inGuild('guild-a');
  const [b0, b1] = inGuild('guild-b');
  store.dataset.curate(a0!, []);
  store.dataset.curate(b0!, []);
  store.votes.add({ jobId: a1!.jobId, panelIndex: 1, userId: 'alice', isAdmin: false });
  store.votes.add({ jobId: b1!.jobId, panelIndex: 1, userId: 'bob', isAdmin: false });
  store.votes.add({ jobId: b1!.jobId, panelIndex: 1, userId: 'carol', isAdmin: false });

  assert.deepEqual(store.dataset.list({ guildId: 'guild-a' }).map((entry) => entry.jobId), [a0!.jobId]);
  assert.deepEqual(store.dataset.list({ guildId: 'guild-b' }).map((entry) => entry.jobId), [b0!.jobId]);
  assert.equal(store.dataset.list().length, 2, 'the training set is all of them');
  assert.deepEqual(store.dataset.counts('guild-a'), { entries: 1, panelsWithVotes: 1, votes: 1 });
  assert.deepEqual(store.dataset.counts('guild-b'), { entries: 1, panelsWithVotes: 1, votes: 2 });
  assert.deepEqual(store.dataset.counts(), { entries: 2, panelsWithVotes: 2, votes: 3 });

  store.jobs.insert(newJob({ kind: 'train', guildId: 'guild-a' }));
  h.clock.ms += DAY_MS;
  store.jobs.insert(newJob({ kind: 'train', guildId: 'guild-a' }));
  store.jobs.insert(newJob({ kind: 'train', guildId: 'guild-b' }));
  assert.equal(store.jobs.countSince('train', 'guild-a', h.clock.ms - DAY_MS + 1), 1, 'the one from a day ago no longer counts');
  assert.equal(store.jobs.countSince('train', 'guild-b', START_MS), 1);
  assert.equal(store.jobs.countSince('compare', 'guild-a', START_MS), 1);
});
