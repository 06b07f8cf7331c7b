/**
 * What the bench prints and writes: the table of rows (one per figure) and the results object that goes to
 * bench/results/<timestamp>.json, percentiles and the machine's facts.
 */
import { readFileSync } from 'node:fs';

export const say = (s: string) => process.stdout.write(s + '\n');

/** The table's rows so far, as written to the results file: [scenario, measure, value, target]. */
export const rows: Array<[string, string, string, string]> = [];

/** The table's heading, printed before the first row. */
export function header() {
  say(`  ${'scenario'.padEnd(22)} ${'measure'.padEnd(38)} ${'value'.padEnd(18)} target`);
}

/** One row of the table: printed at once and kept for the results file. */
export function row(scenario: string, measure: string, value: string, target = '') {
  rows.push([scenario, measure, value, target]);
  say(`  ${scenario.padEnd(22)} ${measure.padEnd(38)} ${value.padEnd(18)} ${target}`);
}

/** The `p`th percentile of `values` (nearest rank, rounding down), NaN for none. */
export function pct(values: number[], p: number) {
  const v = [...values].sort((a, b) => a - b);
  return v.length ? v[Math.min(v.length - 1, Math.floor((p / 100) * v.length))] : NaN;
}

/** p50/p95/p99 of `values`. */
export const p50p95p99 = (values: number[]) => ({ p50: pct(values, 50), p95: pct(values, 95), p99: pct(values, 99) });

export function machineFacts() {
  const cpu = readFileSync('/proc/cpuinfo', 'utf8');
  return {
    cores: (cpu.match(/^processor/gm) ?? []).length,
    model: /model name\s+:\s+(.+)/.exec(cpu)?.[1],
    memGiB: Math.round(Number(/MemTotal:\s+(\d+)/.exec(readFileSync('/proc/meminfo', 'utf8'))?.[1]) / 1024 / 1024),
    node: process.version,
  };
}
