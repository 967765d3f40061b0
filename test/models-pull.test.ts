import { test } from 'node:test';
import assert from 'node:assert/strict';
import { existsSync, lstatSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, readlinkSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { runCli } from './support/cli.js';
import { fixturePath } from './support/fixtures.js';
import {
  BASE_REPO, commitOf, folderFiles, LocalHub, LORA_REPO, quickStartRepos, sha256, TINY_LORA_FILE, type HubRepo,
} from './support/local-hub.js';

// `wrongbot models pull` against a stand-in Hub on this machine (real HTTP, real files), into a cache of the test's
// own: the layout Python's huggingface_hub reads, resuming, hash checks, offline mode and the Hub's refusals.

const BASE_COMMIT = commitOf(BASE_REPO);
const BASE_DIR = 'models--stabilityai--stable-diffusion-xl-base-1.0';
const LORA_DIR = 'models--minimaxir--sdxl-wrong-lora';
/** Every file of the tiny model is one wrongbot reads, but its notes. */
const BASE_FILES = Object.keys(folderFiles(fixturePath('tiny-sdxl'), ['IO.md'])).sort();
const BIG_FILE = 'unet/model.onnx_data';

function tempCache(): string {
  return mkdtempSync(path.join(tmpdir(), 'wrongbot-hf-cache-'));
}

async function withHub(repos: HubRepo[], body: (hub: LocalHub, cache: string) => Promise<void>): Promise<void> {
  const hub = await LocalHub.start(repos);
  const cache = tempCache();
  try {
    await body(hub, cache);
  } finally {
    await hub.close();
    rmSync(cache, { recursive: true, force: true });
  }
}

function pull(hub: LocalHub, cache: string, args: string[], env: Record<string, string> = {}) {
  return runCli(['models', 'pull', ...args], { HF_ENDPOINT: hub.url, HF_HUB_CACHE: cache, ...env });
}

/** The blob name huggingface_hub gives a file: the sha256 of an LFS file, the git blob hash of the others. */
function expectedBlob(hub: LocalHub, repo: string, file: string): string {
  const served = hub.file(repo, file);
  return served.lfs ? served.sha256 : served.gitOid;
}

function snapshotFiles(dir: string, prefix = ''): string[] {
  return readdirSync(dir, { withFileTypes: true }).flatMap((entry) => entry.isDirectory()
    ? snapshotFiles(path.join(dir, entry.name), `${prefix}${entry.name}/`)
    : [`${prefix}${entry.name}`]).sort();
}

function oneLine(stderr: string): string {
  const lines = stderr.trim().split('\n');
  assert.equal(lines.length, 1, `one line: ${stderr}`);
  return lines[0]!;
}

test('models pull fills the cache in huggingface_hub\'s layout, with only the files wrongbot reads', async () => {
  await withHub(quickStartRepos(), async (hub, cache) => {
    const result = await pull(hub, cache, []);
    assert.equal(result.code, 0, result.stderr);

    const repoDir = path.join(cache, BASE_DIR);
    assert.equal(readFileSync(path.join(repoDir, 'refs', 'main'), 'utf8'), BASE_COMMIT, 'refs/main holds the bare commit hash');
    const snapshot = path.join(repoDir, 'snapshots', BASE_COMMIT);
    assert.deepEqual(snapshotFiles(snapshot), BASE_FILES, 'no diffusers weights, OpenVINO files or notes');
    for (const file of BASE_FILES) {
      const link = path.join(snapshot, file);
      const blob = path.join(repoDir, 'blobs', expectedBlob(hub, BASE_REPO, file));
      if (file.endsWith('.onnx_data')) {
        // onnxruntime refuses external weights behind a symlink out of the model's folder: a hard link is the same bytes.
        assert.ok(!lstatSync(link).isSymbolicLink() && statSync(link).ino === statSync(blob).ino, `${file} is a hard link to ${blob}`);
      } else {
        assert.ok(lstatSync(link).isSymbolicLink(), `${file} is a symlink`);
        assert.equal(readlinkSync(link), path.relative(path.dirname(link), blob), `${file} links to ${blob}, relatively`);
      }
      assert.ok(readFileSync(link).equals(readFileSync(fixturePath('tiny-sdxl', file))), `${file} has the repo's bytes`);
    }
    const blobs = new Set(BASE_FILES.map((file) => expectedBlob(hub, BASE_REPO, file)));
    assert.deepEqual(readdirSync(path.join(repoDir, 'blobs')).sort(), [...blobs].sort(), 'one blob per content, no partial file left');
    assert.ok(blobs.size < BASE_FILES.length, 'the two tokenizers share blobs');

    const loraSnapshot = path.join(cache, LORA_DIR, 'snapshots', commitOf(LORA_REPO));
    assert.deepEqual(snapshotFiles(loraSnapshot), ['pytorch_lora_weights.safetensors'], 'never the .bin pickle');
    assert.ok(readFileSync(path.join(loraSnapshot, 'pytorch_lora_weights.safetensors')).equals(readFileSync(TINY_LORA_FILE)));

    const fetched = hub.downloads().map((request) => request.path);
    for (const never of ['openvino', 'diffusion_pytorch_model', 'sd_xl_base_1.0', 'pytorch_lora_weights.bin', 'README.md']) {
      assert.ok(!fetched.some((file) => file.includes(never)), `${never} was not requested: ${fetched.join(' ')}`);
    }
    const resolves = hub.downloads().filter((request) => request.path.includes('/resolve/'));
    assert.equal(resolves.length, blobs.size + 1, 'one download per blob, the LoRA\'s included');
    assert.match(result.stdout, new RegExp(`^${BASE_REPO} at ${BASE_COMMIT}: ${BASE_FILES.length} files, `, 'm'));
    assert.match(result.stdout, new RegExp(`use it as MODEL_DIR=${BASE_REPO} `));
    assert.ok(result.stdout.includes(`\n  ${path.join(loraSnapshot, 'pytorch_lora_weights.safetensors')}\n`), result.stdout);
    assert.match(result.stdout, new RegExp(`use it as LORA_PATH=${LORA_REPO} `));
  });
});

test('a second pull downloads nothing, and blobs already in the cache are linked, not fetched again', async () => {
  await withHub(quickStartRepos(), async (hub, cache) => {
    assert.equal((await pull(hub, cache, ['sdxl-base'])).code, 0);
    const first = hub.downloads().length;
    assert.ok(first > 0);

    const again = await pull(hub, cache, ['sdxl-base']);
    assert.equal(again.code, 0, again.stderr);
    assert.equal(hub.downloads().length, first, 'the snapshot was complete: no file requested');
    assert.match(again.stdout, /, 0 B downloaded$/m);

    // What Python's huggingface_hub leaves when another revision shared these files: blobs, no snapshot of this one.
    rmSync(path.join(cache, BASE_DIR, 'snapshots'), { recursive: true });
    const relinked = await pull(hub, cache, [`${BASE_REPO}@${BASE_COMMIT}`]);
    assert.equal(relinked.code, 0, relinked.stderr);
    assert.equal(hub.downloads().length, first, 'every blob was there: none requested');
    assert.deepEqual(snapshotFiles(path.join(cache, BASE_DIR, 'snapshots', BASE_COMMIT)), BASE_FILES);
  });
});

test('a connection cut in the middle of a file is resumed with a Range request, and so is a partial file left by an earlier run', async () => {
  await withHub(quickStartRepos(), async (hub, cache) => {
    const cutAt = 3_000_000;
    hub.cutNextDownload(BASE_REPO, BIG_FILE, cutAt);
    const result = await pull(hub, cache, ['sdxl-base']);
    assert.equal(result.code, 0, result.stderr);
    const note = new RegExp(`${BIG_FILE} of ${BASE_REPO}@${BASE_COMMIT}: connection lost \\(.+\\) at (\\d+) of \\d+ bytes; resuming in 1 s`).exec(result.stderr);
    assert.ok(note, result.stderr);
    const kept = Number(note[1]);
    assert.ok(kept > 0 && kept <= cutAt, `the partial file kept what arrived: ${kept} bytes`);
    const requests = hub.downloads().filter((request) => request.path.endsWith(BIG_FILE));
    assert.deepEqual(requests.map((request) => request.range), [null, null, `bytes=${kept}-`, `bytes=${kept}-`], 'resolve and CDN, whole, then from where the partial file ends');
    const blob = hub.file(BASE_REPO, BIG_FILE).sha256;
    const stored = readFileSync(path.join(cache, BASE_DIR, 'snapshots', BASE_COMMIT, BIG_FILE));
    assert.equal(sha256(stored), blob);
    assert.ok(!existsSync(path.join(cache, BASE_DIR, 'blobs', `${blob}.incomplete`)));
  });

  await withHub(quickStartRepos(), async (hub, cache) => {
    // huggingface_hub's partial file, from a pull that was killed (wrongbot's or Python's: they share the name).
    const file = 'text_encoder_2/model.onnx_data';
    const { content, sha256: blob } = hub.file(BASE_REPO, file);
    const kept = 1_000_000;
    mkdirSync(path.join(cache, BASE_DIR, 'blobs'), { recursive: true });
    writeFileSync(path.join(cache, BASE_DIR, 'blobs', `${blob}.incomplete`), content.subarray(0, kept));
    const result = await pull(hub, cache, ['sdxl-base']);
    assert.equal(result.code, 0, result.stderr);
    const requests = hub.downloads().filter((request) => request.path.endsWith(file));
    assert.deepEqual(requests.map((request) => request.range), [`bytes=${kept}-`, `bytes=${kept}-`]);
    assert.ok(readFileSync(path.join(cache, BASE_DIR, 'snapshots', BASE_COMMIT, file)).equals(content));
  });
});

test('a file whose bytes do not match the hash the Hub lists is refused, and its partial file removed', async () => {
  for (const [file, hash] of [['unet/model.onnx', 'sha256'], ['scheduler/scheduler_config.json', 'git hash']] as const) {
    await withHub(quickStartRepos(), async (hub, cache) => {
      hub.corrupt(BASE_REPO, file);
      const result = await pull(hub, cache, ['sdxl-base']);
      assert.equal(result.code, 1, result.stdout);
      const listed = expectedBlob(hub, BASE_REPO, file);
      const line = oneLine(result.stderr);
      assert.match(line, new RegExp(`^wrongbot: ${file} of ${BASE_REPO}@${BASE_COMMIT}: ${hash} [0-9a-f]+ is not the ${listed} the Hub lists; the download was removed$`));
      const blobs = path.join(cache, BASE_DIR, 'blobs');
      assert.ok(!readdirSync(blobs).some((name) => name.startsWith(listed)), `no blob or partial file for ${file}: ${readdirSync(blobs).join(' ')}`);
      assert.ok(!existsSync(path.join(cache, BASE_DIR, 'refs', 'main')), 'the revision is not recorded for an incomplete snapshot');
    });
  }
});

test('HF_HUB_OFFLINE=1 answers from the cache alone, and names what it lacks and the pull command', async () => {
  await withHub(quickStartRepos(), async (hub, cache) => {
    const offline = { HF_HUB_OFFLINE: '1' };
    const empty = await pull(hub, cache, ['sdxl-base'], offline);
    assert.equal(empty.code, 1);
    assert.match(oneLine(empty.stderr), new RegExp(`HF_HUB_OFFLINE is set.* ${BASE_REPO} is not in the Hugging Face cache \\(${cache}\\): download it with \`npx wrongbot models pull sdxl-base\`$`));
    assert.equal(hub.requests.length, 0, 'nothing was asked of the Hub');

    assert.equal((await pull(hub, cache, ['sdxl-base'])).code, 0);
    const asked = hub.requests.length;
    const cached = await pull(hub, cache, ['sdxl-base'], offline);
    assert.equal(cached.code, 0, cached.stderr);
    assert.equal(hub.requests.length, asked, 'nothing was asked of the Hub');
    assert.match(cached.stdout, new RegExp(`^${BASE_REPO} at ${BASE_COMMIT}: ${BASE_FILES.length} files, .*all from the cache`, 'm'));

    rmSync(path.join(cache, BASE_DIR, 'snapshots', BASE_COMMIT, BIG_FILE));
    const lacking = await pull(hub, cache, ['sdxl-base'], offline);
    assert.equal(lacking.code, 1);
    assert.match(oneLine(lacking.stderr), new RegExp(`the cached snapshot ${BASE_COMMIT} of ${BASE_REPO} has no ${BIG_FILE}: download it with \`npx wrongbot models pull sdxl-base\`$`));
  });
});

test('a gated repo: without a token, a line saying to accept the licence and set HF_TOKEN; with a granted one, the files', async () => {
  const gated = 'someone/gated-lora';
  await withHub([{ repo: gated, files: { 'pytorch_lora_weights.safetensors': TINY_LORA_FILE }, grantedTokens: ['hf_granted'] }], async (hub, cache) => {
    const refused = await pull(hub, cache, [gated]);
    assert.equal(refused.code, 1);
    assert.match(oneLine(refused.stderr), new RegExp(`^wrongbot: ${gated} is gated: accept its licence on ${hub.url}/${gated} \\(logged in\\), then set HF_TOKEN to a read token of that account \\(${hub.url}/settings/tokens\\)$`));

    const notGranted = await pull(hub, cache, [gated], { HF_TOKEN: 'hf_someone_else' });
    assert.match(oneLine(notGranted.stderr), /is gated: accept its licence .*; HF_TOKEN is set, and was refused \(403\)$/);

    const granted = await pull(hub, cache, [gated], { HF_TOKEN: 'hf_granted' });
    assert.equal(granted.code, 0, granted.stderr);
    assert.ok(hub.downloads().some((request) => request.path.includes('/resolve/') && request.authorization === 'Bearer hf_granted'));
    assert.match(granted.stdout, /use it as LORA_PATH=someone\/gated-lora /);
  });
});

test('a repo or revision the Hub does not have is named, and so is a refiner with no ONNX export', async () => {
  const refiner = 'stabilityai/stable-diffusion-xl-refiner-1.0';
  const diffusersOnly: HubRepo = {
    repo: refiner,
    files: {
      'model_index.json': fixturePath('tiny-sdxl-refiner', 'model_index.json'),
      'unet/config.json': fixturePath('tiny-sdxl-refiner', 'unet', 'config.json'),
      'unet/diffusion_pytorch_model.safetensors': TINY_LORA_FILE,
    },
  };
  await withHub([...quickStartRepos(), diffusersOnly], async (hub, cache) => {
    const noRepo = await pull(hub, cache, ['nobody/nothing']);
    assert.equal(noRepo.code, 1);
    assert.match(oneLine(noRepo.stderr), new RegExp(`^wrongbot: ${hub.url} has no model repo nobody/nothing \\(or it is private: set HF_TOKEN`));
    const noRevision = await pull(hub, cache, ['sdxl-base@v9']);
    assert.match(oneLine(noRevision.stderr), new RegExp(`^wrongbot: ${BASE_REPO} has no revision v9$`));
    const badName = await pull(hub, cache, ['sdxl']);
    assert.equal(badName.code, 2);
    assert.match(oneLine(badName.stderr), /"sdxl" is neither a name \(sdxl-base, sdxl-refiner, wrong-lora\) nor a repo id/);

    const noOnnx = await pull(hub, cache, ['sdxl-refiner']);
    assert.equal(noOnnx.code, 1);
    assert.match(oneLine(noOnnx.stderr), new RegExp(`^wrongbot: ${refiner}@main has no ONNX export \\(no unet/model.onnx\\).*`
      + `optimum-cli export onnx --model ${refiner} stable-diffusion-xl-refiner-1.0-onnx/ .*--refiner$`));
    assert.equal(hub.downloads().length, 0, 'nothing was downloaded');
  });
});
