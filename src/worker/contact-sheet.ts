import sharp from 'sharp';

// The training set at a glance, for the admin who started a training: one PNG of thumbnails, in training order.

const THUMBNAIL_PX = 96;
const COLUMNS = 8;
const GAP_PX = 4;
/** A sheet stays a few hundred kB: larger sets show their first images. */
export const MAX_CONTACT_SHEET_IMAGES = 64;

export interface ContactSheet {
  png: Uint8Array;
  width: number;
  height: number;
  shown: number;
}

export async function contactSheetPng(files: readonly string[]): Promise<ContactSheet> {
  const shown = files.slice(0, MAX_CONTACT_SHEET_IMAGES);
  const columns = Math.min(COLUMNS, shown.length);
  const rows = Math.ceil(shown.length / COLUMNS);
  const width = columns * THUMBNAIL_PX + (columns + 1) * GAP_PX;
  const height = rows * THUMBNAIL_PX + (rows + 1) * GAP_PX;
  const thumbnails = await Promise.all(shown.map(async (file, i) => ({
    input: await sharp(file).rotate().resize(THUMBNAIL_PX, THUMBNAIL_PX, { fit: 'cover' }).png().toBuffer(),
    left: GAP_PX + (i % COLUMNS) * (THUMBNAIL_PX + GAP_PX),
    top: GAP_PX + Math.floor(i / COLUMNS) * (THUMBNAIL_PX + GAP_PX),
  })));
  const png = await sharp({ create: { width, height, channels: 3, background: '#111111' } }).composite(thumbnails).png().toBuffer();
  return { png: new Uint8Array(png), width, height, shown: shown.length };
}
