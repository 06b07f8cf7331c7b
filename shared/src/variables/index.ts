/**
 * Variables: project variables with scopes, system variables, output variables, `#{Name}` substitution and masking
 * of sensitive values. Used by the server (scoping, masking) and the agent (substitution at each action's start,
 * when output variables of earlier actions are known).
 */
import { z } from 'zod';
import { zodMessages, type ValidationResult } from '../process/index.js';

export const MASK = '********';
const NAME_RE = /^[A-Za-z_][A-Za-z0-9_.\-[\]]{0,199}$/;

export const VariableScopeSchema = z
  .object({
    environmentIds: z.array(z.string().min(1).max(100)).max(100).optional(),
    roles: z.array(z.string().min(1).max(100)).max(100).optional(),
    machineIds: z.array(z.string().min(1).max(100)).max(1000).optional(),
  })
  .strict();

export const VariableSchema = z
  .object({
    name: z
      .string({ error: 'must be a variable name' })
      .regex(
        NAME_RE,
        'must start with a letter or "_" and hold only letters, digits, ".", "_", "-", "[" or "]" (at most 200)',
      ),
    value: z.string({ error: 'must be text' }).max(100_000, 'must be at most 100,000 characters'),
    sensitive: z.boolean({ error: 'must be true or false' }).optional(),
    scope: VariableScopeSchema.optional(),
  })
  .strict()
  .refine((v) => !v.name.startsWith('Cuttle.'), {
    message: 'names starting with "Cuttle." are reserved for system variables',
    path: ['name'],
  });
export type VariableDef = z.infer<typeof VariableSchema>;

/** Variables of one project: thousands are already more than people can keep in order. */
export const MAX_VARIABLES = 5_000;

export function validateVariables(list: unknown): ValidationResult<VariableDef[]> {
  const r = z
    .array(VariableSchema, { error: (i) => (i.code === 'invalid_type' ? 'must be a list of variables' : undefined) })
    .max(MAX_VARIABLES, `must have at most ${MAX_VARIABLES} variables`)
    .safeParse(list);
  return r.success ? { ok: true, value: r.data } : { ok: false, messages: zodMessages(r.error, ['variables']) };
}

export interface ScopeContext {
  environmentId: string;
  roles: string[];
  machineId?: string;
}

export interface ResolvedVariable {
  name: string;
  value: string;
  sensitive: boolean;
}

/**
 * How specific a variable's scope is for this context, or -1 when it does not apply. Machine beats role beats
 * environment beats unscoped; a scope on several dimensions must match on each and adds up (weights 4, 2, 1).
 */
export function scopeRank(scope: VariableDef['scope'], ctx: ScopeContext): number {
  let rank = 0;
  if (scope?.machineIds?.length) {
    if (!ctx.machineId || !scope.machineIds.includes(ctx.machineId)) return -1;
    rank += 4;
  }
  if (scope?.roles?.length) {
    if (!scope.roles.some((r) => ctx.roles.includes(r))) return -1;
    rank += 2;
  }
  if (scope?.environmentIds?.length) {
    if (!scope.environmentIds.includes(ctx.environmentId)) return -1;
    rank += 1;
  }
  return rank;
}

/** The value of each name for one context: the most specific applicable definition; on a tie, the first one. */
export function resolveScoped(defs: VariableDef[], ctx: ScopeContext): Map<string, ResolvedVariable> {
  const best = new Map<string, { rank: number; v: ResolvedVariable }>();
  for (const d of defs) {
    const rank = scopeRank(d.scope, ctx);
    if (rank < 0) continue;
    const cur = best.get(d.name);
    if (!cur || rank > cur.rank)
      best.set(d.name, { rank, v: { name: d.name, value: d.value, sensitive: !!d.sensitive } });
  }
  return new Map([...best].map(([k, { v }]) => [k, v]));
}

/**
 * Replaces `#{Name}` with values (values may themselves hold references, up to 10 levels). `##{` stands for a
 * literal `#{`. A reference to an unknown name is left as written and reported in `unknown`.
 */
export function substitute(
  text: string,
  lookup: (name: string) => string | undefined,
): { text: string; unknown: string[] } {
  const unknown = new Set<string>();
  const expand = (s: string, depth: number): string => {
    let out = '';
    let i = 0;
    while (i < s.length) {
      if (s.startsWith('##{', i)) {
        out += '#{';
        i += 3;
        continue;
      }
      if (s.startsWith('#{', i)) {
        const end = s.indexOf('}', i + 2);
        if (end > i + 2) {
          const name = s.slice(i + 2, end).trim();
          const value = depth < 10 ? lookup(name) : undefined;
          if (value === undefined) {
            unknown.add(name);
            out += s.slice(i, end + 1);
          } else out += expand(value, depth + 1);
          i = end + 1;
          continue;
        }
      }
      out += s[i++];
    }
    return out;
  };
  return { text: expand(text, 0), unknown: [...unknown] };
}

/** Replaces every occurrence of each secret with the mask, longest first (so a secret inside another is covered). */
export function maskSecrets(text: string, secrets: Iterable<string>): string {
  const list = [...new Set([...secrets].filter((s) => s.length > 0))].sort((a, b) => b.length - a.length);
  let out = text;
  for (const s of list) if (out.includes(s)) out = out.split(s).join(MASK);
  return out;
}

/** Names of output variables as scripts reference them. */
export const outputName = (step: string, action: string, name: string, machine?: string) =>
  machine
    ? `Cuttle.Action[${step}.${action}].Output[${machine}].${name}`
    : `Cuttle.Action[${step}.${action}].Output.${name}`;

/**
 * The bash prelude of every script: `set_cuttle_variable NAME VALUE [sensitive]` prints a service message the agent
 * reads off stdout (base64, so any value survives a line-based stream); `get_cuttle_variable NAME` prints a
 * variable's value (and a newline) from the file `$CUTTLE_VARIABLES_FILE` (see `variablesFile`), or, for a name it
 * does not hold, nothing, a warning on stderr and exit status 1. Values travel through a 0600 file and pipes, never
 * on a command line that `ps` would show. Both exported so deploy.sh and child scripts have them too.
 */
export const SERVICE_MESSAGE_PREFIX = '##cuttle[setVariable ';
export const SCRIPT_PRELUDE = `set_cuttle_variable() {
  if [ -z "$1" ]; then echo "set_cuttle_variable: usage: set_cuttle_variable NAME VALUE [sensitive]" >&2; return 2; fi
  printf '${SERVICE_MESSAGE_PREFIX}name=%s value=%s sensitive=%s]\\n' "$(printf '%s' "$1" | base64 -w0)" "$(printf '%s' "$2" | base64 -w0)" "$( [ "$3" = sensitive ] && echo 1 || echo 0)"
}
export -f set_cuttle_variable
get_cuttle_variable() {
  if [ -z "$1" ]; then echo "get_cuttle_variable: usage: get_cuttle_variable NAME" >&2; return 2; fi
  local key n v
  key=$(printf '%s' "$1" | base64 -w0)
  if [ -r "\${CUTTLE_VARIABLES_FILE:-}" ]; then
    while read -r n v; do
      if [ "$n" = "$key" ]; then printf '%s\\n' "$v" | base64 -d; echo; return 0; fi
    done < "$CUTTLE_VARIABLES_FILE"
  fi
  echo "get_cuttle_variable: unknown variable $1" >&2
  return 1
}
export -f get_cuttle_variable
`;

/**
 * What `get_cuttle_variable` reads: one line per variable, `base64(name) base64(value)`, values with their own
 * `#{...}` references expanded as a script would see them (base64: any value fits on one line).
 */
export function variablesFile(lookup: Map<string, string>): string {
  const get = (n: string) => lookup.get(n);
  let out = '';
  for (const [name, value] of lookup) {
    const expanded = value.includes('#{') ? substitute(value, get).text : value;
    out += `${Buffer.from(name).toString('base64')} ${Buffer.from(expanded).toString('base64')}\n`;
  }
  return out;
}

/** Parses a service message line; null when the line is ordinary output. */
export function parseServiceMessage(line: string): { name: string; value: string; sensitive: boolean } | null {
  if (!line.startsWith(SERVICE_MESSAGE_PREFIX)) return null;
  const m = /^##cuttle\[setVariable name=([A-Za-z0-9+/=]*) value=([A-Za-z0-9+/=]*) sensitive=([01])\]$/.exec(line);
  if (!m) return null;
  const name = Buffer.from(m[1], 'base64').toString('utf8');
  if (!NAME_RE.test(name)) return null;
  return { name, value: Buffer.from(m[2], 'base64').toString('utf8'), sensitive: m[3] === '1' };
}
