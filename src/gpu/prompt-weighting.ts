// Prompt weighting as the two syntaxes users already know it: compel's (what diffusers' docs recommended for SDXL)
// and AUTOMATIC1111's. The two look alike but mean different things: `(cat)` is weight 1 in compel and 1.1 in
// A1111, `cat+` is 1.1 in compel and literal text in A1111. Both parsers follow their originals
// (compel's `prompt_parser.py` grammar, A1111's `parse_prompt_attention`) including how they treat malformed
// text, except that where the original would crash or hang (unparseable weight, runaway nesting) the text stays
// literal instead: user prompts must never make generation fail.

import type { WeightingSyntax } from '../common/generation-limits.js';

export type { WeightingSyntax };
export interface PromptFragment {
  text: string;
  weight: number;
}
export interface ParsedPrompt {
  syntax: 'compel' | 'a1111' | 'none';
  fragments: PromptFragment[];
}

/**
 * Splits a prompt into weighted fragments.
 *
 * `auto` picks the syntax from what the prompt contains, in this order:
 * 1. A1111 when it has `(…:number)` or a closed `[…]`: neither means anything to compel.
 * 2. compel when compel's grammar finds a weight operator: `word+`, `word--`, `(…)+`, `(…)-`, `(…)1.3`, `"…"+`.
 * 3. A1111 when it has closed plain parentheses `(a cat)` or escaped brackets `\(`: A1111 users write `(x)` and
 *    `((x))` for emphasis, and compel users have no reason to (a bare group is weight 1 there), so emphasis is the
 *    less surprising reading. An unclosed `(` (a smiley, a list item `1)`) does not count.
 * 4. `none` otherwise: the prompt is one fragment of weight 1, the text unchanged, so it encodes exactly as
 *    diffusers would encode it.
 */
export function parseWeightedPrompt(prompt: string, syntax: WeightingSyntax): ParsedPrompt {
  switch (syntax) {
    case 'none':
      return literal(prompt);
    case 'compel':
      return checked({ syntax, fragments: parseCompel(prompt).fragments });
    case 'a1111':
      return checked({ syntax, fragments: parseA1111(prompt).fragments });
    case 'auto': {
      const a1111 = parseA1111(prompt);
      if (a1111.explicitWeight || a1111.squareBrackets) return checked({ syntax: 'a1111', fragments: a1111.fragments });
      const compel = parseCompel(prompt);
      if (compel.usesOperator) return checked({ syntax: 'compel', fragments: compel.fragments });
      if (a1111.roundBrackets || a1111.escapes) return checked({ syntax: 'a1111', fragments: a1111.fragments });
      return literal(prompt);
    }
    default:
      throw new Error(
        `Unknown prompt weighting syntax ${JSON.stringify(syntax)}; expected "auto", "compel", "a1111" or "none"`,
      );
  }
}

function literal(prompt: string): ParsedPrompt {
  return { syntax: 'none', fragments: [{ text: prompt, weight: 1 }] };
}

// The encoders weight in float32, where a weight such as 1e39 is already Infinity.
function checked(parsed: ParsedPrompt): ParsedPrompt {
  for (const { text, weight } of parsed.fragments) {
    if (!Number.isFinite(Math.fround(weight))) {
      throw new RangeError(
        `Prompt fragment ${JSON.stringify(text)} has weight ${weight}, which is not a finite float32 number`,
      );
    }
  }
  return parsed;
}

// ---------------------------------------------------------------------------------------------------------------
// compel

const PLUS_BASE = 1.1;
const MINUS_BASE = 0.9;
// pyparsing skips these between elements, and `White()` (which may not sit between a term and its `+`) is these.
const PARSER_WHITESPACE = ' \t\r\n';
// Python's string.whitespace: what ends a bare word.
const WORD_END = ' \t\n\r\v\f';
const SYNTAX_CHARS = '()",.+-=';
// pyparsing would recurse until Python's recursion limit; a cap keeps absurd nesting from overflowing the stack.
const MAX_NESTING = 64;
const DECIMAL = /\d+\.\d*|\.\d+/y;
const INTEGER = /\d+/y;

/** A fragment's (already unescaped) text, or a group of them with a weight. */
type CompelItem = string | { weight: number; children: CompelItem[] };
interface CompelMatch {
  items: CompelItem[];
  end: number;
}

function parseCompel(prompt: string): { fragments: PromptFragment[]; usesOperator: boolean } {
  // compel enforces a space after every comma before parsing; Python's re.sub does not rescan the character it
  // consumed, so ",,x" becomes ", ,x" and not ", , x".
  const text = prompt.replace(/,(\S)/gu, ', $1');
  if (text.trim() === '') return { fragments: [{ text: '', weight: 1 }], usesOperator: false };

  const flat: PromptFragment[] = [];
  let usesOperator = false;
  const flatten = (items: readonly CompelItem[], scale: number): void => {
    for (const item of items) {
      if (typeof item === 'string') {
        flat.push({ text: item, weight: scale });
      } else {
        usesOperator = true;
        flatten(item.children, scale * item.weight);
      }
    }
  };
  flatten(new CompelParser(text).prompt(), 1);

  // Neighbours of equal weight become one fragment joined by a space, as compel's fuse_fragments does.
  const fragments: PromptFragment[] = [];
  for (const fragment of flat) {
    const last = fragments.at(-1);
    if (last && last.weight === fragment.weight) last.text += ` ${fragment.text}`;
    else fragments.push({ ...fragment });
  }
  // compel itself fails on a prompt that yields no fragment (such as "()"); the empty prompt is what it means.
  if (fragments.length === 0) fragments.push({ text: '', weight: 1 });
  return { fragments, usesOperator };
}

/**
 * A recursive-descent rendering of the parts of compel's pyparsing grammar that carry weights. At each position
 * the alternatives are tried in compel's MatchFirst order; a group that does not close is not a group, and at the
 * top level the text up to the next whitespace is then taken literally. `.swap()`, `.blend()`, `.and()`,
 * `.attend()` and `withLora()` are not supported and stay literal text.
 */
class CompelParser {
  // Group results by start position: without them a failed `(` is re-parsed by every alternative that starts with
  // a group, which is exponential in the nesting depth.
  private readonly parens = new Map<number, CompelMatch | null>();
  private readonly quotes = new Map<number, CompelMatch | null>();

  constructor(private readonly src: string) {}

  prompt(): CompelItem[] {
    const items: CompelItem[] = [];
    let pos = 0;
    for (;;) {
      // pyparsing would reject a vertical tab or form feed between words; treat them as the whitespace they are.
      pos = this.skip(pos, WORD_END);
      if (pos >= this.src.length) return items;
      const match = this.attention(pos, 0) ?? this.quoted(pos, 0) ?? this.paren(pos, 0);
      if (match) {
        items.push(...match.items);
        pos = match.end;
        continue;
      }
      let end = pos;
      while (end < this.src.length && !WORD_END.includes(this.src[end])) end++;
      items.push(unescapeCompel(this.src.slice(pos, end)));
      pos = end;
    }
  }

  /** The whole source as the inside of a group, or null when something in it is not valid there. */
  wholeAsGroupContent(depth: number): CompelItem[] | null {
    const { items, end } = this.sequence(0, depth);
    return this.skip(end) >= this.src.length ? items : null;
  }

  private skip(pos: number, chars = PARSER_WHITESPACE): number {
    while (pos < this.src.length && chars.includes(this.src[pos])) pos++;
    return pos;
  }

  /** What may appear inside `(…)` or `"…"`: weighted terms, groups, words, commas and periods. */
  private sequence(pos: number, depth: number): CompelMatch {
    const items: CompelItem[] = [];
    for (;;) {
      const at = this.skip(pos);
      if (at >= this.src.length) break;
      const match = this.attention(at, depth) ?? this.paren(at, depth) ?? this.quoted(at, depth);
      if (match) {
        items.push(...match.items);
        pos = match.end;
        continue;
      }
      const word = this.word(at);
      if (word) {
        items.push(word.text);
        pos = word.end;
        continue;
      }
      const char = this.src[at];
      if (char !== ',' && char !== '.') break;
      items.push(char);
      pos = at + 1;
    }
    return { items, end: pos };
  }

  /** `(…)` or `"…"` followed by `+…`, `-…` or a number, or a bare word followed by `+…` or `-…`; no space between. */
  private attention(pos: number, depth: number): CompelMatch | null {
    const group = this.src[pos] === '"' ? this.quoted(pos, depth) : this.paren(pos, depth);
    if (group) {
      const op = this.weightOperator(group.end, true);
      return op ? { items: [{ weight: op.weight, children: group.items }], end: op.end } : null;
    }
    const word = this.word(pos);
    if (!word) return null;
    const op = this.weightOperator(word.end, false);
    return op ? { items: [{ weight: op.weight, children: [word.text] }], end: op.end } : null;
  }

  private weightOperator(pos: number, allowNumber: boolean): { weight: number; end: number } | null {
    const char = this.src[pos];
    if (char === '+' || char === '-') {
      let end = pos;
      while (this.src[end] === char) end++;
      return { weight: Math.pow(char === '+' ? PLUS_BASE : MINUS_BASE, end - pos), end };
    }
    if (!allowNumber) return null;
    // pyparsing_common.real (which needs a decimal point) first, then a plain integer.
    for (const pattern of [DECIMAL, INTEGER]) {
      pattern.lastIndex = pos;
      const match = pattern.exec(this.src);
      if (match) return { weight: Number(match[0]), end: pos + match[0].length };
    }
    return null;
  }

  private paren(pos: number, depth: number): CompelMatch | null {
    if (this.src[pos] !== '(') return null;
    return memoized(this.parens, pos, () => {
      if (depth >= MAX_NESTING) return null;
      const inner = this.sequence(pos + 1, depth + 1);
      const close = this.skip(inner.end);
      return this.src[close] === ')' ? { items: inner.items, end: close + 1 } : null;
    });
  }

  private quoted(pos: number, depth: number): CompelMatch | null {
    if (this.src[pos] !== '"') return null;
    return memoized(this.quotes, pos, () => {
      if (depth >= MAX_NESTING) return null;
      // pyparsing's QuotedString: `\"` stays inside, and the string may not span lines.
      let end = pos + 1;
      for (;;) {
        if (end >= this.src.length || this.src[end] === '\n' || this.src[end] === '\r') return null;
        if (this.src.startsWith('\\"', end)) end += 2;
        else if (this.src[end] === '"') break;
        else end++;
      }
      const content = this.src.slice(pos + 1, end);
      if (content.trim() === '') return { items: [''], end: end + 1 };
      const items = new CompelParser(content).wholeAsGroupContent(depth + 1);
      return items ? { items, end: end + 1 } : null;
    });
  }

  /** compel's non_syntax_word: no whitespace or syntax characters, except escaped ones and a `+`/`-` inside a word. */
  private word(pos: number): { text: string; end: number } | null {
    let end = pos;
    while (end < this.src.length) {
      const char = this.src[end];
      const next = this.src[end + 1];
      if (char === '\\' && next !== undefined && SYNTAX_CHARS.includes(next)) {
        end += 2;
      } else if (char === '+' || char === '-') {
        if (next === undefined || PARSER_WHITESPACE.includes(next) || SYNTAX_CHARS.includes(next)) break;
        end++;
      } else if (WORD_END.includes(char) || SYNTAX_CHARS.includes(char)) {
        break;
      } else {
        end++;
      }
    }
    return end > pos ? { text: unescapeCompel(this.src.slice(pos, end)), end } : null;
  }
}

function memoized(memo: Map<number, CompelMatch | null>, pos: number, parse: () => CompelMatch | null): CompelMatch | null {
  const known = memo.get(pos);
  if (known !== undefined) return known;
  const result = parse();
  memo.set(pos, result);
  return result;
}

// compel's Fragment unescapes only these three; `\+`, `\,` and the like keep their backslash.
function unescapeCompel(text: string): string {
  return text.replaceAll('\\(', '(').replaceAll('\\)', ')').replaceAll('\\"', '"');
}

// ---------------------------------------------------------------------------------------------------------------
// AUTOMATIC1111

const ROUND_MULTIPLIER = 1.1;
const SQUARE_MULTIPLIER = 1 / 1.1;
// A1111's re_attention, alternative for alternative; together they cover every character.
const A1111_TOKEN = /\\\(|\\\)|\\\[|\\\]|\\\\|\\|\(|\[|:\s*([+-]?[.\d]+)\s*\)|\)|\]|[^\\()\[\]:]+|:/gu;
const PYTHON_FLOAT = /^[+-]?(?:\d+\.?\d*|\.\d+)$/;
// A1111's re_break, with the word boundary spelled out so that it is Unicode-aware like Python's \b.
const BREAK_KEYWORD = /\s*(?<![\p{L}\p{N}_])BREAK(?![\p{L}\p{N}_])\s*/gu;

interface A1111Parse {
  fragments: PromptFragment[];
  explicitWeight: boolean;
  squareBrackets: boolean;
  roundBrackets: boolean;
  escapes: boolean;
}

function parseA1111(prompt: string): A1111Parse {
  const result: A1111Parse = {
    fragments: [],
    explicitWeight: false,
    squareBrackets: false,
    roundBrackets: false,
    escapes: false,
  };
  const res: PromptFragment[] = [];
  const round: number[] = [];
  const square: number[] = [];
  const multiplyFrom = (start: number, multiplier: number): void => {
    for (let i = start; i < res.length; i++) res[i].weight *= multiplier;
  };
  // A1111 starts a new 75-token chunk at BREAK. Only one 77-token window reaches the model here, so the keyword
  // just separates the words around it instead of being fed to the encoder as the word "break".
  const pushText = (text: string): void => {
    res.push({ text: text.replace(BREAK_KEYWORD, ' '), weight: 1 });
  };

  for (const match of prompt.matchAll(A1111_TOKEN)) {
    const token = match[0];
    const weight = match[1];
    if (token.startsWith('\\')) {
      res.push({ text: token.slice(1), weight: 1 });
      if (token.length === 2 && '()[]'.includes(token[1])) result.escapes = true;
    } else if (token === '(') {
      round.push(res.length);
    } else if (token === '[') {
      square.push(res.length);
    } else if (weight !== undefined && round.length > 0) {
      if (PYTHON_FLOAT.test(weight)) {
        multiplyFrom(round.pop()!, Number(weight));
        result.explicitWeight = true;
      } else {
        // Python's float() raises on "1.2.3" and A1111 fails the whole generation; keep the text and close the
        // bracket as a plain `)`.
        pushText(token.slice(0, -1));
        multiplyFrom(round.pop()!, ROUND_MULTIPLIER);
        result.roundBrackets = true;
      }
    } else if (token === ')' && round.length > 0) {
      multiplyFrom(round.pop()!, ROUND_MULTIPLIER);
      result.roundBrackets = true;
    } else if (token === ']' && square.length > 0) {
      multiplyFrom(square.pop()!, SQUARE_MULTIPLIER);
      result.squareBrackets = true;
    } else {
      pushText(token);
    }
  }
  // Unclosed brackets weight everything after them, outermost first, as A1111 does.
  for (const start of round) multiplyFrom(start, ROUND_MULTIPLIER);
  for (const start of square) multiplyFrom(start, SQUARE_MULTIPLIER);
  if (res.length === 0) res.push({ text: '', weight: 1 });

  for (const fragment of res) {
    const last = result.fragments.at(-1);
    if (last && last.weight === fragment.weight) last.text += fragment.text;
    else result.fragments.push({ ...fragment });
  }
  return result;
}
