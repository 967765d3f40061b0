import { test } from 'node:test';
import assert from 'node:assert/strict';
import { readdirSync, readFileSync } from 'node:fs';
import path from 'node:path';
import { REPO_ROOT_DIR } from './support/fixtures.js';

// Every setting the code reads from the environment is documented in .env.example and in the README, so the two
// cannot drift from the code unnoticed.

const READS = /(?:optionalString|requiredString|integerSetting|numberSetting|booleanSetting|snowflakes|present)\(\s*\w+,\s*'([A-Z][A-Z0-9_]+)'|env\['([A-Z][A-Z0-9_]+)'\]|env\.([A-Z][A-Z0-9_]+)/g;

function sourceFiles(dir: string): string[] {
  return readdirSync(dir, { withFileTypes: true }).flatMap((entry) => {
    const full = path.join(dir, entry.name);
    return entry.isDirectory() ? sourceFiles(full) : entry.name.endsWith('.ts') ? [full] : [];
  });
}

test('every environment variable the code reads is in .env.example and the README', () => {
  const names = new Set<string>();
  for (const file of sourceFiles(path.join(REPO_ROOT_DIR, 'src'))) {
    for (const match of readFileSync(file, 'utf8').matchAll(READS)) names.add((match[1] ?? match[2] ?? match[3])!);
  }
  assert.ok(names.has('DISCORD_TOKEN') && names.has('QUEUE_PREFIX') && names.size > 20, [...names].join(' '));
  const example = readFileSync(path.join(REPO_ROOT_DIR, '.env.example'), 'utf8');
  const readme = readFileSync(path.join(REPO_ROOT_DIR, 'README.md'), 'utf8');
  for (const name of names) {
    assert.match(example, new RegExp(`^(# )?${name}=`, 'm'), `${name} in .env.example`);
    assert.ok(readme.includes(`\`${name}\``), `${name} in the README`);
  }
});
