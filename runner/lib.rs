//! runbook: operational runbooks as code, executed over a durable journal.
//!
//! Runbooks are YAML with Rhai expressions and Handlebars templates. The engine journals every
//! decision and step result before it moves on, so an interrupted run resumes exactly where it
//! stopped. The binary is a thin wrapper around [`run`].

// `print!` panics on a closed pipe: everything goes through `ui::stdout`.
#![warn(clippy::print_stdout)]

pub mod cli;
pub mod diag;
pub mod engine;
pub mod failure;
pub mod library;
pub mod link;
pub mod load;
mod memory;
pub mod model;
pub mod openbao;
pub mod params;
pub mod refs;
pub mod resupply;
pub mod schedule;
pub mod script;
pub mod secrets;
pub mod serve;
pub mod source;
pub mod template;
pub mod ui;
pub mod wire;
pub mod yaml;

use std::ffi::OsString;

use runbook_steps::orphans;

/// Runs the command line given by `args` (the program name first) and returns the exit code.
///
/// The same binary is also the watchdog that stops a step's processes if this process dies
/// (see [`runbook_steps::orphans`]): started with that role's hidden first argument, it is
/// nothing else.
pub fn run(args: impl IntoIterator<Item = OsString>) -> i32 {
    let args: Vec<OsString> = args.into_iter().collect();
    if args.get(1).is_some_and(|a| a == orphans::WATCHDOG_ARG) {
        return orphans::watchdog_main();
    }
    orphans::install(own_executable(), "runbook");
    cli::main(args)
}

/// This process's executable, in a way that still works once the file was replaced (an
/// upgrade while `serve` runs): `/proc/self/exe` names the running image itself.
fn own_executable() -> std::path::PathBuf {
    let proc_exe = std::path::Path::new("/proc/self/exe");
    if proc_exe.exists() {
        return proc_exe.to_path_buf();
    }
    std::env::current_exe().unwrap_or_else(|_| "runbook".into())
}
