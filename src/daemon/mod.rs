//! `pgmaint daemon`: runs the schedules and serves the HTTP API.
//!
//! Each schedule's fires are computed forward from its last fire, which is
//! kept in the state schema. A due fire is claimed with an INSERT on its
//! (schedule, scheduled_for) key, so among any number of daemons exactly one
//! runs it. Fires missed while no daemon ran follow the schedule's
//! `misfire`: `run_once` runs the latest of them if it is within
//! `misfire_grace`, `skip` runs none; the others are recorded as skipped.
//! A fire whose previous run still goes (its schedule's lease is held) is
//! recorded as skipped too. Claims, runs and schedule leases belong to
//! this daemon's lease owner, renewed by its `lease::Keeper`; no session
//! lock is held, so the daemon works through a transaction pooler. A schedule created or changed through the API
//! counts its fires from then, and reaches every daemon at once (its own
//! API wakes it; the others hear a NOTIFY, or see the change within
//! `RECHECK` where notifications do not arrive). When the database goes away the daemon keeps
//! retrying with backoff, logging once per change. The first SIGTERM or
//! Ctrl-C stops claiming and asks running tasks to stop after their batch;
//! the daemon waits for them up to a grace period and exits 0.

mod api;
mod api_migrations;
mod api_migrations_command;
mod api_schedules;
mod failing;
mod metrics;
mod openapi;
mod pool;
mod watch;

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use chrono::{DateTime, Utc};
use tokio::task::JoinSet;
use tokio_postgres::Client;

use crate::config::{Config, ScheduleConfig};
use crate::connect::{self, Target};
use crate::output::Progress;
use crate::runner::{self, Confirmation, Notice, Refusal, RunError, RunRequest, Started};
use crate::schedule::Schedule;
use crate::status::Status;
use crate::stop::Stop;
use crate::store::{self, Trigger};
use failing::Failing;

/// How long running tasks get to finish their batch after a stop.
const GRACE: Duration = Duration::from_secs(30);
/// The longest the loop sleeps without looking again.
const TICK: Duration = Duration::from_secs(15);

/// What the scheduler, the runs it starts and the API share.
pub struct Shared {
    pub config: Config,
    pub target: Target,
    pub stop: Stop,
    /// This daemon, as recorded on its claims.
    pub id: String,
    pub fires_claimed: AtomicU64,
    /// Wakes the scheduler when the API changes a schedule.
    pub schedules_changed: tokio::sync::Notify,
    /// The health watch's latest report, for /metrics.
    pub health: std::sync::Mutex<Option<watch::Watched>>,
    /// Renews the leases of this daemon's claims, runs and schedules.
    pub keeper: crate::lease::Keeper,
    /// `[database] direct_url`'s target, for the runs that need a session.
    direct: Option<Target>,
    /// What the start saw of a transaction pooler (`connect::detect_pooler`).
    pooler: std::sync::Mutex<Option<String>>,
    /// The database, as notifications name it.
    pub origin: crate::notify::Origin,
    /// The API's and /metrics' connections.
    pool: pool::Pool,
    /// Why the scheduler's database work keeps failing, and since when;
    /// `None` while it works. `/healthz` says degraded, `/readyz` 503.
    trouble: std::sync::Mutex<Option<String>>,
    /// Failed API authentications per address in the current minute.
    pub(crate) auth_failures:
        std::sync::Mutex<std::collections::HashMap<std::net::IpAddr, api::AuthWindow>>,
}

impl Shared {
    /// What the daemon shares, before anything connects.
    fn new(config: Config, target: Target, id: String) -> Shared {
        // Notifications name the database by its connection settings, and
        // by the config's `name` when it has one.
        let origin = crate::notify::Origin::of(&target, config.name.as_deref());
        Shared {
            origin,
            id,
            pool: pool::new(target.clone()),
            keeper: crate::lease::Keeper::start(
                &target,
                &config.state_schema,
                store::LeaseOwner::new(),
            ),
            direct: config.database.direct_url.as_deref().and_then(|url| {
                let mut direct =
                    connect::resolve(Some(url), config.database.connect_timeout.map(|d| d.0))
                        .ok()?;
                direct.session = target.session;
                direct.direct = true;
                Some(direct)
            }),
            pooler: std::sync::Mutex::new(None),
            config,
            target,
            stop: Stop::default(),
            fires_claimed: AtomicU64::new(0),
            schedules_changed: tokio::sync::Notify::new(),
            health: std::sync::Mutex::new(None),
            trouble: std::sync::Mutex::new(None),
            auth_failures: std::sync::Mutex::new(std::collections::HashMap::new()),
        }
    }

    /// Why the daemon's database work is failing, if it is.
    pub(crate) fn trouble(&self) -> Option<String> {
        self.trouble.lock().expect("not poisoned").clone()
    }

    fn set_trouble(&self, reason: Option<String>) {
        *self.trouble.lock().expect("not poisoned") = reason;
    }

    /// A connection of its own, for a session that holds advisory locks or
    /// LISTENs (the scheduler, a fire, a run, the health watch).
    pub async fn connect(&self) -> Result<Client, connect::ConnectError> {
        connect::connect(&self.target).await
    }

    /// A connection for a run of `tasks`: on `[database] direct_url` when a
    /// task needs a session of its own; refused (the reason) when one does,
    /// direct_url is unset and the start saw a transaction pooler.
    pub async fn connect_for(
        &self,
        tasks: &[&crate::config::TaskConfig],
    ) -> Result<Client, String> {
        let needing = runner::needing_a_session(tasks, false);
        let target = match (&self.direct, needing.is_empty()) {
            (_, true) => &self.target,
            (Some(direct), false) => direct,
            (None, false) => {
                let seen = self.pooler.lock().expect("not poisoned").clone();
                if let Some(seen) = seen {
                    return Err(runner::needs_direct_url(&needing, &seen));
                }
                &self.target
            }
        };
        connect::connect(target).await.map_err(|e| e.to_string())
    }

    /// A session of its own for migrations (their lock, files that run
    /// outside a transaction): `[database] direct_url` when set; refused
    /// (the reason) when it is unset and the start saw a transaction pooler.
    pub(crate) async fn session(&self) -> Result<Client, String> {
        let target = match &self.direct {
            Some(direct) => direct,
            None => {
                let seen = self.pooler.lock().expect("not poisoned").clone();
                if let Some(seen) = seen {
                    return Err(format!(
                        "migrations need a session of their own, and the daemon's connection looks like a transaction pooler ({seen}); set [database] direct_url"
                    ));
                }
                &self.target
            }
        };
        connect::connect(target).await.map_err(|e| e.to_string())
    }

    /// The target `session` connects to.
    pub(crate) fn session_target(&self) -> &Target {
        self.direct.as_ref().unwrap_or(&self.target)
    }

    /// A connection of the pool, for the API's and /metrics' reads and the
    /// API's schedule changes.
    pub(crate) async fn pooled(&self) -> Result<pool::Pooled, pool::PoolError> {
        self.pool.get().await
    }
}

/// Why the daemon would not start.
#[derive(Debug, thiserror::Error)]
pub enum DaemonError {
    /// A config schedule cannot be computed (its cron or time zone).
    #[error("{0}")]
    Schedule(String),
}

/// The daemon's HTTP routes over `config` and `target`, without its
/// scheduler or health watch, each request limited to `request_timeout`
/// (the daemon's own is 30 s): what a test calls in-process (tower's
/// `oneshot`) or serves on a listener of its own.
pub fn app(config: Config, target: Target, request_timeout: Duration) -> axum::Router {
    let id = format!("{} pid {} (app)", Trigger::who(), std::process::id());
    api::router_with(Arc::new(Shared::new(config, target, id)), request_timeout)
}

/// Runs the schedules and serves the API on `listener` until a signal
/// stops it. The caller resolves the config and the connection and binds
/// the listener (a test binds `127.0.0.1:0`), so nothing here knows the
/// command line.
pub async fn run(
    config: Config,
    target: Target,
    listener: tokio::net::TcpListener,
) -> Result<(), DaemonError> {
    for s in &config.schedules {
        Schedule::new(s).map_err(DaemonError::Schedule)?;
    }
    if let Some(url) = &config.database.direct_url {
        connect::resolve(Some(url), None)
            .map_err(|e| DaemonError::Schedule(format!("[database] direct_url: {e}")))?;
    }
    let id = format!("{} pid {}", Trigger::who(), std::process::id());
    let shared = Arc::new(Shared::new(config, target, id));
    shared
        .stop
        .on_signals(|| tracing::info!("signal received: stopping (signal again to exit at once)"));
    let session = shared.target.session;
    let listen = listener
        .local_addr()
        .map(|a| a.to_string())
        .unwrap_or_default();
    // For the first line's sake only: correctness never depends on it.
    let pooler = tokio::time::timeout(
        Duration::from_secs(3),
        connect::detect_pooler(&shared.target),
    )
    .await
    .ok()
    .flatten();
    let connection = match (&pooler, shared.direct.is_some()) {
        (None, _) => "direct (no pooler seen)".to_string(),
        (Some(seen), true) => format!("{seen}; runs that need a session use [database] direct_url"),
        (Some(seen), false) => format!(
            "{seen}; runs of vacuum, analyze, reindex, partitions and refresh tasks are refused until [database] direct_url is set"
        ),
    };
    *shared.pooler.lock().expect("not poisoned") = pooler;
    tracing::info!(listen = %listen, daemon = shared.id, lock_timeout = %session.lock_timeout, statement_timeout = %session.statement_timeout, connection = %connection, "pgmaint daemon started");
    let (shutdown, shutting_down) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(api::serve(
        listener,
        api::router(shared.clone()),
        async move {
            let _ = shutting_down.await;
        },
    ));
    let watcher = tokio::spawn(watch::watch(shared.clone()));
    let mut runs = JoinSet::new();
    scheduler(&shared, &mut runs).await;

    tracing::info!(
        "stopping: no new fires are claimed; waiting up to {}s for running tasks",
        GRACE.as_secs()
    );
    let waited =
        tokio::time::timeout(GRACE, async { while runs.join_next().await.is_some() {} }).await;
    if waited.is_err() {
        tracing::warn!(
            "running tasks did not stop within the grace period; the next pgmaint marks them interrupted"
        );
    }
    // Requests under way get a moment to be answered; then the server goes.
    let _ = shutdown.send(());
    let server_handle = server.abort_handle();
    if tokio::time::timeout(Duration::from_secs(2), server)
        .await
        .is_err()
    {
        server_handle.abort();
    }
    watcher.abort();
    tracing::info!("pgmaint daemon stopped");
    Ok(())
}

/// Connects, retrying on the shared policy (`Failing`) until it works or
/// a stop is asked for; what fails is logged as news, not once per try.
async fn connect_with_retry(shared: &Shared, failing: &mut Failing) -> Option<Client> {
    loop {
        if shared.stop.requested().is_some() {
            return None;
        }
        match shared.connect().await {
            Ok(client) => match store::ensure_ready(&client, &shared.config.state_schema).await {
                Ok(()) => return Some(client),
                Err(err) => {
                    failing
                        .failed(shared, "the state schema cannot be used", &err.to_string())
                        .await
                }
            },
            Err(err) => {
                failing
                    .failed(
                        shared,
                        "the database went away (cannot connect)",
                        &err.to_string(),
                    )
                    .await
            }
        }
    }
}

/// A driver error's full text: the server's message, detail, hint and
/// SQLSTATE (`db::describe`), not the driver's bare "db error".
fn described(err: &tokio_postgres::Error) -> String {
    crate::db::describe(err)
}

/// A schedule the daemon runs.
pub struct Scheduled {
    pub config: ScheduleConfig,
    /// For an API schedule, since when it reads as it does (created or
    /// last changed): its fires are counted from then, never before.
    pub since: Option<DateTime<Utc>>,
}

/// The config's schedules and those created through the API (an API one
/// whose name a config one took is ignored).
pub async fn all_schedules(
    shared: &Shared,
    client: &Client,
) -> Result<Vec<Scheduled>, tokio_postgres::Error> {
    let mut all: Vec<Scheduled> = shared
        .config
        .schedules
        .iter()
        .map(|config| Scheduled {
            config: config.clone(),
            since: None,
        })
        .collect();
    for s in api_schedules::load(client, &shared.config.state_schema).await? {
        if shared.config.schedule(&s.config.name).is_none() {
            all.push(Scheduled {
                config: s.config,
                since: Some(s.since),
            });
        }
    }
    Ok(all)
}

/// How often a scheduler compares the API's schedules with what it last
/// read, for the changes no notification told it of.
const RECHECK: Duration = Duration::from_secs(3);

/// How a scheduler learns that the API's schedules changed: this daemon's
/// API wakes it (`Shared::schedules_changed`), every daemon's API notifies
/// the channel it LISTENs on, and where notifications do not arrive it
/// compares `api_schedules::digest` every `RECHECK`.
struct Changes {
    listener: Option<(
        Client,
        tokio::sync::mpsc::UnboundedReceiver<tokio_postgres::Notification>,
    )>,
    /// The digest as of the last pass.
    digest: Option<String>,
}

impl Changes {
    /// Listens again if the listening connection is gone (logged at debug:
    /// the recheck still finds every change, a few seconds later).
    async fn listen(&mut self, shared: &Shared) {
        if self.listener.as_ref().is_some_and(|(c, _)| !c.is_closed()) {
            return;
        }
        self.listener = None;
        let listening = async {
            let (client, notifications) = connect::connect_listening(&shared.target)
                .await
                .map_err(|e| e.to_string())?;
            client
                .batch_execute(&format!("LISTEN {}", api_schedules::CHANNEL))
                .await
                .map_err(|e| crate::db::describe(&e))?;
            Ok::<_, String>((client, notifications))
        };
        match listening.await {
            Ok(listener) => self.listener = Some(listener),
            Err(err) => tracing::debug!("cannot LISTEN for schedule changes: {err}"),
        }
    }

    /// Waits `wait`, or less if the API's schedules change meanwhile.
    async fn wait(&mut self, shared: &Shared, db: &Client, wait: Duration) {
        let schema = &shared.config.state_schema;
        let until = tokio::time::Instant::now() + wait;
        loop {
            let slice = until
                .saturating_duration_since(tokio::time::Instant::now())
                .min(RECHECK);
            let notified = async {
                match self.listener.as_mut() {
                    Some((_, notifications)) => loop {
                        match notifications.recv().await {
                            Some(n) if n.payload() == schema.as_str() => return true,
                            Some(_) => continue,
                            None => return false,
                        }
                    },
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                _ = shared.stop.sleep(slice) => {}
                _ = shared.schedules_changed.notified() => return,
                heard = notified => {
                    if heard {
                        tracing::info!("the API's schedules changed (notified); scheduling them");
                        return;
                    }
                    // The listening connection ended; the recheck goes on.
                    self.listener = None;
                }
            }
            if shared.stop.requested().is_some() || tokio::time::Instant::now() >= until {
                return;
            }
            match api_schedules::digest(db, schema).await {
                Ok(now) if self.digest.as_ref() != Some(&now) => {
                    tracing::info!("the API's schedules changed (rechecked); scheduling them");
                    return;
                }
                Ok(_) => {}
                // The next pass finds out what is wrong, and says so.
                Err(_) => return,
            }
        }
    }
}

async fn scheduler(shared: &Arc<Shared>, runs: &mut JoinSet<()>) {
    let schema = shared.config.state_schema.clone();
    let mut failing = Failing::default();
    // Whether a pass went through yet (the first says the database is reachable).
    let mut started = false;
    let mut client: Option<Client> = None;
    let mut last_prune: Option<std::time::Instant> = None;
    let mut standby = false;
    let mut changes = Changes {
        listener: None,
        digest: None,
    };
    while shared.stop.requested().is_none() {
        let Some(db) = (match client.take().filter(|c| !c.is_closed()) {
            Some(c) => Some(c),
            None => connect_with_retry(shared, &mut failing).await,
        }) else {
            break;
        };
        let mut db = db;
        let mut next_wake = Utc::now() + chrono::Duration::from_std(TICK).expect("small");
        let pass = async {
            // Claiming a fire writes to the state schema, which a standby
            // cannot: claim nothing there, say so once, and look again each
            // tick in case it is promoted.
            if crate::db::in_recovery(&db).await.map_err(|e| described(&e))?
            {
                if !standby {
                    tracing::warn!(
                        "this server is a standby (pg_is_in_recovery() is true): pgmaint does not write here, so no fires are claimed until it is promoted"
                    );
                    standby = true;
                }
                return Ok(());
            }
            if standby {
                tracing::info!("the server is no longer a standby; scheduling");
                standby = false;
            }
            for id in store::mark_interrupted(&mut db, &schema)
                .await
                .map_err(|e| e.to_string())?
            {
                tracing::warn!(
                    "run {id} was left running by a process that is gone; marked it interrupted"
                );
            }
            store::mark_fires_interrupted(&db, &schema)
                .await
                .map_err(|e| described(&e))?;
            changes.listen(shared).await;
            // Read before the schedules, so a change made between the two
            // reads is seen by the next recheck.
            changes.digest = Some(
                api_schedules::digest(&db, &schema)
                    .await
                    .map_err(|e| described(&e))?,
            );
            let schedules = all_schedules(shared, &db)
                .await
                .map_err(|e| described(&e))?;
            tracing::debug!(
                schedules = schedules.len(),
                "read the schedules and the API's digest"
            );
            for scheduled in schedules.iter().filter(|s| s.config.enabled) {
                let config = &scheduled.config;
                // API schedules were checked when saved; a config change
                // since (a task renamed) leaves them invalid, not fatal.
                let Ok(schedule) = Schedule::new(config) else {
                    continue;
                };
                if let Some(next) = due(shared, &mut db, scheduled, &schedule, runs)
                    .await
                    .map_err(|e| format!("schedule {}: {}", config.name, described(&e)))?
                {
                    next_wake = next_wake.min(next);
                }
            }
            if let Some(keep) = &shared.config.keep_runs
                && last_prune.is_none_or(|t| t.elapsed() > Duration::from_secs(3600))
            {
                let pruned = store::prune_runs_and_fires(&db, &schema, keep)
                    .await
                    .map_err(|e| described(&e))?;
                if pruned > 0 {
                    tracing::info!("deleted {pruned} run(s) older than keep_runs = {keep}");
                }
                last_prune = Some(std::time::Instant::now());
            }
            Ok::<_, String>(())
        }
        .await;
        match pass {
            Ok(()) => {
                if !failing.recovered(shared) && !started {
                    tracing::info!("the database is reachable; scheduling");
                }
                started = true;
                client = Some(db);
            }
            Err(err) => {
                // A lost connection is connected again; a server error
                // keeps the connection and waits the same.
                let what = if db.is_closed() || lost_to_the_server(&err) {
                    "the database went away (the connection was lost)"
                } else {
                    "a scheduling pass failed"
                };
                if !db.is_closed() && !lost_to_the_server(&err) {
                    client = Some(db);
                }
                failing.failed(shared, what, &err).await;
                continue;
            }
        }
        // Reap finished runs so the set does not grow.
        while runs.try_join_next().is_some() {}
        let wait = (next_wake - Utc::now()).to_std().unwrap_or(Duration::ZERO);
        if let Some(db) = &client {
            changes
                .wait(shared, db, wait.min(TICK) + Duration::from_millis(5))
                .await;
        }
    }
}

/// Handles a schedule's due fires; returns its next fire after now.
async fn due(
    shared: &Arc<Shared>,
    db: &mut Client,
    scheduled: &Scheduled,
    schedule: &Schedule,
    runs: &mut JoinSet<()>,
) -> Result<Option<DateTime<Utc>>, tokio_postgres::Error> {
    let config = &scheduled.config;
    let schema = &shared.config.state_schema;
    let now = Utc::now();
    // Fires are counted from the last one, but an API schedule's never
    // from before it read as it does now: a new one from its creation (so
    // the fires GET listed are the ones that happen, however late a daemon
    // sees it), a changed one from its change.
    let last = match (
        store::last_fire(db, schema, &config.name).await?,
        scheduled.since,
    ) {
        (Some(last), Some(since)) => last.max(since),
        (last, Some(since)) => last.unwrap_or(since),
        (Some(last), None) => last,
        (None, None) => {
            // A config schedule's first sight: count from now, do not
            // back-fill.
            store::begin_schedule(db, schema, &config.name, now).await?;
            return Ok(schedule.next_after(now));
        }
    };
    let due = crate::schedule::due_fires(schedule, config, last, now);
    for (fire, reason) in &due.skipped {
        if store::claim_fire(
            db,
            schema,
            &config.name,
            *fire,
            &shared.id,
            Status::Skipped,
            Some(reason),
            shared.keeper.owner(),
        )
        .await?
        {
            tracing::info!(schedule = config.name, fire = %fire, "skipped: {reason}");
        }
    }
    let Some(latest) = due.run else {
        return Ok(schedule.next_after(now));
    };
    if store::claim_fire(
        db,
        schema,
        &config.name,
        latest,
        &shared.id,
        Status::Running,
        None,
        shared.keeper.owner(),
    )
    .await?
    {
        shared.fires_claimed.fetch_add(1, Ordering::Relaxed);
        tracing::info!(schedule = config.name, fire = %latest, "claimed");
        let shared = shared.clone();
        let config = config.clone();
        runs.spawn(async move {
            if let Err(err) = run_fire(&shared, &config, latest).await {
                tracing::error!(schedule = config.name, fire = %latest, "the fire failed: {err}");
                record_lost_fire(&shared, &config, latest, &err).await;
            }
        });
    }
    Ok(schedule.next_after(now))
}

/// Whether an error's text says the server went away under the work: it
/// was shut down or restarted (SQLSTATE 57P01..57P03), or the connection
/// closed.
fn lost_to_the_server(err: &str) -> bool {
    ["[SQLSTATE 57P01]", "[SQLSTATE 57P02]", "[SQLSTATE 57P03]"]
        .iter()
        .any(|code| err.contains(code))
        || err.contains("connection closed")
        || err.contains("error communicating with the server")
        || err.contains("could not connect")
}

/// How many times a fire's end is tried on a fresh connection.
const RECORD_TRIES: usize = 8;

/// Records a fire whose run failed before it could record its own end (a
/// server restart took its connections), with what happened, so it is not
/// later taken for one whose daemon died. Tries a few fresh connections on
/// the shared policy; a stop or a database still away leaves it to the
/// next pass's `mark_fires_interrupted`.
async fn record_lost_fire(shared: &Shared, config: &ScheduleConfig, at: DateTime<Utc>, err: &str) {
    let reason = if lost_to_the_server(err) {
        format!(
            "lost to a database server restart (or its connection dropped) during the run: {err}"
        )
    } else {
        format!("the run failed before it was recorded: {err}")
    };
    let mut waits = crate::retry::reconnect_waits().take(RECORD_TRIES);
    loop {
        if let Ok(client) = shared.connect().await
            && store::finish_fire(
                &client,
                &shared.config.state_schema,
                &config.name,
                at,
                Status::Interrupted,
                Some(&reason),
            )
            .await
            .is_ok()
        {
            tracing::warn!(schedule = config.name, fire = %at, "marked interrupted: {reason}");
            return;
        }
        let Some(wait) = waits.next() else { return };
        if shared.stop.requested().is_some() {
            return;
        }
        shared.stop.sleep(wait).await;
    }
}

/// Runs one claimed fire on its own connections: one for the run, one to
/// keep its claim up to date.
/// Records a claimed fire as skipped, with the reason, and logs it.
async fn skip_fire(
    book: &Client,
    schema: &str,
    config: &ScheduleConfig,
    at: DateTime<Utc>,
    reason: &str,
) -> Result<(), tokio_postgres::Error> {
    tracing::warn!(schedule = config.name, fire = %at, "skipped: {reason}");
    store::finish_fire(
        book,
        schema,
        &config.name,
        at,
        Status::Skipped,
        Some(reason),
    )
    .await
}

async fn run_fire(
    shared: &Shared,
    config: &ScheduleConfig,
    at: DateTime<Utc>,
) -> Result<(), String> {
    let schema = &shared.config.state_schema;
    let book = shared.connect().await.map_err(|e| e.to_string())?;
    let tasks: Vec<&crate::config::TaskConfig> = config
        .tasks
        .iter()
        .filter_map(|name| shared.config.task(name))
        .filter(|task| task.enabled)
        .collect();
    let mut worker = match shared.connect_for(&tasks).await {
        Ok(worker) => worker,
        Err(reason) => {
            let _ = skip_fire(&book, schema, config, at, &reason).await;
            return Ok(());
        }
    };
    let owner = shared.keeper.owner();
    let locked = store::try_lock_schedule(&mut worker, schema, &config.name, owner)
        .await
        .map_err(|e| described(&e))?;
    if !locked {
        let reason = "the previous run of this schedule is still going";
        skip_fire(&book, schema, config, at, reason)
            .await
            .map_err(|e| described(&e))?;
        return Ok(());
    }
    let (started, run_id) = tokio::sync::oneshot::channel();
    let request = RunRequest {
        tasks,
        dry_run: false,
        batch_size: None,
        max_runtime: config.max_runtime,
        trigger: Trigger::schedule(&config.name, &at.to_rfc3339()),
        confirmation: Confirmation::Schedule {
            allow_critical: config.allow_critical,
        },
        check_first: false,
        verbose: false,
        started: Some(started),
        lease: Some(owner),
        target: Some(&shared.target),
        notice: Notice {
            started: Started::Fire {
                schedule: config.clone(),
                at,
            },
            origin: shared.origin.clone(),
        },
    };
    let progress = Progress::disabled();
    let record_id = async {
        if let Ok(id) = run_id.await {
            let _ = store::set_fire_run(&book, schema, &config.name, at, id).await;
        }
    };
    let (report, ()) = tokio::join!(
        runner::run(
            &mut worker,
            &shared.config,
            request,
            &shared.stop,
            &progress
        ),
        record_id
    );
    let _ = store::unlock_schedule(&worker, schema, &config.name, owner).await;
    let report = match report {
        Ok(report) => report,
        Err(RunError::Refused(refusal)) => {
            // The runner wrote nothing; on a standby `book` cannot either.
            let _ = skip_fire(&book, schema, config, at, &refusal.to_string()).await;
            return Ok(());
        }
        Err(err) => return Err(err.to_string()),
    };
    let left_out = &report.unconfirmed;
    if !left_out.is_empty() {
        tracing::warn!(
            schedule = config.name,
            "critical task(s) {} left out: the schedule does not set allow_critical = true",
            left_out.join(", ")
        );
    }
    let reason = (!left_out.is_empty())
        .then(|| format!("critical task(s) left out: {}", left_out.join(", ")));
    store::finish_fire(
        &book,
        schema,
        &config.name,
        at,
        report.status,
        reason.as_deref(),
    )
    .await
    .map_err(|e| described(&e))?;
    Ok(())
}

/// Why a run the API asked for did not start.
pub enum StartError {
    /// The runner refused it (a critical task unconfirmed, a standby).
    Refused(Refusal),
    Failed(String),
}

/// A run the API asked for, as `pgmaint run` would take it.
pub struct RunNow {
    pub tasks: Vec<String>,
    pub dry_run: bool,
    pub confirmation: Confirmation,
    pub batch_size: Option<u64>,
    pub max_runtime: Option<Duration>,
    /// The request, as the audit trail records it.
    pub command: String,
    pub started: Started,
}

/// Starts a run now (the API's run-now), returning its id once recorded.
pub async fn start_now(shared: Arc<Shared>, run: RunNow) -> Result<i64, StartError> {
    let (started, run_id) = tokio::sync::oneshot::channel();
    let (refused, refusal) = tokio::sync::oneshot::channel();
    tokio::spawn(async move {
        let command = run.command.clone();
        let (recorded, recorded_id) = tokio::sync::oneshot::channel();
        // Told to the API's caller as soon as it is recorded.
        let announce = async {
            if let Ok(id) = recorded_id.await {
                let _ = started.send(id);
            }
        };
        let result = async {
            let tasks: Vec<&crate::config::TaskConfig> = run
                .tasks
                .iter()
                .filter_map(|t| shared.config.task(t))
                .collect();
            let needing = runner::needing_a_session(&tasks, run.dry_run);
            let mut client = if needing.is_empty() {
                shared.connect().await.map_err(|e| e.to_string())
            } else {
                shared.connect_for(&tasks).await
            }
            .map_err(RunError::Database)?;
            let request = RunRequest {
                tasks,
                dry_run: run.dry_run,
                batch_size: run.batch_size,
                max_runtime: run.max_runtime,
                trigger: Trigger::api(&run.command),
                confirmation: run.confirmation,
                check_first: false,
                verbose: false,
                started: Some(recorded),
                lease: Some(shared.keeper.owner()),
                target: Some(&shared.target),
                notice: Notice {
                    started: run.started,
                    origin: shared.origin.clone(),
                },
            };
            let report = runner::run(
                &mut client,
                &shared.config,
                request,
                &shared.stop,
                &Progress::disabled(),
            )
            .await?;
            Ok::<_, RunError>((report, client))
        };
        let (result, ()) = tokio::join!(result, announce);
        match result {
            Err(RunError::Refused(refusal)) => {
                tracing::warn!("{command}: refused: {refusal}");
                let _ = refused.send(refusal);
            }
            Err(err) => tracing::error!("{command}: {err}"),
            // The runner logged the outcome and sent it.
            Ok(_) => {}
        }
    });
    match run_id.await {
        Ok(id) => Ok(id),
        Err(_) => Err(match refusal.await {
            Ok(refusal) => StartError::Refused(refusal),
            Err(_) => StartError::Failed("the run could not start (see the daemon's log)".into()),
        }),
    }
}
