//! Every schedule `serve` fires, gathered from the runbooks found by name and the schedules
//! files.

use std::path::PathBuf;

use runbook_steps::Registry;

use crate::library::{Library, LiveFiles};
use crate::schedule::Schedule;

/// Every schedule to fire: those declared in runbooks found by name (not the bundled library:
/// its runbooks are templates, scheduled through a schedules file) and those of the files.
pub fn load_all(library: &Library, files: &[PathBuf]) -> Result<Vec<Schedule>, String> {
    let registry = Registry::builtin();
    let mut out: Vec<Schedule> = Vec::new();
    let mut problems = Vec::new();
    for entry in library.list() {
        if entry.origin.starts_with(crate::library::BUNDLED_PREFIX) {
            continue;
        }
        let mut sources = crate::source::Sources::new();
        let Ok(book) = crate::load::load(&entry.origin, &LiveFiles, &mut sources, &registry) else {
            // A broken runbook is reported by `check`; it has no schedule to fire.
            continue;
        };
        let single = book.schedules.len() == 1;
        for (i, spec) in book.schedules.iter().enumerate() {
            let name = spec.name.clone().unwrap_or_else(|| {
                if single {
                    entry.name.clone()
                } else {
                    format!("{}#{}", entry.name, i + 1)
                }
            });
            out.push(Schedule {
                name,
                runbook: entry.origin.clone(),
                spec: spec.clone(),
            });
        }
    }
    for file in files {
        let origin = std::path::absolute(file)
            .map_or_else(|_| file.display().to_string(), |p| p.display().to_string());
        match crate::schedule::file::load(&origin, &LiveFiles) {
            Ok(list) => out.extend(list),
            Err((diags, sources)) => problems.push(diags.render(&sources, false)),
        }
    }
    let mut names = std::collections::HashSet::new();
    for s in &out {
        if !names.insert(s.name.clone()) {
            problems.push(format!(
                "error: two schedules are named `{}`; give one a `name`",
                s.name
            ));
        }
    }
    if problems.is_empty() {
        Ok(out)
    } else {
        Err(problems.join("\n\n"))
    }
}
