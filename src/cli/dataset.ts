import { existsSync } from 'node:fs';
import { TRAINING_DEFAULTS } from '../gpu/training/recipe.js';
import { BotStore } from '../store/database.js';
import { EXPORT_FORMATS, exportDataset, type ExportFormat } from '../store/dataset-export.js';
import { StoreLayout } from '../store/layout.js';
import { integerOption, optionOrEnvironment, parseOptions, required, UsageError, type OptionSpec } from './options.js';

export const DATASET_USAGE = 'wrongbot dataset export --out DIR [--snapshot N] [--format imagefolder|kohya] [--data-dir DIR]';

export const DATASET_OPTIONS = {
  out: { type: 'string', value: 'DIR', description: 'the folder to write the images, captions and dataset card to (required)' },
  snapshot: { type: 'string', value: 'N', description: 'what /train number N froze, instead of the set as it is now' },
  format: { type: 'string', value: EXPORT_FORMATS.join('|'), description: 'imagefolder: a metadata.jsonl for 🤗 datasets; kohya: a .txt caption beside each image (default imagefolder)' },
  'data-dir': { type: 'string', value: 'DIR', description: "the bot's DATA_DIR (default: DATA_DIR)" },
} as const satisfies OptionSpec;

/** The bot's training set, or one /train's snapshot of it, as a folder other trainers read. */
export async function runDataset(argv: string[]): Promise<void> {
  const [subcommand, ...rest] = argv;
  if (subcommand !== 'export') throw new UsageError(`wrongbot dataset: ${subcommand === undefined ? 'a subcommand is required' : `unknown subcommand ${JSON.stringify(subcommand)}`}; use ${DATASET_USAGE}`);
  const values = parseOptions(rest, DATASET_OPTIONS);
  const format = values.format ?? 'imagefolder';
  if (!(EXPORT_FORMATS as readonly string[]).includes(format)) throw new UsageError(`--format ${JSON.stringify(format)} must be one of ${EXPORT_FORMATS.join(', ')}`);
  const dataDir = optionOrEnvironment('data-dir', values['data-dir'], 'DATA_DIR');
  // Opening would create an empty store: a mistyped folder should say so instead.
  if (!existsSync(new StoreLayout(dataDir).databaseFile)) throw new UsageError(`--data-dir ${dataDir} holds no wrongbot database (the bot's DATA_DIR does)`);
  const store = BotStore.open(dataDir);
  try {
    const outDir = required('out', values.out);
    const snapshotId = values.snapshot === undefined ? null : integerOption('snapshot', values.snapshot);
    const outcome = exportDataset(store, { outDir, format: format as ExportFormat, caption: TRAINING_DEFAULTS.prompt, snapshotId });
    if (outcome.missing.length > 0) console.error(`left out entries ${outcome.missing.map((id) => `#${id}`).join(', ')}: their images have left the training set since the snapshot`);
    console.error(`wrote ${outcome.images} image(s) to ${outDir} (${format})`);
  } finally {
    store.close();
  }
}
