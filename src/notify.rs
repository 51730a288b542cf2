//! Notifications: a run's outcome or a health alert sent to the notifiers a
//! schedule or alert names: a JSON webhook (signed with HMAC-SHA256 when
//! the notifier has a `secret`), a Slack incoming webhook, or an email over
//! SMTP (lettre, STARTTLS or TLS). The notifiers of one event are sent to
//! concurrently, so a slow or unreachable one does not hold up the rest;
//! each send is retried with backoff (`retry::notify_waits`); a notifier
//! that still fails is logged and recorded, never fatal to the run.
//!
//! Who hears of what: a schedule's per-outcome lists (`notify = {
//! on_success = ["ops"] }`, and an API schedule's list, which is every
//! outcome) are what they say; a notifier's own `on_success`/`on_failure`/
//! `on_warning` decide only where it is named without an outcome: a config
//! schedule's plain `notify = ["ops"]`, an alert, and a task run started
//! through the API.
//!
//! Every event names the database it is about (`Origin`: host, port,
//! database name, and the config's name when it has one; never the user or
//! password).

use std::time::Duration;

use hmac::{Hmac, KeyInit, Mac};
use serde::Serialize;
use sha2::Sha256;
use tokio_postgres::Client;

use crate::config::file::NotifierKind;
use crate::config::{NotifierConfig, NotifyTargets};

/// The header a signed webhook carries: `sha256=<hex of HMAC-SHA256(body)>`.
pub(crate) const SIGNATURE_HEADER: &str = "X-Pgmaint-Signature";

/// The levels of an event.
pub(crate) const SUCCESS: &str = "success";
pub(crate) const WARNING: &str = "warning";
pub(crate) const FAILURE: &str = "failure";

/// The level whose notifiers heard an alert that was `was` (critical or
/// warning): they are the ones told it recovered.
pub(crate) fn alerted_at(was: &str) -> &'static str {
    if was == "critical" { FAILURE } else { WARNING }
}
/// A health alert that cleared.
pub const RECOVERY: &str = "recovery";

/// What happened, in a form every notifier can render.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct Event {
    /// `success`, `warning`, `failure`, or `recovery` (an alert cleared).
    pub level: &'static str,
    pub title: String,
    pub text: String,
    pub details: serde_json::Value,
}

/// The database an event is about, as people name it: no user, no
/// password.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Origin {
    pub host: String,
    pub port: u16,
    pub database: String,
    /// The config's `name`, when it has one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
}

impl Origin {
    /// From the connection settings (libpq's defaults where they say
    /// nothing: port 5432, the database named after the user).
    pub fn of(target: &crate::connect::Target, name: Option<&str>) -> Origin {
        use tokio_postgres::config::Host;
        let config = &target.config;
        let host = match config.get_hosts().first() {
            Some(Host::Tcp(h)) => h.clone(),
            Some(Host::Unix(p)) => p.display().to_string(),
            None => "localhost".into(),
        };
        Origin {
            host,
            port: config.get_ports().first().copied().unwrap_or(5432),
            database: config
                .get_dbname()
                .or(config.get_user())
                .unwrap_or("postgres")
                .to_string(),
            name: name.map(str::to_string),
        }
    }

    /// `app at db.example.com:5432`, after the config's name if it has one:
    /// `billing (app at db.example.com:5432)`.
    pub(crate) fn label(&self) -> String {
        let at = format!("{} at {}:{}", self.database, self.host, self.port);
        match &self.name {
            Some(name) => format!("{name} ({at})"),
            None => at,
        }
    }
}

impl Event {
    /// The event, saying which database it is about: in its title (an
    /// email's subject, Slack's first line), its text, and
    /// `details.database` for programs.
    pub(crate) fn about(mut self, origin: &Origin) -> Event {
        let label = origin.label();
        self.title = format!("{} on {label}", self.title);
        self.text = format!("{}\ndatabase: {label}", self.text);
        if let Some(details) = self.details.as_object_mut() {
            details.insert(
                "database".into(),
                serde_json::to_value(origin).unwrap_or_default(),
            );
        }
        self
    }
}

/// Whether a notifier's own flags let it hear of `level` (a recovery as
/// the level it recovered from).
fn wants(notifier: &NotifierConfig, level: &str) -> bool {
    match level {
        SUCCESS => notifier.on_success,
        FAILURE => notifier.on_failure,
        _ => notifier.on_warning,
    }
}

/// The notifiers among `names` whose own flags take `level`.
pub(crate) fn by_own_flags(
    notifiers: &[NotifierConfig],
    names: &[String],
    level: &str,
) -> Vec<String> {
    notifiers
        .iter()
        .filter(|n| names.contains(&n.name) && wants(n, level))
        .map(|n| n.name.clone())
        .collect()
}

/// Every notifier whose own flags take `level`: for what no schedule
/// routes (a task run started through the API).
pub(crate) fn every_wanting(notifiers: &[NotifierConfig], level: &str) -> Vec<String> {
    let all: Vec<String> = notifiers.iter().map(|n| n.name.clone()).collect();
    by_own_flags(notifiers, &all, level)
}

/// Who hears of a schedule's run ending at `level`. `plain_list` is a
/// config schedule's `notify = ["ops"]`: each outcome as the notifiers'
/// own flags allow. Otherwise the list for the outcome is what it says.
pub(crate) fn for_schedule(
    notifiers: &[NotifierConfig],
    targets: &NotifyTargets,
    plain_list: bool,
    level: &str,
) -> Vec<String> {
    let named = targets.for_level(level);
    if plain_list {
        by_own_flags(notifiers, named, level)
    } else {
        named.to_vec()
    }
}

/// Whether a config schedule's notify was written as a plain list. The
/// resolved config keeps the three lists only, and a plain list fills all
/// three alike; a table that names the same notifiers for every outcome
/// reads the same, and so is taken as one too.
pub(crate) fn looks_plain(targets: &NotifyTargets) -> bool {
    targets.on_failure == targets.on_warning && targets.on_warning == targets.on_success
}

/// `sha256=` and the hex HMAC-SHA256 of `body` under `secret`.
pub(crate) fn signature(secret: &str, body: &[u8]) -> String {
    let mut mac =
        Hmac::<Sha256>::new_from_slice(secret.as_bytes()).expect("HMAC takes any key length");
    mac.update(body);
    let digest = mac.finalize().into_bytes();
    format!(
        "sha256={}",
        digest
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect::<String>()
    )
}

/// Sends `event` to each notifier `names` names (routing is the caller's:
/// `for_schedule`, `by_own_flags`), recording each outcome in the state
/// schema when `record` is given.
pub(crate) async fn send(
    notifiers: &[NotifierConfig],
    names: &[String],
    event: &Event,
    record: Option<(&Client, &str)>,
) {
    let sends = notifiers
        .iter()
        .filter(|n| names.contains(&n.name))
        .map(|notifier| async move {
            let (result, attempts) = send_one(notifier, event).await;
            match &result {
                Ok(()) => {
                    tracing::info!(notifier = notifier.name, attempts, "sent: {}", event.title)
                }
                Err(err) => tracing::warn!(
                    notifier = notifier.name,
                    attempts,
                    "could not notify: {err}"
                ),
            }
            (notifier, result, attempts)
        });
    let sent = futures_util::future::join_all(sends).await;
    // Recorded one after another: each record is a transaction of its own
    // on the one connection, which concurrent futures would interleave.
    if let Some((client, schema)) = record {
        for (notifier, result, attempts) in sent {
            let _ = crate::store::record_notification(
                client,
                schema,
                &notifier.name,
                &event.title,
                result.is_ok(),
                attempts as i32,
                result.as_ref().err(),
            )
            .await;
        }
    }
}

/// One notification, retried with backoff. Returns the outcome and the
/// number of attempts.
pub(crate) async fn send_one(
    notifier: &NotifierConfig,
    event: &Event,
) -> (Result<(), String>, u32) {
    let mut waits = crate::retry::notify_waits();
    let mut attempts = 0;
    loop {
        attempts += 1;
        let result = match notifier.kind {
            NotifierKind::Email => email(notifier, event).await,
            NotifierKind::Webhook | NotifierKind::Slack => post(notifier, event).await,
        };
        match (result, waits.next()) {
            (Err(_), Some(wait)) => tokio::time::sleep(wait).await,
            (result, _) => return (result, attempts),
        }
    }
}

async fn post(notifier: &NotifierConfig, event: &Event) -> Result<(), String> {
    let body = match notifier.kind {
        NotifierKind::Slack => {
            serde_json::json!({ "text": format!("*{}*\n{}", event.title, event.text) })
        }
        _ => serde_json::to_value(event).unwrap_or_default(),
    };
    let body = serde_json::to_vec(&body).map_err(|e| e.to_string())?;
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .build()
        .map_err(|e| e.to_string())?;
    let mut request = client
        .post(&notifier.url)
        .header(reqwest::header::CONTENT_TYPE, "application/json");
    if let Some(secret) = &notifier.secret {
        request = request.header(SIGNATURE_HEADER, signature(secret, &body));
    }
    match request.body(body).send().await {
        Ok(response) if response.status().is_success() => Ok(()),
        Ok(response) => Err(format!("the notifier answered {}", response.status())),
        Err(err) => Err(format!("cannot reach the notifier: {err}")),
    }
}

async fn email(notifier: &NotifierConfig, event: &Event) -> Result<(), String> {
    use lettre::{AsyncSmtpTransport, AsyncTransport, Message, Tokio1Executor};
    let from = notifier.from.as_deref().unwrap_or_default();
    let mut message = Message::builder()
        .from(from.parse().map_err(|e| format!("from `{from}`: {e}"))?)
        .subject(&event.title);
    for to in &notifier.to {
        message = message.to(to.parse().map_err(|e| format!("to `{to}`: {e}"))?);
    }
    let message = message
        .body(event.text.clone())
        .map_err(|e| e.to_string())?;
    let transport = AsyncSmtpTransport::<Tokio1Executor>::from_url(&notifier.url)
        .map_err(|e| format!("smtp URL: {e}"))?
        .timeout(Some(Duration::from_secs(10)))
        .build();
    transport
        .send(message)
        .await
        .map(|_| ())
        .map_err(|e| e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn notifier(name: &str, on_success: bool) -> NotifierConfig {
        NotifierConfig {
            name: name.into(),
            kind: NotifierKind::Webhook,
            url: "http://127.0.0.1/hook".into(),
            from: None,
            to: Vec::new(),
            secret: None,
            on_success,
            on_failure: true,
            on_warning: true,
        }
    }

    #[test]
    fn a_per_outcome_list_is_what_it_says_and_a_plain_one_asks_the_notifier() {
        let notifiers = [notifier("ops", false), notifier("chatty", true)];
        let names = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        let by_outcome = NotifyTargets {
            on_failure: names(&["ops"]),
            on_warning: vec![],
            on_success: names(&["ops"]),
        };
        assert!(!looks_plain(&by_outcome));
        assert_eq!(
            for_schedule(&notifiers, &by_outcome, false, SUCCESS),
            names(&["ops"])
        );
        assert!(for_schedule(&notifiers, &by_outcome, false, WARNING).is_empty());
        let plain = NotifyTargets::all(names(&["ops", "chatty"]));
        assert!(looks_plain(&plain));
        assert_eq!(
            for_schedule(&notifiers, &plain, true, SUCCESS),
            names(&["chatty"])
        );
        assert_eq!(
            for_schedule(&notifiers, &plain, true, FAILURE),
            names(&["ops", "chatty"])
        );
        // An API schedule's list: every outcome, whatever the flags.
        assert_eq!(
            for_schedule(&notifiers, &plain, false, SUCCESS),
            names(&["ops", "chatty"])
        );
        assert_eq!(every_wanting(&notifiers, SUCCESS), names(&["chatty"]));
    }

    #[test]
    fn an_event_names_its_database_without_user_or_password() {
        let target = crate::connect::resolve(
            Some("postgres://app:hunter2@db.example.com:6432/shop"),
            None,
        )
        .unwrap();
        let origin = Origin::of(&target, Some("billing"));
        assert_eq!(origin.label(), "billing (shop at db.example.com:6432)");
        let event = Event {
            level: FAILURE,
            title: "pgmaint: task t failed (run 1)".into(),
            text: "t: boom".into(),
            details: serde_json::json!({}),
        }
        .about(&origin);
        assert_eq!(
            event.title,
            "pgmaint: task t failed (run 1) on billing (shop at db.example.com:6432)"
        );
        assert_eq!(event.details["database"]["port"], 6432);
        let json = serde_json::to_string(&event).unwrap();
        assert!(
            !json.contains("hunter2") && !json.contains("app@"),
            "{json}"
        );
    }

    #[test]
    fn the_signature_is_the_hex_hmac_of_the_body() {
        // RFC 4231 test case 2.
        assert_eq!(
            super::signature("Jefe", b"what do ya want for nothing?"),
            "sha256=5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
    }
}
