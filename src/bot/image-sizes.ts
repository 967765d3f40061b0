// The sizes a server offers in the commands' `size` choice. SDXL was trained on about one megapixel in these aspect
// buckets; a server running another model (the bundled tiny one, say) lists its own in IMAGE_SIZES.

export interface ImageSize {
  /** As stored and sent in the choice: `1152x896`. */
  value: string;
  /** As shown to members: `1152×896`. */
  label: string;
  width: number;
  height: number;
}

/** Discord allows at most 25 choices per option. */
const MAX_SIZE_CHOICES = 25;
const SIZE_PATTERN = /^(\d+)x(\d+)$/;

export function parseImageSizes(text: string, maxSidePx: number): ImageSize[] {
  const sizes: ImageSize[] = [];
  for (const entry of text.split(',').map((part) => part.trim()).filter((part) => part !== '')) {
    const match = SIZE_PATTERN.exec(entry);
    if (!match) throw new Error(`${JSON.stringify(entry)} is not WIDTHxHEIGHT, e.g. 1024x1024`);
    const [width, height] = [Number(match[1]), Number(match[2])];
    for (const side of [width, height]) {
      if (side < 8 || side > maxSidePx || side % 8 !== 0) {
        throw new Error(`${JSON.stringify(entry)}: each side must be a multiple of 8 from 8 to ${maxSidePx}`);
      }
    }
    if (sizes.some((size) => size.value === entry)) throw new Error(`${JSON.stringify(entry)} is listed twice`);
    sizes.push({ value: entry, label: `${width}×${height}`, width, height });
  }
  if (sizes.length === 0) throw new Error('lists no size');
  if (sizes.length > MAX_SIZE_CHOICES) throw new Error(`lists ${sizes.length} sizes; Discord shows at most ${MAX_SIZE_CHOICES}`);
  return sizes;
}

export const SDXL_IMAGE_SIZES: readonly ImageSize[] = Object.freeze(
  parseImageSizes('1024x1024,1152x896,896x1152,1216x832,832x1216,1344x768,768x1344', 4096),
);
