// Discord decides when an interaction token dies, by its own clock; this host's may be off by minutes (a VM without
// NTP, a laptop back from sleep). Every interaction says when Discord created it (its id is a timestamp), so the
// bot reads Discord's time as its own clock plus the offset the latest interaction showed. The offset also holds the
// interaction's trip here, so the estimate runs a little behind Discord: TOKEN_SAFETY_MARGIN_MS covers that.

export class DiscordClock {
  private offsetMs = 0;

  constructor(private readonly localNow: () => number = Date.now) {}

  /** An interaction Discord created at `createdAt` (epoch ms, from its id) has just arrived. */
  observe(createdAt: number): void {
    this.offsetMs = createdAt - this.localNow();
  }

  /** Discord's time as far as the bot knows it; the host's own until the first interaction arrives. */
  now(): number {
    return this.localNow() + this.offsetMs;
  }
}
