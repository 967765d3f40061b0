import { DiscordAPIError, Routes, type APIMessage, type REST } from 'discord.js';
import type { JobRecord } from '../store/jobs.js';
import { THUMBS_DOWN, type MessageView } from './views.js';

// The one place that writes a job's message to Discord. While the interaction token lives, the job's message is the
// interaction's reply (@original); after that, a finished job is posted to the channel. Edits to one message are
// spaced at least EDIT_INTERVAL_MS apart: a newer view replaces one still waiting, and nothing follows a final view.

export const EDIT_INTERVAL_MS = 2_000;
/** Discord accepts edits for 15 minutes; one started this close to the end might not make it. */
export const TOKEN_SAFETY_MARGIN_MS = 30_000;
/** Discord error codes that mean the interaction's token no longer works. */
const EXPIRED_TOKEN_CODES: ReadonlySet<number | string> = new Set([50027, 10015, 10062]);

export interface OutgoingFile {
  name: string;
  data: Buffer;
}

export interface Shown {
  messageId: string;
  channelId: string;
  /** True when the view went to the channel as a new message because the interaction had expired. */
  inChannel: boolean;
}

interface Pending {
  job: JobRecord;
  render: (inChannel: boolean) => MessageView;
  files: OutgoingFile[];
  final: boolean;
  resolve: (shown: Shown | null) => void;
  reject: (error: Error) => void;
}

interface MessageState {
  jobId: string;
  lastSentAt: number;
  pending: Pending | null;
  timer: NodeJS.Timeout | null;
  sending: Promise<void> | null;
  ended: boolean;
}

export class JobMessages {
  private readonly states = new Map<string, MessageState>();

  constructor(
    private readonly rest: REST,
    private readonly applicationId: string,
    private readonly log: (line: string) => void,
    private readonly now: () => number = Date.now,
  ) {}

  /**
   * Shows a view on the job's message. Resolves once it is on Discord (or superseded: null). A final view is never
   * dropped: when the token has expired it becomes a new channel message, and it is the last thing sent for the job.
   */
  show(job: JobRecord, render: (inChannel: boolean) => MessageView, options: { final?: boolean; files?: OutgoingFile[] } = {}): Promise<Shown | null> {
    const state = this.stateOf(job.jobId);
    if (state.ended) return Promise.resolve(null);
    const final = options.final ?? false;
    if (final) state.ended = true;
    return new Promise((resolve, reject) => {
      // A view replaced before it was sent is done with: its caller only waited for the message to be current.
      state.pending?.resolve(null);
      state.pending = { job, render, files: options.files ?? [], final, resolve, reject };
      this.schedule(state);
    });
  }

  /** Adds the bot's own 👎 so members can vote with one click. */
  async addVoteReaction(shown: Shown): Promise<void> {
    await this.rest.put(Routes.channelMessageOwnReaction(shown.channelId, shown.messageId, encodeURIComponent(THUMBS_DOWN)));
  }

  /** Waits for every message still being written; used at shutdown. */
  async drain(): Promise<void> {
    for (let busy = this.busy(); busy.length > 0; busy = this.busy()) {
      for (const state of busy) {
        if (state.timer) {
          clearTimeout(state.timer);
          state.timer = null;
          state.lastSentAt = 0;
          this.schedule(state);
        }
      }
      await Promise.all(busy.map((state) => state.sending));
    }
  }

  private busy(): MessageState[] {
    return [...this.states.values()].filter((state) => state.sending !== null || state.pending !== null);
  }

  private stateOf(jobId: string): MessageState {
    let state = this.states.get(jobId);
    if (!state) {
      state = { jobId, lastSentAt: 0, pending: null, timer: null, sending: null, ended: false };
      this.states.set(jobId, state);
    }
    return state;
  }

  private schedule(state: MessageState): void {
    if (state.sending || state.timer) return;
    const waitMs = state.lastSentAt + EDIT_INTERVAL_MS - this.now();
    if (waitMs > 0) {
      state.timer = setTimeout(() => {
        state.timer = null;
        this.schedule(state);
      }, waitMs);
      return;
    }
    const pending = state.pending;
    if (!pending) return;
    state.pending = null;
    state.lastSentAt = this.now();
    state.sending = this.send(pending).then(pending.resolve, pending.reject).finally(() => {
      state.sending = null;
      state.lastSentAt = this.now();
      if (state.pending) this.schedule(state);
      else if (state.ended) this.states.delete(state.jobId);
    });
  }

  private async send(pending: Pending): Promise<Shown | null> {
    const { job } = pending;
    const tokenUsable = job.interactionToken !== null && job.tokenExpiresAt !== null
      && this.now() < job.tokenExpiresAt - TOKEN_SAFETY_MARGIN_MS;
    try {
      if (tokenUsable) {
        try {
          const message = await this.rest.patch(Routes.webhookMessage(this.applicationId, job.interactionToken!, '@original'), {
            body: this.body(pending.render(false), pending.files),
            files: this.files(pending.files),
            auth: false,
          }) as APIMessage;
          return { messageId: message.id, channelId: message.channel_id, inChannel: false };
        } catch (error) {
          if (!(error instanceof DiscordAPIError && EXPIRED_TOKEN_CODES.has(error.code))) throw error;
          this.log(`job ${job.jobId}: the interaction expired (${error.message})`);
        }
      }
      // Progress on a message nobody can see any more is not worth a new message; the result is.
      if (!pending.final || job.channelId === null) return null;
      const message = await this.rest.post(Routes.channelMessages(job.channelId), {
        body: this.body(pending.render(true), pending.files),
        files: this.files(pending.files),
      }) as APIMessage;
      return { messageId: message.id, channelId: message.channel_id, inChannel: true };
    } catch (error) {
      this.log(`job ${job.jobId}: could not update its message: ${(error as Error).message}`);
      if (pending.final) throw error;
      return null;
    }
  }

  private body(view: MessageView, files: OutgoingFile[]): Record<string, unknown> {
    return {
      content: view.content,
      embeds: view.embeds,
      components: view.components,
      allowed_mentions: { parse: [], users: view.mentionUserIds },
      ...(files.length > 0 ? { attachments: files.map((file, index) => ({ id: String(index), filename: file.name })) } : {}),
    };
  }

  private files(files: OutgoingFile[]): Array<{ name: string; data: Buffer; contentType: string }> | undefined {
    return files.length > 0 ? files.map((file) => ({ name: file.name, data: file.data, contentType: 'image/png' })) : undefined;
  }
}
