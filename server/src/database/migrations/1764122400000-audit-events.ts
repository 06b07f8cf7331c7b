import type { MigrationInterface, QueryRunner } from 'typeorm';

/**
 * The audit log: one row per mutating or refused API request. Rows are only ever inserted (and deleted by age),
 * so an identity id orders them as they were written and pages them by cursor. The indexes serve GET /api/events'
 * filters: newest first, one resource's history, one actor's requests.
 */
export class AuditEvents1764122400000 implements MigrationInterface {
  name = 'AuditEvents1764122400000';

  async up(q: QueryRunner): Promise<void> {
    await q.query(`
      CREATE TABLE audit_events (
        id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
        at timestamptz NOT NULL DEFAULT now(),
        actor text NOT NULL,
        actor_key_id uuid NULL,
        action text NOT NULL,
        resource_type text NOT NULL,
        resource_id text NULL,
        outcome text NOT NULL CHECK (outcome IN ('ok', 'denied', 'failed')),
        status int NOT NULL,
        summary text NOT NULL
      )`);
    await q.query(`CREATE INDEX audit_events_at ON audit_events (at DESC)`);
    await q.query(`CREATE INDEX audit_events_resource ON audit_events (resource_type, resource_id, id DESC)`);
    await q.query(`CREATE INDEX audit_events_actor ON audit_events (actor, id DESC)`);
  }

  async down(q: QueryRunner): Promise<void> {
    await q.query(`DROP TABLE audit_events`);
  }
}
