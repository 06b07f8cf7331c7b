import { Column, CreateDateColumn, Entity, PrimaryGeneratedColumn } from 'typeorm';

@Entity('machines')
export class MachineEntity {
  @PrimaryGeneratedColumn('uuid') id: string;
  @Column('text') name: string;
  @Column('jsonb') roles: string[];
  @Column('jsonb', { name: 'environment_ids' }) environmentIds: string[];
  @Column('jsonb', { default: {} }) labels: Record<string, string>;
  /** SHA-256 of the agent's client certificate: what the agent port trusts, never the CN alone. */
  @Column('text') fingerprint: string;
  @Column('text') certificate: string;
  @Column('boolean', { default: false }) disabled: boolean;
  @Column('timestamptz', { name: 'revoked_at', nullable: true }) revokedAt: Date | null;
  @Column('text', { name: 'connected_node', nullable: true }) connectedNode: string | null;
  @Column('timestamptz', { name: 'connected_at', nullable: true }) connectedAt: Date | null;
  @Column('timestamptz', { name: 'last_seen_at', nullable: true }) lastSeenAt: Date | null;
  @Column('text', { name: 'agent_version', nullable: true }) agentVersion: string | null;
  @Column('text', { default: 'unknown' }) health: 'healthy' | 'unhealthy' | 'unknown';
  @Column('text', { name: 'health_reason', nullable: true }) healthReason: string | null;
  @Column('timestamptz', { name: 'health_checked_at', nullable: true }) healthCheckedAt: Date | null;
  @Column('integer', { name: 'health_rtt_ms', nullable: true }) healthRttMs: number | null;
  @Column('bigint', {
    name: 'free_disk_bytes',
    nullable: true,
    transformer: { to: (v: number | null) => v, from: (v: string | null) => (v === null ? null : Number(v)) },
  })
  freeDiskBytes: number | null;
  /** Why the last target trigger could not deploy to it (null once one did); when a trigger last acted for it. */
  @Column('text', { name: 'last_trigger_error', nullable: true }) lastTriggerError: string | null;
  @Column('timestamptz', { name: 'last_trigger_at', nullable: true }) lastTriggerAt: Date | null;
  @CreateDateColumn({ name: 'created_at', type: 'timestamptz' }) createdAt: Date;
}
