//! Notifications: a run's outcome or a health alert sent to the notifiers a
//! schedule or alert names: a JSON webhook (signed with HMAC-SHA256 when
//! the notifier has a `secret`), a Slack incoming webhook, or an email over
//! SMTP (lettre, STARTTLS or TLS). Each send is retried with backoff; a
//! notifier that still fails is logged and recorded, never fatal to the run.

use std::time::Duration;

use hmac::{Hmac, KeyInit, Mac};
use serde::Serialize;
use sha2::Sha256;
use tokio_postgres::Client;

use crate::config::NotifierConfig;
use crate::config::file::NotifierKind;
use crate::sql::quote_ident;

/// Attempts per notification, with 0.5 s, 1 s, 2 s between them.
const ATTEMPTS: u32 = 4;

/// The header a signed webhook carries: `sha256=<hex of HMAC-SHA256(body)>`.
pub const SIGNATURE_HEADER: &str = "X-Pgmaint-Signature";

/// What happened, in a form every notifier can render.
#[derive(Debug, Clone, Serialize)]
pub struct Event {
    /// `success`, `failure` or `warning`.
    pub level: &'static str,
    pub title: String,
    pub text: String,
    pub details: serde_json::Value,
}

/// `sha256=` and the hex HMAC-SHA256 of `body` under `secret`.
pub fn signature(secret: &str, body: &[u8]) -> String {
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

/// Sends `event` to each named notifier that wants its level, recording
/// each outcome in the state schema when `record` is given.
pub async fn send(
    notifiers: &[NotifierConfig],
    names: &[String],
    event: &Event,
    record: Option<(&Client, &str)>,
) {
    for notifier in notifiers.iter().filter(|n| names.contains(&n.name)) {
        let wanted = match event.level {
            "success" => notifier.on_success,
            "failure" => notifier.on_failure,
            _ => notifier.on_warning,
        };
        if !wanted {
            continue;
        }
        let (result, attempts) = send_one(notifier, event).await;
        match &result {
            Ok(()) => tracing::info!(notifier = notifier.name, attempts, "sent: {}", event.title),
            Err(err) => tracing::warn!(
                notifier = notifier.name,
                attempts,
                "could not notify: {err}"
            ),
        }
        if let Some((client, schema)) = record {
            let q = quote_ident(schema);
            let error = result.as_ref().err();
            let _ = client
                .execute(
                    &format!("INSERT INTO {q}.notifications (notifier, title, ok, attempts, error) VALUES ($1, $2, $3, $4, $5)"),
                    &[&notifier.name, &event.title, &result.is_ok(), &(attempts as i32), &error],
                )
                .await;
        }
    }
}

/// One notification, retried with backoff. Returns the outcome and the
/// number of attempts.
pub async fn send_one(notifier: &NotifierConfig, event: &Event) -> (Result<(), String>, u32) {
    let mut last = Err(String::new());
    for attempt in 1..=ATTEMPTS {
        last = match notifier.kind {
            NotifierKind::Email => email(notifier, event).await,
            NotifierKind::Webhook | NotifierKind::Slack => post(notifier, event).await,
        };
        if last.is_ok() {
            return (last, attempt);
        }
        if attempt < ATTEMPTS {
            tokio::time::sleep(Duration::from_millis(500 * 2u64.pow(attempt - 1))).await;
        }
    }
    (last, ATTEMPTS)
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
    #[test]
    fn the_signature_is_the_hex_hmac_of_the_body() {
        // RFC 4231 test case 2.
        assert_eq!(
            super::signature("Jefe", b"what do ya want for nothing?"),
            "sha256=5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
    }
}
