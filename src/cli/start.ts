import { spawn, type ChildProcess } from 'node:child_process';
import { once } from 'node:events';
import { fileURLToPath } from 'node:url';
import { ConfigError, integerSetting, optionalString } from '../common/environment.js';
import { readBotConfig } from '../bot/config.js';
import { workerModels } from '../models/resolve.js';
import { resolveRedis } from '../queue/redis.js';
import { LocalDiscord } from '../sandbox/local-discord.js';
import { SandboxClient } from '../sandbox/control-client.js';
import { DEFAULT_SANDBOX_PORT } from './sandbox.js';
import { timestamped } from './log.js';
import { stopSignal } from './signals.js';
import { parseOptions, type OptionSpec } from './options.js';
import { workerEnvironment } from './worker-environment.js';

export const START_USAGE = 'wrongbot start    (the bot and a worker; with no DISCORD_TOKEN, a local Discord and the bundled tiny model)';
/** None: every setting comes from the environment. */
export const START_OPTIONS: OptionSpec = {};

// One command for a single host: the bot and a worker as child processes sharing one Redis. Without a token it
// also runs the local Discord, so everything can be tried (and driven with `wrongbot sandbox …`) offline.

/** A child that dies this soon after starting has a setup problem; restarting it would only repeat the error. */
const STARTUP_GRACE_MS = 20_000;
const MAX_RESTART_DELAY_MS = 30_000;
const MAIN_SCRIPT = fileURLToPath(new URL('./main.js', import.meta.url));
const TINY_MODEL_DIR = 'test/fixtures/tiny-sdxl';
const TINY_LORA_PATH = 'test/fixtures/tiny-sdxl-lora/tiny_sdxl_lora_kohya.safetensors';
/** SDXL's aspect buckets at an eighth of the size: the tiny model draws them in well under a second. */
const TINY_IMAGE_SIZES = '128x128,144x112,112x144,160x96,96x160,176x96,96x176';
const TINY_DEFAULT_STEPS = '20';

interface Supervised {
  name: string;
  args: string[];
  env: NodeJS.ProcessEnv;
  child: ChildProcess | null;
  startedAt: number;
  restarts: number;
}

export async function runStart(argv: string[]): Promise<void> {
  parseOptions(argv, START_OPTIONS);
  const env: NodeJS.ProcessEnv = { ...process.env };
  const token = optionalString(env, 'DISCORD_TOKEN');
  let sandbox: LocalDiscord | null = null;
  if (token === null) {
    const port = integerSetting(env, 'SANDBOX_PORT', DEFAULT_SANDBOX_PORT, 0, 65_535);
    sandbox = await startLocalDiscord(port);
    const state = await new SandboxClient(sandbox.controlUrl).state();
    Object.assign(env, {
      DISCORD_TOKEN: sandbox.botToken,
      DISCORD_API_URL: sandbox.apiUrl,
      DISCORD_GUILD_ID: state.guildId,
      MODEL_DIR: env['MODEL_DIR'] || TINY_MODEL_DIR,
      LORA_PATH: env['LORA_PATH'] ?? TINY_LORA_PATH,
      IMAGE_SIZES: env['IMAGE_SIZES'] || TINY_IMAGE_SIZES,
      DEFAULT_STEPS: env['DEFAULT_STEPS'] || TINY_DEFAULT_STEPS,
    });
  }
  const workerSetting = optionalString(env, 'WORKER') ?? 'on';
  if (workerSetting !== 'on' && workerSetting !== 'off') throw new ConfigError(`WORKER = ${JSON.stringify(workerSetting)} must be on or off`);
  const withWorker = workerSetting === 'on';
  // Checked here too, so a bad setting (or a repo not pulled yet) stops everything before any process starts.
  readBotConfig(env, env['DISCORD_TOKEN']!);
  // The worker's box, checked as `wrongbot doctor` checks it (in a child, which reads the models' graphs): a failed
  // check stops the start with its fix rather than a worker that dies loading.
  if (withWorker) {
    workerModels(env);
    try {
      await preflight(env);
    } catch (error) {
      await sandbox?.close();
      throw error;
    }
  }
  // Resolved once for both children: a private Redis is started by this process and shared, not raced for.
  const redis = await resolveRedis(env);
  for (const warning of redis.warnings) timestamped(`warning: ${warning}`);
  env['REDIS_URL'] = redis.url;

  const children: Supervised[] = [
    { name: 'bot', args: ['bot'], env, child: null, startedAt: 0, restarts: 0 },
    ...(withWorker ? [{ name: 'worker', args: ['worker'], env: workerEnvironment(env), child: null, startedAt: 0, restarts: 0 }] : []),
  ];
  let stopping = false;
  let failure: Error | null = null;
  const stopped = new Promise<void>((resolve) => {
    const stopAll = async () => {
      if (stopping) return;
      stopping = true;
      await Promise.all(children.map(async (supervised) => {
        const child = supervised.child;
        if (child && child.exitCode === null && child.signalCode === null) {
          const exited = once(child, 'exit');
          child.kill('SIGTERM');
          await exited;
        }
      }));
      await sandbox?.close();
      await redis.privateServer?.stop();
      resolve();
    };
    const launch = (supervised: Supervised) => {
      supervised.startedAt = Date.now();
      const child = spawn(process.execPath, [MAIN_SCRIPT, ...supervised.args], { env: supervised.env, stdio: ['ignore', 'pipe', 'pipe'] });
      supervised.child = child;
      prefixLines(child, supervised.name);
      child.on('exit', (code, signal) => {
        if (stopping) return;
        const ranMs = Date.now() - supervised.startedAt;
        if (ranMs < STARTUP_GRACE_MS) {
          failure = new Error(`the ${supervised.name} stopped during start-up (${signal ?? `exit code ${code}`}); see its lines above`);
          void stopAll();
          return;
        }
        const delayMs = Math.min(1000 * 2 ** supervised.restarts, MAX_RESTART_DELAY_MS);
        supervised.restarts += 1;
        timestamped(`the ${supervised.name} stopped (${signal ?? `exit code ${code}`}); restarting it in ${delayMs / 1000} s`);
        setTimeout(() => { if (!stopping) launch(supervised); }, delayMs);
      });
    };
    for (const supervised of children) launch(supervised);
    void stopSignal(timestamped).then(stopAll);
  });
  if (sandbox) printSandboxHelp(sandbox);
  await stopped;
  if (failure) throw failure;
}

async function preflight(env: NodeJS.ProcessEnv): Promise<void> {
  const doctor = spawn(process.execPath, [MAIN_SCRIPT, 'doctor'], { env, stdio: ['ignore', 'pipe', 'inherit'] });
  prefixLines(doctor, 'doctor');
  const [code] = await once(doctor, 'exit') as [number | null];
  if (code !== 0) throw new ConfigError('`wrongbot doctor` found a problem (its lines above say which, and the fix); nothing was started');
}

/** The local Discord on SANDBOX_PORT; a port already taken is said in words and with the way out, not as EADDRINUSE. */
async function startLocalDiscord(port: number): Promise<LocalDiscord> {
  try {
    return await LocalDiscord.start({ port, log: (line) => timestamped(`[discord] ${line}`) });
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code !== 'EADDRINUSE') throw error;
    throw new ConfigError(`SANDBOX_PORT = ${port}: the port is already taken, probably by another wrongbot (\`npm start\`) still running; `
      + 'stop it, or pick another port for this one, e.g. `SANDBOX_PORT=0 npm start` for any free port (it prints the SANDBOX_URL to use)');
  }
}

function prefixLines(child: ChildProcess, name: string): void {
  for (const [stream, sink] of [[child.stdout, process.stdout], [child.stderr, process.stderr]] as const) {
    let partial = '';
    stream?.setEncoding('utf8');
    stream?.on('data', (chunk: string) => {
      const lines = (partial + chunk).split('\n');
      partial = lines.pop()!;
      for (const line of lines) sink.write(`[${name}] ${line}\n`);
    });
  }
}

function printSandboxHelp(sandbox: LocalDiscord): void {
  const port = new URL(sandbox.controlUrl).port;
  const sandboxUrl = port === String(DEFAULT_SANDBOX_PORT) ? '' : `SANDBOX_URL=${sandbox.controlUrl} `;
  console.log([
    '',
    `No DISCORD_TOKEN: running against a local Discord at ${sandbox.apiUrl} with the bundled tiny model (random weights).`,
    'Drive it from another terminal:',
    `  ${sandboxUrl}npx wrongbot sandbox command imagine --as alice --opt "prompt=a cat" --opt seed=42`,
    `  ${sandboxUrl}npx wrongbot sandbox messages --save out/sandbox`,
    `  ${sandboxUrl}npx wrongbot sandbox react <messageId> --as bob`,
    `The same over HTTP: ${sandbox.controlUrl} (README, "The local Discord"). Ctrl-C stops everything.`,
    '',
  ].join('\n'));
}
