import { test } from 'node:test';
import assert from 'node:assert/strict';
import { lstatSync, mkdirSync, mkdtempSync, readFileSync, rmSync, statSync, symlinkSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { Redis } from 'ioredis';
import { readBotConfig } from '../src/bot/config.js';
import { loraVersionOfSetting, resolveLora, resolveModel } from '../src/models/resolve.js';
import { QueueKeys } from '../src/queue/keys.js';
import { servedModels } from '../src/queue/models.js';
import { runCli } from './support/cli.js';
import { fixturePath } from './support/fixtures.js';
import { BASE_REPO, commitOf, LocalHub, LORA_REPO, quickStartRepos, sha256, TINY_LORA_FILE } from './support/local-hub.js';
import { deletePrefix, killAllWorkers, startWorker, testPrefix, TEST_REDIS_URL } from './support/worker-process.js';

// MODEL_DIR, LORA_PATH, --model and --lora naming a Hub repo: resolved from the Hugging Face cache (never downloaded),
// to what the same folder and file give.

const work = mkdtempSync(path.join(tmpdir(), 'wrongbot-resolve-'));
const cache = path.join(work, 'hf-cache');
const missingCache = path.join(work, 'empty-cache');
const fromCache = { HF_HUB_CACHE: cache };
let hub: LocalHub;

test.before(async () => {
  hub = await LocalHub.start(quickStartRepos());
  const pulled = await runCli(['models', 'pull'], { HF_ENDPOINT: hub.url, HF_HUB_CACHE: cache });
  assert.equal(pulled.code, 0, pulled.stderr);
});
test.after(async () => {
  killAllWorkers();
  await hub.close();
  rmSync(work, { recursive: true, force: true });
});

const GENERATE = ['generate', '--prompt', 'a cat', '--seed', '3', '--steps', '2', '--width', '64', '--height', '64', '--guidance', '5'];

test('MODEL_DIR and --lora naming repos make from the cache (as Python lays it out) the image the folder and the file make', async () => {
  const requestsBefore = hub.requests.length;
  // huggingface_hub links every file, external weights included, which onnxruntime refuses to follow out of the folder.
  const repoDir = path.join(cache, 'models--stabilityai--stable-diffusion-xl-base-1.0');
  const blobOf = (file: string) => path.join(repoDir, 'blobs', sha256(readFileSync(file)));
  const externalWeights = ['unet/model.onnx_data', 'text_encoder_2/model.onnx_data'].map((file) => path.join(repoDir, 'snapshots', commitOf(BASE_REPO), file));
  for (const file of externalWeights) {
    const blob = blobOf(file);
    rmSync(file);
    symlinkSync(path.relative(path.dirname(file), blob), file);
  }
  const byRepo = path.join(work, 'by-repo.png');
  const result = await runCli([...GENERATE, '--lora', LORA_REPO, '--out', byRepo], { ...fromCache, MODEL_DIR: BASE_REPO });
  assert.equal(result.code, 0, result.stderr);
  assert.match(result.stderr, new RegExp(`note: LoRA .*snapshots/${commitOf(LORA_REPO)}/pytorch_lora_weights\\.safetensors: `));
  const byPath = path.join(work, 'by-path.png');
  const folder = await runCli([...GENERATE, '--model', fixturePath('tiny-sdxl'), '--lora', TINY_LORA_FILE, '--out', byPath]);
  assert.equal(folder.code, 0, folder.stderr);
  assert.ok(readFileSync(byRepo).equals(readFileSync(byPath)), 'the same image, byte for byte');
  for (const file of externalWeights) {
    assert.ok(!lstatSync(file).isSymbolicLink() && statSync(file).ino === statSync(blobOf(file)).ino, `${file} became a hard link to its blob`);
  }
  assert.equal(hub.requests.length, requestsBefore, 'resolving asks nothing of the Hub');
});

test('a repo missing from the cache is an error naming the pull command; nothing is downloaded', async () => {
  const requestsBefore = hub.requests.length;
  const model = await runCli([...GENERATE, '--out', path.join(work, 'never.png')], { HF_HUB_CACHE: missingCache, HF_ENDPOINT: hub.url, MODEL_DIR: BASE_REPO });
  assert.equal(model.code, 1);
  assert.equal(model.stderr.trim(), `wrongbot: MODEL_DIR ${BASE_REPO}: no such path here, and ${BASE_REPO} is not in the Hugging Face cache (${missingCache}): `
    + 'download it with `npx wrongbot models pull sdxl-base`');
  const lora = await runCli([...GENERATE, '--model', fixturePath('tiny-sdxl'), '--lora', `${LORA_REPO}@v2`, '--out', path.join(work, 'never.png')], { HF_HUB_CACHE: cache });
  assert.equal(lora.code, 1);
  assert.match(lora.stderr.trim(), new RegExp(`^wrongbot: --lora ${LORA_REPO}@v2: no such path here, and ${LORA_REPO}@v2 is not in the Hugging Face cache .*\`npx wrongbot models pull ${LORA_REPO}@v2\`$`));
  const start = await runCli(['start'], { DISCORD_TOKEN: 'x', HF_HUB_CACHE: missingCache, MODEL_DIR: BASE_REPO, REDIS_URL: TEST_REDIS_URL });
  assert.equal(start.code, 1);
  assert.match(start.stderr.trim(), /^wrongbot: MODEL_DIR stabilityai\/stable-diffusion-xl-base-1\.0: [^\n]*`npx wrongbot models pull sdxl-base`$/, 'start stops before anything runs');
  assert.equal(hub.requests.length, requestsBefore);
});

test('a LoRA taken from a repo is named after the repo unless LORA_VERSION says otherwise; an existing path wins over a repo', () => {
  const previous = process.env['HF_HUB_CACHE'];
  const previousDir = process.cwd();
  process.env['HF_HUB_CACHE'] = cache;
  try {
    const lora = resolveLora(LORA_REPO, 'LORA_PATH');
    assert.deepEqual(lora, { path: path.join(cache, 'models--minimaxir--sdxl-wrong-lora', 'snapshots', commitOf(LORA_REPO), 'pytorch_lora_weights.safetensors'), version: 'sdxl-wrong-lora' });
    assert.deepEqual(resolveLora(`${LORA_REPO}@${commitOf(LORA_REPO)}`, 'LORA_PATH'), lora, 'a pinned commit is the same snapshot');
    assert.equal(loraVersionOfSetting(LORA_REPO, 'LORA_PATH'), 'sdxl-wrong-lora');
    assert.equal(resolveModel(BASE_REPO, 'MODEL_DIR').name, 'stable-diffusion-xl-base-1.0');
    assert.throws(() => resolveModel(LORA_REPO, 'MODEL_DIR'), /MODEL_DIR minimaxir\/sdxl-wrong-lora: minimaxir\/sdxl-wrong-lora holds a LoRA, not an SDXL pipeline/);

    const base = { DATA_DIR: path.join(work, 'data') };
    assert.equal(readBotConfig({ ...base, LORA_PATH: LORA_REPO }, 'token').loraVersion, 'sdxl-wrong-lora');
    assert.equal(readBotConfig({ ...base, LORA_PATH: LORA_REPO, LORA_VERSION: 'woolf' }, 'token').loraVersion, 'woolf');

    // A folder named like the repo, here: it is what the setting means, cache or not.
    process.chdir(work);
    mkdirSync(path.join('minimaxir', 'sdxl-wrong-lora'), { recursive: true });
    assert.deepEqual(resolveModel(LORA_REPO, 'MODEL_DIR'), { path: LORA_REPO, name: 'sdxl-wrong-lora' });
  } finally {
    process.chdir(previousDir);
    if (previous === undefined) delete process.env['HF_HUB_CACHE'];
    else process.env['HF_HUB_CACHE'] = previous;
  }
});

test('a worker given repos loads them from the cache, serves the LoRA as sdxl-wrong-lora and names the model after the repo', async () => {
  const prefix = testPrefix('repo-models');
  const redis = new Redis(TEST_REDIS_URL, { maxRetriesPerRequest: 1 });
  try {
    const worker = await startWorker(prefix, { ...fromCache, MODEL_DIR: BASE_REPO, LORA_PATH: LORA_REPO });
    const ready = await worker.waitForLine(/worker \S+ ready/);
    assert.match(ready, new RegExp(`ready: ${cache}/models--stabilityai--stable-diffusion-xl-base-1\\.0/snapshots/${commitOf(BASE_REPO)}, LoRA sdxl-wrong-lora,`));
    const models = await servedModels(redis, new QueueKeys(prefix));
    assert.deepEqual(models.map((model) => model.name), ['stable-diffusion-xl-base-1.0']);
  } finally {
    killAllWorkers();
    redis.disconnect();
    await deletePrefix(prefix);
  }
});
