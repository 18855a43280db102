//! Prometheus metrics for `runbook serve`, in the `OpenMetrics` text format.
//!
//! [`Metrics`] is an engine [`Observer`]: step outcomes are counted as their records are
//! committed. Run states are not tracked incrementally — [`Metrics::render`] counts them from
//! the journal's summaries at scrape time, so they are right after a restart and for runs
//! that other processes changed. Schedules report their fires through
//! [`Metrics::schedule_fired`], and the notifier's counters are copied in with
//! [`Metrics::set_notifications`].
//!
//! | metric | type | labels |
//! | --- | --- | --- |
//! | `runbook_runs` | gauge | `state`: all eight run states, 0 when none |
//! | `runbook_step_duration_seconds` | histogram | `kind`, `outcome` (`succeeded`, `failed`) |
//! | `runbook_steps_total` | counter | `kind`, `outcome` |
//! | `runbook_schedule_lag_seconds` | gauge | `schedule`: how late its last fire was |
//! | `runbook_schedule_fires_total` | counter | `schedule`, `outcome` (`started`, `skipped`, `queued`, `refused`, `missed`) |
//! | `runbook_notifications_total` | counter | `outcome` (`delivered`, `failed`) |
//! | `runbook_journal_read_errors_total` | counter | — |
//!
//! A step counts once, when it ends: its final attempt's duration, `succeeded` or `failed`
//! (a failure followed by a retry is not counted; a tolerated failure is `failed`). Its kind
//! comes from the `StepStarted` this process saw for the same run and path; a step that
//! started in another process (a gate approved after a restart) counts as kind `unknown`.
//! When the journal cannot be read at scrape time, `runbook_runs` has no samples (rather than
//! stale ones) and the read-error counter goes up.

use std::collections::HashMap;
use std::sync::atomic::AtomicU64;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::{Registry, Unit};
use runbook_journals::{Event, Journal, Record, RunId, RunState};

use crate::engine::log::Observer;

/// The `Content-Type` of [`Metrics::render`]'s text, which Prometheus negotiates.
pub const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// Steps started but not yet ended that are remembered for their kind; past this, new ones
/// are counted as kind `unknown` when they end.
pub const MAX_OPEN_STEPS: usize = 10_000;

/// Every run state, in the order they are listed.
const STATES: [RunState; 9] = [
    RunState::Running,
    RunState::Waiting,
    RunState::Sleeping,
    RunState::Interrupted,
    RunState::NeedsAttention,
    RunState::Succeeded,
    RunState::Failed,
    RunState::Aborted,
    RunState::Paused,
];

/// Upper bounds of the step duration buckets, in seconds: from a quick HTTP call to an
/// hour-long backup or wait.
const DURATION_BUCKETS: [f64; 16] = [
    0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 600.0, 1800.0,
    3600.0,
];

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct StateLabels {
    state: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct StepLabels {
    kind: String,
    outcome: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ScheduleLabels {
    schedule: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct FireLabels {
    schedule: String,
    outcome: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct OutcomeLabels {
    outcome: &'static str,
}

fn duration_histogram() -> Histogram {
    Histogram::new(DURATION_BUCKETS)
}

/// The server's metrics. See the module documentation.
#[derive(Debug)]
pub struct Metrics {
    registry: Registry,
    runs: Family<StateLabels, Gauge>,
    step_duration: Family<StepLabels, Histogram, fn() -> Histogram>,
    steps: Family<StepLabels, Counter>,
    schedule_lag: Family<ScheduleLabels, Gauge<f64, AtomicU64>>,
    schedule_fires: Family<FireLabels, Counter>,
    notifications: Family<OutcomeLabels, Counter>,
    damaged: Gauge,
    journal_commits: Counter,
    journal_syncs: Counter,
    /// The kind of each step started and not yet ended, by run and path.
    open_steps: Mutex<HashMap<(RunId, String), String>>,
    /// Serializes renders (they set the run gauges, then encode) and notification updates.
    render: Mutex<()>,
}

impl Metrics {
    /// Metrics with every family registered and nothing observed yet.
    pub fn new() -> Arc<Self> {
        let runs = Family::<StateLabels, Gauge>::default();
        let step_duration =
            Family::<StepLabels, Histogram, fn() -> Histogram>::new_with_constructor(
                duration_histogram,
            );
        let steps = Family::<StepLabels, Counter>::default();
        let schedule_lag = Family::<ScheduleLabels, Gauge<f64, AtomicU64>>::default();
        let schedule_fires = Family::<FireLabels, Counter>::default();
        let notifications = Family::<OutcomeLabels, Counter>::default();
        let damaged = Gauge::default();
        let journal_commits = Counter::default();
        let journal_syncs = Counter::default();

        let mut registry = Registry::default();
        registry.register(
            "runbook_runs",
            "Runs in the journal, by state",
            runs.clone(),
        );
        registry.register_with_unit(
            "runbook_step_duration",
            "Wall time of a step's final attempt, by step kind and outcome",
            Unit::Seconds,
            step_duration.clone(),
        );
        registry.register(
            "runbook_steps",
            "Steps that ended, by step kind and outcome",
            steps.clone(),
        );
        registry.register_with_unit(
            "runbook_schedule_lag",
            "How late a schedule's last fire was, after its due time",
            Unit::Seconds,
            schedule_lag.clone(),
        );
        registry.register(
            "runbook_schedule_fires",
            "Schedule fires, by schedule and outcome",
            schedule_fires.clone(),
        );
        registry.register(
            "runbook_notifications",
            "Webhook notifications, by outcome (one per message and webhook)",
            notifications.clone(),
        );
        registry.register(
            "runbook_journal_damaged_runs",
            "Runs whose journal lost or changed records since they were durable",
            damaged.clone(),
        );
        registry.register(
            "runbook_journal_commits",
            "Journal writes made durable since serve started",
            journal_commits.clone(),
        );
        registry.register(
            "runbook_journal_syncs",
            "Syncs that made journal writes durable since serve started (one fdatasync of the \
             database each; group commit shares one among concurrent writes)",
            journal_syncs.clone(),
        );

        for state in STATES {
            let _ = runs.get_or_create(&StateLabels {
                state: state.as_str(),
            });
        }
        for outcome in ["delivered", "failed"] {
            let _ = notifications.get_or_create(&OutcomeLabels { outcome });
        }

        Arc::new(Self {
            registry,
            runs,
            step_duration,
            steps,
            schedule_lag,
            schedule_fires,
            notifications,
            damaged,
            journal_commits,
            journal_syncs,
            open_steps: Mutex::new(HashMap::new()),
            render: Mutex::new(()),
        })
    }

    /// The metrics in the `OpenMetrics` text format (serve it with [`CONTENT_TYPE`]), with the
    /// run gauges counted from `journal` now.
    pub fn render(&self, journal: &dyn Journal) -> String {
        let _serial = self.render.lock().unwrap_or_else(PoisonError::into_inner);
        let counts = journal.state_counts();
        for state in STATES {
            self.runs
                .get_or_create(&StateLabels {
                    state: state.as_str(),
                })
                .set(i64::try_from(counts.get(&state).copied().unwrap_or(0)).unwrap_or(i64::MAX));
        }
        self.damaged
            .set(i64::try_from(journal.problems().len()).unwrap_or(i64::MAX));
        // The journal counts; the counters follow it (renders are serialized, so this is exact).
        let stats = journal.stats();
        self.journal_commits
            .inc_by(stats.commits.saturating_sub(self.journal_commits.get()));
        self.journal_syncs
            .inc_by(stats.syncs.saturating_sub(self.journal_syncs.get()));
        let mut text = String::new();
        // Writing into a String cannot fail.
        let _ = encode(&mut text, &self.registry);
        text
    }

    /// Records that schedule `schedule` fired `lag` after its due time with `outcome`
    /// (`started`, `skipped`, `queued`, `refused` or `missed`).
    pub fn schedule_fired(&self, schedule: &str, outcome: &str, lag: Duration) {
        self.schedule_lag
            .get_or_create(&ScheduleLabels {
                schedule: schedule.to_owned(),
            })
            .set(lag.as_secs_f64());
        self.schedule_fires
            .get_or_create(&FireLabels {
                schedule: schedule.to_owned(),
                outcome: outcome.to_owned(),
            })
            .inc();
    }

    /// Sets the notification counters to the notifier's totals (call it before rendering);
    /// totals lower than what was set before are ignored, as counters never go down.
    pub fn set_notifications(&self, delivered: u64, failed: u64) {
        let _serial = self.render.lock().unwrap_or_else(PoisonError::into_inner);
        for (outcome, total) in [("delivered", delivered), ("failed", failed)] {
            let counter = self.notifications.get_or_create(&OutcomeLabels { outcome });
            let current = counter.get();
            if total > current {
                counter.inc_by(total - current);
            }
        }
    }

    fn open_steps(&self) -> std::sync::MutexGuard<'_, HashMap<(RunId, String), String>> {
        self.open_steps
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    fn step_ended(&self, run: RunId, path: &str, outcome: &'static str, duration_ms: u64) {
        let kind = self
            .open_steps()
            .remove(&(run, path.to_owned()))
            .unwrap_or_else(|| "unknown".to_owned());
        let labels = StepLabels { kind, outcome };
        self.step_duration
            .get_or_create(&labels)
            .observe(duration_ms as f64 / 1000.0);
        self.steps.get_or_create(&labels).inc();
    }
}

impl Observer for Metrics {
    fn record(&self, run: RunId, record: &Record) {
        match &record.event {
            Event::StepStarted { path, kind, .. } => {
                let mut open = self.open_steps();
                let key = (run, path.clone());
                if open.len() < MAX_OPEN_STEPS || open.contains_key(&key) {
                    open.insert(key, kind.clone());
                }
            }
            Event::StepSucceeded {
                path, duration_ms, ..
            } => self.step_ended(run, path, "succeeded", *duration_ms),
            Event::StepFailed {
                path,
                duration_ms,
                retry_at: None,
                ..
            } => self.step_ended(run, path, "failed", *duration_ms),
            // The attempt failed and another follows: it starts again with its own
            // StepStarted; an interrupted or orphaned step is not an outcome.
            Event::StepFailed { path, .. }
            | Event::StepInterrupted { path, .. }
            | Event::AttentionNeeded { path, .. } => {
                self.open_steps().remove(&(run, path.clone()));
            }
            // The run stopped here: none of its steps is still going in this process.
            Event::StateChanged { state, .. }
                if state.is_terminal()
                    || matches!(state, RunState::Interrupted | RunState::NeedsAttention) =>
            {
                self.open_steps().retain(|(r, _), _| *r != run);
            }
            _ => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::Utc;
    use runbook_journals::{MemoryJournal, RunSummary};
    use serde_json::json;

    fn record(event: Event) -> Record {
        Record {
            seq: 1,
            at: Utc::now(),
            event,
        }
    }

    fn started(path: &str, kind: &str, attempt: u32) -> Record {
        record(Event::StepStarted {
            path: path.into(),
            kind: kind.into(),
            attempt,
            idempotent: true,
            intent: json!({}),
        })
    }

    fn succeeded(path: &str, ms: u64) -> Record {
        record(Event::StepSucceeded {
            path: path.into(),
            attempt: 1,
            output: json!({}),
            duration_ms: ms,
        })
    }

    fn failed(path: &str, ms: u64, retry: bool) -> Record {
        record(Event::StepFailed {
            path: path.into(),
            attempt: 1,
            error: "boom".into(),
            output: None,
            retry_at: retry.then(Utc::now),
            duration_ms: ms,
            tolerated: false,
        })
    }

    fn state(state: RunState) -> Event {
        Event::StateChanged {
            state,
            reason: None,
        }
    }

    /// A run's first event.
    fn run_started() -> Event {
        Event::RunStarted(
            // Through serde, so that fields the journal adds later take their defaults.
            serde_json::from_value(json!({
                "runbook": "rotate", "params": {}, "sources": [], "lock": null,
                "started_by": "test", "engine_version": "test"
            }))
            .unwrap(),
        )
    }

    /// A journal holding one run per entry of `states`, each moved to its state.
    fn journal(states: &[RunState]) -> MemoryJournal {
        let journal = MemoryJournal::new();
        for s in states {
            let run = RunId::new();
            journal
                .create(run, None, &[run_started(), state(RunState::Running)])
                .unwrap();
            if *s != RunState::Running {
                journal.append(run, 2, &[state(*s)]).unwrap();
            }
        }
        journal
    }

    /// Parses `text` as Prometheus exposition and returns its samples.
    fn parse(text: &str) -> Vec<prometheus_parse::Sample> {
        assert!(text.ends_with("# EOF\n"), "{text}");
        let lines = text.lines().map(|l| Ok(l.to_owned()));
        prometheus_parse::Scrape::parse(lines)
            .unwrap_or_else(|e| panic!("does not parse: {e}\n{text}"))
            .samples
    }

    /// The value of the sample `name` whose labels include `labels`.
    fn value(samples: &[prometheus_parse::Sample], name: &str, labels: &[(&str, &str)]) -> f64 {
        let matching: Vec<_> = samples
            .iter()
            .filter(|s| s.metric == name && labels.iter().all(|(k, v)| s.labels.get(k) == Some(*v)))
            .collect();
        assert_eq!(matching.len(), 1, "{name} {labels:?}: {matching:#?}");
        match &matching[0].value {
            prometheus_parse::Value::Counter(v)
            | prometheus_parse::Value::Gauge(v)
            | prometheus_parse::Value::Untyped(v) => *v,
            other => panic!("{name}: unexpected value {other:?}"),
        }
    }

    /// [`value`] for a whole number.
    fn count(samples: &[prometheus_parse::Sample], name: &str, labels: &[(&str, &str)]) -> u64 {
        let v = value(samples, name, labels);
        assert!(v >= 0.0 && (v - v.round()).abs() < 1e-9, "{name}: {v}");
        v.round() as u64
    }

    /// The histogram sample `name` with `labels`: (count, sum, buckets as (le, count)).
    fn histogram(
        samples: &[prometheus_parse::Sample],
        name: &str,
        labels: &[(&str, &str)],
    ) -> (u64, f64, Vec<(f64, f64)>) {
        let matching: Vec<_> = samples
            .iter()
            .filter(|s| s.metric == name && labels.iter().all(|(k, v)| s.labels.get(k) == Some(*v)))
            .collect();
        assert_eq!(matching.len(), 1, "{name} {labels:?}: {matching:#?}");
        let prometheus_parse::Value::Histogram(buckets) = &matching[0].value else {
            panic!("{name} is not a histogram: {:?}", matching[0].value);
        };
        let buckets: Vec<(f64, f64)> = buckets.iter().map(|b| (b.less_than, b.count)).collect();
        let part = |suffix: &str| value(samples, &format!("{name}_{suffix}"), labels);
        (part("count") as u64, part("sum"), buckets)
    }

    #[test]
    fn every_run_state_is_listed() {
        // A new state makes this match fail to compile: add it to STATES as well.
        let index = |state: RunState| match state {
            RunState::Running => 0,
            RunState::Waiting => 1,
            RunState::Sleeping => 2,
            RunState::Interrupted => 3,
            RunState::NeedsAttention => 4,
            RunState::Succeeded => 5,
            RunState::Failed => 6,
            RunState::Aborted => 7,
            RunState::Paused => 8,
        };
        for (i, state) in STATES.into_iter().enumerate() {
            assert_eq!(index(state), i);
        }
    }

    #[test]
    fn run_states_are_counted_from_the_journal_and_all_eight_are_present() {
        let metrics = Metrics::new();
        let journal = journal(&[
            RunState::Running,
            RunState::Waiting,
            RunState::Waiting,
            RunState::Sleeping,
            RunState::Succeeded,
            RunState::Succeeded,
            RunState::Succeeded,
            RunState::Failed,
        ]);
        let text = metrics.render(&journal);
        let samples = parse(&text);
        let expected = [
            ("running", 1),
            ("waiting", 2),
            ("sleeping", 1),
            ("interrupted", 0),
            ("needs-attention", 0),
            ("succeeded", 3),
            ("failed", 1),
            ("aborted", 0),
        ];
        for (state, n) in expected {
            assert_eq!(
                count(&samples, "runbook_runs", &[("state", state)]),
                n,
                "{state}\n{text}"
            );
        }
        assert!(text.contains("# TYPE runbook_runs gauge"), "{text}");

        // The gauges follow the journal from one scrape to the next.
        let empty = MemoryJournal::new();
        let samples = parse(&metrics.render(&empty));
        assert_eq!(
            count(&samples, "runbook_runs", &[("state", "succeeded")]),
            0
        );
    }

    #[test]
    fn steps_are_counted_when_they_end_by_kind_and_outcome() {
        let metrics = Metrics::new();
        let run = RunId::new();
        let other = RunId::new();
        metrics.record(run, &started("backup", "shell", 1));
        metrics.record(run, &succeeded("backup", 1500));
        // Two runs with the same path keep their kinds apart.
        metrics.record(run, &started("roll[0].leader", "http", 1));
        metrics.record(other, &started("roll[0].leader", "kube", 1));
        metrics.record(run, &succeeded("roll[0].leader", 20));
        metrics.record(other, &failed("roll[0].leader", 30, false));
        // A failure that is retried is not an outcome; the retry's is.
        metrics.record(run, &started("flaky", "http", 1));
        metrics.record(run, &failed("flaky", 100, true));
        metrics.record(run, &started("flaky", "http", 2));
        metrics.record(run, &failed("flaky", 200, false));
        // A step whose start this process did not see.
        metrics.record(run, &succeeded("confirm", 5));
        assert!(
            metrics.open_steps().is_empty(),
            "{:?}",
            metrics.open_steps()
        );

        let text = metrics.render(&MemoryJournal::new());
        let samples = parse(&text);
        let steps = |kind, outcome| {
            count(
                &samples,
                "runbook_steps_total",
                &[("kind", kind), ("outcome", outcome)],
            )
        };
        assert_eq!(steps("shell", "succeeded"), 1, "{text}");
        assert_eq!(steps("http", "succeeded"), 1);
        assert_eq!(steps("kube", "failed"), 1);
        assert_eq!(steps("http", "failed"), 1);
        assert_eq!(steps("unknown", "succeeded"), 1);
        assert!(text.contains("# TYPE runbook_steps counter"), "{text}");

        let (count, sum, buckets) = histogram(
            &samples,
            "runbook_step_duration_seconds",
            &[("kind", "shell"), ("outcome", "succeeded")],
        );
        assert!((sum - 1.5).abs() < 1e-9, "{text}");
        assert_eq!(count, 1);
        // 1.5 s: not in the 1 s bucket, in the 2.5 s one and every one above.
        let at = |le: f64| {
            buckets
                .iter()
                .find(|(b, _)| (*b - le).abs() < 1e-9)
                .unwrap()
                .1
                .round() as u64
        };
        assert_eq!(at(1.0), 0, "{buckets:?}");
        assert_eq!(at(2.5), 1, "{buckets:?}");
        let last = buckets.last().unwrap();
        assert!(last.0.is_infinite() && last.1 > 0.5, "{buckets:?}");
        let (_, sum, _) = histogram(
            &samples,
            "runbook_step_duration_seconds",
            &[("kind", "http"), ("outcome", "failed")],
        );
        if !sum.is_nan() {
            assert!(
                (sum - 0.2).abs() < 1e-9,
                "only the final attempt counts: {text}"
            );
        }
        assert!(
            text.contains("# TYPE runbook_step_duration_seconds histogram")
                && text.contains("# UNIT runbook_step_duration_seconds seconds"),
            "{text}"
        );
    }

    #[test]
    fn open_steps_are_forgotten_when_the_run_stops_and_stay_bounded() {
        let metrics = Metrics::new();
        let run = RunId::new();
        metrics.record(run, &started("roll", "foreach", 1));
        metrics.record(run, &started("roll[0].partition", "kube", 1));
        metrics.record(run, &record(state(RunState::Interrupted)));
        assert!(metrics.open_steps().is_empty());

        // A gate parks the run: its kind is still known when it is decided.
        metrics.record(run, &started("confirm", "gate", 1));
        metrics.record(run, &record(state(RunState::Waiting)));
        metrics.record(run, &succeeded("confirm", 60_000));
        let samples = parse(&metrics.render(&MemoryJournal::new()));
        assert_eq!(
            count(
                &samples,
                "runbook_steps_total",
                &[("kind", "gate"), ("outcome", "succeeded")]
            ),
            1
        );

        for i in 0..MAX_OPEN_STEPS + 10 {
            metrics.record(run, &started(&format!("s{i}"), "shell", 1));
        }
        assert_eq!(metrics.open_steps().len(), MAX_OPEN_STEPS);
        metrics.record(run, &record(state(RunState::Failed)));
        assert!(metrics.open_steps().is_empty());
    }

    #[test]
    fn schedules_and_notifications_are_exported() {
        let metrics = Metrics::new();
        metrics.schedule_fired("rotate-keys", "started", Duration::from_millis(1500));
        metrics.schedule_fired("rotate-keys", "skipped", Duration::from_millis(250));
        metrics.schedule_fired("rotate-keys", "skipped", Duration::from_millis(250));
        metrics.schedule_fired("backup", "missed", Duration::from_secs(90));
        metrics.set_notifications(5, 1);
        metrics.set_notifications(7, 0);

        let text = metrics.render(&MemoryJournal::new());
        let samples = parse(&text);
        let fires = |schedule, outcome| {
            count(
                &samples,
                "runbook_schedule_fires_total",
                &[("schedule", schedule), ("outcome", outcome)],
            )
        };
        assert_eq!(fires("rotate-keys", "started"), 1, "{text}");
        assert_eq!(fires("rotate-keys", "skipped"), 2);
        assert_eq!(fires("backup", "missed"), 1);
        let lag = |schedule| {
            value(
                &samples,
                "runbook_schedule_lag_seconds",
                &[("schedule", schedule)],
            )
        };
        assert!((lag("rotate-keys") - 0.25).abs() < 1e-9, "{text}");
        assert!((lag("backup") - 90.0).abs() < 1e-9);
        let notifications = |outcome| {
            count(
                &samples,
                "runbook_notifications_total",
                &[("outcome", outcome)],
            )
        };
        assert_eq!(notifications("delivered"), 7, "{text}");
        assert_eq!(notifications("failed"), 1);
    }

    /// A journal with one readable failed run and one whose history is damaged.
    struct Damaged(MemoryJournal);

    impl Journal for Damaged {
        fn insert(
            &self,
            _: RunId,
            _: Option<&str>,
            _: bool,
            _: &[Event],
        ) -> Result<Vec<Record>, runbook_journals::JournalError> {
            unreachable!()
        }
        fn write(
            &self,
            _: RunId,
            _: u64,
            _: &[Event],
            _: runbook_journals::LockChange,
        ) -> Result<Vec<Record>, runbook_journals::JournalError> {
            unreachable!()
        }
        fn read(&self, _: RunId) -> Result<Vec<Record>, runbook_journals::JournalError> {
            unreachable!()
        }
        fn read_after(
            &self,
            _: RunId,
            _: u64,
        ) -> Result<Vec<Record>, runbook_journals::JournalError> {
            unreachable!()
        }
        fn runs(&self) -> Result<Vec<RunSummary>, runbook_journals::JournalError> {
            Err(self.problems().remove(0))
        }
        fn readable_runs(&self) -> Vec<RunSummary> {
            self.0.readable_runs()
        }
        fn problems(&self) -> Vec<runbook_journals::JournalError> {
            vec![runbook_journals::JournalError::Corrupt {
                run: RunId::new(),
                seq: 3,
                detail: "records 3–4 are missing".into(),
            }]
        }
        fn summary(&self, _: RunId) -> Result<RunSummary, runbook_journals::JournalError> {
            unreachable!()
        }
        fn resolve(&self, _: &str) -> Result<RunId, runbook_journals::JournalError> {
            unreachable!()
        }
        fn lock_holder(&self, _: &str) -> Result<Option<RunId>, runbook_journals::JournalError> {
            unreachable!()
        }
        fn get_meta(&self, _: &str) -> Result<Option<Vec<u8>>, runbook_journals::JournalError> {
            unreachable!()
        }
        fn put_meta(&self, _: &str, _: &[u8]) -> Result<(), runbook_journals::JournalError> {
            unreachable!()
        }
        fn swap_meta(
            &self,
            _: &str,
            _: Option<&[u8]>,
            _: &[u8],
        ) -> Result<bool, runbook_journals::JournalError> {
            unreachable!()
        }
        fn stats(&self) -> runbook_journals::JournalStats {
            runbook_journals::JournalStats::default()
        }
    }

    #[test]
    fn journal_commits_and_syncs_follow_the_journal_between_scrapes() {
        let dir = tempfile::tempdir().unwrap();
        let journal = runbook_journals::SledJournal::open(
            dir.path(),
            runbook_journals::SledOptions::default(),
        )
        .unwrap();
        let metrics = Metrics::new();
        let first = parse(&metrics.render(&journal));
        let commits0 = count(&first, "runbook_journal_commits_total", &[]);
        let syncs0 = count(&first, "runbook_journal_syncs_total", &[]);

        let run = RunId::new();
        journal
            .create(run, None, &[run_started(), state(RunState::Running)])
            .unwrap();
        journal
            .append(run, 2, &[state(RunState::Succeeded)])
            .unwrap();

        let second = parse(&metrics.render(&journal));
        let stats = journal.stats();
        assert_eq!(
            count(&second, "runbook_journal_commits_total", &[]),
            stats.commits
        );
        assert_eq!(
            count(&second, "runbook_journal_syncs_total", &[]),
            stats.syncs
        );
        // Two writes, each waited for alone: each made durable by a sync of its own.
        assert_eq!(stats.commits - commits0, 2, "{stats:?}");
        assert_eq!(stats.syncs - syncs0, 2, "{stats:?}");
    }

    #[test]
    fn a_damaged_run_is_counted_apart_and_the_readable_runs_by_state() {
        let metrics = Metrics::new();
        let samples = parse(&metrics.render(&Damaged(journal(&[RunState::Failed]))));
        assert_eq!(count(&samples, "runbook_runs", &[("state", "failed")]), 1);
        assert_eq!(count(&samples, "runbook_journal_damaged_runs", &[]), 1);
        // It clears on a scrape of a healthy journal.
        let samples = parse(&metrics.render(&journal(&[RunState::Failed])));
        assert_eq!(count(&samples, "runbook_journal_damaged_runs", &[]), 0);
        assert_eq!(count(&samples, "runbook_runs", &[("state", "aborted")]), 0);
    }
}
