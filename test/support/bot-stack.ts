import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { LocalDiscord } from '../../src/sandbox/local-discord.js';
import { SandboxClient, type SandboxMessageView, type SandboxState } from '../../src/sandbox/control-client.js';
import { startCliProcess, type CliProcess } from './cli-process.js';
import { deletePrefix, startWorker, testPrefix, TEST_REDIS_URL, TINY_LORA, type WorkerProcess } from './worker-process.js';

// The whole product for end-to-end tests: the local Discord in this process (it stands in for Discord's cloud, at the
// network boundary), a real `wrongbot bot` process and real `wrongbot worker` processes on the tiny model, sharing a
// real Redis under a queue prefix of the test's own.

export const STACK_IMAGE_SIZES = '64x64,128x128,256x256';
const BOT_READY = /bot ready as/;

export interface StackOptions {
  /** The bot's settings; a function when they name something of the local Discord's, such as a role's id. */
  botEnv?: Record<string, string> | ((state: SandboxState) => Record<string, string>);
  workerEnv?: Record<string, string>;
  workers?: number;
  rateLimitEveryNth?: number;
  /** The Redis of the bot and the workers; the shared test Redis unless given (a private one the test may stop). */
  redisUrl?: string;
}

export interface BotStack {
  readonly discord: LocalDiscord;
  readonly sandbox: SandboxClient;
  readonly state: SandboxState;
  readonly prefix: string;
  readonly dataDir: string;
  /** What the bot process runs with, for starting another one beside it. */
  readonly botEnv: Record<string, string>;
  bot: CliProcess;
  readonly workers: WorkerProcess[];
  startWorker(env?: Record<string, string>): Promise<WorkerProcess>;
  /** SIGTERM, and resolves once the bot process is gone. */
  stopBot(): Promise<void>;
  /** A new bot process with the same settings, once it is ready. */
  startBot(): Promise<void>;
  restartBot(): Promise<void>;
  /** The channel's messages once `probe` finds what it waits for. */
  waitForMessages<T>(probe: (messages: SandboxMessageView[]) => T | null | undefined | false, what: string, options?: { user?: string; timeoutMs?: number }): Promise<T>;
  close(): Promise<void>;
}

export async function startBotStack(label: string, options: StackOptions = {}): Promise<BotStack> {
  const prefix = testPrefix(label);
  const dataDir = mkdtempSync(path.join(tmpdir(), `wrongbot-${label}-`));
  const discord = await LocalDiscord.start({ rateLimitEveryNth: options.rateLimitEveryNth ?? 0 });
  const sandbox = new SandboxClient(discord.controlUrl);
  const state = await sandbox.state();
  const redisUrl = options.redisUrl ?? TEST_REDIS_URL;
  const botEnv = {
    DISCORD_TOKEN: discord.botToken,
    DISCORD_API_URL: discord.apiUrl,
    DISCORD_GUILD_ID: state.guildId,
    REDIS_URL: redisUrl,
    QUEUE_PREFIX: prefix,
    DATA_DIR: dataDir,
    LORA_PATH: TINY_LORA,
    IMAGE_SIZES: STACK_IMAGE_SIZES,
    DEFAULT_STEPS: '4',
    ...(typeof options.botEnv === 'function' ? options.botEnv(state) : options.botEnv),
  };
  const workerEnv = { REDIS_URL: redisUrl, WORKER_LOCK_DURATION_MS: '2000', WORKER_STALLED_INTERVAL_MS: '1000', ...options.workerEnv };
  const startBotProcess = () => startCliProcess(['bot'], botEnv, BOT_READY);
  const workers: WorkerProcess[] = [];
  const stack: BotStack = {
    discord, sandbox, state, prefix, dataDir, workers, botEnv,
    bot: await startBotProcess(),
    async startWorker(env = {}) {
      const worker = await startWorker(prefix, { ...workerEnv, ...env });
      workers.push(worker);
      return worker;
    },
    async stopBot() {
      stack.bot.child.kill('SIGTERM');
      await stack.bot.exited;
    },
    async startBot() {
      stack.bot = await startBotProcess();
    },
    async restartBot() {
      await stack.stopBot();
      await stack.startBot();
    },
    async waitForMessages(probe, what, waitOptions = {}) {
      return sandbox.waitFor(async () => probe(await sandbox.messages('general', { user: waitOptions.user })), {
        what, timeoutMs: waitOptions.timeoutMs ?? 60_000,
      });
    },
    async close() {
      for (const worker of workers) worker.child.kill('SIGKILL');
      stack.bot.child.kill('SIGTERM');
      await stack.bot.exited;
      await Promise.all(workers.map((worker) => worker.exited));
      await discord.close();
      await deletePrefix(prefix, redisUrl);
      rmSync(dataDir, { recursive: true, force: true });
    },
  };
  for (let i = 0; i < (options.workers ?? 1); i++) await stack.startWorker();
  return stack;
}

/** The message that answers an interaction (its @original), once it shows `probe`'s condition. */
export function answerTo(messages: SandboxMessageView[], interactionId: string): SandboxMessageView | undefined {
  return messages.find((message) => message.interactionId === interactionId && !message.ephemeral);
}
