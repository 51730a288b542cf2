//! pgmaint's own copy of a live schema, for a scratch cluster when no
//! pg_dump of the live server's major version is installed: the DDL of
//! schemas, extensions, enums, domains, sequences, functions, tables
//! (columns with types, collations, defaults, identity, generated
//! expressions, partitioning), constraints, indexes, views, materialized
//! views and triggers, read from the catalog with PostgreSQL's own
//! `pg_get_*def` functions under `search_path = pg_catalog`, so every
//! name comes qualified. It copies less than pg_dump (no composite
//! types, rules, policies, inheritance outside partitioning, operators);
//! what the scratch server refuses is reported as not copied.

use tokio_postgres::Client;

use crate::unnamed::Unnamed;

/// The user's objects: not the system schemas, the state schema, or an
/// extension's members.
const USER_SCHEMA: &str = "n.nspname NOT IN ('pg_catalog', 'information_schema') AND n.nspname NOT LIKE 'pg\\_%' AND n.nspname <> $1";

/// The statements that make the live schema, in an order that mostly
/// holds (`apply` retries what failed on a dependency made later).
/// Runs inside the caller's read-only transaction.
pub(crate) async fn statements(
    live: &Client,
    state_schema: &str,
) -> Result<Vec<String>, tokio_postgres::Error> {
    live.row("SELECT set_config('search_path', 'pg_catalog', true)", &[])
        .await?;
    let not_member = |oid: &str| {
        format!("NOT EXISTS (SELECT FROM pg_depend d WHERE d.objid = {oid} AND d.deptype = 'e')")
    };
    let queries = [
        format!(
            "SELECT format('CREATE SCHEMA IF NOT EXISTS %I', n.nspname) FROM pg_namespace n
              WHERE {USER_SCHEMA} AND n.nspname <> 'public' AND {} ORDER BY 1",
            not_member("n.oid")
        ),
        "SELECT format('CREATE EXTENSION IF NOT EXISTS %I WITH SCHEMA %I', e.extname, n.nspname)
           FROM pg_extension e JOIN pg_namespace n ON n.oid = e.extnamespace
          WHERE e.extname <> 'plpgsql' AND $1::text IS NOT NULL ORDER BY 1"
            .to_string(),
        format!(
            "SELECT format('CREATE TYPE %I.%I AS ENUM (%s)', n.nspname, t.typname,
                           string_agg(quote_literal(e.enumlabel), ', ' ORDER BY e.enumsortorder))
               FROM pg_type t JOIN pg_namespace n ON n.oid = t.typnamespace JOIN pg_enum e ON e.enumtypid = t.oid
              WHERE {USER_SCHEMA} AND {} GROUP BY n.nspname, t.typname ORDER BY 1",
            not_member("t.oid")
        ),
        format!(
            "SELECT format('CREATE DOMAIN %I.%I AS %s%s%s%s', n.nspname, t.typname, format_type(t.typbasetype, t.typtypmod),
                           CASE WHEN t.typcollation <> 0 AND t.typcollation <> bt.typcollation
                                THEN ' COLLATE ' || (SELECT format('%I.%I', cn.nspname, co.collname) FROM pg_collation co JOIN pg_namespace cn ON cn.oid = co.collnamespace WHERE co.oid = t.typcollation) ELSE '' END,
                           CASE WHEN t.typdefault IS NOT NULL THEN ' DEFAULT ' || t.typdefault ELSE '' END,
                           CASE WHEN t.typnotnull THEN ' NOT NULL' ELSE '' END)
               FROM pg_type t JOIN pg_namespace n ON n.oid = t.typnamespace JOIN pg_type bt ON bt.oid = t.typbasetype
              WHERE t.typtype = 'd' AND {USER_SCHEMA} AND {} ORDER BY 1",
            not_member("t.oid")
        ),
        format!(
            "SELECT format('ALTER DOMAIN %I.%I ADD CONSTRAINT %I %s', n.nspname, t.typname, c.conname, pg_get_constraintdef(c.oid))
               FROM pg_constraint c JOIN pg_type t ON t.oid = c.contypid JOIN pg_namespace n ON n.oid = t.typnamespace
              WHERE {USER_SCHEMA} AND {} ORDER BY 1",
            not_member("t.oid")
        ),
        // Identity columns make their own sequences with their tables.
        format!(
            "SELECT format('CREATE SEQUENCE %I.%I AS %s INCREMENT %s MINVALUE %s MAXVALUE %s START %s CACHE %s%s',
                           n.nspname, c.relname, format_type(s.seqtypid, NULL), s.seqincrement, s.seqmin, s.seqmax,
                           s.seqstart, s.seqcache, CASE WHEN s.seqcycle THEN ' CYCLE' ELSE '' END)
               FROM pg_sequence s JOIN pg_class c ON c.oid = s.seqrelid JOIN pg_namespace n ON n.oid = c.relnamespace
              WHERE {USER_SCHEMA} AND {}
                AND NOT EXISTS (SELECT FROM pg_depend d WHERE d.objid = c.oid AND d.deptype = 'i')
              ORDER BY 1",
            not_member("c.oid")
        ),
        format!(
            "SELECT pg_get_functiondef(p.oid) FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace
              WHERE p.prokind IN ('f', 'p') AND {USER_SCHEMA} AND {} ORDER BY p.oid",
            not_member("p.oid")
        ),
        // Tables, partitioned ones with their key; partitions after their
        // parents (by oid: a parent is made before its partitions).
        format!(
            "SELECT CASE WHEN c.relispartition THEN
                      format('CREATE TABLE %I.%I PARTITION OF %I.%I %s', n.nspname, c.relname, pn.nspname, pc.relname, pg_get_expr(c.relpartbound, c.oid))
                    ELSE format('CREATE %sTABLE %I.%I (%s)%s',
                      CASE WHEN c.relpersistence = 'u' THEN 'UNLOGGED ' ELSE '' END, n.nspname, c.relname,
                      coalesce((SELECT string_agg(format('%I %s', a.attname, format_type(a.atttypid, a.atttypmod))
                          || CASE WHEN a.attcollation <> 0 AND a.attcollation <> ty.typcollation
                                  THEN ' COLLATE ' || (SELECT format('%I.%I', cn.nspname, co.collname) FROM pg_collation co JOIN pg_namespace cn ON cn.oid = co.collnamespace WHERE co.oid = a.attcollation) ELSE '' END
                          || CASE a.attidentity WHEN 'a' THEN ' GENERATED ALWAYS AS IDENTITY' WHEN 'd' THEN ' GENERATED BY DEFAULT AS IDENTITY' ELSE '' END
                          || CASE WHEN a.attgenerated = 's' THEN ' GENERATED ALWAYS AS (' || pg_get_expr(ad.adbin, ad.adrelid) || ') STORED'
                                  WHEN ad.adbin IS NOT NULL THEN ' DEFAULT ' || pg_get_expr(ad.adbin, ad.adrelid) ELSE '' END
                          || CASE WHEN a.attnotnull THEN ' NOT NULL' ELSE '' END, ', ' ORDER BY a.attnum)
                        FROM pg_attribute a JOIN pg_type ty ON ty.oid = a.atttypid
                        LEFT JOIN pg_attrdef ad ON ad.adrelid = a.attrelid AND ad.adnum = a.attnum
                       WHERE a.attrelid = c.oid AND a.attnum > 0 AND NOT a.attisdropped), ''),
                      CASE WHEN c.relkind = 'p' THEN ' PARTITION BY ' || pg_get_partkeydef(c.oid) ELSE '' END)
                    END
               FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
               LEFT JOIN pg_inherits i ON i.inhrelid = c.oid AND c.relispartition
               LEFT JOIN pg_class pc ON pc.oid = i.inhparent LEFT JOIN pg_namespace pn ON pn.oid = pc.relnamespace
              WHERE c.relkind IN ('r', 'p') AND {USER_SCHEMA} AND {} ORDER BY c.relispartition, c.oid",
            not_member("c.oid")
        ),
        format!(
            "SELECT format('ALTER SEQUENCE %I.%I OWNED BY %I.%I.%I', sn.nspname, s.relname, n.nspname, c.relname, a.attname)
               FROM pg_depend d
               JOIN pg_class s ON s.oid = d.objid AND s.relkind = 'S' JOIN pg_namespace sn ON sn.oid = s.relnamespace
               JOIN pg_class c ON c.oid = d.refobjid JOIN pg_namespace n ON n.oid = c.relnamespace
               JOIN pg_attribute a ON a.attrelid = c.oid AND a.attnum = d.refobjsubid
              WHERE d.deptype = 'a' AND d.classid = 'pg_class'::regclass AND {USER_SCHEMA} ORDER BY 1"
        ),
        // Keys and checks before foreign keys; none a partition inherits.
        format!(
            "SELECT format('ALTER TABLE %I.%I ADD CONSTRAINT %I %s', n.nspname, c.relname, k.conname, pg_get_constraintdef(k.oid))
               FROM pg_constraint k JOIN pg_class c ON c.oid = k.conrelid JOIN pg_namespace n ON n.oid = c.relnamespace
              WHERE k.contype IN ('p', 'u', 'c', 'x', 'f') AND k.conparentid = 0 AND NOT (k.contype = 'c' AND k.coninhcount > 0)
                AND {USER_SCHEMA} AND {}
              ORDER BY k.contype = 'f', c.oid, k.conname",
            not_member("c.oid")
        ),
        format!(
            "SELECT pg_get_indexdef(x.indexrelid)
               FROM pg_index x JOIN pg_class c ON c.oid = x.indrelid JOIN pg_namespace n ON n.oid = c.relnamespace
              WHERE NOT EXISTS (SELECT FROM pg_constraint k WHERE k.conindid = x.indexrelid AND k.contype IN ('p', 'u', 'x'))
                AND NOT EXISTS (SELECT FROM pg_inherits i WHERE i.inhrelid = x.indexrelid)
                AND {USER_SCHEMA} AND {} ORDER BY x.indexrelid",
            not_member("c.oid")
        ),
        format!(
            "SELECT format(CASE c.relkind WHEN 'v' THEN 'CREATE VIEW %I.%I AS %s' ELSE 'CREATE MATERIALIZED VIEW %I.%I AS %s WITH NO DATA' END,
                           n.nspname, c.relname, rtrim(pg_get_viewdef(c.oid), ';'))
               FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
              WHERE c.relkind IN ('v', 'm') AND {USER_SCHEMA} AND {} ORDER BY c.oid",
            not_member("c.oid")
        ),
        format!(
            "SELECT pg_get_triggerdef(t.oid) FROM pg_trigger t JOIN pg_class c ON c.oid = t.tgrelid JOIN pg_namespace n ON n.oid = c.relnamespace
              WHERE NOT t.tgisinternal AND t.tgparentid = 0 AND {USER_SCHEMA} AND {} ORDER BY t.oid",
            not_member("c.oid")
        ),
    ];
    // Indexes on materialized views come before the views: `apply`
    // makes them on its second pass.
    let mut out = Vec::new();
    for sql in &queries {
        for row in live.rows(sql, &[&state_schema]).await? {
            out.push(row.get::<_, String>(0));
        }
    }
    Ok(out)
}

/// Runs `statements` on the scratch database, again and again while
/// some that failed (on an object made later) now succeed; what still
/// fails is returned, each with the error, as not copied.
pub(crate) async fn apply(scratch: &Client, statements: Vec<String>) -> Vec<String> {
    let _ = scratch
        .batch_execute("SET check_function_bodies = off")
        .await;
    let mut left: Vec<(String, String)> =
        statements.into_iter().map(|s| (s, String::new())).collect();
    loop {
        let before = left.len();
        let mut failed = Vec::new();
        for (statement, _) in left {
            if let Err(e) = scratch.batch_execute(&statement).await {
                failed.push((statement, crate::db::describe(&e)));
            }
        }
        left = failed;
        if left.is_empty() || left.len() == before {
            break;
        }
    }
    let _ = scratch.batch_execute("RESET check_function_bodies").await;
    left.into_iter()
        .map(|(statement, error)| {
            let head: String = statement.chars().take(60).collect();
            format!("{error} (in `{head}`)")
        })
        .collect()
}
