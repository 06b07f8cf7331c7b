import { Column, CreateDateColumn, Entity, PrimaryGeneratedColumn } from 'typeorm';
import type { Step } from '#shared/process/index.js';
import type { VariableDef } from '#shared/variables/index.js';

export interface ReleasePackage {
  packageId: string;
  version: string;
  sha256: string;
  sizeBytes: number;
}

/** Immutable once made: what a deployment runs does not change when the project's process does. */
@Entity('releases')
export class ReleaseEntity {
  @PrimaryGeneratedColumn('uuid') id: string;
  @Column('uuid', { name: 'project_id' }) projectId: string;
  @Column('uuid', { name: 'channel_id' }) channelId: string;
  @Column('text') version: string;
  @Column('integer', { name: 'process_version' }) processVersion: number;
  @Column('jsonb') process: Step[];
  @Column('jsonb') variables: VariableDef[];
  @Column('integer', { name: 'default_timeout_seconds', nullable: true }) defaultTimeoutSeconds: number | null;
  @Column('jsonb') packages: ReleasePackage[];
  @CreateDateColumn({ name: 'created_at', type: 'timestamptz' }) createdAt: Date;
}
