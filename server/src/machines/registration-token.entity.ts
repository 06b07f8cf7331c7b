import { Column, CreateDateColumn, Entity, PrimaryGeneratedColumn } from 'typeorm';

@Entity('registration_tokens')
export class RegistrationTokenEntity {
  @PrimaryGeneratedColumn('uuid') id: string;
  /** Only the hash of the token's secret is kept. */
  @Column('text', { name: 'secret_hash' }) secretHash: string;
  @Column('jsonb', { name: 'environment_ids' }) environmentIds: string[];
  @Column('jsonb') roles: string[];
  @Column('integer', { name: 'max_uses' }) maxUses: number;
  @Column('integer', { default: 0 }) uses: number;
  @Column('timestamptz', { name: 'expires_at' }) expiresAt: Date;
  @CreateDateColumn({ name: 'created_at', type: 'timestamptz' }) createdAt: Date;
}
