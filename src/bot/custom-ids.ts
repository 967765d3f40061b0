import { checkJobId, checkPanelIndex } from '../common/job-ids.js';
import { fail } from '../common/validation.js';

// Buttons carry their whole state in custom_id (at most 100 characters), with the job id pointing into the database,
// so a button pressed on a message from before a restart means exactly what it meant then.

export type ButtonAction =
  | { kind: 'rerun'; jobId: string }
  | { kind: 'compare'; jobId: string }
  | { kind: 'cancel'; jobId: string }
  | { kind: 'vote'; jobId: string; panelIndex: number };

const PREFIX = 'wb1';
const CODES = Object.freeze({ rerun: 'rr', compare: 'vs', cancel: 'x', vote: 'v' } as const);

export function encodeButton(action: ButtonAction): string {
  const parts = [PREFIX, CODES[action.kind], action.jobId];
  if (action.kind === 'vote') parts.push(String(action.panelIndex));
  return parts.join(':');
}

/** The action a custom_id names; an InvalidRequestError for one this bot never made (or an older format). */
export function decodeButton(customId: string): ButtonAction {
  const [prefix, code, jobId, panel, ...rest] = customId.split(':');
  if (prefix !== PREFIX || rest.length > 0 || jobId === undefined) fail('custom_id', customId, 'is not a wrongbot button');
  checkJobId('custom_id', jobId);
  const kind = (Object.keys(CODES) as (keyof typeof CODES)[]).find((name) => CODES[name] === code);
  if (kind === undefined) fail('custom_id', customId, 'names no wrongbot action');
  if (kind !== 'vote') {
    if (panel !== undefined) fail('custom_id', customId, 'has a panel where none belongs');
    return { kind, jobId };
  }
  if (!/^\d{1,2}$/.test(panel ?? '')) fail('custom_id', customId, 'has no valid panel number');
  return { kind, jobId, panelIndex: checkPanelIndex('custom_id', Number(panel)) };
}
