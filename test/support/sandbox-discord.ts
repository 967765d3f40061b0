import { Client, GatewayIntentBits, Partials, type ClientEvents } from 'discord.js';
import { SandboxClient } from '../../src/sandbox/control-client.js';
import { LocalDiscord, type LocalDiscordOptions } from '../../src/sandbox/local-discord.js';

// A LocalDiscord with a plain discord.js Client logged in to it (no wrongbot code), configured as the bot is.

export interface SandboxWithClient {
  readonly sandbox: LocalDiscord;
  readonly control: SandboxClient;
  readonly client: Client<true>;
  close(): Promise<void>;
}

export async function startSandboxWithClient(options: LocalDiscordOptions = {}): Promise<SandboxWithClient> {
  const sandbox = await LocalDiscord.start(options);
  const client = new Client({
    intents: [GatewayIntentBits.Guilds, GatewayIntentBits.GuildMessageReactions],
    partials: [Partials.Message, Partials.Channel, Partials.Reaction, Partials.User, Partials.GuildMember],
    rest: { api: sandbox.apiUrl },
  });
  const ready = nextEvent(client, 'clientReady');
  try {
    await client.login(sandbox.botToken);
    await ready;
  } catch (error) {
    await client.destroy();
    await sandbox.close();
    throw error;
  }
  return {
    sandbox, client: client as Client<true>, control: new SandboxClient(sandbox.controlUrl),
    async close() {
      await client.destroy();
      await sandbox.close();
    },
  };
}

/** The next emission of `event` (its arguments), failing after `timeoutMs` with the event's name. */
export function nextEvent<E extends keyof ClientEvents>(client: Client, event: E, timeoutMs = 10_000): Promise<ClientEvents[E]> {
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => {
      client.off(event, listener);
      reject(new Error(`no ${String(event)} event within ${timeoutMs} ms`));
    }, timeoutMs);
    const listener = (...args: ClientEvents[E]) => {
      clearTimeout(timer);
      resolve(args);
    };
    client.once(event, listener as never);
  });
}
