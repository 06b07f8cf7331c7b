import 'reflect-metadata';
import { AppModule } from '../app.module.js';
import { IS_PUBLIC } from '../common/http.js';
import type { CuttleConfig } from '../config/config.js';
import type { Logger } from '../logging/logger.js';
import type { PkiMaterial } from '../pki/pki.js';
import type { SecretBox } from '../secrets/secret-box.js';
import { PUBLIC, ROLE_PERMISSIONS, ROUTE_PERMISSIONS, routeOf } from './permissions.js';
import { inScope, outsideScope } from './scope.js';

type Ctor = new (...args: never[]) => object;

/** Every controller the server registers, read from its modules the way Nest reads them. */
function controllers(): Ctor[] {
  const root = AppModule.forRoot({
    config: {} as CuttleConfig,
    pki: {} as PkiMaterial,
    logger: {} as Logger,
    databaseUrl: 'postgres://unused/unused',
    poolSize: 1,
    secrets: {} as SecretBox,
  });
  const seen = new Set<unknown>();
  const found: Ctor[] = [];
  const visit = (m: unknown) => {
    if (!m || seen.has(m)) return;
    seen.add(m);
    const dynamic =
      typeof m === 'object' ? (m as { module: unknown; controllers?: Ctor[]; imports?: unknown[] }) : null;
    const cls = dynamic ? dynamic.module : m;
    found.push(...((Reflect.getMetadata('controllers', cls as object) as Ctor[] | undefined) ?? []));
    found.push(...(dynamic?.controllers ?? []));
    for (const i of [
      ...((Reflect.getMetadata('imports', cls as object) as unknown[]) ?? []),
      ...(dynamic?.imports ?? []),
    ])
      visit(i);
  };
  visit(root);
  return [...new Set(found)];
}

/** Every route: `METHOD /path`, and whether its handler is @Public(). */
function routes(): Array<{ route: string; isPublic: boolean }> {
  return controllers().flatMap((c) =>
    Object.getOwnPropertyNames(c.prototype)
      .map((name) => c.prototype[name as keyof object] as unknown as object)
      .filter((h) => typeof h === 'function' && Reflect.getMetadata('method', h) !== undefined)
      .map((h) => ({
        route: routeOf(c, h),
        isPublic: !!(Reflect.getMetadata(IS_PUBLIC, h) ?? Reflect.getMetadata(IS_PUBLIC, c)),
      })),
  );
}

describe('the permission table', () => {
  // Invariant: fail closed. Every route the server registers has its own entry (a forgotten one would silently be
  // admin-only), and a route needs no key exactly when the table says it is public.
  it('has an entry for every registered route, public exactly where the handler is', () => {
    const all = routes();
    expect(all.length).toBeGreaterThan(40);
    const missing = all.filter((r) => !(r.route in ROUTE_PERMISSIONS)).map((r) => r.route);
    expect(missing).toEqual([]);
    for (const r of all) expect([r.route, ROUTE_PERMISSIONS[r.route] === PUBLIC]).toEqual([r.route, r.isPublic]);
  });

  // Invariant: a scope taken from the path names a parameter the path has.
  it('takes path scopes from parameters the route has', () => {
    for (const [route, rule] of Object.entries(ROUTE_PERMISSIONS)) {
      if (rule === PUBLIC) continue;
      for (const s of rule.scope ?? [])
        if (s.in === 'param') expect([route, route.includes(`:${s.field}`)]).toEqual([route, true]);
    }
  });

  // Invariant: roles are cumulative; only admin manages keys, environments and machines.
  it('gives each role what the role before it has, and more', () => {
    const order = ['viewer', 'deployer', 'approver', 'admin'] as const;
    for (let i = 1; i < order.length; i++) {
      const lower = ROLE_PERMISSIONS[order[i - 1]];
      const higher = ROLE_PERMISSIONS[order[i]];
      expect(lower.filter((p) => !higher.includes(p))).toEqual([]);
      expect(higher.length).toBeGreaterThan(lower.length);
    }
    for (const p of ['manage-keys', 'manage-environments', 'manage-machines', 'edit-process'] as const)
      expect(order.filter((r) => ROLE_PERMISSIONS[r].includes(p))).toEqual(['admin']);
    expect(order.filter((r) => ROLE_PERMISSIONS[r].includes('approve'))).toEqual(['approver', 'admin']);
  });
});

describe('scope', () => {
  const scope = { environmentIds: ['e1'], projectIds: ['p1'] };
  // Invariant: null means everywhere; a limited side refuses what lies outside it and names it.
  it('places resources inside or outside a key', () => {
    expect(inScope({ environmentIds: null, projectIds: null }, { environmentId: 'x', projectId: 'y' })).toBe(true);
    expect(inScope(scope, { environmentId: 'e1', projectId: 'p1' })).toBe(true);
    expect(inScope(scope, { environmentId: 'e2', projectId: 'p1' })).toBe(false);
    expect(inScope(scope, { projectId: 'p2' })).toBe(false);
    const prod = { id: 'e2', name: 'Production' };
    expect(outsideScope(scope, { environments: [prod], project: { id: 'p1', name: 'Shop' } })).toBe(
      "in environment 'Production'",
    );
    expect(outsideScope(scope, { environments: [], project: { id: 'p2', name: 'Shop' } })).toBe("in project 'Shop'");
    // A machine in several environments is inside when one of them is.
    expect(outsideScope(scope, { environments: [{ id: 'e1', name: 'Test' }, prod] }, true)).toBeNull();
    expect(outsideScope(scope, { environments: [prod] }, true)).toBe("in environment 'Production'");
  });
});
