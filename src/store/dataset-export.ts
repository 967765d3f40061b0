import { existsSync, mkdirSync, readdirSync, readFileSync, renameSync, rmSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { sha256Hex } from '../common/files.js';
import type { DatasetEntry } from './dataset.js';
import type { BotStore } from './database.js';

// The training set (or what one /train froze of it) in the layouts other trainers read, so a server's curated
// images are not locked into wrongbot:
//   imagefolder: the images and metadata.jsonl (file_name, text, provenance), as 🤗 datasets' imagefolder and
//                diffusers' training scripts load it;
//   kohya:       each image with a .txt caption beside it, as kohya-ss/sd-scripts reads it.
// Images are named by their sha256, the order `wrongbot train --data` and the workers train them in, and a
// README.md dataset card counts where they came from.

export const EXPORT_FORMATS = ['imagefolder', 'kohya'] as const;
export type ExportFormat = (typeof EXPORT_FORMATS)[number];

export class DatasetExportError extends Error {
  override name = 'DatasetExportError';
}

export interface ExportRequest {
  outDir: string;
  format: ExportFormat;
  /** The caption of every image: the trigger word the LoRA is trained on. */
  caption: string;
  /** A /train snapshot's number, or null for the training set as it is now. */
  snapshotId: number | null;
}

export interface ExportOutcome {
  images: number;
  /** Entries of the snapshot whose image has left the set since. */
  missing: number[];
}

function entriesToExport(store: BotStore, snapshotId: number | null): { entries: DatasetEntry[]; missing: number[]; source: string } {
  if (snapshotId === null) return { entries: store.dataset.list({ limit: Number.MAX_SAFE_INTEGER }), missing: [], source: 'the training set as it is' };
  const snapshot = store.trainings.snapshotById(snapshotId);
  if (snapshot === null) throw new DatasetExportError(`there is no snapshot ${snapshotId}; every /train makes one, numbered like its version (wrong-vN)`);
  const entries: DatasetEntry[] = [];
  const missing: number[] = [];
  for (const { id, sha256 } of snapshot.entries) {
    const entry = store.dataset.get(id);
    if (entry?.sha256 === sha256) entries.push(entry);
    else missing.push(id);
  }
  return { entries, missing, source: `snapshot ${snapshot.id} (version ${snapshot.version}, ${new Date(snapshot.createdAt).toISOString()})` };
}

function datasetCard(entries: readonly DatasetEntry[], request: ExportRequest, source: string): string {
  const count = (key: (entry: DatasetEntry) => string) => {
    const counts = new Map<string, number>();
    for (const entry of entries) counts.set(key(entry), (counts.get(key(entry)) ?? 0) + 1);
    return [...counts].sort((a, b) => b[1] - a[1]).map(([name, n]) => `- ${name}: ${n}`);
  };
  return [
    '# The "wrong" training set',
    '',
    `Exported by wrongbot from ${source}, in the ${request.format} layout. Every image is captioned "${request.caption}":`,
    'a LoRA trained on them learns what that word means, and "wrong" as the negative prompt steers away from it.',
    '',
    `${entries.length} image(s), each named by its sha256.`,
    '',
    '## Where they came from',
    '',
    ...count((entry) => (entry.provenance.synthetic === true ? 'synthetic (/dataset bootstrap)' : 'voted down by members')),
    '',
    '## Commands that made them',
    '',
    ...count((entry) => `/${entry.provenance.kind}, ${entry.provenance.loraVersion === null ? 'base model' : `LoRA ${entry.provenance.loraVersion}`}`),
    '',
    '## Models',
    '',
    ...count((entry) => entry.provenance.model),
    '',
  ].join('\n');
}

/** Writes the export into a fresh folder (refusing one that has files), whole or not at all. */
export function exportDataset(store: BotStore, request: ExportRequest): ExportOutcome {
  const { outDir } = request;
  if (existsSync(outDir) && readdirSync(outDir).length > 0) throw new DatasetExportError(`--out ${outDir} is not empty; export into a new or empty folder`);
  const { entries, missing, source } = entriesToExport(store, request.snapshotId);
  if (entries.length === 0) throw new DatasetExportError(`there are no images to export from ${source}`);
  const sorted = [...new Map(entries.map((entry) => [entry.sha256, entry])).values()].sort((a, b) => (a.sha256 < b.sha256 ? -1 : 1));
  const staging = `${path.resolve(outDir)}.partial-${process.pid}`;
  rmSync(staging, { recursive: true, force: true });
  mkdirSync(staging, { recursive: true });
  try {
    const metadata: string[] = [];
    for (const entry of sorted) {
      const png = readFileSync(entry.imagePath);
      if (sha256Hex(png) !== entry.sha256) throw new DatasetExportError(`entry #${entry.id}'s image ${entry.imagePath} no longer matches its sha256`);
      const fileName = `${entry.sha256}.png`;
      writeFileSync(path.join(staging, fileName), png);
      if (request.format === 'kohya') writeFileSync(path.join(staging, `${entry.sha256}.txt`), `${request.caption}\n`);
      else {
        const { provenance } = entry;
        metadata.push(JSON.stringify({
          file_name: fileName, text: request.caption, entry_id: entry.id, kind: provenance.kind, prompt: provenance.prompt, seed: provenance.seed,
          model: provenance.model, lora_version: provenance.loraVersion, voters: entry.voters.length,
        }));
      }
    }
    if (request.format === 'imagefolder') writeFileSync(path.join(staging, 'metadata.jsonl'), `${metadata.join('\n')}\n`);
    writeFileSync(path.join(staging, 'README.md'), datasetCard(sorted, request, source));
    if (existsSync(outDir)) rmSync(outDir, { recursive: true });
    renameSync(staging, outDir);
  } catch (error) {
    rmSync(staging, { recursive: true, force: true });
    throw error;
  }
  return { images: sorted.length, missing };
}
