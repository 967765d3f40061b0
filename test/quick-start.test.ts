import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { SandboxClient } from '../src/sandbox/control-client.js';
import { runCli } from './support/cli.js';
import { startCliProcess } from './support/cli-process.js';
import { REPO_ROOT_DIR } from './support/fixtures.js';
import { LocalHub, quickStartRepos } from './support/local-hub.js';
import { deletePrefix, testPrefix, TEST_REDIS_URL } from './support/worker-process.js';

// The README's GPU quick start, line by line as a user copies it, against a stand-in Hub serving the tiny model and
// LoRA under the real repos' names. What needs a GPU is left out and said so: `npm run setup:cuda`, and
// WORKER_DEVICE=cuda (the worker runs on the CPU here). `npm ci` has been run already (this test runs from the built
// tree); the `.env` lines are given as environment variables, which win over `.env` exactly as the file's would
// apply, without writing the repo's own `.env` under the other tests.

const MARKER = '<!-- gpu-quick-start:';
const GPU_ONLY = new Set(['npm run setup:cuda']);

function quickStartLines(): string[] {
  const readme = readFileSync(path.join(REPO_ROOT_DIR, 'README.md'), 'utf8');
  const block = /```sh\n([\s\S]*?)```/.exec(readme.slice(readme.indexOf(MARKER)))![1]!;
  return block.split('\n').map((line) => line.replace(/\s+#.*$/, '').trim()).filter((line) => line !== '');
}

test('the README\'s GPU quick start, up to its GPU steps: pull, the .env lines, doctor, npm start answering a command', async () => {
  const lines = quickStartLines();
  const hub = await LocalHub.start(quickStartRepos());
  const cache = mkdtempSync(path.join(tmpdir(), 'wrongbot-quick-start-'));
  const prefix = testPrefix('quick-start');
  const base = { HF_ENDPOINT: hub.url, HF_HUB_CACHE: cache, REDIS_URL: TEST_REDIS_URL, QUEUE_PREFIX: prefix, DATA_DIR: path.join(cache, 'data') };
  const dotenv: Record<string, string> = {};
  const ran: string[] = [];
  try {
    for (let i = 0; i < lines.length; i++) {
      const line = lines[i]!;
      if (line === 'npm ci' || GPU_ONLY.has(line)) continue;
      if (line.startsWith('cat >> .env')) {
        for (i++; lines[i] !== 'ENV'; i++) {
          const [name, ...value] = lines[i]!.split('=');
          dotenv[name!] = value.join('=');
        }
        continue;
      }
      // The worker runs on this machine's CPU; the bot talks to the local Discord, not to Discord with a token.
      const env = { ...base, ...dotenv, WORKER_DEVICE: 'cpu', DISCORD_TOKEN: '' };
      if (line.startsWith('npx wrongbot ')) {
        const result = await runCli(line.slice('npx wrongbot '.length).split(/\s+/), env);
        assert.equal(result.code, 0, `${line}\n${result.stdout}${result.stderr}`);
        if (line.includes(' doctor')) {
          assert.match(result.stdout, /✔ model\s+stabilityai\/stable-diffusion-xl-base-1\.0: 4 ONNX models/);
          assert.match(result.stdout, /✔ lora\s+\S*models--minimaxir--sdxl-wrong-lora\S*: patches 96 UNet projections/);
        }
      } else if (line === 'npm start') {
        const start = await startCliProcess(['start'], { ...env, SANDBOX_PORT: '0', IMAGE_SIZES: '', WORKER: '' }, /\[worker\] .*worker \S+ ready/);
        try {
          await start.waitForLine(/\[bot\] .*bot ready/);
          const controlUrl = /The same over HTTP: (\S+) /.exec(await start.waitForLine(/The same over HTTP/))![1]!;
          const sandbox = new SandboxClient(controlUrl);
          const { interactionId } = await sandbox.command({ user: 'alice', command: 'wrong', options: { prompt: 'a cat', seed: 42, steps: 2 } });
          const result = await sandbox.waitFor(async () => (await sandbox.messages()).find((message) => message.interactionId === interactionId && message.attachments.length > 0),
            { what: 'the /wrong image', timeoutMs: 60_000 });
          const lora = (result.embeds[0]!['fields'] as Array<{ name: string; value: string }>).find((field) => field.name === 'LoRA')!.value;
          assert.match(lora, /^sdxl-wrong-lora ×/, 'the LoRA from the repo, named after it');
        } finally {
          start.child.kill('SIGTERM');
          assert.equal((await start.exited).code, 0, start.output());
        }
      } else {
        assert.fail(`the quick start has a line this test does not know how to run: ${line}`);
      }
      ran.push(line);
    }
    assert.deepEqual(ran.map((line) => line.split(' ').slice(0, 3).join(' ')), ['npx wrongbot models', 'npx wrongbot doctor', 'npm start']);
    assert.ok(hub.requests.length > 0, 'the models came from the stand-in Hub');
  } finally {
    await hub.close();
    await deletePrefix(prefix);
    rmSync(cache, { recursive: true, force: true });
  }
});
