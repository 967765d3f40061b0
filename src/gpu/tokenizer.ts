import { readFile } from 'node:fs/promises';
import path from 'node:path';

// Mirrors the fast (Rust `tokenizers`) CLIP pipeline that transformers builds from a classic tokenizer folder:
// the text encoders only understand exactly those ids, and a near-miss silently degrades images.

const END_OF_WORD = '</w>';

// `\p{White_Space}`, not `\s`: the library's regex engine uses the Unicode property, while JS `\s` also
// matches U+FEFF and misses U+0085.
const WHITESPACE_RUN = /\p{White_Space}+/gu;
const PIECE = /'s|'t|'re|'ve|'m|'ll|'d|\p{L}+|\p{N}|[^\p{White_Space}\p{L}\p{N}]+/gu;

// Bounds memory in a long-running bot fed arbitrary text; prompts repeat, so an occasional reset is cheap.
const MAX_CACHED_PIECES = 50_000;

// transformers' CLIPTokenizer defaults, for folders that do not name a special token.
const SPECIAL_TOKEN_DEFAULTS = {
  bos_token: '<|startoftext|>',
  eos_token: '<|endoftext|>',
  unk_token: '<|endoftext|>',
  pad_token: '<|endoftext|>',
} as const;
type SpecialTokenName = keyof typeof SPECIAL_TOKEN_DEFAULTS;
const SPECIAL_TOKEN_NAMES = Object.keys(SPECIAL_TOKEN_DEFAULTS) as SpecialTokenName[];

// GPT-2's reversible byte -> printable character table, so BPE symbols never hold spaces or control bytes.
const BYTE_TO_CHAR: readonly string[] = (() => {
  const table = new Array<string>(256);
  let next = 256;
  for (let byte = 0; byte < 256; byte++) {
    const printable =
      (byte >= 0x21 && byte <= 0x7e) || (byte >= 0xa1 && byte <= 0xac) || (byte >= 0xae && byte <= 0xff);
    table[byte] = String.fromCodePoint(printable ? byte : next++);
  }
  return table;
})();
const CHAR_TO_BYTE = new Map(BYTE_TO_CHAR.map((char, byte) => [char, byte]));

interface SpecialTokenSpec {
  content: string;
  // Only the object form says whether the token is matched after normalization; a bare string does not.
  normalized: boolean | undefined;
}

export class ClipTokenizer {
  readonly maxLength: number;
  readonly padId: number;

  private readonly vocab: ReadonlyMap<string, number>;
  private readonly idToToken: ReadonlyMap<number, string>;
  private readonly mergeRanks: ReadonlyMap<string, number>;
  private readonly special: Readonly<Record<SpecialTokenName, number>>;
  private readonly addedTokenIds: ReadonlyMap<string, number>;
  // Added tokens matched in the raw text, then those matched in the normalized text, as the library does.
  private readonly rawSplitter: RegExp | undefined;
  private readonly normalizedSplitter: RegExp | undefined;
  private readonly bpeCache = new Map<string, number[]>();

  private constructor(
    vocab: Map<string, number>,
    mergeRanks: Map<string, number>,
    specs: ReadonlyMap<SpecialTokenName, SpecialTokenSpec>,
    special: Record<SpecialTokenName, number>,
    maxLength: number,
  ) {
    this.vocab = vocab;
    this.idToToken = new Map([...vocab].map(([token, id]) => [id, token]));
    this.mergeRanks = mergeRanks;
    this.special = special;
    this.padId = special.pad_token;
    this.maxLength = maxLength;

    // CLIP's eos, unk and pad share <|endoftext|>: an explicit `normalized` flag on any declaration wins, and a
    // special token declared only as a bare string is matched verbatim (the tokenizers library's default).
    const normalizedByContent = new Map<string, boolean>();
    for (const { content, normalized } of specs.values()) {
      if (normalized !== undefined && !normalizedByContent.has(content)) normalizedByContent.set(content, normalized);
    }
    const addedTokenIds = new Map<string, number>();
    for (const [name, { content }] of specs) {
      if (!normalizedByContent.has(content)) normalizedByContent.set(content, false);
      addedTokenIds.set(content, special[name]);
    }
    this.addedTokenIds = addedTokenIds;
    const contents = [...normalizedByContent.keys()];
    this.rawSplitter = buildSplitter(contents.filter((c) => !normalizedByContent.get(c)));
    this.normalizedSplitter = buildSplitter(contents.filter((c) => normalizedByContent.get(c)));
  }

  static async fromDirectory(dir: string): Promise<ClipTokenizer> {
    const vocabPath = path.join(dir, 'vocab.json');
    const mergesPath = path.join(dir, 'merges.txt');
    const configPath = path.join(dir, 'tokenizer_config.json');
    const specialMapPath = path.join(dir, 'special_tokens_map.json');
    const [vocabText, mergesText, configText, specialMapText] = await Promise.all(
      [vocabPath, mergesPath, configPath, specialMapPath].map(readIfPresent),
    );

    const vocab = parseVocab(parseJsonObject(required(vocabText, vocabPath), vocabPath), vocabPath);
    const mergeRanks = parseMerges(required(mergesText, mergesPath), mergesPath, vocab);
    const config = parseJsonObject(required(configText, configPath), configPath);
    // Newer transformers versions stop writing special_tokens_map.json; tokenizer_config.json then has the tokens.
    const specialMap = specialMapText === undefined ? {} : parseJsonObject(specialMapText, specialMapPath);

    const maxLength = config.model_max_length;
    if (typeof maxLength !== 'number' || !Number.isSafeInteger(maxLength) || maxLength < 2) {
      throw new Error(
        `${configPath}: model_max_length must be an integer >= 2 (room for bos and eos), got ${JSON.stringify(maxLength)}`,
      );
    }

    // special_tokens_map.json overrides tokenizer_config.json, as in transformers' loader.
    const specs = new Map<SpecialTokenName, SpecialTokenSpec>();
    const special = {} as Record<SpecialTokenName, number>;
    for (const name of SPECIAL_TOKEN_NAMES) {
      const spec =
        parseSpecialToken(specialMap[name], name, specialMapPath) ??
        parseSpecialToken(config[name], name, configPath) ??
        { content: SPECIAL_TOKEN_DEFAULTS[name], normalized: undefined };
      const id = vocab.get(spec.content);
      if (id === undefined) throw new Error(`${vocabPath} has no entry for ${name} ${JSON.stringify(spec.content)}`);
      specs.set(name, spec);
      special[name] = id;
    }
    return new ClipTokenizer(vocab, mergeRanks, specs, special, maxLength);
  }

  encode(text: string): number[] {
    const ids = [this.special.bos_token];
    const raw = splitOnAddedTokens(text, this.rawSplitter);
    for (let i = 0; i < raw.length; i++) {
      if (i % 2 === 1) {
        ids.push(this.addedTokenIds.get(raw[i])!);
        continue;
      }
      const parts = splitOnAddedTokens(normalize(raw[i]), this.normalizedSplitter);
      for (let j = 0; j < parts.length; j++) {
        if (j % 2 === 1) ids.push(this.addedTokenIds.get(parts[j])!);
        else for (const [piece] of parts[j].matchAll(PIECE)) ids.push(...this.bpe(piece));
      }
    }
    ids.push(this.special.eos_token);
    return ids;
  }

  encodeForModel(text: string): { inputIds: number[]; droppedIds: number[] } {
    const body = this.encode(text).slice(1, -1);
    const room = this.maxLength - 2;
    const inputIds = [this.special.bos_token, ...body.slice(0, room), this.special.eos_token];
    while (inputIds.length < this.maxLength) inputIds.push(this.padId);
    return { inputIds, droppedIds: body.slice(room) };
  }

  decode(ids: readonly number[]): string {
    const bytes: number[] = [];
    for (const id of ids) {
      const token = this.idToToken.get(id);
      if (token === undefined) throw new RangeError(`Token id ${id} is not in the vocabulary`);
      const endsWord = token.endsWith(END_OF_WORD);
      for (const char of endsWord ? token.slice(0, -END_OF_WORD.length) : token) {
        const byte = CHAR_TO_BYTE.get(char);
        if (byte === undefined) bytes.push(...Buffer.from(char, 'utf8'));
        else bytes.push(byte);
      }
      if (endsWord) bytes.push(0x20);
    }
    // Invalid UTF-8 (a multi-byte character cut by truncation) becomes U+FFFD, like errors="replace".
    return Buffer.from(bytes).toString('utf8').trim();
  }

  private bpe(piece: string): number[] {
    const cached = this.bpeCache.get(piece);
    if (cached) return cached;

    const symbols = Array.from(Buffer.from(piece, 'utf8'), (byte) => BYTE_TO_CHAR[byte]);
    symbols[symbols.length - 1] += END_OF_WORD;
    // Merging the leftmost lowest-ranked pair one at a time reproduces the library's priority-queue order: a
    // merge's output only appears in later-ranked merges, so no newly formed pair can jump the queue.
    // Pair ranks are kept alongside and only the two pairs touching a merge are re-looked-up, which keeps a
    // pasted wall of letters (one huge piece) from stalling the event loop.
    const rankAt = (i: number): number => this.mergeRanks.get(`${symbols[i]} ${symbols[i + 1]}`) ?? Infinity;
    const pairRanks = symbols.slice(1).map((_, i) => rankAt(i));
    for (;;) {
      let bestAt = -1;
      let bestRank = Infinity;
      for (let i = 0; i < pairRanks.length; i++) {
        if (pairRanks[i] < bestRank) {
          bestRank = pairRanks[i];
          bestAt = i;
        }
      }
      if (bestAt < 0) break;
      symbols.splice(bestAt, 2, symbols[bestAt] + symbols[bestAt + 1]);
      pairRanks.splice(bestAt, 1);
      if (bestAt > 0) pairRanks[bestAt - 1] = rankAt(bestAt - 1);
      if (bestAt < pairRanks.length) pairRanks[bestAt] = rankAt(bestAt);
    }
    const ids = symbols.map((symbol) => this.vocab.get(symbol) ?? this.special.unk_token);

    if (this.bpeCache.size >= MAX_CACHED_PIECES) this.bpeCache.clear();
    this.bpeCache.set(piece, ids);
    return ids;
  }
}

function normalize(text: string): string {
  const spaced = text.normalize('NFC').replace(WHITESPACE_RUN, ' ');
  // Per code point, like Rust's char::to_lowercase; whole-string toLowerCase would apply the final-sigma rule.
  let lowered = '';
  for (const char of spaced) lowered += char.toLowerCase();
  return lowered;
}

function buildSplitter(contents: string[]): RegExp | undefined {
  const nonEmpty = contents.filter((c) => c.length > 0);
  if (nonEmpty.length === 0) return undefined;
  // Longest first, so that regex alternation (leftmost-first) matches leftmost-longest like the library.
  const alternatives = nonEmpty
    .sort((a, b) => b.length - a.length)
    .map((c) => c.replace(/[\\^$.*+?()[\]{}|/]/g, '\\$&'));
  return new RegExp(`(${alternatives.join('|')})`, 'u');
}

/** Even indices of the result are plain text, odd indices are added-token contents. */
function splitOnAddedTokens(text: string, splitter: RegExp | undefined): string[] {
  return splitter ? text.split(splitter) : [text];
}

async function readIfPresent(file: string): Promise<string | undefined> {
  try {
    return await readFile(file, 'utf8');
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return undefined;
    throw new Error(`Cannot read tokenizer file ${file}: ${(err as Error).message}`);
  }
}

function required(text: string | undefined, file: string): string {
  if (text === undefined) throw new Error(`Tokenizer file is missing: ${file}`);
  return text;
}

function parseJsonObject(text: string, file: string): Record<string, unknown> {
  let value: unknown;
  try {
    value = JSON.parse(text);
  } catch (err) {
    throw new Error(`Invalid JSON in tokenizer file ${file}: ${(err as Error).message}`);
  }
  if (typeof value !== 'object' || value === null || Array.isArray(value)) {
    throw new Error(`Tokenizer file ${file} must hold a JSON object, got ${JSON.stringify(value).slice(0, 80)}`);
  }
  return value as Record<string, unknown>;
}

function parseVocab(json: Record<string, unknown>, file: string): Map<string, number> {
  const vocab = new Map<string, number>();
  for (const [token, id] of Object.entries(json)) {
    if (typeof id !== 'number' || !Number.isSafeInteger(id) || id < 0) {
      throw new Error(`${file}: id of token ${JSON.stringify(token)} must be a non-negative integer, got ${JSON.stringify(id)}`);
    }
    vocab.set(token, id);
  }
  return vocab;
}

function parseMerges(text: string, file: string, vocab: ReadonlyMap<string, number>): Map<string, number> {
  const ranks = new Map<string, number>();
  const lines = text.split(/\r?\n/);
  for (let i = 0; i < lines.length; i++) {
    const line = lines[i];
    if (line === '' || (i === 0 && line.startsWith('#version'))) continue;
    const [left, right, ...rest] = line.split(' ');
    if (!left || !right || rest.length > 0) {
      throw new Error(`${file}:${i + 1}: expected two space-separated symbols, got ${JSON.stringify(line)}`);
    }
    for (const symbol of [left, right, left + right]) {
      if (!vocab.has(symbol)) throw new Error(`${file}:${i + 1}: symbol ${JSON.stringify(symbol)} is not in vocab.json`);
    }
    // Line numbers keep the file's order; a repeated pair takes its later rank, as in the library's merge map.
    ranks.set(line, i);
  }
  return ranks;
}

function parseSpecialToken(value: unknown, name: SpecialTokenName, file: string): SpecialTokenSpec | undefined {
  if (value === undefined || value === null) return undefined;
  if (typeof value === 'string') return { content: value, normalized: undefined };
  if (typeof value === 'object' && !Array.isArray(value) && typeof (value as { content?: unknown }).content === 'string') {
    const token = value as Record<string, unknown>;
    for (const flag of ['lstrip', 'rstrip', 'single_word']) {
      if (token[flag] === true) throw new Error(`${file}: ${name} sets ${flag}, which this tokenizer does not support`);
    }
    return {
      content: token.content as string,
      normalized: typeof token.normalized === 'boolean' ? token.normalized : undefined,
    };
  }
  throw new Error(`${file}: ${name} must be a string or an object with a string "content", got ${JSON.stringify(value)}`);
}
