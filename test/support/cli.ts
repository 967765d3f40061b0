import { execFile } from 'node:child_process';
import os from 'node:os';
import path from 'node:path';
import { REPO_ROOT_DIR } from './fixtures.js';

export const CLI_PATH = path.join(REPO_ROOT_DIR, 'dist', 'src', 'cli', 'main.js');

export interface CliResult {
  code: number;
  stdout: string;
  stderr: string;
}

// A developer's .env or Hugging Face settings must not steer the tests (variables already set win over the file), and
// no test may reach the real Hub: port 9 is one fetch refuses outright.
const ISOLATED_ENV = {
  WORKER_DEVICE: 'cpu', MODEL_DIR: '',
  HF_ENDPOINT: 'http://127.0.0.1:9', HF_TOKEN: '', HF_HUB_OFFLINE: '', HF_HUB_CACHE: path.join(os.tmpdir(), 'wrongbot-tests-no-hf-cache'),
};
/** Runs `wrongbot …` as a user would: a separate process, its exit code and output. */
export function runCli(args: string[], env: Record<string, string> = {}): Promise<CliResult> {
  return new Promise((resolve) => {
    execFile(process.execPath, [CLI_PATH, ...args], { cwd: REPO_ROOT_DIR, maxBuffer: 64 * 1024 * 1024, env: { ...process.env, ...ISOLATED_ENV, ...env } }, (error, stdout, stderr) => {
      const code = error ? (typeof error.code === 'number' ? error.code : 1) : 0;
      resolve({ code, stdout, stderr });
    });
  });
}
