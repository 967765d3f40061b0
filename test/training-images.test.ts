import { test } from 'node:test';
import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import { mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import sharp from 'sharp';

import { InvalidRequestError } from '../src/common/validation.js';
import {
  TrainingDataError,
  listTrainingImages,
  loadTrainingImage,
  trainingSetHash,
  type TrainingImage,
} from '../src/gpu/training/training-images.js';
import { fixturePath, readFixtureJson, readFloat32Fixture } from './support/fixtures.js';

const work = mkdtempSync(path.join(tmpdir(), 'wrongbot-training-images-'));
test.after(() => rmSync(work, { recursive: true, force: true }));

let folderCount = 0;
function freshFolder(): string {
  const folder = path.join(work, `folder-${folderCount++}`);
  mkdirSync(folder);
  return folder;
}

/** torch's float32 ToTensor then Normalize(0.5, 0.5) of one byte. */
function normalized(byte: number): number {
  return Math.fround(Math.fround(Math.fround(byte / 255) - 0.5) / 0.5);
}

/** Channel `channel` of pixel (y, x) of a [3, R, R] image. */
function pixelAt(image: TrainingImage, resolution: number, channel: number, y: number, x: number): number {
  return image.pixels[channel * resolution * resolution + y * resolution + x]!;
}

interface ReferenceCase {
  resolution: number;
  batch_size: number;
  images: { file: string; original_size_hw: [number, number]; crop_top_left_yx: [number, number] }[];
  per_step: { image_indices: number[]; time_ids: number[][] }[];
}

for (const caseName of ['b1', 'b2']) {
  test(`case ${caseName}: every step's pixel values, original sizes and crops match diffusers' script exactly`, async () => {
    const reference = readFixtureJson<ReferenceCase>('training-reference', caseName, 'case.json');
    const resolution = reference.resolution;
    const plane = 3 * resolution * resolution;
    const loaded = await Promise.all(
      reference.images.map((image) => loadTrainingImage(fixturePath('training-reference', caseName, 'images', image.file), resolution)),
    );
    loaded.forEach((image, index) => {
      const expected = reference.images[index]!;
      assert.deepEqual(image.originalSize, { height: expected.original_size_hw[0], width: expected.original_size_hw[1] }, expected.file);
      assert.deepEqual(image.cropTopLeft, { y: expected.crop_top_left_yx[0], x: expected.crop_top_left_yx[1] }, expected.file);
      assert.equal(image.pixels.length, plane);
    });
    assert.ok(reference.per_step.length > 0);
    for (const [step, draw] of reference.per_step.entries()) {
      const pixelValues = readFloat32Fixture('training-reference', caseName, 'steps', String(step), 'pixel_values.bin');
      assert.equal(pixelValues.length, draw.image_indices.length * plane, `step ${step}`);
      for (const [sample, index] of draw.image_indices.entries()) {
        const image = loaded[index]!;
        const recorded = pixelValues.subarray(sample * plane, (sample + 1) * plane);
        let maxDifference = 0;
        for (let i = 0; i < plane; i++) maxDifference = Math.max(maxDifference, Math.abs(image.pixels[i]! - recorded[i]!));
        assert.equal(maxDifference, 0, `step ${step} sample ${sample} (${image.file})`);
        const { height, width } = image.originalSize;
        assert.deepEqual(draw.time_ids[sample], [height, width, image.cropTopLeft.y, image.cropTopLeft.x, resolution, resolution]);
      }
    }
  });
}

test('listing returns images sorted by name, skips sidecars and dotfiles silently, and reports other files', async () => {
  const folder = freshFolder();
  for (const name of ['job-panel-2.png', 'job-panel-1.png', 'b.JPG', 'c.jpeg', 'd.WebP', 'job-panel-1.json', '.DS_Store', 'notes.txt']) {
    writeFileSync(path.join(folder, name), '');
  }
  mkdirSync(path.join(folder, 'old.png'));
  const listing = await listTrainingImages(folder);
  assert.deepEqual(listing.images, ['b.JPG', 'c.jpeg', 'd.WebP', 'job-panel-1.png', 'job-panel-2.png'].map((name) => path.join(folder, name)));
  assert.deepEqual(listing.skipped, [path.join(folder, 'notes.txt'), path.join(folder, 'old.png')]);
});

test('a missing folder, a file given as folder and a folder without images are errors naming the folder', async () => {
  const missing = path.join(work, 'no-such-folder');
  await assert.rejects(listTrainingImages(missing), (error: unknown) => {
    assert.ok(error instanceof TrainingDataError);
    assert.equal(error.path, missing);
    assert.match(error.message, /does not exist/);
    assert.ok(error.message.includes(missing));
    return true;
  });

  const file = path.join(work, 'a-file.png');
  writeFileSync(file, '');
  await assert.rejects(listTrainingImages(file), (error: unknown) => {
    assert.ok(error instanceof TrainingDataError);
    assert.match(error.message, /is not a folder/);
    assert.ok(error.message.includes(file));
    return true;
  });

  const onlySidecars = freshFolder();
  writeFileSync(path.join(onlySidecars, 'job-panel-1.json'), '{}');
  writeFileSync(path.join(onlySidecars, 'readme.txt'), '');
  await assert.rejects(listTrainingImages(onlySidecars), (error: unknown) => {
    assert.ok(error instanceof TrainingDataError);
    assert.equal(error.path, onlySidecars);
    assert.match(error.message, /has no images/);
    assert.ok(error.message.includes(onlySidecars));
    return true;
  });
});

test('a larger image is resized so its shorter side is R, its original size recorded before resizing', async () => {
  const resolution = 128;
  // 256 high, 384 wide: red outer bands 64 pixels wide, green between. Resized to 128 × 192, the centre crop starts
  // at x = 32, just where the left band ends, so only a blended edge column or two may show red.
  const width = 384;
  const height = 256;
  const rgb = Buffer.alloc(width * height * 3);
  for (let y = 0; y < height; y++) {
    for (let x = 0; x < width; x++) {
      const band = x < 64 || x >= width - 64;
      rgb.set(band ? [255, 0, 0] : [0, 255, 0], (y * width + x) * 3);
    }
  }
  const file = path.join(freshFolder(), 'wide.png');
  await sharp(rgb, { raw: { width, height, channels: 3 } }).png().toFile(file);

  const image = await loadTrainingImage(file, resolution);
  assert.deepEqual(image.originalSize, { height: 256, width: 384 });
  assert.deepEqual(image.cropTopLeft, { y: 0, x: 32 });
  assert.equal(image.pixels.length, 3 * resolution * resolution);
  // torchvision truncates the longer side: 64 · 103 / 100 = 65.92 gives 65 columns and a crop at round(0.5) = 0,
  // where rounding up would give 66 columns and a crop at 1.
  const narrow = path.join(path.dirname(file), 'narrow.png');
  await sharp({ create: { width: 103, height: 100, channels: 3, background: { r: 0, g: 0, b: 0 } } }).png().toFile(narrow);
  assert.deepEqual((await loadTrainingImage(narrow, 64)).cropTopLeft, { y: 0, x: 0 });

  for (const y of [0, 64, 127]) {
    for (let x = 2; x < resolution - 2; x++) {
      assert.equal(pixelAt(image, resolution, 0, y, x), normalized(0), `red at (${y}, ${x})`);
      assert.equal(pixelAt(image, resolution, 1, y, x), normalized(255), `green at (${y}, ${x})`);
    }
  }
});

test('the centre crop rounds a half-pixel offset to even, as Python\'s round does', async () => {
  const resolution = 8;
  // 13 wide: (13 - 8) / 2 = 2.5 rounds to 2, where rounding half up would start at 3. Each column's red is its x.
  const width = 13;
  const rgb = Buffer.alloc(width * resolution * 3);
  for (let y = 0; y < resolution; y++) for (let x = 0; x < width; x++) rgb[(y * width + x) * 3] = x * 10;
  const file = path.join(freshFolder(), 'odd.png');
  await sharp(rgb, { raw: { width, height: resolution, channels: 3 } }).png().toFile(file);

  const image = await loadTrainingImage(file, resolution);
  assert.deepEqual(image.cropTopLeft, { y: 0, x: 2 });
  for (let x = 0; x < resolution; x++) assert.equal(pixelAt(image, resolution, 0, 3, x), normalized((x + 2) * 10));
});

test('EXIF orientation is applied before the original size is recorded', async () => {
  const resolution = 32;
  const file = path.join(freshFolder(), 'rotated.jpg');
  // Stored 64 wide and 32 high; orientation 6 (rotate 90° clockwise) shows it 32 wide and 64 high.
  await sharp({ create: { width: 64, height: 32, channels: 3, background: { r: 90, g: 90, b: 90 } } })
    .jpeg()
    .withMetadata({ orientation: 6 })
    .toFile(file);
  assert.equal((await sharp(file).metadata()).orientation, 6);

  const image = await loadTrainingImage(file, resolution);
  assert.deepEqual(image.originalSize, { height: 64, width: 32 });
  assert.deepEqual(image.cropTopLeft, { y: 16, x: 0 });
});

test('alpha is dropped without compositing and grey is expanded to three channels, as PIL\'s convert("RGB")', async () => {
  const resolution = 8;
  const folder = freshFolder();
  const transparent = path.join(folder, 'transparent.png');
  const rgba = Buffer.alloc(resolution * resolution * 4);
  for (let i = 0; i < resolution * resolution; i++) rgba.set([200, 100, 50, i % 2 === 0 ? 0 : 128], i * 4);
  await sharp(rgba, { raw: { width: resolution, height: resolution, channels: 4 } }).png().toFile(transparent);
  assert.equal((await sharp(transparent).metadata()).channels, 4);

  const grey = path.join(folder, 'grey.png');
  await sharp(Buffer.alloc(resolution * resolution, 77), { raw: { width: resolution, height: resolution, channels: 1 } })
    .toColourspace('b-w')
    .png()
    .toFile(grey);
  assert.equal((await sharp(grey).metadata()).channels, 1);

  const plane = resolution * resolution;
  const fromRgba = await loadTrainingImage(transparent, resolution);
  assert.equal(fromRgba.pixels.length, 3 * plane);
  [200, 100, 50].forEach((byte, channel) => {
    assert.deepEqual(fromRgba.pixels.subarray(channel * plane, (channel + 1) * plane), new Float32Array(plane).fill(normalized(byte)));
  });
  const fromGrey = await loadTrainingImage(grey, resolution);
  assert.deepEqual(fromGrey.pixels, new Float32Array(3 * plane).fill(normalized(77)));
});

test('an unreadable or corrupt image is an error naming the file', async () => {
  const folder = freshFolder();
  const corrupt = path.join(folder, 'corrupt.png');
  writeFileSync(corrupt, 'not a png at all');
  await assert.rejects(loadTrainingImage(corrupt, 8), (error: unknown) => {
    assert.ok(error instanceof TrainingDataError);
    assert.equal(error.path, corrupt);
    assert.ok(error.message.includes(corrupt));
    return true;
  });
  const missing = path.join(folder, 'gone.png');
  await assert.rejects(loadTrainingImage(missing, 8), (error: unknown) => {
    assert.ok(error instanceof TrainingDataError);
    assert.ok(error.message.includes(missing));
    return true;
  });
});

test('the resolution must be a positive integer multiple of 8', async () => {
  const file = fixturePath('training-reference', 'b1', 'images', 'img00.png');
  for (const resolution of [0, -8, 100, 12.5, Number.NaN]) {
    await assert.rejects(loadTrainingImage(file, resolution), (error: unknown) => {
      assert.ok(error instanceof InvalidRequestError);
      assert.equal(error.field, 'resolution');
      assert.equal(error.shownValue, String(resolution));
      return true;
    });
  }
});

test('the training set hash ignores order, changes with any image, and each image hashes its file bytes', async () => {
  const folder = fixturePath('training-reference', 'b1', 'images');
  const images = await Promise.all(['img00.png', 'img01.png', 'img02.png'].map((name) => loadTrainingImage(path.join(folder, name), 128)));
  assert.equal(images[0]!.sha256, createHash('sha256').update(readFileSync(path.join(folder, 'img00.png'))).digest('hex'));
  const forward = trainingSetHash(images);
  assert.match(forward, /^[0-9a-f]{64}$/);
  assert.equal(trainingSetHash([...images].reverse()), forward);
  assert.notEqual(trainingSetHash(images.slice(0, 2)), forward);
  assert.notEqual(trainingSetHash([...images, images[0]!]), forward);
});
