//! The `runbook` binary: everything happens in the library's `run`.

fn main() {
    std::process::exit(runbook::run(std::env::args_os()));
}
