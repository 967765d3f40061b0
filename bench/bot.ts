import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { Redis } from 'ioredis';
import { deleteQueueKeys } from '../src/queue/keys.js';
import { SandboxClient } from '../src/sandbox/control-client.js';
import { LocalDiscord } from '../src/sandbox/local-discord.js';
import { startCliProcess } from '../test/support/cli-process.js';
import { percentile } from './queue.js';

// The bot as members feel it, on the local Discord: how fast a slash command is acknowledged, alone and in a burst,
// and how long a small image takes from the command to the channel (tiny model, 64x64, 2 steps, so the bot's and the
// queue's share shows rather than the GPU's).

export interface BotFigures {
  sequentialCommands: number;
  ackP50Ms: number;
  ackP99Ms: number;
  deliveredP50Ms: number;
  deliveredP99Ms: number;
  burstCommands: number;
  burstAckP50Ms: number;
  burstAckMaxMs: number;
}

const SEQUENTIAL_COMMANDS = 20;
const BURST_COMMANDS = 50;
const WAIT_MS = 120_000;

export async function benchBot(redisUrl: string, modelDir: string): Promise<BotFigures> {
  const prefix = `bench-bot-${process.pid}`;
  const dataDir = mkdtempSync(path.join(tmpdir(), 'wrongbot-bench-bot-'));
  const discord = await LocalDiscord.start();
  const sandbox = new SandboxClient(discord.controlUrl);
  const { guildId } = await sandbox.state();
  const env = {
    DISCORD_TOKEN: discord.botToken, DISCORD_API_URL: discord.apiUrl, DISCORD_GUILD_ID: guildId, REDIS_URL: redisUrl,
    QUEUE_PREFIX: prefix, DATA_DIR: dataDir, IMAGE_SIZES: '64x64', DEFAULT_STEPS: '2', LORA_PATH: '',
    MAX_QUEUED_PER_USER: String(BURST_COMMANDS), MODEL_DIR: modelDir, WORKER_DEVICE: 'cpu',
  };
  const bot = await startCliProcess(['bot'], env, /bot ready/);
  const worker = await startCliProcess(['worker'], env, /worker \S+ ready/);
  try {
    const acks: number[] = [];
    const delivered: number[] = [];
    for (let i = 0; i < SEQUENTIAL_COMMANDS; i++) {
      const { interactionId } = await sandbox.command({ user: 'bench', command: 'imagine', options: { prompt: `bench ${i}`, seed: i } });
      const message = await sandbox.waitFor(async () => (await sandbox.messages()).find((candidate) => candidate.interactionId === interactionId && candidate.attachments.length > 0),
        { what: `image ${i}`, timeoutMs: WAIT_MS });
      const interaction = await sandbox.interaction(interactionId);
      acks.push(interaction.acknowledgedAt! - interaction.createdAt);
      delivered.push(message.edits.at(-1)!.at - interaction.createdAt);
    }
    const burst = await Promise.all(Array.from({ length: BURST_COMMANDS }, (_, i) =>
      sandbox.command({ user: `burst${i}`, command: 'imagine', options: { prompt: `burst ${i}`, seed: i } })));
    const burstAcks = await sandbox.waitFor(async () => {
      const views = await Promise.all(burst.map((handle) => sandbox.interaction(handle.interactionId)));
      return views.every((view) => view.acknowledgedAt !== null) ? views.map((view) => view.acknowledgedAt! - view.createdAt) : null;
    }, { what: 'the burst acknowledged', timeoutMs: WAIT_MS });
    acks.sort((a, b) => a - b);
    delivered.sort((a, b) => a - b);
    burstAcks.sort((a, b) => a - b);
    return {
      sequentialCommands: SEQUENTIAL_COMMANDS,
      ackP50Ms: percentile(acks, 0.5),
      ackP99Ms: percentile(acks, 0.99),
      deliveredP50Ms: percentile(delivered, 0.5),
      deliveredP99Ms: percentile(delivered, 0.99),
      burstCommands: BURST_COMMANDS,
      burstAckP50Ms: percentile(burstAcks, 0.5),
      burstAckMaxMs: burstAcks.at(-1)!,
    };
  } finally {
    worker.child.kill('SIGKILL');
    bot.child.kill('SIGTERM');
    await Promise.all([bot.exited, worker.exited]);
    await discord.close();
    const redis = new Redis(redisUrl, { maxRetriesPerRequest: 1 });
    await deleteQueueKeys(redis, prefix);
    redis.disconnect();
    rmSync(dataDir, { recursive: true, force: true });
  }
}
