/**
 * Package transfers for work in flight go first. A lease's download holds a target's slot in the window, so it
 * starts at once; a prefetch (`GET /packages/<sha256>?prefetch=1`, a target next in line getting ready) waits while
 * lease downloads are running, up to `maxWaitMs`, and at most `prefetchSlots` prefetches transfer at once. The
 * wait is bounded so that a steady stream of lease downloads cannot starve prefetches for ever.
 */
export class DownloadPriority {
  private leaseDownloads = 0;
  private prefetches = 0;
  private waiting: Array<() => void> = [];

  constructor(
    private readonly prefetchSlots = 2,
    private readonly maxWaitMs = 1_000,
  ) {}

  /** Runs a lease's transfer now. */
  async lease<T>(transfer: () => Promise<T>): Promise<T> {
    this.leaseDownloads++;
    try {
      return await transfer();
    } finally {
      this.leaseDownloads--;
      this.wake();
    }
  }

  /** Runs a prefetch's transfer when lease transfers are done (or after `maxWaitMs`) and a prefetch slot is free. */
  async prefetch<T>(transfer: () => Promise<T>): Promise<T> {
    const deadline = Date.now() + this.maxWaitMs;
    for (;;) {
      const leaseBusy = this.leaseDownloads > 0 && Date.now() < deadline;
      if (!leaseBusy && this.prefetches < this.prefetchSlots) break;
      // Woken when any transfer ends; while lease downloads hold it back, also at the deadline.
      await new Promise<void>((resolve) => {
        const t = leaseBusy ? setTimeout(resolve, deadline - Date.now()) : undefined;
        this.waiting.push(() => {
          if (t) clearTimeout(t);
          resolve();
        });
      });
    }
    this.prefetches++;
    try {
      return await transfer();
    } finally {
      this.prefetches--;
      this.wake();
    }
  }

  private wake() {
    for (const w of this.waiting.splice(0)) w();
  }
}
