import type { IncomingMessage, ServerResponse } from 'node:http';
import { DiscordApiError, invalidFormBody, notFound, requestTooLarge, unauthorized } from './discord-errors.js';
import { LimitBreach, MAX_REQUEST_BYTES } from './limits.js';
import type { OpenApiValidator } from './openapi-validator.js';
import { RATE_LIMITED_BODY } from './rate-limiter.js';
import { parseBody, readBody } from './request-body.js';
import { channelRoutes } from './rest-channels.js';
import { directoryRoutes } from './rest-directory.js';
import { interactionRoutes } from './rest-interactions.js';
import type { RestRoute } from './rest-types.js';
import { matchRoute, sendJson } from './router.js';
import type { SandboxServices } from './services.js';

// Discord's REST API under /api/v10. Each request is checked against the OpenAPI spec before it is handled (a
// rejection is answered 400 and recorded as a violation), then authorised, then possibly rate limited, then
// answered by its route. Every request lands in the request log with its status.

export const API_PREFIX = '/api/v10';

const routes: readonly RestRoute[] = [...interactionRoutes, ...channelRoutes, ...directoryRoutes];

export class RestApi {
  constructor(private readonly services: SandboxServices, private readonly validator: OpenApiValidator) {}

  async handle(request: IncomingMessage, response: ServerResponse, url: URL): Promise<void> {
    const { recorder, log } = this.services;
    const method = request.method ?? 'GET';
    const path = url.pathname.slice(API_PREFIX.length);
    let route = path;
    let status = 500;
    const answer = (code: number, body: unknown, headers?: Record<string, string>) => {
      status = code;
      sendJson(response, code, body, headers);
    };
    try {
      const { data, bytes } = await readBody(request, MAX_REQUEST_BYTES);
      if (bytes > MAX_REQUEST_BYTES) throw new LimitBreach(requestTooLarge(), [`body: ${bytes} bytes; the limit is ${MAX_REQUEST_BYTES} per request`]);
      const contentType = request.headers['content-type'] ?? null;
      const body = await parseBody(data, contentType);
      const outcome = this.validator.validate({
        method, path, query: url.searchParams, contentType, body: body.json, fileFields: body.files.map((file) => file.field),
      });
      route = outcome.route ?? path;
      if (outcome.problems.length > 0) throw new LimitBreach(invalidFormBody(outcome.problems, 'OPENAPI_SCHEMA'), outcome.problems);
      const match = matchRoute(routes, method, path);
      if (match === null) {
        // Valid for Discord, but this sandbox does not serve it: worth a line in the log, as the bot will see 404.
        log(`REST ${method} ${path}: ${outcome.operationId ?? 'this operation'} is not implemented by the sandbox`);
        throw notFound();
      }
      const endpoint = match.route.handler;
      if (endpoint.auth && request.headers.authorization !== `Bot ${this.services.botToken}`) throw unauthorized();
      const limit = this.services.rateLimiter.check(`${method} ${match.route.pattern}`, endpoint.rateLimited);
      if (limit.limited) {
        log(`rate limited: ${method} ${path}`);
        answer(429, RATE_LIMITED_BODY, limit.headers);
        return;
      }
      const result = endpoint.handle(this.services, { params: match.params, query: url.searchParams, body: body.json, files: body.files });
      answer(result.status, result.body, limit.headers);
    } catch (error) {
      let failure = error;
      if (failure instanceof LimitBreach) {
        recorder.violation(method, path, failure.problems);
        failure = failure.answer;
      }
      if (failure instanceof DiscordApiError) {
        answer(failure.status, failure.body());
      } else {
        log(`REST ${method} ${path} failed: ${(failure as Error).stack ?? String(failure)}`);
        answer(500, { code: 0, message: '500: Internal Server Error' });
      }
    } finally {
      recorder.request(method, route, status);
    }
  }
}
