import { test } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import path from 'node:path';
import { REPO_ROOT_DIR } from './support/fixtures.js';

// The bot process never loads a model library, and the worker never talks to Discord: checked on the compiled
// import graph of each process's entry point, static imports and dynamic ones alike.

const DIST_SRC = path.join(REPO_ROOT_DIR, 'dist', 'src');
const IMPORT = /(?:^|[\s;])(?:import|export)\s[^'"]*?from\s*['"]([^'"]+)['"]|import\s*\(\s*['"]([^'"]+)['"]\s*\)|(?:^|[\s;])import\s+['"]([^'"]+)['"]/g;

/** Every module file reachable from `entry`, and every package it names. */
function importGraph(entry: string): { files: Set<string>; packages: Set<string> } {
  const files = new Set<string>();
  const packages = new Set<string>();
  const visit = (file: string) => {
    if (files.has(file)) return;
    files.add(file);
    for (const match of readFileSync(file, 'utf8').matchAll(IMPORT)) {
      const specifier = match[1] ?? match[2] ?? match[3]!;
      if (specifier.startsWith('.')) visit(path.resolve(path.dirname(file), specifier));
      else packages.add(specifier.startsWith('@') ? specifier.split('/').slice(0, 2).join('/') : specifier.split('/')[0]!);
    }
  };
  visit(path.join(DIST_SRC, entry));
  return { files, packages };
}

function foldersOf(files: Set<string>): Set<string> {
  return new Set([...files].map((file) => path.relative(DIST_SRC, file).split(path.sep)[0]!));
}

test('the bot process loads neither onnxruntime nor sharp nor any of the GPU code', () => {
  const { files, packages } = importGraph('cli/bot.js');
  assert.ok(files.size > 20, 'the graph was followed');
  assert.ok(packages.has('discord.js') && packages.has('better-sqlite3') && packages.has('bullmq'));
  for (const forbidden of ['onnxruntime-node', 'sharp']) assert.ok(!packages.has(forbidden), `${forbidden} reached from the bot`);
  const folders = foldersOf(files);
  for (const forbidden of ['gpu', 'worker', 'sandbox']) assert.ok(!folders.has(forbidden), `src/${forbidden} reached from the bot: ${[...folders].join(', ')}`);
});

test('the worker process never talks to Discord', () => {
  const { files, packages } = importGraph('cli/worker.js');
  assert.ok(packages.has('onnxruntime-node') || foldersOf(files).has('gpu'), 'the graph was followed');
  for (const forbidden of ['discord.js', 'ws', 'better-sqlite3']) assert.ok(!packages.has(forbidden), `${forbidden} reached from the worker`);
  const folders = foldersOf(files);
  for (const forbidden of ['bot', 'commands', 'sandbox', 'store']) assert.ok(!folders.has(forbidden), `src/${forbidden} reached from the worker`);
});
