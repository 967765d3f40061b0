// A JSON Schema validator for the keywords Discord's OpenAPI document uses. Each schema object is compiled once into a
// closure (cached by identity), so validating a request only walks the value. Problems name the JSON path and the rule.

export type JsonType = 'null' | 'boolean' | 'object' | 'array' | 'number' | 'integer' | 'string';
export type Schema = boolean | { readonly [keyword: string]: unknown };

export interface SchemaProblem {
  readonly at: string;
  readonly rule: string;
  /** The value broke `type`: the types this schema accepts. Unions merge these into one readable problem. */
  readonly expectedTypes?: readonly JsonType[];
  /** The value broke `const`/`enum`: the values this schema accepts. */
  readonly allowed?: readonly unknown[];
  /** The value that broke `allowed`, so merged lists can be reported against it. */
  readonly got?: unknown;
}

export type SchemaCheck = (value: unknown, at: string, problems: SchemaProblem[]) => void;

interface SchemaCompilerOptions {
  /**
   * Properties whose integer schema also takes a string of decimal digits, converted to a number before validating.
   * The caller says why for each; nothing else is coerced.
   */
  readonly digitStringIntegerProperties?: ReadonlySet<string>;
}

const ALL_TYPES: readonly JsonType[] = ['null', 'boolean', 'object', 'array', 'number', 'integer', 'string'];
const DIGITS = /^[0-9]+$/;

// Keywords that only annotate. Anything neither here nor implemented makes compile() throw, so a newer spec that starts
// using, say, `not` cannot silently validate less.
const ANNOTATIONS = new Set([
  '$schema', '$id', '$comment', 'title', 'description', 'default', 'examples', 'deprecated', 'readOnly', 'writeOnly',
  'contentEncoding', 'contentMediaType', 'discriminator', 'externalDocs', 'example',
]);
const VALIDATIONS = new Set([
  '$ref', 'type', 'const', 'enum', 'format', 'pattern', 'minLength', 'maxLength', 'minimum', 'maximum', 'items',
  'minItems', 'maxItems', 'uniqueItems', 'properties', 'required', 'additionalProperties', 'minProperties',
  'maxProperties', 'allOf', 'anyOf', 'oneOf',
]);

interface FormatCheck<T> {
  readonly test: (value: T) => boolean;
  readonly rule: string;
}

const INT32_MIN = -(2 ** 31);
const INT32_MAX = 2 ** 31 - 1;
const SNOWFLAKE_LIMIT = 2n ** 64n;
const DATE_TIME = /^\d{4}-\d{2}-\d{2}[Tt]\d{2}:\d{2}:\d{2}(\.\d+)?([Zz]|[+-]\d{2}:\d{2})$/;

// Formats not listed are ignored, as JSON Schema allows. int64 and double add nothing a JSON number does not already
// meet (the spec bounds each int64 with minimum/maximum), and `nonce` only restates maxLength.
const NUMBER_FORMATS: Readonly<Record<string, FormatCheck<number>>> = {
  int32: {
    test: (value) => Number.isInteger(value) && value >= INT32_MIN && value <= INT32_MAX,
    rule: 'must be a 32-bit integer',
  },
};
const STRING_FORMATS: Readonly<Record<string, FormatCheck<string>>> = {
  snowflake: {
    test: (value) => DIGITS.test(value) && BigInt(value) < SNOWFLAKE_LIMIT,
    rule: 'must be a snowflake (decimal digits, below 2^64)',
  },
  'date-time': {
    test: (value) => DATE_TIME.test(value) && !Number.isNaN(Date.parse(value)),
    rule: 'must be an RFC 3339 date-time',
  },
  uri: { test: (value) => URL.canParse(value), rule: 'must be an absolute URI' },
};

export function childPath(at: string, key: string | number): string {
  if (typeof key === 'number') return `${at}[${key}]`;
  return /^[A-Za-z_$][\w$]*$/.test(key) ? `${at}.${key}` : `${at}[${JSON.stringify(key)}]`;
}

export function showValue(value: unknown): string {
  if (value === undefined) return 'undefined';
  if (typeof value === 'number') return String(value);
  const text = JSON.stringify(value);
  return text.length > 60 ? `${text.slice(0, 57)}…` : text;
}

const TYPE_PHRASES: Record<JsonType, string> = {
  null: 'null', boolean: 'a boolean', object: 'an object', array: 'an array', number: 'a number',
  integer: 'an integer', string: 'a string',
};

function joinAlternatives(parts: readonly string[]): string {
  return parts.length <= 1 ? (parts[0] ?? 'nothing') : `${parts.slice(0, -1).join(', ')} or ${parts.at(-1)}`;
}

function describeAlternatives(types: readonly JsonType[], allowed: readonly unknown[]): string {
  const parts = types.map((type) => TYPE_PHRASES[type]);
  if (allowed.length === 1) parts.push(showValue(allowed[0]));
  if (allowed.length > 1) parts.push(`one of ${allowed.map(showValue).join(', ')}`);
  return joinAlternatives(parts);
}

function typeProblem(at: string, types: readonly JsonType[], value: unknown): SchemaProblem {
  return { at, rule: `must be ${describeAlternatives(types, [])} (got ${showValue(value)})`, expectedTypes: types };
}

function valueProblem(at: string, allowed: readonly unknown[], value: unknown): SchemaProblem {
  const sorted = allowed.every((entry) => typeof entry === 'number')
    ? [...(allowed as number[])].sort((a, b) => a - b)
    : allowed;
  return { at, rule: `must be ${describeAlternatives([], sorted)} (got ${showValue(value)})`, allowed: sorted, got: value };
}

function canonicalJson(value: unknown): string {
  if (value === null || typeof value !== 'object') return JSON.stringify(value);
  if (Array.isArray(value)) return `[${value.map(canonicalJson).join(',')}]`;
  const record = value as Record<string, unknown>;
  return `{${Object.keys(record).sort().map((key) => `${JSON.stringify(key)}:${canonicalJson(record[key])}`).join(',')}}`;
}

function sameJson(a: unknown, b: unknown): boolean {
  if (a === b) return true;
  return typeof a === 'object' && typeof b === 'object' && a !== null && b !== null && canonicalJson(a) === canonicalJson(b);
}

/** The number a digit string stands for, when a JS number holds it exactly; otherwise the string, to fail as one. */
function digitsToNumber(text: string): number | string {
  if (!DIGITS.test(text)) return text;
  const number = Number(text);
  // Past 1.8e308 the number is Infinity, which BigInt() refuses with an exception.
  return Number.isFinite(number) && BigInt(number) === BigInt(text) ? number : text;
}

/** JSON Schema counts string length in Unicode code points, as Discord does for its character limits. */
function codePointLength(text: string): number {
  let length = text.length;
  for (let i = 0; i < text.length - 1; i++) {
    const unit = text.charCodeAt(i);
    if (unit >= 0xd800 && unit <= 0xdbff) {
      const next = text.charCodeAt(i + 1);
      if (next >= 0xdc00 && next <= 0xdfff) {
        length--;
        i++;
      }
    }
  }
  return length;
}

function isPlainObject(value: unknown): value is Record<string, unknown> {
  return typeof value === 'object' && value !== null && !Array.isArray(value);
}

function matchesType(value: unknown, type: JsonType): boolean {
  switch (type) {
    case 'null': return value === null;
    case 'boolean': return typeof value === 'boolean';
    case 'string': return typeof value === 'string';
    case 'number': return typeof value === 'number' && Number.isFinite(value);
    case 'integer': return typeof value === 'number' && Number.isInteger(value);
    case 'array': return Array.isArray(value);
    case 'object': return isPlainObject(value);
  }
}

/**
 * Within one schema a value may break several value lists for the same spot (Discord pairs `enum: [4, 5]` with an
 * `allOf` of the full enum); what it may be is their intersection, reported once.
 */
export function mergeValueProblems(problems: readonly SchemaProblem[]): SchemaProblem[] {
  const merged: SchemaProblem[] = [];
  const valueProblemAt = new Map<string, number>();
  for (const problem of problems) {
    const index = problem.allowed ? valueProblemAt.get(problem.at) : undefined;
    if (problem.allowed && index === undefined) valueProblemAt.set(problem.at, merged.length);
    if (index === undefined) {
      merged.push(problem);
      continue;
    }
    const earlier = merged[index]!;
    const common = earlier.allowed!.filter((value) => problem.allowed!.some((other) => sameJson(value, other)));
    merged[index] = valueProblem(problem.at, common, problem.got);
  }
  return merged;
}

export class SchemaCompiler {
  readonly #root: unknown;
  readonly #digitStringIntegerProperties: ReadonlySet<string>;
  readonly #compiled = new WeakMap<object, SchemaCheck>();

  constructor(root: unknown, options: SchemaCompilerOptions = {}) {
    this.#root = root;
    this.#digitStringIntegerProperties = options.digitStringIntegerProperties ?? new Set();
  }

  /** Follows a local `$ref` chain ('#/components/schemas/X') to the schema it names. */
  resolve(schema: Schema): Schema {
    let current = schema;
    for (let hops = 0; typeof current === 'object' && typeof current.$ref === 'string'; hops++) {
      if (hops > 64) throw new Error(`$ref cycle at ${current.$ref}`);
      current = this.#lookUp(current.$ref);
    }
    return current;
  }

  compile(schema: Schema): SchemaCheck {
    if (typeof schema === 'boolean') {
      if (schema) return () => {};
      return (value, at, problems) => problems.push({ at, rule: `is not allowed (got ${showValue(value)})` });
    }
    const cached = this.#compiled.get(schema);
    if (cached) return cached;
    // Registered before its parts compile, so a schema that refers back to itself finds this entry.
    let body: SchemaCheck = () => {};
    const check: SchemaCheck = (value, at, problems) => body(value, at, problems);
    this.#compiled.set(schema, check);
    body = this.#compileBody(schema);
    return check;
  }

  /** Which JSON types a value may have under this schema (through $ref and combinators); used to coerce strings. */
  acceptedTypes(schema: Schema): ReadonlySet<JsonType> {
    return this.#acceptedTypes(schema, 0);
  }

  /** The types of array items this schema accepts where it accepts an array. */
  acceptedItemTypes(schema: Schema): ReadonlySet<JsonType> {
    const types = new Set<JsonType>();
    for (const branch of this.#related(schema, ['allOf', 'anyOf', 'oneOf'])) {
      if (typeof branch === 'object' && branch.items !== undefined) {
        for (const type of this.acceptedTypes(branch.items as Schema)) types.add(type);
      }
    }
    return types;
  }

  /** The properties a schema declares for every value it accepts: its own and those of its $ref and allOf parts. */
  declaredProperties(schema: Schema): Map<string, Schema> {
    const declared = new Map<string, Schema>();
    for (const part of this.#related(schema, ['allOf'])) {
      if (typeof part !== 'object' || !isPlainObject(part.properties)) continue;
      for (const [name, property] of Object.entries(part.properties)) declared.set(name, property as Schema);
    }
    return declared;
  }

  #lookUp(ref: string): Schema {
    if (!ref.startsWith('#/')) throw new Error(`$ref ${ref} is not a local reference`);
    let node: unknown = this.#root;
    for (const raw of ref.slice(2).split('/')) {
      const key = decodeURIComponent(raw).replaceAll('~1', '/').replaceAll('~0', '~');
      if (!isPlainObject(node) || !(key in node)) throw new Error(`$ref ${ref} points at nothing`);
      node = node[key];
    }
    if (typeof node !== 'boolean' && !isPlainObject(node)) throw new Error(`$ref ${ref} is not a schema`);
    return node;
  }

  /** The schema and the schemas reached from it through $ref and the given combinators. */
  #related(schema: Schema, combinators: readonly string[], depth = 0, found: Schema[] = []): Schema[] {
    const resolved = this.resolve(schema);
    if (depth > 32 || found.includes(resolved)) return found;
    found.push(resolved);
    if (typeof resolved === 'object') {
      for (const keyword of combinators) {
        const branches = resolved[keyword];
        if (Array.isArray(branches)) for (const branch of branches) this.#related(branch as Schema, combinators, depth + 1, found);
      }
    }
    return found;
  }

  #acceptedTypes(schema: Schema, depth: number): Set<JsonType> {
    const resolved = this.resolve(schema);
    if (typeof resolved === 'boolean' || depth > 32) return new Set(resolved ? ALL_TYPES : []);
    let types = new Set<JsonType>(ALL_TYPES);
    if (resolved.type !== undefined) types = new Set([resolved.type].flat() as JsonType[]);
    const listed = resolved.const !== undefined ? [resolved.const] : (resolved.enum as unknown[] | undefined);
    if (listed) types = new Set([...types].filter((type) => listed.some((value) => matchesType(value, type))));
    for (const branch of (resolved.allOf as Schema[] | undefined) ?? []) {
      const required = this.#acceptedTypes(branch, depth + 1);
      types = new Set([...types].filter((type) => required.has(type)));
    }
    for (const keyword of ['anyOf', 'oneOf']) {
      const branches = resolved[keyword] as Schema[] | undefined;
      if (!branches) continue;
      const union = new Set(branches.flatMap((branch) => [...this.#acceptedTypes(branch, depth + 1)]));
      types = new Set([...types].filter((type) => union.has(type)));
    }
    if (types.has('number')) types.add('integer');
    return types;
  }

  #compileBody(schema: { readonly [keyword: string]: unknown }): SchemaCheck {
    for (const keyword of Object.keys(schema)) {
      if (!VALIDATIONS.has(keyword) && !ANNOTATIONS.has(keyword) && !keyword.startsWith('x-')) {
        throw new Error(`JSON Schema keyword "${keyword}" is not supported (in ${showValue(schema)})`);
      }
    }
    const typeCheck = this.#compileType(schema);
    const checks = [
      ...this.#compileRef(schema),
      ...this.#compileValueList(schema),
      ...this.#compileString(schema),
      ...this.#compileNumber(schema),
      ...this.#compileArray(schema),
      ...this.#compileObject(schema),
      ...this.#compileCombinators(schema),
    ];
    return (value, at, problems) => {
      // A value of the wrong type gets that one problem, not one from every keyword that then also fails.
      if (typeCheck && !typeCheck(value, at, problems)) return;
      for (const check of checks) check(value, at, problems);
    };
  }

  #compileType(schema: { readonly [keyword: string]: unknown }) {
    if (schema.type === undefined) return null;
    const types = [schema.type].flat() as JsonType[];
    return (value: unknown, at: string, problems: SchemaProblem[]): boolean => {
      if (types.some((type) => matchesType(value, type))) return true;
      problems.push(typeProblem(at, types, value));
      return false;
    };
  }

  #compileRef(schema: { readonly [keyword: string]: unknown }): SchemaCheck[] {
    if (typeof schema.$ref !== 'string') return [];
    const ref = schema.$ref;
    // Resolved on first use: the target may still be compiling (recursive schemas) or never be needed.
    let target: SchemaCheck | undefined;
    return [(value, at, problems) => (target ??= this.compile(this.#lookUp(ref)))(value, at, problems)];
  }

  #compileValueList(schema: { readonly [keyword: string]: unknown }): SchemaCheck[] {
    const allowed = schema.const !== undefined ? [schema.const] : (schema.enum as unknown[] | undefined);
    if (!allowed) return [];
    return [(value, at, problems) => {
      if (!allowed.some((entry) => sameJson(entry, value))) problems.push(valueProblem(at, allowed, value));
    }];
  }

  #compileString(schema: { readonly [keyword: string]: unknown }): SchemaCheck[] {
    const checks: SchemaCheck[] = [];
    const minLength = schema.minLength as number | undefined;
    const maxLength = schema.maxLength as number | undefined;
    if (minLength !== undefined || maxLength !== undefined) {
      checks.push((value, at, problems) => {
        if (typeof value !== 'string') return;
        // A code point takes one or two UTF-16 units, so the UTF-16 length settles most strings without counting.
        if (maxLength !== undefined && value.length > maxLength) {
          const length = codePointLength(value);
          if (length > maxLength) problems.push({ at, rule: `must be at most ${maxLength} characters (got ${length})` });
        }
        if (minLength !== undefined && value.length < 2 * minLength) {
          const length = codePointLength(value);
          if (length < minLength) problems.push({ at, rule: `must be at least ${minLength} characters (got ${length})` });
        }
      });
    }
    const format = typeof schema.format === 'string' ? STRING_FORMATS[schema.format] : undefined;
    const pattern = typeof schema.pattern === 'string' ? new RegExp(schema.pattern, 'u') : null;
    if (format || pattern) {
      checks.push((value, at, problems) => {
        if (typeof value !== 'string') return;
        if (format && !format.test(value)) {
          problems.push({ at, rule: `${format.rule} (got ${showValue(value)})` });
        } else if (pattern && !pattern.test(value)) {
          // A failed format already says what shape the value needs; the pattern would repeat it.
          problems.push({ at, rule: `must match /${pattern.source}/ (got ${showValue(value)})` });
        }
      });
    }
    return checks;
  }

  #compileNumber(schema: { readonly [keyword: string]: unknown }): SchemaCheck[] {
    const checks: SchemaCheck[] = [];
    const minimum = schema.minimum as number | undefined;
    const maximum = schema.maximum as number | undefined;
    if (minimum !== undefined || maximum !== undefined) {
      checks.push((value, at, problems) => {
        if (typeof value !== 'number') return;
        if (minimum !== undefined && value < minimum) problems.push({ at, rule: `must be at least ${minimum} (got ${value})` });
        if (maximum !== undefined && value > maximum) problems.push({ at, rule: `must be at most ${maximum} (got ${value})` });
      });
    }
    const format = typeof schema.format === 'string' ? NUMBER_FORMATS[schema.format] : undefined;
    if (format) {
      checks.push((value, at, problems) => {
        if (typeof value === 'number' && !format.test(value)) problems.push({ at, rule: `${format.rule} (got ${value})` });
      });
    }
    return checks;
  }

  #compileArray(schema: { readonly [keyword: string]: unknown }): SchemaCheck[] {
    const checks: SchemaCheck[] = [];
    if (schema.items !== undefined) {
      const item = this.compile(schema.items as Schema);
      checks.push((value, at, problems) => {
        if (Array.isArray(value)) value.forEach((entry, index) => item(entry, childPath(at, index), problems));
      });
    }
    const minItems = schema.minItems as number | undefined;
    const maxItems = schema.maxItems as number | undefined;
    if (minItems !== undefined || maxItems !== undefined) {
      checks.push((value, at, problems) => {
        if (!Array.isArray(value)) return;
        const count = value.length;
        if (minItems !== undefined && count < minItems) problems.push({ at, rule: `must have at least ${minItems} items (got ${count})` });
        if (maxItems !== undefined && count > maxItems) problems.push({ at, rule: `must have at most ${maxItems} items (got ${count})` });
      });
    }
    if (schema.uniqueItems === true) {
      checks.push((value, at, problems) => {
        if (!Array.isArray(value)) return;
        const firstIndexOf = new Map<string, number>();
        value.forEach((entry, index) => {
          const key = canonicalJson(entry);
          const first = firstIndexOf.get(key);
          if (first === undefined) firstIndexOf.set(key, index);
          else problems.push({ at: childPath(at, index), rule: `must not repeat item ${first} (got ${showValue(entry)})` });
        });
      });
    }
    return checks;
  }

  #compileObject(schema: { readonly [keyword: string]: unknown }): SchemaCheck[] {
    const checks: SchemaCheck[] = [];
    const declared = isPlainObject(schema.properties) ? schema.properties : {};
    const properties = new Map(Object.entries(declared).map(([name, property]) => [name, this.#compileProperty(name, property as Schema)]));
    const additional = schema.additionalProperties === undefined
      ? null
      : this.compile(schema.additionalProperties as Schema);
    if (properties.size > 0 || additional) {
      checks.push((value, at, problems) => {
        if (!isPlainObject(value)) return;
        for (const [name, entry] of Object.entries(value)) {
          const check = properties.get(name) ?? additional;
          if (check) check(entry, childPath(at, name), problems);
        }
      });
    }
    const required = (schema.required as string[] | undefined) ?? [];
    if (required.length > 0) {
      checks.push((value, at, problems) => {
        if (!isPlainObject(value)) return;
        for (const name of required) if (!(name in value)) problems.push({ at: childPath(at, name), rule: 'is required' });
      });
    }
    const minProperties = schema.minProperties as number | undefined;
    const maxProperties = schema.maxProperties as number | undefined;
    if (minProperties !== undefined || maxProperties !== undefined) {
      checks.push((value, at, problems) => {
        if (!isPlainObject(value)) return;
        const count = Object.keys(value).length;
        if (minProperties !== undefined && count < minProperties) {
          problems.push({ at, rule: `must have at least ${minProperties} properties (got ${count})` });
        }
        if (maxProperties !== undefined && count > maxProperties) {
          problems.push({ at, rule: `must have at most ${maxProperties} properties (got ${count})` });
        }
      });
    }
    return checks;
  }

  #compileProperty(name: string, schema: Schema): SchemaCheck {
    const check = this.compile(schema);
    if (!this.#digitStringIntegerProperties.has(name)) return check;
    const types = this.acceptedTypes(schema);
    if (!types.has('integer') || types.has('string')) return check;
    return (value, at, problems) => check(typeof value === 'string' ? digitsToNumber(value) : value, at, problems);
  }

  #compileCombinators(schema: { readonly [keyword: string]: unknown }): SchemaCheck[] {
    const checks: SchemaCheck[] = [];
    for (const branch of (schema.allOf as Schema[] | undefined) ?? []) checks.push(this.compile(branch));
    for (const keyword of ['anyOf', 'oneOf'] as const) {
      const branches = schema[keyword] as Schema[] | undefined;
      if (branches) checks.push(this.#compileUnion(branches, keyword === 'oneOf'));
    }
    return checks;
  }

  /**
   * anyOf/oneOf. When no branch fits, the problems shown come from the branch the value was meant for: branches whose
   * type or discriminator (a property every branch pins with const/enum, like `type`) does not fit are set aside. If
   * every branch is set aside, their type and value lists are merged into one problem per spot.
   */
  #compileUnion(branchSchemas: readonly Schema[], exactlyOne: boolean): SchemaCheck {
    const listed = constantsOnly(branchSchemas.map((branch) => this.resolve(branch)));
    if (listed) {
      // Discord writes each enum as a oneOf of titled consts; a lookup says the same without a problem per branch.
      return (value, at, problems) => {
        if (!listed.some((entry) => sameJson(entry, value))) problems.push(valueProblem(at, listed, value));
      };
    }
    const branches = branchSchemas.map((branch) => this.compile(branch));
    let discriminators: readonly string[] | undefined;
    let pinnedChecks: ReadonlyMap<string, SchemaCheck>[] = [];
    return (value, at, problems) => {
      if (!discriminators) {
        discriminators = this.#discriminators(branchSchemas);
        pinnedChecks = branchSchemas.map((branch) => this.#pinnedPropertyChecks(branch, discriminators!));
      }
      const results: SchemaProblem[][] = [];
      for (const [index, branch] of branches.entries()) {
        const found: SchemaProblem[] = [];
        // A branch whose discriminator does not fit is out; validating the rest of the value against it is waste.
        if (isPlainObject(value)) {
          for (const [name, check] of pinnedChecks[index]!) if (name in value) check(value[name], childPath(at, name), found);
        }
        if (found.length === 0) branch(value, at, found);
        if (found.length === 0 && !exactlyOne) return;
        results.push(mergeValueProblems(found));
      }
      const matching = results.filter((found) => found.length === 0).length;
      if (matching === 1) return;
      if (matching > 1) {
        problems.push({ at, rule: `matches ${matching} of the ${branches.length} oneOf alternatives; exactly one must match` });
        return;
      }
      const spots = new Set([at, ...discriminators.map((name) => childPath(at, name))]);
      const missesShape = (found: readonly SchemaProblem[]) =>
        found.some((problem) => spots.has(problem.at) && (problem.at !== at || problem.expectedTypes || problem.allowed));
      const candidates = results.filter((found) => !missesShape(found));
      if (candidates.length > 0) {
        problems.push(...candidates.reduce((best, found) => (found.length < best.length ? found : best)));
        return;
      }
      problems.push(...mergeShapeProblems(results, at, spots, value));
    };
  }

  #pinnedPropertyChecks(branch: Schema, discriminators: readonly string[]): Map<string, SchemaCheck> {
    const declared = this.declaredProperties(branch);
    return new Map(discriminators.flatMap((name) => {
      const property = declared.get(name);
      return property === undefined ? [] : [[name, this.compile(property)] as const];
    }));
  }

  /**
   * Properties that every object branch pins to a const or enum: what tells the branches apart. Branches that take no
   * object are told apart by type already.
   */
  #discriminators(branchSchemas: readonly Schema[]): string[] {
    const objectBranches = branchSchemas.filter((branch) => this.acceptedTypes(branch).has('object'));
    const pinned = objectBranches.map((branch) => {
      const names = new Set<string>();
      for (const [name, property] of this.declaredProperties(branch)) {
        const resolved = this.resolve(property);
        if (typeof resolved === 'object' && (resolved.const !== undefined || resolved.enum !== undefined)) names.add(name);
      }
      return names;
    });
    const [first, ...rest] = pinned;
    return [...(first ?? [])].filter((name) => rest.every((names) => names.has(name)));
  }
}

/** The values a union allows when every branch is a bare const (annotations aside), else null. */
function constantsOnly(branches: readonly Schema[]): unknown[] | null {
  const values: unknown[] = [];
  for (const branch of branches) {
    if (typeof branch !== 'object' || branch.const === undefined) return null;
    if (Object.keys(branch).some((keyword) => keyword !== 'const' && !ANNOTATIONS.has(keyword))) return null;
    // oneOf with a repeated const accepts neither copy; leave that to the general path.
    if (values.some((seen) => sameJson(seen, branch.const))) return null;
    values.push(branch.const);
  }
  return values;
}

function mergeShapeProblems(
  results: readonly SchemaProblem[][], at: string, spots: ReadonlySet<string>, value: unknown,
): SchemaProblem[] {
  const typeMiss = (found: readonly SchemaProblem[]) => found.find((problem) => problem.at === at && problem.expectedTypes);
  const typeFits = results.filter((found) => !typeMiss(found));
  if (typeFits.length === 0) return [typeProblem(at, [...new Set(results.flatMap((found) => typeMiss(found)!.expectedTypes!))], value)];
  const bySpot = new Map<string, SchemaProblem[]>();
  for (const found of typeFits) {
    for (const problem of found) {
      if (spots.has(problem.at)) bySpot.set(problem.at, [...(bySpot.get(problem.at) ?? []), problem]);
    }
  }
  return [...bySpot].flatMap(([spot, found]) => {
    if (found.every((problem) => problem.allowed)) {
      const allowed: unknown[] = [];
      for (const entry of found.flatMap((problem) => problem.allowed!)) {
        if (!allowed.some((seen) => sameJson(seen, entry))) allowed.push(entry);
      }
      return [valueProblem(spot, allowed, found[0]!.got)];
    }
    const distinct = new Map(found.map((problem) => [problem.rule, problem]));
    return [...distinct.values()];
  });
}
