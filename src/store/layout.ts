import path from 'node:path';
import { checkJobId, checkPanelIndex } from '../common/job-ids.js';

// Where the store keeps things under its data dir. Paths are derived from (job id, panel index) rather than stored,
// so the data dir can move and the rows cannot disagree with the disk about names.

export const DATABASE_FILE_NAME = 'wrongbot.sqlite3';
/** What datasetImageFile and datasetSidecarFile name: `<job id>-panel-<n>.png` and `.json`. */
const DATASET_FILE_NAME = /^[0-9a-f-]{36}-panel-\d+\.(png|json)$/;

export class StoreLayout {
  readonly dataDir: string;
  readonly databaseFile: string;
  readonly imagesDir: string;
  readonly datasetDir: string;

  constructor(dataDir: string) {
    this.dataDir = path.resolve(dataDir);
    this.databaseFile = path.join(this.dataDir, DATABASE_FILE_NAME);
    this.imagesDir = path.join(this.dataDir, 'images');
    this.datasetDir = path.join(this.dataDir, 'dataset');
  }

  keptPanelFolder(jobId: string): string {
    return path.join(this.imagesDir, checkJobId('jobId', jobId));
  }

  keptPanelFile(jobId: string, panelIndex: number): string {
    return path.join(this.keptPanelFolder(jobId), `panel-${panelNumber(panelIndex)}.png`);
  }

  datasetImageFile(jobId: string, panelIndex: number): string {
    return path.join(this.datasetDir, `${datasetStem(jobId, panelIndex)}.png`);
  }

  datasetSidecarFile(jobId: string, panelIndex: number): string {
    return path.join(this.datasetDir, `${datasetStem(jobId, panelIndex)}.json`);
  }

  /** Whether a name in datasetDir is one the store writes there; anything else there is not the store's to delete. */
  isDatasetFileName(name: string): boolean {
    return DATASET_FILE_NAME.test(name);
  }
}

/** Panels are numbered from 1 on disk, as they are captioned for people. */
function panelNumber(panelIndex: number): number {
  return checkPanelIndex('panelIndex', panelIndex) + 1;
}

function datasetStem(jobId: string, panelIndex: number): string {
  return `${checkJobId('jobId', jobId)}-panel-${panelNumber(panelIndex)}`;
}
