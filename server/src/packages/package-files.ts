import { existsSync, mkdirSync } from 'node:fs';
import { open } from 'node:fs/promises';
import { join } from 'node:path';
import type { Writable } from 'node:stream';
import { Inject, Injectable } from '@nestjs/common';
import { CONFIG, type CuttleConfig } from '../config/config.js';

/** Package bytes on disk, named by sha256: the same bytes uploaded under two versions are stored once. */
@Injectable()
export class PackageFiles {
  readonly dir: string;
  /** Buffers of `send`, two per transfer, reused across transfers. */
  private readonly pool = new BufferPool(256 * 1024, 16);
  constructor(@Inject(CONFIG) config: CuttleConfig) {
    this.dir = join(config.home, 'packages');
    mkdirSync(join(this.dir, 'incoming'), { recursive: true });
  }
  pathOf(sha256: string) {
    return join(this.dir, `${sha256}.tar.gz`);
  }
  has(sha256: string) {
    return /^[a-f0-9]{64}$/.test(sha256) && existsSync(this.pathOf(sha256));
  }
  /**
   * Writes the package's bytes to `out` (an HTTP response) and ends it. The bytes go through two buffers reused
   * from a pool, each refilled once its last write has completed: a read stream would allocate a new buffer per
   * piece, and on a server sending a package to a hundred agents those allocations (a megabyte per agent) made V8
   * run a full garbage collection every 64 MB (its "external memory" limit), about once a second in a rolling
   * deployment, for half the server's CPU there. Rejects if `out` closes before every byte was handed to it (the
   * agent went away); a close after that is the agent done reading, as good as the response's own end.
   */
  async send(sha256: string, out: Writable): Promise<void> {
    const file = await open(this.pathOf(sha256), 'r');
    const size = (await file.stat()).size;
    let issued = 0;
    let closedAfterAll = false;
    const bufs = [this.pool.take(), this.pool.take()];
    // An HTTP response whose socket is gone neither calls write callbacks nor errors: its 'close' ends the wait.
    let onClose!: () => void;
    const closed = new Promise<void>((resolve, reject) => {
      onClose = () => {
        if (issued < size) return reject(new Error('connection closed during the transfer'));
        closedAfterAll = true;
        resolve();
      };
      out.once('close', onClose);
    });
    closed.catch(() => undefined);
    const writes: ({ done: boolean; promise: Promise<void> } | undefined)[] = [undefined, undefined];
    const write = (piece: Buffer) => {
      const w = { done: false, promise: Promise.resolve() };
      w.promise = new Promise<void>((resolve, reject) =>
        out.write(piece, (e) => {
          w.done = true;
          if (e) reject(e);
          else resolve();
        }),
      );
      w.promise.catch(() => undefined); // awaited below; a failure there is the one reported
      return w;
    };
    try {
      for (let i = 0; ; i ^= 1) {
        if (writes[i]) await Promise.race([writes[i]!.promise, closed]); // the buffer is ours again
        const { bytesRead } = await file.read(bufs[i], 0, bufs[i].length, null);
        if (bytesRead === 0) break;
        writes[i] = write(bufs[i].subarray(0, bytesRead));
        issued += bytesRead;
      }
      await Promise.race([Promise.all(writes.map((w) => w?.promise)), closed]);
      if (!closedAfterAll) {
        // 'close' can come before end's callback, when the agent closes as soon as it has read every byte.
        out.off('close', onClose);
        await new Promise<void>((resolve) => {
          out.once('close', resolve);
          out.end(resolve);
        });
      }
    } finally {
      out.off('close', onClose);
      await file.close();
      // A buffer whose write has not completed may still be referenced by the socket: only free ones go back.
      bufs.forEach((b, i) => {
        if (!writes[i] || writes[i]!.done) this.pool.give(b);
      });
    }
  }
}

/** Equal buffers kept for reuse, at most `keep` of them idle. */
class BufferPool {
  private readonly free: Buffer[] = [];
  constructor(
    private readonly size: number,
    private readonly keep: number,
  ) {}
  take(): Buffer {
    return this.free.pop() ?? Buffer.allocUnsafeSlow(this.size);
  }
  give(b: Buffer) {
    if (this.free.length < this.keep) this.free.push(b);
  }
}
