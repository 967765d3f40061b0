import { createHash } from 'node:crypto';
import type { Dirent } from 'node:fs';
import { readdir, readFile } from 'node:fs/promises';
import path from 'node:path';
import sharp from 'sharp';
import { fail } from '../../common/validation.js';
import { roundHalfEven } from '../float32.js';

// The training set's images, prepared as diffusers' train_dreambooth_lora_sdxl.py prepares them: exif_transpose,
// convert("RGB"), Resize(R) of the shorter side, center crop R × R, ToTensor, Normalize(0.5, 0.5). The original size
// and crop corner are kept because SDXL's time_ids condition the UNet on them.

export class TrainingDataError extends Error {
  override name = 'TrainingDataError';

  constructor(readonly path: string, message: string, options?: ErrorOptions) {
    super(message, options);
  }
}

const IMAGE_EXTENSIONS = new Set(['.png', '.jpg', '.jpeg', '.webp']);
// wrongbot's dataset folder keeps a `<job>-panel-<n>.json` sidecar beside each panel: expected, so not worth a mention.
const SIDECAR_EXTENSION = '.json';
// The VAE turns every 8 × 8 pixels into one latent.
const VAE_PIXELS_PER_LATENT = 8;
const RGB_CHANNELS = 3;

export interface TrainingImageList {
  /** Absolute paths, sorted by file name so that a seeded run draws the same images on every machine. */
  images: string[];
  /** Absolute paths of entries that are neither images nor sidecars or dotfiles, for the caller to mention. */
  skipped: string[];
}

export interface TrainingImage {
  file: string;
  /** After EXIF orientation, before resizing: the size SDXL's time_ids report. */
  originalSize: { height: number; width: number };
  /** Where the R × R crop starts in the resized image: the crop corner SDXL's time_ids report. */
  cropTopLeft: { y: number; x: number };
  /** [3, R, R] channel-major, in [-1, 1]. */
  pixels: Float32Array;
  /** sha256 hex of the file's bytes. */
  sha256: string;
}

export async function listTrainingImages(dir: string): Promise<TrainingImageList> {
  let entries: Dirent[];
  try {
    entries = await readdir(dir, { withFileTypes: true });
  } catch (error) {
    const code = (error as NodeJS.ErrnoException).code;
    const problem = code === 'ENOENT' ? 'does not exist'
      : code === 'ENOTDIR' ? 'is not a folder'
        : `cannot be read (${fileSystemReason(error)})`;
    throw new TrainingDataError(dir, `training folder ${dir} ${problem}`, { cause: error });
  }
  const images: string[] = [];
  const skipped: string[] = [];
  // Code-unit order, not the locale's, so the order (and with it every seeded draw) is the same everywhere.
  for (const entry of entries.sort((a, b) => (a.name < b.name ? -1 : a.name > b.name ? 1 : 0))) {
    const extension = path.extname(entry.name).toLowerCase();
    const absolute = path.resolve(dir, entry.name);
    if (entry.name.startsWith('.') || extension === SIDECAR_EXTENSION) continue;
    if (IMAGE_EXTENSIONS.has(extension) && (entry.isFile() || entry.isSymbolicLink())) images.push(absolute);
    else skipped.push(absolute);
  }
  if (images.length === 0) {
    throw new TrainingDataError(dir, `training folder ${dir} has no images (${[...IMAGE_EXTENSIONS].join(', ')})`);
  }
  return { images, skipped };
}

// torch's ToTensor divides by 255 in float32 and Normalize then subtracts 0.5 and divides by 0.5, each rounded to
// float32; a byte has only 256 values, so the whole sequence is one table.
const NORMALIZED_BYTE = Float32Array.from({ length: 256 }, (_, byte) => {
  const unit = Math.fround(byte / 255);
  return Math.fround(Math.fround(unit - 0.5) / 0.5);
});

export async function loadTrainingImage(file: string, resolution: number): Promise<TrainingImage> {
  if (!Number.isInteger(resolution) || resolution <= 0 || resolution % VAE_PIXELS_PER_LATENT !== 0) {
    fail('resolution', resolution, `must be a positive integer multiple of ${VAE_PIXELS_PER_LATENT}`);
  }
  let bytes: Buffer;
  try {
    bytes = await readFile(file);
  } catch (error) {
    const reason = fileSystemReason(error);
    throw new TrainingDataError(file, `training image ${file} cannot be read (${reason})`, { cause: error });
  }
  const original = await decodeRgb(file, bytes);
  const resized = await resizeShorterSide(original, resolution);
  const cropTopLeft = {
    y: roundHalfEven((resized.height - resolution) / 2),
    x: roundHalfEven((resized.width - resolution) / 2),
  };
  return {
    file,
    originalSize: { height: original.height, width: original.width },
    cropTopLeft,
    pixels: cropToChannelMajor(resized, cropTopLeft, resolution),
    sha256: createHash('sha256').update(bytes).digest('hex'),
  };
}

/** Order-independent identity of a training set: sha256 hex over its images' sorted sha256 values. */
export function trainingSetHash(images: readonly Pick<TrainingImage, 'sha256'>[]): string {
  const hash = createHash('sha256');
  // Duplicates stay: the same file twice weighs twice in training, so it is a different set.
  for (const digest of images.map((image) => image.sha256).sort()) hash.update(digest);
  return hash.digest('hex');
}

/** The errno code (EACCES, EISDIR…) says what to fix; the full message would repeat the path. */
function fileSystemReason(error: unknown): string {
  return (error as NodeJS.ErrnoException).code ?? String(error);
}

interface RgbImage {
  /** Height × width × 3 bytes. */
  rgb: Buffer;
  width: number;
  height: number;
}

/**
 * exif_transpose then PIL's convert("RGB"): alpha is dropped, not composited, and grey or palette images are
 * expanded. PIL ignores embedded ICC profiles, so sharp must too.
 */
async function decodeRgb(file: string, bytes: Buffer): Promise<RgbImage> {
  try {
    const { data, info } = await sharp(bytes, { autoOrient: true, ignoreIcc: true })
      .removeAlpha()
      .toColourspace('srgb')
      .raw()
      .toBuffer({ resolveWithObject: true });
    return { rgb: data, width: info.width, height: info.height };
  } catch (error) {
    const reason = (error as Error).message;
    throw new TrainingDataError(file, `training image ${file} cannot be decoded: ${reason}`, { cause: error });
  }
}

/**
 * torchvision's Resize(R): the shorter side becomes R and the longer side trunc(R · long / short); an image already
 * that size is returned untouched, as torchvision does. Where it does resample, sharp's linear kernel stands in for
 * PIL's antialiased bilinear filter: close, but not PIL's bytes, which no JS resampler reproduces.
 */
async function resizeShorterSide(image: RgbImage, resolution: number): Promise<RgbImage> {
  const short = Math.min(image.width, image.height);
  if (short === resolution) return image;
  const long = Math.trunc((resolution * Math.max(image.width, image.height)) / short);
  const [width, height] = image.width <= image.height ? [resolution, long] : [long, resolution];
  const data = await sharp(image.rgb, { raw: { width: image.width, height: image.height, channels: RGB_CHANNELS } })
    .resize(width, height, { kernel: 'linear', fit: 'fill' })
    .raw()
    .toBuffer();
  return { rgb: data, width, height };
}

function cropToChannelMajor(image: RgbImage, topLeft: { y: number; x: number }, resolution: number): Float32Array {
  const plane = resolution * resolution;
  const pixels = new Float32Array(RGB_CHANNELS * plane);
  for (let row = 0; row < resolution; row++) {
    for (let column = 0; column < resolution; column++) {
      const source = ((topLeft.y + row) * image.width + topLeft.x + column) * RGB_CHANNELS;
      for (let channel = 0; channel < RGB_CHANNELS; channel++) {
        pixels[channel * plane + row * resolution + column] = NORMALIZED_BYTE[image.rgb[source + channel]!]!;
      }
    }
  }
  return pixels;
}
