import { checkJobId, checkPanelIndex } from '../common/job-ids.js';
import { fail } from '../common/validation.js';
import type { JudgingSide } from '../store/judging.js';

// Buttons carry their whole state in custom_id (at most 100 characters), with the job id pointing into the database,
// so a button pressed on a message from before a restart means exactly what it meant then.

export type ButtonAction =
  | { kind: 'rerun'; jobId: string }
  | { kind: 'compare'; jobId: string }
  | { kind: 'cancel'; jobId: string }
  | { kind: 'vote'; jobId: string; panelIndex: number }
  /** A blind pair's vote; the job is the pair's. */
  | { kind: 'judge'; jobId: string; side: JudgingSide }
  /** Serve the candidate of this job: a training's, or a judged pair's. */
  | { kind: 'promote'; jobId: string };

const PREFIX = 'wb1';
const CODES = Object.freeze({ rerun: 'rr', compare: 'vs', cancel: 'x', vote: 'v', judge: 'j', promote: 'up' } as const);
const SIDE_CODES = Object.freeze({ left: 'l', right: 'r' } as const satisfies Record<JudgingSide, string>);

export function encodeButton(action: ButtonAction): string {
  const parts = [PREFIX, CODES[action.kind], action.jobId];
  if (action.kind === 'vote') parts.push(String(action.panelIndex));
  if (action.kind === 'judge') parts.push(SIDE_CODES[action.side]);
  return parts.join(':');
}

/** The action a custom_id names; an InvalidRequestError for one this bot never made (or an older format). */
export function decodeButton(customId: string): ButtonAction {
  const [prefix, code, jobId, detail, ...rest] = customId.split(':');
  if (prefix !== PREFIX || rest.length > 0 || jobId === undefined) fail('custom_id', customId, 'is not a wrongbot button');
  checkJobId('custom_id', jobId);
  const kind = (Object.keys(CODES) as (keyof typeof CODES)[]).find((name) => CODES[name] === code);
  if (kind === undefined) fail('custom_id', customId, 'names no wrongbot action');
  switch (kind) {
    case 'vote':
      if (!/^\d{1,2}$/.test(detail ?? '')) fail('custom_id', customId, 'has no valid panel number');
      return { kind, jobId, panelIndex: checkPanelIndex('custom_id', Number(detail)) };
    case 'judge': {
      const side = (Object.keys(SIDE_CODES) as JudgingSide[]).find((name) => SIDE_CODES[name] === detail);
      if (side === undefined) fail('custom_id', customId, 'has no valid side');
      return { kind, jobId, side };
    }
    default:
      if (detail !== undefined) fail('custom_id', customId, 'has a detail where none belongs');
      return { kind, jobId };
  }
}
