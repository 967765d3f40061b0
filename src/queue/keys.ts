// Names of wrongbot's own Redis keys, beside BullMQ's under the same prefix, so that one QUEUE_PREFIX separates
// one deployment (or one test) from another entirely.

export class QueueKeys {
  constructor(readonly prefix: string) {}

  image(jobId: string, name: string): string {
    return `${this.prefix}:wrongbot:image:${jobId}:${name}`;
  }

  waitingJobsOf(userId: string): string {
    return `${this.prefix}:wrongbot:waiting:${userId}`;
  }

  durations(jobName: string): string {
    return `${this.prefix}:wrongbot:durations:${jobName}`;
  }

  cancelRequested(jobId: string): string {
    return `${this.prefix}:wrongbot:cancel:${jobId}`;
  }

  get controlChannel(): string {
    return `${this.prefix}:wrongbot:control`;
  }
}
