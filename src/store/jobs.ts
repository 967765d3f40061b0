import Database from 'better-sqlite3';
import { checkChoice, checkObject, fail } from '../common/validation.js';
import { checkJobId } from '../common/job-ids.js';
import { GENERATION_JOB_NAMES, TRAIN_JOB_NAME } from '../queue/contracts.js';

// Every job the bot submits, so its buttons and its delivery survive a restart of the bot.

export const JOB_KINDS = [...GENERATION_JOB_NAMES, TRAIN_JOB_NAME] as const;
export type JobKind = (typeof JOB_KINDS)[number];
export const FINAL_JOB_STATUSES = ['delivered', 'failed', 'cancelled'] as const;
export type FinalJobStatus = (typeof FINAL_JOB_STATUSES)[number];
export type JobStatus = 'queued' | 'running' | FinalJobStatus;

export interface JobRecord {
  jobId: string;
  kind: JobKind;
  userId: string;
  userName: string;
  guildId: string | null;
  channelId: string | null;
  applicationId: string;
  interactionToken: string | null;
  /** Epoch milliseconds. */
  tokenExpiresAt: number | null;
  /** The job's own data minus requester/replyTo (settings, lora, or train fields), as JSON. */
  request: Record<string, unknown>;
  status: JobStatus;
  /** The bot's reply message that shows this job. */
  messageId: string | null;
  createdAt: number;
  finishedAt: number | null;
  error: string | null;
}

export type NewJobRecord = Omit<JobRecord, 'status' | 'messageId' | 'finishedAt' | 'error' | 'createdAt'>;

export interface JobRecords {
  insert(record: NewJobRecord): JobRecord;
  get(jobId: string): JobRecord | null;
  setMessageId(jobId: string, messageId: string): void;
  /** queued → running only. */
  markRunning(jobId: string): boolean;
  /** Moves an unfinished (queued/running) job to a final status. True for exactly one caller: the delivery claim. */
  finish(jobId: string, status: FinalJobStatus, error?: string | null): boolean;
  /** Queued or running, oldest first. */
  unfinished(): JobRecord[];
  /** Queued or running, oldest first. */
  activeForUser(userId: string): JobRecord[];
  /** Jobs of this kind a server asked for since `sinceMs`, however they ended. */
  countSince(kind: JobKind, guildId: string | null, sinceMs: number): number;
  /** Deletes finished job rows older than the cutoff whose panels are no longer kept; returns how many. */
  pruneFinishedBefore(cutoffMs: number): number;
}

interface JobRow {
  job_id: string;
  kind: JobKind;
  user_id: string;
  user_name: string;
  guild_id: string | null;
  channel_id: string | null;
  application_id: string;
  interaction_token: string | null;
  token_expires_at: number | null;
  request: string;
  status: JobStatus;
  message_id: string | null;
  created_at: number;
  finished_at: number | null;
  error: string | null;
}

const UNFINISHED = `status IN ('queued', 'running')`;

export class SqliteJobRecords implements JobRecords {
  private readonly insertRow;
  private readonly selectOne;
  private readonly updateMessageId;
  private readonly updateRunning;
  private readonly updateFinished;
  private readonly selectUnfinished;
  private readonly selectActiveForUser;
  private readonly deleteFinished;
  private readonly countByGuildSince;

  constructor(db: Database.Database, private readonly now: () => number) {
    this.insertRow = db.prepare<JobRow>(`
      INSERT INTO jobs (job_id, kind, user_id, user_name, guild_id, channel_id, application_id, interaction_token,
                        token_expires_at, request, status, message_id, created_at, finished_at, error)
      VALUES (@job_id, @kind, @user_id, @user_name, @guild_id, @channel_id, @application_id, @interaction_token,
              @token_expires_at, @request, @status, @message_id, @created_at, @finished_at, @error)`);
    this.selectOne = db.prepare<[string], JobRow>('SELECT * FROM jobs WHERE job_id = ?');
    this.updateMessageId = db.prepare<[string, string]>('UPDATE jobs SET message_id = ? WHERE job_id = ?');
    this.updateRunning = db.prepare<[string]>(`UPDATE jobs SET status = 'running' WHERE job_id = ? AND status = 'queued'`);
    // The status test inside the UPDATE is what makes finish() a claim: SQLite serialises writers, so only one
    // caller, in this process or another, sees a row change.
    this.updateFinished = db.prepare<[FinalJobStatus, number, string | null, string]>(
      `UPDATE jobs SET status = ?, finished_at = ?, error = ? WHERE job_id = ? AND ${UNFINISHED}`);
    this.selectUnfinished = db.prepare<[], JobRow>(`SELECT * FROM jobs WHERE ${UNFINISHED} ORDER BY created_at, rowid`);
    this.selectActiveForUser = db.prepare<[string], JobRow>(
      `SELECT * FROM jobs WHERE user_id = ? AND ${UNFINISHED} ORDER BY created_at, rowid`);
    this.countByGuildSince = db.prepare<[string, string | null, number], { jobs: number }>(
      'SELECT COUNT(*) AS jobs FROM jobs WHERE kind = ? AND guild_id IS ? AND created_at >= ?');
    this.deleteFinished = db.prepare<[number]>(`
      DELETE FROM jobs
      WHERE status IN ('delivered', 'failed', 'cancelled') AND finished_at < ?
        AND NOT EXISTS (SELECT 1 FROM kept_panels WHERE kept_panels.job_id = jobs.job_id)`);
  }

  insert(record: NewJobRecord): JobRecord {
    const jobId = checkJobId('jobId', record.jobId);
    try {
      this.insertRow.run({
        job_id: jobId,
        kind: checkChoice('kind', record.kind, JOB_KINDS),
        user_id: record.userId,
        user_name: record.userName,
        guild_id: record.guildId,
        channel_id: record.channelId,
        application_id: record.applicationId,
        interaction_token: record.interactionToken,
        token_expires_at: record.tokenExpiresAt,
        request: JSON.stringify(checkObject('request', record.request)),
        status: 'queued',
        message_id: null,
        created_at: this.now(),
        finished_at: null,
        error: null,
      });
    } catch (error) {
      if (error instanceof Database.SqliteError && error.code === 'SQLITE_CONSTRAINT_PRIMARYKEY') {
        fail('jobId', jobId, 'is already recorded');
      }
      throw error;
    }
    return this.get(jobId)!;
  }

  get(jobId: string): JobRecord | null {
    const row = this.selectOne.get(jobId);
    return row === undefined ? null : toRecord(row);
  }

  setMessageId(jobId: string, messageId: string): void {
    if (this.updateMessageId.run(messageId, jobId).changes === 0) fail('jobId', jobId, 'is not a recorded job');
  }

  markRunning(jobId: string): boolean {
    return this.updateRunning.run(jobId).changes === 1;
  }

  finish(jobId: string, status: FinalJobStatus, error: string | null = null): boolean {
    checkChoice('status', status, FINAL_JOB_STATUSES);
    return this.updateFinished.run(status, this.now(), error, jobId).changes === 1;
  }

  unfinished(): JobRecord[] {
    return this.selectUnfinished.all().map(toRecord);
  }

  activeForUser(userId: string): JobRecord[] {
    return this.selectActiveForUser.all(userId).map(toRecord);
  }

  countSince(kind: JobKind, guildId: string | null, sinceMs: number): number {
    return this.countByGuildSince.get(kind, guildId, sinceMs)!.jobs;
  }

  pruneFinishedBefore(cutoffMs: number): number {
    return this.deleteFinished.run(cutoffMs).changes;
  }
}

function toRecord(row: JobRow): JobRecord {
  return {
    jobId: row.job_id,
    kind: row.kind,
    userId: row.user_id,
    userName: row.user_name,
    guildId: row.guild_id,
    channelId: row.channel_id,
    applicationId: row.application_id,
    interactionToken: row.interaction_token,
    tokenExpiresAt: row.token_expires_at,
    request: JSON.parse(row.request) as Record<string, unknown>,
    status: row.status,
    messageId: row.message_id,
    createdAt: row.created_at,
    finishedAt: row.finished_at,
    error: row.error,
  };
}
