/** TypeORM's postgres driver answers UPDATE/DELETE ... RETURNING with `[rows, affected]` and SELECT with `rows`. */
export function returned<T = Record<string, unknown>>(result: unknown): T[] {
  if (Array.isArray(result) && result.length === 2 && Array.isArray(result[0]) && typeof result[1] === 'number')
    return result[0] as T[];
  return result as T[];
}

/** A time as the API shows it: ISO-8601, or null. */
export const iso = (d: Date | string | null | undefined): string | null =>
  d ? (d instanceof Date ? d : new Date(d)).toISOString() : null;
