import { Column, CreateDateColumn, Entity, PrimaryGeneratedColumn } from 'typeorm';
import type { ApiKeyRole } from '#shared/api/types.js';

/** Keys are stored as SHA-256 hashes: a database dump does not hand out working keys. */
@Entity('api_keys')
export class ApiKeyEntity {
  @PrimaryGeneratedColumn('uuid') id: string;
  @Column('text') name: string;
  @Column('text', { name: 'key_hash' }) keyHash: string;
  @Column('text') role: ApiKeyRole;
  /** The environments the key is limited to; null: all of them. */
  @Column('jsonb', { name: 'environment_ids', nullable: true }) environmentIds: string[] | null;
  /** The projects the key is limited to; null: all of them. */
  @Column('jsonb', { name: 'project_ids', nullable: true }) projectIds: string[] | null;
  @CreateDateColumn({ name: 'created_at', type: 'timestamptz' }) createdAt: Date;
  @Column('timestamptz', { name: 'revoked_at', nullable: true }) revokedAt: Date | null;
}
