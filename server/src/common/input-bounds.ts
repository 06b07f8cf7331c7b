/**
 * The first check on every request's input (body, query parameters, path parameters), before any validation or
 * transformation runs. It refuses, with a 400 naming the field:
 * - JSON nested deeper than `INPUT_BOUNDS.depth`: class-transformer and class-validator recurse once per level, and
 *   ten thousand levels overflow the stack (a 500) long before a DTO could say no;
 * - an object with more than `INPUT_BOUNDS.objectKeys` keys or an array with more than `INPUT_BOUNDS.arrayItems`
 *   items: class-transformer's work grows with the square of an object's keys (200,000 keys kept the event loop busy
 *   for 35 s), so collections are bounded here and each DTO bounds its own fields more tightly;
 * - text holding a NUL character (U+0000), in a value or a key: PostgreSQL can store it neither in `text` nor in
 *   `jsonb`, on either database;
 * - a key named `__proto__`, `constructor` or `prototype`, at any depth: the ValidationPipe deletes such keys from
 *   every body (against prototype pollution) before anything reads it, so one would vanish without a word, even
 *   where a map's keys are data (a machine's labels, a release's packages); refused, it is named instead;
 * - a query parameter given twice or with brackets (`?a=1&a=2`, `?a[b]=1`): every parameter of this API is one value.
 * The walk is iterative, so the check itself cannot overflow the stack, and linear in the size of the input.
 */
import { BadRequestException, Injectable, type ArgumentMetadata, type PipeTransform } from '@nestjs/common';
import { formatPath } from '#shared/process/index.js';

export const INPUT_BOUNDS = {
  /** Levels of nesting in a body: the deepest real one (a process: steps, actions, their id lists) uses 5. */
  depth: 32,
  /** Keys of one object: the largest real one is a release's `packages` map, which its DTO bounds at 1,000. */
  objectKeys: 1_000,
  /** Items of one array: the largest real one is a deployment's `specificMachineIds`, bounded at 10,000. */
  arrayItems: 10_000,
} as const;

const NUL = '\u0000';
/** Keys the ValidationPipe strips from bodies (Nest's stripProtoKeys): refused here so that none is lost unsaid. */
const STRIPPED_KEYS = new Set(['__proto__', 'constructor', 'prototype']);

/** Why `value` (the body, or one parameter named `root`) is refused, or null. */
export function inputProblem(value: unknown, root: string | undefined): string | null {
  const stack: Array<{ v: unknown; path: PropertyKey[]; depth: number }> = [
    { v: value, path: root ? [root] : [], depth: 0 },
  ];
  // `steps[0].name`; an array at the top is `request body[0]...`.
  const name = (path: PropertyKey[]) =>
    (typeof path[0] === 'number' || !path.length ? 'request body' : '') + formatPath(path);
  while (stack.length) {
    const { v, path, depth } = stack.pop()!;
    if (typeof v === 'string') {
      if (v.includes(NUL)) return `${name(path)} must not contain NUL characters (\\u0000)`;
      continue;
    }
    if (v === null || typeof v !== 'object') continue;
    if (depth >= INPUT_BOUNDS.depth) return `${name(path)} is nested too deeply (at most ${INPUT_BOUNDS.depth} levels)`;
    if (Array.isArray(v)) {
      if (v.length > INPUT_BOUNDS.arrayItems)
        return `${name(path)} has ${v.length} items (at most ${INPUT_BOUNDS.arrayItems})`;
      for (let i = v.length - 1; i >= 0; i--) stack.push({ v: v[i], path: [...path, i], depth: depth + 1 });
      continue;
    }
    const keys = Object.keys(v);
    if (keys.length > INPUT_BOUNDS.objectKeys)
      return `${name(path)} has ${keys.length} keys (at most ${INPUT_BOUNDS.objectKeys})`;
    for (let i = keys.length - 1; i >= 0; i--) {
      const k = keys[i];
      if (k.includes(NUL)) return `${name(path)} has a key with a NUL character (\\u0000)`;
      if (STRIPPED_KEYS.has(k)) return `${name(path)} has the key "${k}", which is reserved`;
      stack.push({ v: (v as Record<string, unknown>)[k], path: [...path, k], depth: depth + 1 });
    }
  }
  return null;
}

/** Registered first among the global pipes, so it runs before the ValidationPipe's transformation. */
@Injectable()
export class InputBoundsPipe implements PipeTransform {
  transform(value: unknown, meta: ArgumentMetadata) {
    if (meta.type === 'query' && meta.data && value !== undefined && typeof value !== 'string')
      throw new BadRequestException(`${meta.data} must be given once, as plain text`);
    if (meta.type === 'body' || meta.type === 'query' || meta.type === 'param') {
      const problem = inputProblem(value, meta.data);
      if (problem) throw new BadRequestException(problem);
    }
    return value;
  }
}
