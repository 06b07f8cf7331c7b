import { Column, CreateDateColumn, Entity, PrimaryGeneratedColumn } from 'typeorm';

/** A package version in the feed; its bytes live in `<home>/packages/<sha256>.tar.gz`. */
@Entity('packages')
export class PackageEntity {
  @PrimaryGeneratedColumn('uuid') id: string;
  @Column('text', { name: 'package_id' }) packageId: string;
  @Column('text') version: string;
  @Column('text') sha256: string;
  @Column('bigint', { name: 'size_bytes', transformer: { to: (v: number) => v, from: (v: string) => Number(v) } })
  sizeBytes: number;
  @CreateDateColumn({ name: 'created_at', type: 'timestamptz' }) createdAt: Date;
}
