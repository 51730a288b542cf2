//! `alert_state`: which alerts are firing, at which level, and when each
//! was last sent. The daemon whose upsert (or delete) changes a row is the
//! one that notifies, so several daemons never send one notice twice.

use crate::unnamed::Unnamed;
use tokio_postgres::Client;

use crate::sql::quote_ident;

/// Records that `alert` fires for `check` at `level`. Returns None when
/// nothing is to be sent (the same level, sent less than `repeat_seconds`
/// ago), else whether this is the alert's first notice (true) or a repeat
/// or level change (false).
pub(crate) async fn raise_alert(
    client: &Client,
    schema: &str,
    alert: &str,
    check: &str,
    level: &str,
    repeat_seconds: f64,
) -> Result<Option<bool>, tokio_postgres::Error> {
    crate::db::committed(client, async {
        let q = quote_ident(schema);
        Ok(client
            .row_opt(
                &format!(
                    "INSERT INTO {q}.alert_state (alert, check_name, level) VALUES ($1, $2, $3)
                             ON CONFLICT (alert, check_name) DO UPDATE SET level = excluded.level, last_sent = now()
                              WHERE {q}.alert_state.level <> excluded.level
                                 OR {q}.alert_state.last_sent < now() - $4::float8 * interval '1 second'
                             RETURNING (xmax = 0)"
                ),
                &[&alert, &check, &level, &repeat_seconds],
            )
            .await?
            .map(|row| row.get(0)))
    })
    .await
}

/// Clears `alert` for `check`; the level it had, or None if it was not
/// firing (or another daemon cleared it first).
pub(crate) async fn clear_alert(
    client: &Client,
    schema: &str,
    alert: &str,
    check: &str,
) -> Result<Option<String>, tokio_postgres::Error> {
    crate::db::committed(client, async {
        let q = quote_ident(schema);
        Ok(client
            .row_opt(
                &format!(
                    "DELETE FROM {q}.alert_state WHERE alert = $1 AND check_name = $2 RETURNING level"
                ),
                &[&alert, &check],
            )
            .await?
            .map(|row| row.get(0)))
    })
    .await
}
