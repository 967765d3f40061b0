import type Database from 'better-sqlite3';

// What each /train froze and what it made: the snapshot of the training set (entries and image hashes as they were,
// so later votes and removals do not change a running training) and, once trained, the candidate version with its
// provenance. Trained versions are named by their snapshot's number, which SQLite never hands out twice.

export const TRAINED_VERSION_PREFIX = 'wrong-v';

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

export type LoraVersionStatus = 'candidate';

export interface LoraVersion {
  name: string;
  status: LoraVersionStatus;
  parent: string | null;
  snapshotId: number | null;
  steps: number | null;
  seed: number | null;
  finalLoss: number | null;
  createdBy: string;
  createdAt: number;
}

export interface Trainings {
  /** Freezes `entries` for the training job `jobId`; its version's number is the snapshot's. */
  snapshot(input: Omit<TrainingSnapshot, 'id' | 'version' | 'createdAt'>): TrainingSnapshot;
  snapshotOfJob(jobId: string): TrainingSnapshot | null;
  /** Records a finished training's version as a candidate; recording it again changes nothing. */
  addCandidate(snapshot: TrainingSnapshot, finalLoss: number | null): LoraVersion;
  version(name: string): LoraVersion | null;
  /** Newest first. */
  versions(): LoraVersion[];
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
  status: LoraVersionStatus;
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
  private readonly insertVersion;
  private readonly selectVersion;
  private readonly selectVersions;

  constructor(db: Database.Database, private readonly now: () => number) {
    this.insertSnapshot = db.prepare<Omit<SnapshotRow, 'id'>>(`
      INSERT INTO training_snapshots (job_id, base_version, steps, seed, entries, created_by, created_at)
      VALUES (@job_id, @base_version, @steps, @seed, @entries, @created_by, @created_at)`);
    this.selectSnapshotByJob = db.prepare<[string], SnapshotRow>('SELECT * FROM training_snapshots WHERE job_id = ?');
    this.insertVersion = db.prepare<VersionRow>(`
      INSERT OR IGNORE INTO lora_versions (name, status, parent, snapshot_id, steps, seed, final_loss, created_by, created_at)
      VALUES (@name, @status, @parent, @snapshot_id, @steps, @seed, @final_loss, @created_by, @created_at)`);
    this.selectVersion = db.prepare<[string], VersionRow>('SELECT * FROM lora_versions WHERE name = ?');
    this.selectVersions = db.prepare<[], VersionRow>('SELECT * FROM lora_versions ORDER BY created_at DESC, name DESC');
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

  addCandidate(snapshot: TrainingSnapshot, finalLoss: number | null): LoraVersion {
    this.insertVersion.run({
      name: snapshot.version,
      status: 'candidate',
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
    status: row.status,
    parent: row.parent,
    snapshotId: row.snapshot_id,
    steps: row.steps,
    seed: row.seed,
    finalLoss: row.final_loss,
    createdBy: row.created_by,
    createdAt: row.created_at,
  };
}
