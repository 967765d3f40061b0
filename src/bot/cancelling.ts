import type { JobRecord } from '../store/jobs.js';
import type { BotContext } from './context.js';
import { PermissionDeniedError } from './errors.js';

// Cancelling from /cancel and from a job's ❌ button: the owner or an admin may (a training's owner is the admin who
// started it); what happens depends on how far the job got.

export async function cancelJob(context: BotContext, job: JobRecord, by: { userId: string; isAdmin: boolean }): Promise<string> {
  if (job.userId !== by.userId && !by.isAdmin) {
    throw new PermissionDeniedError('Only the member who asked for this job (or a server admin) can cancel it.');
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
  return prompt === undefined ? `/${job.kind}` : `/${job.kind} “${prompt.length > 40 ? `${prompt.slice(0, 39)}…` : prompt}”`;
}
