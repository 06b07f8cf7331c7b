/**
 * Package transfers for work in flight go first. A lease's download holds a target's slot in the window, so it
 * starts at once; a prefetch (`GET /packages/<sha256>?prefetch=1`, a target next in line getting ready) waits while
 * lease downloads are running and for `settleMs` after the last one ended, up to `maxWaitMs` in all, and at most
 * `prefetchSlots` prefetches transfer at once. The settling time is the lease's agent unpacking what it just got
 * and starting its script: a prefetch beside it (a transfer, then an unpacking on another agent) shares the same
 * cores when server and agents do, and made that step take 3-5 times as long in the bench. The wait is bounded so
 * that a steady stream of lease downloads cannot starve prefetches for ever.
 */
export class DownloadPriority {
  private leaseDownloads = 0;
  private lastLeaseEndedAt = -Infinity;
  private prefetches = 0;
  private waiting: Array<() => void> = [];

  constructor(
    private readonly prefetchSlots = 2,
    private readonly maxWaitMs = 1_000,
    private readonly settleMs = 100,
  ) {}

  /** Runs a lease's transfer now. */
  async lease<T>(transfer: () => Promise<T>): Promise<T> {
    this.leaseDownloads++;
    try {
      return await transfer();
    } finally {
      this.leaseDownloads--;
      this.lastLeaseEndedAt = Date.now();
      this.wake();
    }
  }

  /** Runs a prefetch's transfer once lease transfers have settled (or after `maxWaitMs`) and a prefetch slot is free. */
  async prefetch<T>(transfer: () => Promise<T>): Promise<T> {
    const deadline = Date.now() + this.maxWaitMs;
    for (;;) {
      const heldUntil = this.leaseDownloads > 0 ? deadline : Math.min(deadline, this.lastLeaseEndedAt + this.settleMs);
      const held = Date.now() < heldUntil;
      if (!held && this.prefetches < this.prefetchSlots) break;
      // Woken when any transfer ends; while held back by lease downloads, also when that hold ends.
      await new Promise<void>((resolve) => {
        const t = held ? setTimeout(resolve, heldUntil - Date.now()) : undefined;
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
