import { Column, Entity, PrimaryGeneratedColumn } from 'typeorm';

/** What happened, to what, by whom: one row per audited request (see audit-routes.ts for which ones). */
export type AuditOutcome = 'ok' | 'denied' | 'failed';

@Entity('audit_events')
export class AuditEventEntity {
  // bigint comes back from pg as a string, which is what the API shows: ids are strings.
  @PrimaryGeneratedColumn('identity', { type: 'bigint', generatedIdentity: 'ALWAYS' }) id: string;
  @Column('timestamptz', { default: () => 'now()' }) at: Date;
  @Column('text') actor: string;
  @Column('uuid', { name: 'actor_key_id', nullable: true }) actorKeyId: string | null;
  @Column('text') action: string;
  @Column('text', { name: 'resource_type' }) resourceType: string;
  @Column('text', { name: 'resource_id', nullable: true }) resourceId: string | null;
  @Column('text') outcome: AuditOutcome;
  @Column('int') status: number;
  @Column('text') summary: string;
}
