//! Retention ages (`older_than`, `retention`) must be positive: a negative
//! one puts the cutoff in the future, so rows (files, partitions) that have
//! not expired yet would be removed; a zero one removes everything up to
//! now. Checked twice. When the config is read, with no database, the
//! forms that are certainly not positive are refused (`-7 days`, `7 days
//! ago`, `0`, `P-1D`, `-1:00`); anything this reader does not recognise,
//! and intervals whose fields have mixed signs (`1 day -25 hours`), are left
//! to the database, which compares the interval with zero by PostgreSQL's
//! own rules (a month as 30 days, a day as 24 hours) wherever the interval
//! is validated (`check`, `plan`, `run`).

use crate::unnamed::Unnamed;
use tokio_postgres::Client;

/// Why an age is refused, and how to fix it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct AgeProblem {
    pub message: String,
    pub help: String,
}

const HELP: &str =
    "write a positive PostgreSQL interval, e.g. \"7 days\", \"12 hours\", \"1 month\"";

/// PostgreSQL's interval units (and their abbreviations), lower case.
const UNITS: &[&str] = &[
    "microsecond",
    "microseconds",
    "microsecon",
    "us",
    "usec",
    "usecs",
    "useconds",
    "millisecond",
    "milliseconds",
    "millisecon",
    "ms",
    "msec",
    "msecs",
    "mseconds",
    "second",
    "seconds",
    "s",
    "sec",
    "secs",
    "minute",
    "minutes",
    "m",
    "min",
    "mins",
    "hour",
    "hours",
    "h",
    "hr",
    "hrs",
    "day",
    "days",
    "d",
    "week",
    "weeks",
    "w",
    "month",
    "months",
    "mon",
    "mons",
    "year",
    "years",
    "y",
    "yr",
    "yrs",
    "decade",
    "decades",
    "dec",
    "decs",
    "century",
    "centuries",
    "c",
    "cent",
    "millennium",
    "millennia",
    "mil",
    "mils",
];

/// The sign of one field of an interval as written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Sign {
    Negative,
    Zero,
    Positive,
}

/// `digits[.digits]`: whether it is zero, or `None` when it is not a number.
fn number_is_zero(text: &str) -> Option<bool> {
    let (whole, fraction) = text.split_once('.').unwrap_or((text, ""));
    let digits = |s: &str| s.chars().all(|c| c.is_ascii_digit());
    if (whole.is_empty() && fraction.is_empty()) || !digits(whole) || !digits(fraction) {
        return None;
    }
    Some(whole.chars().chain(fraction.chars()).all(|c| c == '0'))
}

/// One field of the traditional format: a signed number with or without a
/// unit glued on (`-7`, `7days`, `1.5h`), `h:m[:s]`, or `y-m`.
fn field_sign(field: &str) -> Option<Sign> {
    let (negative, unsigned) = match field.as_bytes().first()? {
        b'-' => (true, &field[1..]),
        b'+' => (false, &field[1..]),
        _ => (false, field),
    };
    let zero = if unsigned.contains(':') {
        let parts: Vec<&str> = unsigned.split(':').collect();
        if !(2..=3).contains(&parts.len()) {
            return None;
        }
        parts
            .iter()
            .map(|p| number_is_zero(p))
            .collect::<Option<Vec<bool>>>()?
            .into_iter()
            .all(|z| z)
    } else if let Some((years, months)) = unsigned.split_once('-') {
        number_is_zero(years)? && number_is_zero(months)?
    } else {
        let split = unsigned
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .unwrap_or(unsigned.len());
        let (number, unit) = unsigned.split_at(split);
        if !unit.is_empty() && !UNITS.contains(&unit) {
            return None;
        }
        number_is_zero(number)?
    };
    Some(match (zero, negative) {
        (true, _) => Sign::Zero,
        (false, true) => Sign::Negative,
        (false, false) => Sign::Positive,
    })
}

/// The signs of the fields of an ISO 8601 interval with designators
/// (`P1Y2M3DT4H5M6S`, each number signed on its own).
fn iso_signs(text: &str) -> Option<Vec<Sign>> {
    let body = text.strip_prefix('p')?;
    let mut signs = Vec::new();
    let mut number = String::new();
    for c in body.chars() {
        match c {
            't' if number.is_empty() => {}
            '0'..='9' | '.' | '-' | '+' => number.push(c),
            'y' | 'm' | 'w' | 'd' | 'h' | 's' if !number.is_empty() => {
                signs.push(field_sign(&number)?);
                number.clear();
            }
            _ => return None,
        }
    }
    (number.is_empty() && !signs.is_empty()).then_some(signs)
}

/// The signs of the fields of `text`, `ago` applied; `None` when the text
/// is not in a form this reader knows (the database decides then).
fn signs(text: &str) -> Option<Vec<Sign>> {
    let text = text.trim().to_ascii_lowercase();
    if text.starts_with('p') {
        return iso_signs(&text);
    }
    let mut signs = Vec::new();
    let mut ago = false;
    for word in text.split_whitespace() {
        match word {
            "@" => {}
            "ago" => ago = !ago,
            unit if UNITS.contains(&unit) => {}
            field => signs.push(field_sign(field)?),
        }
    }
    if ago {
        for sign in &mut signs {
            *sign = match *sign {
                Sign::Negative => Sign::Positive,
                Sign::Positive => Sign::Negative,
                Sign::Zero => Sign::Zero,
            };
        }
    }
    (!signs.is_empty()).then_some(signs)
}

/// Refuses an age that is certainly not positive, from its text alone.
/// Accepts what it cannot decide: `check_live` has the last word.
pub(crate) fn check_written(age: &str) -> Result<(), AgeProblem> {
    let Some(signs) = signs(age) else {
        return Ok(());
    };
    let refuse = |what: &str| {
        Err(AgeProblem {
            message: format!("`{age}` is {what}; a retention age must be positive"),
            help: HELP.into(),
        })
    };
    if signs.iter().all(|s| *s == Sign::Zero) {
        return refuse("zero, so everything up to now would be removed");
    }
    if signs.iter().all(|s| *s != Sign::Positive) {
        return refuse(
            "negative: the cutoff would be in the future, so what has not expired yet would be removed",
        );
    }
    Ok(())
}

/// Validates the age with the database: a PostgreSQL interval, greater
/// than zero as PostgreSQL compares intervals.
pub(crate) async fn check_live(client: &Client, age: &str) -> Result<(), AgeProblem> {
    match client
        .row("SELECT $1::text::interval > interval '0'", &[&age])
        .await
    {
        Ok(row) if row.get::<_, bool>(0) => cutoff_in_range(client, age).await,
        Ok(_) => Err(AgeProblem {
            message: format!(
                "`{age}` is not a positive interval (PostgreSQL reads it as zero or less); a retention age must be positive"
            ),
            help: HELP.into(),
        }),
        Err(err) => Err(AgeProblem {
            message: format!(
                "`{age}` is not a PostgreSQL interval: {}",
                crate::db::describe(&err)
            ),
            help: HELP.into(),
        }),
    }
}

/// The cutoff a run computes (`now() - age`), computed now: an age so long
/// that the cutoff is before PostgreSQL's first timestamp fails here, at
/// its key, rather than in the run.
async fn cutoff_in_range(client: &Client, age: &str) -> Result<(), AgeProblem> {
    match client
        .row("SELECT (now() - $1::text::interval)::timestamptz", &[&age])
        .await
    {
        Ok(_) => Ok(()),
        Err(err) => Err(AgeProblem {
            message: format!(
                "`{age}` is too long: the cutoff now() - {age} cannot be computed ({})",
                crate::db::describe(&err)
            ),
            help: "write an age PostgreSQL can subtract from now(), e.g. \"10 years\"".into(),
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn refused(age: &str) -> bool {
        check_written(age).is_err()
    }

    #[test]
    fn refuses_what_is_certainly_not_positive() {
        for age in [
            "-7 days",
            "7 days ago",
            "@ 7 days ago",
            "-7days",
            "-7 d",
            "0",
            "0 days",
            "00:00:00",
            "-1:30",
            "-1-2",
            "P-1D",
            "PT0S",
            "p0d",
            "1 day 1 sec ago",
            "-1 day -2 hours",
            " 0.0 hours ",
        ] {
            assert!(refused(age), "{age:?} was accepted");
        }
        assert!(
            check_written("-7 days")
                .unwrap_err()
                .message
                .contains("negative")
        );
        assert!(
            check_written("0 days")
                .unwrap_err()
                .message
                .contains("zero")
        );
    }

    #[test]
    fn accepts_positive_ages_and_leaves_the_undecided_to_the_database() {
        for age in [
            "7 days",
            "-7 days ago",
            "1 week",
            "12 hours",
            "1 month",
            "1-2",
            "00:00:01",
            "P1D",
            "PT1H",
            "1d",
            "1.5 hours",
            // Mixed signs, and what this reader does not know: the
            // database decides.
            "1 day -25 hours",
            "1 mon -30 days",
            "-1 2:00:00",
            "-P1D",
            "7 bananas",
            "",
        ] {
            assert!(!refused(age), "{age:?} was refused");
        }
    }
}
