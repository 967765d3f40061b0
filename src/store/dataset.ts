import type Database from 'better-sqlite3';
import { readdirSync, readFileSync, rmSync } from 'node:fs';
import path from 'node:path';
import { checkInteger } from '../common/validation.js';
import { atomicWriteTarget, sha256Hex, writeFileAtomic } from '../common/files.js';
import { checkJobId, checkPanelIndex } from '../common/job-ids.js';
import type { ImageArchive, KeptPanel, PanelProvenance } from './images.js';
import type { StoreLayout } from './layout.js';
import type { Vote } from './votes.js';

// The curated training set for the negative "wrong" LoRA: panels people voted down, copied out of the archive with
// their provenance so they outlive its retention. Each PNG has a JSON sidecar, so a trainer reads the set without
// SQLite.

export interface DatasetEntry {
  id: number;
  jobId: string;
  panelIndex: number;
  /** Absolute. */
  imagePath: string;
  sha256: string;
  provenance: PanelProvenance;
  voters: Vote[];
  curatedAt: number;
}

export interface TrainingSet {
  /** Copies the kept panel's PNG (verifying its sha256) and provenance into the set; if the panel is already in the
   *  set, only its voters are updated. Returns the entry. */
  curate(panel: KeptPanel, voters: Vote[]): DatasetEntry;
  get(id: number): DatasetEntry | null;
  find(jobId: string, panelIndex: number): DatasetEntry | null;
  /** Newest first; with `guildId`, only the entries of images made in that server. */
  list(options?: { limit?: number; offset?: number; guildId?: string }): DatasetEntry[];
  /**
   * Entries in the set, and panels that have votes but are not (yet) in it, with those panels' votes; with `guildId`,
   * only those of images made in that server.
   */
  counts(guildId?: string): { entries: number; panelsWithVotes: number; votes: number };
  /** Deletes the entry's files and row; null when there is none. */
  remove(id: number): DatasetEntry | null;
  /** Removes the entry and keeps its panel out of the set for good, whatever votes come later. */
  reject(id: number, byUserId: string): DatasetEntry | null;
  /** Whether an admin took this panel out of the set. */
  isRejected(jobId: string, panelIndex: number): boolean;
  /**
   * Makes the rows and the dataset folder agree again after a crash: finishes curations and removals it interrupted
   * (a curation whose kept image is gone is undone), rewrites stale sidecars and deletes files no entry owns. Only the
   * process that owns the data dir may run it, before it changes the set: it takes any change underway for a crash.
   */
  recover(): DatasetRecovery;
}

/**
 * The steps of a change to the set, each one durable. Every entry and both its files pass through them in this
 * order, so a crash after any one leaves a state recover() knows how to finish.
 */
export type DatasetStep =
  /** A new entry's row is committed, marked as being added: its id is taken for good, and no reader sees it yet. */
  | 'curate:row-pending'
  | 'curate:image-written'
  /** Both files are there; clearing the mark next shows the entry to readers. */
  | 'curate:sidecar-written'
  /** A curated entry's new voters are committed; its sidecar is rewritten next. */
  | 'curate:voters-updated'
  /** The row (and an admin's rejection) is committed, marked as being removed: readers no longer see it. */
  | 'remove:row-marked'
  /** The sidecar goes first: a trainer takes an entry by its JSON, so it never finds one whose PNG is gone. */
  | 'remove:sidecar-removed'
  /** Both files are gone; deleting the row is next. */
  | 'remove:image-removed';

/** What recover() found and did, by entry id. */
export interface DatasetRecovery {
  /** Curations a crash interrupted, now complete. */
  completed: number[];
  /** Curations a crash interrupted whose kept image is gone since: removed (their ids are not handed out again). */
  undone: number[];
  /** Removals a crash interrupted, now complete. */
  removed: number[];
  /** Entries whose sidecar was missing or behind their row, rewritten. */
  sidecarsRewritten: number[];
  /** Files in the dataset folder that no entry owns (left by a crash), deleted. */
  strayFiles: string[];
}

/** What a trainer reads next to each PNG. */
export interface DatasetSidecar {
  id: number;
  image: string;
  sha256: string;
  curatedAt: number;
  provenance: PanelProvenance;
  voters: Vote[];
}

interface EntryRow {
  id: number;
  job_id: string;
  panel_index: number;
  sha256: string;
  provenance: string;
  voters: string;
  curated_at: number;
  /** Null once the entry is in the set. */
  pending: 'adding' | 'removing' | null;
}

/** Readers (lists, /train's snapshot, the export) see only entries whose files are complete and staying. */
const IN_THE_SET = 'pending IS NULL';

export class SqliteTrainingSet implements TrainingSet {
  private readonly insertPendingRow;
  private readonly clearPending;
  private readonly updateVoters;
  private readonly deleteRow;
  private readonly selectById;
  private readonly selectByPanel;
  private readonly selectAnyByPanel;
  private readonly selectPage;
  private readonly selectPending;
  private readonly selectAll;
  private readonly selectCounts;
  private readonly insertRejection;
  private readonly markRemovingInTransaction;
  private readonly selectRejection;

  constructor(
    db: Database.Database,
    private readonly layout: StoreLayout,
    private readonly images: ImageArchive,
    private readonly now: () => number,
    private readonly afterStep: (step: DatasetStep) => void = () => {},
  ) {
    this.insertPendingRow = db.prepare<Omit<EntryRow, 'id' | 'pending'>>(`
      INSERT INTO dataset_entries (job_id, panel_index, sha256, provenance, voters, curated_at, pending)
      VALUES (@job_id, @panel_index, @sha256, @provenance, @voters, @curated_at, 'adding')`);
    this.clearPending = db.prepare<[number]>("UPDATE dataset_entries SET pending = NULL WHERE id = ? AND pending = 'adding'");
    this.updateVoters = db.prepare<[string, number]>(`UPDATE dataset_entries SET voters = ? WHERE id = ? AND ${IN_THE_SET}`);
    this.deleteRow = db.prepare<[number]>('DELETE FROM dataset_entries WHERE id = ?');
    this.selectById = db.prepare<[number], EntryRow>(`SELECT * FROM dataset_entries WHERE id = ? AND ${IN_THE_SET}`);
    this.selectByPanel = db.prepare<[string, number], EntryRow>(
      `SELECT * FROM dataset_entries WHERE job_id = ? AND panel_index = ? AND ${IN_THE_SET}`);
    this.selectAnyByPanel = db.prepare<[string, number], EntryRow>('SELECT * FROM dataset_entries WHERE job_id = ? AND panel_index = ?');
    // A server's entries are those whose provenance names it; no guild given means all of them.
    this.selectPage = db.prepare<{ limit: number; offset: number; guild: string | null }, EntryRow>(`
      SELECT * FROM dataset_entries WHERE ${IN_THE_SET} AND (@guild IS NULL OR json_extract(provenance, '$.guildId') = @guild)
      ORDER BY curated_at DESC, id DESC LIMIT @limit OFFSET @offset`);
    this.selectPending = db.prepare<[], EntryRow>('SELECT * FROM dataset_entries WHERE pending IS NOT NULL ORDER BY id');
    this.selectAll = db.prepare<[], EntryRow>('SELECT * FROM dataset_entries ORDER BY id');
    this.selectCounts = db.prepare<{ guild: string | null }, { entries: number; panelsWithVotes: number; votes: number }>(`
      SELECT (SELECT COUNT(*) FROM dataset_entries WHERE ${IN_THE_SET} AND (@guild IS NULL OR json_extract(provenance, '$.guildId') = @guild)) AS entries,
             COUNT(*) AS panelsWithVotes, COALESCE(SUM(votes), 0) AS votes
      FROM (SELECT COUNT(*) AS votes FROM panel_votes AS v JOIN kept_panels AS k ON k.job_id = v.job_id AND k.panel_index = v.panel_index
            WHERE NOT EXISTS (SELECT 1 FROM dataset_entries AS d WHERE d.job_id = v.job_id AND d.panel_index = v.panel_index AND ${IN_THE_SET})
              AND (@guild IS NULL OR json_extract(k.provenance, '$.guildId') = @guild)
            GROUP BY v.job_id, v.panel_index)`);
    this.insertRejection = db.prepare<[string, number, string, number]>(
      'INSERT OR REPLACE INTO rejected_panels (job_id, panel_index, rejected_by, rejected_at) VALUES (?, ?, ?, ?)');
    const markRemoving = db.prepare<[number]>(`UPDATE dataset_entries SET pending = 'removing' WHERE id = ? AND ${IN_THE_SET}`);
    // The mark and the rejection together: a crash between them would let the next vote curate the image again.
    this.markRemovingInTransaction = db.transaction((entry: DatasetEntry, rejectedBy: string | null): boolean => {
      if (markRemoving.run(entry.id).changes === 0) return false;
      if (rejectedBy !== null) this.insertRejection.run(entry.jobId, entry.panelIndex, rejectedBy, this.now());
      return true;
    });
    this.selectRejection = db.prepare<[string, number], { found: number }>(
      'SELECT 1 AS found FROM rejected_panels WHERE job_id = ? AND panel_index = ?');
  }

  curate(panel: KeptPanel, voters: Vote[]): DatasetEntry {
    checkJobId('panel.jobId', panel.jobId);
    checkPanelIndex('panel.panelIndex', panel.panelIndex);
    const existing = this.selectAnyByPanel.get(panel.jobId, panel.panelIndex);
    if (existing?.pending === null) return this.updateEntryVoters(this.toEntry(existing), voters);
    if (existing !== undefined) {
      throw new Error(`curate: job ${panel.jobId} panelIndex ${panel.panelIndex} is dataset entry #${existing.id}, still marked ${existing.pending} by a change a crash interrupted; the bot finishes it when it starts`);
    }
    const png = this.images.read(panel);
    const sha256 = sha256Hex(png);
    if (sha256 !== panel.sha256) {
      throw new Error(`curate: ${panel.path} has sha256 ${sha256}, but job ${panel.jobId} panelIndex ${panel.panelIndex} was kept with ${panel.sha256}`);
    }
    // Committed before any file exists, so its id is never handed out again and a crash leaves a row that says which
    // files are in doubt; the UNIQUE (job, panel) refuses a second curation of the panel racing this one.
    this.insertPendingRow.run({
      job_id: panel.jobId,
      panel_index: panel.panelIndex,
      sha256,
      provenance: JSON.stringify(panel.provenance),
      voters: JSON.stringify(voters),
      curated_at: this.now(),
    });
    this.afterStep('curate:row-pending');
    const entry = this.toEntry(this.selectAnyByPanel.get(panel.jobId, panel.panelIndex)!);
    try {
      this.completeCuration(entry, png);
    } catch (error) {
      this.removeFilesAndRow(entry);
      throw error;
    }
    return entry;
  }

  get(id: number): DatasetEntry | null {
    const row = this.selectById.get(id);
    return row === undefined ? null : this.toEntry(row);
  }

  find(jobId: string, panelIndex: number): DatasetEntry | null {
    const row = this.selectByPanel.get(jobId, panelIndex);
    return row === undefined ? null : this.toEntry(row);
  }

  list(options: { limit?: number; offset?: number; guildId?: string } = {}): DatasetEntry[] {
    const limit = checkInteger('limit', options.limit ?? Number.MAX_SAFE_INTEGER, 0, Number.MAX_SAFE_INTEGER);
    const offset = checkInteger('offset', options.offset ?? 0, 0, Number.MAX_SAFE_INTEGER);
    return this.selectPage.all({ limit, offset, guild: options.guildId ?? null }).map((row) => this.toEntry(row));
  }

  counts(guildId?: string): { entries: number; panelsWithVotes: number; votes: number } {
    return this.selectCounts.get({ guild: guildId ?? null })!;
  }

  remove(id: number): DatasetEntry | null {
    return this.removeEntry(id, null);
  }

  reject(id: number, byUserId: string): DatasetEntry | null {
    return this.removeEntry(id, byUserId);
  }

  isRejected(jobId: string, panelIndex: number): boolean {
    return this.selectRejection.get(jobId, panelIndex) !== undefined;
  }

  recover(): DatasetRecovery {
    const recovery: DatasetRecovery = { completed: [], undone: [], removed: [], sidecarsRewritten: [], strayFiles: [] };
    for (const row of this.selectPending.all()) {
      const entry = this.toEntry(row);
      const png = row.pending === 'adding' ? this.imageToComplete(entry) : null;
      if (png !== null) {
        this.completeCuration(entry, png);
        recovery.completed.push(entry.id);
        continue;
      }
      this.removeFilesAndRow(entry);
      if (row.pending === 'adding') recovery.undone.push(entry.id);
      else recovery.removed.push(entry.id);
    }
    const rows = this.selectAll.all();
    for (const row of rows) {
      const entry = this.toEntry(row);
      if (readIfPresent(this.layout.datasetSidecarFile(entry.jobId, entry.panelIndex))?.toString('utf8') === sidecarText(entry)) continue;
      this.writeSidecar(entry);
      recovery.sidecarsRewritten.push(entry.id);
    }
    const owned = new Set(rows.flatMap((row) => [
      this.layout.datasetImageFile(row.job_id, row.panel_index),
      this.layout.datasetSidecarFile(row.job_id, row.panel_index),
    ].map((file) => path.basename(file))));
    for (const name of readdirSync(this.layout.datasetDir)) {
      // A temporary is a write a crash cut short; its target's entry, if any, was completed above from the source.
      const target = atomicWriteTarget(name);
      const ours = target === null ? this.layout.isDatasetFileName(name) && !owned.has(name) : this.layout.isDatasetFileName(target);
      if (!ours) continue;
      rmSync(path.join(this.layout.datasetDir, name), { force: true });
      recovery.strayFiles.push(name);
    }
    return recovery;
  }

  private updateEntryVoters(entry: DatasetEntry, voters: Vote[]): DatasetEntry {
    this.updateVoters.run(JSON.stringify(voters), entry.id);
    this.afterStep('curate:voters-updated');
    const updated = { ...entry, voters };
    this.writeSidecar(updated);
    return updated;
  }

  /** The PNG before its sidecar (a trainer that sees the JSON finds the whole image), then the entry joins the set. */
  private completeCuration(entry: DatasetEntry, png: Buffer): void {
    writeFileAtomic(entry.imagePath, png);
    this.afterStep('curate:image-written');
    this.writeSidecar(entry);
    this.afterStep('curate:sidecar-written');
    this.clearPending.run(entry.id);
  }

  /** The image an interrupted curation was copying: already in the set's folder, or still in the archive; else null. */
  private imageToComplete(entry: DatasetEntry): Buffer | null {
    const copied = readIfPresent(entry.imagePath);
    if (copied !== null && sha256Hex(copied) === entry.sha256) return copied;
    const panel = this.images.get(entry.jobId, entry.panelIndex);
    const kept = panel === null ? null : readIfPresent(panel.path);
    return kept !== null && sha256Hex(kept) === entry.sha256 ? kept : null;
  }

  private removeEntry(id: number, rejectedBy: string | null): DatasetEntry | null {
    const entry = this.get(id);
    // Immediate: the mark must not be raced by another process changing the same entry.
    if (entry === null || !this.markRemovingInTransaction.immediate(entry, rejectedBy)) return null;
    this.afterStep('remove:row-marked');
    this.removeFilesAndRow(entry);
    return entry;
  }

  private removeFilesAndRow(entry: DatasetEntry): void {
    rmSync(this.layout.datasetSidecarFile(entry.jobId, entry.panelIndex), { force: true });
    this.afterStep('remove:sidecar-removed');
    rmSync(entry.imagePath, { force: true });
    this.afterStep('remove:image-removed');
    this.deleteRow.run(entry.id);
  }

  private writeSidecar(entry: DatasetEntry): void {
    writeFileAtomic(this.layout.datasetSidecarFile(entry.jobId, entry.panelIndex), sidecarText(entry));
  }

  private toEntry(row: EntryRow): DatasetEntry {
    return {
      id: row.id,
      jobId: row.job_id,
      panelIndex: row.panel_index,
      imagePath: this.layout.datasetImageFile(row.job_id, row.panel_index),
      sha256: row.sha256,
      provenance: JSON.parse(row.provenance) as PanelProvenance,
      voters: JSON.parse(row.voters) as Vote[],
      curatedAt: row.curated_at,
    };
  }
}

function sidecarText(entry: DatasetEntry): string {
  const sidecar: DatasetSidecar = {
    id: entry.id,
    image: path.basename(entry.imagePath),
    sha256: entry.sha256,
    curatedAt: entry.curatedAt,
    provenance: entry.provenance,
    voters: entry.voters,
  };
  return `${JSON.stringify(sidecar, null, 2)}\n`;
}

function readIfPresent(file: string): Buffer | null {
  try {
    return readFileSync(file);
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code === 'ENOENT') return null;
    throw error;
  }
}
