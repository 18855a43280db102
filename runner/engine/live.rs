//! A running step's output, shown while the step runs: the chunks a step kind reads from its
//! process ([`runbook_steps::OutputSink`]) are masked with the run's redactor and handed to the
//! observers that follow output ([`crate::engine::log::Observer::output`]) — `serve`'s event
//! stream, for the web page.
//!
//! The contract:
//!
//! - Nothing is journaled here. The step's whole output is journaled with its outcome, as
//!   always; what is streamed is a preview of it, and a follower takes the journaled output for
//!   the truth once the outcome is committed.
//! - Secrets are masked exactly as in the journal: each stream is masked in parts cut where
//!   [`Redactor::settled`] says, so no secret is split between two parts (a tail that may be the
//!   start of a secret waits for the next chunk, or for the end of the step). Text is decoded as
//!   the step's output decodes it (UTF-8, invalid bytes replaced), a character split between
//!   two chunks waiting for its end.
//! - A `secret: true` step's output is never streamed (the engine makes no sink for it): it is
//!   never shown, not even masked.
//! - Each part carries its offset in its stream's masked text (per attempt), so a follower that
//!   joins late, or that missed parts, knows where a part belongs.

use std::sync::{Mutex, PoisonError};

use runbook_journals::RunId;
use runbook_steps::{OutputSink, OutputStream};

use crate::engine::log::RunLog;
use crate::secrets::Redactor;
use crate::wire::OutputChunk;

/// The sink of one attempt of one step.
pub struct LiveOutput {
    log: RunLog,
    run: RunId,
    path: String,
    attempt: u32,
    /// stdout, stderr.
    streams: Mutex<[Pending; 2]>,
}

/// What one stream has produced and not yet shown.
#[derive(Debug, Default)]
struct Pending {
    /// Bytes that may be the start of a UTF-8 character the next chunk completes.
    partial: Vec<u8>,
    /// Decoded text not shown yet.
    text: String,
    /// The length of the masked text shown so far.
    offset: u64,
}

impl Pending {
    /// Decodes `bytes` after what came before, as `String::from_utf8_lossy` decodes the whole.
    fn push(&mut self, bytes: &[u8]) {
        self.partial.extend_from_slice(bytes);
        let mut rest: &[u8] = &self.partial;
        loop {
            match std::str::from_utf8(rest) {
                Ok(valid) => {
                    self.text.push_str(valid);
                    rest = &[];
                    break;
                }
                Err(e) => {
                    let (valid, after) = rest.split_at(e.valid_up_to());
                    self.text
                        .push_str(std::str::from_utf8(valid).expect("checked valid"));
                    match e.error_len() {
                        Some(bad) => {
                            self.text.push(char::REPLACEMENT_CHARACTER);
                            rest = &after[bad..];
                        }
                        // An incomplete character at the end: the next chunk may finish it.
                        None => {
                            rest = after;
                            break;
                        }
                    }
                }
            }
        }
        self.partial = rest.to_vec();
    }

    /// The masked part that can be shown now (all of it once the stream has `ended`), and its
    /// offset.
    fn take(&mut self, redactor: &Redactor, ended: bool) -> Option<(u64, String)> {
        if ended && !self.partial.is_empty() {
            self.text
                .push_str(&String::from_utf8_lossy(&std::mem::take(&mut self.partial)));
        }
        let n = if ended {
            self.text.len()
        } else {
            redactor.settled(&self.text)
        };
        if n == 0 {
            return None;
        }
        let shown = redactor.text(&self.text[..n]);
        self.text.drain(..n);
        let at = self.offset;
        self.offset += shown.len() as u64;
        Some((at, shown))
    }
}

impl LiveOutput {
    /// The sink of attempt `attempt` of step `path` of run `run`, shown through `log`.
    pub fn new(log: RunLog, run: RunId, path: &str, attempt: u32) -> Self {
        Self {
            log,
            run,
            path: path.to_owned(),
            attempt,
            streams: Mutex::new([Pending::default(), Pending::default()]),
        }
    }

    /// Shows what is left of both streams: the step has ended, nothing more comes.
    pub fn finish(&self) {
        let mut streams = self.streams.lock().unwrap_or_else(PoisonError::into_inner);
        for stream in [OutputStream::Stdout, OutputStream::Stderr] {
            let part = streams[index(stream)].take(self.log.redactor(), true);
            self.show(stream, part);
        }
    }

    fn show(&self, stream: OutputStream, part: Option<(u64, String)>) {
        if let Some((offset, text)) = part {
            self.log.output(&OutputChunk {
                run: self.run,
                path: self.path.clone(),
                attempt: self.attempt,
                stream: stream.as_str().to_owned(),
                offset,
                text,
            });
        }
    }
}

impl std::fmt::Debug for LiveOutput {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LiveOutput")
            .field("run", &self.run)
            .field("path", &self.path)
            .field("attempt", &self.attempt)
            .finish_non_exhaustive()
    }
}

fn index(stream: OutputStream) -> usize {
    match stream {
        OutputStream::Stdout => 0,
        OutputStream::Stderr => 1,
    }
}

impl OutputSink for LiveOutput {
    fn chunk(&self, stream: OutputStream, bytes: &[u8]) {
        // Shown while the lock is held, so a stream's parts reach observers in order.
        let mut streams = self.streams.lock().unwrap_or_else(PoisonError::into_inner);
        let pending = &mut streams[index(stream)];
        pending.push(bytes);
        let part = pending.take(self.log.redactor(), false);
        self.show(stream, part);
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use runbook_journals::{MemoryJournal, Record};

    use super::*;
    use crate::engine::log::Observer;

    #[derive(Default)]
    struct Seen(Mutex<Vec<OutputChunk>>);

    impl Observer for Seen {
        fn record(&self, _: RunId, _: &Record) {}

        fn wants_output(&self) -> bool {
            true
        }

        fn output(&self, chunk: &OutputChunk) {
            self.0.lock().expect("seen").push(chunk.clone());
        }
    }

    fn sink(secret: &str) -> (LiveOutput, Arc<Seen>) {
        let redactor = Redactor::new();
        redactor.add(secret);
        let seen = Arc::new(Seen::default());
        let log = RunLog::new(
            Arc::new(MemoryJournal::new()),
            redactor,
            vec![seen.clone() as Arc<dyn Observer>],
        );
        (
            LiveOutput::new(log, RunId::new(), "roll[1].restart", 2),
            seen,
        )
    }

    fn shown(seen: &Seen, stream: &str) -> String {
        let chunks = seen.0.lock().expect("seen");
        let mut text = String::new();
        for c in chunks.iter().filter(|c| c.stream == stream) {
            assert_eq!(c.offset, text.len() as u64, "parts follow each other");
            assert_eq!((c.path.as_str(), c.attempt), ("roll[1].restart", 2));
            text.push_str(&c.text);
        }
        text
    }

    #[test]
    fn a_secret_split_between_chunks_is_masked_and_the_text_shown_before_the_end() {
        let (live, seen) = sink("tok-3141592653");
        live.chunk(OutputStream::Stdout, b"logging in as admin\nwith tok-314");
        // What cannot begin the secret is shown at once; the rest waits.
        let early = shown(&seen, "stdout");
        assert!(early.starts_with("logging in"), "{early:?}");
        assert!(!early.contains("tok"), "{early:?}");
        live.chunk(OutputStream::Stdout, b"1592653 ok\n");
        live.chunk(OutputStream::Stderr, "caf\u{e9}".as_bytes().split_at(4).0);
        live.chunk(OutputStream::Stderr, &"caf\u{e9}".as_bytes()[4..]);
        live.chunk(OutputStream::Stderr, b" \xff\n");
        live.finish();
        assert_eq!(shown(&seen, "stdout"), "logging in as admin\nwith *** ok\n");
        assert_eq!(shown(&seen, "stderr"), "caf\u{e9} \u{fffd}\n");
    }
}
