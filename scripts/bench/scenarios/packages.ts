/** packages: a --package-mb package deployed to --package-agents agents, then the same version again (0 bytes sent). */
import { readFileSync } from 'node:fs';
import type { Health } from '#shared/api/types.js';
import { type BenchOptions, deployAndWait, fleet, payload, withServer } from '../harness.js';
import { row } from '../report.js';

/** The scenario; its results.packages. */
export async function runPackages(o: BenchOptions) {
  return withServer(async (s) => {
    const { env } = await fleet(s, o.packageAgents, 'p', 20);
    const file = await payload(s.work, o.packageMb, '#!/bin/sh\ntrue\n');
    await s.api.request('POST', '/api/packages/big/1.0.0', undefined, {
      data: readFileSync(file),
      contentType: 'application/gzip',
    });
    const steps = [
      { name: 'Ship', targetRoles: ['p'], actions: [{ name: 'Unpack', type: 'package', packageId: 'big' }] },
    ];
    const before = (await s.api.get<Health>('/api/health')).packageBytesSent;
    const first = await deployAndWait(s, 'Packages', steps, env.id, { big: '1.0.0' });
    const mid = (await s.api.get<Health>('/api/health')).packageBytesSent;
    const second = await deployAndWait(s, 'Packages', steps, env.id, { big: '1.0.0' });
    const after = (await s.api.get<Health>('/api/health')).packageBytesSent;
    row(
      `packages ${o.packageMb} MB → ${o.packageAgents}`,
      'first deployment wall time',
      `${(first.wallMs / 1000).toFixed(1)} s (${first.d.state})`,
    );
    row(
      `packages ${o.packageMb} MB → ${o.packageAgents}`,
      'bytes sent by the server',
      `${((mid - before) / 1024 / 1024).toFixed(0)} MiB`,
    );
    row(`packages ${o.packageMb} MB → ${o.packageAgents}`, 'same version again: bytes sent', `${after - mid}`, '0');
    return {
      sizeMb: o.packageMb,
      agents: o.packageAgents,
      firstMs: first.wallMs,
      firstBytes: mid - before,
      secondMs: second.wallMs,
      secondBytes: after - mid,
    };
  });
}
