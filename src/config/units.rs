//! Where each unit of a config text is, found with the TOML lexer alone:
//! every named task, schedule, notifier and alert (all the sections whose
//! header starts `[tasks.NAME`, say), and the rest (what comes before the
//! first header, and every other section). `source` reads each unit as a
//! text of its own, so a config of any size is parsed one small document
//! at a time: time linear in its size, memory bounded by its largest unit
//! rather than by a tree of the whole file (toml_edit's tree of a 10 MB
//! config is half a gigabyte and takes a second to build).
//!
//! Only the plain shapes are split: bare keys in headers, no `[tasks]`
//! table of its own and no `tasks.NAME...` dotted keys at the top.
//! Anything else (`None`) is read as one document, as before.

use std::collections::HashMap;
use std::ops::Range;

use toml_parser::lexer::TokenKind;

/// The units of a text, each as the byte ranges of its sections.
pub(crate) struct Units {
    /// Everything not in a named unit, in file order.
    pub(crate) rest: Vec<Range<usize>>,
    /// The named units in the order their first section appears.
    pub(crate) named: Vec<Named>,
    /// Where each is in `named`, by `TABLE.NAME`.
    index: HashMap<String, usize>,
}

/// One `[TABLE.NAME...]` unit: a task, schedule, notifier or alert.
pub(crate) struct Named {
    pub(crate) table: &'static str,
    pub(crate) name: String,
    pub(crate) sections: Vec<Range<usize>>,
}

impl Units {
    /// The unit that holds `key_path`: its sections, or `None` for the rest.
    pub(crate) fn named(&self, table: &str, name: &str) -> Option<&Named> {
        let at = self.index.get(&format!("{table}.{name}"))?;
        Some(&self.named[*at])
    }
}

/// What a section belongs to.
enum Owner {
    Rest,
    Named(&'static str, String),
}

/// Splits `text` into its units, or `None` when it is not of the plain
/// shape (or not lexically sound), which the caller reads whole.
pub(crate) fn split(text: &str, named_tables: &[&'static str]) -> Option<Units> {
    let mut tokens = toml_parser::Source::new(text).lex();
    let mut depth = 0usize;
    let mut line_start = true;
    let mut seen_header = false;
    // (start of the section's line, its owner)
    let mut sections: Vec<(usize, Owner)> = vec![(0, Owner::Rest)];
    while let Some(token) = tokens.next() {
        let span = token.span();
        match token.kind() {
            TokenKind::Whitespace | TokenKind::Comment => {}
            TokenKind::Newline => {
                if depth == 0 {
                    line_start = true;
                }
            }
            TokenKind::LeftSquareBracket if line_start && depth == 0 => {
                let start = text[..span.start()].rfind('\n').map_or(0, |i| i + 1);
                let path = header(&mut tokens, text)?;
                let owner = match named_tables.iter().find(|t| **t == path[0]) {
                    Some(_) if path.len() < 2 => return None,
                    Some(table) => Owner::Named(table, path[1].to_string()),
                    None => Owner::Rest,
                };
                sections.push((start, owner));
                seen_header = true;
                line_start = false;
            }
            TokenKind::LeftSquareBracket | TokenKind::LeftCurlyBracket => {
                depth += 1;
                line_start = false;
            }
            TokenKind::RightSquareBracket | TokenKind::RightCurlyBracket => {
                depth = depth.saturating_sub(1);
                line_start = false;
            }
            kind => {
                // A key at the top, before any header: `tasks.x.kind = ...`
                // there would make a task out of two places.
                if line_start && depth == 0 && !seen_header {
                    let key = &text[span.start()..span.end()];
                    if kind != TokenKind::Atom || named_tables.contains(&key) {
                        return None;
                    }
                }
                line_start = false;
            }
        }
    }
    let mut rest = Vec::new();
    let mut named: Vec<Named> = Vec::new();
    let mut index = HashMap::new();
    let ends: Vec<usize> = sections
        .iter()
        .skip(1)
        .map(|(start, _)| *start)
        .chain([text.len()])
        .collect();
    for ((start, owner), end) in sections.into_iter().zip(ends) {
        let range = start..end;
        match owner {
            Owner::Rest => rest.push(range),
            Owner::Named(table, name) => {
                let at = *index.entry(format!("{table}.{name}")).or_insert_with(|| {
                    named.push(Named {
                        table,
                        name,
                        sections: Vec::new(),
                    });
                    named.len() - 1
                });
                named[at].sections.push(range);
            }
        }
    }
    Some(Units { rest, named, index })
}

/// The bare keys of a header whose `[` was just read, up to its `]`;
/// `None` for a quoted key or anything unexpected.
fn header<'t>(tokens: &mut toml_parser::lexer::Lexer<'t>, text: &'t str) -> Option<Vec<&'t str>> {
    let mut path = Vec::new();
    let mut first = true;
    for token in tokens.by_ref() {
        let span = token.span();
        match token.kind() {
            TokenKind::LeftSquareBracket if first && path.is_empty() => {}
            TokenKind::Whitespace | TokenKind::Dot => {}
            TokenKind::Atom => path.push(&text[span.start()..span.end()]),
            TokenKind::RightSquareBracket if !path.is_empty() => return Some(path),
            _ => return None,
        }
        first = false;
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    const NAMED: &[&str] = &["tasks", "schedules"];

    fn texts<'a>(text: &'a str, ranges: &[Range<usize>]) -> Vec<&'a str> {
        ranges.iter().map(|r| &text[r.clone()]).collect()
    }

    #[test]
    fn each_named_table_is_a_unit_and_the_rest_is_one() {
        let text = "name = \"x\"\n[database]\nurl = \"u\"\n[tasks.a]\nkind = \"sql\"\nsql = \"\"\"\n[tasks.b]\n\"\"\"\nv = [\n[1],\n]\n  [schedules.d]\ncron = \"\"\n[tasks.a.sub]\nx = 1\n[defaults]\n";
        let units = split(text, NAMED).unwrap();
        assert_eq!(
            texts(text, &units.rest),
            [
                "name = \"x\"\n",
                "[database]\nurl = \"u\"\n",
                "[defaults]\n"
            ]
        );
        let named: Vec<(&str, &str, Vec<&str>)> = units
            .named
            .iter()
            .map(|n| (n.table, n.name.as_str(), texts(text, &n.sections)))
            .collect();
        assert_eq!(
            named,
            [
                (
                    "tasks",
                    "a",
                    vec![
                        "[tasks.a]\nkind = \"sql\"\nsql = \"\"\"\n[tasks.b]\n\"\"\"\nv = [\n[1],\n]\n",
                        "[tasks.a.sub]\nx = 1\n"
                    ]
                ),
                ("schedules", "d", vec!["  [schedules.d]\ncron = \"\"\n"]),
            ]
        );
    }

    #[test]
    fn unusual_shapes_are_read_whole() {
        for text in [
            "[tasks]\na = { kind = \"sql\" }\n",
            "tasks.a.kind = \"sql\"\n",
            "[tasks.\"a b\"]\nkind = \"sql\"\n",
            "\"name\" = \"x\"\n",
        ] {
            assert!(split(text, NAMED).is_none(), "{text}");
        }
    }
}
