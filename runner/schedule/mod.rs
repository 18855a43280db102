//! Schedules: when a runbook runs by itself. A schedule is declared in a runbook
//! (`schedule:`) or in a schedules file, and fired by `runbook serve`; its fire times are
//! journaled so that a restart neither fires twice nor silently misses.

pub mod file;
pub mod load;
pub mod scheduler;
pub mod state;

use std::str::FromStr;
use std::time::Duration;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::source::Pos;

/// What happens when a fire comes while a run of the same schedule is unfinished.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Overlap {
    /// The fire is skipped (and recorded as skipped).
    Skip,
    /// The fire waits until the unfinished run ends.
    Queue,
    /// The run starts anyway (its `lock` may still refuse it).
    Allow,
}

/// What happens to fires missed while nothing was serving.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum CatchUp {
    /// Missed fires are recorded as missed and not run.
    None,
    /// The latest missed fire runs once; earlier ones are recorded as missed.
    Last,
    /// Every missed fire within the window runs, oldest first.
    All,
}

/// A schedule as declared (in a runbook or a schedules file), validated.
#[derive(Clone, Debug)]
pub struct ScheduleSpec {
    /// Its name, if given (a runbook's single schedule is named after the runbook).
    pub name: Option<String>,
    /// The parsed cron expression.
    pub cron: cron::Schedule,
    /// The cron expression as written.
    pub cron_text: String,
    /// The time zone the expression is read in.
    pub timezone: chrono_tz::Tz,
    /// Parameter values for the runs.
    pub params: Map<String, Value>,
    /// The overlap policy.
    pub overlap: Overlap,
    /// The catch-up policy.
    pub catch_up: CatchUp,
    /// How far back `catch_up: all` reaches.
    pub window: Duration,
    /// Where it is declared.
    pub pos: Pos,
}

/// A schedule that `serve` fires: a name, the runbook to run, and its spec.
#[derive(Clone, Debug)]
pub struct Schedule {
    /// Unique among the schedules served.
    pub name: String,
    /// The runbook's name or origin.
    pub runbook: String,
    /// When and how.
    pub spec: ScheduleSpec,
}

impl Schedule {
    /// The first fire strictly after `t`.
    pub fn next_after(&self, t: DateTime<Utc>) -> Option<DateTime<Utc>> {
        self.spec
            .cron
            .after(&t.with_timezone(&self.spec.timezone))
            .next()
            .map(|d| d.with_timezone(&Utc))
    }

    /// Every fire in `(from, to]`, at most `limit` of them (the latest ones).
    pub fn fires_between(
        &self,
        from: DateTime<Utc>,
        to: DateTime<Utc>,
        limit: usize,
    ) -> Vec<DateTime<Utc>> {
        let mut out = std::collections::VecDeque::new();
        for fire in self.successive(from).take_while(|f| *f <= to) {
            out.push_back(fire);
            if out.len() > limit {
                out.pop_front();
            }
        }
        out.into()
    }

    /// The next `n` fire times after `t`.
    pub fn upcoming(&self, t: DateTime<Utc>, n: usize) -> Vec<DateTime<Utc>> {
        self.successive(t).take(n).collect()
    }

    /// The fire times after `t`, one after another (each the next after the one before, so a
    /// time zone's repeated hour gives one fire).
    fn successive(&self, t: DateTime<Utc>) -> impl Iterator<Item = DateTime<Utc>> + '_ {
        std::iter::successors(self.next_after(t), |f| self.next_after(*f))
    }

    /// The parameters as `name=value` pairs, the way `-p` gives them.
    pub fn param_pairs(&self) -> Vec<(String, String)> {
        crate::params::pairs_from_json(&self.spec.params)
    }
}

/// A schedule with its journaled state and next fire times, for `schedule list` and the API;
/// the runs its recent fires started are looked up in `journal` for their state.
pub fn status(
    s: &Schedule,
    st: &state::ScheduleState,
    journal: &dyn runbook_journals::Journal,
) -> crate::wire::ScheduleStatus {
    crate::wire::ScheduleStatus {
        name: s.name.clone(),
        runbook: crate::library::display_origin(&s.runbook),
        cron: s.spec.cron_text.clone(),
        timezone: s.spec.timezone.name().to_owned(),
        overlap: s.spec.overlap,
        catch_up: s.spec.catch_up,
        paused: st.paused,
        last_fire: st.last_fire,
        last_run: st.last_run,
        queued: st.queued.clone(),
        next: if st.paused {
            Vec::new()
        } else {
            s.upcoming(Utc::now(), 3)
        },
        history: st
            .history
            .iter()
            .rev()
            .take(20)
            .map(|fired| crate::wire::RecentFire {
                run_state: fired
                    .run
                    .and_then(|run| journal.summary(run).ok())
                    .map(|summary| summary.state),
                fired: fired.clone(),
            })
            .collect(),
    }
}

/// Parses a cron expression: 5 fields (minute hour day-of-month month day-of-week), or 6–7
/// with seconds first (and a year last), or a macro such as `@hourly`.
pub fn parse_cron(text: &str) -> Result<cron::Schedule, String> {
    let trimmed = text.trim();
    let fields: Vec<&str> = trimmed.split_whitespace().collect();
    let full = if trimmed.starts_with('@') {
        trimmed.to_owned()
    } else {
        // The day of week is the 5th field, or the 6th with seconds first.
        let (seconds, dow) = match fields.len() {
            5 => ("0 ", 4),
            6 | 7 => ("", 5),
            n => {
                return Err(format!(
                    "a cron expression has 5 fields (minute hour day-of-month month day-of-week), or 6 or 7 with seconds first; this one has {n}"
                ));
            }
        };
        let mut fields: Vec<String> = fields.iter().map(|f| (*f).to_owned()).collect();
        fields[dow] = weekdays(&fields[dow])?;
        format!("{seconds}{}", fields.join(" "))
    };
    cron::Schedule::from_str(&full).map_err(|e| format!("invalid cron expression: {e}"))
}

/// Rewrites a day-of-week field from cron's numbering (0–7, 0 and 7 both Sunday, 1 Monday)
/// into the `cron` crate's (1 Sunday … 7 Saturday): `1-5` is Monday to Friday, as in every
/// crontab. Names (`MON-FRI`), `*` and `?` are left as they are; numbers, ranges and steps
/// become the list of the days they name.
fn weekdays(field: &str) -> Result<String, String> {
    if field == "*" || field == "?" || field.chars().any(|c| c.is_ascii_alphabetic()) {
        return Ok(field.to_owned());
    }
    let number = |t: &str| -> Result<u32, String> {
        t.parse::<u32>()
            .ok()
            .filter(|n| *n <= 7)
            .ok_or_else(|| format!("invalid cron expression: day of week `{t}` is not 0–7 (0 and 7 are Sunday) or a name such as MON"))
    };
    let mut days = std::collections::BTreeSet::new();
    for item in field.split(',') {
        let (range, step) = match item.split_once('/') {
            Some((range, step)) => {
                let step = step.parse::<u32>().ok().filter(|s| *s > 0).ok_or_else(|| {
                    format!("invalid cron expression: step `{step}` in the day of week")
                })?;
                (range, step)
            }
            None => (item, 1),
        };
        let (first, last) = match range {
            "*" => (0, 6),
            r => match r.split_once('-') {
                Some((a, b)) => (number(a)?, number(b)?),
                None if step > 1 => (number(r)?, 6),
                None => (number(r)?, number(r)?),
            },
        };
        if first > last {
            return Err(format!(
                "invalid cron expression: the day-of-week range `{range}` runs backwards"
            ));
        }
        days.extend((first..=last).step_by(step as usize).map(|d| d % 7 + 1));
    }
    Ok(days
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join(","))
}

/// Parses a time zone name such as `UTC` or `Europe/Berlin`.
pub fn parse_timezone(text: &str) -> Result<chrono_tz::Tz, String> {
    text.trim().parse::<chrono_tz::Tz>().map_err(|_| {
        format!("unknown time zone `{text}` (use an IANA name such as UTC or Europe/Berlin)")
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone as _;

    #[test]
    fn day_of_week_numbers_are_crontabs() {
        for (field, days) in [
            ("1-5", "2,3,4,5,6"),
            ("0", "1"),
            ("7", "1"),
            ("6,7", "1,7"),
            ("5-7", "1,6,7"),
            ("*/2", "1,3,5,7"),
            ("1-5/2", "2,4,6"),
            ("1/3", "2,5"),
            ("MON-FRI", "MON-FRI"),
            ("*", "*"),
        ] {
            assert_eq!(weekdays(field).unwrap(), days, "{field}");
        }
        for bad in ["8", "5-2", "1/0", "3-"] {
            assert!(weekdays(bad).is_err(), "{bad}");
        }
        // Monday to Friday at 04:30: the next fires after Wednesday 2026-12-02 noon.
        let s = schedule("30 4 * * 1-5", "UTC");
        let after = chrono::Utc.with_ymd_and_hms(2026, 12, 2, 12, 0, 0).unwrap();
        let next: Vec<String> = s
            .fires_between(after, after + chrono::Duration::days(7), 10)
            .iter()
            .map(|f| f.format("%a").to_string())
            .collect();
        assert_eq!(next, ["Thu", "Fri", "Mon", "Tue", "Wed"]);
        let sunday = schedule("0 0 * * 0", "UTC");
        let next = sunday.next_after(after).unwrap();
        assert_eq!(next.format("%a %d").to_string(), "Sun 06");
    }

    fn schedule(cron: &str, tz: &str) -> Schedule {
        Schedule {
            name: "s".into(),
            runbook: "r".into(),
            spec: ScheduleSpec {
                name: None,
                cron: parse_cron(cron).unwrap(),
                cron_text: cron.into(),
                timezone: parse_timezone(tz).unwrap(),
                params: Map::new(),
                overlap: Overlap::Skip,
                catch_up: CatchUp::None,
                window: Duration::from_secs(86400),
                pos: Pos::default(),
            },
        }
    }

    #[test]
    fn five_fields_mean_minutes_and_six_mean_seconds() {
        let s = schedule("*/15 * * * *", "UTC");
        let t = Utc.with_ymd_and_hms(2026, 11, 21, 10, 7, 30).unwrap();
        assert_eq!(
            s.next_after(t),
            Some(Utc.with_ymd_and_hms(2026, 11, 21, 10, 15, 0).unwrap())
        );
        let s = schedule("*/2 * * * * *", "UTC");
        assert_eq!(s.next_after(t), Some(t + chrono::Duration::seconds(2)));
    }

    #[test]
    fn time_zones_shift_the_fire_times() {
        let s = schedule("0 3 * * *", "Europe/Berlin");
        let t = Utc.with_ymd_and_hms(2026, 11, 21, 0, 0, 0).unwrap();
        // 03:00 in Berlin in winter is 02:00 UTC.
        assert_eq!(
            s.next_after(t),
            Some(Utc.with_ymd_and_hms(2026, 11, 21, 2, 0, 0).unwrap())
        );
    }

    #[test]
    fn fires_between_keeps_the_latest() {
        let s = schedule("*/2 * * * * *", "UTC");
        let t = Utc.with_ymd_and_hms(2026, 11, 21, 10, 0, 0).unwrap();
        let fires = s.fires_between(t, t + chrono::Duration::seconds(10), 3);
        assert_eq!(
            fires,
            [6, 8, 10]
                .map(|s| t + chrono::Duration::seconds(s))
                .to_vec()
        );
    }

    #[test]
    fn bad_expressions_and_zones_say_why() {
        assert!(parse_cron("* * *").unwrap_err().contains("has 3"));
        assert!(parse_cron("61 * * * *").is_err());
        assert!(
            parse_timezone("Mars/Olympus")
                .unwrap_err()
                .contains("unknown time zone")
        );
        assert!(parse_cron("@hourly").is_ok());
    }
}
