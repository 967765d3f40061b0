import type Database from 'better-sqlite3';
import { mkdirSync, readFileSync, rmSync } from 'node:fs';
import { checkChoice, checkInteger, fail } from '../common/validation.js';
import { sha256Hex, writeFileAtomic } from '../common/files.js';
import { removeFolderIfEmpty } from './files.js';
import { checkJobId, checkPanelIndex } from '../common/job-ids.js';
import { GENERATION_JOB_NAMES, type GenerationJobName, type ImageSettings } from '../queue/contracts.js';
import type { StoreLayout } from './layout.js';

// The lossless PNG panels of delivered results, kept on disk for a while so votes can send them to the training
// set; Discord's copies are recompressed and lose the provenance.


/** Everything needed to say how a panel was made, and to make it again: its job's settings and what it added. */
export interface PanelProvenance extends Omit<ImageSettings, 'weighting'> {
  jobId: string;
  kind: GenerationJobName;
  panelIndex: number;
  caption: string;
  model: string;
  loraVersion: string | null;
  loraStrength: number;
  requesterId: string;
  guildId: string | null;
  channelId: string | null;
  workerId: string;
  generatedAt: number;
  /** Made on purpose by /dataset bootstrap, not voted down; absent on older entries. */
  synthetic?: boolean;
}

export interface KeptPanel {
  jobId: string;
  panelIndex: number;
  messageId: string | null;
  /** Absolute. */
  path: string;
  sha256: string;
  bytes: number;
  provenance: PanelProvenance;
  keptUntil: number;
}

export interface ImageArchive {
  /** Writes the PNGs and their rows in one go; replaces nothing that exists (same job+panel twice → error naming them). */
  keep(panels: ReadonlyArray<{ png: Buffer; provenance: PanelProvenance }>, keptUntil: number): KeptPanel[];
  /** The message that shows these panels. */
  attachMessage(jobId: string, messageId: string): void;
  /** Ordered by panelIndex. */
  byMessage(messageId: string): KeptPanel[];
  get(jobId: string, panelIndex: number): KeptPanel | null;
  /** Throws naming the path if the file is gone. */
  read(panel: KeptPanel): Buffer;
  /** Deletes files and rows whose keptUntil has passed; returns how many panels went. Never touches the dataset. */
  sweep(now?: number): number;
}

interface KeptPanelRow {
  job_id: string;
  panel_index: number;
  message_id: string | null;
  sha256: string;
  bytes: number;
  provenance: string;
  kept_until: number;
}

type PanelKey = Pick<KeptPanelRow, 'job_id' | 'panel_index'>;

const PNG_SIGNATURE = Buffer.from([0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a]);

export class SqliteImageArchive implements ImageArchive {
  private readonly insertRow;
  private readonly selectOne;
  private readonly selectJob;
  private readonly selectByMessage;
  private readonly updateMessageId;
  private readonly selectExpired;
  private readonly deleteExpired;
  private readonly keepInTransaction;
  private readonly deleteInTransaction;

  constructor(db: Database.Database, private readonly layout: StoreLayout, private readonly now: () => number) {
    this.insertRow = db.prepare<KeptPanelRow>(`
      INSERT INTO kept_panels (job_id, panel_index, message_id, sha256, bytes, provenance, kept_until)
      VALUES (@job_id, @panel_index, @message_id, @sha256, @bytes, @provenance, @kept_until)`);
    this.selectOne = db.prepare<[string, number], KeptPanelRow>('SELECT * FROM kept_panels WHERE job_id = ? AND panel_index = ?');
    this.selectJob = db.prepare<[string], { job_id: string }>('SELECT job_id FROM jobs WHERE job_id = ?');
    this.selectByMessage = db.prepare<[string], KeptPanelRow>(
      'SELECT * FROM kept_panels WHERE message_id = ? ORDER BY panel_index, job_id');
    this.updateMessageId = db.prepare<[string, string]>('UPDATE kept_panels SET message_id = ? WHERE job_id = ?');
    this.selectExpired = db.prepare<[number], PanelKey>('SELECT job_id, panel_index FROM kept_panels WHERE kept_until <= ?');
    this.deleteExpired = db.prepare<[string, number, number]>(
      'DELETE FROM kept_panels WHERE job_id = ? AND panel_index = ? AND kept_until <= ?');
    this.keepInTransaction = db.transaction((rows: KeptPanelRow[], pngs: Buffer[]) => this.keepRows(rows, pngs));
    this.deleteInTransaction = db.transaction((keys: PanelKey[], now: number) =>
      keys.reduce((deleted, key) => deleted + this.deleteExpired.run(key.job_id, key.panel_index, now).changes, 0));
  }

  keep(panels: ReadonlyArray<{ png: Buffer; provenance: PanelProvenance }>, keptUntil: number): KeptPanel[] {
    checkInteger('keptUntil', keptUntil, 0, Number.MAX_SAFE_INTEGER);
    const rows = panels.map(({ png, provenance }, position): KeptPanelRow => {
      const field = `panels[${position}]`;
      checkProvenanceKeys(`${field}.provenance`, provenance);
      if (!png.subarray(0, PNG_SIGNATURE.length).equals(PNG_SIGNATURE)) fail(`${field}.png`, `<${png.length} bytes>`, 'is not a PNG');
      return {
        job_id: provenance.jobId,
        panel_index: provenance.panelIndex,
        message_id: null,
        sha256: sha256Hex(png),
        bytes: png.length,
        provenance: JSON.stringify(provenance),
        kept_until: keptUntil,
      };
    });
    // Immediate: the existence checks and the inserts must see the same database, even with another process writing.
    this.keepInTransaction.immediate(rows, panels.map((panel) => panel.png));
    return rows.map(toKeptPanel(this.layout));
  }

  attachMessage(jobId: string, messageId: string): void {
    if (this.updateMessageId.run(messageId, jobId).changes === 0) fail('jobId', jobId, 'has no kept panels');
  }

  byMessage(messageId: string): KeptPanel[] {
    return this.selectByMessage.all(messageId).map(toKeptPanel(this.layout));
  }

  get(jobId: string, panelIndex: number): KeptPanel | null {
    const row = this.selectOne.get(jobId, panelIndex);
    return row === undefined ? null : toKeptPanel(this.layout)(row);
  }

  read(panel: KeptPanel): Buffer {
    try {
      return readFileSync(panel.path);
    } catch (error) {
      if ((error as NodeJS.ErrnoException).code !== 'ENOENT') throw error;
      throw new Error(`job ${panel.jobId} panelIndex ${panel.panelIndex}: the kept file ${panel.path} is gone`);
    }
  }

  sweep(now = this.now()): number {
    const expired = this.selectExpired.all(now);
    // Files before rows: a crash in between leaves rows whose files are gone, which the next sweep finishes, rather
    // than files no row points at any more.
    for (const key of expired) rmSync(this.layout.keptPanelFile(key.job_id, key.panel_index), { force: true });
    for (const jobId of new Set(expired.map((key) => key.job_id))) removeFolderIfEmpty(this.layout.keptPanelFolder(jobId));
    return this.deleteInTransaction(expired, now);
  }

  private keepRows(rows: KeptPanelRow[], pngs: Buffer[]): void {
    this.checkNew(rows);
    const written: string[] = [];
    try {
      rows.forEach((row, position) => {
        mkdirSync(this.layout.keptPanelFolder(row.job_id), { recursive: true });
        const file = this.layout.keptPanelFile(row.job_id, row.panel_index);
        writeFileAtomic(file, pngs[position]!);
        written.push(file);
        this.insertRow.run(row);
      });
    } catch (error) {
      for (const file of written) rmSync(file, { force: true });
      for (const row of rows) removeFolderIfEmpty(this.layout.keptPanelFolder(row.job_id));
      throw error;
    }
  }

  private checkNew(rows: KeptPanelRow[]): void {
    const seen = new Set<string>();
    for (const row of rows) {
      const name = `job ${row.job_id} panelIndex ${row.panel_index}`;
      if (seen.has(name)) throw new Error(`keep: ${name} appears twice in one call`);
      seen.add(name);
      if (this.selectOne.get(row.job_id, row.panel_index) !== undefined) throw new Error(`keep: ${name} is already kept`);
      if (this.selectJob.get(row.job_id) === undefined) throw new Error(`keep: job ${row.job_id} is not recorded; insert the job first`);
    }
  }
}

function checkProvenanceKeys(field: string, provenance: PanelProvenance): void {
  checkJobId(`${field}.jobId`, provenance.jobId);
  checkPanelIndex(`${field}.panelIndex`, provenance.panelIndex);
  checkChoice(`${field}.kind`, provenance.kind, GENERATION_JOB_NAMES);
}

function toKeptPanel(layout: StoreLayout): (row: KeptPanelRow) => KeptPanel {
  return (row) => ({
    jobId: row.job_id,
    panelIndex: row.panel_index,
    messageId: row.message_id,
    path: layout.keptPanelFile(row.job_id, row.panel_index),
    sha256: row.sha256,
    bytes: row.bytes,
    provenance: JSON.parse(row.provenance) as PanelProvenance,
    keptUntil: row.kept_until,
  });
}
