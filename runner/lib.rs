//! runbook: operational runbooks as code, executed over a durable journal.
//!
//! Runbooks are YAML with Rhai expressions and Handlebars templates. The engine journals every
//! decision and step result before it moves on, so an interrupted run resumes exactly where it
//! stopped. The binary is a thin wrapper around [`run`].

pub mod cli;
pub mod diag;
pub mod engine;
pub mod failure;
pub mod library;
pub mod link;
pub mod load;
mod memory;
pub mod model;
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
pub mod yaml;

use std::ffi::OsString;

/// Runs the command line given by `args` (the program name first) and returns the exit code.
pub fn run(args: impl IntoIterator<Item = OsString>) -> i32 {
    cli::main(args)
}
