import type { ServerResponse } from 'node:http';

// Path-template routing shared by the REST and control APIs: '/channels/:channel/messages/@original' matches
// literal segments exactly and binds ':name' segments (decoded). Routes are tried in order, so a literal route
// listed first wins over a parameter in the same place.

export interface Route<H> {
  readonly method: string;
  readonly pattern: string;
  readonly handler: H;
}

export interface RouteMatch<H> {
  readonly route: Route<H>;
  readonly params: Record<string, string>;
}

export function matchRoute<H>(routes: readonly Route<H>[], method: string, path: string): RouteMatch<H> | null {
  const segments = path.split('/').filter((segment) => segment !== '');
  for (const route of routes) {
    if (route.method !== method) continue;
    const expected = route.pattern.split('/').filter((segment) => segment !== '');
    if (expected.length !== segments.length) continue;
    const params: Record<string, string> = {};
    const matches = expected.every((part, i) => {
      let actual: string;
      try {
        actual = decodeURIComponent(segments[i]!);
      } catch {
        return false;
      }
      if (part.startsWith(':')) params[part.slice(1)] = actual;
      return part.startsWith(':') || part === actual;
    });
    if (matches) return { route, params };
  }
  return null;
}

/** True when some route has this path with another method (answered 405 rather than 404). */
export function pathKnown<H>(routes: readonly Route<H>[], path: string): boolean {
  return ['GET', 'POST', 'PUT', 'PATCH', 'DELETE'].some((method) => matchRoute(routes, method, path) !== null);
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
