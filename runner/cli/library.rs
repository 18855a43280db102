//! `list`, `show`, `check`, `plan`.

use std::sync::Arc;

use runbook_steps::{CancelSource, Registry};
use serde_json::json;

use crate::cli::{CliError, Env, exit};
use crate::diag::{Problem, Severity};
use crate::engine::{Engine, EngineError, GateMode, load_live};
use crate::library::Library;
use crate::model::{Action, Step};
use crate::ui::stdout::outln;
use crate::ui::{OutputMode, json};
use crate::wire::ParamInfo;

/// `runbook list`: the runbooks people run first, then the parts other runbooks call (names
/// with a `/`: drivers, per-member procedures), each with the first sentence of its description.
pub fn list(env: &Env) -> i32 {
    let library = Library::from_env();
    let registry = Registry::builtin();
    let entries: Vec<(bool, String, String, String)> = library
        .list()
        .into_iter()
        .map(|entry| {
            let description = load_live(&entry.origin, &library, &registry, None)
                .ok()
                .and_then(|b| b.main().description.clone())
                .unwrap_or_default();
            (
                entry.name.contains('/'),
                entry.name,
                entry.origin,
                description,
            )
        })
        .collect();
    if env.cli.output == OutputMode::Json {
        for (part, name, origin, description) in &entries {
            let kind = if *part { "part" } else { "runbook" };
            json::print(
                &json!({ "name": name, "kind": kind, "origin": origin, "description": description }),
            );
        }
        return exit::OK;
    }
    for (heading, part) in [("runbooks:", false), ("called by other runbooks:", true)] {
        let group: Vec<_> = entries.iter().filter(|e| e.0 == part).collect();
        if group.is_empty() {
            continue;
        }
        if part {
            outln!();
        }
        outln!("{heading}");
        for (_, name, _, description) in group {
            let line = format!("  {name:<32} {}", summary(description, LIST_WIDTH - 35));
            outln!("{}", line.trim_end());
        }
    }
    exit::OK
}

/// How wide a line of `list` gets (`--output json` has the whole description).
const LIST_WIDTH: usize = 110;

/// The first sentence of a description (or its first line), cut to `max` characters.
fn summary(description: &str, max: usize) -> String {
    let text = description.split_whitespace().collect::<Vec<_>>().join(" ");
    let sentence = text.find(". ").map_or(text.as_str(), |end| &text[..=end]);
    if sentence.chars().count() <= max {
        return sentence.to_owned();
    }
    let cut: String = sentence.chars().take(max.saturating_sub(1)).collect();
    format!("{}…", cut.trim_end())
}

/// `runbook init NAME`: a commented runbook in ./runbooks that passes `check` and runs without
/// servers. Never overwrites a file.
pub fn init(env: &Env, name: &str) -> Result<i32, CliError> {
    let valid = !name.is_empty()
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
        && name.starts_with(|c: char| c.is_ascii_alphabetic());
    if !valid {
        return Err(CliError::Usage(format!(
            "`{name}` is not a runbook name: use letters, digits, `-` and `_`, starting with a letter"
        )));
    }
    let dir = std::path::Path::new("runbooks");
    let path = dir.join(format!("{name}.yaml"));
    if path.exists() {
        return Err(CliError::Usage(format!(
            "{} exists already; nothing was written",
            path.display()
        )));
    }
    std::fs::create_dir_all(dir)
        .and_then(|()| {
            std::fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .open(&path)
        })
        .and_then(|mut f| {
            use std::io::Write as _;
            let text = INIT
                .replace("__NAME__", name)
                .replace("__SCHEMA__", SCHEMA_FILE);
            f.write_all(text.as_bytes())
        })
        .map_err(|e| CliError::Usage(format!("failed to write {}: {e}", path.display())))?;
    // The schema the file's modeline names, for editors (yaml-language-server); kept if there.
    let schema_path = dir.join(SCHEMA_FILE);
    let schema_written = !schema_path.exists();
    if schema_written {
        let schema = crate::load::schema::runbook(&Registry::builtin());
        let text = serde_json::to_string_pretty(&schema).expect("a schema serializes") + "\n";
        std::fs::write(&schema_path, text).map_err(|e| {
            CliError::Usage(format!("failed to write {}: {e}", schema_path.display()))
        })?;
    }
    if env.cli.output == OutputMode::Json {
        json::print(&json::Written {
            event: "written",
            runbook: name.to_owned(),
            file: path.display().to_string(),
            schema: schema_written.then(|| schema_path.display().to_string()),
        });
        return Ok(exit::OK);
    }
    outln!("wrote {}", path.display());
    if schema_written {
        outln!("wrote {} (for editors)", schema_path.display());
    }
    outln!("  check it:  runbook check {name}");
    outln!("  run it:    runbook run {name}");
    Ok(exit::OK)
}

/// The schema file `init` writes beside the runbook (`runbook schema`).
const SCHEMA_FILE: &str = "runbook.schema.json";

/// The runbook `init` writes.
const INIT: &str = include_str!("templates/init.yaml");

/// `runbook show NAME`.
pub fn show(env: &Env, name: &str) -> Result<i32, CliError> {
    let library = Library::from_env();
    let registry = Registry::builtin();
    let book = load_live(name, &library, &registry, None)?;
    let main = book.main();
    if env.cli.output == OutputMode::Json {
        json::print(&json::Shown {
            runbook: main.name.clone(),
            origin: crate::library::display_origin(&book.origin),
            description: main.description.clone(),
            params: main.params.iter().map(ParamInfo::of).collect(),
            lock: main.lock.as_ref().map(|l| l.text.clone()),
            prechecks: json::ShownStep::list(&main.prechecks),
            steps: json::ShownStep::list(&main.steps),
            on_failure: json::ShownStep::list(&main.on_failure),
            on_abort: json::ShownStep::list(&main.on_abort),
        });
        return Ok(exit::OK);
    }
    outln!(
        "{}  ({})",
        main.name,
        crate::library::display_origin(&book.origin)
    );
    if let Some(d) = &main.description {
        outln!("  {}", d.trim());
    }
    if !main.params.is_empty() {
        outln!("params:");
        for p in &main.params {
            let mut notes = vec![p.ty.as_str().to_owned()];
            if p.required {
                notes.push("required".into());
            }
            if let Some(d) = &p.default {
                notes.push(format!("default {d}"));
            }
            if let Some(e) = &p.env {
                notes.push(format!("env ${e}"));
            }
            if p.secret {
                notes.push("secret".into());
            }
            if let Some(allowed) = &p.allowed {
                let list: Vec<String> = allowed.iter().map(ToString::to_string).collect();
                notes.push(format!("one of {}", list.join(", ")));
            }
            if let Some(pattern) = &p.pattern {
                notes.push(format!("matching {}", pattern.as_str()));
            }
            outln!("  {:<20} {}", p.name, notes.join(", "));
            if let Some(d) = &p.description {
                outln!("  {:<20} {}", "", d);
            }
        }
    }
    if let Some(lock) = &main.lock {
        outln!("lock: {}", lock.text);
    }
    let sections = [
        ("prechecks", &main.prechecks),
        ("steps", &main.steps),
        ("on_failure", &main.on_failure),
        ("on_abort", &main.on_abort),
    ];
    for (title, steps) in sections {
        if !steps.is_empty() {
            outln!("{title}:");
            tree(steps, 1);
        }
    }
    Ok(exit::OK)
}

fn tree(steps: &[Step], depth: usize) {
    for (i, s) in steps.iter().enumerate() {
        let pad = "  ".repeat(depth);
        let name = s
            .name
            .as_deref()
            .map(|n| format!("  {n}"))
            .unwrap_or_default();
        outln!("{pad}{:<24} {}{name}", s.segment(i), s.action.kind());
        match &s.action {
            Action::Foreach { steps, .. } | Action::Parallel { branches: steps } => {
                tree(steps, depth + 1);
            }
            _ => {}
        }
    }
}

/// `runbook check [FILE…]`.
pub fn check(env: &Env, targets: &[String]) -> i32 {
    let library = Library::from_env();
    let registry = Registry::builtin();
    let targets: Vec<String> = if targets.is_empty() {
        library.list().into_iter().map(|e| e.origin).collect()
    } else {
        targets.to_vec()
    };
    let json = env.cli.output == OutputMode::Json;
    let mut problems = 0usize;
    for target in &targets {
        // Human problems go to stderr in either mode: stdout carries the verdicts.
        let (book, found, rendered, errors) = match load_live(target, &library, &registry, None) {
            // Warnings do not fail the check; they are shown before the verdict.
            Ok(book) => {
                let found = book.warnings.problems(&book.sources);
                let rendered = book.warnings.render(&book.sources, false);
                (Some(book), found, rendered, 0)
            }
            Err(EngineError::Invalid {
                rendered,
                count,
                problems,
            }) => (None, problems, rendered, count),
            Err(e) => {
                let mut problem = Problem::general(e.to_string());
                if let EngineError::NotFound(target) = &e {
                    problem.suggestion = crate::engine::runbook_meant(target);
                }
                (None, vec![problem], format!("error: {e}"), 1)
            }
        };
        problems += errors;
        if !rendered.is_empty() {
            eprintln!("{rendered}\n");
        }
        let name = book.as_ref().map(|b| b.main().name.as_str());
        let origin = book
            .as_ref()
            .map(|b| crate::library::display_origin(&b.origin));
        if json {
            for problem in &found {
                json::print(&json::CheckProblem {
                    event: "problem",
                    target,
                    problem,
                });
            }
            json::print(&json::Checked {
                event: "checked",
                target,
                runbook: name,
                origin,
                ok: errors == 0,
                errors,
                warnings: found
                    .iter()
                    .filter(|p| p.severity == Severity::Warning)
                    .count(),
            });
        } else if let (Some(name), Some(origin)) = (name, origin) {
            outln!("ok: {name} ({origin})");
        }
    }
    if problems > 0 {
        eprintln!(
            "error: {problems} problem{} found",
            if problems == 1 { "" } else { "s" }
        );
        return exit::BAD_INPUT;
    }
    exit::OK
}

/// `runbook plan NAME -p …`.
pub async fn plan(
    env: &Env,
    name: &str,
    params: &[(String, String)],
    no_prechecks: bool,
) -> Result<i32, CliError> {
    // Read-only: a plan changes nothing, and must not keep a running holder's commands out.
    let journal: Arc<dyn runbook_journals::Journal> = match env.open_journal_read_only() {
        Ok(j) => j,
        Err(_) => Arc::new(runbook_journals::MemoryJournal::new()),
    };
    let engine = Engine {
        journal,
        registry: Arc::new(Registry::builtin()),
        observers: Vec::new(),
        interrupt: CancelSource::new().token(),
        pause: crate::engine::pause::Pause::new(),
        who: env.who.clone(),
        gates: GateMode::Detach,
        library: Library::from_env(),
    };
    let plan = engine.plan(name, params, !no_prechecks).await?;
    if env.cli.output == OutputMode::Json {
        json::print(&plan);
        return Ok(exit::OK);
    }
    outln!("plan: {} ({})", plan.runbook, plan.origin);
    if !plan.params.is_empty() {
        outln!("params:");
        for (k, v) in &plan.params {
            outln!("  {k} = {v}");
        }
    }
    if let Some(lock) = &plan.lock {
        match &plan.lock_holder {
            Some(h) => outln!("lock: {lock} (held by run {h}: a run now would be refused)"),
            None => outln!("lock: {lock} (free)"),
        }
    }
    let mut refused = false;
    if !plan.prechecks.is_empty() {
        outln!("prechecks:");
        for (id, result) in &plan.prechecks {
            match result {
                Some(Ok(())) => outln!("  ok     {id}"),
                Some(Err(e)) => {
                    refused = true;
                    outln!("  FAILED {id}: {e}");
                }
                None => outln!("  -      {id}"),
            }
        }
    }
    outln!("steps:");
    for (depth, path, text) in &plan.steps {
        outln!("{}{path}: {text}", "  ".repeat(depth + 1));
    }
    if refused {
        outln!("a run now would be refused by its prechecks");
        return Ok(exit::FAILED);
    }
    Ok(exit::OK)
}

#[cfg(test)]
mod tests {
    use super::summary;

    #[test]
    fn a_listed_description_is_its_first_sentence_within_the_width() {
        assert_eq!(summary("Restart etcd. Then more.", 60), "Restart etcd.");
        assert_eq!(
            summary("One line\nwrapped on two", 60),
            "One line wrapped on two"
        );
        let long = "word ".repeat(40);
        let cut = summary(&long, 30);
        assert_eq!(cut.chars().count(), 30, "{cut}");
        assert!(cut.ends_with('…'));
        assert_eq!(summary("", 30), "");
    }
}
