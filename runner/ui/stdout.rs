//! Standard output: every command prints through here ([`out!`], [`outln!`], [`print_str`]),
//! never through `print!`/`println!`, which panic on a closed pipe (the crate's lints refuse
//! them).
//!
//! The contract:
//! - **SIGPIPE stays ignored** (Rust's default) for the whole life of every command. A write to
//!   a socket whose peer went away — the holder of the journal exiting while a `status` asks
//!   it something — is an error its caller handles (it looks for the journal again), never a
//!   signal that kills the process.
//! - **A command that only prints** ([`end_on_closed_pipe`]: `list`, `status`, `log`,
//!   `history`, …) ends at the first write that meets a closed standard output, the way `ls`
//!   does under `| head`: by SIGPIPE, whose default action is restored at that moment only —
//!   no message, no panic, and the shell sees 141. Should SIGPIPE be blocked by whoever
//!   started it, it exits 141 instead. Any other failure to write (a full disk) is reported on
//!   standard error and ends it with exit code 1.
//! - **Every other command** (it executes steps, or serves) goes on when its standard output
//!   fails: what it prints is lost, its run is not, and its exit code still says how the run
//!   went.
//!
//! Every write is flushed at once, so a closed pipe is met while the command still runs (and
//! `log --follow`'s reader sees each record as it commits).

use std::io::{self, Write as _};
use std::sync::atomic::{AtomicBool, Ordering};

/// Whether a closed standard output ends this process ([`end_on_closed_pipe`]).
static END_ON_CLOSED_PIPE: AtomicBool = AtomicBool::new(false);

/// SIGPIPE's number on Linux, for the exit status when the signal cannot be raised.
const SIGPIPE: i32 = 13;

/// Makes a closed standard output end this process, quietly, as it ends `ls`: for commands
/// that only print what they read.
pub fn end_on_closed_pipe() {
    END_ON_CLOSED_PIPE.store(true, Ordering::Relaxed);
}

/// Writes `text` to standard output and flushes it; a failure is handled as the module says.
pub fn print_str(text: &str) {
    print_fmt(format_args!("{text}"));
}

/// Writes formatted text to standard output and flushes it (what [`out!`] and [`outln!`]
/// call).
pub fn print_fmt(args: std::fmt::Arguments<'_>) {
    let mut out = io::stdout().lock();
    if let Err(e) = out.write_fmt(args).and_then(|()| out.flush()) {
        drop(out);
        failed(&e);
    }
}

/// A write to standard output failed with `e`.
fn failed(e: &io::Error) {
    if !END_ON_CLOSED_PIPE.load(Ordering::Relaxed) {
        return;
    }
    if e.kind() == io::ErrorKind::BrokenPipe {
        end_by_sigpipe();
    }
    eprintln!("error: failed to write to standard output: {e}");
    std::process::exit(crate::cli::exit::FAILED);
}

/// Ends the process as SIGPIPE's default action does. Restoring that action any earlier would
/// let a write to a socket kill the process too; from here on there is nothing left to lose.
fn end_by_sigpipe() -> ! {
    sigpipe::reset();
    let _ = nix::sys::signal::raise(nix::sys::signal::Signal::SIGPIPE);
    // Still here: the signal is blocked. The status a shell shows for a death by it.
    std::process::exit(128 + SIGPIPE)
}

/// `print!` through [`print_fmt`].
macro_rules! out {
    ($($arg:tt)*) => {
        $crate::ui::stdout::print_fmt(format_args!($($arg)*))
    };
}

/// `println!` through [`print_fmt`].
macro_rules! outln {
    () => {
        $crate::ui::stdout::print_str("\n")
    };
    ($($arg:tt)*) => {
        $crate::ui::stdout::print_fmt(format_args!("{}\n", format_args!($($arg)*)))
    };
}

pub(crate) use {out, outln};
