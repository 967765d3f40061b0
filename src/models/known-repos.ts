// Which of a Hub repo's files wrongbot takes, and the short names of the repos it is made for. Only what wrongbot
// reads is taken: the same repos also hold diffusers weights (*.safetensors), pickles (*.bin) and OpenVINO files,
// tens of gigabytes a pull must never fetch.

/** What a repo is to wrongbot: the SDXL pipeline (MODEL_DIR), its refiner (--refiner), or a LoRA (LORA_PATH). */
export type RepoRole = 'model' | 'refiner' | 'lora';

export interface FileSelection {
  /** Files that must all be there; a repo without one of them is refused, naming it. */
  readonly files: readonly string[];
  /** Folders whose every file is taken (small ones: scheduler and tokenizer settings); each must hold a file. */
  readonly folders: readonly string[];
}

export interface KnownRepo extends FileSelection {
  readonly repo: string;
  readonly role: RepoRole;
}

/** What makes a repo a diffusers pipeline rather than a LoRA. */
const PIPELINE_INDEX = 'model_index.json';

export function isPipeline(paths: readonly string[]): boolean {
  return paths.includes(PIPELINE_INDEX);
}

/** The name diffusers' LoRA trainers write and `load_lora_weights` looks for first. */
const DIFFUSERS_LORA_FILE = 'pytorch_lora_weights.safetensors';

/** The pipeline's settings folders, which optimum's export keeps beside the ONNX models. */
const PIPELINE_FOLDERS = ['scheduler', 'tokenizer', 'tokenizer_2'];
/** The components optimum exports, each a folder with config.json and model.onnx. */
const ONNX_COMPONENTS = ['text_encoder', 'text_encoder_2', 'unet', 'vae_decoder', 'vae_encoder'];
/** An ONNX model over protobuf's 2 GB limit keeps its weights in this file beside the graph (optimum's name). */
const EXTERNAL_DATA = 'model.onnx_data';

export function isExternalData(file: string): boolean {
  return file === EXTERNAL_DATA || file.endsWith(`/${EXTERNAL_DATA}`);
}

function onnxComponent(folder: string, externalData: boolean): string[] {
  return [`${folder}/config.json`, `${folder}/model.onnx`, ...(externalData ? [`${folder}/${EXTERNAL_DATA}`] : [])];
}

/** `wrongbot models pull NAME`. Sizes (README, "Models") are those of the files listed here. */
export const KNOWN_REPOS: Readonly<Record<string, KnownRepo>> = Object.freeze({
  'sdxl-base': {
    repo: 'stabilityai/stable-diffusion-xl-base-1.0',
    role: 'model',
    files: [
      PIPELINE_INDEX,
      ...onnxComponent('text_encoder', false), ...onnxComponent('text_encoder_2', true), ...onnxComponent('unet', true),
      ...onnxComponent('vae_decoder', false), ...onnxComponent('vae_encoder', false),
    ],
    folders: PIPELINE_FOLDERS,
  },
  // The refiner shares the base's second text encoder and VAE: wrongbot reads only its UNet and model_index.json.
  'sdxl-refiner': {
    repo: 'stabilityai/stable-diffusion-xl-refiner-1.0',
    role: 'refiner',
    files: [PIPELINE_INDEX, ...onnxComponent('unet', true)],
    folders: [],
  },
  'wrong-lora': { repo: 'minimaxir/sdxl-wrong-lora', role: 'lora', files: [DIFFUSERS_LORA_FILE], folders: [] },
});

/** What `wrongbot models pull` with no argument pulls: what the bot serves. */
export const DEFAULT_PULL: readonly string[] = ['sdxl-base', 'wrong-lora'];

export function knownRepo(repo: string): KnownRepo | null {
  return Object.values(KNOWN_REPOS).find((known) => known.repo === repo) ?? null;
}

/** The command that fills the cache with a repo: its short name when it has one and no other revision is asked for. */
export function pullCommand(repo: string, revision: string | null): string {
  const name = revision === null ? Object.entries(KNOWN_REPOS).find(([, known]) => known.repo === repo)?.[0] : undefined;
  return `npx wrongbot models pull ${name ?? (revision === null ? repo : `${repo}@${revision}`)}`;
}

export class SelectionError extends Error {
  override name = 'SelectionError';
}

/** A pipeline repo without the export wrongbot runs: pulling it again cannot help, exporting one does. */
export class NoOnnxExportError extends SelectionError {
  override name = 'NoOnnxExportError';
}

/**
 * The LoRA file of a repo: diffusers' default name, else its only .safetensors. Never a .bin: those are pickles,
 * which run code when loaded.
 */
export function pickLoraFile(label: string, paths: readonly string[]): string {
  if (paths.includes(DIFFUSERS_LORA_FILE)) return DIFFUSERS_LORA_FILE;
  const candidates = paths.filter((file) => file.toLowerCase().endsWith('.safetensors'));
  if (candidates.length === 1) return candidates[0]!;
  throw new SelectionError(candidates.length === 0
    ? `${label} holds no .safetensors file, so no LoRA wrongbot reads`
    : `${label} holds ${candidates.length} .safetensors files (${candidates.join(', ')}) and no ${DIFFUSERS_LORA_FILE}: `
      + 'download the one you mean and point LORA_PATH (or --lora) at the file');
}

/**
 * The files to take from a repo that is not in the table, judged by what it holds: a pipeline (model_index.json)
 * gives its ONNX components and settings folders, anything else is a LoRA.
 */
function derivedSelection(label: string, paths: readonly string[]): FileSelection {
  if (!isPipeline(paths)) return { files: [pickLoraFile(label, paths)], folders: [] };
  const components = ONNX_COMPONENTS.filter((folder) => paths.includes(`${folder}/model.onnx`));
  return {
    // config.json is diffusers' and may be missing from a bare export; model.onnx is what makes a component.
    files: [PIPELINE_INDEX, ...components.flatMap((folder) => onnxComponent(folder, true).filter((file) => file.endsWith('.onnx') || paths.includes(file)))],
    folders: PIPELINE_FOLDERS.filter((folder) => paths.some((file) => file.startsWith(`${folder}/`))),
  };
}

function noOnnxExport(label: string, repo: string, role: RepoRole): string {
  const folder = `${repo.split('/')[1]}-onnx`;
  return `${label} has no ONNX export (no unet/model.onnx), and wrongbot runs SDXL only as ONNX in optimum's layout. `
    + `Export one with optimum (pip install "optimum[onnxruntime]"): optimum-cli export onnx --model ${repo} ${folder}/ `
    + `— then give that folder as ${role === 'refiner' ? '--refiner' : 'MODEL_DIR (or --model)'}`;
}

/**
 * The files of `paths` (a repo's listing, or a cached snapshot's files) that wrongbot takes, or what is missing.
 * `label` names the repo and revision in errors.
 */
export function selectFiles(repo: string, label: string, paths: readonly string[]): string[] {
  const known = knownRepo(repo);
  const selection = known ?? derivedSelection(label, paths);
  if (isPipeline(selection.files) && !paths.includes('unet/model.onnx')) {
    throw new NoOnnxExportError(noOnnxExport(label, repo, known?.role ?? 'model'));
  }
  const missing = [
    ...selection.files.filter((file) => !paths.includes(file)),
    ...selection.folders.filter((folder) => !paths.some((file) => file.startsWith(`${folder}/`))).map((folder) => `${folder}/`),
  ];
  if (missing.length > 0) throw new SelectionError(`${label} has no ${missing.join(', ')}`);
  return paths.filter((file) => selection.files.includes(file) || selection.folders.some((folder) => file.startsWith(`${folder}/`)));
}
