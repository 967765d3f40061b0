import { test } from 'node:test';
import assert from 'node:assert/strict';
import ort from 'onnxruntime-node';

import { parseWeightedPrompt, type PromptFragment, type WeightingSyntax } from '../src/gpu/prompt-weighting.js';
import { encodeWeightedPrompt, type TextEncoderPass } from '../src/gpu/weighted-encoding.js';
import { ClipTokenizer } from '../src/gpu/tokenizer.js';
import { fixturePath } from './support/fixtures.js';

const tokenizers = Promise.all([
  ClipTokenizer.fromDirectory(fixturePath('tiny-sdxl', 'tokenizer')),
  ClipTokenizer.fromDirectory(fixturePath('tiny-sdxl', 'tokenizer_2')),
]);

function fragments(prompt: string, syntax: WeightingSyntax): [string, number][] {
  return parseWeightedPrompt(prompt, syntax).fragments.map(({ text, weight }: PromptFragment) => [text, weight]);
}

// ---------------------------------------------------------------------------------------------------------------
// compel parsing: expectations from compel's own test/test_prompt_parser.py

test('compel: plain text and bare groups are weight 1', () => {
  assert.deepEqual(fragments('fire flames', 'compel'), [['fire flames', 1]]);
  assert.deepEqual(fragments('fire (flames)', 'compel'), [['fire flames', 1]]);
  assert.deepEqual(fragments('hamburger ((kaiser roll))', 'compel'), [['hamburger kaiser roll', 1]]);
  assert.deepEqual(fragments('cat hot-dog eating', 'compel'), [['cat hot-dog eating', 1]]);
  assert.deepEqual(fragments('fire, flames , fire', 'compel'), [['fire, flames , fire', 1]]);
  assert.deepEqual(fragments('', 'compel'), [['', 1]]);
  assert.deepEqual(fragments('()', 'compel'), [['', 1]]);
});

test('compel: + and - suffixes are powers of 1.1 and 0.9', () => {
  assert.deepEqual(fragments('flames+', 'compel'), [['flames', 1.1]]);
  assert.deepEqual(fragments('flames-', 'compel'), [['flames', 0.9]]);
  assert.deepEqual(fragments('fire flames++', 'compel'), [['fire', 1], ['flames', Math.pow(1.1, 2)]]);
  assert.deepEqual(fragments('flowers fire-- flames', 'compel'), [['flowers', 1], ['fire', Math.pow(0.9, 2)], ['flames', 1]]);
  assert.deepEqual(fragments('(flowers)--- flames+++', 'compel'), [['flowers', Math.pow(0.9, 3)], ['flames', Math.pow(1.1, 3)]]);
  assert.deepEqual(fragments('"flames"+', 'compel'), [['flames', 1.1]]);
  assert.deepEqual(fragments('C++ code', 'compel'), [['C', 1.1 * 1.1], ['code', 1]]);
});

test('compel: explicit weights on groups, and the comma that follows', () => {
  assert.deepEqual(fragments('(flames)0.5', 'compel'), [['flames', 0.5]]);
  assert.deepEqual(fragments('fire (flames)0.5', 'compel'), [['fire', 1], ['flames', 0.5]]);
  assert.deepEqual(fragments('(a phrase)1.3', 'compel'), [['a phrase', 1.3]]);
  assert.deepEqual(fragments('(a phrase)2', 'compel'), [['a phrase', 2]]);
  assert.deepEqual(fragments('(a phrase)+++', 'compel'), [['a phrase', Math.pow(1.1, 3)]]);
  assert.deepEqual(fragments('(a phrase)-', 'compel'), [['a phrase', 0.9]]);
  assert.deepEqual(fragments('(pretty flowers)+, the flames are too hot', 'compel'), [
    ['pretty flowers', 1.1],
    [', the flames are too hot', 1],
  ]);
  // compel puts a space after every comma first, so the word after it can carry a weight.
  assert.deepEqual(fragments('a,b+', 'compel'), [['a,', 1], ['b', 1.1]]);
});

test('compel: nesting multiplies', () => {
  assert.deepEqual(fragments('fire (flames (trees)1.5)2.0', 'compel'), [['fire', 1], ['flames', 2], ['trees', 3]]);
  assert.deepEqual(fragments('hairy ("mountain, man" with a (beard)2.0)+', 'compel'), [
    ['hairy', 1],
    ['mountain , man with a', 1.1],
    ['beard', 1.1 * 2],
  ]);
});

test('compel: escapes', () => {
  assert.deepEqual(fragments('mountain \\(man\\)', 'compel'), [['mountain (man)', 1]]);
  assert.deepEqual(fragments('mountain (\\(man\\))+', 'compel'), [['mountain', 1], ['(man)', 1.1]]);
  assert.deepEqual(fragments('\\"mountain\\" (\\(man\\))+', 'compel'), [['"mountain"', 1], ['(man)', 1.1]]);
  assert.deepEqual(fragments('(\\"mountain\\")+ (\\(man\\))-', 'compel'), [['"mountain"', 1.1], ['(man)', 0.9]]);
});

test('compel: malformed syntax stays literal text', () => {
  assert.deepEqual(fragments('a badly +test prompt', 'compel'), [['a badly +test prompt', 1]]);
  assert.deepEqual(fragments('a badly (formed test prompt', 'compel'), [['a badly (formed test prompt', 1]]);
  assert.deepEqual(fragments('(((a badly (formed +test )prompt', 'compel'), [['(((a badly formed +test prompt', 1]]);
  assert.deepEqual(fragments('(a (ba)dly (f)ormed +test prompt', 'compel'), [['(a ba dly f ormed +test prompt', 1]]);
  // A group that is glued to the word before it is not a group at the top level.
  assert.deepEqual(fragments('photo(cat)+', 'compel'), [['photo(cat)+', 1]]);
  assert.deepEqual(fragments('(a - b)1.2', 'compel'), [['(a - b)1.2', 1]]);
  assert.deepEqual(fragments('(x:1.3) [y]', 'compel'), [['x:1 . 3 [y]', 1]]);
  const deep = `${'('.repeat(5000)}a${')+'.repeat(5000)}`;
  assert.equal(parseWeightedPrompt(deep, 'compel').fragments.length, 1);
});

// ---------------------------------------------------------------------------------------------------------------
// A1111 parsing: expectations from the doctest of modules/prompt_parser.py parse_prompt_attention

test('a1111: the doctest of parse_prompt_attention', () => {
  assert.deepEqual(fragments('normal text', 'a1111'), [['normal text', 1]]);
  assert.deepEqual(fragments('an (important) word', 'a1111'), [['an ', 1], ['important', 1.1], [' word', 1]]);
  assert.deepEqual(fragments('(unbalanced', 'a1111'), [['unbalanced', 1.1]]);
  assert.deepEqual(fragments('\\(literal\\]', 'a1111'), [['(literal]', 1]]);
  assert.deepEqual(fragments('(unnecessary)(parens)', 'a1111'), [['unnecessaryparens', 1.1]]);
  assert.deepEqual(fragments('a (((house:1.3)) [on] a (hill:0.5), sun, (((sky))).', 'a1111'), [
    ['a ', 1],
    ['house', 1.5730000000000004],
    [' ', 1.1],
    ['on', 1],
    [' a ', 1.1],
    ['hill', 0.55],
    [', sun, ', 1.1],
    ['sky', 1.4641000000000006],
    ['.', 1.1],
  ]);
});

test('a1111: brackets, explicit weights and escapes', () => {
  assert.deepEqual(fragments('((x))', 'a1111'), [['x', 1.1 * 1.1]]);
  assert.deepEqual(fragments('[a phrase]', 'a1111'), [['a phrase', 1 / 1.1]]);
  assert.deepEqual(fragments('(a phrase:1.3)', 'a1111'), [['a phrase', 1.3]]);
  assert.deepEqual(fragments('(a phrase: 0.5 ) b', 'a1111'), [['a phrase', 0.5], [' b', 1]]);
  assert.deepEqual(fragments('((a:1.5) b)', 'a1111'), [['a', 1.5 * 1.1], [' b', 1.1]]);
  assert.deepEqual(fragments('[x', 'a1111'), [['x', 1 / 1.1]]);
  assert.deepEqual(fragments('a) b]', 'a1111'), [['a) b]', 1]]);
  assert.deepEqual(fragments('\\\\ and \\[x\\]', 'a1111'), [['\\ and [x]', 1]]);
});

test('a1111: text that is not a weight stays text instead of failing', () => {
  assert.deepEqual(fragments('(x:abc)', 'a1111'), [['x:abc', 1.1]]);
  // Python's float() raises on this and A1111 fails the generation.
  assert.deepEqual(fragments('(x:1.2.3) y', 'a1111'), [['x:1.2.3', 1.1], [' y', 1]]);
  assert.deepEqual(fragments('a:1.5) b', 'a1111'), [['a:1.5) b', 1]]);
  assert.deepEqual(fragments('a BREAK (b)', 'a1111'), [['a ', 1], ['b', 1.1]]);
});

test('non-finite weights are refused, naming the fragment', () => {
  assert.throws(() => parseWeightedPrompt(`cat${'+'.repeat(1000)}`, 'compel'), /"cat" has weight .*not a finite/);
  assert.throws(() => parseWeightedPrompt(`(dog:1${'0'.repeat(400)})`, 'a1111'), /"dog" has weight Infinity/);
  assert.throws(() => parseWeightedPrompt(`(dog:1${'0'.repeat(39)})`, 'auto'), /not a finite/, 'float32 overflow counts');
  assert.throws(() => parseWeightedPrompt('x', 'fancy' as WeightingSyntax), /Unknown prompt weighting syntax "fancy"/);
});

test('none keeps the text literally', () => {
  for (const prompt of ['(a cat:1.2)+', '', '  spaced  ']) {
    assert.deepEqual(parseWeightedPrompt(prompt, 'none'), { syntax: 'none', fragments: [{ text: prompt, weight: 1 }] });
  }
});

test('auto detection', () => {
  const detected = (prompt: string): string => parseWeightedPrompt(prompt, 'auto').syntax;
  for (const plain of ['a photo of a cat, highly detailed', 'sci-fi city, 16:9', 'smile :)', '1) a cat 2) a dog', '--ar 2', 'cat - dog', '']) {
    assert.deepEqual(parseWeightedPrompt(plain, 'auto'), { syntax: 'none', fragments: [{ text: plain, weight: 1 }] }, plain);
  }
  assert.equal(detected('a (cat:1.3)'), 'a1111');
  assert.equal(detected('a [cat]'), 'a1111');
  assert.equal(detected('a (cat:1.3), dog+'), 'a1111', 'A1111 weights win over compel suffixes');
  assert.equal(detected('a cat+'), 'compel');
  assert.equal(detected('a cat--'), 'compel');
  assert.equal(detected('(a cat)++'), 'compel');
  assert.equal(detected('(a cat)1.3'), 'compel');
  assert.equal(detected('(a cat)1.0'), 'compel');
  assert.equal(detected('((masterpiece)), cat+'), 'compel', 'a compel suffix wins over bare parentheses');
  assert.equal(detected('a (cat)'), 'a1111', 'bare parentheses are A1111 emphasis');
  assert.equal(detected('ganyu \\(genshin impact\\)'), 'a1111');
  assert.deepEqual(fragments('((masterpiece)), a cat', 'auto'), [['masterpiece', 1.1 * 1.1], [', a cat', 1]]);
});

// ---------------------------------------------------------------------------------------------------------------
// Encoding with a fake encoder: each row is a function of the token, the one before it and the position.

const WIDTH = 4;

interface FakePass extends TextEncoderPass {
  calls: number[][];
}

function fakeRow(ids: readonly number[], token: number, channel: number): number {
  const previous = token > 0 ? ids[token - 1] : 0;
  return Math.fround(Math.sin(ids[token] * 0.001 + token * 0.1 + channel) + 0.5 * Math.cos(previous * 0.002 + channel) + 0.3);
}

function fakePass(tokenizer: ClipTokenizer, pooled: boolean): FakePass {
  const calls: number[][] = [];
  return {
    tokenizer,
    calls,
    async encode(inputIds) {
      assert.equal(inputIds.length, tokenizer.maxLength);
      calls.push([...inputIds]);
      const hidden = new Float32Array(inputIds.length * WIDTH);
      for (let t = 0; t < inputIds.length; t++) {
        for (let c = 0; c < WIDTH; c++) hidden[t * WIDTH + c] = fakeRow(inputIds, t, c);
      }
      return { hidden, pooled: pooled ? Float32Array.from([inputIds.indexOf(49407), inputIds[1], inputIds[2]]) : null };
    },
  };
}

async function fakePasses(): Promise<[FakePass, FakePass]> {
  const [t1, t2] = await tokenizers;
  return [fakePass(t1, false), fakePass(t2, true)];
}

/** The ids diffusers would feed for `text`. */
async function modelIds(text: string): Promise<[number[], number[]]> {
  const [t1, t2] = await tokenizers;
  return [t1.encodeForModel(text).inputIds, t2.encodeForModel(text).inputIds];
}

function fakeHidden(ids: readonly number[]): Float32Array {
  return Float32Array.from({ length: ids.length * WIDTH }, (_, i) => fakeRow(ids, Math.floor(i / WIDTH), i % WIDTH));
}

test('none encodes exactly what diffusers feeds, and pooled comes from the pass that has one', async () => {
  const passes = await fakePasses();
  const prompt = 'a photo of a cat, highly detailed';
  const result = await encodeWeightedPrompt(prompt, 'auto', passes);
  const ids = await modelIds(prompt);
  assert.equal(result.syntax, 'none');
  assert.deepEqual(passes.map((pass) => pass.calls), [[ids[0]], [ids[1]]]);
  assert.deepEqual(result.hidden, [fakeHidden(ids[0]), fakeHidden(ids[1])]);
  assert.deepEqual(result.pooled, Float32Array.from([ids[1].indexOf(49407), ids[1][1], ids[1][2]]));
  assert.equal(result.droppedText, null);
});

/** 80 one-token words: the window holds 75, so "fish cat dog bird fish" is cut. */
const LONG_PROMPT = Array.from({ length: 80 }, (_, i) => ['cat', 'dog', 'bird', 'fish'][i % 4]).join(' ');

test('a long prompt is cut as diffusers cuts it, and the cut words are reported', async () => {
  const [t1] = await tokenizers;
  const none = await encodeWeightedPrompt(LONG_PROMPT, 'none', await fakePasses());
  assert.equal(none.droppedText, t1.decode(t1.encodeForModel(LONG_PROMPT).droppedIds));
  assert.equal(none.droppedText, 'fish cat dog bird fish');

  for (const [prompt, syntax] of [[`${LONG_PROMPT} (last)1.2`, 'compel'], [`${LONG_PROMPT} (last:1.2)`, 'a1111']] as const) {
    const passes = await fakePasses();
    const result = await encodeWeightedPrompt(prompt, 'auto', passes);
    assert.equal(result.syntax, syntax);
    assert.equal(result.droppedText, 'fish cat dog bird fish last');
    assert.deepEqual(passes[0].calls.at(-1), (await modelIds(LONG_PROMPT))[0]);
  }
});

test('compel: z_empty + (z − z_empty)·w for every token, pooled from the raw prompt', async () => {
  const passes = await fakePasses();
  const result = await encodeWeightedPrompt('a cat+ on a mat', 'compel', passes);
  assert.equal(result.syntax, 'compel');
  const [emptyIds, promptIds] = [await modelIds(''), await modelIds('a cat on a mat')];
  for (const p of [0, 1]) {
    const z = fakeHidden(promptIds[p]);
    const e = fakeHidden(emptyIds[p]);
    assert.deepEqual(passes[p].calls.slice(0, 2), [emptyIds[p], promptIds[p]], `pass ${p} encodes "" and the text`);
    for (let t = 0; t < 77; t++) {
      const w = Math.fround(t === 2 ? 1.1 : 1); // bos, a, cat, …
      for (let c = 0; c < WIDTH; c++) {
        const i = t * WIDTH + c;
        assert.equal(result.hidden[p][i], Math.fround(e[i] + Math.fround(Math.fround(z[i] - e[i]) * w)), `pass ${p} token ${t}`);
      }
    }
  }
  // compel pools "a cat+ on a mat" as typed, `+` included.
  const raw = (await modelIds('a cat+ on a mat'))[1];
  assert.deepEqual(passes[1].calls.at(-1), raw);
  assert.deepEqual(result.pooled, Float32Array.from([raw.indexOf(49407), raw[1], raw[2]]));
});

test('compel: a downweighted fragment blends towards the prompt without it, tan((1 − w)·π/2)', async () => {
  const passes = await fakePasses();
  const result = await encodeWeightedPrompt('a (red)0.5 cat', 'compel', passes);
  const [emptyIds, fullIds, withoutIds] = [await modelIds(''), await modelIds('a red cat'), await modelIds('a cat')];
  const lerp = Math.fround(Math.tan((0.5 * Math.PI) / 2));
  const total = Math.fround(1 + lerp);
  const [keep, pull] = [Math.fround(1 / total), Math.fround(lerp / total)];
  for (const p of [0, 1]) {
    assert.deepEqual(passes[p].calls.slice(0, 3), [emptyIds[p], fullIds[p], withoutIds[p]]);
    const e = fakeHidden(emptyIds[p]);
    const full = fakeHidden(fullIds[p]);
    const without = fakeHidden(withoutIds[p]);
    for (const t of [1, 2, 3, 4, 40]) {
      const w = Math.fround(t === 2 ? 0.5 : 1);
      for (let c = 0; c < WIDTH; c++) {
        const i = t * WIDTH + c;
        const base = Math.fround(e[i] + Math.fround(Math.fround(full[i] - e[i]) * w));
        const removed = Math.fround(e[i] + Math.fround(without[i] - e[i]));
        const expected = Math.fround(Math.fround(base * keep) + Math.fround(removed * pull));
        assert.equal(result.hidden[p][i], expected, `pass ${p} token ${t}`);
      }
    }
  }
});

test('compel: a downweighted fragment cut off by truncation is not blended, as in compel', async () => {
  const passes = await fakePasses();
  await encodeWeightedPrompt(`${LONG_PROMPT} (dog)0.5`, 'compel', passes);
  assert.equal(passes[0].calls.length, 2, 'only "" and the prompt');

  const partly = await fakePasses();
  await encodeWeightedPrompt(`start (${LONG_PROMPT})0.5`, 'compel', partly);
  assert.equal(partly[0].calls.length, 3, 'a fragment that starts inside the window is blended');
});

test('compel: weight 0 is floored, not infinite', async () => {
  const result = await encodeWeightedPrompt('a (red)0 cat', 'compel', await fakePasses());
  assert.ok(result.hidden.every((hidden) => hidden.every(Number.isFinite)));
});

test('a1111: multiply each token by its weight, then restore the original mean', async () => {
  const passes = await fakePasses();
  const result = await encodeWeightedPrompt('a (cat:1.5) on [a mat]', 'auto', passes);
  assert.equal(result.syntax, 'a1111');
  const ids = await modelIds('a cat on a mat');
  for (const p of [0, 1]) {
    assert.deepEqual(passes[p].calls, [ids[p]]);
    const z = fakeHidden(ids[p]);
    const weights = [1, 1, 1.5, 1, 1 / 1.1, 1 / 1.1, ...new Array(71).fill(1)].map(Math.fround);
    const scaled = z.map((value, i) => value * weights[Math.floor(i / WIDTH)]);
    const meanOf = (values: Float32Array): number => Math.fround(values.reduce((sum, value) => sum + value, 0) / values.length);
    const ratio = Math.fround(meanOf(z) / meanOf(scaled));
    assert.deepEqual(result.hidden[p], scaled.map((value) => value * ratio));
    assert.ok(Math.abs(meanOf(result.hidden[p]) - meanOf(z)) < 1e-6);
  }
  assert.deepEqual(result.pooled, Float32Array.from([ids[1].indexOf(49407), ids[1][1], ids[1][2]]), 'pooled from the text without syntax');
});

test('a1111: escapes only give exactly the unweighted encoding of the unescaped text', async () => {
  const result = await encodeWeightedPrompt('ganyu \\(genshin impact\\)', 'auto', await fakePasses());
  const ids = await modelIds('ganyu (genshin impact)');
  assert.equal(result.syntax, 'a1111');
  assert.deepEqual(result.hidden, [fakeHidden(ids[0]), fakeHidden(ids[1])]);
});

test('a pass list without a pooled output is refused', async () => {
  const [t1] = await tokenizers;
  for (const syntax of ['none', 'compel', 'a1111'] as const) {
    await assert.rejects(encodeWeightedPrompt('a (cat)1.2', syntax, [fakePass(t1, false)]), /No text encoder pass returned a pooled output/);
  }
  await assert.rejects(encodeWeightedPrompt('a cat', 'none', []), /at least one text encoder pass/);
});

test('an encoder returning the wrong number of values is reported', async () => {
  const [t1] = await tokenizers;
  const broken: TextEncoderPass = { tokenizer: t1, encode: async () => ({ hidden: new Float32Array(100), pooled: null }) };
  await assert.rejects(encodeWeightedPrompt('a cat', 'none', [broken]), /pass 0 returned 100 hidden values; expected 77 tokens/);
});

// ---------------------------------------------------------------------------------------------------------------
// The tiny SDXL text encoders, run with onnxruntime directly

async function onnxPasses(): Promise<TextEncoderPass[]> {
  const [t1, t2] = await tokenizers;
  const pass = async (tokenizer: ClipTokenizer, folder: string, pooledName: string | null): Promise<TextEncoderPass> => {
    const session = await ort.InferenceSession.create(fixturePath('tiny-sdxl', folder, 'model.onnx'));
    return {
      tokenizer,
      async encode(inputIds) {
        const feeds = { input_ids: new ort.Tensor('int64', BigInt64Array.from(inputIds, BigInt), [1, inputIds.length]) };
        const outputs = await session.run(feeds, pooledName ? ['hidden_states.4', pooledName] : ['hidden_states.4']);
        return {
          hidden: outputs['hidden_states.4'].data as Float32Array,
          pooled: pooledName ? (outputs[pooledName].data as Float32Array) : null,
        };
      },
    };
  };
  return [await pass(t1, 'text_encoder', null), await pass(t2, 'text_encoder_2', 'text_embeds')];
}

function maxDifference(a: Float32Array, b: Float32Array): number {
  assert.equal(a.length, b.length);
  return a.reduce((max, value, i) => Math.max(max, Math.abs(value - b[i])), 0);
}

test('tiny SDXL encoders: plain prompts, weight 1 and weight 1.5', async () => {
  const passes = await onnxPasses();
  const width = 32;
  const plain = 'a photo of a cat, highly detailed';
  const none = await encodeWeightedPrompt(plain, 'none', passes);
  const auto = await encodeWeightedPrompt(plain, 'auto', passes);
  assert.equal(auto.syntax, 'none');
  assert.deepEqual(auto.hidden, none.hidden, 'bit-identical hidden states');
  assert.deepEqual(auto.pooled, none.pooled, 'bit-identical pooled');
  assert.equal(none.hidden[0].length, 77 * width);

  const unit = await encodeWeightedPrompt('a photo of a (cat)1.0, highly detailed', 'auto', passes);
  assert.equal(unit.syntax, 'compel');
  for (const p of [0, 1]) assert.ok(maxDifference(unit.hidden[p], none.hidden[p]) < 1e-6, `pass ${p} weight 1`);

  const weightedPrompt = 'a photo of a (cat)1.5, highly detailed';
  const weighted = await encodeWeightedPrompt(weightedPrompt, 'auto', passes);
  const empty = await encodeWeightedPrompt('', 'none', passes);
  const catToken = 5; // bos a photo of a cat
  for (const p of [0, 1]) {
    const [z, e, out] = [none.hidden[p], empty.hidden[p], weighted.hidden[p]];
    for (let t = 0; t < 77; t++) {
      for (let c = 0; c < width; c++) {
        const i = t * width + c;
        const expected = t === catToken ? e[i] + (z[i] - e[i]) * 1.5 : z[i];
        assert.ok(Math.abs(out[i] - expected) < 1e-5, `pass ${p} token ${t} channel ${c}: ${out[i]} vs ${expected}`);
      }
    }
    assert.ok(maxDifference(out, z) > 1e-3, 'the cat token did change');
  }
  // compel pools the prompt as typed, syntax included.
  assert.deepEqual(weighted.pooled, (await encodeWeightedPrompt(weightedPrompt, 'none', passes)).pooled);
});

test('tiny SDXL encoders: compel downweight and A1111 emphasis', async () => {
  const passes = await onnxPasses();
  const width = 32;
  const encoded = async (prompt: string): Promise<Float32Array[]> => (await encodeWeightedPrompt(prompt, 'none', passes)).hidden;
  const [empty, full, without] = [await encoded(''), await encoded('a photo of a cat'), await encoded('a photo of a')];

  const down = await encodeWeightedPrompt('a photo of a cat-', 'auto', passes);
  const lerp = Math.tan((0.1 * Math.PI) / 2);
  for (const p of [0, 1]) {
    for (const t of [1, 4, 5, 6, 30]) {
      for (let c = 0; c < width; c++) {
        const i = t * width + c;
        const base = empty[p][i] + (full[p][i] - empty[p][i]) * (t === 5 ? 0.9 : 1);
        const expected = (base + without[p][i] * lerp) / (1 + lerp);
        assert.ok(Math.abs(down.hidden[p][i] - expected) < 1e-5, `pass ${p} token ${t}`);
      }
    }
  }

  const emphasis = await encodeWeightedPrompt('a photo of a (cat:1.5)', 'auto', passes);
  assert.equal(emphasis.syntax, 'a1111');
  const mean = (values: Float32Array): number => values.reduce((sum, value) => sum + value, 0) / values.length;
  for (const p of [0, 1]) {
    assert.ok(Math.abs(mean(emphasis.hidden[p]) - mean(full[p])) < 1e-6, `pass ${p} keeps its mean`);
    const ratio = emphasis.hidden[p][width] / full[p][width];
    for (const t of [0, 1, 5, 6, 50]) {
      for (let c = 0; c < width; c++) {
        const i = t * width + c;
        const expected = full[p][i] * ratio * (t === 5 ? 1.5 : 1);
        assert.ok(Math.abs(emphasis.hidden[p][i] - expected) < 1e-5, `pass ${p} token ${t}`);
      }
    }
  }
  assert.deepEqual(emphasis.pooled, (await encodeWeightedPrompt('a photo of a cat', 'none', passes)).pooled);
});
