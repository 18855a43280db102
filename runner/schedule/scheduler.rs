//! Firing schedules. On every tick each schedule's fires due since its last handled fire are
//! decided — started, skipped, queued, or missed — by the overlap and catch-up policies, and
//! every decision is journaled before the run it starts is created.

use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use runbook_journals::{Journal, JournalError, RunId};
use runbook_steps::Cancel;

use crate::schedule::state::{FireOutcome, Pending, ScheduleState, Seen};
use crate::schedule::{CatchUp, Overlap, Schedule};

/// How many times a trigger by hand reads again after another executor changed the state.
const TRIGGER_ATTEMPTS: usize = 20;

/// Starts the run of a fire; implemented by `serve`.
pub trait Launcher: Send + Sync {
    /// Creates run `id` of `schedule` for `fire` (taking its lock) and sets it going. Errors are
    /// the reason the run could not start.
    fn launch(&self, schedule: &Schedule, fire: DateTime<Utc>, id: RunId) -> Result<(), String>;

    /// Whether runs can start here now, else why not (this executor has no lease on a shared
    /// journal, or it is letting the journal go). An executor that cannot start runs decides no
    /// fire on its ticks: an executor that can decides them, or the catch-up policy does once
    /// one can — a fire is not refused for a passing condition of one executor.
    fn ready(&self) -> Result<(), String> {
        Ok(())
    }

    /// Whether run `id` is unfinished (running, parked, sleeping, …).
    fn unfinished(&self, id: RunId) -> bool;

    /// Tells metrics what a fire led to, and how late a started run was.
    fn fired(&self, schedule: &str, outcome: &FireOutcome, lag: Duration) {
        let _ = (schedule, outcome, lag);
    }
}

/// Fires schedules.
pub struct Scheduler {
    schedules: Vec<Schedule>,
    journal: Arc<dyn Journal>,
    launcher: Arc<dyn Launcher>,
    tick: Duration,
    /// Serializes every read-modify-write of a schedule's state (ticks, pause, trigger).
    lock: std::sync::Mutex<()>,
}

impl Scheduler {
    /// A scheduler for `schedules`, checking every `tick`.
    pub fn new(
        schedules: Vec<Schedule>,
        journal: Arc<dyn Journal>,
        launcher: Arc<dyn Launcher>,
        tick: Duration,
    ) -> Self {
        Self {
            schedules,
            journal,
            launcher,
            tick,
            lock: std::sync::Mutex::new(()),
        }
    }

    /// The schedule called `name`.
    pub fn get(&self, name: &str) -> Option<&Schedule> {
        self.schedules.iter().find(|s| s.name == name)
    }

    /// Pauses or resumes a schedule. A resumed schedule fires from now on: what fell due while
    /// it was paused is not caught up.
    pub fn set_paused(&self, name: &str, paused: bool) -> Result<ScheduleState, JournalError> {
        let _guard = self.lock.lock().expect("scheduler");
        ScheduleState::update(self.journal.as_ref(), name, |st| st.set_paused(paused))
    }

    /// Fires a schedule now, by hand; the overlap policy applies. Returns what the fire led to.
    pub fn trigger(&self, s: &Schedule) -> Result<crate::schedule::state::Fired, JournalError> {
        let _guard = self.lock.lock().expect("scheduler");
        for _ in 0..TRIGGER_ATTEMPTS {
            let (mut st, mut seen) = ScheduleState::load_seen(self.journal.as_ref(), &s.name)?;
            let now = Utc::now();
            match self.fire(s, &mut st, &mut seen, now, By::Hand) {
                Ok(()) => return Ok(st.history.last().cloned().expect("the fire was recorded")),
                Err(Tick::Raced) => {}
                Err(Tick::Unready(_)) => {
                    unreachable!("a fire by hand is refused, not left pending")
                }
                Err(Tick::Journal(e)) => return Err(e),
            }
        }
        Err(JournalError::MetaChanged(format!("schedule/{}", s.name)))
    }

    /// The schedules fired.
    pub fn schedules(&self) -> &[Schedule] {
        &self.schedules
    }

    /// A fire later than this after its time was missed rather than just due.
    fn grace(&self) -> chrono::Duration {
        chrono::Duration::from_std((self.tick * 4).max(Duration::from_secs(1)))
            .unwrap_or(chrono::Duration::seconds(1))
    }

    /// Fires schedules until `shutdown` fires.
    pub async fn run(self: Arc<Self>, shutdown: Cancel) {
        loop {
            // Deciding fires writes to the journal (durably) and may create runs: blocking
            // work, kept off the threads that serve the API.
            let me = Arc::clone(&self);
            let now = Utc::now();
            let _ = tokio::task::spawn_blocking(move || {
                for s in &me.schedules {
                    if let Err(e) = me.tick_one(s, now) {
                        tracing::warn!(schedule = %s.name, error = %e, "schedule tick failed");
                    }
                }
            })
            .await;
            // The next fire after the tick's own `now`: one that fell due while the tick waited
            // for the journal is decided at once, while it is still fresh.
            let next = self
                .schedules
                .iter()
                .filter_map(|s| s.next_after(now))
                .min();
            let wait = next_wait(next, Utc::now(), self.tick);
            tokio::select! {
                () = tokio::time::sleep(wait) => {}
                _ = shutdown.cancelled() => return,
            }
        }
    }

    /// Decides every fire of `s` due by `now`. Another executor sharing the journal may decide
    /// them first: then this one has written nothing and stops, and its next tick reads what the
    /// other decided.
    pub fn tick_one(&self, s: &Schedule, now: DateTime<Utc>) -> Result<(), JournalError> {
        let _guard = self.lock.lock().expect("scheduler");
        if let Err(why) = self.launcher.ready() {
            tracing::debug!(schedule = %s.name, %why, "deciding no fire: runs cannot start here now");
            return Ok(());
        }
        match self.decide(s, now) {
            Ok(()) => Ok(()),
            Err(Tick::Raced) => {
                tracing::debug!(schedule = %s.name, "another executor decided this tick");
                Ok(())
            }
            Err(Tick::Unready(why)) => {
                tracing::info!(schedule = %s.name, %why, "a fire stays pending: runs cannot start here now");
                Ok(())
            }
            Err(Tick::Journal(e)) => Err(e),
        }
    }

    fn decide(&self, s: &Schedule, now: DateTime<Utc>) -> Result<(), Tick> {
        let (mut st, mut seen) = ScheduleState::load_seen(self.journal.as_ref(), &s.name)?;
        if let Some(pending) = st.pending {
            self.finish_pending(s, &mut st, &mut seen, pending, By::Tick)?;
        }
        let Some(last) = st.last_fire else {
            // First sight of this schedule: it fires from now on, with nothing to catch up.
            st.last_fire = Some(now);
            return self.save(s, &st, &mut seen);
        };
        if st.paused {
            return Ok(());
        }
        let due = s.fires_between(last, now, 100_000);
        let grace = self.grace();
        let (fresh, stale): (Vec<_>, Vec<_>) = due.iter().partition(|f| now - **f <= grace);
        let window = chrono::Duration::from_std(s.spec.window).unwrap_or(chrono::Duration::MAX);
        let (run, missed): (Vec<DateTime<Utc>>, Vec<DateTime<Utc>>) = match s.spec.catch_up {
            CatchUp::None => (fresh, stale),
            CatchUp::Last => {
                if fresh.is_empty() {
                    let mut stale = stale;
                    let last = stale.pop();
                    (last.into_iter().collect(), stale)
                } else {
                    (fresh, stale)
                }
            }
            CatchUp::All => {
                let (keep, drop): (Vec<_>, Vec<_>) =
                    stale.into_iter().partition(|f| now - *f <= window);
                (keep.into_iter().chain(fresh).collect(), drop)
            }
        };
        // The fires to run are handled one commit each (the handled mark moves with each), so
        // a tick stopped early — raced, or the lease gone — leaves the rest due, not lost.
        let handled = if run.is_empty() {
            due.last()
        } else {
            missed.last()
        };
        if let Some(latest) = handled {
            st.last_fire = Some(*latest);
        }
        for fire in &missed {
            st.record(*fire, FireOutcome::Missed, None);
        }
        if handled.is_some() {
            self.save(s, &st, &mut seen)?;
        }
        // Only the executor whose save handled these fires tells its metrics.
        for _ in &missed {
            self.launcher
                .fired(&s.name, &FireOutcome::Missed, Duration::ZERO);
        }
        for fire in run {
            self.fire(s, &mut st, &mut seen, fire, By::Tick)?;
        }
        // A queued fire starts once the run before it has ended.
        if !st.queued.is_empty() && !self.busy(&st) {
            let fire = st.queued.remove(0);
            self.start(s, &mut st, &mut seen, fire, By::Tick)?;
        }
        Ok(())
    }

    /// Saves over what was read; [`Tick::Raced`] if another executor saved first.
    fn save(&self, s: &Schedule, st: &ScheduleState, seen: &mut Seen) -> Result<(), Tick> {
        if st.save_over(self.journal.as_ref(), &s.name, seen)? {
            Ok(())
        } else {
            Err(Tick::Raced)
        }
    }

    fn busy(&self, st: &ScheduleState) -> bool {
        st.last_run.is_some_and(|r| self.launcher.unfinished(r))
    }

    /// Applies the overlap policy to one fire.
    fn fire(
        &self,
        s: &Schedule,
        st: &mut ScheduleState,
        seen: &mut Seen,
        fire: DateTime<Utc>,
        by: By,
    ) -> Result<(), Tick> {
        if by == By::Tick {
            // Saved with the fire's decision (a fire by hand is no scheduled time: scheduled
            // fires before it are still due).
            st.last_fire = st.last_fire.max(Some(fire));
        }
        let busy = self.busy(st);
        let held = match s.spec.overlap {
            Overlap::Skip if busy => FireOutcome::Skipped,
            Overlap::Queue if busy || !st.queued.is_empty() => {
                st.queued.push(fire);
                FireOutcome::Queued
            }
            _ => return self.start(s, st, seen, fire, by),
        };
        st.record(fire, held.clone(), None);
        self.save(s, st, seen)?;
        self.launcher.fired(&s.name, &held, Duration::ZERO);
        Ok(())
    }

    /// Journals the fire as pending — the compare-and-set that makes this executor the one that
    /// starts it — creates its run, then records that it started.
    fn start(
        &self,
        s: &Schedule,
        st: &mut ScheduleState,
        seen: &mut Seen,
        fire: DateTime<Utc>,
        by: By,
    ) -> Result<(), Tick> {
        let id = RunId::new();
        st.pending = Some(Pending { fire, run: id });
        self.save(s, st, seen)?;
        self.finish_pending(s, st, seen, Pending { fire, run: id }, by)
    }

    /// Creates the pending fire's run unless it exists already (a crash after creating it, or
    /// another executor finishing the same pending fire), then records the outcome. The run's
    /// id is the pending record's, and a journal creates an id once: the fire starts one run.
    /// On a tick, a run that could not start because runs cannot start here now (the lease
    /// went meanwhile) leaves the fire pending, for the next tick here or elsewhere to finish.
    fn finish_pending(
        &self,
        s: &Schedule,
        st: &mut ScheduleState,
        seen: &mut Seen,
        pending: Pending,
        by: By,
    ) -> Result<(), Tick> {
        let exists = || match self.journal.summary(pending.run) {
            Ok(_) => Ok(true),
            Err(JournalError::NoSuchRun(_)) => Ok(false),
            Err(e) => Err(e),
        };
        let outcome = if exists()? {
            FireOutcome::Started
        } else {
            match self.launcher.launch(s, pending.fire, pending.run) {
                Ok(()) => FireOutcome::Started,
                // Created meanwhile by another executor finishing the same fire.
                Err(_) if exists()? => FireOutcome::Started,
                Err(e) => match (by, self.launcher.ready()) {
                    (By::Tick, Err(why)) => return Err(Tick::Unready(why)),
                    _ => FireOutcome::Refused(e),
                },
            }
        };
        let run = matches!(outcome, FireOutcome::Started).then_some(pending.run);
        if run.is_some() {
            st.last_run = run;
        }
        st.record(pending.fire, outcome.clone(), run);
        st.pending = None;
        self.save(s, st, seen)?;
        let lag = (Utc::now() - pending.fire).to_std().unwrap_or_default();
        self.launcher.fired(&s.name, &outcome, lag);
        Ok(())
    }
}

/// How long the scheduler sleeps before its next tick: until `next` (the first fire after the
/// last tick's time), at once if that fell due meanwhile, and never longer than `tick`.
fn next_wait(next: Option<DateTime<Utc>>, now: DateTime<Utc>, tick: Duration) -> Duration {
    match next {
        Some(n) => (n - now).to_std().unwrap_or(Duration::ZERO).min(tick),
        None => tick,
    }
}

/// Who decides a fire.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum By {
    /// The scheduler's tick.
    Tick,
    /// Someone, by hand: told at once why a run could not start.
    Hand,
}

/// Why deciding a schedule's tick stopped early.
enum Tick {
    /// Another executor saved the schedule's state first; nothing of this tick was written
    /// after that.
    Raced,
    /// Runs cannot start here now (why): the fire being started stays pending.
    Unready(String),
    /// The journal failed.
    Journal(JournalError),
}

impl From<JournalError> for Tick {
    fn from(e: JournalError) -> Self {
        Self::Journal(e)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone as _;
    use runbook_journals::MemoryJournal;
    use std::sync::Mutex;

    use crate::schedule::{ScheduleSpec, parse_cron};

    #[derive(Default)]
    struct Fake {
        launched: Mutex<Vec<(DateTime<Utc>, RunId)>>,
        busy: Mutex<bool>,
        /// Why runs cannot start here now, if they cannot.
        unready: Mutex<Option<String>>,
        /// The lease goes during the launch after this many launches.
        lease_lost_after: Mutex<Option<usize>>,
    }

    impl Launcher for Fake {
        fn launch(&self, _: &Schedule, fire: DateTime<Utc>, id: RunId) -> Result<(), String> {
            let mut launched = self.launched.lock().unwrap();
            if *self.lease_lost_after.lock().unwrap() == Some(launched.len()) {
                *self.unready.lock().unwrap() = Some("no lease".into());
            }
            if let Some(why) = self.unready.lock().unwrap().clone() {
                return Err(why);
            }
            launched.push((fire, id));
            Ok(())
        }
        fn ready(&self) -> Result<(), String> {
            self.unready.lock().unwrap().clone().map_or(Ok(()), Err)
        }
        fn unfinished(&self, _: RunId) -> bool {
            *self.busy.lock().unwrap()
        }
    }

    fn fires(fake: &Fake) -> Vec<DateTime<Utc>> {
        fake.launched.lock().unwrap().iter().map(|f| f.0).collect()
    }

    fn outcomes(journal: &MemoryJournal) -> Vec<(DateTime<Utc>, &'static str)> {
        let st = ScheduleState::load(journal, "s").unwrap();
        st.history
            .iter()
            .map(|f| (f.fire, f.outcome.word()))
            .collect()
    }

    fn every_2s(overlap: Overlap, catch_up: CatchUp) -> Schedule {
        Schedule {
            name: "s".into(),
            runbook: "r".into(),
            spec: ScheduleSpec {
                name: None,
                cron: parse_cron("*/2 * * * * *").unwrap(),
                cron_text: "*/2 * * * * *".into(),
                timezone: chrono_tz::UTC,
                params: serde_json::Map::new(),
                overlap,
                catch_up,
                window: Duration::from_secs(3600),
                pos: crate::source::Pos::default(),
            },
        }
    }

    fn at(s: i64) -> DateTime<Utc> {
        Utc.with_ymd_and_hms(2026, 11, 21, 10, 0, 0).unwrap() + chrono::Duration::seconds(s)
    }

    fn setup(s: &Schedule) -> (Scheduler, Arc<Fake>, Arc<MemoryJournal>) {
        let journal = Arc::new(MemoryJournal::new());
        let fake = Arc::new(Fake::default());
        let sched = Scheduler::new(
            vec![s.clone()],
            journal.clone(),
            fake.clone(),
            Duration::from_millis(250),
        );
        (sched, fake, journal)
    }

    #[test]
    fn each_fire_starts_once_and_the_first_tick_only_takes_note() {
        let s = every_2s(Overlap::Allow, CatchUp::None);
        let (sched, fake, _) = setup(&s);
        sched.tick_one(&s, at(0)).unwrap();
        assert!(fake.launched.lock().unwrap().is_empty());
        sched.tick_one(&s, at(2)).unwrap();
        sched.tick_one(&s, at(2)).unwrap();
        sched.tick_one(&s, at(3)).unwrap();
        sched.tick_one(&s, at(4)).unwrap();
        let fires: Vec<_> = fake.launched.lock().unwrap().iter().map(|f| f.0).collect();
        assert_eq!(fires, [at(2), at(4)]);
    }

    #[test]
    fn the_next_tick_waits_for_the_next_fire_and_comes_at_once_after_a_slow_tick() {
        let tick = Duration::from_millis(250);
        let ms = |n: i64| chrono::Duration::milliseconds(n);
        for (next, now, wait) in [
            // The next fire is far: the scheduler still looks every tick.
            (Some(at(2)), at(0), tick),
            // The next fire is close: it sleeps until it.
            (Some(at(2)), at(2) - ms(100), Duration::from_millis(100)),
            // The fire fell due while the tick waited for the journal: no sleep at all.
            (Some(at(2)), at(2) + ms(700), Duration::ZERO),
            (Some(at(2)), at(2), Duration::ZERO),
            // No fire ahead (a schedule that ended): one tick.
            (None, at(0), tick),
        ] {
            assert_eq!(next_wait(next, now, tick), wait, "next {next:?}, now {now}");
        }
    }

    #[test]
    fn a_fire_that_fell_due_during_a_slow_tick_starts_when_the_tick_after_it_comes_at_once() {
        let s = every_2s(Overlap::Allow, CatchUp::None);
        let (sched, fake, _) = setup(&s);
        sched.tick_one(&s, at(0)).unwrap();
        // A tick begun at 1.9 s waited on the store until 2.7 s: the run loop asks for the
        // fire after 1.9 s (2 s), due already, and ticks again at once, 0.7 s after it.
        let begun = at(2) - chrono::Duration::milliseconds(100);
        sched.tick_one(&s, begun).unwrap();
        let now = at(2) + chrono::Duration::milliseconds(700);
        let wait = next_wait(s.next_after(begun), now, Duration::from_millis(250));
        assert_eq!(wait, Duration::ZERO);
        sched.tick_one(&s, now).unwrap();
        assert_eq!(fires(&fake), [at(2)]);
    }

    #[test]
    fn skip_records_fires_while_a_run_is_unfinished() {
        let s = every_2s(Overlap::Skip, CatchUp::None);
        let (sched, fake, journal) = setup(&s);
        sched.tick_one(&s, at(0)).unwrap();
        sched.tick_one(&s, at(2)).unwrap();
        *fake.busy.lock().unwrap() = true;
        sched.tick_one(&s, at(4)).unwrap();
        *fake.busy.lock().unwrap() = false;
        sched.tick_one(&s, at(6)).unwrap();
        assert_eq!(fake.launched.lock().unwrap().len(), 2);
        let st = ScheduleState::load(journal.as_ref(), "s").unwrap();
        let outcomes: Vec<&str> = st.history.iter().map(|f| f.outcome.word()).collect();
        assert_eq!(outcomes, ["started", "skipped", "started"]);
    }

    #[test]
    fn queue_starts_the_waiting_fire_after_the_run_ends() {
        let s = every_2s(Overlap::Queue, CatchUp::None);
        let (sched, fake, _) = setup(&s);
        sched.tick_one(&s, at(0)).unwrap();
        sched.tick_one(&s, at(2)).unwrap();
        *fake.busy.lock().unwrap() = true;
        sched.tick_one(&s, at(4)).unwrap();
        assert_eq!(fake.launched.lock().unwrap().len(), 1);
        *fake.busy.lock().unwrap() = false;
        sched.tick_one(&s, at(5)).unwrap();
        let fires: Vec<_> = fake.launched.lock().unwrap().iter().map(|f| f.0).collect();
        assert_eq!(fires, [at(2), at(4)]);
    }

    #[test]
    fn catch_up_after_downtime() {
        for (policy, expected) in [
            (CatchUp::None, vec![]),
            (CatchUp::Last, vec![at(20)]),
            (CatchUp::All, vec![at(12), at(14), at(16), at(18), at(20)]),
        ] {
            let s = every_2s(Overlap::Allow, policy);
            let (sched, fake, journal) = setup(&s);
            sched.tick_one(&s, at(10)).unwrap();
            // Down from 10 s to 21.5 s: the fires at 12 … 20 s were missed.
            sched
                .tick_one(&s, at(21) + chrono::Duration::milliseconds(500))
                .unwrap();
            let fires: Vec<_> = fake.launched.lock().unwrap().iter().map(|f| f.0).collect();
            assert_eq!(fires, expected, "{policy:?}");
            let st = ScheduleState::load(journal.as_ref(), "s").unwrap();
            assert_eq!(st.last_fire, Some(at(20)));
            assert_eq!(st.history.len(), 5, "every missed fire is accounted for");
        }
    }

    #[test]
    fn an_executor_that_cannot_start_runs_decides_no_fire() {
        let s = every_2s(Overlap::Allow, CatchUp::None);
        let (sched, fake, journal) = setup(&s);
        sched.tick_one(&s, at(0)).unwrap();
        *fake.unready.lock().unwrap() = Some("no lease".into());
        sched.tick_one(&s, at(2)).unwrap();
        let st = ScheduleState::load(journal.as_ref(), "s").unwrap();
        assert_eq!(st.last_fire, Some(at(0)), "the fire at 2 s is still due");
        assert!(st.history.is_empty(), "not refused: {:?}", st.history);
        // Back within the grace: it starts; later than that, `catch_up: none` misses it.
        *fake.unready.lock().unwrap() = None;
        sched
            .tick_one(&s, at(2) + chrono::Duration::milliseconds(900))
            .unwrap();
        assert_eq!(fires(&fake), [at(2)]);
        *fake.unready.lock().unwrap() = Some("no lease".into());
        sched.tick_one(&s, at(4)).unwrap();
        *fake.unready.lock().unwrap() = None;
        sched
            .tick_one(&s, at(6) + chrono::Duration::milliseconds(500))
            .unwrap();
        assert_eq!(fires(&fake), [at(2), at(6)]);
        assert_eq!(
            outcomes(&journal),
            [(at(2), "started"), (at(4), "missed"), (at(6), "started")]
        );
    }

    #[test]
    fn a_lease_lost_during_a_launch_leaves_the_fire_pending_and_the_rest_due() {
        let s = every_2s(Overlap::Allow, CatchUp::All);
        let (sched, fake, journal) = setup(&s);
        sched.tick_one(&s, at(0)).unwrap();
        // Three fires to catch up; the lease goes while the second one's run is created.
        *fake.lease_lost_after.lock().unwrap() = Some(1);
        sched
            .tick_one(&s, at(6) + chrono::Duration::milliseconds(500))
            .unwrap();
        assert_eq!(fires(&fake), [at(2)]);
        let st = ScheduleState::load(journal.as_ref(), "s").unwrap();
        assert_eq!(st.pending.map(|p| p.fire), Some(at(4)), "left pending");
        assert_eq!(st.last_fire, Some(at(4)), "the fire at 6 s is still due");
        assert_eq!(outcomes(&journal), [(at(2), "started")]);
        // Another executor sharing the journal finishes the pending fire and the one after it.
        let other = Arc::new(Fake::default());
        let second = Scheduler::new(
            vec![s.clone()],
            journal.clone(),
            other.clone(),
            Duration::from_millis(250),
        );
        second.tick_one(&s, at(7)).unwrap();
        assert_eq!(fires(&other), [at(4), at(6)]);
        assert_eq!(
            other.launched.lock().unwrap()[0].1,
            st.pending.unwrap().run,
            "the pending fire's run id"
        );
        assert_eq!(
            outcomes(&journal),
            [(at(2), "started"), (at(4), "started"), (at(6), "started")]
        );
    }

    #[test]
    fn a_fire_by_hand_is_refused_at_once_when_runs_cannot_start() {
        let s = every_2s(Overlap::Allow, CatchUp::None);
        let (sched, fake, journal) = setup(&s);
        sched.tick_one(&s, at(0)).unwrap();
        *fake.unready.lock().unwrap() = Some("no lease".into());
        let fired = sched.trigger(&s).unwrap();
        assert_eq!(fired.outcome, FireOutcome::Refused("no lease".into()));
        let st = ScheduleState::load(journal.as_ref(), "s").unwrap();
        assert_eq!(st.pending, None);
        assert_eq!(st.last_fire, Some(at(0)), "scheduled fires stay due");
    }

    #[test]
    fn a_pending_fire_is_finished_not_fired_again() {
        let s = every_2s(Overlap::Allow, CatchUp::None);
        let (sched, fake, journal) = setup(&s);
        // A crash after the fire was journaled as pending, before its run was created.
        let id = RunId::new();
        let st = ScheduleState {
            last_fire: Some(at(2)),
            pending: Some(Pending {
                fire: at(2),
                run: id,
            }),
            ..ScheduleState::default()
        };
        st.save(journal.as_ref(), "s").unwrap();
        sched.tick_one(&s, at(3)).unwrap();
        assert_eq!(*fake.launched.lock().unwrap(), [(at(2), id)]);
        sched.tick_one(&s, at(3)).unwrap();
        assert_eq!(fake.launched.lock().unwrap().len(), 1, "no second fire");
    }

    /// A launcher like `serve`'s: creating the fire's run in the shared journal is what can
    /// happen only once per id.
    struct Creating {
        journal: Arc<MemoryJournal>,
        launched: Mutex<Vec<DateTime<Utc>>>,
    }

    impl Launcher for Creating {
        fn launch(&self, s: &Schedule, fire: DateTime<Utc>, id: RunId) -> Result<(), String> {
            let started = runbook_journals::RunStarted {
                runbook: s.runbook.clone(),
                params: serde_json::Map::new(),
                sources: Vec::new(),
                links: std::collections::BTreeMap::new(),
                lock: None,
                started_by: format!("schedule:{}", s.name),
                engine_version: "test".into(),
                trigger: None,
            };
            self.journal
                .create(id, None, &[runbook_journals::Event::RunStarted(started)])
                .map_err(|e| e.to_string())?;
            self.launched.lock().unwrap().push(fire);
            Ok(())
        }
        fn unfinished(&self, _: RunId) -> bool {
            false
        }
    }

    #[test]
    fn executors_sharing_a_journal_start_each_fire_once() {
        let s = every_2s(Overlap::Allow, CatchUp::None);
        let journal = Arc::new(MemoryJournal::new());
        let executors: Vec<(Scheduler, Arc<Creating>)> = (0..3)
            .map(|_| {
                let launcher = Arc::new(Creating {
                    journal: journal.clone(),
                    launched: Mutex::new(Vec::new()),
                });
                let sched = Scheduler::new(
                    vec![s.clone()],
                    journal.clone(),
                    launcher.clone(),
                    Duration::from_millis(250),
                );
                (sched, launcher)
            })
            .collect();
        // Each executor ticks every half second of a minute, all at once, so their reads and
        // saves interleave.
        std::thread::scope(|scope| {
            for (sched, _) in &executors {
                let s = &s;
                scope.spawn(move || {
                    for half in 0..120 {
                        sched
                            .tick_one(s, at(0) + chrono::Duration::milliseconds(500 * half))
                            .unwrap();
                    }
                });
            }
        });
        let mut fires: Vec<DateTime<Utc>> = executors
            .iter()
            .flat_map(|(_, l)| l.launched.lock().unwrap().clone())
            .collect();
        fires.sort_unstable();
        let st = ScheduleState::load(journal.as_ref(), "s").unwrap();
        let recorded: Vec<DateTime<Utc>> = st
            .history
            .iter()
            .filter(|f| f.outcome == FireOutcome::Started)
            .map(|f| f.fire)
            .collect();
        let mut unique = fires.clone();
        unique.dedup();
        assert_eq!(fires, unique, "a fire started twice");
        assert_eq!(recorded, fires, "the history names each started fire once");
        // Whatever the interleaving, every fire between the first sight and the last tick ran
        // (or was handled late as missed: never both, never neither).
        let handled: Vec<DateTime<Utc>> = st.history.iter().map(|f| f.fire).collect();
        let mut sorted = handled.clone();
        sorted.sort_unstable();
        sorted.dedup();
        assert_eq!(
            handled.len(),
            sorted.len(),
            "a fire handled twice: {handled:?}"
        );
        assert!(fires.len() >= 25, "only {} fires started", fires.len());
    }
}
