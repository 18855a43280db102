//! The output of the steps running in this holder, for the event streams of the API
//! (`GET /runs/{id}/events?output=true`): each masked part as it comes ([`OutputChunk`], see
//! `engine::live`), broadcast on a channel of its own — so a flood of output can never make a
//! follower of records lag — and the tail of each running attempt's streams, so a follower
//! that comes while a step runs is shown what the step printed so far.
//!
//! A tail is forgotten once the attempt's outcome is committed (the journaled output is the
//! truth from then on) or the run settles; it keeps the last [`TAIL`] bytes of each stream.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};

use runbook_journals::{Event, Record, RunId};
use tokio::sync::broadcast;

use crate::wire::OutputChunk;

/// How much of each stream of a running attempt is kept for followers that come later.
pub const TAIL: usize = 64 * 1024;

/// What running steps print.
pub struct LiveOutputs {
    /// Shared into the channel's slots (all allocated up front), not copied.
    tx: broadcast::Sender<Arc<OutputChunk>>,
    /// By run, by step path: the running attempt's streams.
    tails: Mutex<HashMap<RunId, BTreeMap<String, Tails>>>,
}

/// The streams of a running attempt.
#[derive(Default)]
struct Tails {
    attempt: u32,
    /// By stream name.
    streams: BTreeMap<String, Tail>,
}

/// The end of a stream: `text` begins at `offset` of the stream.
#[derive(Default)]
struct Tail {
    offset: u64,
    text: String,
}

impl LiveOutputs {
    /// Broadcasts keeping up to `capacity` parts for slow followers.
    pub fn new(capacity: usize) -> Self {
        let (tx, _) = broadcast::channel(capacity);
        Self {
            tx,
            tails: Mutex::new(HashMap::new()),
        }
    }

    /// Parts from now on.
    pub fn subscribe(&self) -> broadcast::Receiver<Arc<OutputChunk>> {
        self.tx.subscribe()
    }

    /// A part was read: kept in its attempt's tail and broadcast.
    pub fn chunk(&self, chunk: &OutputChunk) {
        {
            let mut tails = self.tails.lock().expect("tails");
            let steps = tails.entry(chunk.run).or_default();
            let tails = steps.entry(chunk.path.clone()).or_default();
            if tails.attempt != chunk.attempt {
                *tails = Tails {
                    attempt: chunk.attempt,
                    streams: BTreeMap::new(),
                };
            }
            let tail = tails.streams.entry(chunk.stream.clone()).or_default();
            tail.append(chunk.offset, &chunk.text);
        }
        if self.tx.receiver_count() > 0 {
            let _ = self.tx.send(Arc::new(chunk.clone()));
        }
    }

    /// A record was committed: an attempt's outcome ends its tail, a settled run all of its.
    pub fn record(&self, run: RunId, record: &Record) {
        let mut tails = self.tails.lock().expect("tails");
        match &record.event {
            Event::StepSucceeded { path, .. }
            | Event::StepFailed { path, .. }
            | Event::StepInterrupted { path, .. } => {
                if let Some(steps) = tails.get_mut(&run) {
                    steps.remove(path);
                    if steps.is_empty() {
                        tails.remove(&run);
                    }
                }
            }
            Event::StateChanged { state, .. } if state.is_settled() => {
                tails.remove(&run);
            }
            _ => {}
        }
    }

    /// What run `run`'s running steps printed so far, one part per stream.
    pub fn tails(&self, run: RunId) -> Vec<OutputChunk> {
        let tails = self.tails.lock().expect("tails");
        let Some(steps) = tails.get(&run) else {
            return Vec::new();
        };
        steps
            .iter()
            .flat_map(|(path, t)| {
                t.streams.iter().map(move |(stream, tail)| OutputChunk {
                    run,
                    path: path.clone(),
                    attempt: t.attempt,
                    stream: stream.clone(),
                    offset: tail.offset,
                    text: tail.text.clone(),
                })
            })
            .collect()
    }
}

impl Tail {
    /// Adds the part at `offset`, keeping the last [`TAIL`] bytes (cut at a character).
    fn append(&mut self, offset: u64, text: &str) {
        let end = self.offset + self.text.len() as u64;
        if offset != end {
            // Parts were missed (they cannot be, but a tail must not lie): start again here.
            self.offset = offset;
            self.text.clear();
        }
        self.text.push_str(text);
        if self.text.len() > TAIL {
            let mut cut = self.text.len() - TAIL;
            while !self.text.is_char_boundary(cut) {
                cut += 1;
            }
            self.text.drain(..cut);
            self.offset += cut as u64;
        }
    }
}

#[cfg(test)]
mod tests {
    use chrono::Utc;
    use runbook_journals::RunState;

    use super::*;

    fn part(run: RunId, path: &str, attempt: u32, offset: u64, text: &str) -> OutputChunk {
        OutputChunk {
            run,
            path: path.into(),
            attempt,
            stream: "stdout".into(),
            offset,
            text: text.into(),
        }
    }

    fn record(event: Event) -> Record {
        Record {
            seq: 1,
            at: Utc::now(),
            event,
        }
    }

    #[test]
    fn a_tail_keeps_the_end_of_the_running_attempt_until_its_outcome() {
        let live = LiveOutputs::new(16);
        let mut rx = live.subscribe();
        let run = RunId::new();
        live.chunk(&part(run, "a", 1, 0, "one\n"));
        live.chunk(&part(run, "a", 1, 4, "two\n"));
        live.chunk(&part(run, "b", 1, 0, "bee\n"));
        assert_eq!(rx.try_recv().expect("broadcast").text, "one\n");
        let tails = live.tails(run);
        assert_eq!(tails.len(), 2);
        assert_eq!((tails[0].offset, tails[0].text.as_str()), (0, "one\ntwo\n"));
        // A new attempt starts a new tail.
        live.chunk(&part(run, "a", 2, 0, "again\n"));
        assert_eq!(live.tails(run)[0].text, "again\n");
        live.record(
            run,
            &record(Event::StepSucceeded {
                path: "a".into(),
                attempt: 2,
                output: serde_json::Value::Null,
                duration_ms: 1,
            }),
        );
        assert_eq!(live.tails(run).len(), 1, "a's outcome ends its tail");
        live.record(
            run,
            &record(Event::StateChanged {
                state: RunState::Waiting,
                reason: None,
            }),
        );
        assert!(
            live.tails(run).is_empty(),
            "a parked run has no running step"
        );
    }

    #[test]
    fn a_long_tail_keeps_its_last_bytes_and_says_where_they_begin() {
        let live = LiveOutputs::new(4);
        let run = RunId::new();
        let line = "é".repeat(1000) + "\n";
        let mut offset = 0;
        for _ in 0..100 {
            live.chunk(&part(run, "a", 1, offset, &line));
            offset += line.len() as u64;
        }
        let tail = &live.tails(run)[0];
        assert!(tail.text.len() <= TAIL && tail.text.len() > TAIL - 4);
        assert_eq!(tail.offset + tail.text.len() as u64, offset);
        assert!(tail.text.ends_with("é\n"));
    }
}
