//! Rhai expressions and scripts: `when`, `assert`, `check`, `until`, `foreach`, `script`.
//!
//! One sandboxed [`rhai::Engine`] serves the whole process. It cannot import modules, has `eval`
//! disabled, and has no file, process or network access (Rhai has none by default; `sleep` is
//! replaced by a function that refuses). Every evaluation is bounded by an operation count, call
//! and expression depth, value sizes, the memory it holds, and a wall-time limit (see
//! [`set_time_limit`]).
//!
//! Memory: Rhai checks each value's size — nested arrays, maps and strings counted as a whole —
//! but only when a function returns, so values pile up unchecked inside one call (`map` keeps
//! every result of its closure), and values its size checks do not see (closures' captured
//! variables, curried arguments, many variables at once) add up. So the evaluation's thread is
//! metered instead ([`crate::memory::Meter`]): what it allocated less what it freed since the
//! evaluation started. The meter is read at every Rhai operation and the evaluation stops with
//! an error once it holds more than [`MAX_MEMORY`]; `range`, which can allocate a large array in
//! one operation, checks before it allocates. Between two readings, what one call allocates is
//! added unseen: for Rhai's built-ins that is their result, which Rhai measures against the
//! value limits only once it is made (`to_chars` of a 10 MB string makes 160 MB of array
//! before it is refused).
//!
//! Values cross the boundary as [`serde_json::Value`]: callers put named values (`params`,
//! `steps`, `run`, `output`, a loop variable) in scope as constants, and get the result back as
//! JSON. Integers stay integers, `()` becomes `null`; values JSON cannot hold (function pointers,
//! timestamps, iterators other than integer ranges) are an error.
//!
//! Helper functions available to scripts, on top of Rhai's standard library:
//!
//! | function | result |
//! |---|---|
//! | `semver_cmp(a, b)` | -1, 0 or 1 (a leading `v` is tolerated; build metadata is ignored) |
//! | `semver_gt/gte/lt/lte/eq(a, b)` | bool |
//! | `parse_json(s)` | any JSON value (Rhai's built-in only parses objects) |
//! | `to_json(v)` | compact JSON text of any value (Rhai's built-in only takes maps) |
//! | `range(from, to)`, `range(from, to, step)` | an array of integers, `to` exclusive, negative steps allowed |
//! | `b64_encode(s)`, `b64_decode(s)` | standard base64 alphabet; decoding must give UTF-8 |
//!
//! Rhai's own `parse_int`, `parse_float`, `to_string`, `to_int`, `to_float` etc. remain available.
//!
//! Errors are [`ScriptError`]s: a message (lowercase start, no position) plus a 1-based line and
//! column relative to the expression's own source text, when Rhai knows them.

use std::cell::Cell;
use std::collections::HashMap;
use std::fmt::Write as _;
use std::hash::{Hash, Hasher};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use base64::Engine as _;
use rhai::{
    AST, Array, Dynamic, Engine, EvalAltResult, INT, ImmutableString, Map, Position, Scope,
};
use serde_json::Value;

use crate::memory::Meter;

/// Maximum number of Rhai operations one evaluation may perform.
pub const MAX_OPERATIONS: u64 = 1_000_000;
/// Maximum depth of nested function calls.
pub const MAX_CALL_LEVELS: usize = 64;
/// Maximum length of a string value, in bytes.
pub const MAX_STRING_SIZE: usize = 10 * 1024 * 1024;
/// Maximum number of elements in an array, nested arrays' elements included (also bounds
/// `range`). With [`MAX_MAP_SIZE`], room for the parsed JSON of an output of several MB.
pub const MAX_ARRAY_SIZE: usize = 1_000_000;
/// Maximum number of properties in a map, nested maps' properties included.
pub const MAX_MAP_SIZE: usize = 1_000_000;
/// Maximum memory one evaluation may come to hold, in bytes (128 MiB): room for a
/// `parse_json` of a step's output of several MB, far from what a machine can give.
pub const MAX_MEMORY: u64 = 128 << 20;
/// Wall-time limit of one evaluation unless changed with [`set_time_limit`].
pub const DEFAULT_TIME_LIMIT: Duration = Duration::from_secs(2);

/// The compile cache is cleared when it grows beyond this many entries.
const CACHE_LIMIT: usize = 10_000;
/// The deadline is checked every this many operations (a power of two).
const DEADLINE_CHECK_EVERY: u64 = 1024;

/// An expression that failed to compile or to evaluate.
///
/// `line` and `column` are 1-based and relative to the expression's source text; the caller
/// adds the position of the expression in its file.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct ScriptError {
    pub message: String,
    pub line: Option<usize>,
    pub column: Option<usize>,
}

impl ScriptError {
    fn new(message: impl Into<String>) -> Self {
        ScriptError {
            message: message.into(),
            line: None,
            column: None,
        }
    }

    fn at(message: impl Into<String>, pos: Position) -> Self {
        ScriptError {
            message: message.into(),
            line: pos.line(),
            column: pos.position(),
        }
    }
}

/// A library of Rhai `fn` definitions (a `.rhai` file) whose functions expressions may call.
#[derive(Clone)]
pub struct LibScript {
    name: String,
    fingerprint: u64,
    ast: Arc<AST>,
}

impl std::fmt::Debug for LibScript {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LibScript")
            .field("name", &self.name)
            .field("functions", &self.functions())
            .finish_non_exhaustive()
    }
}

impl LibScript {
    /// Compiles a library. It may only define functions: top-level statements are refused,
    /// because functions cannot see them and they would never run.
    pub fn compile(name: &str, src: &str) -> Result<LibScript, ScriptError> {
        let mut ast = engine().compile(src).map_err(|e| parse_error(&e))?;
        if has_statements(&ast) {
            return Err(ScriptError::new(format!(
                "library {name} may only contain `fn` definitions (top-level statements never run)"
            )));
        }
        ast.set_source(name);
        let mut hasher = std::hash::DefaultHasher::new();
        name.hash(&mut hasher);
        src.hash(&mut hasher);
        Ok(LibScript {
            name: name.to_owned(),
            fingerprint: hasher.finish(),
            ast: Arc::new(ast),
        })
    }

    /// The name the library was compiled under (usually its file name).
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The library's functions, as `name(param, …)` signatures.
    pub fn functions(&self) -> Vec<String> {
        self.ast
            .iter_functions()
            .map(|f| format!("{}({})", f.name, f.params.join(", ")))
            .collect()
    }
}

/// Whether an AST has top-level statements. `AST::statements` is only public under Rhai's
/// `internals` feature, so compare the `Debug` rendering of the statements-only part with that
/// of an empty AST (both print `body: [...]`, and nothing else differs).
fn has_statements(ast: &AST) -> bool {
    format!("{:?}", ast.clone_statements_only()) != format!("{:?}", AST::empty())
}

/// A reference to a step's output found in an expression: `steps.ID` or `steps["ID"]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StepRef {
    pub id: String,
    /// Byte offset of the id in the expression source.
    pub offset: usize,
}

// ---------------------------------------------------------------------------------------------
// The engine

static TIME_LIMIT_MS: AtomicU64 = AtomicU64::new(DEFAULT_TIME_LIMIT.as_millis() as u64);

/// The bounds of the evaluation running on a thread that Rhai's own limits do not cover.
#[derive(Clone, Copy)]
struct Bounds {
    /// When it must stop.
    deadline: Instant,
    /// The memory it holds.
    meter: Meter,
}

impl Bounds {
    /// Whether holding `more` bytes on top of what the evaluation holds stays within
    /// [`MAX_MEMORY`].
    fn memory_allows(self, more: u64) -> bool {
        self.meter.held().saturating_add(more) <= MAX_MEMORY
    }
}

thread_local! {
    /// The bounds of the evaluation running on this thread.
    static BOUNDS: Cell<Option<Bounds>> = const { Cell::new(None) };
}

/// The token an evaluation is stopped with when it exceeds its time limit.
const STOP_TIME: &str = "time limit";
/// The token an evaluation is stopped with when it holds more than [`MAX_MEMORY`].
const STOP_MEMORY: &str = "memory limit";

/// Sets the wall-time limit of each evaluation, for the whole process (default 2 s).
pub fn set_time_limit(limit: Duration) {
    let ms = u64::try_from(limit.as_millis()).unwrap_or(u64::MAX).max(1);
    TIME_LIMIT_MS.store(ms, Ordering::Relaxed);
}

/// The wall-time limit of each evaluation.
pub fn time_limit() -> Duration {
    Duration::from_millis(TIME_LIMIT_MS.load(Ordering::Relaxed))
}

/// Every function name an expression may call: the engine's own (the registered ones and Rhai's
/// packages) and the ones Rhai resolves itself.
pub fn known_functions() -> &'static std::collections::HashSet<String> {
    static KNOWN: OnceLock<std::collections::HashSet<String>> = OnceLock::new();
    KNOWN.get_or_init(|| {
        let mut names: std::collections::HashSet<String> = engine()
            .gen_fn_signatures(true)
            .into_iter()
            .filter_map(|sig| sig.split('(').next().map(str::trim).map(str::to_owned))
            .map(|name| {
                // Property getters and setters (`get$len`) are also callable by their name.
                name.strip_prefix("get$")
                    .or_else(|| name.strip_prefix("set$"))
                    .map_or_else(|| name.clone(), str::to_owned)
            })
            .collect();
        // Resolved by Rhai itself, not registered.
        for name in [
            "Fn",
            "call",
            "curry",
            "type_of",
            "print",
            "debug",
            "is_def_var",
            "is_def_fn",
            "is_shared",
            "eval",
        ] {
            names.insert(name.to_owned());
        }
        names
    })
}

fn engine() -> &'static Engine {
    static ENGINE: OnceLock<Engine> = OnceLock::new();
    ENGINE.get_or_init(build_engine)
}

fn build_engine() -> Engine {
    let mut engine = Engine::new();

    // Sandbox.
    engine.set_module_resolver(rhai::module_resolvers::DummyModuleResolver::new());
    engine.disable_symbol("eval");
    engine.disable_symbol("import");
    engine.on_print(|s| tracing::debug!(target: "runbook::script", "print: {s}"));
    engine.on_debug(|s, _, pos| tracing::debug!(target: "runbook::script", "debug at {pos}: {s}"));
    // The built-in `sleep` blocks the thread where neither the operation count nor the deadline
    // can interrupt it.
    engine.register_fn("sleep", |_: INT| -> Result<(), Box<EvalAltResult>> {
        Err("sleep is not available in expressions; use a `sleep` or `wait` step".into())
    });
    engine.register_fn(
        "sleep",
        |_: rhai::FLOAT| -> Result<(), Box<EvalAltResult>> {
            Err("sleep is not available in expressions; use a `sleep` or `wait` step".into())
        },
    );

    // No string interner: rhai's keeps 256 names and, once full, scans all of them on every
    // new one — and each step of a long runbook brings new names (`steps.s4711`). Off, a
    // chain of 10,000 `script:` steps ran 6% faster (591 vs 627 ms, medians of 7).
    engine.set_max_strings_interned(0);

    // Bounds.
    engine.set_max_operations(MAX_OPERATIONS);
    engine.set_max_call_levels(MAX_CALL_LEVELS);
    engine.set_max_expr_depths(64, 32);
    engine.set_max_string_size(MAX_STRING_SIZE);
    engine.set_max_array_size(MAX_ARRAY_SIZE);
    engine.set_max_map_size(MAX_MAP_SIZE);
    engine.on_progress(|ops| {
        let bounds = BOUNDS.get()?;
        if !bounds.memory_allows(0) {
            return Some(Dynamic::from(STOP_MEMORY));
        }
        if ops % DEADLINE_CHECK_EVERY == 0 && Instant::now() >= bounds.deadline {
            return Some(Dynamic::from(STOP_TIME));
        }
        None
    });

    // Helpers.
    engine.register_fn("semver_cmp", semver_cmp);
    engine.register_fn("semver_gt", |a: &str, b: &str| {
        semver_cmp(a, b).map(|c| c > 0)
    });
    engine.register_fn("semver_gte", |a: &str, b: &str| {
        semver_cmp(a, b).map(|c| c >= 0)
    });
    engine.register_fn("semver_lt", |a: &str, b: &str| {
        semver_cmp(a, b).map(|c| c < 0)
    });
    engine.register_fn("semver_lte", |a: &str, b: &str| {
        semver_cmp(a, b).map(|c| c <= 0)
    });
    engine.register_fn("semver_eq", |a: &str, b: &str| {
        semver_cmp(a, b).map(|c| c == 0)
    });
    engine.register_fn("parse_json", parse_json);
    engine.register_fn("to_json", to_json);
    // The global namespace (functions registered here) is searched before the standard
    // packages, so these replace Rhai's iterator-returning `range` for integers.
    engine.register_fn("range", range3);
    engine.register_fn("range", |from: INT, to: INT| range3(from, to, 1));
    engine.register_fn("b64_encode", |s: &str| {
        base64::engine::general_purpose::STANDARD.encode(s)
    });
    engine.register_fn("b64_decode", b64_decode);
    // Rhai's `trim()` changes a string in place and returns `()`, which cannot be used on the
    // constants expressions see (`output.stdout.trim()` fails). These return a new string.
    engine.register_fn("trimmed", |s: &str| s.trim().to_owned());
    engine.register_fn("lines", |s: &str| -> rhai::Array {
        s.lines()
            .map(|l| rhai::Dynamic::from(l.to_owned()))
            .collect()
    });
    engine.register_fn("unix_seconds", unix_seconds);
    engine.register_fn("in_flight", in_flight);

    engine
}

/// `unix_seconds("2026-12-01T15:04:05.25+00:00")`: seconds since the epoch of an RFC 3339
/// time (`run.started_at`, an API's timestamp), with its fraction.
fn unix_seconds(text: &str) -> RhaiResult<rhai::FLOAT> {
    let t = chrono::DateTime::parse_from_rfc3339(text.trim())
        .map_err(|e| format!("unix_seconds: `{text}` is not an RFC 3339 time: {e}"))?;
    Ok(t.timestamp() as rhai::FLOAT + f64::from(t.timestamp_subsec_nanos()) / 1e9)
}

type RhaiResult<T> = Result<T, Box<EvalAltResult>>;

fn parse_version(s: &str) -> RhaiResult<semver::Version> {
    let trimmed = s.trim();
    let bare = trimmed
        .strip_prefix('v')
        .or_else(|| trimmed.strip_prefix('V'))
        .unwrap_or(trimmed);
    semver::Version::parse(bare).map_err(|e| format!("invalid semantic version {s:?}: {e}").into())
}

fn semver_cmp(a: &str, b: &str) -> RhaiResult<INT> {
    let (a, b) = (parse_version(a)?, parse_version(b)?);
    Ok(match a.cmp_precedence(&b) {
        std::cmp::Ordering::Less => -1,
        std::cmp::Ordering::Equal => 0,
        std::cmp::Ordering::Greater => 1,
    })
}

/// `in_flight(run, "restart", "member")`: on a resume, the `member` parameter of the call step
/// `restart` (at any depth: `roll[2].restart`) that was in flight when the run stopped, from
/// `run.unfinished`; `()` when there is none (a fresh run, or nothing of the kind unfinished).
#[allow(clippy::needless_pass_by_value)] // Rhai passes script arguments by value
fn in_flight(run: Dynamic, step: &str, param: &str) -> RhaiResult<Dynamic> {
    let run = dynamic_to_json(&run).map_err(|e| format!("in_flight: {}", e.message))?;
    let found = run["unfinished"].as_array().and_then(|open| {
        open.iter().find_map(|s| {
            let path = s["path"].as_str()?;
            let last = path.rsplit('.').next()?;
            (s["kind"] == "call" && last.split('[').next() == Some(step))
                .then(|| s["intent"]["params"][param].clone())
        })
    });
    Ok(found.map_or(Dynamic::UNIT, |v| json_to_dynamic(&v)))
}

fn parse_json(s: &str) -> RhaiResult<Dynamic> {
    let value: Value =
        serde_json::from_str(s).map_err(|e| format!("parse_json: invalid JSON: {e}"))?;
    Ok(json_to_dynamic(&value))
}

#[allow(clippy::needless_pass_by_value)] // Rhai passes script arguments by value
fn to_json(v: Dynamic) -> RhaiResult<String> {
    let value = dynamic_to_json(&v).map_err(|e| format!("to_json: {}", e.message))?;
    Ok(value.to_string())
}

fn range3(from: INT, to: INT, step: INT) -> RhaiResult<Array> {
    if step == 0 {
        return Err("range: step must not be zero".into());
    }
    let (from_w, to_w, step_w) = (i128::from(from), i128::from(to), i128::from(step));
    let count = if step > 0 && to_w > from_w {
        (to_w - from_w + step_w - 1) / step_w
    } else if step < 0 && to_w < from_w {
        (from_w - to_w + (-step_w) - 1) / (-step_w)
    } else {
        0
    };
    if count > MAX_ARRAY_SIZE as i128 {
        return Err(format!(
            "range({from}, {to}, {step}) would have {count} items, more than the limit of {MAX_ARRAY_SIZE}"
        )
        .into());
    }
    // Up to 16 MB in one operation: checked before, not after, it is allocated.
    let bytes = count as u64 * std::mem::size_of::<Dynamic>() as u64;
    if BOUNDS.get().is_some_and(|b| !b.memory_allows(bytes)) {
        return Err(memory_message().into());
    }
    // `count` fits in usize and every item lies between `from` and `to`; only the step past
    // the last item may overflow, and it is never used. A plain loop: an iterator chain is
    // several times slower in unoptimised builds, where the time limit still applies.
    let count = count as usize;
    let mut items = Array::with_capacity(count);
    let mut value = from;
    for _ in 0..count {
        items.push(Dynamic::from_int(value));
        value = value.wrapping_add(step);
    }
    Ok(items)
}

fn b64_decode(s: &str) -> RhaiResult<String> {
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(s.trim())
        .map_err(|e| format!("b64_decode: invalid base64: {e}"))?;
    String::from_utf8(bytes).map_err(|_| "b64_decode: the decoded bytes are not UTF-8 text".into())
}

// ---------------------------------------------------------------------------------------------
// Compiling

type CacheKey = (Option<u64>, String);

fn cache() -> &'static Mutex<HashMap<CacheKey, Arc<AST>>> {
    static CACHE: OnceLock<Mutex<HashMap<CacheKey, Arc<AST>>>> = OnceLock::new();
    CACHE.get_or_init(|| Mutex::new(HashMap::new()))
}

/// Compiles an expression or a script (statements and `fn` definitions are allowed; the value of
/// the last statement is the result). Compiled ASTs are cached by source text.
pub fn compile(src: &str) -> Result<Arc<AST>, ScriptError> {
    compile_with_lib(src, None)
}

/// Like [`compile`], with the functions of `lib` callable from the expression. Functions the
/// expression defines itself take precedence over the library's.
pub fn compile_with_lib(src: &str, lib: Option<&LibScript>) -> Result<Arc<AST>, ScriptError> {
    let key = (lib.map(|l| l.fingerprint), src.to_owned());
    if let Some(ast) = cache()
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
        .get(&key)
    {
        return Ok(Arc::clone(ast));
    }

    let ast = engine().compile(src).map_err(|e| parse_error(&e))?;
    let ast = match lib {
        None => ast,
        Some(lib) => {
            let mut merged = (*lib.ast).clone();
            // `combine` keeps the statements of both (the library has none) and lets the
            // expression's own functions replace same-named library functions.
            merged.combine(ast);
            merged.clear_source();
            merged
        }
    };

    let mut cache = cache()
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    if cache.len() >= CACHE_LIMIT {
        cache.clear();
    }
    Ok(Arc::clone(
        cache.entry(key).or_insert_with(|| Arc::new(ast)),
    ))
}

fn parse_error(err: &rhai::ParseError) -> ScriptError {
    ScriptError::at(lower_first(&err.err_type().to_string()), err.position())
}

// ---------------------------------------------------------------------------------------------
// Evaluating

/// Restores the previous bounds of this thread when dropped.
struct BoundsGuard(Option<Bounds>);

impl BoundsGuard {
    /// Bounds an evaluation starting now on this thread.
    fn set(limit: Duration) -> BoundsGuard {
        let deadline = Instant::now().checked_add(limit).unwrap_or_else(|| {
            Instant::now() + Duration::from_secs(60 * 60 * 24 * 365) // effectively no limit
        });
        BoundsGuard(BOUNDS.replace(Some(Bounds {
            deadline,
            meter: Meter::start(),
        })))
    }
}

impl Drop for BoundsGuard {
    fn drop(&mut self) {
        BOUNDS.set(self.0);
    }
}

fn memory_message() -> String {
    format!(
        "script exceeded its memory limit of {} MiB",
        MAX_MEMORY >> 20
    )
}

/// Evaluates a compiled expression with `vars` in scope as constants and returns its value.
pub fn eval(ast: &AST, vars: &[(&str, &Value)]) -> Result<Value, ScriptError> {
    eval_with_limit(ast, vars, time_limit())
}

/// Evaluates a compiled expression that must produce `true` or `false`.
pub fn eval_bool(ast: &AST, vars: &[(&str, &Value)]) -> Result<bool, ScriptError> {
    let value = eval_dynamic(ast, vars, time_limit())?;
    value
        .as_bool()
        .map_err(|_| ScriptError::new(format!("expected true or false, got {}", describe(&value))))
}

fn eval_with_limit(
    ast: &AST,
    vars: &[(&str, &Value)],
    limit: Duration,
) -> Result<Value, ScriptError> {
    let value = eval_dynamic(ast, vars, limit)?;
    dynamic_to_json(&value)
}

fn eval_dynamic(
    ast: &AST,
    vars: &[(&str, &Value)],
    limit: Duration,
) -> Result<Dynamic, ScriptError> {
    let mut scope = Scope::new();
    for (name, value) in vars {
        scope.push_constant_dynamic(*name, json_to_dynamic(value));
    }
    let _guard = BoundsGuard::set(limit);
    engine()
        .eval_ast_with_scope::<Dynamic>(&mut scope, ast)
        .map_err(|err| runtime_error(*err, limit))
}

fn runtime_error(err: EvalAltResult, limit: Duration) -> ScriptError {
    let pos = err.position();
    ScriptError::at(runtime_message(err, limit), pos)
}

fn runtime_message(err: EvalAltResult, limit: Duration) -> String {
    match err {
        EvalAltResult::ErrorTooManyOperations(_) => {
            format!("script exceeded {MAX_OPERATIONS} operations")
        }
        EvalAltResult::ErrorTerminated(token, _) if token.to_string() == STOP_MEMORY => {
            memory_message()
        }
        EvalAltResult::ErrorTerminated(..) => {
            format!(
                "script exceeded its time limit of {}",
                format_duration(limit)
            )
        }
        EvalAltResult::ErrorStackOverflow(_) => {
            format!("script exceeded {MAX_CALL_LEVELS} levels of nested function calls")
        }
        EvalAltResult::ErrorRuntime(value, _) => match value.into_immutable_string() {
            Ok(s) if !s.is_empty() => s.to_string(),
            Ok(_) => "script threw an error".to_owned(),
            Err(type_name) => format!("script threw a value of type {type_name}"),
        },
        // A limit of the whole evaluation: where inside a call it was reached says nothing;
        // the position of the outermost call, in the expression itself, is kept.
        EvalAltResult::ErrorInFunctionCall(_, _, inner, _) if stops_evaluation(&inner) => {
            runtime_message(*inner, limit)
        }
        EvalAltResult::ErrorInFunctionCall(name, source, inner, _) => {
            let inner_pos = inner.position();
            let mut msg = runtime_message(*inner, limit);
            if name.starts_with("anon$") {
                msg.push_str(" (in a closure");
            } else {
                let _ = write!(msg, " (in function `{name}`");
            }
            if !source.is_empty() {
                let _ = write!(msg, " of {source}");
            }
            if let (Some(line), Some(col)) = (inner_pos.line(), inner_pos.position()) {
                let _ = write!(msg, ", line {line}, column {col}");
            }
            msg.push(')');
            msg
        }
        EvalAltResult::ErrorParsing(p, _) => lower_first(&p.to_string()),
        mut other => {
            let _ = other.take_position();
            lower_first(&other.to_string())
        }
    }
}

/// Whether `err` is a bound of the whole evaluation (operations, time, memory, call depth)
/// rather than a problem of the call it was reached in.
fn stops_evaluation(err: &EvalAltResult) -> bool {
    match err {
        EvalAltResult::ErrorTooManyOperations(_)
        | EvalAltResult::ErrorTerminated(..)
        | EvalAltResult::ErrorStackOverflow(_) => true,
        EvalAltResult::ErrorRuntime(value, _) => value
            .read_lock::<ImmutableString>()
            .is_some_and(|s| *s == memory_message()),
        EvalAltResult::ErrorInFunctionCall(_, _, inner, _) => stops_evaluation(inner),
        _ => false,
    }
}

fn format_duration(d: Duration) -> String {
    if d.subsec_millis() == 0 {
        format!("{}s", d.as_secs())
    } else {
        format!("{}ms", d.as_millis())
    }
}

/// Lowercases the first character unless it starts an acronym ("JSON").
fn lower_first(s: &str) -> String {
    let mut chars = s.chars();
    match (chars.next(), chars.next()) {
        (Some(first), second) if !second.is_some_and(char::is_uppercase) => first
            .to_lowercase()
            .chain(s[first.len_utf8()..].chars())
            .collect(),
        _ => s.to_owned(),
    }
}

/// A short description of a value for error messages: its type, and the value if small.
fn describe(value: &Dynamic) -> String {
    let type_name = engine().map_type_name(value.type_name());
    if value.is_unit() {
        return "() (nothing: a missing property?)".to_owned();
    }
    if value.is_int() || value.is_float() || value.is_string() || value.is_char() {
        let shown = if value.is_string() {
            format!("{:?}", value.to_string())
        } else {
            value.to_string()
        };
        if shown.chars().count() <= 40 {
            return format!("{type_name} {shown}");
        }
    }
    type_name.to_owned()
}

// ---------------------------------------------------------------------------------------------
// JSON <-> Dynamic

fn json_to_dynamic(value: &Value) -> Dynamic {
    match value {
        Value::Null => Dynamic::UNIT,
        Value::Bool(b) => Dynamic::from_bool(*b),
        Value::Number(n) => {
            if let Some(i) = n.as_i64() {
                Dynamic::from_int(i)
            } else {
                // u64 beyond i64::MAX, or a real float.
                Dynamic::from_float(n.as_f64().unwrap_or(f64::NAN))
            }
        }
        Value::String(s) => Dynamic::from(ImmutableString::from(s.as_str())),
        Value::Array(items) => Dynamic::from_array(items.iter().map(json_to_dynamic).collect()),
        Value::Object(entries) => Dynamic::from_map(
            entries
                .iter()
                .map(|(k, v)| (k.as_str().into(), json_to_dynamic(v)))
                .collect::<Map>(),
        ),
    }
}

fn unstorable(value: &Dynamic) -> ScriptError {
    ScriptError::new(format!(
        "expression produced a value of type {} that cannot be stored",
        engine().map_type_name(value.type_name())
    ))
}

fn dynamic_to_json(value: &Dynamic) -> Result<Value, ScriptError> {
    if value.is_shared() {
        return dynamic_to_json(&value.flatten_clone());
    }
    if value.is_unit() {
        return Ok(Value::Null);
    }
    if let Ok(b) = value.as_bool() {
        return Ok(Value::Bool(b));
    }
    if let Ok(i) = value.as_int() {
        return Ok(Value::from(i));
    }
    if let Ok(f) = value.as_float() {
        return serde_json::Number::from_f64(f)
            .map(Value::Number)
            .ok_or_else(|| {
                ScriptError::new(format!(
                    "expression produced the number {f}, which cannot be stored"
                ))
            });
    }
    if let Ok(c) = value.as_char() {
        return Ok(Value::String(c.to_string()));
    }
    if let Some(s) = value.read_lock::<ImmutableString>() {
        return Ok(Value::String(s.to_string()));
    }
    if let Some(items) = value.read_lock::<Array>() {
        return items
            .iter()
            .map(dynamic_to_json)
            .collect::<Result<_, _>>()
            .map(Value::Array);
    }
    if let Some(entries) = value.read_lock::<Map>() {
        return entries
            .iter()
            .map(|(k, v)| Ok((k.to_string(), dynamic_to_json(v)?)))
            .collect::<Result<serde_json::Map<_, _>, _>>()
            .map(Value::Object);
    }
    // Integer ranges (`0..3`, `0..=3`) are stored as the arrays they iterate over.
    if let Some(r) = value.read_lock::<std::ops::Range<INT>>() {
        return range_to_json(r.start, r.end, value);
    }
    if let Some(r) = value.read_lock::<std::ops::RangeInclusive<INT>>() {
        return match r.end().checked_add(1) {
            Some(end) => range_to_json(*r.start(), end, value),
            None => Err(unstorable(value)),
        };
    }
    Err(unstorable(value))
}

fn range_to_json(from: INT, to: INT, value: &Dynamic) -> Result<Value, ScriptError> {
    let items = range3(from, to, 1).map_err(|_| unstorable(value))?;
    Ok(Value::Array(
        items
            .into_iter()
            .map(|d| Value::from(d.as_int().unwrap_or_default()))
            .collect(),
    ))
}

// ---------------------------------------------------------------------------------------------
// Step references

/// Finds the references to step outputs in an expression: `steps.ID` (also `steps?.ID`) and
/// `steps["ID"]`, skipping string literals, comments, longer identifiers (`mysteps.x`) and
/// properties (`a.steps.x`). Code inside `${…}` of back-tick strings is scanned too.
pub fn step_refs(src: &str) -> Vec<StepRef> {
    refs(src, b"steps")
}

/// Finds the references to parameters in an expression (`params.NAME`, `params["NAME"]`), as
/// [`step_refs`] finds those to steps. A misspelt name would otherwise read as `()`.
pub fn param_refs(src: &str) -> Vec<StepRef> {
    refs(src, b"params")
}

fn refs(src: &str, root: &[u8]) -> Vec<StepRef> {
    let mut out = Vec::new();
    let mut scanner = Scanner {
        src: src.as_bytes(),
        text: src,
        root,
        out: &mut out,
        calls: None,
    };
    scanner.code(0, false);
    out
}

/// A function or method called in an expression, as written (`name(` or `.name(`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FnCall {
    /// The name.
    pub name: String,
    /// Byte offset of the name in the source.
    pub offset: usize,
    /// Called as a method (`x.name(…)`).
    pub method: bool,
}

/// The calls an expression makes, skipping strings, comments, keywords (`if (`), function
/// definitions (`fn name(`) and code inside `${…}` scanned like the rest.
pub fn fn_calls(src: &str) -> Vec<FnCall> {
    let mut refs = Vec::new();
    let mut calls = Vec::new();
    let mut scanner = Scanner {
        src: src.as_bytes(),
        text: src,
        root: b"",
        out: &mut refs,
        calls: Some(&mut calls),
    };
    scanner.code(0, false);
    calls
}

struct Scanner<'a> {
    src: &'a [u8],
    text: &'a str,
    /// The name whose properties are collected (`steps`, `params`).
    root: &'a [u8],
    out: &'a mut Vec<StepRef>,
    /// Where calls go, when they are collected.
    calls: Option<&'a mut Vec<FnCall>>,
}

/// Words that may stand before `(` without being calls.
const KEYWORDS: &[&str] = &[
    "if", "else", "while", "loop", "for", "in", "do", "until", "switch", "return", "throw", "try",
    "catch", "let", "const", "fn", "private", "import", "export", "as", "global", "break",
    "continue", "true", "false", "this",
];

fn is_ident_start(b: u8) -> bool {
    b.is_ascii_alphabetic() || b == b'_'
}

fn is_ident_char(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b == b'_'
}

impl Scanner<'_> {
    fn at(&self, i: usize) -> u8 {
        self.src.get(i).copied().unwrap_or(0)
    }

    /// Scans code from `i`. When `nested`, stops after the `}` closing a `${` interpolation.
    /// Returns the index after the scanned part.
    fn code(&mut self, mut i: usize, nested: bool) -> usize {
        let mut depth = 0usize;
        // The last significant (non-space, non-comment) byte before `i`.
        let mut prev = 0u8;
        // The last identifier or keyword (`fn` before a name defines it).
        let mut last_word = "";
        while i < self.src.len() {
            let b = self.src[i];
            match b {
                b'/' if self.at(i + 1) == b'/' => {
                    while i < self.src.len() && self.src[i] != b'\n' {
                        i += 1;
                    }
                    continue;
                }
                b'/' if self.at(i + 1) == b'*' => {
                    i = self.block_comment(i);
                    continue;
                }
                b'"' => {
                    i = self.string(i).1;
                    prev = b'"';
                    continue;
                }
                b'\'' => {
                    i = self.char_literal(i);
                    prev = b'\'';
                    continue;
                }
                b'`' => {
                    i = self.backtick(i);
                    prev = b'`';
                    continue;
                }
                b'#' if matches!(self.at(i + 1), b'"' | b'#') => {
                    i = self.raw_string(i).1;
                    prev = b'"';
                    continue;
                }
                b'{' => depth += 1,
                b'}' => {
                    if depth == 0 {
                        if nested {
                            return i + 1;
                        }
                    } else {
                        depth -= 1;
                    }
                }
                b if b.is_ascii_digit() => {
                    // A number; skip its alphanumeric tail so `1e5` is not an identifier.
                    while i < self.src.len() && is_ident_char(self.src[i]) {
                        i += 1;
                    }
                    prev = b'0';
                    continue;
                }
                b if is_ident_start(b) => {
                    let start = i;
                    while i < self.src.len() && is_ident_char(self.src[i]) {
                        i += 1;
                    }
                    if &self.src[start..i] == self.root && prev != b'.' {
                        self.step_ref(i);
                    }
                    let after = self.skip_space(i);
                    let defining = last_word == "fn";
                    let text = self.text;
                    let word = &text[start..i];
                    if let Some(calls) = self.calls.as_deref_mut()
                        && self.src.get(after) == Some(&b'(')
                        && !defining
                        && !KEYWORDS.contains(&word)
                    {
                        calls.push(FnCall {
                            name: word.to_owned(),
                            offset: start,
                            method: prev == b'.',
                        });
                    }
                    last_word = word;
                    prev = b'a';
                    continue;
                }
                _ => {}
            }
            if b == b'.' && i > 0 && self.src[i - 1] == b'.' {
                prev = b'R'; // the range operator `..`, not a property access
            } else if !b.is_ascii_whitespace() {
                prev = b;
            }
            i += 1;
        }
        i
    }

    fn skip_space(&self, mut i: usize) -> usize {
        while i < self.src.len() && self.src[i].is_ascii_whitespace() {
            i += 1;
        }
        i
    }

    /// After `steps` at `i`: records `.ID`, `?.ID`, `["ID"]` or `?["ID"]`.
    fn step_ref(&mut self, i: usize) {
        let mut i = self.skip_space(i);
        if self.at(i) == b'?' && matches!(self.at(i + 1), b'.' | b'[') {
            i += 1;
        }
        match self.at(i) {
            b'.' => {
                let start = self.skip_space(i + 1);
                let mut end = start;
                if is_ident_start(self.at(start)) {
                    while is_ident_char(self.at(end)) {
                        end += 1;
                    }
                    self.out.push(StepRef {
                        id: self.text[start..end].to_owned(),
                        offset: start,
                    });
                }
            }
            b'[' => {
                let open = self.skip_space(i + 1);
                if self.at(open) != b'"' {
                    return;
                }
                let (content, after) = self.string(open);
                if self.at(self.skip_space(after)) == b']' {
                    if let Some((id, offset)) = content {
                        self.out.push(StepRef { id, offset });
                    }
                }
            }
            _ => {}
        }
    }

    /// Skips a `/* */` comment (Rhai allows nesting) starting at `i`.
    fn block_comment(&self, mut i: usize) -> usize {
        let mut depth = 0usize;
        while i < self.src.len() {
            if self.src[i] == b'/' && self.at(i + 1) == b'*' {
                depth += 1;
                i += 2;
            } else if self.src[i] == b'*' && self.at(i + 1) == b'/' {
                depth -= 1;
                i += 2;
                if depth == 0 {
                    return i;
                }
            } else {
                i += 1;
            }
        }
        i
    }

    /// Skips a `"…"` string at `i`; returns its content (if it has no escapes) with the offset
    /// of the content, and the index after the closing quote.
    fn string(&self, i: usize) -> (Option<(String, usize)>, usize) {
        let start = i + 1;
        let mut j = start;
        let mut escaped = false;
        while j < self.src.len() {
            match self.src[j] {
                b'\\' => {
                    escaped = true;
                    j += 2;
                }
                b'"' => {
                    let content = (!escaped).then(|| (self.text[start..j].to_owned(), start));
                    return (content, j + 1);
                }
                _ => j += 1,
            }
        }
        (None, self.src.len())
    }

    /// Skips a `#"…"#` raw string at `i`.
    fn raw_string(&self, i: usize) -> (Option<(String, usize)>, usize) {
        let mut j = i;
        let mut hashes = 0;
        while self.at(j) == b'#' {
            hashes += 1;
            j += 1;
        }
        if self.at(j) != b'"' {
            return (None, j);
        }
        let start = j + 1;
        let mut k = start;
        while k < self.src.len() {
            if self.src[k] == b'"'
                && k + 1 + hashes <= self.src.len()
                && self.src[k + 1..=k + hashes].iter().all(|&b| b == b'#')
            {
                return (
                    Some((self.text[start..k].to_owned(), start)),
                    k + 1 + hashes,
                );
            }
            k += 1;
        }
        (None, self.src.len())
    }

    /// Skips a `'c'` character literal at `i`.
    fn char_literal(&self, i: usize) -> usize {
        let mut j = i + 1;
        while j < self.src.len() {
            match self.src[j] {
                b'\\' => j += 2,
                b'\'' | b'\n' => return j + 1,
                _ => j += 1,
            }
        }
        j
    }

    /// Skips a back-tick string at `i`, scanning the code of its `${…}` interpolations.
    fn backtick(&mut self, i: usize) -> usize {
        let mut j = i + 1;
        while j < self.src.len() {
            match self.src[j] {
                b'`' => return j + 1,
                b'$' if self.at(j + 1) == b'{' => j = self.code(j + 2, true),
                _ => j += 1,
            }
        }
        j
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn run(src: &str, vars: &[(&str, &Value)]) -> Result<Value, ScriptError> {
        eval(&*compile(src)?, vars)
    }

    fn ev(src: &str) -> Value {
        run(src, &[]).unwrap()
    }

    #[test]
    fn trimmed_and_lines_work_on_the_constants_expressions_see() {
        let out = json!({"stdout": "  2.7.2\nsecond\n"});
        assert_eq!(
            run("output.stdout.trimmed()", &[("output", &out)]).unwrap(),
            json!("2.7.2\nsecond")
        );
        assert_eq!(
            run("output.stdout.lines()[1]", &[("output", &out)]).unwrap(),
            json!("second")
        );
    }

    #[test]
    fn in_flight_finds_the_call_a_resumed_run_had_not_finished() {
        let run = json!({ "unfinished": [
            { "path": "roll", "kind": "foreach", "intent": {} },
            { "path": "roll[0].restart", "kind": "call", "intent": { "params": { "member": 2 } } },
            { "path": "roll[0].restart.member.stop", "kind": "shell", "intent": {} },
        ]});
        let fresh = json!({ "unfinished": [] });
        for (src, r, want) in [
            (r#"in_flight(run, "restart", "member")"#, &run, json!(2)),
            (r#"in_flight(run, "restart", "version")"#, &run, json!(null)),
            (r#"in_flight(run, "stop", "member")"#, &run, json!(null)),
            (r#"in_flight(run, "roll", "member")"#, &run, json!(null)),
            (
                r#"in_flight(run, "restart", "member")"#,
                &fresh,
                json!(null),
            ),
        ] {
            assert_eq!(run_with(src, r), want, "{src}");
        }
        assert_eq!(
            ev(r#"unix_seconds("1970-01-01T00:01:40.5+00:00")"#),
            json!(100.5)
        );
    }

    fn run_with(src: &str, r: &Value) -> Value {
        run(src, &[("run", r)]).unwrap()
    }

    #[test]
    fn arithmetic_and_bool() {
        assert_eq!(ev("1 + 2 * 3"), json!(7));
        assert_eq!(ev("7 / 2"), json!(3));
        assert_eq!(ev("1.5 * 2.0"), json!(3.0));
        assert_eq!(ev("1 < 2 && !(3 == 4)"), json!(true));
        assert_eq!(ev("\"a\" + 1"), json!("a1"));
        assert_eq!(ev("()"), Value::Null);
        assert_eq!(ev("let x = 2; x * 21"), json!(42));
        assert_eq!(ev("fn double(x) { x * 2 } double(4)"), json!(8));
        assert_eq!(ev("#{a: [1, 'c', ()]}"), json!({"a": [1, "c", null]}));
    }

    #[test]
    fn scope_variables_from_json() {
        let params = json!({"name": "x", "count": 3, "big": 18_446_744_073_709_551_615_u64,
                            "nested": {"list": [1, {"deep": true}]}});
        let run_info = json!({"id": "01J"});
        let vars: &[(&str, &Value)] = &[("params", &params), ("run", &run_info)];
        assert_eq!(run("params.count + 1", vars).unwrap(), json!(4));
        assert_eq!(
            run("params.nested.list[1].deep", vars).unwrap(),
            json!(true)
        );
        assert_eq!(run("params.nested.list.len()", vars).unwrap(), json!(2));
        assert_eq!(
            run("`${run.id}-${params.name}`", vars).unwrap(),
            json!("01J-x")
        );
        assert_eq!(run("params.missing", vars).unwrap(), Value::Null);
        assert_eq!(run("params", vars).unwrap()["nested"], params["nested"]);
        assert_eq!(run("type_of(params.big)", vars).unwrap(), json!("f64"));
        // Scope values are constants.
        let err = run("params.count = 5", vars).unwrap_err();
        assert!(err.message.contains("constant"), "{err}");
    }

    #[test]
    fn until_expression_over_output() {
        let ast = compile("output.status == 200 && !output.json.sealed").unwrap();
        let ready = json!({"status": 200, "json": {"sealed": false}});
        let sealed = json!({"status": 200, "json": {"sealed": true}});
        assert!(eval_bool(&ast, &[("output", &ready)]).unwrap());
        assert!(!eval_bool(&ast, &[("output", &sealed)]).unwrap());
    }

    #[test]
    fn semver_helpers() {
        assert_eq!(ev(r#"semver_gte("2.7.2", "2.6.2")"#), json!(true));
        assert_eq!(ev(r#"semver_gte("2.6.2", "2.7.2")"#), json!(false));
        assert_eq!(ev(r#"semver_cmp("v1.10.0", "1.9.0")"#), json!(1));
        assert_eq!(ev(r#"semver_cmp("1.0.0", "1.0.0+build")"#), json!(0));
        assert_eq!(ev(r#"semver_cmp("1.0.0-rc.1", "1.0.0")"#), json!(-1));
        assert_eq!(ev(r#"semver_lt("1.0.0", "1.0.1")"#), json!(true));
        assert_eq!(ev(r#"semver_lte("1.0.1", "1.0.1")"#), json!(true));
        assert_eq!(ev(r#"semver_gt("1.0.1", "1.0.1")"#), json!(false));
        assert_eq!(ev(r#"semver_eq("v2.0.0", "2.0.0")"#), json!(true));
        let labels = json!({"sts": {"output": {"metadata": {"labels": {"app.kubernetes.io/version": "2.6.2"}}}}});
        let params = json!({"to_version": "2.7.2"});
        let src = r#"semver_gte(params.to_version, steps.sts.output.metadata.labels["app.kubernetes.io/version"])"#;
        assert_eq!(
            run(src, &[("params", &params), ("steps", &labels)]).unwrap(),
            json!(true)
        );
    }

    #[test]
    fn semver_error_names_the_bad_string() {
        let err = run(r#"semver_gte("2.7", "2.6.2")"#, &[]).unwrap_err();
        assert!(
            err.message.starts_with("invalid semantic version \"2.7\""),
            "{err}"
        );
        assert_eq!((err.line, err.column), (Some(1), Some(1)));
    }

    #[test]
    fn json_helpers_round_trip() {
        assert_eq!(
            ev(r#"parse_json("{\"a\":[1,2.5,null,\"x\"]}").a[1]"#),
            json!(2.5)
        );
        assert_eq!(ev(r#"parse_json("[1,2]").len()"#), json!(2));
        assert_eq!(ev(r#"parse_json("7")"#), json!(7));
        assert_eq!(
            ev(r#"to_json(#{a: [1, (), "x"]})"#),
            json!(r#"{"a":[1,null,"x"]}"#)
        );
        assert_eq!(ev("to_json([1, 2])"), json!("[1,2]"));
        assert_eq!(ev(r#"to_json("s")"#), json!("\"s\""));
        let src = r"let m = #{b: true, n: 3}; parse_json(to_json(m)) == m";
        assert_eq!(ev(src), json!(true));
        let err = run(r#"parse_json("{nope")"#, &[]).unwrap_err();
        assert!(err.message.starts_with("parse_json: invalid JSON"), "{err}");
    }

    #[test]
    fn base64_helpers() {
        assert_eq!(ev(r#"b64_encode("hello")"#), json!("aGVsbG8="));
        assert_eq!(ev(r#"b64_decode("aGVsbG8=")"#), json!("hello"));
        assert!(
            run(r#"b64_decode("/w==")"#, &[])
                .unwrap_err()
                .message
                .contains("UTF-8")
        );
        assert!(
            run(r#"b64_decode("***")"#, &[])
                .unwrap_err()
                .message
                .contains("base64")
        );
    }

    #[test]
    fn builtins_still_available() {
        assert_eq!(ev(r#"parse_int("42") + 1"#), json!(43));
        assert_eq!(ev("3.7.to_int()"), json!(3));
        assert_eq!(ev(r#""A,b".split(",")"#), json!(["A", "b"]));
    }

    #[test]
    fn range_overrides_builtin_and_returns_arrays() {
        assert_eq!(ev("type_of(range(0, 3))"), json!("array"));
        assert_eq!(ev("range(0, 3)"), json!([0, 1, 2]));
        assert_eq!(ev("range(2, -1, -1)"), json!([2, 1, 0]));
        assert_eq!(ev("range(3 - 1, -1, -1)"), json!([2, 1, 0]));
        assert_eq!(ev("range(0, 10, 4)"), json!([0, 4, 8]));
        assert_eq!(ev("range(5, 0)"), json!([]));
        assert_eq!(ev("range(0, 3, -1)"), json!([]));
        assert_eq!(ev("let s = 0; for i in range(0, 4) { s += i } s"), json!(6));
        assert_eq!(ev("range(0, 3).map(|x| x * 2)"), json!([0, 2, 4]));
        let err = run("range(0, 3, 0)", &[]).unwrap_err();
        assert!(err.message.contains("step must not be zero"), "{err}");
        let err = run("range(0, 1000001)", &[]).unwrap_err();
        assert!(err.message.contains("more than the limit"), "{err}");
        // Integer ranges are stored as arrays; other iterators are not storable.
        assert_eq!(ev("0..3"), json!([0, 1, 2]));
        assert_eq!(ev("1..=3"), json!([1, 2, 3]));
        let err = run(r#""abc".chars()"#, &[]).unwrap_err();
        assert!(
            err.message
                .starts_with("expression produced a value of type"),
            "{err}"
        );
        assert!(err.message.ends_with("that cannot be stored"), "{err}");
    }

    #[test]
    fn foreach_expression_over_steps() {
        let steps = json!({"sts": {"output": {"spec": {"replicas": 3}}}});
        let src = "range(steps.sts.output.spec.replicas - 1, -1, -1)";
        assert_eq!(run(src, &[("steps", &steps)]).unwrap(), json!([2, 1, 0]));
    }

    #[test]
    fn function_pointer_cannot_be_stored() {
        let err = run("Fn(\"x\")", &[]).unwrap_err();
        assert_eq!(
            err.message,
            "expression produced a value of type Fn that cannot be stored"
        );
    }

    #[test]
    fn max_operations() {
        let err = run("loop {}", &[]).unwrap_err();
        assert_eq!(err.message, "script exceeded 1000000 operations");
        assert_eq!(err.to_string(), "script exceeded 1000000 operations");
    }

    #[test]
    fn time_limit_is_enforced() {
        let ast = compile("let x = 0; loop { x += 1 }").unwrap();
        let started = Instant::now();
        let err = eval_with_limit(&ast, &[], Duration::from_millis(1)).unwrap_err();
        assert_eq!(err.message, "script exceeded its time limit of 1ms");
        assert!(started.elapsed() < Duration::from_secs(1));
        let err = eval_with_limit(&ast, &[], Duration::ZERO).unwrap_err();
        assert_eq!(err.message, "script exceeded its time limit of 0s");
        // The deadline is gone after the evaluation.
        assert!(BOUNDS.get().is_none());
        assert_eq!(format_duration(DEFAULT_TIME_LIMIT), "2s");
        assert_eq!(time_limit(), DEFAULT_TIME_LIMIT);
    }

    #[test]
    fn sandbox_refuses_eval_import_and_sleep() {
        let err = compile(r#"eval("1 + 1")"#).unwrap_err();
        assert!(err.message.contains("eval"), "{err}");
        assert_eq!((err.line, err.column), (Some(1), Some(1)));
        let err = compile(r#"import "std" as s; 1"#).unwrap_err();
        assert!(err.message.contains("import"), "{err}");
        let err = run("sleep(100)", &[]).unwrap_err();
        assert!(err.message.starts_with("sleep is not available"), "{err}");
        let err = run("sleep(0.5)", &[]).unwrap_err();
        assert!(err.message.starts_with("sleep is not available"), "{err}");
        // print and debug are harmless.
        assert_eq!(ev(r#"print("hi"); debug(1); 5"#), json!(5));
    }

    #[test]
    fn parse_error_positions() {
        let err = compile("1 +").unwrap_err();
        assert_eq!((err.line, err.column), (Some(1), Some(4)), "{err:?}");
        assert_eq!(err.message, "script is incomplete");
        let err = compile("a == = 3").unwrap_err();
        assert_eq!((err.line, err.column), (Some(1), Some(6)), "{err:?}");
        let err = compile("let x = 1;\nx +* 2").unwrap_err();
        assert_eq!((err.line, err.column), (Some(2), Some(4)), "{err:?}");
        assert!(!err.to_string().contains("line"), "{err}");
    }

    #[test]
    fn runtime_error_positions() {
        let err = run("1 + nope(2)", &[]).unwrap_err();
        assert_eq!(err.message, "function not found: nope (i64)");
        assert_eq!((err.line, err.column), (Some(1), Some(5)));
        let err = run("let a = 1;\n  a + b", &[]).unwrap_err();
        assert_eq!(err.message, "variable not found: b");
        assert_eq!((err.line, err.column), (Some(2), Some(7)));
        let err = run("[1].map(|x| x + nope)", &[]).unwrap_err();
        assert_eq!(err.message, "variable not found: nope");
        assert_eq!((err.line, err.column), (Some(1), Some(17)));
        let err = run(r#"throw "custom failure""#, &[]).unwrap_err();
        assert_eq!(err.message, "custom failure");
        // A closure is named as one, not by Rhai's internal name.
        let err = run("[1].map(|x| range(0, 1, 0))", &[]).unwrap_err();
        assert_eq!(
            err.message,
            "range: step must not be zero (in a closure, line 1, column 13) (in function `map`, line 1, column 5)"
        );
    }

    #[test]
    fn eval_bool_type_error() {
        let ast = compile("1 + 1").unwrap();
        let err = eval_bool(&ast, &[]).unwrap_err();
        assert_eq!(err.message, "expected true or false, got i64 2");
        let ast = compile("params.missing").unwrap();
        let err = eval_bool(&ast, &[("params", &json!({}))]).unwrap_err();
        assert!(
            err.message.starts_with("expected true or false, got ()"),
            "{err}"
        );
        let ast = compile("\"yes\"").unwrap();
        let err = eval_bool(&ast, &[]).unwrap_err();
        assert_eq!(err.message, "expected true or false, got string \"yes\"");
    }

    #[test]
    fn lib_functions_are_callable() {
        let lib = LibScript::compile(
            "helpers.rhai",
            "fn quorum(n) { n / 2 + 1 }\nfn fails(x) {\n  x + undefined_var\n}\n",
        )
        .unwrap();
        assert_eq!(lib.name(), "helpers.rhai");
        assert_eq!(lib.functions().len(), 2);
        let ast = compile_with_lib("quorum(params.replicas)", Some(&lib)).unwrap();
        let params = json!({"replicas": 5});
        assert_eq!(eval(&ast, &[("params", &params)]).unwrap(), json!(3));
        // Without the lib, the function is unknown.
        let err = run("quorum(5)", &[]).unwrap_err();
        assert!(
            err.message.starts_with("function not found: quorum"),
            "{err}"
        );
        // An error inside a lib function points at the call, and names the function.
        let ast = compile_with_lib("1 + fails(1)", Some(&lib)).unwrap();
        let err = eval(&ast, &[]).unwrap_err();
        assert_eq!((err.line, err.column), (Some(1), Some(5)), "{err:?}");
        assert_eq!(
            err.message,
            "variable not found: undefined_var (in function `fails` of helpers.rhai, line 3, column 7)"
        );
        // The cache keys on the lib too.
        let again = compile_with_lib("quorum(params.replicas)", Some(&lib)).unwrap();
        assert!(Arc::ptr_eq(&ast_for(&lib), &again));
        // Libraries may only define functions.
        let err = LibScript::compile("bad.rhai", "let x = 1;\nfn f() { 1 }").unwrap_err();
        assert!(
            err.message.contains("only contain `fn` definitions"),
            "{err}"
        );
        let err = LibScript::compile("bad.rhai", "fn f( { 1 }").unwrap_err();
        assert_eq!(err.line, Some(1));
    }

    fn ast_for(lib: &LibScript) -> Arc<AST> {
        compile_with_lib("quorum(params.replicas)", Some(lib)).unwrap()
    }

    #[test]
    fn cache_returns_same_arc() {
        let a = compile("40 + 2 // cache test").unwrap();
        let b = compile("40 + 2 // cache test").unwrap();
        assert!(Arc::ptr_eq(&a, &b));
        let c = compile("40 + 3 // cache test").unwrap();
        assert!(!Arc::ptr_eq(&a, &c));
    }

    #[test]
    fn bounds_on_data_size() {
        let err = run("let a = []; a.pad(1000001, 0); a", &[]).unwrap_err();
        assert!(err.message.contains("too large"), "{err}");
        // Nested arrays count as a whole.
        let err = run("[range(0, 600000), range(0, 600000)]", &[]).unwrap_err();
        assert_eq!(err.message, "size of array/BLOB too large");
        let err = run("fn f(n) { f(n + 1) } f(0)", &[]).unwrap_err();
        assert!(err.message.contains("nested function calls"), "{err}");
    }

    /// The message an evaluation stops with when it holds more than [`MAX_MEMORY`].
    const OVER_MEMORY: &str = "script exceeded its memory limit of 128 MiB";

    /// Evaluates `src` without a time limit to speak of: these tests are about memory, and
    /// unoptimised test builds are slow.
    fn run_untimed(src: &str, vars: &[(&str, &Value)]) -> Result<Value, ScriptError> {
        eval_with_limit(&*compile(src)?, vars, Duration::from_secs(600))
    }

    #[test]
    fn a_map_that_piles_up_arrays_stops_at_the_memory_limit() {
        // Each result is within the value limits; together they are 3.2 GB.
        let err = run_untimed("range(0, 2000).map(|i| range(0, 100000)).len()", &[]).unwrap_err();
        assert_eq!(err.message, OVER_MEMORY);
        // At `map`: where the evaluation was when it ran out is no help.
        assert_eq!((err.line, err.column), (Some(1), Some(16)));
    }

    #[test]
    fn a_map_that_piles_up_strings_stops_at_the_memory_limit() {
        // Strings of 600 KB each.
        let src = "range(0, 2000).map(|i| to_json(range(0, 100000))).len()";
        let err = run_untimed(src, &[]).unwrap_err();
        assert_eq!(err.message, OVER_MEMORY);
    }

    #[test]
    fn values_captured_by_closures_count_against_the_memory_limit() {
        // Rhai's size checks do not look into closures; the meter sees the memory.
        let src = "let fs = []; for i in 0..2000 { let a = range(0, 100000); fs.push(|| a.len()) } fs.len()";
        let err = run_untimed(src, &[]).unwrap_err();
        assert_eq!(err.message, OVER_MEMORY);
        let src =
            r#"let fs = []; for i in 0..2000 { fs.push(Fn("len").curry(range(0, 100000))) } 1"#;
        let err = run_untimed(src, &[]).unwrap_err();
        assert_eq!(err.message, OVER_MEMORY);
    }

    #[test]
    fn memory_freed_during_an_evaluation_is_not_held_against_it() {
        // 200 arrays of 1.6 MB one after the other: 320 MB allocated, 1.6 MB held at a time.
        let src = "let n = 0; for i in 0..200 { n += range(0, 100000).len() } n";
        assert_eq!(run_untimed(src, &[]).unwrap(), json!(20_000_000));
    }

    #[test]
    fn range_refuses_before_allocating_past_the_memory_limit() {
        let src = "let keep = []; for i in 0..100 { keep.push(range(0, 1000000)) } 1";
        let err = run_untimed(src, &[]).unwrap_err();
        // The array of arrays goes past the element limit first unless the memory check
        // in `range` stops it: each array is 16 MB, and 8 of them are 128 MiB.
        assert!(
            err.message == OVER_MEMORY || err.message == "size of array/BLOB too large",
            "{err}"
        );
        // The memory limit is per evaluation: the next one starts from nothing.
        assert_eq!(ev("range(0, 1000000).len()"), json!(1_000_000));
    }

    #[test]
    fn a_large_input_is_usable() {
        // An output of 8 MB, parsed: 100 000 objects of 80 bytes.
        let items: Vec<Value> = (0..100_000)
            .map(|i| json!({"name": format!("pod-{i:06}-{}", "x".repeat(40)), "ready": i % 2 == 0}))
            .collect();
        let stdout = Value::Array(items).to_string();
        assert!(stdout.len() > 7_000_000, "{}", stdout.len());
        let output = json!({ "stdout": stdout });
        let vars: &[(&str, &Value)] = &[("output", &output)];
        let src = "parse_json(output.stdout).filter(|p| p.ready).len()";
        assert_eq!(run_untimed(src, vars).unwrap(), json!(50_000));
        let src = r#"output.stdout.split("},{").len()"#;
        assert_eq!(run_untimed(src, vars).unwrap(), json!(100_000));
    }

    #[test]
    fn step_references() {
        let ids = |src: &str| step_refs(src).into_iter().map(|r| r.id).collect::<Vec<_>>();
        let src = "steps.sts.output.spec.replicas";
        assert_eq!(
            step_refs(src),
            vec![StepRef {
                id: "sts".into(),
                offset: 6
            }]
        );
        let src = r#"steps["step-down"].output.json.ok"#;
        assert_eq!(
            step_refs(src),
            vec![StepRef {
                id: "step-down".into(),
                offset: 7
            }]
        );
        assert_eq!(ids(r#""steps.fake" + steps.real.output"#), vec!["real"]);
        assert_eq!(ids("// steps.x\nsteps.y"), vec!["y"]);
        assert_eq!(ids("/* steps.x /* nested */ steps.z */ steps.y"), vec!["y"]);
        assert_eq!(
            ids("mysteps.x + a.steps.b + steps_x.c"),
            Vec::<String>::new()
        );
        assert_eq!(
            ids("steps . spaced && steps?.elvis"),
            vec!["spaced", "elvis"]
        );
        assert_eq!(ids(r"`${steps.inter.output} steps.no`"), vec!["inter"]);
        assert_eq!(ids(r#"'"' + steps.after_char"#), vec!["after_char"]);
        assert_eq!(ids(r##"#"steps.raw"# + steps.ok"##), vec!["ok"]);
        assert_eq!(ids("steps[key]"), Vec::<String>::new());
        assert_eq!(ids("#{a: steps.in_map}"), vec!["in_map"]);
        assert_eq!(ids("0..steps.r.output.n"), vec!["r"]);
        let src = "semver_gte(params.v, steps.sts.output.metadata.labels[\"x\"])\n&& steps.a.ok";
        let refs = step_refs(src);
        assert_eq!(refs.len(), 2);
        assert_eq!(&src[refs[1].offset..=refs[1].offset], "a");
    }
}
