/** Log lines of the long-running commands (bot, worker, start): one line each, with the time. */
export function timestamped(line: string): void {
  console.log(`${new Date().toISOString()} ${line}`);
}
