//! A step's output as it is produced: what a kind that runs a process reads from its pipes is
//! handed, chunk by chunk, to an [`OutputSink`] the runner provides, before the step ends.
//!
//! The contract: a sink sees exactly the bytes the kind captures for the step's output, in the
//! order each stream produced them, and nothing else — no masking happens here (the runner masks
//! secrets before anything leaves it), and the step's output is still what the kind returns at
//! its end. A sink must not block: it is called on the task that reads the pipe, so a slow sink
//! would stall the child once the pipe fills.

/// Which of a process's streams a chunk came from.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum OutputStream {
    /// Standard output.
    Stdout,
    /// Standard error.
    Stderr,
}

impl OutputStream {
    /// `stdout` or `stderr`, as the step's output names the stream.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Stdout => "stdout",
            Self::Stderr => "stderr",
        }
    }
}

/// Receives a running step's output as it is read.
pub trait OutputSink: Send + Sync + std::fmt::Debug {
    /// `bytes` were read from `stream` (a chunk may end inside a line or a UTF-8 sequence).
    fn chunk(&self, stream: OutputStream, bytes: &[u8]);
}
