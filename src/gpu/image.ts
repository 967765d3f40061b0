import sharp from 'sharp';
import { roundHalfEven } from './float32.js';

const f32 = Math.fround;

/**
 * VAE output [1, 3, H, W] in [-1, 1] to 8-bit RGB (H × W × 3): clamp(x / 2 + 0.5, 0, 1) · 255 rounded half to even,
 * the float32 sequence diffusers' image processor and numpy apply.
 */
export function vaeOutputToRgb(sample: Float32Array, width: number, height: number): Uint8Array {
  const plane = width * height;
  if (sample.length !== 3 * plane) {
    throw new RangeError(`VAE output has ${sample.length} values; expected 3 × ${height} × ${width}`);
  }
  const rgb = new Uint8Array(3 * plane);
  for (let channel = 0; channel < 3; channel++) {
    for (let pixel = 0; pixel < plane; pixel++) {
      const unit = Math.min(Math.max(f32(f32(sample[channel * plane + pixel]! / 2) + 0.5), 0), 1);
      rgb[pixel * 3 + channel] = roundHalfEven(f32(unit * 255));
    }
  }
  return rgb;
}

export function encodePng(rgb: Uint8Array, width: number, height: number): Promise<Buffer> {
  return sharp(rgb, { raw: { width, height, channels: 3 } }).png().toBuffer();
}

export async function decodeToRgb(image: Buffer | string): Promise<{ rgb: Uint8Array; width: number; height: number }> {
  const { data, info } = await sharp(image).removeAlpha().raw().toBuffer({ resolveWithObject: true });
  return { rgb: new Uint8Array(data.buffer, data.byteOffset, data.byteLength), width: info.width, height: info.height };
}
