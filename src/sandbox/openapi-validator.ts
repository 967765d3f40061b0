// Checks a REST request against Discord's OpenAPI spec (assets/discord/openapi.json): route, path and query
// parameters, media type and body. The local Discord server fails a test on any problem, so a request the real API
// would refuse cannot pass unnoticed, and the spec's known gaps are accepted only where named below.

import { readFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import {
  SchemaCompiler, childPath, mergeValueProblems, showValue, type JsonType, type Schema, type SchemaCheck, type SchemaProblem,
} from './json-schema.js';
import { MAX_ATTACHMENTS } from './limits.js';
import { matchTemplate, pathSegments, templateSegments, type PathSegment, type TemplateSegment } from './router.js';

export const DISCORD_OPENAPI_PATH = fileURLToPath(new URL('../../../assets/discord/openapi.json', import.meta.url));

export interface RequestToValidate {
  method: string;
  /** After the version prefix and without the query; may hold %-escapes (emoji). */
  path: string;
  query: URLSearchParams;
  contentType: string | null;
  /** The parsed JSON body; for multipart the parsed `payload_json` part; undefined when there is no body. */
  body: unknown;
  /** Names of multipart file parts, e.g. ['files[0]']. */
  fileFields?: string[];
}

interface ValidationOutcome {
  operationId: string | null;
  /** The spec's path template; set whenever the path matched, even if the method did not. */
  route: string | null;
  pathParams: Record<string, string>;
  /** Empty when the request is valid; each names where and why. */
  problems: string[];
}

// Discord's docs define permission bitfields as strings of digits ("8", "0") and discord.js sends them so; the preview
// spec types these properties as integers. The docs win, so a digit string is accepted there. Matched by property
// name because one of them (allow/deny of PUT /channels/{channel_id}/permissions/{overwrite_id}) is declared inline.
const PERMISSION_BITFIELD_PROPERTIES = new Set(['default_member_permissions', 'permissions', 'allow', 'deny']);

// The spec declares file parts (files[0] … files[9]) for message create and edit, but none for interaction callbacks
// or webhook execution, although it takes multipart there and discord.js sends files[n] (interaction.reply and
// followUp with files). Where a multipart body declares no file part, files[n] is accepted up to Discord's limit of
// attachments per message, the maxItems the spec gives `attachments`.
const FILE_PART_NAME = /^files\[(0|[1-9][0-9]*)\]$/;
// The spec types a file part as a string with contentEncoding binary; its content is the server's business.
const FILE_PART_STAND_IN = '';
const NUMBER_TEXT = /^-?[0-9]+(\.[0-9]+)?([eE][+-]?[0-9]+)?$/;

const METHODS = ['get', 'post', 'put', 'patch', 'delete'] as const;
type Method = (typeof METHODS)[number];

interface ParameterSpec {
  readonly name: string;
  readonly in: string;
  readonly required?: boolean;
  readonly schema: Schema;
}

interface OperationSpec {
  readonly operationId: string;
  readonly parameters?: readonly ParameterSpec[];
  readonly requestBody?: { readonly required?: boolean; readonly content: Readonly<Record<string, { readonly schema: Schema }>> };
}

type PathItemSpec = { readonly parameters?: readonly ParameterSpec[] } & Partial<Readonly<Record<Method, OperationSpec>>>;

interface OpenApiDocument {
  readonly paths: Readonly<Record<string, PathItemSpec>>;
}

interface Route {
  readonly template: string;
  readonly segments: readonly TemplateSegment[];
  readonly item: PathItemSpec;
}

interface PreparedParameter {
  readonly check: SchemaCheck;
  readonly required: boolean;
  readonly types: ReadonlySet<JsonType>;
  readonly itemTypes: ReadonlySet<JsonType>;
}

interface PreparedMedia {
  readonly check: SchemaCheck;
  /** File parts the multipart schema declares; empty where it declares none (see fileFieldAllowed). */
  readonly fileParts: ReadonlySet<string>;
}

interface PreparedOperation {
  readonly operationId: string;
  readonly label: string;
  readonly pathParameters: ReadonlyMap<string, PreparedParameter>;
  readonly queryParameters: ReadonlyMap<string, PreparedParameter>;
  readonly body: { readonly required: boolean; readonly media: ReadonlyMap<string, PreparedMedia> } | null;
}

export class OpenApiValidator {
  readonly #compiler: SchemaCompiler;
  readonly #routes: readonly Route[];
  readonly #prepared = new Map<string, PreparedOperation>();

  constructor(document: unknown) {
    if (typeof document !== 'object' || document === null || typeof (document as OpenApiDocument).paths !== 'object') {
      throw new Error('OpenAPI document has no paths object');
    }
    this.#compiler = new SchemaCompiler(document, { digitStringIntegerProperties: PERMISSION_BITFIELD_PROPERTIES });
    const paths = Object.entries((document as OpenApiDocument).paths);
    this.#routes = paths.map(([template, item]) => ({ template, item, segments: templateSegments(template, specParameter) })).sort(literalsFirst);
  }

  static fromFile(specPath: string = DISCORD_OPENAPI_PATH): OpenApiValidator {
    return new OpenApiValidator(JSON.parse(readFileSync(specPath, 'utf8')));
  }

  validate(request: RequestToValidate): ValidationOutcome {
    const method = request.method.toUpperCase();
    const found = this.#findRoute(pathSegments(request.path));
    if (!found) {
      const problem = `${method} ${request.path}: no route in the Discord OpenAPI spec has this path`;
      return { operationId: null, route: null, pathParams: {}, problems: [problem] };
    }
    const { route, params } = found;
    const pathParams = Object.fromEntries([...params].map(([name, segment]) => [name, segment.text]));
    const operation = METHODS.find((known) => known === method.toLowerCase() && route.item[known]);
    if (!operation) {
      const offered = METHODS.filter((known) => route.item[known]).map((known) => known.toUpperCase());
      return {
        operationId: null, route: route.template, pathParams,
        problems: [`${method} ${request.path}: ${route.template} has no ${method} operation (it has ${offered.join(', ')})`],
      };
    }
    const prepared = this.#prepare(route, operation);
    const problems: SchemaProblem[] = [];
    for (const [name, segment] of params) {
      const at = childPath('path', name);
      if (segment.malformed) problems.push({ at, rule: `is not valid percent-encoding (got ${showValue(segment.text)})` });
      const parameter = prepared.pathParameters.get(name);
      parameter?.check(coerceText(segment.text, parameter.types), at, problems);
    }
    this.#checkQuery(prepared, request.query, problems);
    this.#checkBody(prepared, request, problems);
    return {
      operationId: prepared.operationId, route: route.template, pathParams,
      problems: mergeValueProblems(problems).map((problem) => `${problem.at}: ${problem.rule}`),
    };
  }

  #findRoute(segments: readonly PathSegment[]): { route: Route; params: Map<string, PathSegment> } | null {
    for (const route of this.#routes) {
      const params = matchTemplate(route.segments, segments);
      if (params !== null) return { route, params };
    }
    return null;
  }

  #prepare(route: Route, method: Method): PreparedOperation {
    const key = `${method} ${route.template}`;
    const cached = this.#prepared.get(key);
    if (cached) return cached;
    const operation = route.item[method]!;
    // Operation parameters override path-level ones of the same name and location.
    const parameters = new Map<string, ParameterSpec>();
    for (const parameter of [...(route.item.parameters ?? []), ...(operation.parameters ?? [])]) {
      parameters.set(`${parameter.in} ${parameter.name}`, parameter);
    }
    const prepareIn = (location: string) => new Map([...parameters.values()]
      .filter((parameter) => parameter.in === location)
      .map((parameter) => [parameter.name, this.#prepareParameter(parameter)] as const));
    const body = operation.requestBody;
    const prepared: PreparedOperation = {
      operationId: operation.operationId,
      label: `${method.toUpperCase()} ${route.template}`,
      pathParameters: prepareIn('path'),
      queryParameters: prepareIn('query'),
      body: body
        ? {
          required: body.required === true,
          media: new Map(Object.entries(body.content).map(([mediaType, { schema }]) => [
            mediaType.toLowerCase(), this.#prepareMedia(mediaType, schema),
          ])),
        }
        : null,
    };
    this.#prepared.set(key, prepared);
    return prepared;
  }

  #prepareParameter(parameter: ParameterSpec): PreparedParameter {
    return {
      check: this.#compiler.compile(parameter.schema),
      required: parameter.required === true,
      types: this.#compiler.acceptedTypes(parameter.schema),
      itemTypes: this.#compiler.acceptedItemTypes(parameter.schema),
    };
  }

  #prepareMedia(mediaType: string, schema: Schema): PreparedMedia {
    const fileParts = new Set<string>();
    if (mediaType.toLowerCase() === 'multipart/form-data') {
      for (const [name, property] of this.#compiler.declaredProperties(schema)) {
        const resolved = this.#compiler.resolve(property);
        if (typeof resolved === 'object' && resolved.contentEncoding === 'binary') fileParts.add(name);
      }
    }
    return { check: this.#compiler.compile(schema), fileParts };
  }

  #checkQuery(operation: PreparedOperation, query: URLSearchParams, found: SchemaProblem[]): void {
    for (const name of new Set(query.keys())) {
      const at = childPath('query', name);
      const parameter = operation.queryParameters.get(name);
      if (!parameter) {
        found.push({ at, rule: `is not a query parameter of ${operation.label}` });
        continue;
      }
      const values = query.getAll(name);
      if (parameter.types.has('array') && (values.length > 1 || !parameter.types.has('string'))) {
        parameter.check(values.map((value) => coerceText(value, parameter.itemTypes)), at, found);
      } else if (values.length > 1) {
        found.push({ at, rule: `must be given once (got ${values.length} values)` });
      } else {
        parameter.check(coerceText(values[0]!, parameter.types), at, found);
      }
    }
    for (const [name, parameter] of operation.queryParameters) {
      if (parameter.required && !query.has(name)) found.push({ at: childPath('query', name), rule: 'is required' });
    }
  }

  #checkBody(operation: PreparedOperation, request: RequestToValidate, found: SchemaProblem[]): void {
    const fileFields = request.fileFields ?? [];
    const hasBody = request.body !== undefined || fileFields.length > 0;
    const body = operation.body;
    if (!body) {
      if (hasBody) found.push({ at: 'body', rule: `${operation.label} takes no request body` });
      return;
    }
    const accepted = [...body.media.keys()].join(', ');
    if (!hasBody) {
      if (body.required) found.push({ at: 'body', rule: `is required (${operation.label} takes ${accepted})` });
      return;
    }
    const mediaType = request.contentType?.split(';')[0]!.trim().toLowerCase() || null;
    const media = mediaType === null ? undefined : body.media.get(mediaType);
    if (!media) {
      found.push({ at: 'content-type', rule: `must be one of ${accepted} for ${operation.label} (got ${showValue(mediaType)})` });
      return;
    }
    if (mediaType !== 'multipart/form-data') {
      if (fileFields.length > 0) {
        found.push({ at: 'body', rule: `file parts need multipart/form-data (got ${mediaType} with ${fileFields.join(', ')})` });
      }
      media.check(request.body, 'body', found);
      return;
    }
    checkMultipart(media, request.body, fileFields, found);
  }
}

function checkMultipart(media: PreparedMedia, payload: unknown, fileFields: readonly string[], found: SchemaProblem[]): void {
  if (payload !== undefined && (typeof payload !== 'object' || payload === null || Array.isArray(payload))) {
    found.push({ at: 'body', rule: `payload_json must hold a JSON object (got ${showValue(payload)})` });
    return;
  }
  for (const name of fileFields) {
    if (!fileFieldAllowed(media, name)) {
      const allowed = media.fileParts.size > 0 ? [...media.fileParts].join(', ') : `files[0] … files[${MAX_ATTACHMENTS - 1}]`;
      found.push({ at: childPath('body', name), rule: `is not a file part this operation takes (it takes ${allowed})` });
    }
  }
  // The spec models the form as one object: payload_json's fields beside the file parts.
  const fileParts = Object.fromEntries(fileFields.map((name) => [name, FILE_PART_STAND_IN]));
  const form = { ...(payload as Record<string, unknown> | undefined), ...fileParts };
  media.check(form, 'body', found);
}

function fileFieldAllowed(media: PreparedMedia, name: string): boolean {
  if (media.fileParts.size > 0) return media.fileParts.has(name);
  const index = FILE_PART_NAME.exec(name)?.[1];
  return index !== undefined && Number(index) < MAX_ATTACHMENTS;
}

const specParameter = (segment: string): string | null => /^\{([^}]+)\}$/.exec(segment)?.[1] ?? null;

/** Sorts so the first route a path matches is the most literal one: '@original' before '{message_id}'. */
function literalsFirst(a: Route, b: Route): number {
  const shared = Math.min(a.segments.length, b.segments.length);
  for (let index = 0; index < shared; index++) {
    const aLiteral = a.segments[index]!.kind === 'literal';
    if (aLiteral !== (b.segments[index]!.kind === 'literal')) return aLiteral ? -1 : 1;
  }
  return a.segments.length - b.segments.length;
}

/** Query and path values arrive as text; the schema says what they stand for. Unparseable text stays text and fails the type check. */
function coerceText(text: string, types: ReadonlySet<JsonType>): unknown {
  if (types.has('string')) return text;
  if ((types.has('integer') || types.has('number')) && NUMBER_TEXT.test(text)) return Number(text);
  if (types.has('boolean') && (text === 'true' || text === 'false')) return text === 'true';
  return text;
}
