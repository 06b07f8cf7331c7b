/**
 * The dispatcher: drives the deployments this node owns. Each round it loads a deployment, asks the planner what
 * happens next, applies that in one transaction (step states, lease rows for targets to start, the outcome) and
 * then hands the leases' work to the agents.
 *
 * Ownership: a deployment is driven by one node at a time, the holder of its ownership lease (`owner_node`,
 * `owner_expires_at`), renewed every round and taken over by another node when it lapses. Agents' results may
 * arrive at any node; they change rows, and the owner sees them on its next round.
 */
import { Inject, Injectable, type OnApplicationBootstrap, type OnApplicationShutdown } from '@nestjs/common';
import { DataSource, type EntityManager } from 'typeorm';
import { AgentConnections } from '../agent-gateway/agent-connections.js';
import { CONFIG, type CuttleConfig } from '../config/config.js';
import { DeploymentLogService, type LogEntryInput } from '../deployments/deployment-log.js';
import type { DeploymentRow, StepRow, TargetRunRow } from '../deployments/deployment.types.js';
import { DeploymentsService } from '../deployments/deployments.js';
import { LeasesService } from '../leases/leases.js';
import { LOGGER, type Logger } from '../logging/logger.js';
import { returned } from '../database/sql.js';
import { plan, type PlanInput } from './planner.js';
import { openManualIntervention } from '../deployments/interruptions.js';
import type { ReleaseEntity } from '../releases/release.entity.js';
import type { PackageRef } from '#shared/protocol/index.js';

const TICK_MS = 500;
const REOFFER_MS = 3_000;

const STEP_TEXT: Record<string, string> = { running: 'started', success: 'succeeded', failed: 'failed', skipped: 'skipped', cancelled: 'cancelled' };
const SKIP_TEXT: Record<string, string> = { condition: 'its condition is not met', 'no-targets': 'no targets', cancelled: 'the deployment was cancelled' };

@Injectable()
export class Dispatcher implements OnApplicationBootstrap, OnApplicationShutdown {
  private timer?: NodeJS.Timeout;
  private stopped = false;
  /** Per deployment: a round in progress, and whether another was asked for meanwhile (rounds coalesce). */
  private rounds = new Map<string, { again: boolean }>();
  private lastOffered = new Map<string, number>();
  private ticking = false;
  /** Per deployment: target runs whose agents were asked to get packages ready (best effort, so memory is enough). */
  private prefetched = new Map<string, Set<string>>();

  constructor(
    private readonly ds: DataSource,
    private readonly leases: LeasesService,
    private readonly log: DeploymentLogService,
    private readonly agents: AgentConnections,
    deployments: DeploymentsService,
    @Inject(CONFIG) private readonly config: CuttleConfig,
    @Inject(LOGGER) private readonly logger: Logger,
  ) {
    deployments.onChange = (id) => void this.claimAndKick(id);
  }

  async onApplicationBootstrap() {
    // Agents need time to reconnect after a server restart: a lease must not expire merely because no server was
    // there to receive its heartbeats. Give every active lease one TTL from now.
    await this.ds.query(`UPDATE leases SET expires_at = greatest(expires_at, now() + make_interval(secs => $1)) WHERE released_at IS NULL`, [this.config.leaseTtlMs / 1000]);
    this.timer = setInterval(() => void this.tick(), TICK_MS);
    void this.tick();
  }

  onApplicationShutdown() {
    this.stopped = true;
    if (this.timer) clearInterval(this.timer);
  }

  /** One round for everything: claim deployments, expire silent leases, advance, (re)deliver work. */
  async tick() {
    if (this.ticking || this.stopped) return;
    this.ticking = true;
    try {
      const owned = await this.claim();
      for (const id of await this.leases.expire()) if (owned.includes(id)) this.kick(id);
      for (const id of owned) this.kick(id);
      await this.deliverPending();
      await this.dropRevoked();
    } catch (e) {
      if (!this.stopped) this.logger.error('dispatcher round failed', { context: 'dispatcher', error: (e as Error).message, stack: (e as Error).stack });
    } finally {
      this.ticking = false;
    }
  }

  /** Takes or renews ownership of active deployments that nobody else holds. */
  private async claim(onlyId?: string): Promise<string[]> {
    const rows = returned<{ id: string }>(
      await this.ds.query(
        `UPDATE deployments SET owner_node = $1, owner_expires_at = now() + make_interval(secs => $2)
         WHERE state IN ('queued', 'executing', 'waiting', 'cancelling') ${onlyId ? 'AND id = $3' : ''}
           AND (owner_node IS NULL OR owner_node = $1 OR owner_expires_at < now())
         RETURNING id`,
        onlyId ? [this.config.nodeId, this.config.ownershipTtlMs / 1000, onlyId] : [this.config.nodeId, this.config.ownershipTtlMs / 1000],
      ),
    );
    return rows.map((r) => r.id);
  }

  private async claimAndKick(id: string) {
    try {
      if ((await this.claim(id)).length) this.kick(id);
      // A cancel must reach running scripts now, not at the next round.
      await this.deliverPending();
    } catch (e) {
      this.logger.error('claim failed', { context: 'dispatcher', deploymentId: id, error: (e as Error).message });
    }
  }

  /** Asks for a round on a deployment now (used when a result arrives here); rounds never overlap per deployment. */
  kick(id: string) {
    const r = this.rounds.get(id);
    if (r) {
      r.again = true;
      return;
    }
    const state = { again: false };
    this.rounds.set(id, state);
    void (async () => {
      try {
        do {
          state.again = false;
          await this.advance(id);
        } while (state.again && !this.stopped);
      } catch (e) {
        if (!this.stopped) this.logger.error('deployment round failed', { context: 'dispatcher', deploymentId: id, error: (e as Error).message, stack: (e as Error).stack });
      } finally {
        this.rounds.delete(id);
      }
    })();
  }

  /** One planner round for one deployment, applied atomically; then the new leases' work is sent. */
  async advance(id: string) {
    const began = performance.now();
    const offers: Array<{ leaseId: string; machineId: string }> = [];
    let prefetch = new Map<string, PackageRef[]>();
    await this.ds.transaction(async (m) => {
      const [d]: DeploymentRow[] = await m.query(`SELECT * FROM deployments WHERE id = $1 AND owner_node = $2 FOR NO KEY UPDATE`, [id, this.config.nodeId]);
      if (!d || !['queued', 'executing', 'waiting', 'cancelling'].includes(d.state)) return;
      // Steps, target runs and whether a person is awaited in one round trip (a round's cost is mostly round trips to
      // the database). Read after the row lock, so by a statement that sees what was committed before it: the
      // interruptions are opened and answered under this lock, and what this round opens is counted below. The
      // state's flip between executing and waiting then needs no statement in a round that changes neither.
      const [both] = await m.query(
        `SELECT (SELECT coalesce(json_agg(s ORDER BY s.step_index), '[]') FROM deployment_steps s WHERE s.deployment_id = $1) AS steps,
                (SELECT coalesce(json_agg(t ORDER BY t.step_index, t.position), '[]') FROM target_runs t WHERE t.deployment_id = $1) AS runs,
                EXISTS (SELECT 1 FROM interruptions i WHERE i.deployment_id = $1 AND i.state = 'pending') AS awaits_person`,
        [id],
      );
      let awaitsPerson: boolean = both.awaits_person;
      const steps: StepRow[] = both.steps;
      const runs: TargetRunRow[] = both.runs;
      const lines: LogEntryInput[] = [];
      if (d.state === 'queued') {
        await m.query(`UPDATE deployments SET state = 'executing', started_at = now() WHERE id = $1`, [id]);
        d.state = 'executing';
      }
      const input: PlanInput = {
        cancelling: d.state === 'cancelling',
        steps: steps.map((s) => ({
          index: s.step_index,
          name: s.name,
          state: s.state,
          condition: s.condition,
          startTrigger: s.start_trigger,
          window: s.window_size,
          maxFailures: s.max_failures,
          aborted: s.aborted,
          targets: runs.filter((r) => r.step_index === s.step_index).map((r) => ({ id: r.id, state: r.state })),
        })),
      };
      const decision = plan(input);
      prefetch = await this.prefetchFor(m, d, runs, decision.next.map((x) => x.targetId));

      for (const u of decision.steps) {
        const s = steps[u.index];
        const col = u.state === 'running' ? 'started_at' : 'finished_at';
        await m.query(`UPDATE deployment_steps SET state = $3, ${col} = now() WHERE deployment_id = $1 AND step_index = $2`, [id, u.index, u.state]);
        const failedTargets = runs.filter((r) => r.step_index === u.index && r.state === 'failed').length;
        lines.push({
          level: u.state === 'failed' ? 'error' : u.state === 'skipped' || u.state === 'cancelled' ? 'warn' : 'info',
          stepName: s.name,
          text:
            u.state === 'running'
              ? `Step ${s.name} started: ${input.steps[u.index].targets.length} target(s), window ${s.window_size}, failure budget ${s.max_failures}`
              : `Step ${s.name} ${STEP_TEXT[u.state]}${u.reason ? ` (${SKIP_TEXT[u.reason]})` : ''}${u.state === 'failed' ? `: ${failedTargets} target(s) failed, budget ${s.max_failures}` : ''}`,
        });
      }
      for (const u of decision.targets) {
        await m.query(
          `UPDATE target_runs SET state = $2, actions = (SELECT jsonb_agg(CASE WHEN a->>'state' = 'pending' THEN jsonb_set(a, '{state}', to_jsonb($2::text)) ELSE a END ORDER BY i) FROM jsonb_array_elements(actions) WITH ORDINALITY AS x(a, i)) WHERE id = $1`,
          [u.targetId, u.state],
        );
      }
      let process: ReleaseEntity['process'] | undefined;
      const toLease = new Map<number, TargetRunRow[]>();
      for (const s of decision.start) {
        const run = runs.find((r) => r.id === s.targetId)!;
        const step = steps[s.stepIndex];
        if (!run.machine_id) {
          // A step without target roles runs on the server: its manual interventions become interruptions.
          process ??= (await m.query(`SELECT process FROM releases WHERE id = $1`, [d.release_id]))[0].process as ReleaseEntity['process'];
          await m.query(`UPDATE target_runs SET state = 'running', attempt = attempt + 1, started_at = now() WHERE id = $1`, [run.id]);
          const interruption = await openManualIntervention(m, id, run, process);
          if (interruption) {
            awaitsPerson = true;
            const action = process[s.stepIndex].actions[run.actions.findIndex((a) => a.state === 'pending')];
            lines.push({ level: 'warn', stepName: step.name, actionName: action?.name, text: `Waiting for manual intervention ${action?.name} (interruption ${interruption}): ${action?.instructions ?? ''}`.trim() });
          } else {
            await m.query(`UPDATE target_runs SET state = 'success', finished_at = now() WHERE id = $1`, [run.id]);
            this.kick(id);
          }
          continue;
        }
        if (!run.actions.some((a) => a.state === 'pending')) {
          // Every action of this target was skipped by its conditions: nothing to send, the target is done.
          await m.query(`UPDATE target_runs SET state = 'success', started_at = now(), finished_at = now() WHERE id = $1`, [run.id]);
          lines.push({ level: 'info', stepName: step.name, machineId: run.machine_id, text: `${step.name} on ${run.machine_name}: every action is skipped here` });
          this.kick(id);
          continue;
        }
        toLease.set(s.stepIndex, [...(toLease.get(s.stepIndex) ?? []), run]);
      }
      for (const [stepIndex, wanted] of toLease) {
        const step = steps[stepIndex];
        // Targets that find the window full in the database (another node's lease) wait for the next round.
        const taken = await this.leases.acquire(m, { deploymentId: id, stepIndex, window: step.window_size, targets: wanted.map((r) => ({ targetRunId: r.id, machineId: r.machine_id! })) });
        if (!taken.length) continue;
        const order = (l: { targetRunId: string }) => wanted.findIndex((r) => r.id === l.targetRunId);
        for (const lease of taken.sort((a, b) => order(a) - order(b))) {
          const run = wanted[order(lease)];
          lines.push({ level: 'info', stepName: step.name, machineId: run.machine_id, text: `${step.name} on ${run.machine_name}: lease taken (slot ${lease.slot + 1} of ${step.window_size})` });
          offers.push({ leaseId: lease.id, machineId: lease.machineId });
        }
      }
      if (!decision.outcome && d.state !== 'cancelling') {
        const state = awaitsPerson ? 'waiting' : 'executing';
        if (state !== d.state) await m.query(`UPDATE deployments SET state = $2 WHERE id = $1`, [id, state]);
      }
      if (decision.outcome) {
        await m.query(`UPDATE deployments SET state = $2, finished_at = now(), owner_node = NULL WHERE id = $1`, [id, decision.outcome]);
        lines.push({ level: decision.outcome === 'success' ? 'info' : decision.outcome === 'failed' ? 'error' : 'warn', text: `Deployment ${decision.outcome === 'success' ? 'succeeded' : decision.outcome}` });
        this.logger.info('deployment finished', { context: 'dispatcher', deploymentId: id, outcome: decision.outcome });
        this.prefetched.delete(id);
      }
      await this.log.append(m, id, lines);
    });
    const committed = performance.now();
    await this.sendOffers(offers);
    // After the offers: a target next in line must not start its download ahead of the targets whose leases wait on
    // theirs (the server lets lease downloads go first only once they have begun).
    for (const [machineId, packages] of prefetch) if (this.agents.isConnected(machineId)) this.agents.send(machineId, { type: 'package.prefetch', deploymentId: id, packages });
    this.logger.debug('round', { context: 'dispatcher', deploymentId: id, started: offers.length, transactionMs: Math.round(committed - began), offersMs: Math.round(performance.now() - committed) });
  }

  /**
   * The packages to send ahead to the agents of target runs next in line (see `package.prefetch`), each target run
   * once. Their agents download, verify and unpack while the window is busy with the targets before them.
   */
  private async prefetchFor(m: EntityManager, d: DeploymentRow, runs: TargetRunRow[], next: string[]): Promise<Map<string, PackageRef[]>> {
    const done = this.prefetched.get(d.id) ?? new Set<string>();
    const named = new Set(next);
    const due = runs.filter((r) => named.has(r.id) && !done.has(r.id));
    if (!due.length) return new Map();
    const release = await this.leases.release(d.release_id, m);
    for (const r of due) done.add(r.id);
    // Deployments that end on another node (taken over) are never deleted here: keep the memory bounded.
    if (this.prefetched.size > 10_000) this.prefetched.clear();
    this.prefetched.set(d.id, done);
    return packagesByMachine(release.process, release.packages, due);
  }

  /**
   * Sends leases' work to their agents connected here, built together (a wide window starts many targets in one
   * round); an agent connected elsewhere gets it from its own node, or after a reconnect.
   */
  private async sendOffers(offers: Array<{ leaseId: string; machineId: string }>) {
    const machineOf = new Map(offers.filter((o) => this.agents.isConnected(o.machineId)).map((o) => [o.leaseId, o.machineId]));
    const now = Date.now();
    for (const offer of await this.leases.buildOffers([...machineOf.keys()])) {
      this.lastOffered.set(offer.leaseId, now);
      this.agents.send(machineOf.get(offer.leaseId)!, offer);
    }
  }

  /** Agents revoked through another node are dropped here too, within a round. */
  private async dropRevoked() {
    const ids = this.agents.machineIds();
    if (!ids.length) return;
    const live: Array<{ id: string }> = await this.ds.query(`SELECT id FROM machines WHERE id = ANY($1::uuid[]) AND revoked_at IS NULL`, [ids]);
    const keep = new Set(live.map((r) => r.id));
    for (const id of ids) if (!keep.has(id)) this.agents.disconnect(id);
  }

  /** Delivers offers not yet accepted by agents connected here, and cancels of cancelled deployments' leases. */
  async deliverPending(machineIds = this.agents.machineIds()) {
    const due = (await this.leases.unaccepted(machineIds)).filter((l) => Date.now() - (this.lastOffered.get(l.id) ?? 0) >= REOFFER_MS);
    await this.sendOffers(due.map((l) => ({ leaseId: l.id, machineId: l.machine_id })));
    for (const l of await this.leases.toCancel(machineIds)) this.agents.send(l.machine_id, { type: 'lease.cancel', leaseId: l.id, reason: 'deployment cancelled' });
    if (this.lastOffered.size > 10_000) this.lastOffered.clear();
  }
}

/**
 * What each machine will unpack for these target runs: the packages of their package actions still pending (an
 * action skipped here by its conditions needs nothing).
 */
export function packagesByMachine(process: ReleaseEntity['process'], packages: ReleaseEntity['packages'], runs: TargetRunRow[]): Map<string, PackageRef[]> {
  const out = new Map<string, PackageRef[]>();
  for (const run of runs) {
    if (!run.machine_id) continue;
    for (const [i, a] of (process[run.step_index]?.actions ?? []).entries()) {
      if (a.type !== 'package' || run.actions[i]?.state !== 'pending') continue;
      const p = packages.find((x) => x.packageId === a.packageId);
      const list = out.get(run.machine_id) ?? [];
      if (p && !list.some((x) => x.sha256 === p.sha256 && x.packageId === p.packageId)) list.push(p);
      out.set(run.machine_id, list);
    }
  }
  for (const [k, v] of out) if (!v.length) out.delete(k);
  return out;
}
