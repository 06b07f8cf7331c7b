/**
 * Machine labels (`{"zone": "a", "rack": "r1"}`): the rules a label map follows, one definition for the server's REST
 * API (registration, `PATCH /api/machines/:id`, the `?label=` filter) and the agent's `--labels zone=a,rack=r1`. The
 * name and value patterns are the process model's (a step's `spreadBy` names a label).
 */
import { LABEL_NAME_RE, LABEL_VALUE_RE, MAX_LABELS } from '../process/index.js';

export { LABEL_NAME_RE, LABEL_VALUE_RE, MAX_LABELS };

export const LABEL_NAME_RULE = 'letters, digits, ".", "_" or "-", starting with a letter or digit (at most 63)';
/**
 * Names the pattern allows but a label cannot have: the server's JSON bodies may not hold these keys (its validation
 * layer deletes them from every body against prototype pollution, so the server refuses them rather than lose them).
 */
export const RESERVED_LABEL_NAMES: readonly string[] = ['constructor', 'prototype'];
export const LABEL_VALUE_RULE = 'letters, digits, ".", "_" or "-" (1 to 200 characters)';

/** A name or value as a message may quote it: JSON-quoted, and cut, since it may be anything a client sent. */
const quote = (s: string) => JSON.stringify(s.length > 70 ? `${s.slice(0, 70)}…` : s);

/**
 * Why `value` is not a label map (`field` names it in the message), or null. The first problem found is said:
 * a value that is not an object, too many labels, then each label in order, its name before its value.
 */
export function labelsProblem(value: unknown, field = 'labels'): string | null {
  if (value === null || typeof value !== 'object' || Array.isArray(value))
    return `${field} must be an object of label names to values, like {"zone": "a"}`;
  const entries = Object.entries(value);
  if (entries.length > MAX_LABELS) return `${field} has ${entries.length} labels (at most ${MAX_LABELS})`;
  for (const [k, v] of entries) {
    if (!LABEL_NAME_RE.test(k)) return `${field}: the label name ${quote(k)} must be ${LABEL_NAME_RULE}`;
    if (RESERVED_LABEL_NAMES.includes(k)) return `${field}: the label name ${quote(k)} is reserved`;
    if (typeof v !== 'string') return `${field}.${k} must be text, like "a"`;
    if (!LABEL_VALUE_RE.test(v)) return `${field}.${k} must be ${LABEL_VALUE_RULE}`;
  }
  return null;
}

export type Parsed<T> = { ok: true; value: T } | { ok: false; message: string };

/**
 * `zone=a,rack=r1` as a label map (an empty list is none), as the agent's `--labels` takes it; every message starts
 * with `option` and a colon. A label given twice is refused rather than one of them silently kept.
 */
export function parseLabelList(text: string, option = '--labels'): Parsed<Record<string, string>> {
  const labels: Record<string, string> = {};
  const items = text
    .split(',')
    .map((s) => s.trim())
    .filter(Boolean);
  if (items.length > MAX_LABELS)
    return { ok: false, message: `${option}: ${items.length} labels given (at most ${MAX_LABELS})` };
  for (const item of items) {
    const eq = item.indexOf('=');
    if (eq < 0) return { ok: false, message: `${option}: ${quote(item)} must be NAME=VALUE, like zone=a` };
    const name = item.slice(0, eq);
    const value = item.slice(eq + 1);
    if (!LABEL_NAME_RE.test(name))
      return { ok: false, message: `${option}: the label name ${quote(name)} must be ${LABEL_NAME_RULE}` };
    if (RESERVED_LABEL_NAMES.includes(name))
      return { ok: false, message: `${option}: the label name ${quote(name)} is reserved` };
    if (!LABEL_VALUE_RE.test(value))
      return { ok: false, message: `${option}: the value of ${name} must be ${LABEL_VALUE_RULE}` };
    if (Object.hasOwn(labels, name)) return { ok: false, message: `${option}: the label ${name} is given twice` };
    labels[name] = value;
  }
  return { ok: true, value: labels };
}

/** `zone=a`: one label and its value, as the `?label=` filter of `GET /api/machines` takes it. */
export function parseLabelSelector(text: string, field = 'label'): Parsed<{ name: string; value: string }> {
  const eq = text.indexOf('=');
  const name = eq < 0 ? text : text.slice(0, eq);
  const value = eq < 0 ? '' : text.slice(eq + 1);
  if (eq < 0 || !LABEL_NAME_RE.test(name) || !LABEL_VALUE_RE.test(value))
    return {
      ok: false,
      message: `${field} must be NAME=VALUE, like zone=a: a label name (${LABEL_NAME_RULE}) and a value (${LABEL_VALUE_RULE})`,
    };
  return { ok: true, value: { name, value } };
}

/** `rack=r1,zone=a`: a label map as the agent's option and the CLI write it, by name. */
export function formatLabels(labels: Record<string, string> | undefined): string {
  return Object.entries(labels ?? {})
    .sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0))
    .map(([k, v]) => `${k}=${v}`)
    .join(',');
}
