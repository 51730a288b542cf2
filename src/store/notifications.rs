//! `notifications`: each notice sent (or not), to whom, after how many
//! attempts.

use crate::unnamed::Unnamed;
use tokio_postgres::Client;

use crate::sql::quote_ident;

/// Records one notifier's outcome for one event.
pub(crate) async fn record_notification(
    client: &Client,
    schema: &str,
    notifier: &str,
    title: &str,
    ok: bool,
    attempts: i32,
    error: Option<&String>,
) -> Result<(), tokio_postgres::Error> {
    crate::db::committed(client, async {
        let q = quote_ident(schema);
        client
            .exec(
                &format!("INSERT INTO {q}.notifications (notifier, title, ok, attempts, error) VALUES ($1, $2, $3, $4, $5)"),
                &[&notifier, &title, &ok, &attempts, &error],
            )
            .await?;
        Ok(())
    })
    .await
}
