//! Notifications: a run's outcome or a health alert sent to the notifiers a
//! schedule or alert names: a JSON webhook, a Slack incoming webhook, or an
//! email over SMTP (lettre). A notifier that cannot be reached is logged,
//! never fatal.

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
            NotifierKind::Email => {
                match email(notifier, event).await {
                    Ok(()) => tracing::info!(notifier = notifier.name, "sent: {}", event.title),
                    Err(err) => {
                        tracing::warn!(notifier = notifier.name, "cannot send the email: {err}")
                    }
                }
                continue;
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
        .timeout(Some(std::time::Duration::from_secs(10)))
        .build();
    transport
        .send(message)
        .await
        .map(|_| ())
        .map_err(|e| e.to_string())
}
