import { MAX_PANELS } from './generation-limits.js';
import { checkInteger, fail } from './validation.js';

// Job ids and panel indexes end up in file names, so they are checked before they reach one. Only the lowercase
// form crypto.randomUUID() produces is accepted: on a case-insensitive disk two spellings would share one file.

const JOB_ID_PATTERN = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/;

export function checkJobId(field: string, value: unknown): string {
  if (typeof value !== 'string' || !JOB_ID_PATTERN.test(value)) fail(field, value, 'must be a lowercase UUID');
  return value;
}

export function checkPanelIndex(field: string, value: unknown): number {
  return checkInteger(field, value, 0, MAX_PANELS - 1);
}
