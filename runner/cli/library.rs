//! `list`, `show`, `check`, `plan`.

use std::sync::Arc;

use runbook_steps::{CancelSource, Registry};
use serde_json::json;

use crate::cli::{CliError, Env, exit};
use crate::engine::{Engine, EngineError, GateMode, load_live};
use crate::library::Library;
use crate::model::{Action, Step};
use crate::ui::OutputMode;

/// `runbook list`.
pub fn list(env: &Env) -> i32 {
    let library = Library::from_env();
    let registry = Registry::builtin();
    for entry in library.list() {
        let description = load_live(&entry.origin, &library, &registry, None)
            .ok()
            .and_then(|b| b.main().description.clone())
            .unwrap_or_default();
        if env.cli.output == OutputMode::Json {
            println!(
                "{}",
                json!({ "name": entry.name, "origin": entry.origin, "description": description })
            );
        } else {
            println!("{:<32} {}", entry.name, first_line(&description));
        }
    }
    exit::OK
}

fn first_line(s: &str) -> &str {
    s.lines().next().unwrap_or_default()
}

/// `runbook show NAME`.
pub fn show(env: &Env, name: &str) -> Result<i32, CliError> {
    let library = Library::from_env();
    let registry = Registry::builtin();
    let book = load_live(name, &library, &registry, None)?;
    let main = book.main();
    let _ = env;
    println!(
        "{}  ({})",
        main.name,
        crate::library::display_origin(&book.origin)
    );
    if let Some(d) = &main.description {
        println!("  {}", d.trim());
    }
    if !main.params.is_empty() {
        println!("params:");
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
            println!("  {:<20} {}", p.name, notes.join(", "));
            if let Some(d) = &p.description {
                println!("  {:<20} {}", "", d);
            }
        }
    }
    if let Some(lock) = &main.lock {
        println!("lock: {}", lock.text);
    }
    let sections = [
        ("prechecks", &main.prechecks),
        ("steps", &main.steps),
        ("on_failure", &main.on_failure),
    ];
    for (title, steps) in sections {
        if !steps.is_empty() {
            println!("{title}:");
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
        println!("{pad}{:<24} {}{name}", s.segment(i), s.action.kind());
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
    let mut problems = 0usize;
    for target in &targets {
        match load_live(target, &library, &registry, None) {
            Ok(book) => {
                // Warnings do not fail the check; they are shown before the verdict.
                let warnings =
                    (!book.warnings.is_empty()).then(|| book.warnings.render(&book.sources, false));
                if let Some(text) = &warnings {
                    eprintln!("{text}\n");
                }
                if env.cli.output == OutputMode::Json {
                    let mut line = json!({
                        "runbook": book.main().name,
                        "origin": crate::library::display_origin(&book.origin),
                        "ok": true,
                    });
                    if let Some(text) = warnings {
                        line["warnings"] = json!(book.warnings.len());
                        line["text"] = json!(text);
                    }
                    println!("{line}");
                } else {
                    println!(
                        "ok: {} ({})",
                        book.main().name,
                        crate::library::display_origin(&book.origin)
                    );
                }
            }
            Err(EngineError::Invalid { rendered, count }) => {
                problems += count;
                if env.cli.output == OutputMode::Json {
                    println!(
                        "{}",
                        json!({ "origin": target, "ok": false, "problems": count, "text": rendered })
                    );
                }
                eprintln!("{rendered}\n");
            }
            Err(e) => {
                problems += 1;
                eprintln!("error: {e}\n");
            }
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
        who: env.who.clone(),
        gates: GateMode::Detach,
        library: Library::from_env(),
    };
    let plan = engine.plan(name, params, !no_prechecks).await?;
    if env.cli.output == OutputMode::Json {
        println!("{}", serde_json::to_string(&plan).expect("plans serialize"));
        return Ok(exit::OK);
    }
    println!("plan: {} ({})", plan.runbook, plan.origin);
    if !plan.params.is_empty() {
        println!("params:");
        for (k, v) in &plan.params {
            println!("  {k} = {v}");
        }
    }
    if let Some(lock) = &plan.lock {
        match &plan.lock_holder {
            Some(h) => println!("lock: {lock} (held by run {h}: a run now would be refused)"),
            None => println!("lock: {lock} (free)"),
        }
    }
    let mut refused = false;
    if !plan.prechecks.is_empty() {
        println!("prechecks:");
        for (id, result) in &plan.prechecks {
            match result {
                Some(Ok(())) => println!("  ok     {id}"),
                Some(Err(e)) => {
                    refused = true;
                    println!("  FAILED {id}: {e}");
                }
                None => println!("  -      {id}"),
            }
        }
    }
    println!("steps:");
    for (depth, path, text) in &plan.steps {
        println!("{}{path}: {text}", "  ".repeat(depth + 1));
    }
    if refused {
        println!("a run now would be refused by its prechecks");
        return Ok(exit::FAILED);
    }
    Ok(exit::OK)
}
