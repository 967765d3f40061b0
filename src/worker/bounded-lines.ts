import type { Readable } from 'node:stream';

// Lines of another program's output, as readline gives them, except that a line is not buffered without limit: a
// program that prints megabytes without a newline would otherwise hold them all in this process's memory.

export interface BoundedLineHandlers {
  line: (line: string) => void;
  /** The line being read grew past the limit; nothing more is read from the stream. */
  overflow: () => void;
}

export function readBoundedLines(stream: Readable, maxLineChars: number, handlers: BoundedLineHandlers): void {
  let partial = '';
  let overflowed = false;
  stream.setEncoding('utf8');
  stream.on('data', (chunk: string) => {
    if (overflowed) return;
    const lines = (partial + chunk).split(/\r\n|\r|\n/);
    partial = lines.pop()!;
    // Blank lines carry nothing; they also come from a \r\n split across two chunks.
    for (const line of lines) if (line !== '') handlers.line(line);
    if (partial.length > maxLineChars) {
      overflowed = true;
      partial = '';
      handlers.overflow();
    }
  });
  stream.on('end', () => {
    if (!overflowed && partial !== '') handlers.line(partial);
  });
}
