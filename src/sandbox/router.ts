import type { ServerResponse } from 'node:http';

// Path-template matching shared by the REST and control routers and the OpenAPI validator: a request path is split
// and decoded once, then compared segment by segment with each template (literal segments exactly, parameters
// taking any non-empty segment). The routers use ':name' templates tried in order, so a literal route listed first
// wins over a parameter in the same place; the validator uses the spec's '{name}' templates.

export interface PathSegment {
  readonly text: string;
  /** Not valid percent-encoding; `text` is then the segment as written. */
  readonly malformed: boolean;
}

export type TemplateSegment = { readonly kind: 'literal'; readonly text: string } | { readonly kind: 'parameter'; readonly name: string };

/** The segments of a path that starts with '/' (an empty path has none). */
export function pathSegments(path: string): PathSegment[] {
  return path.startsWith('/') ? path.slice(1).split('/').map(decodeSegment) : [];
}

function decodeSegment(raw: string): PathSegment {
  try {
    return { text: decodeURIComponent(raw), malformed: false };
  } catch {
    return { text: raw, malformed: true };
  }
}

/** `parameterName` returns the parameter a template segment names, or null for a literal. */
export function templateSegments(template: string, parameterName: (segment: string) => string | null): TemplateSegment[] {
  return template.slice(1).split('/').map((text) => {
    const name = parameterName(text);
    return name === null ? { kind: 'literal', text } : { kind: 'parameter', name };
  });
}

/** The parameters the path binds when it fits the template, else null. */
export function matchTemplate(template: readonly TemplateSegment[], path: readonly PathSegment[]): Map<string, PathSegment> | null {
  if (template.length !== path.length) return null;
  const params = new Map<string, PathSegment>();
  for (const [index, part] of template.entries()) {
    const segment = path[index]!;
    if (part.kind === 'literal' ? part.text !== segment.text : segment.text === '') return null;
    if (part.kind === 'parameter') params.set(part.name, segment);
  }
  return params;
}

export interface Route<H> {
  readonly method: string;
  /** '/channels/:channel/messages/@original': ':name' segments are parameters. */
  readonly pattern: string;
  readonly handler: H;
}

interface RouteMatch<H> {
  readonly route: Route<H>;
  readonly params: Record<string, string>;
}

const routeParameter = (segment: string): string | null => (segment.startsWith(':') ? segment.slice(1) : null);

/** The routes (any method) whose pattern fits the path, in order; a path with broken percent-encoding fits none. */
function fittingRoutes<H>(routes: readonly Route<H>[], path: string): RouteMatch<H>[] {
  const segments = pathSegments(path);
  if (segments.some((segment) => segment.malformed)) return [];
  return routes.flatMap((route) => {
    const params = matchTemplate(templateSegments(route.pattern, routeParameter), segments);
    return params === null ? [] : [{ route, params: Object.fromEntries([...params].map(([name, segment]) => [name, segment.text])) }];
  });
}

export function matchRoute<H>(routes: readonly Route<H>[], method: string, path: string): RouteMatch<H> | null {
  return fittingRoutes(routes, path).find((match) => match.route.method === method) ?? null;
}

/** True when some route has this path with another method (answered 405 rather than 404). */
export function pathKnown<H>(routes: readonly Route<H>[], path: string): boolean {
  return fittingRoutes(routes, path).length > 0;
}

/** Every answer is JSON with its Content-Type set: without it discord.js hands the bot raw bytes. */
export function sendJson(response: ServerResponse, status: number, body: unknown, headers: Record<string, string> = {}): void {
  if (status === 204 || body === undefined) {
    response.writeHead(status, headers).end();
    return;
  }
  const text = JSON.stringify(body);
  response.writeHead(status, { ...headers, 'Content-Type': 'application/json', 'Content-Length': Buffer.byteLength(text) }).end(text);
}
