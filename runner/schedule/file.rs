//! Schedules files: `schedules: [ { name, runbook, cron, timezone, params, overlap, catch_up,
//! window } ]`, for schedules kept apart from the runbooks they run (a bundled runbook, or one
//! runbook on several schedules).

use crate::diag::{Diagnostic, Diagnostics};
use crate::library::Files;
use crate::load::schedule::schedule_spec;
use crate::load::{Fields, read_yaml};
use crate::schedule::Schedule;
use crate::source::Sources;

/// Reads a schedules file. On failure, every problem found, with the sources to render them.
pub fn load(origin: &str, files: &dyn Files) -> Result<Vec<Schedule>, (Diagnostics, Sources)> {
    let mut sources = Sources::new();
    let mut f = Fields::default();
    let node = match read_yaml(origin, files, &mut sources) {
        Ok((_, node)) => node,
        Err(d) => {
            f.push(d);
            return Err((f.diags, sources));
        }
    };
    let mut out = Vec::new();
    if let Some(top) = f.map(&node, "a schedules file") {
        f.known_keys(top, &["schedules"], "a schedules file");
        let items = top
            .get("schedules")
            .and_then(|n| f.list(n, "`schedules`"))
            .unwrap_or_default();
        for item in items {
            let Some(m) = f.map(item, "a schedule") else {
                continue;
            };
            let runbook = match m.get("runbook") {
                Some(n) => f.string(n, "`runbook`").map(|s| s.text.clone()),
                None => {
                    f.push(Diagnostic::new(
                        m.pos,
                        1,
                        "a schedule needs the `runbook` it runs",
                    ));
                    None
                }
            };
            let spec = schedule_spec(&mut f, m, &["runbook"], None);
            if let (Some(runbook), Some(spec)) = (runbook, spec) {
                let name = spec.name.clone().unwrap_or_else(|| runbook.clone());
                if out.iter().any(|s: &Schedule| s.name == name) {
                    f.push(Diagnostic::new(
                        m.pos,
                        1,
                        format!("two schedules are named `{name}`; give each a unique `name`"),
                    ));
                    continue;
                }
                out.push(Schedule {
                    name,
                    runbook,
                    spec,
                });
            }
        }
    }
    if f.diags.is_empty() {
        Ok(out)
    } else {
        Err((f.diags, sources))
    }
}
