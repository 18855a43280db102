//! The `sql` step kind: runs statements on PostgreSQL and reports their rows.
//!
//! ```yaml
//! sql:
//!   url: postgres://app@db-0:5432/app          # or host/port/dbname/user
//!   password: "{{params.db_password}}"         # a secret parameter; never in the intent line
//!   sslmode: verify-full                       # disable | prefer (default) | require | verify-ca | verify-full
//!   ca_file: /etc/db/ca.pem
//!   statements:                                # one statement (a string or a mapping), or a list
//!     - "CREATE TABLE IF NOT EXISTS audit (id bigint PRIMARY KEY, who text, at timestamptz)"
//!     - { sql: "INSERT INTO audit VALUES ($1, $2, now())", params: [7, "{{run.started_by}}"] }
//!   transaction: true                          # the default for several statements
//!   timeout: 1m
//! ```
//!
//! # Connection
//!
//! `url` is a `postgres://` (or `postgresql://`) URL as libpq reads it; `host` (a name, an
//! address, or a directory holding the server's Unix socket), `port`, `dbname`, `user` and
//! `password` set the same things field by field, and override the URL's. One of `url` and
//! `host` is needed. `sslmode` follows libpq: `disable`; `prefer` (the default) and `require`
//! encrypt without checking the server's certificate — unless `ca_file` is given, which makes
//! them check it as `verify-ca` does; `verify-ca` checks that a CA of `ca_file` signed it;
//! `verify-full` also that it names the host. `sslmode` and `sslrootcert` may also be in the
//! URL's query. TLS is rustls on ring. The password is never in the step's one-line
//! description: a URL's is shown as `***`, and the field is left out.
//!
//! # Statements and parameters
//!
//! `statements` is one statement — a string, or `{ sql, params }` — or a list of them, each
//! prepared and run with the extended protocol, its `$1`, `$2`, … bound to `params` (with a single
//! string statement, the step's own `params`). Values are bound, never spliced into the text, so a
//! value cannot change the statement; see [`values`] for how JSON becomes each type. Several
//! statements run in one transaction by default (`transaction: false` runs each on its own); when
//! one fails, the transaction is rolled back and none of them has an effect.
//!
//! # Output
//!
//! `{results: [{columns, rows, rows_affected}], rows, rows_affected, duration_ms}` — one
//! result per statement, and the last statement's `rows` and `rows_affected` at the top for
//! the common single statement. `rows` are objects from column name to value ([`values`] has
//! the mapping); `columns` lists `{name, type}` in order; `rows_affected` is the server's count
//! (rows returned by a `SELECT`, changed by an `UPDATE`). At most `max_rows` (default
//! [`DEFAULT_MAX_ROWS`]) rows of a statement are kept, and `rows_truncated: true` says more were
//! read. A column of a type without a mapping fails the statement with its name: cast it.
//!
//! # How it can end
//!
//! - Every statement succeeds (and the transaction commits): the output.
//! - A statement fails: [`StepError::Failed`] naming the statement and PostgreSQL's SQLSTATE
//!   and message, with the output so far plus `error: {statement, sqlstate, message, detail,
//!   hint}` and `rolled_back` attached (so `assert` and `on_failure` can look at the SQLSTATE).
//!   A connection that fails is the same without a statement.
//! - `timeout` (default [`DEFAULT_TIMEOUT`], connecting included) passes: the server is asked
//!   to cancel the running statement (a cancel request, as psql's Ctrl-C sends), the
//!   connection is closed (an open transaction is rolled back), and the step fails.
//! - The engine cancels the step: the same, ending [`StepError::Cancelled`].
//!
//! # Idempotency
//!
//! A step is idempotent by default only when every statement is a read — its first word is
//! `SELECT`, `SHOW`, `EXPLAIN` (without `ANALYZE`, which runs the statement), `VALUES` or
//! `TABLE`, and a `SELECT` has no `INTO`. A `WITH` is not taken as a read (its parts may
//! write). A `SELECT` that calls a function with an effect (`nextval`, `pg_terminate_backend`)
//! is still taken as a read: give that step `idempotent: false`.

mod tls;
pub(crate) mod values;

use std::time::Duration;

use futures_util::StreamExt as _;
use reqwest::Url;
use serde::Deserialize;
use serde_json::{Map, Value, json};
use tokio::time::Instant;
use tokio_postgres::config::SslMode as PgSslMode;
use tokio_postgres::error::DbError;
use tokio_postgres::types::ToSql;
use tokio_postgres::{Client, Config, Statement};
use tracing::Instrument;

use crate::statements::{self, Shape, Statement as Item};
use crate::util::{cause, duration_ms, excerpt, is_template, parse_duration};
use crate::{BoxFuture, CancelReason, Field, FieldType, StepContext, StepError, StepKind};
use tls::SslMode;
use values::{Bind, Cell, Unbindable, Unreadable};

const KIND: &str = "sql";

/// How long the whole step (connecting included) may take unless the spec says otherwise.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(60);

/// How long connecting may take unless the spec says otherwise.
const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// Rows of one statement kept in the output unless the spec says otherwise.
pub const DEFAULT_MAX_ROWS: u64 = 10_000;

/// How long a cancel request to the server may take before the connection is just dropped.
const CANCEL_GRACE: Duration = Duration::from_secs(5);

/// The `sql` step kind.
pub struct Sql;

static FIELDS: &[Field] = &[
    Field::optional("url", FieldType::String),
    Field::optional("host", FieldType::String),
    Field::optional("port", FieldType::Int),
    Field::optional("dbname", FieldType::String),
    Field::optional("user", FieldType::String),
    Field::optional("password", FieldType::String),
    Field::optional("sslmode", FieldType::String),
    Field::optional("ca_file", FieldType::String),
    Field::required("statements", FieldType::Any),
    Field::optional("params", FieldType::List),
    Field::optional("transaction", FieldType::Bool),
    Field::optional("timeout", FieldType::Duration),
    Field::optional("connect_timeout", FieldType::Duration),
    Field::optional("max_rows", FieldType::Int),
];

/// How `statements` items are written: `{ sql, params }`, params by position.
const SHAPE: Shape = Shape {
    text: "sql",
    named: false,
};

impl StepKind for Sql {
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
            "sql",
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

/// The spec as written. Every field is judged by [`check`], so load time and run time agree.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawSpec {
    url: Option<String>,
    host: Option<String>,
    port: Option<Value>,
    dbname: Option<String>,
    user: Option<String>,
    password: Option<String>,
    sslmode: Option<String>,
    ca_file: Option<String>,
    statements: Value,
    params: Option<Value>,
    transaction: Option<bool>,
    #[serde(default, deserialize_with = "crate::util::duration_text")]
    timeout: Option<String>,
    #[serde(default, deserialize_with = "crate::util::duration_text")]
    connect_timeout: Option<String>,
    max_rows: Option<Value>,
}

/// A checked, rendered spec.
#[derive(Debug)]
struct Spec {
    config: Config,
    /// Where the step connects, without a password, for messages.
    target: String,
    ssl: SslMode,
    ca_file: Option<String>,
    statements: Vec<Item>,
    transaction: bool,
    timeout: Duration,
    connect_timeout: Duration,
    max_rows: u64,
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

    if given("url").is_none() && given("host").is_none() {
        push(
            KIND,
            format!("`{KIND}` needs `url` (postgres://…) or `host`"),
        );
    }
    if let Some(Value::String(url)) = judge("url") {
        if let Err(e) = parse_url(url) {
            push("url", e);
        }
    }
    if let Some(port) = judge("port") {
        if port_number(port).is_none() {
            push("port", format!("`port` must be 1–65535, not `{port}`"));
        }
    }
    if let Some(Value::String(mode)) = judge("sslmode") {
        if let Err(e) = SslMode::parse(mode) {
            push("sslmode", e);
        }
    }
    if let Some(Value::String(mode)) = judge("sslmode")
        && let Ok(mode) = SslMode::parse(mode)
        && mode.needs_ca()
        && given("ca_file").is_none()
    {
        push(
            "sslmode",
            format!(
                "`sslmode: {}` needs `ca_file`, the CA that signed the server's certificate",
                mode.name()
            ),
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
                push(
                    field,
                    e.trim_start_matches(&format!("`{field}`: ")).to_owned(),
                );
            }
        }
    }
    if let Some(v) = judge("max_rows") {
        if positive(v).is_none() {
            push(
                "max_rows",
                format!("`max_rows` must be a whole number ≥ 1, not `{v}`"),
            );
        }
    }
    problems.extend(statements::problems(map, SHAPE, rendered));
    problems
}

fn port_number(value: &Value) -> Option<u16> {
    let n = match value {
        Value::Number(n) => n.as_u64()?,
        Value::String(s) => s.trim().parse().ok()?,
        _ => return None,
    };
    u16::try_from(n).ok().filter(|p| *p > 0)
}

fn positive(value: &Value) -> Option<u64> {
    let n = match value {
        Value::Number(n) => n.as_u64()?,
        Value::String(s) => s.trim().parse().ok()?,
        _ => return None,
    };
    (n > 0).then_some(n)
}

/// What a `url` says, apart from the parts tokio-postgres reads itself.
#[derive(Debug, Default, PartialEq)]
struct UrlParts {
    /// The URL for tokio-postgres, without `sslmode` and `sslrootcert`.
    url: String,
    sslmode: Option<SslMode>,
    sslrootcert: Option<String>,
}

/// Checks a `postgres://` URL and takes out what this step handles itself: `sslmode` (libpq
/// knows more modes than tokio-postgres) and `sslrootcert` (the step's `ca_file`).
fn parse_url(text: &str) -> Result<UrlParts, String> {
    let scheme_ok = ["postgres://", "postgresql://"]
        .iter()
        .any(|s| text.trim_start().to_ascii_lowercase().starts_with(s));
    if !scheme_ok {
        return Err(format!(
            "`url` must start with postgres:// or postgresql://, not `{}`",
            excerpt(&masked_url(text))
        ));
    }
    let mut url = Url::parse(text.trim())
        .map_err(|e| format!("`url`: invalid URL `{}`: {e}", excerpt(&masked_url(text))))?;
    let mut parts = UrlParts::default();
    let mut kept = Vec::new();
    for (k, v) in url.query_pairs() {
        match k.as_ref() {
            "sslmode" => {
                parts.sslmode = Some(SslMode::parse(&v).map_err(|e| format!("`url`: {e}"))?);
            }
            "sslrootcert" => parts.sslrootcert = Some(v.into_owned()),
            _ => kept.push((k.into_owned(), v.into_owned())),
        }
    }
    if kept.is_empty() {
        url.set_query(None);
    } else {
        url.query_pairs_mut().clear().extend_pairs(kept);
    }
    parts.url = url.to_string();
    parts.url.parse::<Config>().map_err(|e| {
        format!(
            "`url`: invalid URL `{}`: {}",
            excerpt(&masked_url(text)),
            cause(&e)
        )
    })?;
    Ok(parts)
}

/// A connection URL with its password (in the userinfo or the query) shown as `***`.
fn masked_url(text: &str) -> String {
    let Ok(mut url) = Url::parse(text.trim()) else {
        // Not a URL: mask whatever stands between `:` and `@` after the scheme.
        return match (text.find("://"), text.rfind('@')) {
            (Some(s), Some(at)) if at > s => {
                let userinfo = &text[s + 3..at];
                match userinfo.split_once(':') {
                    Some((user, _)) => format!("{}{user}:***{}", &text[..s + 3], &text[at..]),
                    None => text.to_owned(),
                }
            }
            _ => text.to_owned(),
        };
    };
    if url.password().is_some() {
        let _ = url.set_password(Some("***"));
    }
    if url.query_pairs().any(|(k, _)| k == "password") {
        let pairs: Vec<(String, String)> = url
            .query_pairs()
            .map(|(k, v)| {
                let v = if k == "password" {
                    "***".to_owned()
                } else {
                    v.into_owned()
                };
                (k.into_owned(), v)
            })
            .collect();
        url.query_pairs_mut().clear().extend_pairs(pairs);
    }
    url.to_string()
}

/// Where a spec connects, for `describe` and messages: the URL with its password masked and
/// the fields that override it, or `postgres://user@host:port/dbname` from the fields.
fn target(spec: &Value) -> String {
    let field = |k: &str| {
        spec.get(k).and_then(|v| match v {
            Value::String(s) => Some(s.clone()),
            Value::Number(n) => Some(n.to_string()),
            _ => None,
        })
    };
    let mut base = field("url").map_or_else(String::new, |u| masked_url(&u));
    let host = field("host");
    let overrides: Vec<String> = ["host", "port", "dbname", "user"]
        .iter()
        .filter_map(|k| field(k).map(|v| format!("{k}={v}")))
        .collect();
    if base.is_empty() {
        let user = field("user").map(|u| format!("{u}@")).unwrap_or_default();
        let port = field("port").map(|p| format!(":{p}")).unwrap_or_default();
        let db = field("dbname").map(|d| format!("/{d}")).unwrap_or_default();
        return format!("postgres://{user}{}{port}{db}", host.unwrap_or_default());
    }
    if !overrides.is_empty() {
        base = format!("{base} ({})", overrides.join(", "));
    }
    base
}

/// Whether `sql` only reads (see the module docs).
pub(crate) fn is_read(sql: &str) -> bool {
    let words = sql_words(sql);
    let Some(first) = words.first() else {
        return false;
    };
    let has = |w: &str| words.iter().any(|x| x == w);
    match first.as_str() {
        "select" => !has("into"),
        "explain" => !has("analyze") && !has("analyse"),
        "show" | "values" | "table" => true,
        _ => false,
    }
}

/// The lowercased words of a statement outside comments, string literals and quoted names.
fn sql_words(sql: &str) -> Vec<String> {
    let mut words = Vec::new();
    let mut word = String::new();
    let mut chars = sql.chars().peekable();
    let mut flush = |word: &mut String| {
        if !word.is_empty() {
            words.push(word.to_ascii_lowercase());
            word.clear();
        }
    };
    while let Some(c) = chars.next() {
        match c {
            '-' if chars.peek() == Some(&'-') => {
                flush(&mut word);
                for c in chars.by_ref() {
                    if c == '\n' {
                        break;
                    }
                }
            }
            '/' if chars.peek() == Some(&'*') => {
                flush(&mut word);
                chars.next();
                let mut depth = 1;
                while depth > 0 {
                    match chars.next() {
                        Some('*') if chars.peek() == Some(&'/') => {
                            chars.next();
                            depth -= 1;
                        }
                        Some('/') if chars.peek() == Some(&'*') => {
                            chars.next();
                            depth += 1;
                        }
                        Some(_) => {}
                        None => break,
                    }
                }
            }
            '\'' | '"' => {
                flush(&mut word);
                for q in chars.by_ref() {
                    if q == c {
                        break;
                    }
                }
            }
            c if c.is_alphanumeric() || c == '_' => word.push(c),
            _ => flush(&mut word),
        }
    }
    flush(&mut word);
    words
}

impl Spec {
    fn parse(value: Value) -> Result<Self, StepError> {
        if let Some((_, message)) = check(&value, true).into_iter().next() {
            return Err(spec_error(message));
        }
        let target = target(&value);
        let raw: RawSpec = serde_json::from_value(value).map_err(|e| spec_error(e.to_string()))?;
        let mut config = Config::new();
        let mut ssl = SslMode::Prefer;
        let mut ca_file = None;
        if let Some(url) = &raw.url {
            let parts = parse_url(url).map_err(spec_error)?;
            config = parts
                .url
                .parse()
                .map_err(|e: tokio_postgres::Error| spec_error(format!("`url`: {}", cause(&e))))?;
            if let Some(mode) = parts.sslmode {
                ssl = mode;
            }
            ca_file = parts.sslrootcert;
        }
        if let Some(host) = &raw.host {
            // The field replaces the URL's hosts (a URL may list several).
            let mut fresh = Config::new();
            copy_except_hosts(&config, &mut fresh);
            config = fresh;
            config.host(host);
        }
        if let Some(port) = &raw.port {
            config.port(port_number(port).ok_or_else(|| spec_error("`port` must be 1–65535"))?);
        }
        if let Some(dbname) = &raw.dbname {
            config.dbname(dbname);
        }
        if let Some(user) = &raw.user {
            config.user(user);
        }
        if let Some(password) = &raw.password {
            config.password(password);
        }
        if let Some(mode) = &raw.sslmode {
            ssl = SslMode::parse(mode).map_err(spec_error)?;
        }
        if raw.ca_file.is_some() {
            ca_file = raw.ca_file;
        }
        if ssl.needs_ca() && ca_file.is_none() {
            return Err(spec_error(format!(
                "`sslmode: {}` needs `ca_file`, the CA that signed the server's certificate",
                ssl.name()
            )));
        }
        config.ssl_mode(match ssl {
            SslMode::Disable => PgSslMode::Disable,
            SslMode::Prefer => PgSslMode::Prefer,
            SslMode::Require | SslMode::VerifyCa | SslMode::VerifyFull => PgSslMode::Require,
        });
        if config.get_application_name().is_none() {
            config.application_name("runbook");
        }
        let statements = statements::parse(raw.statements, raw.params, SHAPE);
        let timeout = parse_duration("timeout", raw.timeout.as_deref())
            .map_err(spec_error)?
            .unwrap_or(DEFAULT_TIMEOUT);
        let connect_timeout = parse_duration("connect_timeout", raw.connect_timeout.as_deref())
            .map_err(spec_error)?
            .unwrap_or(DEFAULT_CONNECT_TIMEOUT);
        let max_rows = raw
            .max_rows
            .as_ref()
            .map_or(Some(DEFAULT_MAX_ROWS), positive)
            .ok_or_else(|| spec_error("`max_rows` must be a whole number ≥ 1"))?;
        Ok(Self {
            config,
            target,
            ssl,
            ca_file,
            transaction: raw.transaction.unwrap_or(statements.len() > 1),
            statements,
            timeout,
            connect_timeout,
            max_rows,
        })
    }

    /// `statement 2 of 3` or `the statement`.
    fn which(&self, index: usize) -> String {
        statements::which(index, self.statements.len())
    }
}

/// Copies every setting of `from` but its hosts and ports into `to`.
fn copy_except_hosts(from: &Config, to: &mut Config) {
    if let Some(user) = from.get_user() {
        to.user(user);
    }
    if let Some(password) = from.get_password() {
        to.password(password);
    }
    if let Some(dbname) = from.get_dbname() {
        to.dbname(dbname);
    }
    if let Some(options) = from.get_options() {
        to.options(options);
    }
    if let Some(name) = from.get_application_name() {
        to.application_name(name);
    }
    if let Some(port) = from.get_ports().first() {
        to.port(*port);
    }
}

/// What a statement produced.
#[derive(Debug, Default)]
struct Outcome {
    columns: Vec<Value>,
    rows: Vec<Value>,
    rows_affected: u64,
    truncated: bool,
}

impl Outcome {
    fn json(&self) -> Value {
        let mut out = Map::new();
        out.insert("columns".into(), Value::Array(self.columns.clone()));
        out.insert("rows".into(), Value::Array(self.rows.clone()));
        out.insert("rows_affected".into(), json!(self.rows_affected));
        if self.truncated {
            out.insert("rows_truncated".into(), json!(true));
        }
        Value::Object(out)
    }
}

/// Why a statement (or the connection) failed.
#[derive(Debug)]
struct Failure {
    /// The statement's index, if a statement failed.
    statement: Option<usize>,
    sqlstate: Option<String>,
    message: String,
    detail: Option<String>,
    hint: Option<String>,
}

impl Failure {
    fn from_pg(statement: Option<usize>, error: &tokio_postgres::Error) -> Self {
        if let Some(db) = error.as_db_error() {
            return Self::from_db(statement, db);
        }
        let message = if let Some(source) = std::error::Error::source(error)
            && let Some(e) = source.downcast_ref::<Unreadable>()
        {
            e.to_string()
        } else {
            cause(error)
        };
        Self {
            statement,
            sqlstate: None,
            message,
            detail: None,
            hint: None,
        }
    }

    fn from_db(statement: Option<usize>, db: &DbError) -> Self {
        Self {
            statement,
            sqlstate: Some(db.code().code().to_owned()),
            message: db.message().to_owned(),
            detail: db.detail().map(str::to_owned),
            hint: db.hint().map(str::to_owned),
        }
    }

    fn plain(statement: Option<usize>, message: impl Into<String>) -> Self {
        Self {
            statement,
            sqlstate: None,
            message: message.into(),
            detail: None,
            hint: None,
        }
    }

    /// `ERROR 23505: duplicate key … (Key (id)=(1) already exists.)`.
    fn text(&self) -> String {
        let mut text = match &self.sqlstate {
            Some(code) => format!("{} (SQLSTATE {code})", self.message),
            None => self.message.clone(),
        };
        if let Some(detail) = &self.detail {
            text.push_str(": ");
            text.push_str(detail);
        }
        if let Some(hint) = &self.hint {
            text.push_str("; hint: ");
            text.push_str(hint);
        }
        text
    }

    fn json(&self) -> Value {
        json!({
            "statement": self.statement.map(|i| i + 1),
            "sqlstate": self.sqlstate,
            "message": self.message,
            "detail": self.detail,
            "hint": self.hint,
        })
    }
}

/// How the statements ended.
enum Ended {
    Done,
    Failed(Failure),
    Stopped(Stop),
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
    let tls = tls::connector(spec.ssl, spec.ca_file.as_deref()).map_err(|e| StepError::Failed {
        message: e,
        output: None,
    })?;
    let connect = tokio::time::timeout(spec.connect_timeout, spec.config.connect(tls.clone()));
    let connected = tokio::select! {
        biased;
        reason = ctx.cancel.cancelled() => Err(Stop::Cancelled(reason)),
        () = tokio::time::sleep_until(deadline) => Err(Stop::Timeout),
        result = connect => Ok(result),
    };
    let (client, connection) = match connected {
        Err(Stop::Cancelled(reason)) => {
            return Err(StepError::Cancelled {
                message: format!("{reason} while connecting to {}", spec.target),
                reason,
                output: None,
            });
        }
        Err(Stop::Timeout) | Ok(Err(_)) => {
            let within = humantime::format_duration(spec.timeout.min(spec.connect_timeout));
            return Err(connect_failed(
                &spec,
                &Failure::plain(None, format!("no connection within {within}")),
            ));
        }
        Ok(Ok(Err(e))) => return Err(connect_failed(&spec, &Failure::from_pg(None, &e))),
        Ok(Ok(Ok(pair))) => pair,
    };
    // The connection does the I/O; it ends when the client is dropped.
    let connection = AbortOnDrop(tokio::spawn(async move {
        if let Err(e) = connection.await {
            tracing::debug!(error = %cause(&e), "connection ended");
        }
    }));
    let cancel_token = client.cancel_token();
    let mut results = Vec::new();
    let ended = {
        let work = execute(&client, &spec, &mut results);
        tokio::pin!(work);
        tokio::select! {
            biased;
            reason = ctx.cancel.cancelled() => Ended::Stopped(Stop::Cancelled(reason)),
            () = tokio::time::sleep_until(deadline) => Ended::Stopped(Stop::Timeout),
            ended = &mut work => ended,
        }
    };
    let took = started.elapsed();
    if let Ended::Stopped(_) = &ended {
        // Dropping the connection alone would leave the backend running the statement until
        // it next writes to the socket (a pg_sleep, a long UPDATE): ask it to stop.
        match tokio::time::timeout(CANCEL_GRACE, cancel_token.cancel_query(tls)).await {
            Ok(Ok(())) => tracing::info!("asked the server to cancel the running statement"),
            Ok(Err(e)) => tracing::warn!(error = %cause(&e), "the cancel request failed"),
            Err(_) => tracing::warn!("the cancel request did not finish in time"),
        }
    }
    drop(client);
    drop(connection);
    let running = results.len();
    let mut output = output(&results, took);
    match ended {
        Ended::Done => Ok(output),
        Ended::Failed(failure) => {
            let rolled_back = spec.transaction;
            let mut message = match failure.statement {
                Some(i) => format!("{} failed: {}", spec.which(i), failure.text()),
                None => failure.text(),
            };
            if rolled_back {
                message.push_str("; the transaction was rolled back");
            }
            if let Value::Object(m) = &mut output {
                m.insert("error".into(), failure.json());
                m.insert("rolled_back".into(), json!(rolled_back));
            }
            Err(StepError::Failed {
                message,
                output: Some(output),
            })
        }
        Ended::Stopped(stop) => {
            let what = spec.which(running.min(spec.statements.len().saturating_sub(1)));
            let rolled = if spec.transaction {
                "; the transaction was rolled back"
            } else {
                ""
            };
            if let Value::Object(m) = &mut output {
                m.insert("rolled_back".into(), json!(spec.transaction));
            }
            match stop {
                Stop::Timeout => Err(StepError::Failed {
                    message: format!(
                        "{what} did not finish within {}: the server was asked to cancel it{rolled}",
                        humantime::format_duration(spec.timeout)
                    ),
                    output: Some(output),
                }),
                Stop::Cancelled(reason) => Err(StepError::Cancelled {
                    message: format!("{reason}; the server was asked to cancel {what}{rolled}"),
                    reason,
                    output: Some(output),
                }),
            }
        }
    }
}

fn connect_failed(spec: &Spec, failure: &Failure) -> StepError {
    StepError::Failed {
        message: format!("failed to connect to {}: {}", spec.target, failure.text()),
        output: Some(json!({ "error": failure.json() })),
    }
}

/// Aborts a spawned task when dropped.
struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
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
        out.insert("rows_affected".into(), json!(last.rows_affected));
    }
    out.insert("duration_ms".into(), duration_ms(took));
    Value::Object(out)
}

/// Runs the statements (in a transaction if the spec says so), pushing each one's outcome.
async fn execute(client: &Client, spec: &Spec, results: &mut Vec<Outcome>) -> Ended {
    if spec.transaction {
        if let Err(e) = client.batch_execute("BEGIN").await {
            return Ended::Failed(Failure::from_pg(None, &e));
        }
    }
    for (i, statement) in spec.statements.iter().enumerate() {
        tracing::debug!(statement = i + 1, "running");
        match run_statement(client, statement, spec.max_rows).await {
            Ok(outcome) => results.push(outcome),
            Err(failure) => {
                let failure = Failure {
                    statement: Some(i),
                    ..failure
                };
                if spec.transaction {
                    // Best effort: the connection is closed next, which rolls back too.
                    let _ = client.batch_execute("ROLLBACK").await;
                }
                return Ended::Failed(failure);
            }
        }
    }
    if spec.transaction {
        if let Err(e) = client.batch_execute("COMMIT").await {
            return Ended::Failed(Failure::from_pg(None, &e));
        }
    }
    Ended::Done
}

async fn run_statement(
    client: &Client,
    statement: &Item,
    max_rows: u64,
) -> Result<Outcome, Failure> {
    let params: &[Value] = statement.params.as_array().map_or(&[], Vec::as_slice);
    let prepared: Statement = client
        .prepare(&statement.text)
        .await
        .map_err(|e| Failure::from_pg(None, &e))?;
    let wanted = prepared.params().len();
    if params.len() != wanted {
        return Err(Failure::plain(
            None,
            format!(
                "it takes {wanted} parameter{} ($1…) but {} {} given",
                if wanted == 1 { "" } else { "s" },
                params.len(),
                if params.len() == 1 { "was" } else { "were" }
            ),
        ));
    }
    // Checked here, so a value that cannot be bound is named before anything is sent.
    for (i, (value, ty)) in params.iter().zip(prepared.params()).enumerate() {
        if !value.is_null()
            && let Err(Unbindable(message)) = values::text(ty, value)
        {
            return Err(Failure::plain(
                None,
                format!("parameter ${}: {message}", i + 1),
            ));
        }
    }
    let binds: Vec<Bind<'_>> = params.iter().map(Bind).collect();
    let params = binds.iter().map(|b| b as &dyn ToSql);
    let stream = client
        .query_raw(&prepared, params)
        .await
        .map_err(|e| Failure::from_pg(None, &e))?;
    tokio::pin!(stream);
    let columns: Vec<(String, tokio_postgres::types::Type)> = prepared
        .columns()
        .iter()
        .map(|c| (c.name().to_owned(), c.type_().clone()))
        .collect();
    let mut outcome = Outcome {
        columns: columns
            .iter()
            .map(|(name, ty)| json!({ "name": name, "type": ty.name() }))
            .collect(),
        ..Outcome::default()
    };
    let mut seen = 0u64;
    while let Some(row) = stream.next().await {
        let row = row.map_err(|e| Failure::from_pg(None, &e))?;
        seen += 1;
        if seen > max_rows {
            outcome.truncated = true;
            continue;
        }
        let mut object = Map::new();
        for (i, (name, ty)) in columns.iter().enumerate() {
            let Cell(value) = row.try_get::<_, Cell>(i).map_err(|e| {
                let mut failure = Failure::from_pg(None, &e);
                if std::error::Error::source(&e)
                    .is_some_and(<dyn std::error::Error>::is::<Unreadable>)
                {
                    failure.message = format!(
                        "column `{name}` has type `{}`, which the sql step cannot read; \
                         cast it in the statement, e.g. `{name}::text`",
                        ty.name()
                    );
                }
                failure
            })?;
            object.insert(name.clone(), value);
        }
        outcome.rows.push(Value::Object(object));
    }
    outcome.rows_affected = stream.rows_affected().unwrap_or(seen);
    Ok(outcome)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_are_told_from_writes() {
        for sql in [
            "SELECT 1",
            "  select * from t where name = 'insert into x'",
            "-- a comment\nSELECT now()",
            "/* block /* nested */ */ show server_version",
            "EXPLAIN SELECT * FROM t",
            "VALUES (1), (2)",
            "TABLE audit",
            "(SELECT 1) UNION (SELECT 2)",
            "SELECT \"into\" FROM t",
        ] {
            assert!(is_read(sql), "{sql}");
        }
        for sql in [
            "INSERT INTO t VALUES (1)",
            "update t set a = 1",
            "DELETE FROM t",
            "CREATE TABLE t (a int)",
            "SELECT * INTO copy FROM t",
            "EXPLAIN ANALYZE DELETE FROM t",
            "explain (analyse) select 1",
            "WITH gone AS (DELETE FROM t RETURNING *) SELECT * FROM gone",
            "",
            "-- only a comment",
            "VACUUM",
        ] {
            assert!(!is_read(sql), "{sql}");
        }
    }

    #[test]
    fn idempotent_only_when_every_statement_reads() {
        let spec = |statements: Value| json!({"url": "postgres://h/db", "statements": statements});
        assert!(Sql.idempotent(&spec(json!("SELECT 1"))));
        assert!(Sql.idempotent(&spec(json!(["SELECT 1", {"sql": "SHOW port"}]))));
        assert!(!Sql.idempotent(&spec(json!(["SELECT 1", {"sql": "DELETE FROM t"}]))));
        assert!(!Sql.idempotent(&spec(json!("TRUNCATE t"))));
        assert!(!Sql.idempotent(&spec(json!([]))));
        assert!(!Sql.idempotent(&json!({"url": "postgres://h/db"})));
    }

    #[test]
    fn describe_never_shows_a_password() {
        assert_eq!(
            Sql.describe(&json!({
                "url": "postgres://app:s3cret@db-0:5432/app?sslmode=require",
                "statements": ["INSERT INTO t\n  VALUES ($1)", "SELECT 1", "SELECT 2"],
            })),
            "postgres://app:***@db-0:5432/app?sslmode=require: INSERT INTO t VALUES ($1) \
             (+2 more statements)"
        );
        assert_eq!(
            Sql.describe(&json!({
                "url": "postgresql://db-0/app?password=s3cret&application_name=x",
                "user": "admin",
                "password": "s3cret",
                "statements": "SELECT 1",
            })),
            "postgresql://db-0/app?password=***&application_name=x (user=admin): SELECT 1"
        );
        assert_eq!(
            Sql.describe(&json!({
                "host": "/tmp/sock", "port": 5433, "dbname": "postgres", "user": "postgres",
                "password": "s3cret", "statements": [{"sql": "DROP TABLE t"}, "SELECT 1"],
            })),
            "postgres://postgres@/tmp/sock:5433/postgres: DROP TABLE t (+1 more statement)"
        );
        // A URL that does not parse still has its password masked.
        assert_eq!(
            masked_url("postgres://u:p@ss@[bad/db"),
            "postgres://u:***@[bad/db"
        );
    }

    #[test]
    fn validate_checks_the_unrendered_spec() {
        let problems = |spec: Value| Sql.validate(&spec);
        assert_eq!(
            problems(json!({
                "url": "{{params.url}}",
                "port": "{{params.port}}",
                "sslmode": "{{params.mode}}",
                "statements": "{{params.sql}}",
                "timeout": "{{params.t}}",
            })),
            []
        );
        assert_eq!(
            problems(json!({
                "host": "127.0.0.1",
                "statements": ["SELECT 1", {"sql": "SELECT $1", "params": ["{{params.x}}"]}],
            })),
            []
        );
        assert_eq!(
            problems(json!({
                "url": "mysql://db/app",
                "port": 70000,
                "sslmode": "verify_full",
                "timeout": "soon",
                "max_rows": 0,
                "params": [1],
                "statements": [" ", {"sq": "SELECT 1"}],
            })),
            [
                (
                    "url".to_owned(),
                    "`url` must start with postgres:// or postgresql://, not `mysql://db/app`"
                        .to_owned()
                ),
                (
                    "port".to_owned(),
                    "`port` must be 1–65535, not `70000`".to_owned()
                ),
                (
                    "sslmode".to_owned(),
                    "unknown sslmode `verify_full` (did you mean `verify-full`?); one of disable, \
                     prefer, require, verify-ca, verify-full"
                        .to_owned()
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
                    "params".to_owned(),
                    "with a list of `statements` or a statement written as a mapping, give each \
                     its own `params`: `{ sql: \"…\", params: […] }`"
                        .to_owned()
                ),
                (
                    "/statements/0".to_owned(),
                    "statement 1 is empty".to_owned()
                ),
                (
                    "/statements/1/sq".to_owned(),
                    "statement 2 has an unknown field `sq` (did you mean `sql`?); a statement is \
                     `{ sql, params }`"
                        .to_owned()
                ),
            ]
        );
        assert_eq!(
            problems(json!({"statements": "SELECT 1"})),
            [(
                "sql".to_owned(),
                "`sql` needs `url` (postgres://…) or `host`".to_owned()
            )]
        );
        assert_eq!(
            problems(json!({"host": "h", "sslmode": "verify-ca", "statements": []})),
            [
                (
                    "sslmode".to_owned(),
                    "`sslmode: verify-ca` needs `ca_file`, the CA that signed the server's \
                     certificate"
                        .to_owned()
                ),
                (
                    "statements".to_owned(),
                    "`statements` lists no statement".to_owned()
                ),
            ]
        );
    }

    #[test]
    fn a_url_loses_what_the_step_handles_itself() {
        let parts =
            parse_url("postgres://app:pw@db:5433/app?sslmode=verify-full&sslrootcert=/ca.pem&connect_timeout=3")
                .unwrap();
        assert_eq!(parts.sslmode, Some(SslMode::VerifyFull));
        assert_eq!(parts.sslrootcert.as_deref(), Some("/ca.pem"));
        assert_eq!(parts.url, "postgres://app:pw@db:5433/app?connect_timeout=3");
        assert_eq!(
            parse_url("postgres://db/app?sslmode=sometimes").unwrap_err(),
            "`url`: unknown sslmode `sometimes`; one of disable, prefer, require, verify-ca, \
             verify-full"
        );
    }

    #[test]
    fn the_fields_override_the_url() {
        let spec = Spec::parse(json!({
            "url": "postgres://app:pw@db:5433/app?sslmode=disable",
            "host": "127.0.0.1",
            "user": "admin",
            "password": "other",
            "statements": ["SELECT 1", {"sql": "SELECT $1::int", "params": [2]}],
        }))
        .unwrap();
        assert_eq!(spec.config.get_user(), Some("admin"));
        assert_eq!(spec.config.get_password(), Some(&b"other"[..]));
        assert_eq!(spec.config.get_dbname(), Some("app"));
        assert_eq!(spec.config.get_ports(), [5433]);
        assert_eq!(spec.ssl, SslMode::Disable);
        assert!(
            spec.transaction,
            "several statements run in one transaction"
        );
        assert_eq!(spec.statements[1].params, json!([2]));
        assert_eq!(spec.timeout, DEFAULT_TIMEOUT);

        let single = Spec::parse(json!({
            "host": "h", "statements": "SELECT $1", "params": ["x"], "max_rows": 5,
        }))
        .unwrap();
        assert!(!single.transaction);
        assert_eq!(single.statements[0].params, json!(["x"]));
        assert_eq!(single.max_rows, 5);
        assert_eq!(single.ssl, SslMode::Prefer);
    }

    #[tokio::test]
    async fn spec_mistakes_are_spec_errors() {
        use crate::test_support::{ctx, spec_message};
        let message = |spec: Value| async move {
            spec_message(Sql.run(spec, &ctx(crate::Cancel::never())).await, "sql")
        };
        assert!(
            message(json!({"host": "h", "statements": "SELECT 1", "pasword": "x"}))
                .await
                .starts_with("unknown field `pasword`")
        );
        assert_eq!(
            message(json!({"host": "h", "statements": []})).await,
            "`statements` lists no statement"
        );
    }
}
