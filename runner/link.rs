//! Linking: a runbook together with every runbook it calls and every file they read, resolved
//! once when a run starts so the whole set can be pinned in the journal.
//!
//! A `call` target is a template over `params` only, so it is known when the run starts (a
//! driver chosen by a parameter, say). On resume the run uses the pinned files and the pinned
//! resolution of every target, never what the library finds now.

use std::cell::RefCell;
use std::collections::{BTreeMap, HashMap};
use std::fmt::Write as _;
use std::sync::Arc;

use runbook_journals::SourceFile;
use runbook_steps::Registry;
use serde_json::{Map, Value};
use sha2::{Digest, Sha256};

use crate::diag::{Diagnostic, Diagnostics};
use crate::library::{self, Files, Library};
use crate::model::{Action, Runbook, Step, Template};
use crate::source::Sources;

/// A runbook with everything it calls, ready to run.
#[derive(Debug)]
pub struct Book {
    /// Every file read, for messages.
    pub sources: Sources,
    /// The origin of the main runbook.
    pub origin: String,
    /// Runbooks by origin (the main one included).
    pub books: HashMap<String, Arc<Runbook>>,
    /// `CALLER-ORIGIN|TARGET` → origin of the called runbook.
    pub links: BTreeMap<String, String>,
    /// Every file read, with hashes, in reading order (the main runbook first).
    pub files: Vec<SourceFile>,
    /// Warnings found in them (the runbook runs; `check` shows them).
    pub warnings: Diagnostics,
}

impl Book {
    /// The main runbook.
    pub fn main(&self) -> &Arc<Runbook> {
        &self.books[&self.origin]
    }

    /// The runbook a `call` in the runbook at `caller` resolves to for `target`.
    pub fn called(&self, caller: &str, target: &str) -> Option<(&str, &Arc<Runbook>)> {
        let origin = self.links.get(&link_key(caller, target))?;
        Some((origin.as_str(), self.books.get(origin)?))
    }
}

/// The key under which a call target's resolution is pinned.
pub fn link_key(caller: &str, target: &str) -> String {
    format!("{caller}|{target}")
}

/// Hex SHA-256 of a text.
pub fn sha256(text: &str) -> String {
    let digest = Sha256::digest(text.as_bytes());
    digest.iter().fold(String::with_capacity(64), |mut s, b| {
        let _ = write!(s, "{b:02x}");
        s
    })
}

/// Records every file read through it, for pinning.
struct Recording<'a> {
    inner: &'a dyn Files,
    read: RefCell<Vec<(String, String)>>,
}

impl Files for Recording<'_> {
    fn read(&self, origin: &str) -> Result<String, library::ReadError> {
        let text = self.inner.read(origin)?;
        let mut read = self.read.borrow_mut();
        if !read.iter().any(|(o, _)| o == origin) {
            read.push((origin.to_owned(), text.clone()));
        }
        Ok(text)
    }
}

/// How call targets are found: fresh from the library, or as pinned by a run.
pub enum Resolver<'a> {
    /// Look names up in the library now.
    Library(&'a Library),
    /// Use the resolution a run pinned.
    Pinned(&'a BTreeMap<String, String>),
}

/// Which parameter values to assume when resolving call targets.
pub enum Assume<'a> {
    /// The run's actual values.
    Values(&'a Map<String, Value>),
    /// No run: try the defaults, and every `enum` value of a parameter (for `check`).
    Everything,
}

/// Problems found while linking, with the files they point into.
#[derive(Debug)]
pub struct LinkError {
    /// The problems.
    pub diags: Diagnostics,
    /// The files read so far.
    pub sources: Sources,
}

/// A runbook still to scan for calls: its origin, itself, the parameter sets to assume, depth.
type Pending = (String, Arc<Runbook>, Vec<Map<String, Value>>, usize);

/// Loads the runbook at `origin` and everything it calls.
pub fn link(
    origin: &str,
    files: &dyn Files,
    resolver: &Resolver<'_>,
    assume: &Assume<'_>,
    registry: &Registry,
) -> Result<Book, LinkError> {
    load_main(origin, files, registry)?.link(resolver, assume, registry)
}

/// A main runbook loaded on its own, what it calls not yet linked: its parameters can be
/// resolved from it, and linking goes on from it without reading and loading it again.
pub struct Main<'f> {
    origin: String,
    recording: Recording<'f>,
    sources: Sources,
    book: Arc<Runbook>,
    diags: Diagnostics,
}

/// Loads the runbook at `origin` from `files`, recording what it reads for pinning. Only a
/// runbook that cannot be read or parsed at all fails here; [`Main::problems`] has the rest.
pub fn load_main<'f>(
    origin: &str,
    files: &'f dyn Files,
    registry: &Registry,
) -> Result<Main<'f>, LinkError> {
    let recording = Recording {
        inner: files,
        read: RefCell::new(Vec::new()),
    };
    let mut sources = Sources::new();
    match crate::load::load_partial(origin, &recording, &mut sources, registry) {
        (Some(book), diags) => Ok(Main {
            origin: origin.to_owned(),
            recording,
            sources,
            book: Arc::new(book),
            diags,
        }),
        (None, diags) => Err(LinkError { diags, sources }),
    }
}

impl Main<'_> {
    /// The main runbook.
    pub fn runbook(&self) -> &Arc<Runbook> {
        &self.book
    }

    /// The files read so far.
    pub fn sources(&self) -> &Sources {
        &self.sources
    }

    /// The main runbook's own problems, warnings included.
    pub fn problems(&self) -> &Diagnostics {
        &self.diags
    }

    /// Links what the runbook calls, reading from the files the runbook was read from.
    pub fn link(
        self,
        resolver: &Resolver<'_>,
        assume: &Assume<'_>,
        registry: &Registry,
    ) -> Result<Book, LinkError> {
        link_calls(self, resolver, assume, registry)
    }
}

fn link_calls(
    loaded: Main<'_>,
    resolver: &Resolver<'_>,
    assume: &Assume<'_>,
    registry: &Registry,
) -> Result<Book, LinkError> {
    let Main {
        origin,
        recording,
        mut sources,
        book: main,
        // Problems of the main runbook do not stop the checking of what it calls.
        mut diags,
    } = loaded;
    let origin = origin.as_str();
    let mut books: HashMap<String, Arc<Runbook>> = HashMap::new();
    let mut links = BTreeMap::new();
    books.insert(origin.to_owned(), main.clone());
    let mut queue: Vec<Pending> = Vec::new();
    let main_params = match assume {
        Assume::Values(v) => vec![(*v).clone()],
        Assume::Everything => assumed_params(&main),
    };
    queue.push((origin.to_owned(), main, main_params, 0));
    while let Some((caller_origin, book, param_sets, depth)) = queue.pop() {
        let mut calls = Vec::new();
        collect_calls(&book.steps, &mut calls);
        collect_calls(&book.on_failure, &mut calls);
        collect_calls(&book.on_abort, &mut calls);
        for step in calls {
            let Action::Call { runbook, params } = &step.action else {
                continue;
            };
            for known in &param_sets {
                let ctx = serde_json::json!({ "params": known });
                let target = match crate::template::render_str(&runbook.text, &ctx) {
                    Ok(t) => t,
                    Err(e) => {
                        if matches!(assume, Assume::Values(_))
                            || param_sets.len() == 1 && known.is_empty()
                        {
                            diags.push(
                                Diagnostic::new(
                                    runbook.pos,
                                    runbook.text.chars().count(),
                                    format!(
                                        "the call target must be known when the run starts: {}",
                                        e.message
                                    ),
                                )
                                .help("a call target may use only `params`"),
                            );
                        }
                        continue;
                    }
                };
                let key = link_key(&caller_origin, &target);
                let called_origin = match resolver {
                    Resolver::Pinned(pinned) => pinned.get(&key).cloned(),
                    Resolver::Library(lib) => {
                        if target.starts_with("./") || target.starts_with("../") {
                            Some(library::join(&caller_origin, &target))
                        } else {
                            lib.find(&target)
                        }
                    }
                };
                let Some(called_origin) = called_origin else {
                    let mut d = Diagnostic::new(
                        runbook.pos,
                        runbook.text.chars().count(),
                        format!("no runbook `{target}` to call"),
                    );
                    if let Resolver::Library(lib) = resolver {
                        let names: Vec<String> = lib.list().into_iter().map(|e| e.name).collect();
                        d = match crate::load::suggest(&target, names.iter().map(String::as_str)) {
                            Some(name) => d.did_you_mean(name),
                            None => d.help(
                                "runbooks are found by name in ./runbooks, $RUNBOOK_PATH and \
                                 the bundled library, or by a path starting with `./`",
                            ),
                        };
                    }
                    diags.push(d);
                    continue;
                };
                links.insert(key, called_origin.clone());
                if books.contains_key(&called_origin) {
                    continue;
                }
                if depth >= 16 {
                    diags.push(Diagnostic::new(
                        runbook.pos,
                        1,
                        "calls nest more than 16 deep (is there a cycle?)",
                    ));
                    continue;
                }
                let (called, problems) =
                    crate::load::load_partial(&called_origin, &recording, &mut sources, registry);
                if called.is_none() && problems.items().iter().all(|d| d.pos.is_none()) {
                    // The file could not be read: say so where it is called.
                    for d in problems.items() {
                        diags.push(Diagnostic::new(
                            runbook.pos,
                            runbook.text.chars().count(),
                            format!("cannot read the runbook `{target}` to call: {}", d.message),
                        ));
                    }
                    continue;
                }
                diags.extend(problems);
                if let Some(r) = called {
                    let r = Arc::new(r);
                    check_call_params(runbook, params, &r, &mut diags);
                    books.insert(called_origin.clone(), r.clone());
                    let sub_params = sub_params(&r, params, known);
                    queue.push((called_origin, r, vec![sub_params], depth + 1));
                }
            }
        }
    }
    diags.sort();
    if diags.errors() > 0 {
        return Err(LinkError { diags, sources });
    }
    let files = recording
        .read
        .into_inner()
        .into_iter()
        .map(|(origin, content)| SourceFile {
            sha256: sha256(&content),
            origin,
            content,
        })
        .collect();
    Ok(Book {
        sources,
        origin: origin.to_owned(),
        books,
        links,
        files,
        warnings: diags,
    })
}

/// Parameter sets to try when no run is given: the defaults, then each enum value in turn.
fn assumed_params(book: &Runbook) -> Vec<Map<String, Value>> {
    let defaults: Map<String, Value> = book
        .params
        .iter()
        .filter_map(|p| p.default.clone().map(|d| (p.name.clone(), d)))
        .collect();
    let mut sets = vec![defaults.clone()];
    for p in &book.params {
        for value in p.allowed.iter().flatten() {
            let mut set = defaults.clone();
            set.insert(p.name.clone(), value.clone());
            sets.push(set);
        }
    }
    sets
}

/// What a called runbook's parameters are known to be when the run starts: its defaults, and
/// the call's values that are literals or templates over the caller's parameters.
fn sub_params(
    book: &Runbook,
    given: &Map<String, Value>,
    caller_params: &Map<String, Value>,
) -> Map<String, Value> {
    let mut known: Map<String, Value> = book
        .params
        .iter()
        .filter_map(|p| p.default.clone().map(|d| (p.name.clone(), d)))
        .collect();
    let ctx = serde_json::json!({ "params": caller_params });
    for (k, v) in given {
        if let Ok(v) = crate::template::render_value(v, &ctx) {
            known.insert(k.clone(), v);
        }
    }
    known
}

/// Checks the parameters a call passes against those the called runbook declares. The
/// problems point at the call's target (the model keeps no position for each value).
fn check_call_params(
    target: &Template,
    given: &Map<String, Value>,
    called: &Runbook,
    diags: &mut Diagnostics,
) {
    let at = |message: String| Diagnostic::new(target.pos, target.text.chars().count(), message);
    let names: Vec<&str> = called.params.iter().map(|p| p.name.as_str()).collect();
    for name in given.keys() {
        if called.param(name).is_none() {
            let d = at(format!(
                "runbook `{}` has no parameter `{name}`",
                called.name
            ));
            diags.push(match crate::load::suggest(name, names.iter().copied()) {
                Some(s) => d.did_you_mean(s),
                None if names.is_empty() => d.help("it declares no `params`"),
                None => d.help(format!("its parameters are: {}", names.join(", "))),
            });
        }
    }
    for p in &called.params {
        if p.required && !given.contains_key(&p.name) && p.env.is_none() && p.file.is_none() {
            diags.push(at(format!(
                "the call to `{}` does not pass its required parameter `{}`",
                called.name, p.name
            )));
        }
    }
}

/// Every `call` step, however nested.
fn collect_calls<'a>(steps: &'a [Step], out: &mut Vec<&'a Step>) {
    for step in steps {
        match &step.action {
            Action::Call { .. } => out.push(step),
            Action::Foreach { steps, .. } | Action::Parallel { branches: steps } => {
                collect_calls(steps, out);
            }
            _ => {}
        }
        collect_calls(&step.on_failure, out);
    }
}
