//! The state schema's versioned steps. Each step runs once, in order, in one
//! transaction with the version it brings; `init` applies the missing ones.
//! Steps are append-only: a released step is never edited, a change is a
//! new step.

/// `{schema}` is replaced by the quoted schema name.
pub(crate) const STEPS: &[&str] = &[
    // 1: runs and task runs, the audit trail of everything pgmaint does.
    r#"
    CREATE TABLE {schema}.runs (
        id            bigserial PRIMARY KEY,
        started_at    timestamptz NOT NULL DEFAULT now(),
        finished_at   timestamptz,
        trigger       text NOT NULL CHECK (trigger IN ('cli', 'schedule', 'api')),
        triggered_by  text NOT NULL,
        command       text NOT NULL,
        status        text NOT NULL CHECK (status IN ('running', 'succeeded', 'failed', 'cancelled', 'interrupted', 'skipped')),
        dry_run       boolean NOT NULL,
        pgmaint_version text NOT NULL,
        backend_pid   integer NOT NULL DEFAULT pg_backend_pid(),
        error         text
    );
    CREATE INDEX runs_running ON {schema}.runs (id) WHERE status = 'running';
    CREATE TABLE {schema}.task_runs (
        id            bigserial PRIMARY KEY,
        run_id        bigint NOT NULL REFERENCES {schema}.runs (id) ON DELETE CASCADE,
        task          text NOT NULL,
        kind          text NOT NULL,
        started_at    timestamptz NOT NULL DEFAULT now(),
        finished_at   timestamptz,
        status        text NOT NULL CHECK (status IN ('running', 'succeeded', 'failed', 'cancelled', 'interrupted', 'skipped')),
        dry_run       boolean NOT NULL,
        rows          bigint NOT NULL DEFAULT 0,
        batches       bigint NOT NULL DEFAULT 0,
        retries       bigint NOT NULL DEFAULT 0,
        duration_ms   bigint,
        error         text,
        details       jsonb NOT NULL DEFAULT '{}'
    );
    CREATE INDEX task_runs_run ON {schema}.task_runs (run_id);
    CREATE INDEX task_runs_task ON {schema}.task_runs (task, id DESC);
    "#,
    // 2: backups, the rows destructive tasks removed, one file per batch.
    r#"
    CREATE TABLE {schema}.backups (
        id            bigserial PRIMARY KEY,
        task_run_id   bigint REFERENCES {schema}.task_runs (id) ON DELETE SET NULL,
        task          text NOT NULL,
        table_schema  text NOT NULL,
        table_name    text NOT NULL,
        columns       jsonb NOT NULL,
        dir           text NOT NULL,
        created_at    timestamptz NOT NULL DEFAULT now()
    );
    CREATE INDEX backups_task ON {schema}.backups (task, id);
    CREATE TABLE {schema}.backup_files (
        backup_id     bigint NOT NULL REFERENCES {schema}.backups (id) ON DELETE CASCADE,
        seq           integer NOT NULL,
        file          text NOT NULL,
        rows          bigint NOT NULL,
        sha256        text NOT NULL,
        PRIMARY KEY (backup_id, seq)
    );
    "#,
    // 3: exports (archive `export = "DIR"`) are indexed like backups, so a
    // file whose batch did not commit can be told apart and removed.
    r#"
    ALTER TABLE {schema}.backups
        ADD COLUMN purpose text NOT NULL DEFAULT 'backup' CHECK (purpose IN ('backup', 'export')),
        ADD COLUMN file_prefix text NOT NULL DEFAULT '';
    "#,
    // 4: every materialized view refresh, for staleness and `tasks`.
    r#"
    CREATE TABLE {schema}.refreshes (
        id            bigserial PRIMARY KEY,
        view_schema   text NOT NULL,
        view_name     text NOT NULL,
        task          text NOT NULL,
        task_run_id   bigint REFERENCES {schema}.task_runs (id) ON DELETE SET NULL,
        refreshed_at  timestamptz NOT NULL DEFAULT now(),
        duration_ms   bigint NOT NULL,
        mode          text NOT NULL CHECK (mode IN ('concurrently', 'plain'))
    );
    CREATE INDEX refreshes_view ON {schema}.refreshes (view_schema, view_name, refreshed_at DESC);
    "#,
    // 5: health snapshots: sizes and row figures per relation, and
    // pg_stat_statements counters, for growth and slow-query diffs.
    r#"
    CREATE TABLE {schema}.snapshots (
        id            bigserial PRIMARY KEY,
        taken_at      timestamptz NOT NULL DEFAULT now(),
        statements    boolean NOT NULL DEFAULT false
    );
    CREATE INDEX snapshots_taken ON {schema}.snapshots (taken_at);
    CREATE TABLE {schema}.snapshot_relations (
        snapshot_id   bigint NOT NULL REFERENCES {schema}.snapshots (id) ON DELETE CASCADE,
        relid         oid NOT NULL,
        schema_name   text NOT NULL,
        name          text NOT NULL,
        kind          "char" NOT NULL,
        total_bytes   bigint NOT NULL,
        rows_estimate double precision NOT NULL,
        dead_rows     bigint,
        PRIMARY KEY (snapshot_id, relid)
    );
    CREATE INDEX snapshot_relations_relid ON {schema}.snapshot_relations (relid, snapshot_id);
    CREATE TABLE {schema}.snapshot_statements (
        snapshot_id     bigint NOT NULL REFERENCES {schema}.snapshots (id) ON DELETE CASCADE,
        queryid         bigint NOT NULL,
        userid          oid NOT NULL,
        dbid            oid NOT NULL,
        calls           bigint NOT NULL,
        total_exec_time double precision NOT NULL,
        rows            bigint NOT NULL,
        query           text NOT NULL,
        PRIMARY KEY (snapshot_id, queryid, userid, dbid)
    );
    "#,
    // 6: the daemon's claims on scheduled fires. The primary key is what
    // makes each fire run once however many daemons race for it.
    r#"
    CREATE TABLE {schema}.schedule_fires (
        schedule       text NOT NULL,
        scheduled_for  timestamptz NOT NULL,
        claimed_at     timestamptz NOT NULL DEFAULT now(),
        claimed_by     text NOT NULL,
        run_id         bigint REFERENCES {schema}.runs (id) ON DELETE SET NULL,
        status         text NOT NULL CHECK (status IN ('running', 'succeeded', 'failed', 'cancelled', 'interrupted', 'skipped')),
        reason         text,
        PRIMARY KEY (schedule, scheduled_for)
    );
    CREATE TABLE {schema}.schedule_state (
        schedule       text PRIMARY KEY,
        last_fire      timestamptz NOT NULL
    );
    "#,
    // 7: schedules created through the API, and the audit of API changes.
    r#"
    CREATE TABLE {schema}.api_schedules (
        name           text PRIMARY KEY,
        cron           text NOT NULL,
        timezone       text NOT NULL,
        tasks          text[] NOT NULL,
        enabled        boolean NOT NULL,
        allow_critical boolean NOT NULL,
        misfire        text NOT NULL,
        misfire_grace_seconds double precision NOT NULL,
        max_runtime_seconds   double precision,
        notify         text[] NOT NULL,
        created_at     timestamptz NOT NULL DEFAULT now(),
        updated_at     timestamptz NOT NULL DEFAULT now()
    );
    CREATE TABLE {schema}.audit (
        id         bigserial PRIMARY KEY,
        at         timestamptz NOT NULL DEFAULT now(),
        who        text NOT NULL,
        action     text NOT NULL,
        object     text NOT NULL,
        details    jsonb NOT NULL DEFAULT '{}'
    );
    "#,
    // 8: which alerts are firing, so several daemons notify once.
    r#"
    CREATE TABLE {schema}.alert_state (
        alert      text NOT NULL,
        check_name text NOT NULL,
        level      text NOT NULL,
        since      timestamptz NOT NULL DEFAULT now(),
        last_sent  timestamptz NOT NULL DEFAULT now(),
        PRIMARY KEY (alert, check_name)
    );
    "#,
    // 9: every notification sent or failed, for the record.
    r#"
    CREATE TABLE {schema}.notifications (
        id        bigserial PRIMARY KEY,
        at        timestamptz NOT NULL DEFAULT now(),
        notifier  text NOT NULL,
        title     text NOT NULL,
        ok        boolean NOT NULL,
        attempts  integer NOT NULL,
        error     text
    );
    "#,
    // 10: what a removal took from other tables through foreign keys
    // (rows ON DELETE CASCADE deleted, the previous values of columns SET
    // NULL/SET DEFAULT changed), as numbered parts of the removal's backup;
    // part 0 is the backup's own table.
    r#"
    CREATE TABLE {schema}.backup_parts (
        backup_id     bigint NOT NULL REFERENCES {schema}.backups (id) ON DELETE CASCADE,
        part          integer NOT NULL CHECK (part > 0),
        table_schema  text NOT NULL,
        table_name    text NOT NULL,
        columns       jsonb NOT NULL,
        action        text NOT NULL CHECK (action IN ('cascade', 'set_null', 'set_default')),
        key_columns   jsonb NOT NULL,
        via           text NOT NULL,
        PRIMARY KEY (backup_id, part)
    );
    ALTER TABLE {schema}.backup_files ADD COLUMN part integer NOT NULL DEFAULT 0;
    "#,
    // 11: leases instead of session advisory locks, which a transaction
    // pooler cannot keep: a run, a task and a schedule's running fire each
    // belong to an owner until an expiry the owner renews while it works.
    // An expired lease may be taken over; a run or fire whose lease expired
    // is marked interrupted, once.
    r#"
    ALTER TABLE {schema}.runs ADD COLUMN owner text, ADD COLUMN lease_until timestamptz;
    ALTER TABLE {schema}.schedule_fires ADD COLUMN owner text, ADD COLUMN lease_until timestamptz;
    CREATE TABLE {schema}.leases (
        name        text PRIMARY KEY,
        owner       text NOT NULL,
        run_id      bigint,
        taken_at    timestamptz NOT NULL DEFAULT now(),
        expires_at  timestamptz NOT NULL
    );
    CREATE INDEX leases_owner ON {schema}.leases (owner);
    "#,
    // 12: each custom
    // check's findings at every snapshot, for the dashboard's charts.
    r#"
    CREATE TABLE {schema}.snapshot_checks (
        snapshot_id   bigint NOT NULL REFERENCES {schema}.snapshots (id) ON DELETE CASCADE,
        check_name    text NOT NULL,
        object        text NOT NULL,
        value         double precision,
        status        text NOT NULL
    );
    CREATE INDEX snapshot_checks_check ON {schema}.snapshot_checks (check_name, snapshot_id);
    "#,
    // 13: a backup whose rows stayed in their table, with the columns an
    // orphans task set to NULL: restore sets them back (`action`), finding
    // each row by `key_columns`.
    r#"
    ALTER TABLE {schema}.backups
        ADD COLUMN action text NOT NULL DEFAULT 'delete' CHECK (action IN ('delete', 'set_null')),
        ADD COLUMN key_columns jsonb NOT NULL DEFAULT '[]';
    "#,
    // 14: the application's schema migrations (`pgmaint migrate`): the
    // ledger of pgmaint's own format (`migrations`), and for every format
    // what pgmaint last ran of each migration (`migration_runs`): the text
    // it ran, so `status` can tell a whitespace-only change of a file, and
    // how far a non-transactional one got, so a rerun resumes there.
    r#"
    CREATE TABLE {schema}.migrations (
        version       bigint PRIMARY KEY,
        name          text NOT NULL,
        checksum      bytea NOT NULL,
        applied_at    timestamptz NOT NULL DEFAULT now(),
        execution_ms  bigint NOT NULL DEFAULT 0
    );
    CREATE TABLE {schema}.migration_runs (
        ledger            text NOT NULL,
        version           bigint NOT NULL,
        direction         text NOT NULL CHECK (direction IN ('up', 'down')),
        status            text NOT NULL CHECK (status IN ('running', 'failed', 'done')),
        checksum          bytea NOT NULL,
        sql_text          text NOT NULL,
        statements_total  integer NOT NULL,
        statements_done   integer NOT NULL DEFAULT 0,
        error             text,
        run_id            bigint,
        updated_at        timestamptz NOT NULL DEFAULT now(),
        PRIMARY KEY (ledger, version)
    );
    "#,
    // 15: a backup of a column a migration's down dropped (`set_back`):
    // restore sets each saved value back by the row's key, whatever the
    // column holds then (an up that made it again may have given it a
    // default), unlike an orphans task's `set_null`, which fills only
    // NULLs.
    r#"
    ALTER TABLE {schema}.backups DROP CONSTRAINT backups_action_check;
    ALTER TABLE {schema}.backups ADD CONSTRAINT backups_action_check
        CHECK (action IN ('delete', 'set_null', 'set_back'));
    "#,
    // 16: the `schema-drift` health check's findings (`drift_checks`),
    // which it recomputes at most once per `[health] drift_every`.
    r#"
    CREATE TABLE {schema}.drift_checks (
        id          bigserial PRIMARY KEY,
        checked_at  timestamptz NOT NULL DEFAULT now(),
        findings    jsonb NOT NULL,
        error       text
    );
    "#,
];
