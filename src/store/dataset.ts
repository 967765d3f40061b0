import type Database from 'better-sqlite3';
import { rmSync } from 'node:fs';
import path from 'node:path';
import { checkInteger } from '../common/validation.js';
import { sha256Hex, writeFileAtomic } from '../common/files.js';
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
}

export class SqliteTrainingSet implements TrainingSet {
  private readonly insertRow;
  private readonly updateVoters;
  private readonly deleteRow;
  private readonly selectById;
  private readonly selectByPanel;
  private readonly selectPage;
  private readonly selectCounts;
  private readonly curateInTransaction;
  private readonly insertRejection;
  private readonly deleteInTransaction;
  private readonly selectRejection;

  constructor(
    db: Database.Database,
    private readonly layout: StoreLayout,
    private readonly images: ImageArchive,
    private readonly now: () => number,
  ) {
    this.insertRow = db.prepare<Omit<EntryRow, 'id'>>(`
      INSERT INTO dataset_entries (job_id, panel_index, sha256, provenance, voters, curated_at)
      VALUES (@job_id, @panel_index, @sha256, @provenance, @voters, @curated_at)`);
    this.updateVoters = db.prepare<[string, number]>('UPDATE dataset_entries SET voters = ? WHERE id = ?');
    this.deleteRow = db.prepare<[number]>('DELETE FROM dataset_entries WHERE id = ?');
    this.selectById = db.prepare<[number], EntryRow>('SELECT * FROM dataset_entries WHERE id = ?');
    this.selectByPanel = db.prepare<[string, number], EntryRow>(
      'SELECT * FROM dataset_entries WHERE job_id = ? AND panel_index = ?');
    // A server's entries are those whose provenance names it; no guild given means all of them.
    this.selectPage = db.prepare<{ limit: number; offset: number; guild: string | null }, EntryRow>(`
      SELECT * FROM dataset_entries WHERE @guild IS NULL OR json_extract(provenance, '$.guildId') = @guild
      ORDER BY curated_at DESC, id DESC LIMIT @limit OFFSET @offset`);
    this.selectCounts = db.prepare<{ guild: string | null }, { entries: number; panelsWithVotes: number; votes: number }>(`
      SELECT (SELECT COUNT(*) FROM dataset_entries WHERE @guild IS NULL OR json_extract(provenance, '$.guildId') = @guild) AS entries,
             COUNT(*) AS panelsWithVotes, COALESCE(SUM(votes), 0) AS votes
      FROM (SELECT COUNT(*) AS votes FROM panel_votes AS v JOIN kept_panels AS k ON k.job_id = v.job_id AND k.panel_index = v.panel_index
            WHERE NOT EXISTS (SELECT 1 FROM dataset_entries AS d WHERE d.job_id = v.job_id AND d.panel_index = v.panel_index)
              AND (@guild IS NULL OR json_extract(k.provenance, '$.guildId') = @guild)
            GROUP BY v.job_id, v.panel_index)`);
    this.curateInTransaction = db.transaction((panel: KeptPanel, voters: Vote[]) => this.curateRow(panel, voters));
    this.deleteInTransaction = db.transaction((entry: DatasetEntry, rejectedBy: string | null) => {
      this.deleteRow.run(entry.id);
      if (rejectedBy !== null) this.insertRejection.run(entry.jobId, entry.panelIndex, rejectedBy, this.now());
    });
    this.insertRejection = db.prepare<[string, number, string, number]>(
      'INSERT OR REPLACE INTO rejected_panels (job_id, panel_index, rejected_by, rejected_at) VALUES (?, ?, ?, ?)');
    this.selectRejection = db.prepare<[string, number], { found: number }>(
      'SELECT 1 AS found FROM rejected_panels WHERE job_id = ? AND panel_index = ?');
  }

  curate(panel: KeptPanel, voters: Vote[]): DatasetEntry {
    checkJobId('panel.jobId', panel.jobId);
    checkPanelIndex('panel.panelIndex', panel.panelIndex);
    // Immediate: whether the entry exists and what is written next must not be raced by another process.
    return this.curateInTransaction.immediate(panel, voters);
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

  private removeEntry(id: number, rejectedBy: string | null): DatasetEntry | null {
    const entry = this.get(id);
    if (entry === null) return null;
    // Sidecar first: a trainer takes an entry by its JSON, so it never sees one whose PNG is already gone.
    rmSync(this.layout.datasetSidecarFile(entry.jobId, entry.panelIndex), { force: true });
    // The row and the rejection together: a crash between them would let the next vote curate the image again.
    this.deleteInTransaction.immediate(entry, rejectedBy);
    rmSync(entry.imagePath, { force: true });
    return entry;
  }

  isRejected(jobId: string, panelIndex: number): boolean {
    return this.selectRejection.get(jobId, panelIndex) !== undefined;
  }

  private curateRow(panel: KeptPanel, voters: Vote[]): DatasetEntry {
    const existing = this.find(panel.jobId, panel.panelIndex);
    if (existing !== null) {
      this.updateVoters.run(JSON.stringify(voters), existing.id);
      const updated = { ...existing, voters };
      this.writeSidecar(updated);
      return updated;
    }
    const png = this.images.read(panel);
    const sha256 = sha256Hex(png);
    if (sha256 !== panel.sha256) {
      throw new Error(`curate: ${panel.path} has sha256 ${sha256}, but job ${panel.jobId} panelIndex ${panel.panelIndex} was kept with ${panel.sha256}`);
    }
    const { lastInsertRowid } = this.insertRow.run({
      job_id: panel.jobId,
      panel_index: panel.panelIndex,
      sha256,
      provenance: JSON.stringify(panel.provenance),
      voters: JSON.stringify(voters),
      curated_at: this.now(),
    });
    const entry = this.get(Number(lastInsertRowid))!;
    try {
      // The PNG before its sidecar: a trainer that sees the JSON finds the whole image.
      writeFileAtomic(entry.imagePath, png);
      this.writeSidecar(entry);
    } catch (error) {
      rmSync(this.layout.datasetSidecarFile(entry.jobId, entry.panelIndex), { force: true });
      rmSync(entry.imagePath, { force: true });
      throw error;
    }
    return entry;
  }

  private writeSidecar(entry: DatasetEntry): void {
    const sidecar: DatasetSidecar = {
      id: entry.id,
      image: path.basename(entry.imagePath),
      sha256: entry.sha256,
      curatedAt: entry.curatedAt,
      provenance: entry.provenance,
      voters: entry.voters,
    };
    writeFileAtomic(this.layout.datasetSidecarFile(entry.jobId, entry.panelIndex), `${JSON.stringify(sidecar, null, 2)}\n`);
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
