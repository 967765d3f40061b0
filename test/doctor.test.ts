import { test } from 'node:test';
import assert from 'node:assert/strict';
import { cpSync, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { checkNode } from '../src/doctor/checks.js';
import { runCli } from './support/cli.js';
import { fixturePath } from './support/fixtures.js';
import { TEST_REDIS_URL, TINY_LORA } from './support/worker-process.js';

// `wrongbot doctor` as a user runs it: this machine with the tiny model passes every check; each broken thing is a
// failed line with its fix, and a non-zero exit.

const work = mkdtempSync(path.join(tmpdir(), 'wrongbot-doctor-'));
test.after(() => rmSync(work, { recursive: true, force: true }));

const HEALTHY = { MODEL_DIR: fixturePath('tiny-sdxl'), LORA_PATH: TINY_LORA, REDIS_URL: TEST_REDIS_URL, WORKER_DEVICE: 'cpu', DATA_DIR: path.join(work, 'data') };

function linesOf(stdout: string): Map<string, string> {
  const lines = new Map<string, string>();
  for (const line of stdout.split('\n')) {
    const match = /^([✔!✘–]) (\S+(?: memory)?)\s+(.*)$/.exec(line);
    if (match) lines.set(match[2]!, `${match[1]} ${match[3]}`);
  }
  return lines;
}

test('this machine with the tiny model: every check passes or does not apply, and it exits 0', async () => {
  const result = await runCli(['doctor'], HEALTHY);
  assert.equal(result.code, 0, result.stdout + result.stderr);
  const lines = linesOf(result.stdout);
  for (const name of ['node', 'redis', 'model', 'lora', 'device', 'cuda', 'webgpu', 'gpu memory', 'disk', 'font', 'memory']) assert.ok(lines.has(name), `a ${name} line in\n${result.stdout}`);
  for (const [name, text] of lines) assert.match(text, /^[✔–] /, `${name}: ${text}`);
  assert.match(lines.get('model')!, /4 ONNX models, .*UNet float32, VAE decoder float32, sides multiples of 16/);
  assert.match(lines.get('lora')!, /patches 96 UNet projections \(to_k, to_out, to_q, to_v\)/);
  assert.match(lines.get('cuda')!, /^– not configured/);
  assert.match(lines.get('memory')!, /at 128x128: one image about \d+ MB, a triptych about \d+ MB/);
});

test('a broken model folder, an unreachable Redis and a missing CUDA provider each fail with their fix', async () => {
  const broken = path.join(work, 'broken-model');
  cpSync(fixturePath('tiny-sdxl'), broken, { recursive: true });
  rmSync(path.join(broken, 'vae_decoder', 'model.onnx'));
  const result = await runCli(['doctor'], { ...HEALTHY, MODEL_DIR: broken, REDIS_URL: 'redis://127.0.0.1:1', WORKER_DEVICE: 'cuda' });
  assert.equal(result.code, 1);
  assert.match(result.stdout, /✘ model .*vae_decoder\/model\.onnx is missing\n\s+fix: npx wrongbot models pull sdxl-base/);
  assert.match(result.stdout, /✘ redis .*REDIS_URL redis:\/\/127\.0\.0\.1:1 does not answer.*\n\s+fix: start that Redis, or unset REDIS_URL/);
  assert.match(result.stdout, /✘ cuda .*the CUDA provider is not installed.*\n\s+fix: npm run setup:cuda/);
  assert.match(result.stdout, /– lora .*not checked against a UNet/);
  assert.match(result.stdout, /3 check\(s\) failed: redis, model, cuda/);
});

test('an old Node is a failed check', () => {
  assert.equal(checkNode('18.19.0').status, 'fail');
  assert.equal(checkNode('20.0.0').status, 'ok');
});
