//! SQL text built by pure functions: the one identifier-quoting helper and the
//! statements tasks issue. Nothing here touches the network, so every
//! statement can be unit-tested and shown verbatim in a dry run. User values
//! never appear in the text: they travel as `$n` parameters.

use std::fmt;

/// Quotes an identifier the way PostgreSQL's `quote_ident` does, always.
/// Always quoting (rather than only when needed) keeps case and makes a name
/// such as `users; drop table x` one harmless identifier.
pub(crate) fn quote_ident(name: &str) -> String {
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

/// `schema.name` as a person writes it in the config, quoted where
/// PostgreSQL would otherwise fold or refuse it (`public."Session"`), so
/// what pgmaint prints can be pasted back.
impl fmt::Display for TableName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{}", as_written(&self.schema), as_written(&self.name))
    }
}

/// A name as a person writes it for PostgreSQL to read: a lowercase
/// identifier that is not a keyword as it is, anything else double-quoted
/// (what the server's `quote_ident` does).
pub fn as_written(name: &str) -> String {
    let plain = name
        .chars()
        .next()
        .is_some_and(|c| c.is_ascii_lowercase() || c == '_')
        && name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
        && QUOTED_KEYWORDS.binary_search(&name).is_err();
    if plain {
        name.to_string()
    } else {
        quote_ident(name)
    }
}

/// PostgreSQL's keywords that are not unreserved (reserved, type or
/// function names, column names): `quote_ident` quotes these, sorted.
/// A test compares them with the server's `pg_get_keywords()`.
const QUOTED_KEYWORDS: &[&str] = &[
    "all",
    "analyse",
    "analyze",
    "and",
    "any",
    "array",
    "as",
    "asc",
    "asymmetric",
    "authorization",
    "between",
    "bigint",
    "binary",
    "bit",
    "boolean",
    "both",
    "case",
    "cast",
    "char",
    "character",
    "check",
    "coalesce",
    "collate",
    "collation",
    "column",
    "concurrently",
    "constraint",
    "create",
    "cross",
    "current_catalog",
    "current_date",
    "current_role",
    "current_schema",
    "current_time",
    "current_timestamp",
    "current_user",
    "dec",
    "decimal",
    "default",
    "deferrable",
    "desc",
    "distinct",
    "do",
    "else",
    "end",
    "except",
    "exists",
    "extract",
    "false",
    "fetch",
    "float",
    "for",
    "foreign",
    "freeze",
    "from",
    "full",
    "grant",
    "greatest",
    "group",
    "grouping",
    "having",
    "ilike",
    "in",
    "initially",
    "inner",
    "inout",
    "int",
    "integer",
    "intersect",
    "interval",
    "into",
    "is",
    "isnull",
    "join",
    "lateral",
    "leading",
    "least",
    "left",
    "like",
    "limit",
    "localtime",
    "localtimestamp",
    "national",
    "natural",
    "nchar",
    "none",
    "normalize",
    "not",
    "notnull",
    "null",
    "nullif",
    "numeric",
    "offset",
    "on",
    "only",
    "or",
    "order",
    "out",
    "outer",
    "overlaps",
    "overlay",
    "placing",
    "position",
    "precision",
    "primary",
    "real",
    "references",
    "returning",
    "right",
    "row",
    "select",
    "session_user",
    "setof",
    "similar",
    "smallint",
    "some",
    "substring",
    "symmetric",
    "table",
    "tablesample",
    "then",
    "time",
    "timestamp",
    "to",
    "trailing",
    "treat",
    "trim",
    "true",
    "union",
    "unique",
    "user",
    "using",
    "values",
    "varchar",
    "variadic",
    "verbose",
    "when",
    "where",
    "window",
    "with",
    "xmlattributes",
    "xmlconcat",
    "xmlelement",
    "xmlexists",
    "xmlforest",
    "xmlnamespaces",
    "xmlparse",
    "xmlpi",
    "xmlroot",
    "xmlserialize",
    "xmltable",
];

/// Wraps a user-written predicate so that it stays one boolean expression:
/// parentheses around it, and newlines so a trailing `--` comment cannot
/// swallow the closing parenthesis. The predicate still only ever runs through
/// the extended protocol, which refuses a second statement.
pub fn predicate(user_sql: &str) -> String {
    format!("(\n{}\n)", user_sql.trim())
}

/// The three types an age or a partition period is measured in, told by
/// the OID of the column's type, or of a domain's base type
/// (`pg_type.typbasetype`, followed through domains over domains), never by
/// the printed name: `timestamp(6) without time zone` (Rails),
/// `timestamp(3)` (Prisma) and a domain over `timestamptz` are all one of
/// these.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub enum TimeKind {
    Date,
    Timestamp,
    Timestamptz,
}

impl TimeKind {
    /// The kind of a base type's OID (`date` 1082, `timestamp` 1114,
    /// `timestamptz` 1184).
    pub(crate) fn of_oid(oid: u32) -> Option<TimeKind> {
        match oid {
            1082 => Some(TimeKind::Date),
            1114 => Some(TimeKind::Timestamp),
            1184 => Some(TimeKind::Timestamptz),
            _ => None,
        }
    }

    /// The type's SQL name, without modifier: what a value is cast to.
    pub(crate) fn sql_type(self) -> &'static str {
        match self {
            TimeKind::Date => "date",
            TimeKind::Timestamp => "timestamp",
            TimeKind::Timestamptz => "timestamptz",
        }
    }
}

/// `column < $n::timestamptz`, cast on to the column's own type: the age
/// filter of purge-like tasks, compared with a cutoff instant computed once
/// at the start of the run so every batch uses the same one. A
/// `timestamp without time zone` column compares with the cutoff as a
/// local time in the session's `TimeZone` (the server's `timezone` unless
/// the role or database sets another), as an application that writes
/// `now()` into it means it; a `date` column with the cutoff's date there,
/// so the cutoff's own day stays. The cast is of the parameter, never the
/// column, so an index on the column still serves.
pub fn older_than_predicate(column: &str, kind: TimeKind, param: usize) -> String {
    let cast = match kind {
        TimeKind::Timestamptz => "",
        TimeKind::Timestamp => "::timestamp",
        TimeKind::Date => "::date",
    };
    format!("{} < ${param}::timestamptz{cast}", quote_ident(column))
}

/// Where the rows a batch removes go.
#[derive(Debug, Clone)]
pub enum Destination {
    /// Nowhere: they are deleted.
    Delete,
    /// Into `archive`, in the same statement (so in the same transaction):
    /// `columns` are copied, and `archived_at`, when set, gets `now()`.
    Move {
        archive: TableName,
        archived_at: Option<String>,
        /// The archive's columns the rows are inserted into: the source's
        /// stored columns, and its generated ones the archive holds as
        /// plain columns (their values copied, never computed again).
        columns: Vec<String>,
    },
    /// Nowhere: the rows stay, with `columns` set to NULL (an orphans
    /// task's `action = "set_null"`). The batch returns the rows' earlier
    /// values, read in the same statement.
    Clear { columns: Vec<String> },
}

/// What a batch statement of a ctid walk is made of.
pub struct WalkBatch<'a> {
    pub table: &'a TableName,
    /// The row filter, with its parameter (if any) written as `$4`. It is
    /// pasted as it is into every statement form: never edited.
    pub filter: &'a str,
    /// The columns a move copies and a returning batch sends back.
    pub columns: &'a [String],
    pub destination: &'a Destination,
    /// Send every removed row back, each column as text (for backups).
    pub returning: bool,
}

/// The parameters every statement of a walk is prepared with, in this
/// order, whether it uses them or not: `$1` first page, `$2` page after the
/// batch, `$3` the batch's row limit, `$4` the cutoff of `older_than`.
/// One numbering for every form means the filter's text is the same in the
/// dry run's count and in both batch forms: no statement renumbers it.
pub const WALK_PARAMS: [tokio_postgres::types::Type; 4] = [
    tokio_postgres::types::Type::INT8,
    tokio_postgres::types::Type::INT8,
    tokio_postgres::types::Type::INT8,
    tokio_postgres::types::Type::TIMESTAMPTZ,
];

const PAGE_RANGE: &str =
    "ctid >= format('(%s,0)', $1::bigint)::tid AND ctid < format('(%s,0)', $2::bigint)::tid";

/// One batch of a ctid walk over pages `[$1, $2)`. PostgreSQL finds the rows
/// with a TID Range Scan, so a batch reads only its own pages however many
/// dead tuples earlier batches left behind.
///
/// `limited` caps the batch at `$3` rows in page order (for windows that
/// might hold more than a batch); the filter is then repeated on the DELETE
/// so a row updated meanwhile is checked again in its new version. Without
/// it, the matching rows of the window go straight from the scan. Both
/// forms take the parameters of [`WALK_PARAMS`].
///
/// The statement returns `(count, last page touched)`, or with `returning`
/// one row per removed row: its page, then each column as text. A plain
/// delete of a narrow window is a bare DELETE (its row count is the result).
pub fn walk_batch(batch: &WalkBatch<'_>, limited: bool) -> String {
    let t = batch.table.quoted();
    let condition = walk_condition(batch, limited);
    if let Destination::Clear { columns } = batch.destination {
        return clear_batch(batch, columns, &condition);
    }
    let plain = matches!(batch.destination, Destination::Delete) && !batch.returning;
    if plain && !limited {
        return format!("DELETE FROM {t} WHERE {condition}");
    }
    // What the batch returns: the columns saved (a backup's, an export's),
    // then any others the archive takes.
    let mut returned: Vec<String> = batch.columns.to_vec();
    if let Destination::Move { columns, .. } = batch.destination {
        returned.extend(
            columns
                .iter()
                .filter(|c| !batch.columns.contains(c))
                .cloned(),
        );
    }
    let mut statement = if plain {
        format!("WITH deleted AS (\n  DELETE FROM {t} WHERE {condition}\n  RETURNING ctid)")
    } else {
        format!(
            "WITH deleted AS (\n  DELETE FROM {t} WHERE {condition}\n  RETURNING ctid, {})",
            column_list(&returned)
        )
    };
    if let Destination::Move {
        archive,
        archived_at,
        columns,
    } = batch.destination
    {
        let columns = column_list(columns);
        let (extra_column, extra_value) = match archived_at {
            Some(column) => (format!(", {}", quote_ident(column)), ", now()"),
            None => (String::new(), ""),
        };
        statement.push_str(&format!(
            ",\nmoved AS (\n  INSERT INTO {} ({columns}{extra_column}) OVERRIDING SYSTEM VALUE\n  SELECT {columns}{extra_value} FROM deleted)",
            archive.quoted()
        ));
    }
    if batch.returning {
        let as_text = batch
            .columns
            .iter()
            .map(|c| format!("{}::text", quote_ident(c)))
            .collect::<Vec<_>>()
            .join(", ");
        statement.push_str(&format!(
            "\nSELECT (ctid::text::point)[0]::bigint, {as_text} FROM deleted"
        ));
    } else {
        statement.push_str("\nSELECT count(*), max((ctid::text::point)[0])::bigint FROM deleted");
    }
    statement
}

/// A batch that sets `cleared` to NULL in the rows `condition` names. An
/// UPDATE's RETURNING sees the new values, so the rows are read first in a
/// subquery of the same statement and joined back by ctid: RETURNING gives
/// their earlier values and their ctid before the update (the page the
/// walk resumes from). A row another transaction changed after the
/// statement's snapshot fails the join in its new version (a new ctid), so
/// it is neither updated nor returned: it is left for the next run. The
/// same shapes of result as `walk_batch`.
fn clear_batch(batch: &WalkBatch<'_>, cleared: &[String], condition: &str) -> String {
    let t = batch.table.quoted();
    let set = cleared
        .iter()
        .map(|c| format!("{} = NULL", quote_ident(c)))
        .collect::<Vec<_>>()
        .join(", ");
    let earlier = if batch.returning {
        format!(", {}", column_list(batch.columns))
    } else {
        String::new()
    };
    let mut statement = format!(
        "WITH cleared AS (\n  UPDATE {t} SET {set}\n    FROM (SELECT ctid AS pgmaint_ctid{earlier} FROM {t}\n     WHERE {condition}) AS pgmaint_earlier\n   WHERE {t}.ctid = pgmaint_earlier.pgmaint_ctid\n  RETURNING pgmaint_earlier.*)"
    );
    if batch.returning {
        let as_text = batch
            .columns
            .iter()
            .map(|c| format!("{}::text", quote_ident(c)))
            .collect::<Vec<_>>()
            .join(", ");
        statement.push_str(&format!(
            "\nSELECT (pgmaint_ctid::text::point)[0]::bigint, {as_text} FROM cleared"
        ));
    } else {
        statement.push_str(
            "\nSELECT count(*), max((pgmaint_ctid::text::point)[0])::bigint FROM cleared",
        );
    }
    statement
}

/// The `WHERE` condition of a batch, over the table's own (unaliased)
/// name: which rows of the window the batch removes.
pub fn walk_condition(batch: &WalkBatch<'_>, limited: bool) -> String {
    let t = batch.table.quoted();
    if limited {
        format!(
            "ctid = ANY (ARRAY(\n    SELECT ctid FROM {t}\n     WHERE {PAGE_RANGE}\n       AND {filter}\n     ORDER BY ctid LIMIT $3))\n    AND {filter}",
            filter = batch.filter
        )
    } else {
        format!("{PAGE_RANGE} AND {}", batch.filter)
    }
}

/// `"a", "b", "c"`.
pub fn column_list(columns: &[String]) -> String {
    columns
        .iter()
        .map(|c| quote_ident(c))
        .collect::<Vec<_>>()
        .join(", ")
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

/// A few matching rows as JSON text, whatever their column types. The table
/// keeps its own name (no alias) so a filter may qualify columns with it.
pub fn sample_matching(table: &TableName, filter: &str, limit: u32) -> String {
    format!(
        "SELECT row_to_json(s)::text FROM (SELECT * FROM {} WHERE {filter} LIMIT {limit}) s",
        table.quoted()
    )
}

/// The anti-join that finds orphans: child rows whose reference columns are
/// all set and match no parent row. NOT EXISTS lets the planner use a hash
/// anti join for a count, and index probes into the parent per batch.
pub fn orphan_predicate(
    child: &TableName,
    columns: &[String],
    parent: &TableName,
    parent_columns: &[String],
) -> String {
    let child_column = |c: &String| format!("{}.{}", child.quoted(), quote_ident(c));
    let not_null = columns
        .iter()
        .map(|c| format!("{} IS NOT NULL", child_column(c)))
        .collect::<Vec<_>>()
        .join(" AND ");
    let matches = columns
        .iter()
        .zip(parent_columns)
        .map(|(c, p)| format!("p.{} = {}", quote_ident(p), child_column(c)))
        .collect::<Vec<_>>()
        .join(" AND ");
    format!(
        "({not_null} AND NOT EXISTS (SELECT 1 FROM {} p WHERE {matches}))",
        parent.quoted()
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_written_as_postgresql_reads_them_back() {
        assert_eq!(as_written("webhooks"), "webhooks");
        assert_eq!(as_written("Session"), "\"Session\"");
        assert_eq!(as_written("createdAt"), "\"createdAt\"");
        assert_eq!(as_written("2fa"), "\"2fa\"");
        assert_eq!(as_written("user"), "\"user\"");
        assert_eq!(
            TableName::new("public", "User_id_seq").to_string(),
            r#"public."User_id_seq""#
        );
        assert!(QUOTED_KEYWORDS.windows(2).all(|w| w[0] < w[1]));
    }

    #[test]
    fn quoting_doubles_embedded_quotes() {
        assert_eq!(quote_ident("users"), "\"users\"");
        assert_eq!(quote_ident("we\"ird"), "\"we\"\"ird\"");
        assert_eq!(
            quote_ident("users; drop table x"),
            "\"users; drop table x\""
        );
    }

    fn batch<'a>(
        table: &'a TableName,
        filter: &'a str,
        columns: &'a [String],
        destination: &'a Destination,
        returning: bool,
    ) -> WalkBatch<'a> {
        WalkBatch {
            table,
            filter,
            columns,
            destination,
            returning,
        }
    }

    #[test]
    fn delete_batch_uses_parameters_for_bounds_and_cutoff() {
        let t = TableName::new("public", "request_logs");
        let f = older_than_predicate("created_at", TimeKind::Timestamptz, 4);
        let statement = walk_batch(&batch(&t, &f, &[], &Destination::Delete, false), true);
        assert!(statement.contains("DELETE FROM \"public\".\"request_logs\" WHERE ctid = ANY"));
        assert!(statement.contains("ctid >= format('(%s,0)', $1::bigint)::tid"));
        assert!(statement.contains("ORDER BY ctid LIMIT $3"));
        assert_eq!(
            statement
                .matches("\"created_at\" < $4::timestamptz")
                .count(),
            2
        );
        let narrow = walk_batch(&batch(&t, &f, &[], &Destination::Delete, false), false);
        assert!(narrow.starts_with("DELETE FROM"), "{narrow}");
        assert!(
            narrow.ends_with("\"created_at\" < $4::timestamptz"),
            "{narrow}"
        );
    }

    #[test]
    fn every_form_keeps_the_filter_text_as_written() {
        let t = TableName::new("public", "t");
        let f = predicate("note = 'costs $45' OR note = '$3 -- not a comment'");
        for limited in [true, false] {
            for returning in [true, false] {
                let statement = walk_batch(
                    &batch(&t, &f, &[], &Destination::Delete, returning),
                    limited,
                );
                assert!(statement.contains(&f), "{statement}");
            }
        }
        assert!(count_matching(&t, &f).ends_with(&f));
    }

    #[test]
    fn a_clear_updates_the_rows_it_reads_and_returns_their_earlier_values() {
        let t = TableName::new("public", "sessions");
        let parent = TableName::new("public", "orgs");
        let f = orphan_predicate(&t, &["org_id".into()], &parent, &["id".into()]);
        let destination = Destination::Clear {
            columns: vec!["org_id".into()],
        };
        let saved = ["id".to_string(), "org_id".to_string()];
        for limited in [true, false] {
            let counted = walk_batch(&batch(&t, &f, &saved, &destination, false), limited);
            assert!(
                counted.starts_with(
                    "WITH cleared AS (\n  UPDATE \"public\".\"sessions\" SET \"org_id\" = NULL\n    FROM (SELECT ctid AS pgmaint_ctid FROM \"public\".\"sessions\"\n"
                ),
                "{counted}"
            );
            assert!(
                counted
                    .contains("WHERE \"public\".\"sessions\".ctid = pgmaint_earlier.pgmaint_ctid")
            );
            assert!(counted.ends_with(
                "SELECT count(*), max((pgmaint_ctid::text::point)[0])::bigint FROM cleared"
            ));
            assert!(counted.contains(&f));
            let returned = walk_batch(&batch(&t, &f, &saved, &destination, true), limited);
            assert!(returned.contains("SELECT ctid AS pgmaint_ctid, \"id\", \"org_id\" FROM"));
            assert!(returned.ends_with(
                "SELECT (pgmaint_ctid::text::point)[0]::bigint, \"id\"::text, \"org_id\"::text FROM cleared"
            ));
        }
    }

    #[test]
    fn a_move_inserts_what_it_deletes_in_the_same_statement() {
        let t = TableName::new("public", "ledger");
        let a = TableName::new("public", "ledger_archive");
        let columns = vec!["id".to_string(), "we\"ird".to_string()];
        let destination = Destination::Move {
            archive: a,
            archived_at: Some("archived_at".into()),
            columns: columns.clone(),
        };
        let statement = walk_batch(&batch(&t, "true", &columns, &destination, true), false);
        assert!(
            statement.contains("RETURNING ctid, \"id\", \"we\"\"ird\""),
            "{statement}"
        );
        assert!(statement.contains(
            "INSERT INTO \"public\".\"ledger_archive\" (\"id\", \"we\"\"ird\", \"archived_at\") OVERRIDING SYSTEM VALUE\n  SELECT \"id\", \"we\"\"ird\", now() FROM deleted"
        ), "{statement}");
        assert!(
            statement.ends_with("\"id\"::text, \"we\"\"ird\"::text FROM deleted"),
            "{statement}"
        );
        // A generated column the archive holds as a plain one: returned and
        // inserted, though the backup does not save it.
        let destination = Destination::Move {
            archive: TableName::new("public", "ledger_archive"),
            archived_at: None,
            columns: vec!["id".into(), "total".into()],
        };
        let statement = walk_batch(&batch(&t, "true", &columns[..1], &destination, true), false);
        assert!(
            statement.contains("RETURNING ctid, \"id\", \"total\""),
            "{statement}"
        );
        assert!(statement.contains("(\"id\", \"total\") OVERRIDING SYSTEM VALUE\n  SELECT \"id\", \"total\" FROM deleted"), "{statement}");
        assert!(
            statement.ends_with("SELECT (ctid::text::point)[0]::bigint, \"id\"::text FROM deleted"),
            "{statement}"
        );
    }

    #[test]
    fn predicate_survives_trailing_comment() {
        assert_eq!(predicate(" a = 1 -- note "), "(\na = 1 -- note\n)");
    }

    #[test]
    fn the_cutoff_is_cast_to_the_column_type_never_the_column() {
        assert_eq!(
            older_than_predicate("at", TimeKind::Timestamptz, 4),
            "\"at\" < $4::timestamptz"
        );
        assert_eq!(
            older_than_predicate("timestamp", TimeKind::Timestamp, 4),
            "\"timestamp\" < $4::timestamptz::timestamp"
        );
        assert_eq!(
            older_than_predicate("day", TimeKind::Date, 4),
            "\"day\" < $4::timestamptz::date"
        );
        assert_eq!(TimeKind::of_oid(1114), Some(TimeKind::Timestamp));
        assert_eq!(TimeKind::of_oid(1083), None, "time of day is not an age");
    }
}
