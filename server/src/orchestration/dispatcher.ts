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
import type { EntityManager } from 'typeorm';
import type { PackageRef } from '#shared/protocol/index.js';
import { AgentConnections } from '../agent-gateway/agent-connections.js';
import { CONFIG, type CuttleConfig } from '../config/config.js';
import { DeploymentEvents } from '../deployments/deployment-events.js';
import { DeploymentLogService } from '../deployments/deployment-log.service.js';
import { DeploymentRepository } from '../deployments/deployment.repository.js';
import {
  ACTIVE_STATES,
  type DeploymentRow,
  type LogEntryInput,
  type StepRow,
  type TargetRunRow,
} from '../deployments/deployment.types.js';
import { InterruptionsService } from '../deployments/interruptions.service.js';
import { LeasesService } from '../leases/leases.service.js';
import { LOGGER, type Logger } from '../logging/logger.js';
import { MachinesService } from '../machines/machines.service.js';
import type { ReleaseEntity } from '../releases/release.entity.js';
import { WebhooksService } from '../webhooks/webhooks.service.js';
import { EmailActions, type EmailJob } from './email-actions.js';
import { OffersService } from './offers.service.js';
import { plan, type GateChange, type PlanInput } from './planner.js';

const TICK_MS = 500;
const REOFFER_MS = 3_000;

const STEP_TEXT: Record<string, string> = {
  running: 'started',
  success: 'succeeded',
  failed: 'failed',
  skipped: 'skipped',
  cancelled: 'cancelled',
};
const OUTCOME_EVENT = {
  success: 'deployment.succeeded',
  failed: 'deployment.failed',
  cancelled: 'deployment.cancelled',
} as const;
const SKIP_TEXT: Record<string, string> = {
  condition: 'its condition is not met',
  'no-targets': 'no targets',
  cancelled: 'the deployment was cancelled',
};

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
  /**
   * Deployments of this node that wait on others: queued behind the deployment ahead of them, or with targets waiting
   * for busy machines. Any target settling or deployment ending here may free them: they get a round at once then,
   * not at the next tick.
   */
  private blocked = new Set<string>();

  /** This service's log lines carry `context: 'dispatcher'`. */
  private readonly logger: Logger;

  constructor(
    private readonly repo: DeploymentRepository,
    private readonly leases: LeasesService,
    private readonly offers: OffersService,
    private readonly interruptions: InterruptionsService,
    private readonly log: DeploymentLogService,
    private readonly agents: AgentConnections,
    private readonly machines: MachinesService,
    private readonly events: DeploymentEvents,
    private readonly webhooks: WebhooksService,
    private readonly emails: EmailActions,
    @Inject(CONFIG) private readonly config: CuttleConfig,
    @Inject(LOGGER) logger: Logger,
  ) {
    this.logger = logger.child({ context: 'dispatcher' });
    events.on('changed', (id) => void this.claimAndKick(id));
    events.on('progressed', (id) => {
      this.kick(id);
      this.kickBlocked();
    });
  }

  async onApplicationBootstrap() {
    // Agents need time to reconnect after a server restart: a lease must not expire merely because no server was
    // there to receive its heartbeats.
    await this.leases.extendAll();
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
      await this.leases.expire(); // each deployment touched is kicked through DeploymentEvents
      for (const id of owned) this.kick(id);
      await this.deliverPending();
      await this.dropRevoked();
    } catch (e) {
      if (!this.stopped)
        this.logger.error('dispatcher round failed', { error: (e as Error).message, stack: (e as Error).stack });
    } finally {
      this.ticking = false;
    }
  }

  /** Takes or renews ownership of active deployments that nobody else holds. */
  private claim(onlyId?: string): Promise<string[]> {
    return this.repo.claimOwnership(this.config.nodeId, this.config.ownershipTtlMs / 1000, onlyId);
  }

  private async claimAndKick(id: string) {
    try {
      if ((await this.claim(id)).length) this.kick(id);
      // A cancel must reach running scripts now, not at the next round.
      await this.deliverPending();
    } catch (e) {
      this.logger.error('claim failed', { deploymentId: id, error: (e as Error).message });
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
        if (!this.stopped)
          this.logger.error('deployment round failed', {
            deploymentId: id,
            error: (e as Error).message,
            stack: (e as Error).stack,
          });
      } finally {
        this.rounds.delete(id);
      }
    })();
  }

  private kickBlocked() {
    for (const id of this.blocked) this.kick(id);
  }

  /** One planner round for one deployment, applied atomically; then the new leases' work is sent. */
  async advance(id: string) {
    const began = performance.now();
    const offers: Array<{ leaseId: string; machineId: string }> = [];
    let prefetch = new Map<string, PackageRef[]>();
    let finished: 'success' | 'failed' | 'cancelled' | undefined;
    const emails: EmailJob[] = [];
    await this.repo.transaction(async (tx) => {
      const d = await this.repo.lockOwnedDeployment(tx, id, this.config.nodeId);
      if (!d || !(ACTIVE_STATES as readonly string[]).includes(d.state)) return;
      const paused = d.state === 'paused';
      // Paused before it started: it keeps its place in the queue and starts nothing.
      if (paused && !d.started_at) return;
      if (d.state === 'queued') {
        // One deployment at a time per project and environment, in creation order: this one waits for the one ahead.
        if (await this.repo.queuedBehind(d, tx)) {
          this.blocked.add(id);
          return;
        }
      }
      // Steps, target runs and whether a person is awaited, read after the row lock: the interruptions are opened
      // and answered under this lock, and what this round opens is counted below. The state's flip between
      // executing and waiting then needs no statement in a round that changes neither.
      const lines: LogEntryInput[] = [];
      // Batch approvals whose time ran out get their default answer first (it may let a batch go in this round).
      if (d.state !== 'queued' && d.state !== 'cancelling') {
        const release = await this.offers.release(d.release_id, tx);
        lines.push(...(await this.interruptions.applyExpiredApprovals(tx, d, release.process)));
      }
      const { steps, runs, awaitsPerson: awaited, concurrentOnMachines } = await this.repo.readRound(tx, d);
      const abandoned = await this.emails.failAbandoned(
        tx,
        runs,
        steps.map((s) => s.name),
      );
      if (abandoned.length) {
        lines.push(...abandoned);
        this.kick(id);
      }
      let awaitsPerson = awaited;
      if (d.state === 'queued') {
        await this.repo.startDeployment(tx, id);
        await this.webhooks.enqueueDeployment(tx, 'deployment.started', id);
        d.state = 'executing';
      }
      const input: PlanInput = {
        cancelling: d.state === 'cancelling',
        paused,
        now: Date.now(),
        unavailable: await this.unavailableTargets(tx, steps, runs),
        steps: steps.map((s) => ({
          index: s.step_index,
          name: s.name,
          state: s.state,
          condition: s.condition,
          startTrigger: s.start_trigger,
          window: s.window_size,
          maxFailures: s.max_failures,
          aborted: s.aborted,
          batchCount: s.batch_count,
          currentBatch: s.current_batch,
          gate: s.gate,
          gateUntil: s.gate_until ? s.gate_until.getTime() : null,
          policy: s.policy,
          targets: runs
            .filter((r) => r.step_index === s.step_index)
            .map((r) => ({ id: r.id, state: r.state, batch: r.batch, bakeCheck: r.bake_check })),
        })),
      };
      const runById = new Map(runs.map((r) => [r.id, r]));
      const { decision, busy } = concurrentOnMachines
        ? { decision: plan(input), busy: new Map<string, string>() }
        : await this.planAroundBusyMachines(tx, id, input, runById);
      // The machines this round may start on are locked now, before any row of level 3 is written (the lock order).
      if (!concurrentOnMachines)
        await this.repo.lockMachines(
          tx,
          [...decision.start, ...decision.checks]
            .map((x) => runById.get(x.targetId)!.machine_id)
            .filter((m): m is string => !!m),
        );
      if (decision.waiting.length) this.blocked.add(id);
      else this.blocked.delete(id);
      // Targets that begin waiting for their machine now take their place in its line (one waiting already keeps it).
      const fresh = decision.waiting.filter((w) => !runById.get(w.targetId)!.waiting_since);
      await this.repo.markWaitingForMachine(
        tx,
        fresh.map((w) => w.targetId),
      );
      for (const w of fresh) {
        const run = runById.get(w.targetId)!;
        lines.push({
          level: 'info',
          stepName: steps[w.stepIndex].name,
          machineId: run.machine_id,
          text: `${steps[w.stepIndex].name} on ${run.machine_name}: waiting for the machine, busy with deployment ${busy.get(w.targetId)}`,
        });
      }
      prefetch = await this.prefetchFor(
        tx,
        d,
        runs,
        decision.next.map((x) => x.targetId),
      );

      for (const u of decision.steps) {
        const s = steps[u.index];
        await this.repo.setStepState(tx, id, u.index, u.state);
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
        await this.repo.settleUnstarted(tx, u.targetId, u.state, u.reason);
        if (u.reason) {
          const run = runById.get(u.targetId)!;
          lines.push({
            level: 'warn',
            stepName: steps[u.stepIndex].name,
            machineId: run.machine_id,
            text: `${steps[u.stepIndex].name} on ${run.machine_name} skipped: ${u.reason} when the step started`,
          });
        }
      }
      for (const g of decision.gates) {
        await this.repo.setStepGate(tx, id, g.stepIndex, {
          currentBatch: g.currentBatch,
          gate: g.gate,
          gateUntil: g.gateUntil === null ? null : new Date(g.gateUntil),
        });
        const text = gateText(steps[g.stepIndex], g, runs);
        if (text) lines.push({ level: 'info', stepName: steps[g.stepIndex].name, text });
      }
      await this.repo.markChecksDue(
        tx,
        decision.checksDue.map((c) => c.targetId),
      );
      for (const a of decision.approvals) {
        const s = steps[a.stepIndex];
        const interruption = await this.interruptions.openBatchApproval(tx, {
          deploymentId: id,
          stepIndex: a.stepIndex,
          stepName: s.name,
          batch: a.batch,
          batchCount: s.batch_count,
          machineNames: a.targetIds.map((t) => runById.get(t)!.machine_name),
          timeoutSeconds: s.policy.approvalTimeoutSeconds,
          defaultResult: s.policy.approvalDefault ?? 'abort',
        });
        awaitsPerson = true;
        lines.push({
          level: 'warn',
          stepName: s.name,
          text: `Waiting for approval of batch ${a.batch + 1} of ${s.batch_count} of ${s.name} (interruption ${interruption})`,
        });
      }
      let process: ReleaseEntity['process'] | undefined;
      const toLease = new Map<number, TargetRunRow[]>();
      for (const s of decision.start) {
        const run = runById.get(s.targetId)!;
        const step = steps[s.stepIndex];
        const firstPending = run.actions.find((a) => a.state === 'pending');
        if (!run.machine_id && firstPending?.type === 'email') {
          // An email is sent by the server after this round commits; its outcome settles the target run.
          await this.repo.startTargetRun(tx, run.id);
          const claimed = await this.emails.claim(tx, d, run, await this.offers.release(d.release_id, tx));
          emails.push(claimed.job);
          lines.push(claimed.line);
          continue;
        }
        if (!run.machine_id || firstPending?.type === 'manual-intervention') {
          // A step without target roles runs on the server, and a target whose next action is a manual intervention
          // waits for a person (holding its place in the window): both become interruptions.
          process ??= (await this.offers.release(d.release_id, tx)).process;
          await this.repo.startTargetRun(tx, run.id, !!run.machine_id);
          const interruption = await this.interruptions.openManualIntervention(tx, id, run, process);
          if (interruption) {
            awaitsPerson = true;
            const action = process[s.stepIndex].actions[run.actions.findIndex((a) => a.state === 'pending')];
            lines.push({
              level: 'warn',
              stepName: step.name,
              actionName: action?.name,
              machineId: run.machine_id,
              text: `Waiting for manual intervention ${action?.name}${run.machine_id ? ` on ${run.machine_name}` : ''} (interruption ${interruption}): ${action?.instructions ?? ''}`.trim(),
            });
          } else {
            await this.repo.finishTargetRun(tx, run.id, 'success');
            this.kick(id);
          }
          continue;
        }
        if (!run.actions.some((a) => a.state === 'pending')) {
          // Every action of this target was skipped by its conditions: nothing to send, the target is done.
          await this.repo.finishTargetRun(tx, run.id, 'success', { started: true });
          lines.push({
            level: 'info',
            stepName: step.name,
            machineId: run.machine_id,
            text: `${step.name} on ${run.machine_name}: every action is skipped here`,
          });
          this.kick(id);
          continue;
        }
        toLease.set(s.stepIndex, [...(toLease.get(s.stepIndex) ?? []), run]);
      }
      const toCheck = new Map<number, TargetRunRow[]>();
      for (const c of decision.checks)
        toCheck.set(c.stepIndex, [...(toCheck.get(c.stepIndex) ?? []), runById.get(c.targetId)!]);
      const leaseGroups = [
        ...[...toLease].map(([stepIndex, wanted]) => ({ stepIndex, wanted, purpose: 'run' as const })),
        ...[...toCheck].map(([stepIndex, wanted]) => ({ stepIndex, wanted, purpose: 'check' as const })),
      ];
      for (const { stepIndex, wanted, purpose } of leaseGroups) {
        const step = steps[stepIndex];
        // Targets that find the window full in the database (another node's lease) wait for the next round.
        const taken = await this.leases.take(tx, {
          deploymentId: id,
          stepIndex,
          window: step.window_size,
          exclusive: !concurrentOnMachines,
          purpose,
          targets: wanted.map((r) => ({ targetRunId: r.id, machineId: r.machine_id!, waitingSince: r.waiting_since })),
        });
        if (!taken.length) continue;
        const position = new Map(wanted.map((r, i) => [r.id, i]));
        for (const lease of taken.sort((a, b) => position.get(a.targetRunId)! - position.get(b.targetRunId)!)) {
          const run = wanted[position.get(lease.targetRunId)!];
          lines.push({
            level: 'info',
            stepName: step.name,
            machineId: run.machine_id,
            text: `${step.name} on ${run.machine_name}: ${purpose === 'check' ? 'health check at the end of the bake: ' : ''}lease taken (slot ${lease.slot + 1} of ${step.window_size})`,
          });
          offers.push({ leaseId: lease.id, machineId: lease.machineId });
        }
      }
      if (!decision.outcome && d.state !== 'cancelling' && !paused) {
        const state = awaitsPerson ? 'waiting' : 'executing';
        if (state !== d.state) await this.repo.setDeploymentState(tx, id, state);
      }
      if (decision.outcome) {
        await this.repo.finishDeployment(tx, id, decision.outcome);
        await this.webhooks.enqueueDeployment(tx, OUTCOME_EVENT[decision.outcome], id);
        lines.push({
          level: decision.outcome === 'success' ? 'info' : decision.outcome === 'failed' ? 'error' : 'warn',
          text: `Deployment ${decision.outcome === 'success' ? 'succeeded' : decision.outcome}`,
        });
        this.logger.info('deployment finished', { deploymentId: id, outcome: decision.outcome });
        this.prefetched.delete(id);
        this.blocked.delete(id);
        finished = decision.outcome;
      }
      await this.log.append(tx, id, lines);
    });
    const committed = performance.now();
    for (const job of emails) void this.emails.send(job);
    // The deployment queued behind this one, and targets waiting for the machines it held, may go now.
    if (finished) {
      this.kickBlocked();
      this.events.emit('finished', id, finished);
    }
    await this.sendOffers(offers);
    // After the offers: a target next in line must not start its download ahead of the targets whose leases wait on
    // theirs (the server lets lease downloads go first only once they have begun).
    for (const [machineId, packages] of prefetch)
      if (this.agents.isConnected(machineId))
        this.agents.send(machineId, { type: 'package.prefetch', deploymentId: id, packages });
    this.logger.debug('round', {
      deploymentId: id,
      started: offers.length,
      transactionMs: Math.round(committed - began),
      offersMs: Math.round(performance.now() - committed),
    });
  }

  /**
   * Targets of steps about to start with `skipUnavailable` whose machines are offline, disabled, unhealthy or revoked,
   * with the reason (one query, only while such a step is pending).
   */
  private async unavailableTargets(
    tx: EntityManager,
    steps: StepRow[],
    runs: TargetRunRow[],
  ): Promise<Map<string, string>> {
    const pending = new Set(
      steps.filter((s) => s.state === 'pending' && s.policy?.skipUnavailable).map((s) => s.step_index),
    );
    const candidates = runs.filter((r) => pending.has(r.step_index) && r.state === 'pending' && r.machine_id);
    if (!candidates.length) return new Map();
    const reasons = await this.machines.unavailable(
      candidates.map((r) => r.machine_id!),
      tx,
    );
    const out = new Map<string, string>();
    for (const r of candidates) {
      const why = reasons.get(r.machine_id!);
      if (why) out.set(r.id, why);
    }
    return out;
  }

  /**
   * Plans a round with the machine rule: the targets the planner would start are checked against their machines (busy
   * with another deployment's lease, or another deployment's target waiting longer), and the round planned again
   * without the busy ones, until the targets it starts are all free (a few passes at most; the lease's take checks
   * again under the machines' locks). Returns the decision and, for each busy target, the deployment it waits for.
   */
  private async planAroundBusyMachines(
    tx: EntityManager,
    id: string,
    input: PlanInput,
    runById: Map<string, TargetRunRow>,
  ) {
    const busy = new Map<string, string>();
    const checked = new Set<string>();
    let decision = plan(input);
    for (let pass = 0; pass < 5; pass++) {
      const unchecked = [...decision.start, ...decision.checks]
        .map((s) => runById.get(s.targetId)!)
        .filter((r) => r.machine_id && !checked.has(r.id));
      if (!unchecked.length) break;
      for (const r of unchecked) checked.add(r.id);
      const found = await this.repo.machinesBusy(
        tx,
        id,
        unchecked.map((r) => ({ id: r.id, machineId: r.machine_id!, waitingSince: r.waiting_since })),
      );
      if (!found.size) break;
      for (const [run, holder] of found) busy.set(run, holder);
      decision = plan({ ...input, busy: new Set(busy.keys()) });
    }
    return { decision, busy };
  }

  /**
   * The packages to send ahead to the agents of target runs next in line (see `package.prefetch`), each target run
   * once. Their agents download, verify and unpack while the window is busy with the targets before them.
   */
  private async prefetchFor(
    tx: EntityManager,
    d: DeploymentRow,
    runs: TargetRunRow[],
    next: string[],
  ): Promise<Map<string, PackageRef[]>> {
    const done = this.prefetched.get(d.id) ?? new Set<string>();
    const named = new Set(next);
    const due = runs.filter((r) => named.has(r.id) && !done.has(r.id));
    if (!due.length) return new Map();
    const release = await this.offers.release(d.release_id, tx);
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
    const machineOf = new Map(
      offers.filter((o) => this.agents.isConnected(o.machineId)).map((o) => [o.leaseId, o.machineId]),
    );
    const now = Date.now();
    for (const offer of await this.offers.build([...machineOf.keys()])) {
      this.lastOffered.set(offer.leaseId, now);
      this.agents.send(machineOf.get(offer.leaseId)!, offer);
    }
  }

  /** Agents revoked through another node are dropped here too, within a round. */
  private async dropRevoked() {
    const ids = this.agents.machineIds();
    if (!ids.length) return;
    const keep = await this.machines.notRevoked(ids);
    for (const id of ids) if (!keep.has(id)) this.agents.disconnect(id);
  }

  /** Delivers offers not yet accepted by agents connected here, and cancels of cancelled deployments' leases. */
  async deliverPending(machineIds = this.agents.machineIds()) {
    const due = (await this.leases.unaccepted(machineIds)).filter(
      (l) => Date.now() - (this.lastOffered.get(l.id) ?? 0) >= REOFFER_MS,
    );
    await this.sendOffers(due.map((l) => ({ leaseId: l.id, machineId: l.machine_id })));
    for (const l of await this.leases.toCancel(machineIds))
      this.agents.send(l.machine_id, { type: 'lease.cancel', leaseId: l.id, reason: 'deployment cancelled' });
    if (this.lastOffered.size > 10_000) this.lastOffered.clear();
  }
}

/** The log line of a step's batch starting or a gate opening (none for the one batch of a plain step). */
function gateText(step: StepRow, g: GateChange, runs: TargetRunRow[]): string | null {
  const n = g.currentBatch + 1;
  const inBatch = runs.filter((r) => r.step_index === step.step_index && r.batch === g.currentBatch);
  switch (g.event) {
    case 'batch-started':
      return step.batch_count > 1
        ? `Step ${step.name}: batch ${n} of ${step.batch_count} started (${inBatch.map((r) => r.machine_name).join(', ')})`
        : null;
    case 'bake-started':
      return `Step ${step.name}: batch ${n} of ${step.batch_count} ended; baking for ${step.policy.bakeSeconds} s (until ${new Date(g.gateUntil!).toISOString()})`;
    case 'checks-started':
      return `Step ${step.name}: the bake of batch ${n} ended; health checks on its targets that succeeded`;
    default:
      return null;
  }
}

/**
 * What each machine will unpack for these target runs: the packages of their package actions still pending (an
 * action skipped here by its conditions needs nothing).
 */
export function packagesByMachine(
  process: ReleaseEntity['process'],
  packages: ReleaseEntity['packages'],
  runs: TargetRunRow[],
): Map<string, PackageRef[]> {
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
