import sharp from 'sharp';

// Side-by-side panels with a caption under each and a footer line, as one image a chat can show. Panels stay
// lossless elsewhere (curation needs the originals); this composite only has to fit an attachment limit.

export const DISCORD_ATTACHMENT_LIMIT_BYTES = 10 * 1024 * 1024;

const GAP_PX = 8;
const FONT_FAMILY = 'DejaVu Sans, Helvetica, Arial, sans-serif';
const BACKGROUND = '#111111';
const TEXT_COLOUR = '#f2f2f2';
const MUTED_TEXT_COLOUR = '#b0b0b0';
/** Average glyph advance of a sans-serif font as a fraction of its size, to shorten lines that would overflow. */
const AVERAGE_GLYPH_WIDTH_EM = 0.56;

/** The composite cannot be made from these panels and captions; drawing them again would fail the same way. */
export class CompositionError extends Error {
  override name = 'CompositionError';
}

export interface ComposedPanel {
  png: Uint8Array;
  caption: string;
}

export interface ComposedImage {
  data: Buffer;
  width: number;
  height: number;
  /** `png` when the lossless composite fits the limit, else a palette-quantised PNG, which still fits. */
  encoding: 'png' | 'png-palette';
}

function escapeXml(text: string): string {
  return text.replace(/[<>&"']/g, (c) => `&#${c.charCodeAt(0)};`);
}

function fitToWidth(text: string, widthPx: number, fontSizePx: number): string {
  const maxChars = Math.max(4, Math.floor(widthPx / (fontSizePx * AVERAGE_GLYPH_WIDTH_EM)));
  return text.length <= maxChars ? text : `${text.slice(0, maxChars - 1)}…`;
}

interface TextLine {
  text: string;
  x: number;
  y: number;
  size: number;
  muted: boolean;
}

function textLayer(width: number, height: number, lines: readonly TextLine[]): Buffer {
  const elements = lines.map(({ text, x, y, size, muted }) =>
    `<text x="${x}" y="${y}" font-family="${FONT_FAMILY}" font-size="${size}" fill="${muted ? MUTED_TEXT_COLOUR : TEXT_COLOUR}">${escapeXml(text)}</text>`);
  return Buffer.from(`<svg xmlns="http://www.w3.org/2000/svg" width="${width}" height="${height}">${elements.join('')}</svg>`);
}

export async function composePanels(panels: readonly ComposedPanel[], footer: string, limitBytes = DISCORD_ATTACHMENT_LIMIT_BYTES): Promise<ComposedImage> {
  try {
    return await compose(panels, footer, limitBytes);
  } catch (error) {
    if (error instanceof CompositionError) throw error;
    // sharp's errors (librsvg refusing a caption's SVG, say) name the library's complaint but not what it was doing.
    throw new CompositionError(`cannot draw the panels and captions: ${(error as Error).message}`);
  }
}

async function compose(panels: readonly ComposedPanel[], footer: string, limitBytes: number): Promise<ComposedImage> {
  if (panels.length === 0) throw new CompositionError('composePanels needs at least one panel');
  const sizes = await Promise.all(panels.map(async ({ png }) => sharp(png).metadata()));
  const panelWidth = sizes[0]!.width!;
  const panelHeight = sizes[0]!.height!;
  if (sizes.some((size) => size.width !== panelWidth || size.height !== panelHeight)) {
    throw new CompositionError(`panels differ in size: ${sizes.map((s) => `${s.width}x${s.height}`).join(', ')}`);
  }
  // Text scales with the panels so that captions stay legible on 1024 px images and fit on tiny test images.
  const captionSize = Math.max(10, Math.round(panelWidth / 32));
  const footerSize = Math.max(9, Math.round(captionSize * 0.85));
  const captionBand = Math.round(captionSize * 2);
  const footerBand = Math.round(footerSize * 2.2);
  const width = panels.length * panelWidth + (panels.length + 1) * GAP_PX;
  const height = GAP_PX + panelHeight + captionBand + footerBand;

  const lines: TextLine[] = panels.map(({ caption }, i) => ({
    text: fitToWidth(caption, panelWidth, captionSize),
    x: GAP_PX + i * (panelWidth + GAP_PX),
    y: GAP_PX + panelHeight + Math.round(captionSize * 1.4),
    size: captionSize,
    muted: false,
  }));
  lines.push({
    text: fitToWidth(footer, width - 2 * GAP_PX, footerSize),
    x: GAP_PX,
    y: GAP_PX + panelHeight + captionBand + Math.round(footerSize * 1.4),
    size: footerSize,
    muted: true,
  });

  const canvas = sharp({ create: { width, height, channels: 3, background: BACKGROUND } }).composite([
    ...panels.map(({ png }, i) => ({ input: Buffer.from(png), left: GAP_PX + i * (panelWidth + GAP_PX), top: GAP_PX })),
    { input: textLayer(width, height, lines), left: 0, top: 0 },
  ]);
  const raw = await canvas.raw().toBuffer({ resolveWithObject: true });
  const fromRaw = () => sharp(raw.data, { raw: { width, height, channels: raw.info.channels } });
  const lossless = await fromRaw().png().toBuffer();
  if (lossless.length <= limitBytes) return { data: lossless, width, height, encoding: 'png' };
  const palette = await fromRaw().png({ palette: true, quality: 90, effort: 7, dither: 1 }).toBuffer();
  if (palette.length <= limitBytes) return { data: palette, width, height, encoding: 'png-palette' };
  throw new CompositionError(`the composite is ${palette.length} bytes even as a palette PNG; the limit is ${limitBytes}`);
}
