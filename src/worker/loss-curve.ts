import sharp from 'sharp';

// The loss of every training step as a chart the bot posts when a training ends. A step's loss depends mostly on the
// timestep drawn for it, so the raw values are a band of noise: a moving average drawn over them shows the trend.

const WIDTH_PX = 640;
const HEIGHT_PX = 320;
const MARGIN_PX = { left: 64, right: 16, top: 16, bottom: 36 } as const;
const FONT = 'font-family="DejaVu Sans, Helvetica, Arial, sans-serif" font-size="12" fill="#b0b0b0"';
/** The moving average spans this fraction of the steps (at least one). */
const SMOOTHING_FRACTION = 1 / 20;

export interface LossCurve {
  png: Uint8Array;
  width: number;
  height: number;
}

function movingAverage(values: readonly number[], window: number): number[] {
  const averaged: number[] = [];
  let sum = 0;
  values.forEach((value, i) => {
    sum += value;
    if (i >= window) sum -= values[i - window]!;
    averaged.push(sum / Math.min(i + 1, window));
  });
  return averaged;
}

/** null when no step reported a finite loss. */
export async function lossCurvePng(losses: readonly number[]): Promise<LossCurve | null> {
  const finite = losses.filter((loss) => Number.isFinite(loss));
  if (finite.length === 0) return null;
  const low = Math.min(...finite);
  const high = Math.max(...finite);
  const span = high - low || 1;
  const plotWidth = WIDTH_PX - MARGIN_PX.left - MARGIN_PX.right;
  const plotHeight = HEIGHT_PX - MARGIN_PX.top - MARGIN_PX.bottom;
  const x = (step: number) => MARGIN_PX.left + (finite.length === 1 ? plotWidth / 2 : (step / (finite.length - 1)) * plotWidth);
  const y = (loss: number) => MARGIN_PX.top + (1 - (loss - low) / span) * plotHeight;
  const path = (values: readonly number[]) => values.map((loss, step) => `${x(step).toFixed(1)},${y(loss).toFixed(1)}`).join(' ');
  const smoothed = movingAverage(finite, Math.max(1, Math.round(finite.length * SMOOTHING_FRACTION)));
  const svg = `<svg xmlns="http://www.w3.org/2000/svg" width="${WIDTH_PX}" height="${HEIGHT_PX}">
  <rect width="100%" height="100%" fill="#111111"/>
  <rect x="${MARGIN_PX.left}" y="${MARGIN_PX.top}" width="${plotWidth}" height="${plotHeight}" fill="none" stroke="#333333"/>
  <polyline points="${path(finite)}" fill="none" stroke="#5a6b8c" stroke-width="1"/>
  <polyline points="${path(smoothed)}" fill="none" stroke="#f2a33a" stroke-width="2.5"/>
  <text x="${MARGIN_PX.left - 6}" y="${MARGIN_PX.top + 10}" text-anchor="end" ${FONT}>${high.toFixed(4)}</text>
  <text x="${MARGIN_PX.left - 6}" y="${MARGIN_PX.top + plotHeight}" text-anchor="end" ${FONT}>${low.toFixed(4)}</text>
  <text x="${MARGIN_PX.left}" y="${HEIGHT_PX - 12}" ${FONT}>step 1</text>
  <text x="${WIDTH_PX - MARGIN_PX.right}" y="${HEIGHT_PX - 12}" text-anchor="end" ${FONT}>step ${finite.length}</text>
  <text x="${MARGIN_PX.left + plotWidth / 2}" y="${HEIGHT_PX - 12}" text-anchor="middle" ${FONT}>loss per step, and its moving average</text>
</svg>`;
  const png = await sharp(Buffer.from(svg)).png().toBuffer();
  return { png: new Uint8Array(png), width: WIDTH_PX, height: HEIGHT_PX };
}
