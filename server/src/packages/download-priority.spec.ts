import { setTimeout as delay } from 'node:timers/promises';
import { DownloadPriority } from './download-priority.js';

const gate = () => {
  let open!: () => void;
  const p = new Promise<void>((r) => (open = r));
  return { p, open };
};
const tick = () => delay(5);

describe('DownloadPriority', () => {
  // A prefetch must not take bandwidth from a lease's download: it starts only once lease transfers are over.
  it('holds prefetches while a lease download runs', async () => {
    const q = new DownloadPriority(2, 10_000);
    const lease = gate();
    const order: string[] = [];
    const l = q.lease(async () => {
      await lease.p;
      order.push('lease');
    });
    const p = q.prefetch(async () => order.push('prefetch'));
    await tick();
    expect(order).toEqual([]);
    lease.open();
    await Promise.all([l, p]);
    expect(order).toEqual(['lease', 'prefetch']);
  });

  // The lease's agent unpacks and starts its script right after its download: a prefetch waits for that to settle.
  it('holds a prefetch for settleMs after the last lease download ended', async () => {
    const q = new DownloadPriority(2, 10_000, 60);
    const lease = gate();
    const l = q.lease(() => lease.p);
    let startedAt = 0;
    const p = q.prefetch(async () => (startedAt = Date.now()));
    await tick();
    lease.open();
    await l;
    const endedAt = Date.now();
    await p;
    expect(startedAt - endedAt).toBeGreaterThanOrEqual(55);
  });

  // Without lease downloads there is nothing to settle: a prefetch starts at once.
  it('starts a prefetch at once when no lease download ran', async () => {
    const q = new DownloadPriority(2, 10_000, 60_000);
    const t0 = Date.now();
    await q.prefetch(async () => undefined);
    expect(Date.now() - t0).toBeLessThan(1_000);
  });

  // Lease downloads are never queued, whatever the prefetches do.
  it('starts lease downloads at once even while prefetches fill their slots', async () => {
    const q = new DownloadPriority(1, 10_000);
    const pre = gate();
    const p = q.prefetch(() => pre.p);
    let leaseRan = false;
    await q.lease(async () => {
      leaseRan = true;
    });
    expect(leaseRan).toBe(true);
    pre.open();
    await p;
  });

  // At most `prefetchSlots` prefetches transfer at once.
  it('bounds concurrent prefetches', async () => {
    const q = new DownloadPriority(2, 10_000);
    let running = 0;
    let most = 0;
    await Promise.all(
      Array.from({ length: 6 }, () =>
        q.prefetch(async () => {
          most = Math.max(most, ++running);
          await tick();
          running--;
        }),
      ),
    );
    expect(most).toBe(2);
  });

  // A steady stream of lease downloads delays a prefetch by at most maxWaitMs, never for ever.
  it('lets a prefetch through after maxWaitMs', async () => {
    const q = new DownloadPriority(2, 30);
    const lease = gate();
    const l = q.lease(() => lease.p);
    const t0 = Date.now();
    await q.prefetch(async () => undefined);
    expect(Date.now() - t0).toBeGreaterThanOrEqual(25);
    lease.open();
    await l;
  });
});
