import { HubCache } from '../models/hub-cache.js';
import { hubSettings, type HubSettings } from '../models/hub-client.js';
import { DEFAULT_PULL, KNOWN_REPOS } from '../models/known-repos.js';
import { parsePullTarget, pullRepo, PullTargetError, type PullResult } from '../models/pull.js';
import { formatRepoRef, type RepoRef } from '../models/repo-ref.js';
import { parseOptionsAndArguments, UsageError, type OptionSpec } from './options.js';
import { formatBytes, formatDuration, ProgressLine } from './progress-line.js';

export const MODELS_USAGE = `wrongbot models pull [NAME|REPO[@REVISION]]…   (NAME: ${Object.keys(KNOWN_REPOS).join(', ')}; `
  + `none: ${DEFAULT_PULL.join(' ')}; into the Hugging Face cache, HF_HUB_CACHE)`;
/** None: the Hub and the cache are set by HF_ENDPOINT, HF_TOKEN, HF_HUB_CACHE (or HF_HOME) and HF_HUB_OFFLINE. */
export const MODELS_OPTIONS: OptionSpec = {};

/** A download runs for minutes: a line every half minute tells a log it is alive without flooding it. */
const PLAIN_PROGRESS_INTERVAL_MS = 30_000;

function pull(ref: RepoRef, cache: HubCache, settings: HubSettings): Promise<PullResult> {
  const line = new ProgressLine(PLAIN_PROGRESS_INTERVAL_MS);
  const startedMs = performance.now();
  return pullRepo(ref, cache, settings, {
    onProgress: ({ file, receivedBytes, totalBytes }) => {
      // The mean rate since the pull started: steadier than the last second's, and a download's rate is what it is.
      const bytesPerSecond = receivedBytes / Math.max(1e-3, (performance.now() - startedMs) / 1000);
      const leftMs = ((totalBytes - receivedBytes) / Math.max(1, bytesPerSecond)) * 1000;
      line.show(receivedBytes / totalBytes, `${ref.repo}: ${formatBytes(receivedBytes)} of ${formatBytes(totalBytes)}, `
        + `${formatBytes(bytesPerSecond)}/s, ${formatDuration(leftMs)} left (${file})`, receivedBytes >= totalBytes);
    },
    onNote: (note) => {
      line.finish();
      console.error(note);
    },
  }).finally(() => line.finish());
}

/** How to use what was pulled. */
function usageHint(result: PullResult): string {
  const value = formatRepoRef(result.ref);
  switch (result.role) {
    case 'lora': return `LORA_PATH=${value} (or --lora ${value})`;
    case 'refiner': return `--refiner ${value}`;
    case 'model': return `MODEL_DIR=${value} (or --model ${value})`;
  }
}

export async function runModels(argv: string[]): Promise<void> {
  const [subcommand, ...rest] = argv;
  if (subcommand !== 'pull') {
    throw new UsageError(`wrongbot models: ${subcommand === undefined ? 'a subcommand is required' : `unknown subcommand ${JSON.stringify(subcommand)}`}; use ${MODELS_USAGE}`);
  }
  const { positionals } = parseOptionsAndArguments(rest, MODELS_OPTIONS);
  let refs: RepoRef[];
  try {
    refs = (positionals.length > 0 ? positionals : DEFAULT_PULL).map(parsePullTarget);
  } catch (error) {
    if (error instanceof PullTargetError) throw new UsageError(error.message);
    throw error;
  }
  const settings = hubSettings(process.env);
  const cache = new HubCache();
  for (const ref of refs) {
    const result = await pull(ref, cache, settings);
    const source = settings.offline ? 'all from the cache (HF_HUB_OFFLINE)' : `${formatBytes(result.receivedBytes)} downloaded`;
    console.log(`${formatRepoRef(result.ref)} at ${result.commit}: ${result.files} file${result.files === 1 ? '' : 's'}, ${formatBytes(result.sizeBytes)}, ${source}`);
    console.log(`  ${result.path}`);
    console.log(`  use it as ${usageHint(result)}`);
  }
}
