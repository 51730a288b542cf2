//! Cron schedules in a time zone: the next fire after a moment, computed
//! forward (never "does the cron match now"). croner gives the daylight
//! saving behaviour we document: a time that does not exist on the
//! spring-forward day fires at the first moment after the gap (02:30 in
//! Europe/Berlin fires at 03:00), and a time that happens twice on the
//! fall-back day fires once, at its first occurrence.

use chrono::{DateTime, Utc};
use chrono_tz::Tz;
use croner::Cron;

use crate::config::ScheduleConfig;
use crate::cron::parse_cron;

pub(crate) struct Schedule {
    pub cron: Cron,
    pub tz: Tz,
}

impl Schedule {
    pub(crate) fn new(config: &ScheduleConfig) -> Result<Schedule, String> {
        let cron = parse_cron(&config.cron)?;
        let tz = config
            .timezone
            .parse::<Tz>()
            .map_err(|_| format!("unknown time zone `{}`", config.timezone))?;
        Ok(Schedule { cron, tz })
    }

    /// The first fire strictly after `after`.
    pub(crate) fn next_after(&self, after: DateTime<Utc>) -> Option<DateTime<Utc>> {
        self.cron
            .find_next_occurrence(&after.with_timezone(&self.tz), false)
            .ok()
            .map(|t| t.with_timezone(&Utc))
    }

    /// The next `n` fires after `after`.
    pub(crate) fn upcoming(&self, after: DateTime<Utc>, n: usize) -> Vec<DateTime<Utc>> {
        let mut fires = Vec::new();
        let mut t = after;
        while fires.len() < n {
            let Some(next) = self.next_after(t) else {
                break;
            };
            fires.push(next);
            t = next;
        }
        fires
    }
}

/// A fire missed by at most this much still counts as on time.
pub(crate) const ON_TIME: std::time::Duration = std::time::Duration::from_secs(60);

/// What to do with a schedule's fires that are due at `now`, counting
/// from its last fire: the ones to record as skipped (with why), and the
/// one to run, if any. Fires missed while no daemon ran follow `misfire`:
/// only the latest can run; under `run_once` if it is within
/// `misfire_grace`, under `skip` only if it is on time.
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct DueFires {
    pub skipped: Vec<(DateTime<Utc>, String)>,
    pub run: Option<DateTime<Utc>>,
}

pub(crate) fn due_fires(
    schedule: &Schedule,
    config: &ScheduleConfig,
    last: DateTime<Utc>,
    now: DateTime<Utc>,
) -> DueFires {
    let mut due = Vec::new();
    let mut t = last;
    while let Some(next) = schedule.next_after(t) {
        if next > now || due.len() > 10_000 {
            break;
        }
        due.push(next);
        t = next;
    }
    let Some(latest) = due.pop() else {
        return DueFires {
            skipped: Vec::new(),
            run: None,
        };
    };
    let mut skipped: Vec<(DateTime<Utc>, String)> = due
        .into_iter()
        .map(|f| {
            (
                f,
                "missed while no daemon ran; only the latest missed fire can run".to_string(),
            )
        })
        .collect();
    let late = (now - latest).to_std().unwrap_or_default();
    let reason = match config.misfire {
        crate::config::file::Misfire::Skip if late > ON_TIME => Some(format!(
            "missed by {}s and misfire = \"skip\"",
            late.as_secs()
        )),
        crate::config::file::Misfire::RunOnce if late > config.misfire_grace => Some(format!(
            "missed by {}s, more than misfire_grace ({}s)",
            late.as_secs(),
            config.misfire_grace.as_secs()
        )),
        _ => None,
    };
    match reason {
        Some(reason) => {
            skipped.push((latest, reason));
            DueFires { skipped, run: None }
        }
        None => DueFires {
            skipped,
            run: Some(latest),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    fn config(cron: &str, tz: &str) -> ScheduleConfig {
        ScheduleConfig {
            name: "s".into(),
            cron: cron.into(),
            timezone: tz.into(),
            tasks: vec![],
            enabled: true,
            allow_critical: false,
            max_runtime: None,
            misfire: Default::default(),
            misfire_grace: std::time::Duration::from_secs(3600),
            notify: Default::default(),
        }
    }

    fn schedule(cron: &str, tz: &str) -> Schedule {
        Schedule::new(&config(cron, tz)).unwrap()
    }

    #[test]
    fn misfires_run_the_latest_within_grace_or_skip_them_all() {
        use crate::config::file::Misfire;
        let hourly = schedule("0 * * * *", "UTC");
        let mut run_once = config("0 * * * *", "UTC");
        run_once.misfire_grace = std::time::Duration::from_secs(30 * 60);
        // Down from 09:30 to 12:10: fires at 10, 11 and 12 were missed.
        let due = due_fires(
            &hourly,
            &run_once,
            utc(2026, 5, 1, 9, 30),
            utc(2026, 5, 1, 12, 10),
        );
        assert_eq!(due.run, Some(utc(2026, 5, 1, 12, 0)));
        assert_eq!(
            due.skipped.iter().map(|(t, _)| *t).collect::<Vec<_>>(),
            vec![utc(2026, 5, 1, 10, 0), utc(2026, 5, 1, 11, 0)]
        );
        // 12:40: the latest is 40 minutes late, past the 30-minute grace.
        let late = due_fires(
            &hourly,
            &run_once,
            utc(2026, 5, 1, 11, 30),
            utc(2026, 5, 1, 12, 40),
        );
        assert_eq!(late.run, None);
        assert!(
            late.skipped[0].1.contains("misfire_grace"),
            "{:?}",
            late.skipped
        );
        // skip: only an on-time fire runs.
        let mut skip = config("0 * * * *", "UTC");
        skip.misfire = Misfire::Skip;
        assert_eq!(
            due_fires(
                &hourly,
                &skip,
                utc(2026, 5, 1, 11, 30),
                utc(2026, 5, 1, 12, 0,)
            )
            .run,
            Some(utc(2026, 5, 1, 12, 0))
        );
        let missed = due_fires(
            &hourly,
            &skip,
            utc(2026, 5, 1, 11, 30),
            utc(2026, 5, 1, 12, 5),
        );
        assert_eq!(missed.run, None);
        assert!(missed.skipped[0].1.contains("skip"));
        // Nothing due.
        assert_eq!(
            due_fires(
                &hourly,
                &run_once,
                utc(2026, 5, 1, 12, 0),
                utc(2026, 5, 1, 12, 59)
            ),
            DueFires {
                skipped: vec![],
                run: None
            }
        );
    }

    fn utc(y: i32, m: u32, d: u32, h: u32, min: u32) -> DateTime<Utc> {
        Utc.with_ymd_and_hms(y, m, d, h, min, 0).unwrap()
    }

    #[test]
    fn a_daily_0230_in_berlin_fires_once_on_both_daylight_saving_days() {
        let s = schedule("30 2 * * *", "Europe/Berlin");
        // Spring forward, 2026-03-29: 02:00 jumps to 03:00; fires at 03:00 CEST.
        let spring = s.upcoming(utc(2026, 3, 28, 12, 0), 3);
        assert_eq!(
            spring,
            vec![
                utc(2026, 3, 29, 1, 0),
                utc(2026, 3, 30, 0, 30),
                utc(2026, 3, 31, 0, 30)
            ]
        );
        // Fall back, 2026-10-25: 02:30 happens twice; fires once, at the first.
        let fall = s.upcoming(utc(2026, 10, 24, 12, 0), 3);
        assert_eq!(
            fall,
            vec![
                utc(2026, 10, 25, 0, 30),
                utc(2026, 10, 26, 1, 30),
                utc(2026, 10, 27, 1, 30)
            ]
        );
    }

    #[test]
    fn last_day_weekday_and_nth_weekday_are_understood() {
        assert_eq!(
            schedule("0 0 L * *", "UTC").next_after(utc(2026, 2, 1, 0, 0)),
            Some(utc(2026, 2, 28, 0, 0))
        );
        // The second Monday of March 2026 is the 9th.
        assert_eq!(
            schedule("0 0 * * 1#2", "UTC").next_after(utc(2026, 3, 1, 0, 0)),
            Some(utc(2026, 3, 9, 0, 0))
        );
        // The weekday nearest the 1st of August 2026 (a Saturday) is Monday the 3rd.
        assert_eq!(
            schedule("0 0 1W * *", "UTC").next_after(utc(2026, 7, 31, 12, 0)),
            Some(utc(2026, 8, 3, 0, 0))
        );
        // Six fields: seconds first.
        assert_eq!(
            schedule("30 0 0 * * *", "UTC").next_after(utc(2026, 1, 1, 0, 0)),
            Some(Utc.with_ymd_and_hms(2026, 1, 1, 0, 0, 30).unwrap())
        );
    }
}
