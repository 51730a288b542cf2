//! Notifications: a run's outcome (and, later, health alerts) posted to
//! the notifiers a schedule names: a JSON webhook, or a Slack incoming
//! webhook. A notifier that cannot be reached is logged, never fatal.

use serde::Serialize;

use crate::config::NotifierConfig;
use crate::config::file::NotifierKind;

/// What happened, in a form every notifier can render.
#[derive(Debug, Clone, Serialize)]
pub struct Event {
    /// `success`, `failure` or `warning`.
    pub level: &'static str,
    pub title: String,
    pub text: String,
    pub details: serde_json::Value,
}

/// Sends `event` to each named notifier that wants its level.
pub async fn send(notifiers: &[NotifierConfig], names: &[String], event: &Event) {
    let client = reqwest::Client::builder()
        .timeout(std::time::Duration::from_secs(10))
        .build()
        .expect("a default HTTP client");
    for notifier in notifiers.iter().filter(|n| names.contains(&n.name)) {
        let wanted = match event.level {
            "success" => notifier.on_success,
            "failure" => notifier.on_failure,
            _ => notifier.on_warning,
        };
        if !wanted {
            continue;
        }
        let body = match notifier.kind {
            NotifierKind::Webhook => serde_json::to_value(event).unwrap_or_default(),
            NotifierKind::Slack => {
                serde_json::json!({ "text": format!("*{}*\n{}", event.title, event.text) })
            }
        };
        match client.post(&notifier.url).json(&body).send().await {
            Ok(response) if response.status().is_success() => {
                tracing::info!(notifier = notifier.name, "sent: {}", event.title)
            }
            Ok(response) => tracing::warn!(
                notifier = notifier.name,
                "the notifier answered {}",
                response.status()
            ),
            Err(err) => {
                tracing::warn!(notifier = notifier.name, "cannot reach the notifier: {err}")
            }
        }
    }
}
