// The progress of a long command (training, downloading) on stderr: a bar redrawn in place on a terminal; plain
// lines, at most one per interval and the last one always, when stderr is a file or a pipe, so logs stay readable.

const PROGRESS_BAR_CELLS = 30;
/** A download reports every chunk, thousands a second: a terminal is redrawn at most this often. */
const TERMINAL_REDRAW_INTERVAL_MS = 100;

export function formatDuration(ms: number): string {
  const seconds = Math.round(ms / 1000);
  return seconds >= 3600 ? `${Math.floor(seconds / 3600)}h${String(Math.floor((seconds % 3600) / 60)).padStart(2, '0')}m`
    : seconds >= 60 ? `${Math.floor(seconds / 60)}m${String(seconds % 60).padStart(2, '0')}s` : `${seconds}s`;
}

const BYTE_UNITS = ['B', 'kB', 'MB', 'GB', 'TB'];

/** Decimal units, as the Hub shows file sizes: 10.3 GB. */
export function formatBytes(bytes: number): string {
  const exponent = Math.min(BYTE_UNITS.length - 1, Math.max(0, Math.floor(Math.log10(Math.max(bytes, 1)) / 3)));
  const value = bytes / 1000 ** exponent;
  return `${exponent === 0 ? value : value.toFixed(value >= 100 ? 0 : value >= 10 ? 1 : 2)} ${BYTE_UNITS[exponent]}`;
}

export class ProgressLine {
  private readonly terminal = process.stderr.isTTY === true;
  /** The first plain line comes one interval in: a short run needs none, and a rate measured at once means little. */
  private lastPlainMs = performance.now();
  private lastDrawnMs = Number.NEGATIVE_INFINITY;
  private drawn = false;

  constructor(private readonly plainIntervalMs: number) {}

  /** `fraction` of the work is done; `facts` say what and how fast; the `last` update is always printed. */
  show(fraction: number, facts: string, last: boolean): void {
    if (this.terminal) {
      if (!last && performance.now() - this.lastDrawnMs < TERMINAL_REDRAW_INTERVAL_MS) return;
      this.lastDrawnMs = performance.now();
      const filled = Math.round(Math.min(1, Math.max(0, fraction)) * PROGRESS_BAR_CELLS);
      process.stderr.write(`\r[${'#'.repeat(filled)}${'.'.repeat(PROGRESS_BAR_CELLS - filled)}] ${facts}\u001b[K`);
      this.drawn = true;
    } else if (last || performance.now() - this.lastPlainMs >= this.plainIntervalMs) {
      this.lastPlainMs = performance.now();
      process.stderr.write(`${facts}\n`);
    }
  }

  /** Ends the line a terminal was redrawing, so that what is printed next starts on a line of its own. */
  finish(): void {
    if (this.drawn) process.stderr.write('\n');
    this.drawn = false;
  }
}
