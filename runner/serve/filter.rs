//! Which runs `GET /runs` lists: the query parameters of the history view, read strictly.
//!
//! `runbook` (a runbook's name), `state` (one state, or several separated by commas),
//! `started_by` (who started it: a person's name, or `schedule:NAME`), `since` and `until`
//! (RFC 3339 times; a run counts from when it was created, `since` included, `until` not) and
//! `limit` (how many, newest first; 200 unless given). Every one is matched exactly, and an
//! empty value is no filter. A value that cannot be read, a parameter not listed here (a
//! misspelt `stat=failed` would otherwise list every run as if it had matched) and a `since`
//! after `until` are refused with an error naming the parameter, so a shared link never shows
//! a silently different list.

use chrono::{DateTime, Utc};
use runbook_journals::{Brief, RunState, RunSummary};

/// The parameters `GET /runs` knows.
pub const PARAMS: [&str; 6] = ["runbook", "state", "started_by", "since", "until", "limit"];

/// How many runs are listed unless `limit` says.
pub const DEFAULT_LIMIT: usize = 200;

/// A query parameter of `GET /runs` that cannot be used.
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub enum FilterError {
    /// A parameter `GET /runs` does not know.
    #[error("unknown query parameter `{0}` (known: {known})", known = PARAMS.join(", "))]
    Unknown(String),
    /// A parameter given twice (which one would count?).
    #[error("query parameter `{0}` is given more than once")]
    Repeated(String),
    /// A state that is not one.
    #[error("bad `state` value `{0}`: a run state is one of {states}", states = state_names().join(", "))]
    State(String),
    /// A time that is not RFC 3339.
    #[error(
        "bad `{param}` value `{value}`: give an RFC 3339 time such as 2026-03-01T09:30:00Z ({detail})"
    )]
    Time {
        /// `since` or `until`.
        param: &'static str,
        /// What was given.
        value: String,
        /// Why it cannot be read.
        detail: String,
    },
    /// A limit that is not a positive whole number.
    #[error("bad `limit` value `{0}`: give a whole number of runs, 1 or more")]
    Limit(String),
    /// A range that holds no time at all.
    #[error("`since` ({since}) is after `until` ({until}): no run can match")]
    Range {
        /// The start.
        since: String,
        /// The end.
        until: String,
    },
}

/// The runs to list.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RunFilter {
    /// The runbook's name.
    pub runbook: Option<String>,
    /// Any of these states (none: any state).
    pub states: Vec<RunState>,
    /// Who started it.
    pub started_by: Option<String>,
    /// Created at or after.
    pub since: Option<DateTime<Utc>>,
    /// Created before.
    pub until: Option<DateTime<Utc>>,
    /// At most this many.
    pub limit: usize,
}

impl Default for RunFilter {
    fn default() -> Self {
        Self {
            runbook: None,
            states: Vec::new(),
            started_by: None,
            since: None,
            until: None,
            limit: DEFAULT_LIMIT,
        }
    }
}

impl RunFilter {
    /// Reads the query's `name=value` pairs (already percent-decoded).
    pub fn parse(pairs: &[(String, String)]) -> Result<Self, FilterError> {
        let mut seen: Vec<&str> = Vec::new();
        let mut filter = Self::default();
        for (name, value) in pairs {
            let Some(param) = PARAMS.iter().find(|p| **p == name) else {
                return Err(FilterError::Unknown(name.clone()));
            };
            if seen.contains(param) {
                return Err(FilterError::Repeated(name.clone()));
            }
            seen.push(param);
            let value = value.trim();
            if value.is_empty() {
                continue;
            }
            match *param {
                "runbook" => filter.runbook = Some(value.to_owned()),
                "started_by" => filter.started_by = Some(value.to_owned()),
                "state" => {
                    filter.states = value
                        .split(',')
                        .map(str::trim)
                        .filter(|s| !s.is_empty())
                        .map(|s| parse_state(s).ok_or_else(|| FilterError::State(s.to_owned())))
                        .collect::<Result<_, _>>()?;
                }
                "since" => filter.since = Some(parse_time("since", value)?),
                "until" => filter.until = Some(parse_time("until", value)?),
                _ => {
                    filter.limit = value
                        .parse::<usize>()
                        .ok()
                        .filter(|n| *n > 0)
                        .ok_or_else(|| FilterError::Limit(value.to_owned()))?;
                }
            }
        }
        if let (Some(since), Some(until)) = (filter.since, filter.until)
            && since > until
        {
            return Err(FilterError::Range {
                since: since.to_rfc3339(),
                until: until.to_rfc3339(),
            });
        }
        Ok(filter)
    }

    /// Whether `run` is one to list.
    pub fn matches(&self, run: &RunSummary) -> bool {
        self.could_match(run.brief())
            && self
                .started_by
                .as_ref()
                .is_none_or(|w| *w == run.started_by)
            && self.since.is_none_or(|t| run.created_at >= t)
            && self.until.is_none_or(|t| run.created_at < t)
    }

    /// Whether a run may be one to list, from its state and runbook alone: the journal reads
    /// back the summaries of such archived runs only.
    pub fn could_match(&self, run: Brief<'_>) -> bool {
        self.runbook.as_ref().is_none_or(|b| b == run.runbook)
            && (self.states.is_empty() || self.states.contains(&run.state))
    }

    /// Whether the filter asks for unfinished runs only (states given, none terminal): the
    /// journal lists those without reading the finished runs it keeps apart.
    pub fn unfinished_only(&self) -> bool {
        !self.states.is_empty() && self.states.iter().all(|s| !s.is_terminal())
    }
}

/// The query of `GET /runs` that lists every unfinished run, whatever their number (what
/// `runbook status` asks a holder for): each state that is not terminal, no limit to speak of.
pub fn unfinished_query() -> String {
    let states: Vec<&str> = ALL_STATES
        .iter()
        .filter(|s| !s.is_terminal())
        .map(|s| s.as_str())
        .collect();
    format!("state={}&limit={}", states.join(","), usize::MAX)
}

/// Every run state, by the name the API and the command line use.
fn state_names() -> Vec<&'static str> {
    ALL_STATES.iter().map(|s| s.as_str()).collect()
}

const ALL_STATES: [RunState; 9] = [
    RunState::Running,
    RunState::Waiting,
    RunState::Sleeping,
    RunState::Interrupted,
    RunState::NeedsAttention,
    RunState::Paused,
    RunState::Succeeded,
    RunState::Failed,
    RunState::Aborted,
];

fn parse_state(word: &str) -> Option<RunState> {
    ALL_STATES.iter().copied().find(|s| s.as_str() == word)
}

fn parse_time(param: &'static str, value: &str) -> Result<DateTime<Utc>, FilterError> {
    DateTime::parse_from_rfc3339(value)
        .map(|t| t.with_timezone(&Utc))
        .map_err(|e| FilterError::Time {
            param,
            value: value.to_owned(),
            detail: e.to_string(),
        })
}

#[cfg(test)]
mod tests {
    use chrono::TimeZone as _;
    use runbook_journals::RunId;

    use super::*;

    fn q(pairs: &[(&str, &str)]) -> Result<RunFilter, FilterError> {
        let owned: Vec<(String, String)> = pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect();
        RunFilter::parse(&owned)
    }

    fn run(runbook: &str, state: RunState, by: &str, minute: u32) -> RunSummary {
        let at = Utc.with_ymd_and_hms(2026, 3, 1, 9, minute, 0).unwrap();
        RunSummary {
            runbook: runbook.into(),
            state,
            started_by: by.into(),
            created_at: at,
            updated_at: at,
            ..RunSummary::empty(RunId::new(), at)
        }
    }

    #[test]
    fn every_state_name_is_known_to_the_filter() {
        // A state added to the journal must be added here too, or the history cannot show it.
        for state in ALL_STATES {
            assert_eq!(parse_state(state.as_str()), Some(state));
            let json = serde_json::to_value(state).unwrap();
            assert_eq!(json.as_str(), Some(state.as_str()));
        }
        assert_eq!(state_names().len(), 9);
    }

    #[test]
    fn the_unfinished_query_asks_for_every_unfinished_run_and_only_those() {
        let pairs: Vec<(String, String)> = unfinished_query()
            .split('&')
            .map(|p| {
                let (k, v) = p.split_once('=').unwrap();
                (k.to_owned(), v.to_owned())
            })
            .collect();
        let f = RunFilter::parse(&pairs).unwrap();
        assert!(f.unfinished_only());
        assert_eq!(f.limit, usize::MAX, "no unfinished run is cut off");
        for state in ALL_STATES {
            let r = run("any", state, "alice", 0);
            assert_eq!(f.matches(&r), !state.is_terminal(), "{state:?}");
        }
        // Which filters may skip the finished runs.
        let rows: [(&[(&str, &str)], bool); 5] = [
            (&[], false),
            (&[("state", "waiting")], true),
            (&[("state", "waiting,paused"), ("runbook", "x")], true),
            (&[("state", "waiting,failed")], false),
            (&[("state", "succeeded")], false),
        ];
        for (pairs, unfinished) in rows {
            assert_eq!(q(pairs).unwrap().unfinished_only(), unfinished, "{pairs:?}");
        }
    }

    #[test]
    fn a_run_the_filter_matches_is_never_ruled_out_by_its_state_and_runbook() {
        let filters: [&[(&str, &str)]; 5] = [
            &[],
            &[("state", "failed")],
            &[("state", "failed,waiting"), ("runbook", "deploy")],
            &[("runbook", "deploy")],
            &[("started_by", "alice"), ("state", "succeeded")],
        ];
        for pairs in filters {
            let f = q(pairs).unwrap();
            for state in ALL_STATES {
                for book in ["deploy", "rotate"] {
                    let r = run(book, state, "alice", 0);
                    assert!(
                        !f.matches(&r) || f.could_match(r.brief()),
                        "{pairs:?} {r:?}"
                    );
                    // Only a filter on states or runbooks rules a run out before its summary.
                    let named = pairs.iter().any(|(k, _)| *k == "state" || *k == "runbook");
                    assert!(named || f.could_match(r.brief()), "{pairs:?} {r:?}");
                }
            }
        }
        let brief = |state, runbook| Brief { state, runbook };
        let failed = q(&[("state", "failed")]).unwrap();
        assert!(failed.could_match(brief(RunState::Failed, "x")));
        assert!(!failed.could_match(brief(RunState::Succeeded, "x")));
        let deploy = q(&[("runbook", "deploy"), ("started_by", "bob")]).unwrap();
        assert!(deploy.could_match(brief(RunState::Failed, "deploy")));
        assert!(!deploy.could_match(brief(RunState::Failed, "deploy-2")));
    }

    #[test]
    fn each_parameter_narrows_the_list_and_they_combine() {
        let runs = [
            run("deploy", RunState::Failed, "alice", 0),
            run("deploy", RunState::Succeeded, "bob", 10),
            run("rotate", RunState::Failed, "schedule:nightly", 20),
            run("deploy", RunState::Waiting, "alice", 30),
        ];
        let pick = |pairs: &[(&str, &str)]| -> Vec<usize> {
            let f = q(pairs).unwrap();
            (0..runs.len()).filter(|i| f.matches(&runs[*i])).collect()
        };
        assert_eq!(pick(&[]), [0, 1, 2, 3]);
        assert_eq!(pick(&[("runbook", "deploy")]), [0, 1, 3]);
        assert_eq!(pick(&[("state", "failed")]), [0, 2]);
        assert_eq!(pick(&[("state", "failed, waiting")]), [0, 2, 3]);
        assert_eq!(pick(&[("started_by", "schedule:nightly")]), [2]);
        assert_eq!(pick(&[("started_by", "ALICE")]), Vec::<usize>::new());
        // `since` is included, `until` is not; other time zones are the same instants.
        assert_eq!(pick(&[("since", "2026-03-01T09:10:00Z")]), [1, 2, 3]);
        assert_eq!(pick(&[("until", "2026-03-01T10:20:00+01:00")]), [0, 1]);
        assert_eq!(
            pick(&[
                ("runbook", "deploy"),
                ("state", "failed,waiting"),
                ("started_by", "alice"),
                ("since", "2026-03-01T09:05:00Z"),
                ("until", "2026-03-01T09:31:00Z"),
            ]),
            [3]
        );
        // Empty values are no filter (an untouched field of the page's form).
        assert_eq!(
            pick(&[("runbook", ""), ("state", ""), ("since", " ")]),
            [0, 1, 2, 3]
        );
        assert_eq!(q(&[("limit", "3")]).unwrap().limit, 3);
        assert_eq!(q(&[]).unwrap().limit, DEFAULT_LIMIT);
    }

    #[test]
    fn bad_values_are_refused_naming_the_parameter() {
        let rows: [(&[(&str, &str)], &str); 8] = [
            (
                &[("state", "done")],
                "bad `state` value `done`: a run state is one of running, waiting, sleeping, interrupted, needs-attention, paused, succeeded, failed, aborted",
            ),
            (
                &[("state", "failed,Succeeded")],
                "bad `state` value `Succeeded`: a run state is one of running, waiting, sleeping, interrupted, needs-attention, paused, succeeded, failed, aborted",
            ),
            (
                &[("since", "yesterday")],
                "bad `since` value `yesterday`: give an RFC 3339 time such as 2026-03-01T09:30:00Z (premature end of input)",
            ),
            (
                &[("until", "2026-03-01T09:30")],
                "bad `until` value `2026-03-01T09:30`: give an RFC 3339 time such as 2026-03-01T09:30:00Z (premature end of input)",
            ),
            (
                &[("limit", "0")],
                "bad `limit` value `0`: give a whole number of runs, 1 or more",
            ),
            (
                &[("limit", "ten")],
                "bad `limit` value `ten`: give a whole number of runs, 1 or more",
            ),
            (
                &[("stat", "failed")],
                "unknown query parameter `stat` (known: runbook, state, started_by, since, until, limit)",
            ),
            (
                &[
                    ("since", "2026-03-02T00:00:00Z"),
                    ("until", "2026-03-01T00:00:00Z"),
                ],
                "`since` (2026-03-02T00:00:00+00:00) is after `until` (2026-03-01T00:00:00+00:00): no run can match",
            ),
        ];
        for (pairs, want) in rows {
            assert_eq!(q(pairs).unwrap_err().to_string(), want, "{pairs:?}");
        }
        assert_eq!(
            q(&[("state", "failed"), ("state", "waiting")])
                .unwrap_err()
                .to_string(),
            "query parameter `state` is given more than once"
        );
    }
}
