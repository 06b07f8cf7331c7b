import { Column, CreateDateColumn, Entity, PrimaryGeneratedColumn } from 'typeorm';

@Entity('environments')
export class EnvironmentEntity {
  @PrimaryGeneratedColumn('uuid') id: string;
  @Column('text') name: string;
  @Column('boolean', { name: 'guided_failure', default: false }) guidedFailure: boolean;
  @Column('boolean', { name: 'rollback_on_failure', default: false }) rollbackOnFailure: boolean;
  @CreateDateColumn({ name: 'created_at', type: 'timestamptz' }) createdAt: Date;
}
