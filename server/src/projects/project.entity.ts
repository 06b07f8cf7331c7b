import { Column, CreateDateColumn, Entity, PrimaryGeneratedColumn } from 'typeorm';
import type { Step } from '#shared/process/index.js';
import type { VariableDef } from '#shared/variables/index.js';

@Entity('projects')
export class ProjectEntity {
  @PrimaryGeneratedColumn('uuid') id: string;
  @Column('text') name: string;
  @Column('text') slug: string;
  @Column('text', { nullable: true }) description: string | null;
  @Column('uuid', { name: 'default_channel_id', nullable: true }) defaultChannelId: string | null;
  /** Optimistic concurrency: a PUT names the version it edited; a stale one is refused with 409. */
  @Column('integer', { name: 'process_version', default: 1 }) processVersion: number;
  @Column('jsonb', { name: 'process_steps', default: () => "'[]'" }) processSteps: Step[];
  @Column('jsonb', { default: () => "'[]'" }) variables: VariableDef[];
  @Column('integer', { name: 'variables_version', default: 1 }) variablesVersion: number;
  /** Applied to actions without their own timeoutSeconds. */
  @Column('integer', { name: 'default_timeout_seconds', nullable: true }) defaultTimeoutSeconds: number | null;
  /** Its deployments may run on a machine while another deployment's work runs there (the machine rule's opt-out). */
  @Column('boolean', { name: 'allow_concurrent_on_machines', default: false }) allowConcurrentOnMachines: boolean;
  /** The lifecycle its releases are promoted through, unless their channel has its own; null: no restriction. */
  @Column('uuid', { name: 'lifecycle_id', nullable: true }) lifecycleId: string | null;
  /** Installation folders of a package an agent keeps after a success (retention.keepReleases). */
  @Column('integer', { name: 'keep_releases', default: 3 }) keepReleases: number;
  /** A machine that arrives in an environment gets the environment's last successful release (target triggers). */
  @Column('boolean', { name: 'auto_deploy_new_machines', default: false }) autoDeployNewMachines: boolean;
  @CreateDateColumn({ name: 'created_at', type: 'timestamptz' }) createdAt: Date;
}

@Entity('channels')
export class ChannelEntity {
  @PrimaryGeneratedColumn('uuid') id: string;
  @Column('uuid', { name: 'project_id' }) projectId: string;
  @Column('text') name: string;
  /** Its releases follow this lifecycle instead of the project's; null: the project's. */
  @Column('uuid', { name: 'lifecycle_id', nullable: true }) lifecycleId: string | null;
  @CreateDateColumn({ name: 'created_at', type: 'timestamptz' }) createdAt: Date;
}
