//! What a user's `where` may hold, decided before pgmaint puts it into any
//! statement. pgmaint pastes the condition, unchanged, into its batch
//! statements between parentheses of its own (`sql::predicate`); a batch is
//! bounded only while the condition stays inside them. So the condition is
//! lexed as PostgreSQL lexes it (string literals with `E''` escapes and
//! dollar quotes, quoted names, `--` and nested `/* */` comments) and must:
//! be non-empty, close only parentheses it opened and close all of them,
//! hold no `;` and no `$n` parameter (pgmaint binds its own), and parse as
//! one expression. Everything here is pure: it runs when the config is read,
//! with no database. What needs the catalog (which functions are volatile)
//! is asked by the caller, with the names `Calls` collects.

use squawk_lexer::{LiteralKind, TokenKind};
use squawk_syntax::{SourceFile, SyntaxKind, SyntaxNode};

/// Why a condition is refused, and how to fix it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Refusal {
    pub message: String,
    pub help: String,
}

impl Refusal {
    fn new(message: String, help: &str) -> Refusal {
        Refusal {
            message,
            help: help.to_string(),
        }
    }
}

const ONE_EXPRESSION: &str =
    "write one boolean expression, e.g. `expires_at < now() OR used_at IS NOT NULL`";

/// Where `offset` is in `text`, in words: `column 14`, or `line 2, column
/// 3` when the condition spans lines (1-based, counting characters).
fn position(text: &str, offset: usize) -> String {
    let before = &text[..offset.min(text.len())];
    let column = before.rsplit('\n').next().map_or(0, |l| l.chars().count()) + 1;
    if text.contains('\n') {
        let line = before.matches('\n').count() + 1;
        format!("line {line}, column {column}")
    } else {
        format!("column {column}")
    }
}

/// A token of the condition: its kind and byte range.
struct Token {
    kind: TokenKind,
    start: usize,
    end: usize,
}

fn tokens(text: &str) -> Vec<Token> {
    let mut start = 0;
    squawk_lexer::tokenize(text)
        .map(|t| {
            let token = Token {
                kind: t.kind,
                start,
                end: start + t.len as usize,
            };
            start = token.end;
            token
        })
        .collect()
}

fn is_trivia(kind: TokenKind) -> bool {
    matches!(
        kind,
        TokenKind::Whitespace | TokenKind::LineComment | TokenKind::BlockComment { .. }
    )
}

/// What a token leaves open, if it was never closed, and how to close it.
fn unterminated(kind: TokenKind) -> Option<(&'static str, &'static str)> {
    const LITERAL: &str =
        "close it; inside a string literal a quote is written '' (two single quotes)";
    match kind {
        TokenKind::BlockComment { terminated: false } => {
            Some(("a `/*` comment", "close it with `*/` (comments nest)"))
        }
        TokenKind::QuotedIdent {
            terminated: false, ..
        } => Some((
            "a quoted name (`\"`)",
            "close it with `\"`; inside a quoted name a quote is written \"\"",
        )),
        TokenKind::Literal { kind } => match kind {
            LiteralKind::Str { terminated: false }
            | LiteralKind::NationalStr { terminated: false }
            | LiteralKind::ByteStr { terminated: false }
            | LiteralKind::BitStr { terminated: false }
            | LiteralKind::UnicodeEscStr { terminated: false }
            | LiteralKind::EscStr { terminated: false } => Some(("a string literal", LITERAL)),
            LiteralKind::DollarQuotedString { terminated: false } => Some((
                "a dollar-quoted string",
                "close it with the same tag it opened with (`$$`, `$tag$`)",
            )),
            _ => None,
        },
        _ => None,
    }
}

/// The statement the condition is parsed in; the condition goes between
/// the parentheses on lines of its own, as `sql::predicate` places it.
const PARSE_PREFIX: &str = "SELECT 1 FROM t WHERE (\n";
const PARSE_SUFFIX: &str = "\n)";

/// Checks a `where` condition without the database: see the module comment.
pub(crate) fn check(text: &str) -> Result<(), Refusal> {
    let mut open: Vec<usize> = Vec::new();
    let mut significant = 0usize;
    for token in tokens(text) {
        let at = position(text, token.start);
        if let Some((what, help)) = unterminated(token.kind) {
            return Err(Refusal::new(
                format!("the condition opens {what} at {at} that is never closed"),
                help,
            ));
        }
        if is_trivia(token.kind) {
            continue;
        }
        significant += 1;
        match token.kind {
            TokenKind::OpenParen => open.push(token.start),
            TokenKind::CloseParen if open.pop().is_none() => {
                return Err(Refusal::new(
                    format!("the condition closes a parenthesis it did not open at {at}"),
                    ONE_EXPRESSION,
                ));
            }
            TokenKind::Semi => {
                return Err(Refusal::new(
                    format!("the condition holds a `;` at {at}, which ends a statement"),
                    "write one boolean expression and nothing after it; statements go in a `sql` task",
                ));
            }
            TokenKind::PositionalParam { .. } => {
                return Err(Refusal::new(
                    format!(
                        "the condition refers to parameter `{}` at {at}; pgmaint binds its own parameters",
                        &text[token.start..token.end]
                    ),
                    "write the value itself (e.g. `id > 100`); inside a string literal `'$1'` is fine",
                ));
            }
            _ => {}
        }
    }
    if significant == 0 {
        return Err(Refusal::new(
            "the condition is empty (only spaces or comments)".into(),
            "write the condition rows must meet, e.g. `expires_at < now()`",
        ));
    }
    if let Some(&start) = open.first() {
        return Err(Refusal::new(
            format!(
                "the parenthesis opened at {} is never closed",
                position(text, start)
            ),
            ONE_EXPRESSION,
        ));
    }
    check_parses(text)
}

/// The condition, balanced, must parse as the one expression between the
/// parentheses of a WHERE clause.
fn check_parses(text: &str) -> Result<(), Refusal> {
    let sql = format!("{PARSE_PREFIX}{text}{PARSE_SUFFIX}");
    let parse = SourceFile::parse(&sql);
    if let Some(error) = parse.errors().first() {
        let offset = usize::from(error.range().start())
            .saturating_sub(PARSE_PREFIX.len())
            .min(text.len());
        return Err(Refusal::new(
            format!(
                "the condition is not one boolean expression: {} at {}",
                error.message(),
                position(text, offset)
            ),
            ONE_EXPRESSION,
        ));
    }
    if parse.tree().stmts().count() != 1 {
        return Err(Refusal::new(
            "the condition is not one boolean expression".into(),
            ONE_EXPRESSION,
        ));
    }
    Ok(())
}

/// A function the condition calls: its schema when the name is qualified,
/// and its name as the catalog stores it (unquoted names folded to lower
/// case, quoted ones as written).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) struct FunctionName {
    pub schema: Option<String>,
    pub name: String,
}

impl std::fmt::Display for FunctionName {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.schema {
            Some(schema) => write!(f, "{schema}.{}()", self.name),
            None => write!(f, "{}()", self.name),
        }
    }
}

/// A name as PostgreSQL stores it: `"Mixed"` keeps its case (and `""` is
/// one quote), an unquoted name folds ASCII letters to lower case.
fn catalog_name(written: &str) -> String {
    match written
        .strip_prefix('"')
        .and_then(|rest| rest.strip_suffix('"'))
    {
        Some(quoted) => quoted.replace("\"\"", "\""),
        None => written.to_ascii_lowercase(),
    }
}

/// What a condition (or a view's query) calls and reads, for the caller
/// to look up in the catalog: see `tasks::rows` for what is done with it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct Calls {
    /// The functions called anywhere, subqueries included, by name
    /// (unqualified or `schema.name`). Special forms (`EXTRACT`,
    /// `current_date`...) and calls squawk does not see as calls are not
    /// listed.
    pub functions: Vec<FunctionName>,
    /// The relations subqueries read, as written (`s."V"`), to be looked up
    /// with `to_regclass`: a view among them may call functions of its own.
    pub relations: Vec<String>,
    /// The runs of operator characters outside literals and comments
    /// (`<`, `<=`, `@>`, `->>`...): an operator PostgreSQL reads is always
    /// a substring of one of them.
    pub operator_runs: Vec<String>,
}

impl Calls {
    /// What a `where` condition calls. Empty lists for one that does not
    /// parse (`check` refuses it).
    pub(crate) fn of_condition(text: &str) -> Calls {
        let sql = format!("{PARSE_PREFIX}{text}{PARSE_SUFFIX}");
        // The `FROM t` of the statement around the condition is not its own.
        Calls::of(&sql, PARSE_PREFIX.len(), text)
    }

    /// What a query (a view's definition) calls.
    pub(crate) fn of_query(sql: &str) -> Calls {
        Calls::of(sql, 0, sql)
    }

    fn of(sql: &str, from: usize, own_text: &str) -> Calls {
        let root = SourceFile::parse(sql).syntax_node();
        let own = |node: &SyntaxNode| usize::from(node.text_range().start()) >= from;
        let mut functions: Vec<FunctionName> = root
            .descendants()
            .filter(|node| node.kind() == SyntaxKind::CALL_EXPR && own(node))
            .filter_map(|call| call.first_child().and_then(|callee| function_name(&callee)))
            .collect();
        functions.sort();
        functions.dedup();
        let mut relations: Vec<String> = root
            .descendants()
            .filter(|node| node.kind() == SyntaxKind::RELATION_NAME_REF && own(node))
            .map(|node| {
                node.descendants_with_tokens()
                    .filter_map(|element| element.into_token())
                    .filter(|token| {
                        !token.kind().is_trivia()
                            && !matches!(token.kind(), SyntaxKind::DOT | SyntaxKind::ONLY_KW)
                    })
                    .map(|token| token.text().to_string())
                    .collect::<Vec<_>>()
                    .join(".")
            })
            .collect();
        relations.sort();
        relations.dedup();
        Calls {
            functions,
            relations,
            operator_runs: operator_runs(own_text),
        }
    }
}

fn function_name(callee: &SyntaxNode) -> Option<FunctionName> {
    let parts: Vec<String> = match callee.kind() {
        SyntaxKind::NAME_REF => vec![catalog_name(callee.text().to_string().trim())],
        SyntaxKind::FIELD_EXPR => callee
            .children()
            .filter(|n| n.kind() == SyntaxKind::NAME_REF)
            .map(|n| catalog_name(n.text().to_string().trim()))
            .collect(),
        _ => return None,
    };
    match parts.as_slice() {
        [name] => Some(FunctionName {
            schema: None,
            name: name.clone(),
        }),
        // `schema.name`, or `database.schema.name` (PostgreSQL accepts only
        // the current database there).
        [.., schema, name] => Some(FunctionName {
            schema: Some(schema.clone()),
            name: name.clone(),
        }),
        [] => None,
    }
}

fn operator_runs(text: &str) -> Vec<String> {
    let mut runs: Vec<String> = Vec::new();
    let mut current = String::new();
    for token in tokens(text) {
        let operator_char = matches!(
            token.kind,
            TokenKind::Minus
                | TokenKind::Plus
                | TokenKind::Star
                | TokenKind::Slash
                | TokenKind::Lt
                | TokenKind::Gt
                | TokenKind::Eq
                | TokenKind::Tilde
                | TokenKind::Bang
                | TokenKind::At
                | TokenKind::Pound
                | TokenKind::Percent
                | TokenKind::Caret
                | TokenKind::And
                | TokenKind::Or
                | TokenKind::Backtick
                | TokenKind::Question
        );
        if operator_char {
            current.push_str(&text[token.start..token.end]);
        } else if !current.is_empty() {
            runs.push(std::mem::take(&mut current));
        }
    }
    if !current.is_empty() {
        runs.push(current);
    }
    runs.sort();
    runs.dedup();
    runs
}

/// Where the condition has a backslash inside a plain `'...'` literal. With
/// `standard_conforming_strings` off, PostgreSQL reads such a backslash as
/// an escape where this lexer (and the default server) do not, so the two
/// would disagree on where the literal ends.
pub(crate) fn backslash_in_plain_string(text: &str) -> Option<String> {
    tokens(text)
        .into_iter()
        .find(|t| {
            matches!(
                t.kind,
                TokenKind::Literal {
                    kind: LiteralKind::Str { .. } | LiteralKind::NationalStr { .. }
                }
            ) && text[t.start..t.end].contains('\\')
        })
        .map(|t| position(text, t.start))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn refused(text: &str) -> String {
        match check(text) {
            Err(refusal) => refusal.message,
            Ok(()) => panic!("{text:?} was accepted"),
        }
    }

    #[test]
    fn accepts_one_expression_whatever_its_literals_and_comments_hold() {
        for text in [
            "expires_at < now() OR used_at IS NOT NULL",
            "note = ')' -- a comment with ) and (\n",
            "note <> '(' /* a /* nested */ comment ) */ AND id > 0",
            "note = 'it''s $1 -- not a comment'",
            "note = $$ ) or ( $$",
            "note = $tag$ it's ) $tag$",
            "note = E'\\')'",
            "\"Weird\"\"name\" = 'x'",
            "note = 'größer ✓'",
            "id IN (SELECT id FROM other o WHERE o.ok)",
            "(a, b) > (1, 2) AND (c IS DISTINCT FROM d)",
            "data->>'k' = 'v' AND data ? 'k' AND tags @> ARRAY['x']",
            "created_at < current_date - interval '7 days'",
            "extract(epoch FROM now() - created_at) > 3600",
            "a BETWEEN 1 AND 2 AND b ILIKE 'x%' AND c ~* '^a'",
            "  id = 1  ",
        ] {
            assert_eq!(check(text), Ok(()), "{text:?}");
        }
    }

    #[test]
    fn refuses_a_condition_that_breaks_out_of_its_parentheses() {
        assert_eq!(
            refused("note = 'drop') or (note = 'drop'"),
            "the condition closes a parenthesis it did not open at column 14"
        );
        assert_eq!(
            refused("a = 1\n) or (true"),
            "the condition closes a parenthesis it did not open at line 2, column 1"
        );
        assert_eq!(
            refused("(a = 1"),
            "the parenthesis opened at column 1 is never closed"
        );
        // A comment that would swallow the closing parenthesis.
        assert!(refused("a = 1 /* ").contains("`/*` comment at column 7"));
        assert!(refused("note = 'x").contains("string literal at column 8"));
        assert!(refused("note = $$x").contains("dollar-quoted string"));
        assert!(refused("\"note = 1").contains("quoted name"));
        assert!(refused("note = E'\\'").contains("string literal"));
    }

    #[test]
    fn refuses_statements_parameters_and_emptiness() {
        assert!(refused("a = 1; DELETE FROM t").contains("`;` at column 6"));
        assert!(refused("a = 1;").contains("`;`"));
        assert!(refused("id = $1").contains("parameter `$1` at column 6"));
        assert!(refused("id = $4").contains("`$4`"));
        assert!(refused("").contains("empty"));
        assert!(refused("  -- only a comment\n /* and this */ ").contains("empty"));
    }

    #[test]
    fn refuses_what_is_not_one_expression() {
        assert!(refused("a = 1 b = 2").starts_with("the condition is not one boolean expression"));
        assert!(refused("a +").starts_with("the condition is not one boolean expression"));
        assert!(refused("a = 1 ORDER BY a").starts_with("the condition is not one"));
    }

    #[test]
    fn finds_the_functions_a_condition_calls() {
        let calls = Calls::of_condition(
            "random() < 0.5 OR public.f(x) OR \"MyFn\"(1) OR NOW() > t OR id IN (SELECT g FROM generate_series(1, 3) g WHERE Clock_Timestamp() > t)",
        );
        let shown: Vec<String> = calls.functions.iter().map(|n| n.to_string()).collect();
        assert_eq!(
            shown,
            [
                "MyFn()",
                "clock_timestamp()",
                "generate_series()",
                "now()",
                "random()",
                "public.f()"
            ]
        );
        assert!(
            Calls::of_condition("note = 'random()'")
                .functions
                .is_empty()
        );
        assert!(
            Calls::of_condition("created_at < current_date")
                .functions
                .is_empty()
        );
        let view = Calls::of_query(
            " SELECT id\n   FROM tokens\n  WHERE random() < 0.5::double precision;",
        );
        assert_eq!(view.functions[0].name, "random");
        assert_eq!(view.relations, ["tokens"]);
    }

    #[test]
    fn finds_the_relations_subqueries_read() {
        assert_eq!(
            Calls::of_condition(
                "id IN (SELECT id FROM s.\"V\" JOIN w USING (id), ONLY x WHERE EXISTS (SELECT FROM q))"
            )
            .relations,
            ["q", "s.\"V\"", "w", "x"]
        );
        assert!(Calls::of_condition("a = 1").relations.is_empty());
    }

    #[test]
    fn operator_runs_skip_literals_and_comments() {
        assert_eq!(
            Calls::of_condition("a <-> b AND c >= '<<' -- ++\n AND d @> e").operator_runs,
            ["<->", ">=", "@>"]
        );
    }

    #[test]
    fn backslashes_in_plain_literals_are_found() {
        assert_eq!(
            backslash_in_plain_string("a = 'x\\' OR b = 1"),
            Some("column 5".into())
        );
        assert_eq!(backslash_in_plain_string("a = E'x\\'' OR b = 1"), None);
        assert_eq!(backslash_in_plain_string("a = '\"' -- \\"), None);
    }
}
