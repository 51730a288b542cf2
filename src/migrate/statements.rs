//! A migration file split into its statements by a real SQL parser
//! (squawk's), so `$$` bodies, `E''` strings, comments and `BEGIN ATOMIC`
//! stay whole: each statement keeps its exact text and where it starts.
//! Also what each statement names that pgmaint must know before running
//! it: the tables it touches (for the blocker check), the tables and
//! columns it drops (backed up first), the index a concurrent build makes
//! (dropped when a failed build left it invalid).

use squawk_syntax::ast::{self, AstNode};
use squawk_syntax::{SourceFile, SyntaxNode};

/// One statement of a file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Statement {
    /// The statement's text exactly as written, through its `;`.
    pub text: String,
    /// 1-based line and column of its first character.
    pub line: usize,
    pub column: usize,
    /// Relations named as they are written (`public."Users"`), which
    /// PostgreSQL's `to_regclass` resolves.
    pub touches: Vec<String>,
    pub drops: Vec<Drop>,
    /// `CREATE INDEX CONCURRENTLY name`: the index, as written.
    pub concurrent_index: Option<String>,
    /// Whether it can run inside a transaction block.
    pub needs_own_transaction: bool,
    /// `CREATE INDEX`, `REINDEX`, `DROP INDEX` or `DETACH PARTITION`
    /// CONCURRENTLY: no lock it waits for queues others behind it.
    pub concurrently: bool,
    /// Whether it takes a lock that stops writes to the tables it touches
    /// for as long as it runs (DDL on an existing table, an index built
    /// without CONCURRENTLY, TRUNCATE, CLUSTER, VACUUM FULL).
    pub locks_out_writes: bool,
    /// BEGIN, COMMIT, ROLLBACK, END, START TRANSACTION, PREPARE
    /// TRANSACTION: pgmaint owns the transactions of a migration.
    pub controls_transaction: bool,
    /// A down statement whose dropped data pgmaint cannot see to back up
    /// (`DO`, `EXECUTE`, a function call, `TRUNCATE`, `DELETE`, a CASCADE
    /// drop of a schema, type, domain or extension): what it says is shown
    /// before a down runs.
    pub unseen_drop: Option<&'static str>,
}

impl Statement {
    /// Its first line that is not a comment, as plans and the audit trail
    /// name it.
    pub fn first_line(&self) -> &str {
        self.text
            .lines()
            .map(str::trim)
            .find(|l| !l.is_empty() && !l.starts_with("--"))
            .unwrap_or("")
    }
}

/// What a statement drops that may hold rows.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Drop {
    /// A table, as written: dropped, or emptied by `TRUNCATE`.
    Table(String),
    /// A table, as written, and the column, as PostgreSQL folds it.
    Column(String, String),
    /// `DROP SCHEMA ... CASCADE`, the schema as PostgreSQL folds it: its
    /// tables, found when the statement runs.
    Schema(String),
    /// `DROP TYPE` or `DROP DOMAIN ... CASCADE`, the type as written: the
    /// columns of that type (or a domain over it), found when it runs.
    Type(String),
}

/// The statements of `text`, or where the parser stopped understanding it.
pub fn split(text: &str) -> Result<Vec<Statement>, String> {
    let parse = SourceFile::parse(text);
    if let Some(error) = parse.errors().first() {
        let (line, column) = position(text, usize::from(error.range().start()));
        return Err(format!("{line}:{column}: {}", error.message()));
    }
    let mut statements = Vec::new();
    for stmt in parse.tree().stmts() {
        let range = stmt.syntax().text_range();
        let start = usize::from(range.start());
        let statement_text = text[start..usize::from(range.end())].to_string();
        let (line, column) = position(text, start);
        let mut statement = Statement {
            text: statement_text,
            line,
            column,
            touches: Vec::new(),
            drops: Vec::new(),
            concurrent_index: None,
            needs_own_transaction: false,
            concurrently: false,
            locks_out_writes: false,
            controls_transaction: false,
            unseen_drop: None,
        };
        describe(stmt.syntax(), &mut statement);
        statements.push(statement);
    }
    Ok(statements)
}

/// 1-based line and column (in characters) of byte `offset`.
pub fn position(text: &str, offset: usize) -> (usize, usize) {
    let before = &text[..offset.min(text.len())];
    let line = before.matches('\n').count() + 1;
    let column = before.rsplit('\n').next().unwrap_or("").chars().count() + 1;
    (line, column)
}

fn describe(node: &SyntaxNode, statement: &mut Statement) {
    let words: Vec<String> = node
        .descendants_with_tokens()
        .filter_map(|e| e.into_token())
        .filter(|t| !t.kind().is_trivia())
        .take(6)
        .map(|t| t.text().to_ascii_uppercase())
        .collect();
    let starts = |prefix: &[&str]| {
        words.len() >= prefix.len() && words.iter().zip(prefix).all(|(w, p)| w == p)
    };
    statement.needs_own_transaction = words.iter().any(|w| w == "CONCURRENTLY")
        && (starts(&["CREATE"])
            || starts(&["DROP", "INDEX"])
            || starts(&["REINDEX"])
            || starts(&["ALTER", "TABLE"]))
        || starts(&["VACUUM"])
        || starts(&["CREATE", "DATABASE"])
        || starts(&["DROP", "DATABASE"])
        || (starts(&["ALTER", "TYPE"]) && words.iter().any(|w| w == "ADD"));
    statement.controls_transaction = starts(&["BEGIN"]) && !starts(&["BEGIN", "ATOMIC"])
        || starts(&["COMMIT"])
        || starts(&["ROLLBACK"]) && !words.iter().any(|w| w == "TO")
        || starts(&["END"])
        || starts(&["ABORT"])
        || starts(&["START", "TRANSACTION"])
        || starts(&["PREPARE", "TRANSACTION"]);
    let cascade = node
        .descendants_with_tokens()
        .filter_map(|e| e.into_token())
        .any(|t| t.text().eq_ignore_ascii_case("CASCADE"));
    statement.unseen_drop = if starts(&["DO"]) {
        Some("a DO block")
    } else if starts(&["TRUNCATE"]) && cascade {
        Some("TRUNCATE ... CASCADE (the tables it empties through foreign keys)")
    } else if starts(&["DELETE"]) {
        Some("DELETE")
    } else if starts(&["SELECT"]) || starts(&["CALL"]) || starts(&["EXECUTE"]) {
        Some("a function or procedure call")
    } else if cascade && ["EXTENSION", "OWNED"].iter().any(|k| starts(&["DROP", k])) {
        Some("a CASCADE drop")
    } else {
        None
    };
    let concurrently = words.iter().any(|w| w == "CONCURRENTLY");
    statement.concurrently = concurrently
        && (starts(&["CREATE"])
            || starts(&["DROP", "INDEX"])
            || starts(&["REINDEX"])
            || starts(&["ALTER", "TABLE"]));
    statement.locks_out_writes = starts(&["ALTER", "TABLE"]) && !concurrently
        || starts(&["DROP", "TABLE"])
        || (starts(&["CREATE", "INDEX"]) || starts(&["CREATE", "UNIQUE", "INDEX"]))
            && !concurrently
        || starts(&["REINDEX"]) && !concurrently
        || starts(&["TRUNCATE"])
        || starts(&["CLUSTER"])
        || starts(&["LOCK"])
        || starts(&["VACUUM", "FULL"])
        || starts(&["VACUUM", "(", "FULL"]);
    if let Some(truncate) = ast::Truncate::cast(node.clone())
        && let Some(list) = truncate.table_list()
    {
        for name in list.table_relation_names() {
            let name = relation_text(name.syntax());
            statement.touches.push(name.clone());
            statement.drops.push(Drop::Table(name));
        }
    }
    if cascade && let Some(drop) = ast::DropSchema::cast(node.clone()) {
        for schema in drop.schema_refs() {
            statement
                .drops
                .push(Drop::Schema(folded(&schema.syntax().text().to_string())));
        }
    }
    if cascade && let Some(drop) = ast::DropType::cast(node.clone()) {
        for name in drop.type_name_refs() {
            statement
                .drops
                .push(Drop::Type(relation_text(name.syntax())));
        }
    }
    if cascade && let Some(drop) = ast::DropDomain::cast(node.clone()) {
        for name in drop.domain_refs() {
            statement
                .drops
                .push(Drop::Type(relation_text(name.syntax())));
        }
    }
    if let Some(table) = ast::DropTable::cast(node.clone()) {
        for name in table.table_name_refs() {
            let name = relation_text(name.syntax());
            statement.touches.push(name.clone());
            statement.drops.push(Drop::Table(name));
        }
    }
    if let Some(alter) = ast::AlterTable::cast(node.clone())
        && let Some(relation) = alter.table_relation_name()
    {
        let table = relation_text(relation.syntax());
        statement.touches.push(table.clone());
        for action in alter.actions() {
            if let ast::AlterTableAction::DropColumn(drop) = action
                && let Some(column) = drop.column_name_ref()
            {
                statement.drops.push(Drop::Column(
                    table.clone(),
                    folded(&column.syntax().text().to_string()),
                ));
            }
        }
    }
    if let Some(index) = ast::CreateIndex::cast(node.clone()) {
        if let Some(relation) = index.table_relation_name() {
            statement.touches.push(relation_text(relation.syntax()));
        }
        if words.iter().any(|w| w == "CONCURRENTLY")
            && let Some(name) = index.index()
        {
            statement.concurrent_index = name
                .syntax()
                .children()
                .next()
                .map(|n| n.text().to_string().trim().to_string());
            if statement.concurrent_index.is_none() {
                statement.concurrent_index =
                    Some(name.syntax().text().to_string().trim().to_string());
            }
        }
    }
    for relation in node.descendants().filter_map(ast::TableRelationName::cast) {
        let name = relation_text(relation.syntax());
        if !statement.touches.contains(&name) {
            statement.touches.push(name);
        }
    }
}

/// A relation's name as written, without `ONLY` and a trailing `*`.
fn relation_text(node: &SyntaxNode) -> String {
    let text: String = node
        .descendants_with_tokens()
        .filter_map(|e| e.into_token())
        .filter(|t| !t.kind().is_trivia())
        .map(|t| t.text().to_string())
        .collect();
    let text = text
        .strip_prefix("ONLY")
        .or_else(|| text.strip_prefix("only"))
        .unwrap_or(&text);
    text.trim_end_matches('*').to_string()
}

/// An identifier as PostgreSQL folds it: quoted ones keep their case
/// (with `""` as `"`), others are lower-cased.
pub(crate) fn folded(written: &str) -> String {
    let written = written.trim();
    match written.strip_prefix('"').and_then(|w| w.strip_suffix('"')) {
        Some(inner) => inner.replace("\"\"", "\""),
        None => written.to_ascii_lowercase(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bodies_strings_and_comments_stay_inside_their_statement() {
        let text = "-- no-transaction\nCREATE FUNCTION f() RETURNS int LANGUAGE sql AS $$ SELECT 1; $$;\nINSERT INTO t VALUES (E'a;\\'b');\n/* x; */ SELECT 2;\nCREATE FUNCTION g() RETURNS int LANGUAGE sql BEGIN ATOMIC SELECT 1; SELECT 2; END;\n";
        let statements = split(text).unwrap();
        let texts: Vec<&str> = statements.iter().map(|s| s.text.as_str()).collect();
        assert_eq!(texts.len(), 4, "{texts:?}");
        assert!(
            texts[0].starts_with("CREATE FUNCTION f()") && texts[0].ends_with("$$;"),
            "{texts:?}"
        );
        assert_eq!(texts[1], "INSERT INTO t VALUES (E'a;\\'b');");
        assert!(texts[2].ends_with("SELECT 2;"));
        assert!(texts[3].ends_with("END;"), "{texts:?}");
        assert_eq!((statements[0].line, statements[0].column), (2, 1));
    }

    #[test]
    fn drops_and_concurrent_builds_are_found() {
        let s = split("ALTER TABLE public.\"Users\" DROP COLUMN \"Nick\", DROP COLUMN bio;\nDROP TABLE a, b;\nCREATE UNIQUE INDEX CONCURRENTLY users_email ON users (email);").unwrap();
        assert_eq!(
            s[0].drops,
            vec![
                Drop::Column("public.\"Users\"".into(), "Nick".into()),
                Drop::Column("public.\"Users\"".into(), "bio".into())
            ]
        );
        assert_eq!(
            s[1].drops,
            vec![Drop::Table("a".into()), Drop::Table("b".into())]
        );
        assert_eq!(s[2].concurrent_index.as_deref(), Some("users_email"));
        assert!(s[2].needs_own_transaction && !s[0].needs_own_transaction);
        assert!(s[0].locks_out_writes && s[1].locks_out_writes && !s[2].locks_out_writes);
        let t = split("BEGIN;\nCREATE FUNCTION g() RETURNS int LANGUAGE sql BEGIN ATOMIC SELECT 1; END;\nDROP SCHEMA app CASCADE;\nCOMMIT;").unwrap();
        let controls: Vec<bool> = t.iter().map(|s| s.controls_transaction).collect();
        assert_eq!(controls, vec![true, false, false, true]);
        assert_eq!(t[2].unseen_drop, None);
        assert_eq!(t[2].drops, vec![Drop::Schema("app".into())]);
        let u = split("TRUNCATE TABLE ONLY a, public.b;\nTRUNCATE c CASCADE;\nDROP TYPE mood CASCADE;\nDROP DOMAIN public.email CASCADE;\nDROP TYPE kept;\nDROP EXTENSION x CASCADE;").unwrap();
        assert_eq!(
            u[0].drops,
            vec![Drop::Table("a".into()), Drop::Table("public.b".into())]
        );
        assert!(u[0].unseen_drop.is_none());
        assert!(
            u[1].unseen_drop.is_some(),
            "what CASCADE reaches is not seen"
        );
        assert_eq!(u[2].drops, vec![Drop::Type("mood".into())]);
        assert_eq!(u[3].drops, vec![Drop::Type("public.email".into())]);
        assert!(
            u[4].drops.is_empty(),
            "without CASCADE a used type is not dropped"
        );
        assert_eq!(u[5].unseen_drop, Some("a CASCADE drop"));
        assert_eq!(
            folded("ÄrgER"),
            "Ärger",
            "only ASCII letters fold, as PostgreSQL folds"
        );
        assert_eq!(s[2].touches, vec!["users".to_string()]);
    }

    #[test]
    fn a_statement_the_parser_cannot_read_says_where() {
        let err = split("SELECT 1;\nCREATE TABLE (;\n").unwrap_err();
        assert!(err.starts_with("2:"), "{err}");
    }
}
