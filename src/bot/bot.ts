import { once } from 'node:events';
import { Client, Events, GatewayIntentBits, Partials } from 'discord.js';
import type { Redis } from 'ioredis';
import { JobProducer } from '../queue/producer.js';
import { servedModels } from '../queue/models.js';
import { producerConnection, workerConnection } from '../queue/redis.js';
import { ResultsStore } from '../queue/results-store.js';
import { TrainingTransfer } from '../queue/training-transfer.js';
import { ConfigError } from '../common/environment.js';
import { BotStore } from '../store/database.js';
import { lockDataDir } from '../store/data-dir-lock.js';
import type { DatasetRecovery } from '../store/dataset.js';
import { LoraVersionsError } from '../store/trainings.js';
import { commandDefinitions } from '../commands/index.js';
import type { BotConfig } from './config.js';
import type { BotContext } from './context.js';
import { Curation } from './curation.js';
import { Delivery } from './delivery.js';
import { deployCommands } from './deploy.js';
import { DiscordClock } from './discord-clock.js';
import { handleInteraction } from './interactions.js';
import { JobMessages } from './job-messages.js';
import { JobSubmitter } from './job-submitter.js';
import { isTrainingServer } from './members.js';
import { listenForVotes } from './reactions.js';
import { queueValidation } from './validation.js';

// The bot process: Discord on one side, the job queue on the other, the database in between. It never loads a model:
// images arrive as PNG bytes through Redis.

const DAY_MS = 24 * 3600_000;
export const RETENTION_SWEEP_INTERVAL_MS = 3600_000;
/** Job records (a few hundred bytes) outlive their images, so 🔁 and 🆚 on older messages keep working. */
export const JOB_RECORD_RETENTION_DAYS = 90;

export interface RunningBot {
  readonly client: Client<true>;
  close(): Promise<void>;
}

export async function startBot(config: BotConfig, redisUrl: string, log: (line: string) => void): Promise<RunningBot> {
  // Before the store: the training set's recovery below takes whatever is underway for a crash, so no other bot may
  // be changing it.
  const lock = await lockDataDir(config.dataDir, log);
  let store: BotStore | null = null;
  try {
    store = BotStore.open(config.dataDir);
    logRecovery(store.dataset.recover(), log);
    store.trainings.start(config.loraVersion);
  } catch (error) {
    store?.close();
    lock.release();
    if (error instanceof LoraVersionsError) throw new ConfigError(error.message);
    throw error;
  }
  const commands = producerConnection(redisUrl);
  // QueueEvents block on their connection, so each gets its own.
  const eventConnections = { generation: workerConnection(redisUrl), training: workerConnection(redisUrl) };
  const connections: Redis[] = [commands, eventConnections.generation, eventConnections.training];
  const producer = new JobProducer(commands, config.queuePrefix, config.queueLimits);
  const client = new Client({
    intents: [GatewayIntentBits.Guilds, GatewayIntentBits.GuildMessageReactions],
    // Votes come days later on messages long gone from the cache.
    partials: [Partials.Message, Partials.Channel, Partials.Reaction, Partials.User, Partials.GuildMember],
    ...(config.apiUrl === null ? {} : { rest: { api: config.apiUrl } }),
  });
  client.on(Events.Error, (error) => log(`discord: ${error.message}`));
  client.on(Events.Warn, (message) => log(`discord warning: ${message}`));

  let delivery: Delivery | null = null;
  let sweepTimer: NodeJS.Timeout | null = null;
  const close = async () => {
    if (sweepTimer) clearInterval(sweepTimer);
    await delivery?.close();
    await client.destroy();
    await producer.close();
    for (const connection of connections) connection.disconnect();
    store.close();
    lock.release();
  };

  try {
    // The producer's connection fails commands while disconnected instead of queueing them; let it connect first.
    if (commands.status !== 'ready') await once(commands, 'ready');
    for (const model of await servedModels(commands, producer.keys)) {
      const undrawable = config.imageSizes.filter((size) => size.width % model.sizeMultiple !== 0 || size.height % model.sizeMultiple !== 0);
      if (undrawable.length > 0) {
        log(`warning: IMAGE_SIZES offers ${undrawable.map((size) => size.value).join(', ')}, which the workers' model ${model.name} cannot draw (sides must be multiples of ${model.sizeMultiple}); they will be refused`);
      }
    }
    const ready = once(client, Events.ClientReady);
    await client.login(config.token);
    await ready;
    const readyClient = client as Client<true>;
    const applicationId = readyClient.application.id;
    const discordClock = new DiscordClock();
    const discordNow = () => discordClock.now();
    const messages = new JobMessages(client.rest, applicationId, log, discordNow);
    // The delivery queues a candidate's validation through the context, which needs the delivery first.
    let context: BotContext | null = null;
    delivery = new Delivery({
      store, producer, messages, log,
      results: new ResultsStore(commands, producer.keys),
      imageRetentionMs: config.imageRetentionDays * DAY_MS,
      curates: (guildId) => isTrainingServer(guildId, config),
      onTrained: (training, candidate) => queueValidation(context!, training, candidate),
    });
    context = {
      config, store, producer, delivery, log,
      submitter: new JobSubmitter(store, producer, new TrainingTransfer(commands, producer.keys, config.trainingTransfer), delivery, log, discordNow),
      curation: new Curation(store, config.votesToCurate, log),
    };
    // Wired before anything is awaited, so no interaction that arrives after READY goes unanswered.
    client.on(Events.InteractionCreate, (interaction) => {
      discordClock.observe(interaction.createdTimestamp);
      void handleInteraction(interaction, context);
    });
    listenForVotes(readyClient, context);
    if (config.guildId !== null) {
      const count = await deployCommands(client.rest, applicationId, config.guildId, commandDefinitions(config.imageSizes));
      log(`registered ${count} commands for guild ${config.guildId}`);
    }
    await delivery.start(config.queuePrefix, eventConnections);
    const sweep = () => {
      try {
        const removed = store.images.sweep();
        if (removed > 0) log(`removed ${removed} kept image(s) older than ${config.imageRetentionDays} days`);
        store.jobs.pruneFinishedBefore(Date.now() - Math.max(config.imageRetentionDays, JOB_RECORD_RETENTION_DAYS) * DAY_MS);
      } catch (error) {
        // A locked database or an unreadable folder now is no reason to stop serving; the next sweep tries again.
        log(`retention sweep: ${(error as Error).message}`);
      }
    };
    sweep();
    sweepTimer = setInterval(sweep, RETENTION_SWEEP_INTERVAL_MS).unref();
    log(`bot ready as ${readyClient.user.tag} in ${readyClient.guilds.cache.size} server(s)`);
    return { client: readyClient, close };
  } catch (error) {
    await close().catch(() => {});
    throw error;
  }
}

/** What the training set needed after a crash, one line per kind of repair. */
function logRecovery(recovery: DatasetRecovery, log: (line: string) => void): void {
  const ids = (list: readonly number[]) => list.map((id) => `#${id}`).join(', ');
  if (recovery.completed.length > 0) log(`dataset: completed the curation of entries ${ids(recovery.completed)}, which a crash interrupted`);
  if (recovery.undone.length > 0) log(`dataset: undid the curation of entries ${ids(recovery.undone)}, which a crash interrupted and whose kept image is gone`);
  if (recovery.removed.length > 0) log(`dataset: completed the removal of entries ${ids(recovery.removed)}, which a crash interrupted`);
  if (recovery.sidecarsRewritten.length > 0) log(`dataset: rewrote the out-of-date sidecars of entries ${ids(recovery.sidecarsRewritten)}`);
  if (recovery.strayFiles.length > 0) log(`dataset: deleted ${recovery.strayFiles.length} file(s) no entry owns: ${recovery.strayFiles.join(', ')}`);
}
