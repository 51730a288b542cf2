//! Cron expressions as the config writes them: 5 fields, or 6 with seconds
//! first, parsed by croner, with a refusal that names the field at fault.
//! A leaf module, so the config can check a schedule's `cron` without
//! importing `schedule` (which reads the config's schedules).

use croner::Cron;
use croner::parser::{CronParser, Seconds, Year};

/// The parser for 5 fields, or 6 with seconds first; `L`, `W` and `#` work.
fn parser() -> CronParser {
    CronParser::builder()
        .seconds(Seconds::Optional)
        .year(Year::Disallowed)
        .build()
}

/// Parses a cron expression; a refusal names the field at fault and its
/// range, since croner's own messages ("Number out of bounds.") do not.
pub(crate) fn parse_cron(text: &str) -> Result<Cron, String> {
    let err = match parser().parse(text) {
        Ok(cron) => return Ok(cron),
        Err(err) => err,
    };
    let fields: Vec<&str> = text.split_whitespace().collect();
    let names: &[(&str, &str)] = match fields.len() {
        5 => &FIELDS[1..],
        6 => &FIELDS,
        n => {
            return Err(format!(
                "invalid cron expression `{text}`: it has {n} field(s); write 5 (minute hour day-of-month month day-of-week) or 6 with seconds first"
            ));
        }
    };
    // The field at fault is the one whose replacement by `*` makes the
    // expression parse.
    let culprit = (0..fields.len()).find(|&i| {
        let mut fixed = fields.clone();
        fixed[i] = "*";
        parser().parse(&fixed.join(" ")).is_ok()
    });
    let cause = err.to_string();
    let cause = cause
        .strip_prefix("Component error: ")
        .or_else(|| cause.strip_prefix("Invalid pattern: "))
        .unwrap_or(&cause)
        .trim_end_matches('.')
        .to_lowercase();
    Err(match culprit {
        Some(i) => format!(
            "invalid cron expression `{text}`: the {} field `{}` is not valid ({cause}); it takes {}",
            names[i].0, fields[i], names[i].1
        ),
        None => format!("invalid cron expression `{text}`: {cause}"),
    })
}

/// Each field's name and what it takes, seconds first.
const FIELDS: [(&str, &str); 6] = [
    ("second", "0-59"),
    ("minute", "0-59"),
    ("hour", "0-23"),
    ("day-of-month", "1-31, L or W"),
    ("month", "1-12 or JAN-DEC"),
    ("day-of-week", "0-7 or SUN-SAT (0 and 7 are Sunday), L or #"),
];

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_refused_cron_names_its_field_and_range() {
        let err = parse_cron("61 * * * *").unwrap_err();
        assert!(
            err.contains("the minute field `61` is not valid") && err.contains("0-59"),
            "{err}"
        );
        assert!(!err.contains("Component error"), "{err}");
        let err = parse_cron("0 0 25 * * *").unwrap_err();
        assert!(err.contains("the hour field `25`"), "{err}");
        let err = parse_cron("* * *").unwrap_err();
        assert!(err.contains("it has 3 field(s)"), "{err}");
        assert!(parse_cron("0 2 * * *").is_ok());
    }
}
