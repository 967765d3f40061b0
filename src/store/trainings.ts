import type Database from 'better-sqlite3';

// What each /train froze and what it made, and which version is served: the snapshot of the training set (entries
// and image hashes as they were, so later votes and removals do not change a running training), every LoRA version
// with its provenance (trained ones, and the LORA_PATH file the bot started with), and the history of the served
// version, which promotions and rollbacks extend. Trained versions are named by their snapshot's number, which
// SQLite never hands out twice.

export const TRAINED_VERSION_PREFIX = 'wrong-v';
const TRAINED_VERSION_NAME = /^wrong-v\d+$/;

export class LoraVersionsError extends Error {
  override name = 'LoraVersionsError';
}

export interface SnapshotEntry {
  /** The training-set entry's id when the snapshot was taken. */
  id: number;
  sha256: string;
}

export interface TrainingSnapshot {
  id: number;
  jobId: string;
  /** The version the training makes. */
  version: string;
  baseVersion: string | null;
  steps: number;
  seed: number;
  /** Sorted by sha256, one per distinct image. */
  entries: SnapshotEntry[];
  createdBy: string;
  createdAt: number;
}

export type LoraVersionOrigin = 'trained' | 'lora_path';

export interface LoraVersion {
  name: string;
  origin: LoraVersionOrigin;
  parent: string | null;
  snapshotId: number | null;
  steps: number | null;
  seed: number | null;
  finalLoss: number | null;
  createdBy: string;
  createdAt: number;
}

/** A prompt and seed every candidate is drawn with, beside the served version (see /lora validation). */
export interface ValidationPrompt {
  id: number;
  prompt: string;
  seed: number;
}

export interface Trainings {
  /** Freezes `entries` for the training job `jobId`; its version's number is the snapshot's. */
  snapshot(input: Omit<TrainingSnapshot, 'id' | 'version' | 'createdAt'>): TrainingSnapshot;
  snapshotOfJob(jobId: string): TrainingSnapshot | null;
  snapshotById(id: number): TrainingSnapshot | null;
  /** Records a finished training's version (a candidate until promoted); recording it again changes nothing. */
  addCandidate(snapshot: TrainingSnapshot, finalLoss: number | null): LoraVersion;
  version(name: string): LoraVersion | null;
  /** Newest first. */
  versions(): LoraVersion[];
  /**
   * At bot start: the LORA_PATH version (null: none) is registered, and served unless an admin has promoted or rolled
   * back since, whose choice wins at every start. Refuses a name of the trained versions' form.
   */
  start(loraPathVersion: string | null): void;
  /** The version /wrong and /compare use now; null when none is. */
  served(): string | null;
  /** Whether the version has been served at any time (an admin who rolled it back has judged it already). */
  everServed(name: string): boolean;
  /** The newest trained version not served now: the one /judge puts beside the served one. */
  newestCandidate(): LoraVersion | null;
  /** `byUserId` null: the bot promoted it by itself, on the judges' votes. */
  promote(name: string, byUserId: string | null): { previous: string | null; served: string };
  /** Back to the version served before the current one. */
  rollback(byUserId: string): { previous: string; served: string };
  validationPrompts(): ValidationPrompt[];
  addValidationPrompt(prompt: string, seed: number, byUserId: string): ValidationPrompt;
  /** The removed prompt, or null when there is none with that id. */
  removeValidationPrompt(id: number): ValidationPrompt | null;
}

interface SnapshotRow {
  id: number;
  job_id: string;
  base_version: string | null;
  steps: number;
  seed: number;
  entries: string;
  created_by: string;
  created_at: number;
}

interface VersionRow {
  name: string;
  origin: LoraVersionOrigin;
  parent: string | null;
  snapshot_id: number | null;
  steps: number | null;
  seed: number | null;
  final_loss: number | null;
  created_by: string;
  created_at: number;
}

export class SqliteTrainings implements Trainings {
  private readonly insertSnapshot;
  private readonly selectSnapshotByJob;
  private readonly selectSnapshotById;
  private readonly insertVersion;
  private readonly selectVersion;
  private readonly selectVersions;
  private readonly insertServing;
  private readonly selectServing;
  private readonly countChoices;
  private readonly selectEverServed;
  private readonly startInTransaction;
  private readonly promoteInTransaction;
  private readonly rollbackInTransaction;
  private readonly selectPrompts;
  private readonly insertPrompt;
  private readonly deletePrompt;

  constructor(db: Database.Database, private readonly now: () => number) {
    this.insertSnapshot = db.prepare<Omit<SnapshotRow, 'id'>>(`
      INSERT INTO training_snapshots (job_id, base_version, steps, seed, entries, created_by, created_at)
      VALUES (@job_id, @base_version, @steps, @seed, @entries, @created_by, @created_at)`);
    this.selectSnapshotByJob = db.prepare<[string], SnapshotRow>('SELECT * FROM training_snapshots WHERE job_id = ?');
    this.selectSnapshotById = db.prepare<[number], SnapshotRow>('SELECT * FROM training_snapshots WHERE id = ?');
    this.insertVersion = db.prepare<VersionRow>(`
      INSERT OR IGNORE INTO lora_versions (name, origin, parent, snapshot_id, steps, seed, final_loss, created_by, created_at)
      VALUES (@name, @origin, @parent, @snapshot_id, @steps, @seed, @final_loss, @created_by, @created_at)`);
    this.selectVersion = db.prepare<[string], VersionRow>('SELECT * FROM lora_versions WHERE name = ?');
    this.selectVersions = db.prepare<[], VersionRow>('SELECT * FROM lora_versions ORDER BY created_at DESC, name DESC');
    this.insertServing = db.prepare<[string, string, string | null, number]>('INSERT INTO lora_serving (version, action, by_user, at) VALUES (?, ?, ?, ?)');
    this.selectServing = db.prepare<[], { version: string }>('SELECT version FROM lora_serving ORDER BY id DESC');
    this.selectEverServed = db.prepare<[string], { served: 1 }>('SELECT 1 AS served FROM lora_serving WHERE version = ? LIMIT 1');
    this.countChoices = db.prepare<[], { choices: number }>("SELECT COUNT(*) AS choices FROM lora_serving WHERE action IN ('promote', 'rollback')");
    this.startInTransaction = db.transaction((name: string) => {
      this.insertVersion.run({
        name, origin: 'lora_path', parent: null, snapshot_id: null, steps: null, seed: null, final_loss: null, created_by: 'LORA_PATH', created_at: this.now(),
      });
      if (this.countChoices.get()!.choices === 0 && this.served() !== name) this.insertServing.run(name, 'start', null, this.now());
    });
    this.promoteInTransaction = db.transaction((name: string, byUserId: string | null) => {
      if (this.version(name) === null) throw new LoraVersionsError(`there is no LoRA version ${name}; /lora list shows them`);
      const previous = this.served();
      if (previous === name) throw new LoraVersionsError(`${name} is served already`);
      this.insertServing.run(name, 'promote', byUserId, this.now());
      return { previous, served: name };
    });
    this.selectPrompts = db.prepare<[], ValidationPrompt>('SELECT id, prompt, seed FROM validation_prompts ORDER BY id');
    this.insertPrompt = db.prepare<[string, number, string, number]>('INSERT INTO validation_prompts (prompt, seed, added_by, added_at) VALUES (?, ?, ?, ?)');
    this.deletePrompt = db.prepare<[number], ValidationPrompt>('DELETE FROM validation_prompts WHERE id = ? RETURNING id, prompt, seed');
    this.rollbackInTransaction = db.transaction((byUserId: string) => {
      const [current, ...earlier] = this.selectServing.all().map((row) => row.version);
      const previous = earlier.find((version) => version !== current);
      if (current === undefined || previous === undefined) throw new LoraVersionsError('no other version was served before this one');
      this.insertServing.run(previous, 'rollback', byUserId, this.now());
      return { previous: current, served: previous };
    });
  }

  snapshot(input: Omit<TrainingSnapshot, 'id' | 'version' | 'createdAt'>): TrainingSnapshot {
    const entries = [...input.entries].sort((a, b) => (a.sha256 < b.sha256 ? -1 : a.sha256 > b.sha256 ? 1 : 0));
    const row: Omit<SnapshotRow, 'id'> = {
      job_id: input.jobId,
      base_version: input.baseVersion,
      steps: input.steps,
      seed: input.seed,
      entries: JSON.stringify(entries),
      created_by: input.createdBy,
      created_at: this.now(),
    };
    const id = Number(this.insertSnapshot.run(row).lastInsertRowid);
    return toSnapshot({ id, ...row });
  }

  snapshotOfJob(jobId: string): TrainingSnapshot | null {
    const row = this.selectSnapshotByJob.get(jobId);
    return row === undefined ? null : toSnapshot(row);
  }

  snapshotById(id: number): TrainingSnapshot | null {
    const row = this.selectSnapshotById.get(id);
    return row === undefined ? null : toSnapshot(row);
  }

  addCandidate(snapshot: TrainingSnapshot, finalLoss: number | null): LoraVersion {
    this.insertVersion.run({
      name: snapshot.version,
      origin: 'trained',
      parent: snapshot.baseVersion,
      snapshot_id: snapshot.id,
      steps: snapshot.steps,
      seed: snapshot.seed,
      final_loss: finalLoss,
      created_by: snapshot.createdBy,
      created_at: this.now(),
    });
    return this.version(snapshot.version)!;
  }

  version(name: string): LoraVersion | null {
    const row = this.selectVersion.get(name);
    return row === undefined ? null : toVersion(row);
  }

  versions(): LoraVersion[] {
    return this.selectVersions.all().map(toVersion);
  }

  start(loraPathVersion: string | null): void {
    if (loraPathVersion === null) return;
    if (TRAINED_VERSION_NAME.test(loraPathVersion)) {
      throw new LoraVersionsError(`LORA_PATH's version ${loraPathVersion} has the form of the versions /train names (${TRAINED_VERSION_PREFIX}N); rename the file`);
    }
    this.startInTransaction.immediate(loraPathVersion);
  }

  served(): string | null {
    return this.selectServing.get()?.version ?? null;
  }

  everServed(name: string): boolean {
    return this.selectEverServed.get(name) !== undefined;
  }

  newestCandidate(): LoraVersion | null {
    const served = this.served();
    return this.versions().find((version) => version.origin === 'trained' && version.name !== served) ?? null;
  }

  promote(name: string, byUserId: string | null): { previous: string | null; served: string } {
    return this.promoteInTransaction.immediate(name, byUserId);
  }

  rollback(byUserId: string): { previous: string; served: string } {
    return this.rollbackInTransaction.immediate(byUserId);
  }

  validationPrompts(): ValidationPrompt[] {
    return this.selectPrompts.all();
  }

  addValidationPrompt(prompt: string, seed: number, byUserId: string): ValidationPrompt {
    const id = Number(this.insertPrompt.run(prompt, seed, byUserId, this.now()).lastInsertRowid);
    return { id, prompt, seed };
  }

  removeValidationPrompt(id: number): ValidationPrompt | null {
    return this.deletePrompt.get(id) ?? null;
  }
}

function toSnapshot(row: SnapshotRow): TrainingSnapshot {
  return {
    id: row.id,
    jobId: row.job_id,
    version: `${TRAINED_VERSION_PREFIX}${row.id}`,
    baseVersion: row.base_version,
    steps: row.steps,
    seed: row.seed,
    entries: JSON.parse(row.entries) as SnapshotEntry[],
    createdBy: row.created_by,
    createdAt: row.created_at,
  };
}

function toVersion(row: VersionRow): LoraVersion {
  return {
    name: row.name,
    origin: row.origin,
    parent: row.parent,
    snapshotId: row.snapshot_id,
    steps: row.steps,
    seed: row.seed,
    finalLoss: row.final_loss,
    createdBy: row.created_by,
    createdAt: row.created_at,
  };
}
