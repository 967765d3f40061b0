import type { JobRecord } from '../store/jobs.js';
import type { BotContext } from './context.js';
import { PermissionDeniedError } from './errors.js';
import { isTrainingServer } from './members.js';
import { clip, literal } from './views.js';

// Cancelling from /cancel and from a job's ❌ button: the owner, or an admin of the server the job was asked in (a
// training belongs to every training server, so any of their admins); what happens depends on how far the job got.

export interface Canceller {
  userId: string;
  isAdmin: boolean;
  /** The server the admin is an admin of. */
  guildId: string | null;
}

export function mayCancel(job: JobRecord, by: Canceller, config: BotContext['config']): boolean {
  if (job.userId === by.userId) return true;
  if (!by.isAdmin) return false;
  return job.kind === 'train' ? isTrainingServer(by.guildId, config) : job.guildId !== null && job.guildId === by.guildId;
}

export async function cancelJob(context: BotContext, job: JobRecord, by: Canceller): Promise<string> {
  if (!mayCancel(job, by, context.config)) {
    throw new PermissionDeniedError('Only the member who asked for this job, or an admin of the server it was asked in, can cancel it.');
  }
  if (job.status !== 'queued' && job.status !== 'running') return `${describe(job)} had already ended.`;
  const { outcome } = await context.producer.cancel(job.jobId);
  switch (outcome) {
    case 'removed':
      await context.delivery.end(job, 'cancelled', null);
      return `${describe(job)} was cancelled before it started.`;
    case 'stopping':
      // The worker stops between two steps; the queue's failed event then closes the job as cancelled.
      return `${describe(job)} is stopping.`;
    case 'finished':
      return `${describe(job)} had already finished.`;
    case 'unknown':
      await context.delivery.end(job, 'failed', 'the job was lost from the queue');
      return `${describe(job)} was no longer in the queue.`;
  }
}

export function describe(job: JobRecord): string {
  const prompt = (job.request as { settings?: { prompt?: string } }).settings?.prompt;
  return prompt === undefined ? `/${job.kind}` : `/${job.kind} “${literal(clip(prompt, 40))}”`;
}
