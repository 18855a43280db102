//! The `cql` step kind: runs statements on Apache Cassandra (or `ScyllaDB`) and reports their
//! rows.
//!
//! ```yaml
//! cql:
//!   hosts: ["10.0.0.1:9042", "10.0.0.2:9042"]  # contact points; the port defaults to 9042
//!   keyspace: keys                              # optional: unqualified names resolve here
//!   user: rotation                              # with PasswordAuthenticator
//!   password: "{{params.cassandra_password}}"   # a secret parameter; never in the intent line
//!   consistency: QUORUM                         # the default: LOCAL_QUORUM
//!   statements:                                 # one statement (a string or a mapping), or a list
//!     - { cql: "SELECT version FROM master_keys WHERE id = ?", params: ["{{params.id}}"] }
//!     - { cql: "UPDATE master_keys SET version = :v WHERE id = :id",
//!         params: { v: 8, id: "{{params.id}}" } }
//!   timeout: 1m
//! ```
//!
//! # Connection
//!
//! `hosts` lists contact points (`host` or `host:port`, or one string with commas); the driver
//! finds the rest of the cluster from them. `keyspace` is `USE`d on every connection, and a
//! keyspace that does not exist fails the step before any statement runs. `user` and
//! `password` log in with Cassandra's `PasswordAuthenticator`; the password is never in the
//! step's one-line description.
//!
//! # Statements and values
//!
//! `statements` is one statement — a string, or `{ cql, params }` — or a list of them, each
//! prepared and executed with its `?` markers bound to `params` in order, or its `:name` markers
//! bound to a mapping by name (with a single string statement, the step's own `params`). Values are
//! bound, never spliced into the text; see [`values`] for how JSON becomes each CQL type.
//! `consistency` (`ANY`, `ONE`, `TWO`, `THREE`, `QUORUM`, `ALL`, `LOCAL_QUORUM`, `EACH_QUORUM`,
//! `LOCAL_ONE`, `SERIAL`, `LOCAL_SERIAL`) applies to every statement, and `serial_consistency`
//! (`SERIAL`, `LOCAL_SERIAL`) to the Paxos phase of lightweight transactions (`IF NOT EXISTS`, `IF
//! col = …`).
//!
//! CQL has no transactions: statements run one after another, and a failure stops the step
//! with the statements before it applied. `batch: logged` sends every statement as one logged
//! batch instead — Cassandra applies all of them or none (writes only: a batch cannot hold a
//! `SELECT`); `batch: unlogged` skips the batch log (atomic only within one partition).
//!
//! # Output
//!
//! `{results: [{columns, rows}], rows, duration_ms}` — one result per statement, and the last
//! statement's `rows` at the top. `rows` are objects from column name to value ([`values`] has
//! the mapping); `columns` lists `{name, type}`; `warnings` lists what the server warned
//! about with the result, if anything (a large batch, many tombstones read). A lightweight
//! transaction's row holds `[applied]`. Rows are read page by page; at most `max_rows` (default
//! [`DEFAULT_MAX_ROWS`]) rows of a statement are kept, and `rows_truncated: true` says more
//! were there (the remaining pages are not fetched). A batch's result has no rows.
//!
//! # How it can end
//!
//! - Every statement succeeds: the output.
//! - A statement fails: [`StepError::Failed`] naming the statement and Cassandra's error (its
//!   kind, e.g. `Unavailable` when too few replicas are up for the consistency level, and
//!   message), with the output so far plus `error: {statement, kind, message}` attached.
//! - Connecting fails (no host answers, a wrong password, a keyspace that does not exist):
//!   the same without a statement.
//! - `timeout` (default [`DEFAULT_TIMEOUT`], connecting included) passes, or the engine
//!   cancels the step: the connections are closed. CQL cannot cancel a statement the server is
//!   running; it ends by the server's own timeouts (`write_request_timeout` and friends).
//!
//! # Idempotency
//!
//! A step is idempotent by default only when every statement is a `SELECT`. Note that a
//! non-conditional `INSERT` or `UPDATE` of fixed values is idempotent in Cassandra (the same
//! write twice leaves the same row): give such a step `idempotent: true` so a resume may
//! re-run it.

pub(crate) mod values;

use std::time::Duration;

use scylla::client::session::Session;
use scylla::client::session_builder::SessionBuilder;
use scylla::errors::{
    ConnectionError, ConnectionPoolError, ConnectionSetupRequestErrorKind, DbError, ExecutionError,
    MetadataError, NewSessionError, PrepareError, RequestAttemptError, UseKeyspaceError,
};
use scylla::frame::types::{Consistency, SerialConsistency};
use scylla::response::{PagingState, PagingStateResponse};
use scylla::statement::batch::{Batch, BatchType};
use scylla::statement::prepared::PreparedStatement;
use scylla::value::{CqlValue, Row};
use serde::Deserialize;
use serde_json::{Map, Value, json};
use tokio::time::Instant;
use tracing::Instrument;

use crate::statements::{self, Shape, Statement as Item};
use crate::util::{duration_ms, is_template, json_type, parse_duration, suggest};
use crate::{BoxFuture, CancelReason, Field, FieldType, StepContext, StepError, StepKind};

const KIND: &str = "cql";

/// How long the whole step (connecting included) may take unless the spec says otherwise.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(60);

/// How long connecting may take unless the spec says otherwise.
const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// Rows of one statement kept in the output unless the spec says otherwise.
pub const DEFAULT_MAX_ROWS: u64 = 10_000;

/// CQL's native protocol port.
const DEFAULT_PORT: u16 = 9042;

/// How `statements` items are written: `{ cql, params }`, params by position or by name.
const SHAPE: Shape = Shape {
    text: "cql",
    named: true,
};

/// The `cql` step kind.
pub struct Cql;

static FIELDS: &[Field] = &[
    Field::required("hosts", FieldType::Any),
    Field::optional("keyspace", FieldType::String),
    Field::optional("user", FieldType::String),
    Field::optional("password", FieldType::String),
    Field::optional("consistency", FieldType::String),
    Field::optional("serial_consistency", FieldType::String),
    Field::required("statements", FieldType::Any),
    Field::optional("params", FieldType::Any),
    Field::optional("batch", FieldType::String),
    Field::optional("timeout", FieldType::Duration),
    Field::optional("connect_timeout", FieldType::Duration),
    Field::optional("max_rows", FieldType::Int),
];

const CONSISTENCIES: &[&str] = &[
    "ANY",
    "ONE",
    "TWO",
    "THREE",
    "QUORUM",
    "ALL",
    "LOCAL_QUORUM",
    "EACH_QUORUM",
    "LOCAL_ONE",
    "SERIAL",
    "LOCAL_SERIAL",
];

const SERIAL_CONSISTENCIES: &[&str] = &["SERIAL", "LOCAL_SERIAL"];

const BATCHES: &[&str] = &["logged", "unlogged"];

impl StepKind for Cql {
    fn name(&self) -> &'static str {
        KIND
    }

    fn fields(&self) -> &'static [Field] {
        FIELDS
    }

    fn validate(&self, spec: &Value) -> Vec<(String, String)> {
        check(spec, false)
    }

    fn idempotent(&self, spec: &Value) -> bool {
        statements::only_reads(spec, SHAPE, is_read)
    }

    fn describe(&self, spec: &Value) -> String {
        statements::describe(spec, SHAPE, target(spec))
    }

    fn run<'a>(
        &'a self,
        spec: Value,
        ctx: &'a StepContext,
    ) -> BoxFuture<'a, Result<Value, StepError>> {
        let span = tracing::info_span!(
            "cql",
            run_id = %ctx.run_id,
            path = %ctx.path,
            attempt = ctx.attempt
        );
        Box::pin(run_attempt(spec, ctx).instrument(span))
    }
}

fn spec_error(message: impl Into<String>) -> StepError {
    StepError::Spec {
        kind: KIND,
        message: message.into(),
    }
}

/// Whether `cql` only reads: its first word is `SELECT`.
fn is_read(cql: &str) -> bool {
    let mut rest = cql.trim_start();
    // Leading comments: `-- …`, `// …` and `/* … */`.
    loop {
        if let Some(after) = rest.strip_prefix("--").or_else(|| rest.strip_prefix("//")) {
            rest = after.split_once('\n').map_or("", |(_, r)| r).trim_start();
        } else if let Some(after) = rest.strip_prefix("/*") {
            rest = after.split_once("*/").map_or("", |(_, r)| r).trim_start();
        } else {
            break;
        }
    }
    rest.split(|c: char| !c.is_alphanumeric())
        .next()
        .is_some_and(|w| w.eq_ignore_ascii_case("select"))
}

/// The spec as written. Every field is judged by [`check`], so load time and run time agree.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawSpec {
    hosts: Value,
    keyspace: Option<String>,
    user: Option<String>,
    password: Option<String>,
    consistency: Option<String>,
    serial_consistency: Option<String>,
    statements: Value,
    params: Option<Value>,
    batch: Option<String>,
    #[serde(default, deserialize_with = "crate::util::duration_text")]
    timeout: Option<String>,
    #[serde(default, deserialize_with = "crate::util::duration_text")]
    connect_timeout: Option<String>,
    max_rows: Option<Value>,
}

/// A checked, rendered spec.
#[derive(Debug)]
struct Spec {
    hosts: Vec<String>,
    keyspace: Option<String>,
    login: Option<(String, String)>,
    /// Where the step connects, for messages.
    target: String,
    consistency: Option<Consistency>,
    serial_consistency: Option<SerialConsistency>,
    statements: Vec<Item>,
    batch: Option<Batched>,
    timeout: Duration,
    connect_timeout: Duration,
    max_rows: u64,
}

/// The contact points of `hosts`, each as `host:port`; the error is a spec error's message.
fn hosts(value: &Value) -> Result<Vec<String>, String> {
    let items: Vec<String> = match value {
        Value::String(s) => s.split(',').map(|h| h.trim().to_owned()).collect(),
        Value::Array(items) => items
            .iter()
            .map(|item| match item {
                Value::String(s) => Ok(s.trim().to_owned()),
                other => Err(format!("`hosts` lists {}, not a host", json_type(other))),
            })
            .collect::<Result<_, _>>()?,
        other => {
            return Err(format!(
                "`hosts` must be a list of hosts (host or host:port), not {}",
                json_type(other)
            ));
        }
    };
    if items.iter().all(String::is_empty) {
        return Err("`hosts` lists no host".to_owned());
    }
    items
        .into_iter()
        .filter(|h| !h.is_empty())
        .map(|h| with_port(&h))
        .collect()
}

/// `host` → `host:9042`; `[::1]` → `[::1]:9042`; `host:port` checked.
fn with_port(host: &str) -> Result<String, String> {
    let bad_port = |p: &str| format!("host `{host}` has an invalid port `{p}`");
    if let Some(rest) = host.strip_prefix('[') {
        let (addr, after) = rest
            .split_once(']')
            .ok_or_else(|| format!("host `{host}` has no closing `]`"))?;
        return match after.strip_prefix(':') {
            Some(p) => p
                .parse::<u16>()
                .map(|_| host.to_owned())
                .map_err(|_| bad_port(p)),
            None if after.is_empty() => Ok(format!("[{addr}]:{DEFAULT_PORT}")),
            None => Err(format!("host `{host}` has text after `]`")),
        };
    }
    match host.rsplit_once(':') {
        // More than one colon and no brackets: a bare IPv6 address.
        Some((h, _)) if h.contains(':') => Ok(format!("[{host}]:{DEFAULT_PORT}")),
        Some((_, p)) => match p.parse::<u16>() {
            Ok(port) if port > 0 => Ok(host.to_owned()),
            _ => Err(bad_port(p)),
        },
        None => Ok(format!("{host}:{DEFAULT_PORT}")),
    }
}

fn one_of(field: &str, what: &str, text: &str, names: &[&str]) -> Result<String, String> {
    let upper = text.trim().to_owned();
    let found = names.iter().find(|n| n.eq_ignore_ascii_case(&upper));
    match found {
        Some(n) => Ok((*n).to_owned()),
        None => {
            let hint = suggest(&upper, names)
                .map(|s| format!(" (did you mean `{s}`?)"))
                .unwrap_or_default();
            Err(format!(
                "`{field}`: unknown {what} `{text}`{hint}; one of {}",
                names.join(", ")
            ))
        }
    }
}

fn consistency(text: &str) -> Result<Consistency, String> {
    Ok(
        match one_of("consistency", "consistency level", text, CONSISTENCIES)?.as_str() {
            "ANY" => Consistency::Any,
            "ONE" => Consistency::One,
            "TWO" => Consistency::Two,
            "THREE" => Consistency::Three,
            "QUORUM" => Consistency::Quorum,
            "ALL" => Consistency::All,
            "EACH_QUORUM" => Consistency::EachQuorum,
            "LOCAL_ONE" => Consistency::LocalOne,
            "SERIAL" => Consistency::Serial,
            "LOCAL_SERIAL" => Consistency::LocalSerial,
            _ => Consistency::LocalQuorum,
        },
    )
}

fn serial_consistency(text: &str) -> Result<SerialConsistency, String> {
    let name = one_of(
        "serial_consistency",
        "serial consistency level",
        text,
        SERIAL_CONSISTENCIES,
    )?;
    Ok(if name == "SERIAL" {
        SerialConsistency::Serial
    } else {
        SerialConsistency::LocalSerial
    })
}

/// `batch:` — whether the statements go as one batch, and which kind.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Batched {
    Logged,
    Unlogged,
}

impl Batched {
    fn kind(self) -> BatchType {
        match self {
            Self::Logged => BatchType::Logged,
            Self::Unlogged => BatchType::Unlogged,
        }
    }
}

fn batch_type(text: &str) -> Result<Batched, String> {
    Ok(
        match one_of("batch", "batch type", text, BATCHES)?.as_str() {
            "logged" => Batched::Logged,
            _ => Batched::Unlogged,
        },
    )
}

fn positive(value: &Value) -> Option<u64> {
    let n = match value {
        Value::Number(n) => n.as_u64()?,
        Value::String(s) => s.trim().parse().ok()?,
        _ => return None,
    };
    (n > 0).then_some(n)
}

/// Every problem of a spec, as `(field, message)`. With `rendered == false`, values that are
/// still templates are not judged.
fn check(spec: &Value, rendered: bool) -> Vec<(String, String)> {
    let mut problems = Vec::new();
    let Some(map) = spec.as_object() else {
        problems.push((KIND.into(), format!("`{KIND}` must be a mapping")));
        return problems;
    };
    let mut push = |field: &str, message: String| problems.push((field.to_owned(), message));
    let given = |key: &str| map.get(key).filter(|v| !v.is_null());
    let judge = |key: &str| given(key).filter(|v| rendered || !is_template(v));
    let strip = |field: &str, e: String| e.trim_start_matches(&format!("`{field}`: ")).to_owned();

    match given("hosts") {
        Some(Value::Array(items)) if !rendered => {
            if items.is_empty() {
                push("hosts", "`hosts` lists no host".into());
            }
            for (i, item) in items.iter().enumerate() {
                match item {
                    Value::String(s) if s.contains("{{") => {}
                    Value::String(s) => {
                        if let Err(e) = with_port(s.trim()) {
                            push(&format!("/hosts/{i}"), e);
                        }
                    }
                    other => push(
                        &format!("/hosts/{i}"),
                        format!("`hosts` lists {}, not a host", json_type(other)),
                    ),
                }
            }
        }
        Some(v) if rendered || !is_template(v) => {
            if let Err(e) = hosts(v) {
                push("hosts", e);
            }
        }
        _ => {}
    }
    for (field, parse) in [
        (
            "consistency",
            (|t| consistency(t).map(drop)) as fn(&str) -> Result<(), String>,
        ),
        ("serial_consistency", |t| serial_consistency(t).map(drop)),
        ("batch", |t| batch_type(t).map(drop)),
    ] {
        if let Some(Value::String(text)) = judge(field)
            && let Err(e) = parse(text)
        {
            push(field, strip(field, e));
        }
    }
    if given("user").is_some() != given("password").is_some() {
        push(
            if given("user").is_some() {
                "user"
            } else {
                "password"
            },
            "`user` and `password` go together".into(),
        );
    }
    for field in ["timeout", "connect_timeout"] {
        if let Some(v) = judge(field) {
            let text = match v {
                Value::String(s) => Some(s.clone()),
                Value::Number(n) => Some(n.to_string()),
                _ => None,
            };
            if let Err(e) = parse_duration(field, text.as_deref()) {
                push(field, strip(field, e));
            }
        }
    }
    if let Some(v) = judge("max_rows")
        && positive(v).is_none()
    {
        push(
            "max_rows",
            format!("`max_rows` must be a whole number ≥ 1, not `{v}`"),
        );
    }
    if given("batch").is_some()
        && let Some(texts) = statements::texts(spec, SHAPE)
        && let Some(i) = texts.iter().position(|t| is_read(t))
    {
        push(
            "batch",
            format!("a batch cannot hold a SELECT (statement {})", i + 1),
        );
    }
    problems.extend(statements::problems(map, SHAPE, rendered));
    problems
}

/// Where a spec connects, for `describe` and messages: `cql://user@host:port,…/keyspace`.
fn target(spec: &Value) -> String {
    let hosts = match spec.get("hosts") {
        Some(Value::String(s)) => s.clone(),
        Some(Value::Array(items)) => items
            .iter()
            .filter_map(Value::as_str)
            .collect::<Vec<_>>()
            .join(","),
        _ => String::new(),
    };
    let user = spec
        .get("user")
        .and_then(Value::as_str)
        .map(|u| format!("{u}@"))
        .unwrap_or_default();
    let keyspace = spec
        .get("keyspace")
        .and_then(Value::as_str)
        .map(|k| format!("/{k}"))
        .unwrap_or_default();
    format!("cql://{user}{hosts}{keyspace}")
}

impl Spec {
    fn parse(value: Value) -> Result<Self, StepError> {
        if let Some((_, message)) = check(&value, true).into_iter().next() {
            return Err(spec_error(message));
        }
        let target = target(&value);
        let raw: RawSpec = serde_json::from_value(value).map_err(|e| spec_error(e.to_string()))?;
        let parse_opt = |text: Option<&String>, f: fn(&str) -> Result<_, String>| {
            text.map(|t| f(t)).transpose().map_err(spec_error)
        };
        let statements = statements::parse(raw.statements, raw.params, SHAPE);
        Ok(Self {
            hosts: hosts(&raw.hosts).map_err(spec_error)?,
            keyspace: raw.keyspace.filter(|k| !k.trim().is_empty()),
            login: raw.user.zip(raw.password),
            target,
            consistency: parse_opt(raw.consistency.as_ref(), consistency)?,
            serial_consistency: raw
                .serial_consistency
                .as_deref()
                .map(serial_consistency)
                .transpose()
                .map_err(spec_error)?,
            batch: raw
                .batch
                .as_deref()
                .map(batch_type)
                .transpose()
                .map_err(spec_error)?,
            statements,
            timeout: parse_duration("timeout", raw.timeout.as_deref())
                .map_err(spec_error)?
                .unwrap_or(DEFAULT_TIMEOUT),
            connect_timeout: parse_duration("connect_timeout", raw.connect_timeout.as_deref())
                .map_err(spec_error)?
                .unwrap_or(DEFAULT_CONNECT_TIMEOUT),
            max_rows: raw
                .max_rows
                .as_ref()
                .map_or(Some(DEFAULT_MAX_ROWS), positive)
                .ok_or_else(|| spec_error("`max_rows` must be a whole number ≥ 1"))?,
        })
    }

    fn which(&self, index: usize) -> String {
        statements::which(index, self.statements.len())
    }
}

/// What a statement produced.
#[derive(Debug, Default)]
struct Outcome {
    columns: Vec<Value>,
    rows: Vec<Value>,
    truncated: bool,
    /// What the server warned about (a large batch, a tombstone-heavy read).
    warnings: Vec<String>,
}

impl Outcome {
    fn json(&self) -> Value {
        let mut out = Map::new();
        out.insert("columns".into(), Value::Array(self.columns.clone()));
        out.insert("rows".into(), Value::Array(self.rows.clone()));
        if self.truncated {
            out.insert("rows_truncated".into(), json!(true));
        }
        if !self.warnings.is_empty() {
            out.insert("warnings".into(), json!(self.warnings));
        }
        Value::Object(out)
    }
}

/// Why a statement (or the connection) failed.
#[derive(Debug)]
struct Failure {
    statement: Option<usize>,
    /// The batch (all statements at once) failed.
    batch: bool,
    /// Cassandra's error kind (`SyntaxError`, `Invalid`, `Unavailable`, …), if it answered one.
    kind: Option<String>,
    message: String,
}

impl Failure {
    fn plain(message: impl Into<String>) -> Self {
        Self {
            statement: None,
            batch: false,
            kind: None,
            message: message.into(),
        }
    }

    fn from_db(db: &DbError, message: &str) -> Self {
        // The variant's name: `Unavailable { consistency: Quorum, … }` → `Unavailable`.
        let debug = format!("{db:?}");
        let kind = debug
            .split(|c: char| !c.is_alphanumeric())
            .next()
            .unwrap_or_default()
            .to_owned();
        Self {
            statement: None,
            batch: false,
            kind: Some(kind),
            message: message.to_owned(),
        }
    }

    fn from_attempt(e: &RequestAttemptError) -> Self {
        match e {
            RequestAttemptError::DbError(db, message) => Self::from_db(db, message),
            other => Self::plain(other.to_string()),
        }
    }

    fn from_execution(e: &ExecutionError) -> Self {
        match e {
            ExecutionError::LastAttemptError(attempt) => Self::from_attempt(attempt),
            ExecutionError::PrepareError(p) => Self::from_prepare(p),
            other => Self::plain(other.to_string()),
        }
    }

    fn from_prepare(e: &PrepareError) -> Self {
        match e {
            PrepareError::AllAttemptsFailed { first_attempt } => Self::from_attempt(first_attempt),
            other => Self::plain(other.to_string()),
        }
    }

    fn from_session(e: &NewSessionError) -> Self {
        match e {
            NewSessionError::UseKeyspaceError(UseKeyspaceError::RequestError(attempt)) => {
                Self::from_attempt(attempt)
            }
            NewSessionError::MetadataError(MetadataError::ConnectionPoolError(
                ConnectionPoolError::Broken {
                    last_connection_error,
                },
            )) => Self::from_connection(last_connection_error),
            other => Self::plain(other.to_string()),
        }
    }

    /// What stopped the driver's last connection attempt: the server's answer (a wrong
    /// password) or the innermost I/O error ("connection refused").
    fn from_connection(e: &ConnectionError) -> Self {
        match e {
            ConnectionError::ConnectionSetupRequestError(setup) => match &setup.error {
                ConnectionSetupRequestErrorKind::DbError(db, message) => Self::from_db(db, message),
                other => Self::plain(other.to_string()),
            },
            ConnectionError::IoError(io) => Self::plain(crate::util::cause(io.as_ref())),
            other => Self::plain(other.to_string()),
        }
    }

    fn at(self, statement: usize) -> Self {
        Self {
            statement: Some(statement),
            ..self
        }
    }

    fn text(&self) -> String {
        match &self.kind {
            Some(kind) => format!("{} ({kind})", self.message),
            None => self.message.clone(),
        }
    }

    fn json(&self) -> Value {
        json!({
            "statement": self.statement.map(|i| i + 1),
            "batch": self.batch,
            "kind": self.kind,
            "message": self.message,
        })
    }
}

/// Why the step stopped before its statements were done.
enum Stop {
    Timeout,
    Cancelled(CancelReason),
}

async fn run_attempt(spec: Value, ctx: &StepContext) -> Result<Value, StepError> {
    let spec = Spec::parse(spec)?;
    if let Some(reason) = ctx.cancel.reason() {
        return Err(StepError::Cancelled {
            message: format!("{reason}; nothing was sent to {}", spec.target),
            reason,
            output: None,
        });
    }
    let started = Instant::now();
    let deadline = started + spec.timeout;
    let mut results = Vec::new();
    let ended = {
        let work = connect_and_execute(&spec, &mut results);
        tokio::pin!(work);
        tokio::select! {
            biased;
            reason = ctx.cancel.cancelled() => Err(Stop::Cancelled(reason)),
            () = tokio::time::sleep_until(deadline) => Err(Stop::Timeout),
            ended = &mut work => Ok(ended),
        }
    };
    let running = results.len();
    let mut output = output(&results, started.elapsed());
    match ended {
        Ok(Ok(())) => Ok(output),
        Ok(Err(failure)) => {
            let message = match failure.statement {
                Some(i) => {
                    let applied = if spec.batch.is_some() {
                        "; the batch was not sent".to_owned()
                    } else if i > 0 {
                        format!("; the {} before it took effect", plural(i, "statement"))
                    } else {
                        String::new()
                    };
                    format!("{} failed: {}{applied}", spec.which(i), failure.text())
                }
                None if failure.batch => {
                    format!(
                        "the batch failed: {}; none of it took effect",
                        failure.text()
                    )
                }
                None => format!("failed to connect to {}: {}", spec.target, failure.text()),
            };
            if let Value::Object(m) = &mut output {
                m.insert("error".into(), failure.json());
            }
            Err(StepError::Failed {
                message,
                output: Some(output),
            })
        }
        Err(stop) => {
            let what = if spec.batch.is_some() {
                "the batch".to_owned()
            } else {
                spec.which(running.min(spec.statements.len().saturating_sub(1)))
            };
            match stop {
                Stop::Timeout => Err(StepError::Failed {
                    message: format!(
                        "{what} did not finish within {}; the connections were closed",
                        humantime::format_duration(spec.timeout)
                    ),
                    output: Some(output),
                }),
                Stop::Cancelled(reason) => Err(StepError::Cancelled {
                    message: format!("{reason} during {what}; the connections were closed"),
                    reason,
                    output: Some(output),
                }),
            }
        }
    }
}

fn plural(n: usize, word: &str) -> String {
    if n == 1 {
        word.to_owned()
    } else {
        format!("{n} {word}s")
    }
}

fn output(results: &[Outcome], took: Duration) -> Value {
    let mut out = Map::new();
    out.insert(
        "results".into(),
        Value::Array(results.iter().map(Outcome::json).collect()),
    );
    if let Some(last) = results.last() {
        out.insert("rows".into(), Value::Array(last.rows.clone()));
    }
    out.insert("duration_ms".into(), duration_ms(took));
    Value::Object(out)
}

async fn connect(spec: &Spec) -> Result<Session, Failure> {
    let mut builder = SessionBuilder::new()
        .known_nodes(&spec.hosts)
        .connection_timeout(spec.connect_timeout);
    if let Some(keyspace) = &spec.keyspace {
        builder = builder.use_keyspace(keyspace, false);
    }
    if let Some((user, password)) = &spec.login {
        builder = builder.user(user, password);
    }
    // Boxed: the driver's session future is large (~24 KB).
    match Box::pin(tokio::time::timeout(spec.connect_timeout, builder.build())).await {
        Ok(Ok(session)) => Ok(session),
        Ok(Err(e)) => Err(Failure::from_session(&e)),
        Err(_) => Err(Failure::plain(format!(
            "no connection within {}",
            humantime::format_duration(spec.connect_timeout)
        ))),
    }
}

/// Connects, then runs the statements (or the batch), pushing each one's outcome.
async fn connect_and_execute(spec: &Spec, results: &mut Vec<Outcome>) -> Result<(), Failure> {
    let session = Box::pin(connect(spec)).await?;
    let mut prepared = Vec::with_capacity(spec.statements.len());
    let mut bound = Vec::with_capacity(spec.statements.len());
    for (i, statement) in spec.statements.iter().enumerate() {
        tracing::debug!(statement = i + 1, "preparing");
        let (p, values) = prepare(&session, spec, statement)
            .await
            .map_err(|f| f.at(i))?;
        if spec.batch.is_none() {
            results.push(
                execute(&session, &p, values, spec.max_rows)
                    .await
                    .map_err(|f| f.at(i))?,
            );
        } else {
            prepared.push(p);
            bound.push(values);
        }
    }
    if let Some(kind) = spec.batch {
        let mut batch = Batch::new(kind.kind());
        if let Some(c) = spec.consistency {
            batch.set_consistency(c);
        }
        batch.set_serial_consistency(spec.serial_consistency);
        for p in prepared {
            batch.append_statement(p);
        }
        let result = session.batch(&batch, &bound).await.map_err(|e| Failure {
            batch: true,
            ..Failure::from_execution(&e)
        })?;
        let warnings: Vec<String> = result.warnings().map(str::to_owned).collect();
        results.extend(spec.statements.iter().map(|_| Outcome {
            warnings: warnings.clone(),
            ..Outcome::default()
        }));
    }
    Ok(())
}

/// Prepares a statement and binds its values (checked here, so a value that does not fit is
/// named before anything runs).
async fn prepare(
    session: &Session,
    spec: &Spec,
    statement: &Item,
) -> Result<(PreparedStatement, Vec<Option<CqlValue>>), Failure> {
    let mut prepared = session
        .prepare(statement.text.as_str())
        .await
        .map_err(|e| Failure::from_prepare(&e))?;
    if let Some(c) = spec.consistency {
        prepared.set_consistency(c);
    }
    prepared.set_serial_consistency(spec.serial_consistency);
    let specs = prepared.get_variable_col_specs();
    let names: Vec<String> = specs.iter().map(|c| c.name().to_owned()).collect();
    let types: Vec<_> = specs.iter().map(|c| c.typ().clone()).collect();
    let values = values::bind(&statement.params, &names, &types).map_err(Failure::plain)?;
    Ok((prepared, values))
}

/// Executes a prepared statement, reading its rows page by page up to `max_rows`.
async fn execute(
    session: &Session,
    prepared: &PreparedStatement,
    values: Vec<Option<CqlValue>>,
    max_rows: u64,
) -> Result<Outcome, Failure> {
    let mut outcome = Outcome::default();
    let mut paging = PagingState::start();
    loop {
        let (result, next) = session
            .execute_single_page(prepared, &values, paging)
            .await
            .map_err(|e| Failure::from_execution(&e))?;
        outcome
            .warnings
            .extend(result.warnings().map(str::to_owned));
        if !result.is_rows() {
            return Ok(outcome);
        }
        let rows = result
            .into_rows_result()
            .map_err(|e| Failure::plain(format!("cannot read the result: {e}")))?;
        if outcome.columns.is_empty() {
            outcome.columns =
                values::columns(rows.column_specs().iter().map(|c| (c.name(), c.typ())));
        }
        let names: Vec<String> = rows
            .column_specs()
            .iter()
            .map(|c| c.name().to_owned())
            .collect();
        let typed = rows
            .rows::<Row>()
            .map_err(|e| Failure::plain(format!("cannot read the rows: {e}")))?;
        for row in typed {
            let row = row.map_err(|e| Failure::plain(format!("cannot read a row: {e}")))?;
            if outcome.rows.len() as u64 >= max_rows {
                outcome.truncated = true;
                return Ok(outcome);
            }
            let object: Map<String, Value> = names
                .iter()
                .zip(&row.columns)
                .map(|(name, v)| (name.clone(), values::to_json(v.as_ref())))
                .collect();
            outcome.rows.push(Value::Object(object));
        }
        match next {
            PagingStateResponse::HasMorePages { state } => paging = state,
            PagingStateResponse::NoMorePages => return Ok(outcome),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_selects_are_reads() {
        for cql in [
            "SELECT * FROM t",
            "  select now() from system.local",
            "-- c\nSELECT 1",
            "/* x */ SELECT a FROM t",
        ] {
            assert!(is_read(cql), "{cql}");
        }
        for cql in [
            "INSERT INTO t (a) VALUES (1)",
            "UPDATE t SET a = 1",
            "selected",
            "",
            "TRUNCATE t",
        ] {
            assert!(!is_read(cql), "{cql}");
        }
        let spec = |s: Value| json!({"hosts": ["h"], "statements": s});
        assert!(Cql.idempotent(&spec(json!(["SELECT 1", {"cql": "SELECT 2"}]))));
        assert!(!Cql.idempotent(&spec(json!(["SELECT 1", "DELETE FROM t WHERE a = 1"]))));
    }

    #[test]
    fn hosts_get_the_default_port() {
        assert_eq!(
            hosts(&json!("10.0.0.1, db-2:9142")).unwrap(),
            ["10.0.0.1:9042", "db-2:9142"]
        );
        assert_eq!(
            hosts(&json!(["::1", "[::2]", "[::3]:1"])).unwrap(),
            ["[::1]:9042", "[::2]:9042", "[::3]:1"]
        );
        assert_eq!(
            hosts(&json!("db:x")).unwrap_err(),
            "host `db:x` has an invalid port `x`"
        );
        assert_eq!(hosts(&json!([])).unwrap_err(), "`hosts` lists no host");
        assert_eq!(
            hosts(&json!(3)).unwrap_err(),
            "`hosts` must be a list of hosts (host or host:port), not a number"
        );
    }

    #[test]
    fn validate_checks_the_unrendered_spec() {
        assert_eq!(
            Cql.validate(&json!({
                "hosts": ["{{params.host}}", "db:9042"],
                "consistency": "{{params.cl}}",
                "statements": [{"cql": "SELECT * FROM t WHERE id = :id", "params": {"id": "{{params.id}}"}}],
            })),
            []
        );
        assert_eq!(
            Cql.validate(&json!({
                "hosts": ["db:0", 3],
                "consistency": "local_qorum",
                "serial_consistency": "QUORUM",
                "batch": "logged",
                "user": "u",
                "max_rows": 0,
                "timeout": "soon",
                "statements": ["INSERT INTO t (a) VALUES (1)", "SELECT * FROM t"],
            })),
            [
                (
                    "/hosts/0".to_owned(),
                    "host `db:0` has an invalid port `0`".to_owned()
                ),
                (
                    "/hosts/1".to_owned(),
                    "`hosts` lists a number, not a host".to_owned()
                ),
                (
                    "consistency".to_owned(),
                    "unknown consistency level `local_qorum` (did you mean `LOCAL_QUORUM`?); one \
                     of ANY, ONE, TWO, THREE, QUORUM, ALL, LOCAL_QUORUM, EACH_QUORUM, LOCAL_ONE, \
                     SERIAL, LOCAL_SERIAL"
                        .to_owned()
                ),
                (
                    "serial_consistency".to_owned(),
                    "unknown serial consistency level `QUORUM`; one of SERIAL, LOCAL_SERIAL"
                        .to_owned()
                ),
                (
                    "user".to_owned(),
                    "`user` and `password` go together".to_owned()
                ),
                (
                    "timeout".to_owned(),
                    "invalid duration `soon`: expected number at 0".to_owned()
                ),
                (
                    "max_rows".to_owned(),
                    "`max_rows` must be a whole number ≥ 1, not `0`".to_owned()
                ),
                (
                    "batch".to_owned(),
                    "a batch cannot hold a SELECT (statement 2)".to_owned()
                ),
            ]
        );
    }

    #[test]
    fn describe_never_shows_a_password() {
        assert_eq!(
            Cql.describe(&json!({
                "hosts": ["127.0.0.1:9042", "127.0.0.2"], "keyspace": "keys", "user": "ops",
                "password": "s3cret", "statements": ["SELECT *\n FROM t", "SELECT 1"],
            })),
            "cql://ops@127.0.0.1:9042,127.0.0.2/keys: SELECT * FROM t (+1 more statement)"
        );
    }

    #[test]
    fn the_spec_is_parsed_with_its_defaults() {
        let spec = Spec::parse(json!({
            "hosts": "db", "consistency": "one", "statements": "SELECT * FROM t WHERE a = ?",
            "params": [1],
        }))
        .unwrap();
        assert_eq!(spec.hosts, ["db:9042"]);
        assert_eq!(spec.consistency, Some(Consistency::One));
        assert_eq!(spec.statements[0].params, json!([1]));
        assert_eq!(spec.timeout, DEFAULT_TIMEOUT);
        assert_eq!(spec.max_rows, DEFAULT_MAX_ROWS);
        assert!(spec.batch.is_none() && spec.login.is_none());
    }

    #[tokio::test]
    async fn an_unreachable_host_fails_to_connect_within_the_timeout() {
        use crate::test_support::{ctx, failed};
        // A port nothing listens on: bound, then closed.
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let spec = json!({
            "hosts": [format!("127.0.0.1:{port}")], "statements": "SELECT 1 FROM system.local",
            "connect_timeout": "2s",
        });
        let started = std::time::Instant::now();
        let (message, output) = failed(Cql.run(spec, &ctx(crate::Cancel::never())).await);
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "{:?}",
            started.elapsed()
        );
        assert!(
            message.starts_with(&format!("failed to connect to cql://127.0.0.1:{port}: ")),
            "{message}"
        );
        assert_eq!(output.unwrap()["error"]["statement"], Value::Null);
    }
}
