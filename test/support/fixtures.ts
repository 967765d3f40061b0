import { readFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import path from 'node:path';

// Compiled tests live in dist/test/…; fixtures stay in the source tree so a clone carries them.
const REPO_ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..', '..', '..');

export function fixturePath(...parts: string[]): string {
  return path.join(REPO_ROOT, 'test', 'fixtures', ...parts);
}

export function readFixtureJson<T>(...parts: string[]): T {
  return JSON.parse(readFileSync(fixturePath(...parts), 'utf8')) as T;
}

export function readFloat32Fixture(...parts: string[]): Float32Array {
  const bytes = readFileSync(fixturePath(...parts));
  return new Float32Array(bytes.buffer.slice(bytes.byteOffset, bytes.byteOffset + bytes.byteLength));
}

export const REPO_ROOT_DIR = REPO_ROOT;
