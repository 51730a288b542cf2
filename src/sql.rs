//! SQL text built by pure functions: the one identifier-quoting helper and the
//! statements tasks issue. Nothing here touches the network, so every
//! statement can be unit-tested and shown verbatim in a dry run. User values
//! never appear in the text: they travel as `$n` parameters.

use std::fmt;

/// Quotes an identifier the way PostgreSQL's `quote_ident` does, always.
/// Always quoting (rather than only when needed) keeps case and makes a name
/// such as `users; drop table x` one harmless identifier.
pub fn quote_ident(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

/// A table resolved against the catalog: schema and name as stored there.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct TableName {
    pub schema: String,
    pub name: String,
}

impl TableName {
    pub fn new(schema: impl Into<String>, name: impl Into<String>) -> Self {
        Self {
            schema: schema.into(),
            name: name.into(),
        }
    }

    /// `"schema"."name"`, safe to paste into SQL.
    pub fn quoted(&self) -> String {
        format!("{}.{}", quote_ident(&self.schema), quote_ident(&self.name))
    }
}

impl fmt::Display for TableName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{}", self.schema, self.name)
    }
}

/// Wraps a user-written predicate so that it stays one boolean expression:
/// parentheses around it, and newlines so a trailing `--` comment cannot
/// swallow the closing parenthesis. The predicate still only ever runs through
/// the extended protocol, which refuses a second statement.
pub fn predicate(user_sql: &str) -> String {
    format!("(\n{}\n)", user_sql.trim())
}

/// `column < $n::timestamptz`: the age filter of purge-like tasks, compared
/// with a cutoff computed once at the start of the run so every batch uses
/// the same one. The cast lets one timestamptz parameter serve date,
/// timestamp and timestamptz columns (PostgreSQL's cross-type comparison,
/// which indexes on the column still serve).
pub fn older_than_predicate(column: &str, param: usize) -> String {
    format!("{} < ${param}::timestamptz", quote_ident(column))
}

/// One batch of a ctid walk: delete at most `$3` matching rows from pages
/// `[$1, $2)`, in page order, and report how many went and the last page
/// touched. PostgreSQL finds the rows with a TID Range Scan, so a batch reads
/// only its own pages however many dead tuples earlier batches left behind.
/// The filter is repeated on the DELETE so that a row updated meanwhile is
/// checked again in its new version before it goes.
pub fn delete_batch_in_pages(table: &TableName, filter: &str) -> String {
    let t = table.quoted();
    format!(
        "WITH deleted AS (\n  DELETE FROM {t} WHERE ctid = ANY (ARRAY(\n    SELECT ctid FROM {t}\n     WHERE ctid >= format('(%s,0)', $1::bigint)::tid AND ctid < format('(%s,0)', $2::bigint)::tid\n       AND {filter}\n     ORDER BY ctid LIMIT $3))\n    AND {filter}\n  RETURNING ctid)\nSELECT count(*), max((ctid::text::point)[0])::bigint FROM deleted"
    )
}

/// One batch of a ctid walk over a window too small to hold more than a
/// batch of rows: delete the matching rows of pages `[$1, $2)` straight from
/// the TID Range Scan, with no sort and no second visit of each row.
pub fn delete_in_pages(table: &TableName, filter: &str) -> String {
    format!(
        "DELETE FROM {} WHERE ctid >= format('(%s,0)', $1::bigint)::tid AND ctid < format('(%s,0)', $2::bigint)::tid AND {filter}",
        table.quoted()
    )
}

pub fn count_matching(table: &TableName, filter: &str) -> String {
    format!("SELECT count(*) FROM {} WHERE {filter}", table.quoted())
}

pub fn explain_matching(table: &TableName, filter: &str) -> String {
    format!(
        "EXPLAIN (FORMAT JSON) SELECT 1 FROM {} WHERE {filter}",
        table.quoted()
    )
}

/// A few matching rows as JSON text, whatever their column types.
pub fn sample_matching(table: &TableName, filter: &str, limit: u32) -> String {
    format!(
        "SELECT row_to_json(t)::text FROM {} AS t WHERE {filter} LIMIT {limit}",
        table.quoted()
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quoting_doubles_embedded_quotes() {
        assert_eq!(quote_ident("users"), "\"users\"");
        assert_eq!(quote_ident("we\"ird"), "\"we\"\"ird\"");
        assert_eq!(
            quote_ident("users; drop table x"),
            "\"users; drop table x\""
        );
    }

    #[test]
    fn delete_batch_uses_parameters_for_bounds_and_cutoff() {
        let t = TableName::new("public", "request_logs");
        let f = older_than_predicate("created_at", 4);
        let statement = delete_batch_in_pages(&t, &f);
        assert!(statement.contains("DELETE FROM \"public\".\"request_logs\" WHERE ctid = ANY"));
        assert!(statement.contains("ctid >= format('(%s,0)', $1::bigint)::tid"));
        assert!(statement.contains("ORDER BY ctid LIMIT $3"));
        assert_eq!(
            statement
                .matches("\"created_at\" < $4::timestamptz")
                .count(),
            2
        );
    }

    #[test]
    fn predicate_survives_trailing_comment() {
        assert_eq!(predicate(" a = 1 -- note "), "(\na = 1 -- note\n)");
    }
}
