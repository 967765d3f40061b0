import { spawn, type ChildProcess } from 'node:child_process';
import { CLI_PATH } from './cli.js';
import { REPO_ROOT_DIR } from './fixtures.js';

// Long-running `wrongbot …` processes (worker, bot) for tests: started as a user would, watched through their output.

const READY_TIMEOUT_MS = 120_000;

export interface CliProcess {
  readonly child: ChildProcess;
  /** Everything the process printed so far. */
  output(): string;
  /**
   * The first line (already printed or still to come) that matches; with `after` (an output().length taken earlier),
   * the first printed since then.
   */
  waitForLine(pattern: RegExp, options?: { after?: number; timeoutMs?: number }): Promise<string>;
  exited: Promise<{ code: number | null; signal: NodeJS.Signals | null }>;
}

const running = new Set<ChildProcess>();

export async function startCliProcess(args: string[], env: Record<string, string>, readyPattern: RegExp): Promise<CliProcess> {
  const child = spawn(process.execPath, [CLI_PATH, ...args], { cwd: REPO_ROOT_DIR, stdio: ['ignore', 'pipe', 'pipe'], env: { ...process.env, ...env } });
  running.add(child);
  let text = '';
  const listeners = new Set<() => void>();
  const onData = (chunk: Buffer) => {
    text += chunk.toString();
    for (const listener of listeners) listener();
  };
  child.stdout!.on('data', onData);
  child.stderr!.on('data', onData);
  const exited = new Promise<{ code: number | null; signal: NodeJS.Signals | null }>((resolve) => {
    child.once('exit', (code, signal) => {
      running.delete(child);
      resolve({ code, signal });
      for (const listener of listeners) listener();
    });
  });
  const name = args[0];
  const waitForLine = (pattern: RegExp, { after = 0, timeoutMs = READY_TIMEOUT_MS }: { after?: number; timeoutMs?: number } = {}) => new Promise<string>((resolve, reject) => {
    const check = () => {
      const match = text.slice(after).split('\n').find((line) => pattern.test(line));
      if (match !== undefined) {
        done();
        resolve(match);
      } else if (child.exitCode !== null || child.signalCode !== null) {
        done();
        reject(new Error(`${name} exited before printing ${pattern}:\n${text}`));
      }
    };
    const timer = setTimeout(() => {
      done();
      reject(new Error(`no ${pattern} from ${name} within ${timeoutMs} ms:\n${text}`));
    }, timeoutMs);
    const done = () => {
      clearTimeout(timer);
      listeners.delete(check);
    };
    listeners.add(check);
    check();
  });
  await waitForLine(readyPattern);
  return { child, output: () => text, waitForLine, exited };
}

export function killAllCliProcesses(): void {
  for (const child of running) child.kill('SIGKILL');
}
