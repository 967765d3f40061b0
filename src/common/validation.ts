// Checks that turn bad input into an error naming the field and its value, shared by everything that accepts a
// generation: the pipeline, the job contracts and the commands. Nothing is silently corrected.

export class InvalidRequestError extends Error {
  override name = 'InvalidRequestError';

  constructor(readonly field: string, readonly shownValue: string, readonly rule: string) {
    super(`${field} = ${shownValue} ${rule}`);
  }
}

export function fail(field: string, value: unknown, rule: string): never {
  // String() keeps NaN and Infinity readable; JSON.stringify would print them as null.
  const shown = typeof value === 'number' ? String(value) : JSON.stringify(value) ?? String(value);
  throw new InvalidRequestError(field, shown, rule);
}

export function checkInteger(field: string, value: unknown, min: number, max: number): number {
  if (typeof value !== 'number' || !Number.isInteger(value) || value < min || value > max) {
    fail(field, value, `must be an integer from ${min} to ${max}`);
  }
  return value;
}

export function checkNumber(field: string, value: unknown, min: number, max: number): number {
  if (typeof value !== 'number' || !Number.isFinite(value) || value < min || value > max) {
    fail(field, value, `must be a number from ${min} to ${max}`);
  }
  return value;
}

// Control characters other than tab and line breaks, and unpaired surrogates: nothing a person types, and what
// XML (the captions' SVG) and Discord refuse.
const UNPRINTABLE = /[\u0000-\u0008\u000B\u000C\u000E-\u001F\u007F-\u009F\uFFFE\uFFFF]|[\uD800-\uDBFF](?![\uDC00-\uDFFF])|(?<![\uD800-\uDBFF])[\uDC00-\uDFFF]/u;

export function checkText(field: string, value: unknown, maxChars: number): string {
  if (typeof value !== 'string') fail(field, value, 'must be text');
  if (value.length > maxChars) fail(field, `${value.slice(0, 40)}…`, `is ${value.length} characters; the limit is ${maxChars}`);
  const unprintable = UNPRINTABLE.exec(value);
  if (unprintable !== null) {
    const code = unprintable[0].codePointAt(0)!.toString(16).toUpperCase().padStart(4, '0');
    fail(field, value.length > 40 ? `${value.slice(0, 40)}…` : value, `contains the control character U+${code} at position ${unprintable.index}; remove it`);
  }
  return value;
}

export function checkChoice<T extends string>(field: string, value: unknown, choices: readonly T[]): T {
  if (!choices.includes(value as T)) fail(field, value, `must be one of ${choices.join(', ')}`);
  return value as T;
}

export function checkObject(field: string, value: unknown): Record<string, unknown> {
  if (typeof value !== 'object' || value === null || Array.isArray(value)) fail(field, value, 'must be an object');
  return value as Record<string, unknown>;
}
