import { test } from 'node:test';
import assert from 'node:assert/strict';
import { copyFile, mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';

import { ClipTokenizer } from '../src/gpu/tokenizer.js';
import { fixturePath, readFixtureJson } from './support/fixtures.js';

interface ClipCase {
  text: string;
  ids: number[];
  input_ids_tokenizer: number[];
  input_ids_tokenizer_2: number[];
}

const { cases } = readFixtureJson<{ cases: ClipCase[] }>('clip-tokens.json');
const TOKENIZER_FILES = ['vocab.json', 'merges.txt', 'special_tokens_map.json', 'tokenizer_config.json'];

const tokenizer = ClipTokenizer.fromDirectory(fixturePath('tiny-sdxl', 'tokenizer'));
const tokenizer2 = ClipTokenizer.fromDirectory(fixturePath('tiny-sdxl', 'tokenizer_2'));

async function withTokenizerCopy(
  edit: (dir: string) => Promise<void>,
  check: (dir: string) => Promise<void>,
): Promise<void> {
  const dir = await mkdtemp(path.join(tmpdir(), 'clip-tokenizer-'));
  try {
    for (const file of TOKENIZER_FILES) {
      await copyFile(fixturePath('tiny-sdxl', 'tokenizer_2', file), path.join(dir, file));
    }
    await edit(dir);
    await check(dir);
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
}

test('settings come from the folder', async () => {
  const [t1, t2] = await Promise.all([tokenizer, tokenizer2]);
  assert.equal(t1.maxLength, 77);
  assert.equal(t1.padId, 49407);
  assert.equal(t2.maxLength, 77);
  assert.equal(t2.padId, 0);
});

for (const c of cases) {
  test(`golden ids for ${JSON.stringify(c.text)}`, async () => {
    const [t1, t2] = await Promise.all([tokenizer, tokenizer2]);
    assert.deepEqual(t1.encode(c.text), c.ids);
    const model1 = t1.encodeForModel(c.text);
    assert.deepEqual(model1.inputIds, c.input_ids_tokenizer);
    assert.deepEqual(model1.droppedIds, c.ids.slice(76, -1));
    assert.deepEqual(t2.encodeForModel(c.text).inputIds, c.input_ids_tokenizer_2);
  });
}

test('pad token "!" of tokenizer_2 is an added token, so a literal "!" becomes id 0', async () => {
  const [t1, t2] = await Promise.all([tokenizer, tokenizer2]);
  assert.deepEqual(t1.encode('wow!!'), [49406, 2781, 748, 49407]);
  assert.deepEqual(t2.encode('wow!!'), [49406, 2781, 0, 0, 49407]);
});

/** The fixture's ids for `text`: what transformers' tokenizer gave. */
function fixtureIds(text: string): number[] {
  const found = cases.find((c) => c.text === text);
  assert.ok(found, `clip-tokens.json has ${JSON.stringify(text)}`);
  return found.ids;
}

test('normalization uses Unicode White_Space and per-code-point lowercasing', async () => {
  const t1 = await tokenizer;
  assert.deepEqual(t1.encode('a\u0085photo\u00a0of\u3000a cat'), fixtureIds('a photo of a cat'));
  // U+FEFF is JS \s but not Unicode White_Space: it survives as its three UTF-8 byte tokens.
  assert.deepEqual(t1.encode('a\ufeffcat'), [49406, 320, 171, 119, 379, 2368, 49407]);
  // A whole-string toLowerCase would end the word with final sigma ς.
  assert.deepEqual(t1.encode('ΣΑΣ'), t1.encode('σασ'));
  assert.notDeepEqual(t1.encode('ΣΑΣ'), t1.encode('σας'));
  // NFC: e + combining mark is the same word as the precomposed letter.
  assert.deepEqual(t1.encode('cafe\u0301 nai\u0308ve re\u0301sume\u0301'), fixtureIds('café naïve résumé'));
});

test('words encoded again come from the BPE cache with the same ids', async () => {
  const t1 = await tokenizer;
  // [bos, masterpiece, ",", best, quality, ",", …, eos]: a repeated word must give the fixture's ids the second time too.
  const ids = fixtureIds('masterpiece, best quality, (detailed:1.2), [[blurry]]');
  const [bos, masterpiece, comma, best, quality] = ids;
  assert.deepEqual(t1.encode('masterpiece, best quality, masterpiece'), [bos, masterpiece, comma, best, quality, comma, masterpiece, ids.at(-1)]);
  // The second round finds every piece in the cache the first round filled.
  for (const round of [1, 2]) {
    for (const c of cases) assert.deepEqual(t1.encode(c.text), c.ids, `round ${round}: ${JSON.stringify(c.text)}`);
  }
});

test('decode turns dropped ids back into the words the user lost', async () => {
  const t1 = await tokenizer;
  const long = cases.find((c) => c.ids.length === 102);
  assert.ok(long, 'fixture has the 102-id case');
  const { droppedIds } = t1.encodeForModel(long.text);
  assert.equal(droppedIds.length, 25);
  assert.equal(t1.decode(droppedIds), Array(25).fill('a').join(' '));

  // Emoji bytes are spread over several tokens and must be reassembled before UTF-8 decoding.
  assert.equal(t1.decode(fixtureIds('emoji 🐱🚀 and ❤️').slice(1, -1)), 'emoji 🐱🚀 and ❤️');
  assert.equal(t1.decode(t1.encode("Don't  STOP").slice(1, -1)), "don 't stop");
  assert.equal(t1.decode([49406, 320, 49407]), '<|startoftext|>a <|endoftext|>');
  assert.throws(() => t1.decode([49408]), /49408/);
});

test('a folder without vocab.json is rejected naming that path', async () => {
  await withTokenizerCopy(
    (dir) => rm(path.join(dir, 'vocab.json')),
    async (dir) => {
      const vocabPath = path.join(dir, 'vocab.json');
      await assert.rejects(ClipTokenizer.fromDirectory(dir), (err: Error) => err.message.includes(vocabPath));
    },
  );
});

test('invalid files are rejected naming the file and the bad value', async () => {
  await withTokenizerCopy(
    (dir) => writeFile(path.join(dir, 'tokenizer_config.json'), JSON.stringify({ model_max_length: 'long' })),
    async (dir) => {
      await assert.rejects(ClipTokenizer.fromDirectory(dir), (err: Error) =>
        err.message.includes(path.join(dir, 'tokenizer_config.json')) && err.message.includes('"long"'),
      );
    },
  );
  await withTokenizerCopy(
    (dir) => writeFile(path.join(dir, 'merges.txt'), '#version: 0.2\ni n\nbroken\n'),
    async (dir) => {
      await assert.rejects(ClipTokenizer.fromDirectory(dir), (err: Error) =>
        err.message.includes(`${path.join(dir, 'merges.txt')}:3`) && err.message.includes('"broken"'),
      );
    },
  );
  await withTokenizerCopy(
    (dir) => writeFile(path.join(dir, 'special_tokens_map.json'), JSON.stringify({ pad_token: '<|notthere|>' })),
    async (dir) => {
      await assert.rejects(ClipTokenizer.fromDirectory(dir), /pad_token "<\|notthere\|>"/);
    },
  );
});

test('pad token may be an object with content, and special_tokens_map.json is optional', async () => {
  await withTokenizerCopy(
    (dir) => writeFile(path.join(dir, 'special_tokens_map.json'), JSON.stringify({ pad_token: { content: '<|endoftext|>' } })),
    async (dir) => assert.equal((await ClipTokenizer.fromDirectory(dir)).padId, 49407),
  );
  await withTokenizerCopy(
    (dir) => rm(path.join(dir, 'special_tokens_map.json')),
    async (dir) => {
      // tokenizer_2's tokenizer_config.json names "!" as pad on its own.
      const t = await ClipTokenizer.fromDirectory(dir);
      assert.equal(t.padId, 0);
      assert.deepEqual(t.encode('a photo of a cat'), cases[0].ids);
    },
  );
});
