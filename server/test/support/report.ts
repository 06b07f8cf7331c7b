/**
 * The fault suite's figures: each area prints one summary line at the end of its file, and its tests assert the
 * counts that must be zero.
 */
export class FaultReport {
  faults = 0;
  deployments = 0;
  windowViolations = 0;
  runTwice = 0;
  logLostOrDuplicated = 0;
  constructor(readonly area: string) {}

  line() {
    return `fault summary [${this.area}]: faults injected ${this.faults}, deployments completed ${this.deployments}, window violations ${this.windowViolations}, targets run twice ${this.runTwice}, log lines lost or duplicated ${this.logLostOrDuplicated}`;
  }

  print() {
    process.stdout.write(`\n${this.line()}\n`);
  }
}

/**
 * Counts lines "<tag> line N" (N = 1..count) of one target in a deployment log: each must appear exactly once and in
 * order. Returns how many were missing, duplicated or out of order.
 */
export function logDefects(texts: string[], tag: string, count: number): number {
  const seen = texts.filter((t) => t.startsWith(`${tag} line `)).map((t) => Number(t.slice(tag.length + 6)));
  let defects = Math.abs(seen.length - count);
  const set = new Set(seen);
  for (let i = 1; i <= count; i++) if (!set.has(i)) defects++;
  for (let i = 1; i < seen.length; i++) if (seen[i] <= seen[i - 1]) defects++;
  return defects;
}
