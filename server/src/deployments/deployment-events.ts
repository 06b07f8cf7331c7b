import { EventEmitter } from 'node:events';
import { Injectable } from '@nestjs/common';

/**
 * In-process notices that a deployment changed in a way its driver must act on now rather than at its next round.
 * The dispatcher listens; on another node the same changes are seen at that node's next round (every 0.5 s), since
 * all state is in the database.
 * - `changed`: an operator changed it (created, cancelled, an interruption answered): take it up and deliver at once;
 * - `progressed`: a target run settled (a result, an expired lease): its slot may have freed, plan the next round;
 * - `finished`: the node that drove it saw it end (after the commit), with its outcome: what follows a deployment's
 *   end (an automatic rollback) starts from here.
 */
@Injectable()
export class DeploymentEvents extends EventEmitter<{
  changed: [deploymentId: string];
  progressed: [deploymentId: string];
  finished: [deploymentId: string, outcome: 'success' | 'failed' | 'cancelled'];
}> {}
