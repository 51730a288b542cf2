//! A scratch cluster for what `migrate` learns before anything runs on the
//! live database (the lock trace, `migrate test`, `migrate drift`): a
//! throwaway server from the local binaries that listens only on a socket
//! in its own private directory, empty or holding a copy of the live
//! database's schema, removed when pgmaint exits, even after kill -9 (its
//! watchdog, then [`crate::cluster::sweep_scratch`] at the next start).
//!
//! The schema is copied with `pg_dump --schema-only` of the live server's
//! major version, under `[migrations]`'s `lock_timeout` (pg_dump's
//! `--lock-wait-timeout`) and `statement_timeout`, and loaded with psql;
//! what the scratch server refuses (an extension missing locally, what
//! depends on it) is kept in [`Scratch::not_copied`], never a failure.
//! The live database's roles are made first (`NOLOGIN`), so grants and
//! owners load as they are.

use std::path::{Path, PathBuf};
use std::process::Stdio;

use tokio_postgres::{Client, NoTls};

use super::{MigrateError, Script, Settings};
use crate::cluster::{Cluster, ClusterOptions};
use crate::connect::Target;
use crate::unnamed::Unnamed;

/// The database of a scratch cluster that holds the copy.
const DATABASE: &str = "postgres";

pub(crate) struct Scratch {
    cluster: Cluster,
    pub client: Client,
    /// What the scratch server refused while loading the live schema,
    /// one line each (`extension "postgis" is not available`).
    pub not_copied: Vec<String>,
    /// The local server's version, and the live one's when their major
    /// versions differ (the trace then says so).
    pub local_version: String,
    pub live_version: Option<String>,
    /// How the schema got there: `pg_dump 15.14`, or `empty`.
    pub copied_with: String,
}

/// Why there is no scratch cluster.
#[derive(Debug, thiserror::Error)]
pub(crate) enum ScratchError {
    /// This machine lacks the server binaries (or a `postgres` user).
    #[error("{0}")]
    Setup(String),
    #[error("{0}")]
    Failed(String),
}

impl From<ScratchError> for MigrateError {
    fn from(err: ScratchError) -> Self {
        match err {
            ScratchError::Setup(text) => MigrateError::Refused(text),
            ScratchError::Failed(text) => MigrateError::Failed(text),
        }
    }
}

impl Scratch {
    /// A new scratch cluster with an empty database.
    pub(crate) async fn empty() -> Result<Scratch, ScratchError> {
        let cluster = start().await?;
        let client = connect(&cluster, DATABASE).await?;
        let local_version = version(&client).await?;
        Ok(Scratch {
            cluster,
            client,
            not_copied: Vec::new(),
            local_version: local_version.text,
            live_version: None,
            copied_with: "empty".into(),
        })
    }

    /// A new scratch cluster holding the schema of the database `live` is
    /// connected to (`target`), pgmaint's state schema left out.
    pub(crate) async fn with_schema_of(
        live: &Client,
        target: &Target,
        settings: &Settings,
        state_schema: &str,
    ) -> Result<Scratch, ScratchError> {
        let live_version = version(live).await?;
        let mut scratch = Scratch::empty().await?;
        if live_version.major != major_of(&scratch.local_version) {
            scratch.live_version = Some(live_version.text.clone());
        }
        copy_roles(live, &scratch.client).await?;
        let Some((pg_dump, dump_version)) = find_pg_dump(live_version.major, &scratch.cluster.bin)
        else {
            // pgmaint's own, smaller copy: what it lacks is said as not
            // copied, with how to get pg_dump.
            let statements = crate::db::under(
                settings.timeouts(),
                crate::db::read_only(live, super::catalog_copy::statements(live, state_schema)),
            )
            .await
            .map_err(|e| {
                ScratchError::Failed(format!(
                    "reading the live catalog to copy it: {}",
                    crate::db::describe(&e)
                ))
            })?;
            scratch.not_copied = super::catalog_copy::apply(&scratch.client, statements).await;
            let major = live_version.major;
            scratch.copied_with = format!(
                "pgmaint's catalog copy, no pg_dump {major} found: install it with {} for a complete copy",
                crate::cluster::install_hint(
                    &format!("postgresql-client-{major}"),
                    &format!("postgresql@{major}")
                )
            );
            return Ok(scratch);
        };
        let dump = scratch.cluster.dir.join("schema.sql");
        run_pg_dump(&pg_dump, target, settings, state_schema, &dump).await?;
        scratch.not_copied = load(&scratch.cluster, &dump).await?;
        scratch.copied_with = format!("pg_dump {dump_version}");
        Ok(scratch)
    }

    /// Makes the live server's roles here too (`migrate drift` replays
    /// grants on an empty cluster).
    /// The scratch database as a connection target, for a child process
    /// (`format = "command"`'s migrator, traced there).
    pub(crate) fn target(&self) -> Result<Target, ScratchError> {
        crate::connect::resolve_with(
            Some(&format!(
                "{} sslmode=disable",
                self.cluster.socket_conninfo(DATABASE)
            )),
            None,
            &|_| None,
        )
        .map_err(|e| ScratchError::Failed(format!("the scratch cluster's address: {e}")))
    }

    /// Another session on the scratch database (the command trace
    /// watches locks from one while the migrator runs).
    pub(crate) async fn session(&self) -> Result<Client, ScratchError> {
        connect(&self.cluster, DATABASE).await
    }

    pub(crate) async fn copy_roles_of(&self, live: &Client) -> Result<(), ScratchError> {
        copy_roles(live, &self.client).await
    }
}

/// Applies `script` to a scratch database as `migrate up` would apply it
/// (one transaction, or statement by statement), without a ledger; the
/// first failure as `file:line: message`.
pub(crate) async fn apply(client: &Client, script: &Script) -> Result<(), String> {
    let statements = super::apply::statements_of(script).map_err(|e| e.to_string())?;
    let place = |s: &super::statements::Statement, err: tokio_postgres::Error| {
        format!(
            "{}:{}: {}",
            script.path.display(),
            s.line,
            crate::db::describe(&err)
        )
    };
    if script.transactional {
        client
            .batch_execute("BEGIN")
            .await
            .map_err(|e| crate::db::describe(&e))?;
        for s in &statements {
            if let Err(err) = client.batch_execute(&s.text).await {
                let _ = client.batch_execute("ROLLBACK").await;
                return Err(place(s, err));
            }
        }
        client
            .batch_execute("COMMIT")
            .await
            .map_err(|e| crate::db::describe(&e))?;
    } else {
        for s in &statements {
            client
                .batch_execute(&s.text)
                .await
                .map_err(|e| place(s, e))?;
        }
    }
    Ok(())
}

async fn start() -> Result<Cluster, ScratchError> {
    tokio::task::spawn_blocking(|| {
        crate::cluster::sweep_scratch();
        Cluster::start(ClusterOptions {
            fsync: true,
            keep: false,
            scratch: true,
        })
    })
    .await
    .map_err(|e| ScratchError::Failed(e.to_string()))?
    .map_err(|err| {
        if err.is_setup() {
            ScratchError::Setup(format!(
                "a scratch cluster needs the local PostgreSQL server binaries: {err}"
            ))
        } else {
            ScratchError::Failed(format!("starting a scratch cluster: {err}"))
        }
    })
}

async fn connect(cluster: &Cluster, database: &str) -> Result<Client, ScratchError> {
    let (client, connection) = tokio_postgres::connect(&cluster.socket_conninfo(database), NoTls)
        .await
        .map_err(|e| {
            ScratchError::Failed(format!(
                "connecting to the scratch cluster: {}",
                crate::db::describe(&e)
            ))
        })?;
    tokio::spawn(connection);
    Ok(client)
}

struct Version {
    text: String,
    major: u32,
}

async fn version(client: &Client) -> Result<Version, ScratchError> {
    let row = client
        .row("SELECT current_setting('server_version_num')::int", &[])
        .await
        .map_err(|e| ScratchError::Failed(crate::db::describe(&e)))?;
    let num: i32 = row.get(0);
    let text = super::lint::version_from_num(num);
    Ok(Version {
        major: major_of(&text),
        text,
    })
}

fn major_of(version: &str) -> u32 {
    version
        .split(|c: char| !c.is_ascii_digit())
        .next()
        .and_then(|m| m.parse().ok())
        .unwrap_or(0)
}

/// Makes each role of the live server the scratch one lacks, without a
/// login or a password: only its name matters to a grant or an owner.
async fn copy_roles(live: &Client, scratch: &Client) -> Result<(), ScratchError> {
    let failed = |e: tokio_postgres::Error| {
        ScratchError::Failed(format!(
            "reading the live server's roles: {}",
            crate::db::describe(&e)
        ))
    };
    let live_roles = crate::db::read_only(
        live,
        live.rows(
            "SELECT rolname::text FROM pg_roles WHERE rolname !~ '^pg_' ORDER BY 1",
            &[],
        ),
    )
    .await
    .map_err(failed)?;
    let have: Vec<String> = scratch
        .rows("SELECT rolname::text FROM pg_roles", &[])
        .await
        .map_err(failed)?
        .iter()
        .map(|r| r.get(0))
        .collect();
    for row in live_roles {
        let name: String = row.get(0);
        if have.contains(&name) {
            continue;
        }
        scratch
            .batch_execute(&format!(
                "CREATE ROLE {} NOLOGIN",
                crate::sql::quote_ident(&name)
            ))
            .await
            .map_err(|e| ScratchError::Failed(crate::db::describe(&e)))?;
    }
    Ok(())
}

/// A pg_dump of `major`, and its version: the local server's own, the
/// Debian directory of that version, then PATH.
fn find_pg_dump(major: u32, local_bin: &Path) -> Option<(PathBuf, String)> {
    // `PGMAINT_PG_DUMP`: that pg_dump only (`none`: none, pgmaint's own
    // catalog copy instead).
    if let Some(chosen) = std::env::var_os("PGMAINT_PG_DUMP").filter(|v| !v.is_empty()) {
        return dump_version(PathBuf::from(chosen), major);
    }
    let mut candidates = vec![
        local_bin.join("pg_dump"),
        PathBuf::from(format!("/usr/lib/postgresql/{major}/bin/pg_dump")),
        PathBuf::from(format!("/opt/homebrew/opt/postgresql@{major}/bin/pg_dump")),
        PathBuf::from(format!("/usr/local/opt/postgresql@{major}/bin/pg_dump")),
    ];
    candidates.extend(
        std::env::var_os("PATH")
            .iter()
            .flat_map(std::env::split_paths)
            .map(|dir| dir.join("pg_dump")),
    );
    candidates
        .into_iter()
        .find_map(|path| dump_version(path, major))
}

/// `path` and its version, when it is a pg_dump of `major`.
fn dump_version(path: PathBuf, major: u32) -> Option<(PathBuf, String)> {
    if !path.is_file() {
        return None;
    }
    let out = std::process::Command::new(&path)
        .arg("--version")
        .output()
        .ok()?;
    // "pg_dump (PostgreSQL) 15.14 (Debian 15.14-1.pgdg120+1)"
    let text = String::from_utf8_lossy(&out.stdout);
    let version = text.split_whitespace().nth(2)?.to_string();
    (major_of(&version) == major).then_some((path, version))
}

async fn run_pg_dump(
    pg_dump: &Path,
    target: &Target,
    settings: &Settings,
    state_schema: &str,
    out: &Path,
) -> Result<(), ScratchError> {
    let env = super::command::libpq_env(target);
    let options = super::command::pgoptions(
        std::env::var("PGOPTIONS").ok().as_deref(),
        settings.lock_timeout,
        settings.statement_timeout,
    );
    let output = tokio::process::Command::new(pg_dump)
        .args([
            "--schema-only",
            "--no-tablespaces",
            "--no-subscriptions",
            "--no-publications",
            "--no-security-labels",
            "--no-comments",
        ])
        .arg(format!(
            "--lock-wait-timeout={}",
            settings.lock_timeout.as_millis().max(1)
        ))
        .arg(format!("--exclude-schema={state_schema}"))
        .arg("--file")
        .arg(out)
        .envs(env.iter().filter(|(k, _)| *k != "DATABASE_URL").cloned())
        .env("PGOPTIONS", options)
        .stdin(Stdio::null())
        .output()
        .await
        .map_err(|e| ScratchError::Failed(format!("running {}: {e}", pg_dump.display())))?;
    if !output.status.success() {
        return Err(ScratchError::Failed(format!(
            "pg_dump --schema-only of the live database failed: {}",
            String::from_utf8_lossy(&output.stderr).trim()
        )));
    }
    Ok(())
}

/// Loads a dump into the scratch database with psql, going on past
/// errors; each error is a line of what was not copied.
async fn load(cluster: &Cluster, dump: &Path) -> Result<Vec<String>, ScratchError> {
    let local = cluster.bin.join("psql");
    let psql = if local.is_file() {
        local
    } else {
        PathBuf::from("psql")
    };
    let output = tokio::process::Command::new(&psql)
        .args(["-X", "-q", "-v", "ON_ERROR_STOP=0", "-d"])
        .arg(cluster.socket_conninfo(DATABASE))
        .arg("-f")
        .arg(dump)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .output()
        .await
        .map_err(|e| ScratchError::Failed(format!("running {}: {e}", psql.display())))?;
    Ok(refusals(&String::from_utf8_lossy(&output.stderr)))
}

/// psql's `psql:FILE:LINE: ERROR:  message` lines, as the messages.
fn refusals(stderr: &str) -> Vec<String> {
    stderr
        .lines()
        .filter_map(|line| line.split_once("ERROR:").map(|(_, m)| m.trim().to_string()))
        .collect()
}

#[cfg(test)]
mod tests {
    #[test]
    fn psql_errors_are_what_was_not_copied() {
        let stderr = "psql:/tmp/x/schema.sql:20: ERROR:  extension \"postgis\" is not available\nDETAIL:  Could not open extension control file\npsql:/tmp/x/schema.sql:31: ERROR:  type \"geometry\" does not exist\n";
        assert_eq!(
            super::refusals(stderr),
            [
                "extension \"postgis\" is not available",
                "type \"geometry\" does not exist"
            ]
        );
        assert_eq!(super::major_of("15.14"), 15);
        assert_eq!(super::major_of("17devel"), 17);
    }
}
