//! Durations as people write them in the config (`500ms`, `30s`, `5min`,
//! `2h`, `7 days`). Retention ages are PostgreSQL intervals and are not parsed
//! here: PostgreSQL parses those itself.
//!
//! A leaf module (it imports nothing of pgmaint's) so that `db`'s session
//! timeouts and the config can both hold durations without `db` importing
//! the config; `config::Duration` re-exports it.

use std::{fmt, str::FromStr, time::Duration as StdDuration};

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct Duration(pub StdDuration);

const UNITS: &[(&[&str], u64)] = &[
    (&["ms", "msec", "millisecond", "milliseconds"], 1),
    (&["s", "sec", "secs", "second", "seconds"], 1_000),
    (&["m", "min", "mins", "minute", "minutes"], 60_000),
    (&["h", "hour", "hours"], 3_600_000),
    (&["d", "day", "days"], 86_400_000),
    (&["w", "week", "weeks"], 604_800_000),
];

pub(crate) const DURATION_HELP: &str =
    "write a number and a unit, e.g. 500ms, 30s, 5min, 2h, 7 days";

impl FromStr for Duration {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let trimmed = text.trim();
        // PostgreSQL's word for a timeout of 0; the config decides where
        // that is allowed.
        if trimmed.eq_ignore_ascii_case("off") {
            return Ok(Duration(StdDuration::ZERO));
        }
        let split = trimmed
            .find(|c: char| !c.is_ascii_digit())
            .unwrap_or(trimmed.len());
        let (number, unit) = trimmed.split_at(split);
        let invalid = || format!("invalid duration `{text}`: {DURATION_HELP}");
        let number: u64 = number.parse().map_err(|_| invalid())?;
        let unit = unit.trim().to_ascii_lowercase();
        let millis_per_unit = UNITS
            .iter()
            .find(|(names, _)| names.contains(&unit.as_str()))
            .map(|(_, millis)| *millis)
            .ok_or_else(invalid)?;
        let millis = number.checked_mul(millis_per_unit).ok_or_else(invalid)?;
        Ok(Duration(StdDuration::from_millis(millis)))
    }
}

impl<'de> serde::Deserialize<'de> for Duration {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = String::deserialize(deserializer)?;
        text.parse().map_err(serde::de::Error::custom)
    }
}

impl serde::Serialize for Duration {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl fmt::Display for Duration {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let millis = self.0.as_millis();
        match millis {
            m if m % 3_600_000 == 0 && m > 0 => write!(f, "{}h", m / 3_600_000),
            m if m % 60_000 == 0 && m > 0 => write!(f, "{}min", m / 60_000),
            m if m % 1_000 == 0 => write!(f, "{}s", m / 1_000),
            m => write!(f, "{m}ms"),
        }
    }
}

impl Duration {
    /// The value PostgreSQL's `SET lock_timeout` and friends accept.
    pub(crate) fn as_pg_setting(&self) -> String {
        format!("{}ms", self.0.as_millis())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_documented_forms() {
        let ms = |s: &str| s.parse::<Duration>().unwrap().0.as_millis();
        assert_eq!(ms("500ms"), 500);
        assert_eq!(ms("30s"), 30_000);
        assert_eq!(ms("5min"), 300_000);
        assert_eq!(ms("2h"), 7_200_000);
        assert_eq!(ms("7 days"), 604_800_000);
        assert_eq!(ms("0ms"), 0);
    }

    #[test]
    fn rejects_what_it_cannot_read() {
        for bad in ["", "5", "five min", "5 fortnights", "-1s", "1.5s"] {
            let err = bad.parse::<Duration>().unwrap_err();
            assert!(err.contains("invalid duration"), "{bad}: {err}");
        }
    }
}
