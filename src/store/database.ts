import Database from 'better-sqlite3';
import { mkdirSync } from 'node:fs';
import { SqliteTrainingSet, type DatasetStep, type TrainingSet } from './dataset.js';
import { SqliteGuildDefaultsBook, type GuildDefaultsBook } from './guild-defaults.js';
import { SqliteImageArchive, type ImageArchive } from './images.js';
import { SqliteJobRecords, type JobRecords } from './jobs.js';
import { SqliteJudging, type Judging } from './judging.js';
import { SqliteTrainings, type Trainings } from './trainings.js';
import { StoreLayout } from './layout.js';
import { SqliteVoteBook, type VoteBook } from './votes.js';

// The bot's SQLite database and its schema. Each migration is one SQL step, applied in order and never edited once
// released; PRAGMA user_version counts how many a database has had.

/**
 * SQLite cannot change a CHECK in place: a new job kind rebuilds the jobs table with its rows (see migrate). The SQL
 * of each released step stays as it was; only the list of kinds differs between them.
 */
function rebuildJobsTable(kinds: readonly string[]): string {
  return `CREATE TABLE jobs_next (
     job_id TEXT PRIMARY KEY,
     kind TEXT NOT NULL CHECK (kind IN (${kinds.map((kind) => `'${kind}'`).join(', ')})),
     user_id TEXT NOT NULL,
     user_name TEXT NOT NULL,
     guild_id TEXT,
     channel_id TEXT,
     application_id TEXT NOT NULL,
     interaction_token TEXT,
     token_expires_at INTEGER,
     request TEXT NOT NULL,
     status TEXT NOT NULL CHECK (status IN ('queued', 'running', 'delivered', 'failed', 'cancelled')),
     message_id TEXT,
     created_at INTEGER NOT NULL,
     finished_at INTEGER,
     error TEXT
   ) STRICT;
   INSERT INTO jobs_next SELECT * FROM jobs;
   DROP TABLE jobs;
   ALTER TABLE jobs_next RENAME TO jobs;
   CREATE INDEX jobs_unfinished ON jobs (created_at) WHERE status IN ('queued', 'running');
   CREATE INDEX jobs_unfinished_by_user ON jobs (user_id, created_at) WHERE status IN ('queued', 'running');`;
}

export const MIGRATIONS: readonly string[] = [
  `CREATE TABLE jobs (
     job_id TEXT PRIMARY KEY,
     kind TEXT NOT NULL CHECK (kind IN ('imagine', 'wrong', 'compare', 'train')),
     user_id TEXT NOT NULL,
     user_name TEXT NOT NULL,
     guild_id TEXT,
     channel_id TEXT,
     application_id TEXT NOT NULL,
     interaction_token TEXT,
     token_expires_at INTEGER,
     request TEXT NOT NULL,
     status TEXT NOT NULL CHECK (status IN ('queued', 'running', 'delivered', 'failed', 'cancelled')),
     message_id TEXT,
     created_at INTEGER NOT NULL,
     finished_at INTEGER,
     error TEXT
   ) STRICT;
   CREATE INDEX jobs_unfinished ON jobs (created_at) WHERE status IN ('queued', 'running');
   CREATE INDEX jobs_unfinished_by_user ON jobs (user_id, created_at) WHERE status IN ('queued', 'running');`,

  `CREATE TABLE kept_panels (
     job_id TEXT NOT NULL REFERENCES jobs (job_id),
     panel_index INTEGER NOT NULL,
     message_id TEXT,
     sha256 TEXT NOT NULL,
     bytes INTEGER NOT NULL,
     provenance TEXT NOT NULL,
     kept_until INTEGER NOT NULL,
     PRIMARY KEY (job_id, panel_index)
   ) STRICT;
   CREATE INDEX kept_panels_by_message ON kept_panels (message_id);
   CREATE INDEX kept_panels_by_expiry ON kept_panels (kept_until);
   CREATE TABLE panel_votes (
     job_id TEXT NOT NULL,
     panel_index INTEGER NOT NULL,
     user_id TEXT NOT NULL,
     is_admin INTEGER NOT NULL CHECK (is_admin IN (0, 1)),
     voted_at INTEGER NOT NULL,
     PRIMARY KEY (job_id, panel_index, user_id),
     FOREIGN KEY (job_id, panel_index) REFERENCES kept_panels (job_id, panel_index) ON DELETE CASCADE
   ) STRICT;`,

  // AUTOINCREMENT: a removed entry's id is never handed out again, so ids a trainer logged stay unambiguous.
  `CREATE TABLE dataset_entries (
     id INTEGER PRIMARY KEY AUTOINCREMENT,
     job_id TEXT NOT NULL,
     panel_index INTEGER NOT NULL,
     sha256 TEXT NOT NULL,
     provenance TEXT NOT NULL,
     voters TEXT NOT NULL,
     curated_at INTEGER NOT NULL,
     UNIQUE (job_id, panel_index)
   ) STRICT;
   CREATE INDEX dataset_entries_newest ON dataset_entries (curated_at, id);`,

  `CREATE TABLE guild_defaults (
     guild_id TEXT PRIMARY KEY,
     size TEXT,
     steps INTEGER,
     guidance_scale REAL,
     lora_strength REAL,
     updated_by TEXT NOT NULL,
     updated_at INTEGER NOT NULL
   ) STRICT;`,

  // An admin's removal is a decision about the image, not only about the entry: later votes must not bring it back.
  `CREATE TABLE rejected_panels (
     job_id TEXT NOT NULL,
     panel_index INTEGER NOT NULL,
     rejected_by TEXT NOT NULL,
     rejected_at INTEGER NOT NULL,
     PRIMARY KEY (job_id, panel_index)
   ) STRICT;`,

  // AUTOINCREMENT: a snapshot's number names the version it trains (wrong-vN), so it is never handed out twice.
  `CREATE TABLE training_snapshots (
     id INTEGER PRIMARY KEY AUTOINCREMENT,
     job_id TEXT NOT NULL UNIQUE REFERENCES jobs (job_id),
     base_version TEXT,
     steps INTEGER NOT NULL,
     seed INTEGER NOT NULL,
     entries TEXT NOT NULL,
     created_by TEXT NOT NULL,
     created_at INTEGER NOT NULL
   ) STRICT;
   CREATE TABLE lora_versions (
     name TEXT PRIMARY KEY,
     origin TEXT NOT NULL CHECK (origin IN ('trained', 'lora_path')),
     parent TEXT,
     snapshot_id INTEGER REFERENCES training_snapshots (id),
     steps INTEGER,
     seed INTEGER,
     final_loss REAL,
     created_by TEXT NOT NULL,
     created_at INTEGER NOT NULL
   ) STRICT;
   -- The served version is the newest row's: the history is what /lora rollback walks back through.
   CREATE TABLE lora_serving (
     id INTEGER PRIMARY KEY AUTOINCREMENT,
     version TEXT NOT NULL REFERENCES lora_versions (name),
     action TEXT NOT NULL CHECK (action IN ('start', 'promote', 'rollback')),
     by_user TEXT,
     at INTEGER NOT NULL
   ) STRICT;`,

  // A new job kind, validate, and the validation prompts every candidate is drawn with, starting with a few in the
  // spirit of Woolf's comparisons.
  `${rebuildJobsTable(['imagine', 'wrong', 'compare', 'validate', 'train'])}
   CREATE TABLE validation_prompts (
     id INTEGER PRIMARY KEY AUTOINCREMENT,
     prompt TEXT NOT NULL,
     seed INTEGER NOT NULL,
     added_by TEXT NOT NULL,
     added_at INTEGER NOT NULL
   ) STRICT;
   INSERT INTO validation_prompts (prompt, seed, added_by, added_at) VALUES
     ('a realistic photo of Santa Claus, highly detailed', 1, 'wrongbot', 0),
     ('a portrait of a cyberpunk cat, 4k', 2, 'wrongbot', 0),
     ('a lighthouse on a cliff at sunset, oil painting', 3, 'wrongbot', 0);`,

  // Blind judging: a new job kind, judge, its pairs and the members' votes. Pairs outlive their job rows, which are
  // pruned: the tallies are kept for good.
  `${rebuildJobsTable(['imagine', 'wrong', 'compare', 'validate', 'judge', 'train'])}
   CREATE TABLE judging_pairs (
     id INTEGER PRIMARY KEY AUTOINCREMENT,
     job_id TEXT NOT NULL UNIQUE,
     candidate TEXT NOT NULL REFERENCES lora_versions (name),
     opponent TEXT REFERENCES lora_versions (name),
     candidate_side TEXT NOT NULL CHECK (candidate_side IN ('left', 'right')),
     shuffle_seed INTEGER NOT NULL,
     prompt TEXT NOT NULL,
     seed INTEGER NOT NULL,
     guild_id TEXT,
     created_by TEXT NOT NULL,
     created_at INTEGER NOT NULL
   ) STRICT;
   CREATE TABLE judging_votes (
     pair_id INTEGER NOT NULL REFERENCES judging_pairs (id),
     user_id TEXT NOT NULL,
     side TEXT NOT NULL CHECK (side IN ('left', 'right')),
     voted_at INTEGER NOT NULL,
     PRIMARY KEY (pair_id, user_id)
   ) STRICT;`,

  // An entry's row is committed before its files change and marked until they have, so a crash in between is
  // finished or undone at the next start (TrainingSet.recover) instead of leaving files no row owns.
  `ALTER TABLE dataset_entries ADD COLUMN pending TEXT CHECK (pending IN ('adding', 'removing'));`,

  // A server may run its images through the refiner (Woolf's ensemble of experts), from this share of the schedule.
  `ALTER TABLE guild_defaults ADD COLUMN refiner_handoff REAL;`,
];

const BUSY_TIMEOUT_MS = 5_000;

/**
 * Brings the database up to the given steps, one transaction per step. A database that has had more steps than
 * this code knows is refused before anything is written to it.
 */
export function migrate(db: Database.Database, steps: readonly string[] = MIGRATIONS): void {
  // A step that rebuilds a table drops it while other tables refer to it: foreign keys are off while migrating (the
  // pragma has no effect inside a transaction) and checked once every step is in.
  const enforced = db.pragma('foreign_keys', { simple: true }) === 1;
  db.pragma('foreign_keys = OFF');
  try {
    applySteps(db, steps);
  } finally {
    if (enforced) db.pragma('foreign_keys = ON');
  }
  const violations = db.pragma('foreign_key_check') as unknown[];
  if (violations.length > 0) throw new Error(`${db.name}: the migration left ${violations.length} broken reference(s): ${JSON.stringify(violations.slice(0, 3))}`);
}

function applySteps(db: Database.Database, steps: readonly string[]): void {
  // Immediate, and the version read inside: two processes opening one database at once apply each step once.
  const applyNextStep = db.transaction((): boolean => {
    const version = db.pragma('user_version', { simple: true }) as number;
    if (version > steps.length) {
      throw new Error(`${db.name} was written by a newer wrongbot (schema ${version}, this one knows ${steps.length}); `
        + 'upgrade wrongbot to open it');
    }
    if (version === steps.length) return false;
    db.exec(steps[version]!);
    db.pragma(`user_version = ${version + 1}`);
    return true;
  });
  while (applyNextStep.immediate());
}

export interface BotStoreOptions {
  /** Epoch milliseconds; every timestamp the store writes, and sweep's default, come from it. */
  now?: () => number;
  /** For crash tests only: called after each durable step of a change to the training set, where a test kills the process. */
  afterDatasetStep?: (step: DatasetStep) => void;
}

export class BotStore {
  private constructor(
    private readonly db: Database.Database,
    readonly jobs: JobRecords,
    readonly images: ImageArchive,
    readonly votes: VoteBook,
    readonly dataset: TrainingSet,
    readonly guilds: GuildDefaultsBook,
    readonly trainings: Trainings,
    readonly judging: Judging,
  ) {}

  /** Creates the data dir's folders and brings its database up to date. */
  static open(dataDir: string, options: BotStoreOptions = {}): BotStore {
    const layout = new StoreLayout(dataDir);
    const now = options.now ?? Date.now;
    mkdirSync(layout.dataDir, { recursive: true });
    const db = new Database(layout.databaseFile, { timeout: BUSY_TIMEOUT_MS });
    try {
      db.pragma('foreign_keys = ON');
      // FULL, not WAL's usual NORMAL: a finish() that told one caller "deliver" must still be there after a power cut.
      db.pragma('synchronous = FULL');
      migrate(db);
      // After migrate, which refuses a newer database without writing to it; switching to WAL writes the header.
      db.pragma('journal_mode = WAL');
      mkdirSync(layout.imagesDir, { recursive: true });
      mkdirSync(layout.datasetDir, { recursive: true });
      const images = new SqliteImageArchive(db, layout, now);
      return new BotStore(
        db,
        new SqliteJobRecords(db, now),
        images,
        new SqliteVoteBook(db, now),
        new SqliteTrainingSet(db, layout, images, now, options.afterDatasetStep),
        new SqliteGuildDefaultsBook(db, now),
        new SqliteTrainings(db, now),
        new SqliteJudging(db, now),
      );
    } catch (error) {
      db.close();
      throw error;
    }
  }

  /** Closing again does nothing. */
  close(): void {
    this.db.close();
  }
}
