/**
 * Resolves with the first SIGTERM or SIGINT. Later ones are only logged: Ctrl-C in a terminal reaches `wrongbot
 * start` and its children at once, and the children would otherwise take start's own SIGTERM as a second, fatal one.
 */
export function stopSignal(log: (line: string) => void): Promise<NodeJS.Signals> {
  return new Promise((resolve) => {
    let received: NodeJS.Signals | null = null;
    const onSignal = (signal: NodeJS.Signals) => {
      if (received !== null) {
        log(`${signal}: already stopping`);
        return;
      }
      received = signal;
      resolve(signal);
    };
    process.on('SIGTERM', onSignal);
    process.on('SIGINT', onSignal);
  });
}
