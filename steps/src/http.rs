//! The `http` step kind: sends one HTTP request and reports the answer.
//!
//! ```yaml
//! http: { url: "https://bao-0:8200/v1/sys/leader" }                     # GET, expects 2xx
//! http: { method: PUT, url: "https://bao-0:8200/v1/sys/step-down",
//!         headers: { X-Vault-Token: "{{params.token}}" }, ca_file: /etc/bao/ca.pem }
//! http: { method: POST, url: "http://svc/api", json: { replicas: 3 }, expect: [200, 409] }
//! ```
//!
//! The output is `{status, headers, body, duration_ms}`, plus `json` when the body parses as
//! JSON and `body_truncated` when the body went past [`BODY_LIMIT`]. Header names are
//! lowercased; a header that is repeated has its values joined with `", "`.
//!
//! # How a request can end
//!
//! - An answer whose status is in `expect` (by default any 2xx): success.
//! - An answer with another status: [`StepError::Failed`] *with* the output, so a `wait` or
//!   `check` probe still sees the status and body (a 503 is an answer, not a crash).
//! - No answer (connection refused, TLS failure, DNS, the kind's `timeout`):
//!   [`StepError::Failed`] without output.
//! - The engine cancels the step: the request is dropped at once and the step ends
//!   [`StepError::Cancelled`].
//!
//! # Clients
//!
//! A client holds a connection pool and a TLS configuration, which are expensive to build, so
//! one is built per distinct `(ca_file contents, insecure, follow_redirects)` and kept for the
//! life of the process. Keying on the CA file's *contents* means a rotated CA is picked up by
//! the next request. TLS is rustls with the ring provider; `ca_file` adds its certificates to
//! the system roots; `insecure: true` turns verification off and is never a default.

use std::collections::HashMap;
use std::sync::{Mutex, MutexGuard, OnceLock, PoisonError};
use std::time::Duration;

use reqwest::header::{HeaderMap, HeaderName, HeaderValue};
use reqwest::{Client, ClientBuilder, Method, Response, StatusCode, Url, redirect};
use serde::Deserialize;
use serde_json::{Map, Value, json};
use tokio::time::Instant;
use tracing::Instrument;

use crate::util::{
    cause, duration_ms, duration_problem, excerpt, install_crypto_provider, json_type,
    parse_duration, parse_json,
};
use crate::{BoxFuture, Field, FieldType, StepContext, StepError, StepKind};

const KIND: &str = "http";

/// How long to wait for the whole answer unless the spec says otherwise.
const DEFAULT_TIMEOUT: Duration = Duration::from_secs(30);

/// Bytes of the body kept in the output; the rest is not read.
pub const BODY_LIMIT: usize = 1024 * 1024;

/// Redirects followed before giving up, when `follow_redirects` is on.
const MAX_REDIRECTS: usize = 10;

/// The methods a spec may name.
const METHODS: &[&str] = &["GET", "HEAD", "POST", "PUT", "DELETE", "PATCH", "OPTIONS"];

/// The methods that HTTP defines as idempotent (RFC 9110, 9.2.2).
const IDEMPOTENT_METHODS: &[&str] = &["GET", "HEAD", "PUT", "DELETE", "OPTIONS"];

/// The `http` step kind.
pub struct Http;

static FIELDS: &[Field] = &[
    Field::optional("method", FieldType::String),
    Field::required("url", FieldType::String),
    Field::optional("headers", FieldType::Map),
    Field::optional("query", FieldType::Map),
    Field::optional("json", FieldType::Any),
    Field::optional("body", FieldType::String),
    Field::optional("timeout", FieldType::Duration),
    Field::optional("expect", FieldType::List),
    Field::optional("ca_file", FieldType::String),
    Field::optional("insecure", FieldType::Bool),
    Field::optional("follow_redirects", FieldType::Bool),
    Field::optional("save_to", FieldType::String),
];

const BOTH: &str = "give either `json` or `body`, not both";
const EMPTY_EXPECT: &str = "`expect` must list at least one status code";

impl StepKind for Http {
    fn name(&self) -> &'static str {
        KIND
    }

    fn fields(&self) -> &'static [Field] {
        FIELDS
    }

    fn validate(&self, spec: &Value) -> Vec<(String, String)> {
        let mut problems = Vec::new();
        let given = |field: &str| spec.get(field).is_some_and(|v| !v.is_null());
        if let Some(method) = spec.get("method").and_then(Value::as_str) {
            if !method.contains("{{") {
                if let Err(e) = parse_method(method) {
                    problems.push(("method".into(), e));
                }
            }
        }
        if let Some(url) = spec.get("url").and_then(Value::as_str) {
            if !url.contains("{{") && !has_http_scheme(url) {
                problems.push(("url".into(), scheme_problem(url)));
            }
        }
        if given("json") && given("body") {
            problems.push(("json".into(), BOTH.into()));
        }
        if let Some(codes) = spec.get("expect").and_then(Value::as_array) {
            if codes.is_empty() {
                problems.push(("expect".into(), EMPTY_EXPECT.into()));
            }
            for code in codes {
                if let Err(e) = status_code(code) {
                    problems.push(("expect".into(), e));
                }
            }
        }
        problems.extend(duration_problem(spec, "timeout"));
        problems
    }

    fn idempotent(&self, spec: &Value) -> bool {
        let method = spec.get("method").and_then(Value::as_str).unwrap_or("GET");
        IDEMPOTENT_METHODS
            .iter()
            .any(|m| m.eq_ignore_ascii_case(method.trim()))
    }

    fn describe(&self, spec: &Value) -> String {
        // Headers are left out: they often hold tokens.
        let method = spec
            .get("method")
            .and_then(Value::as_str)
            .map_or_else(|| "GET".to_owned(), |m| m.trim().to_ascii_uppercase());
        match spec.get("url").and_then(Value::as_str) {
            Some(url) => excerpt(&format!("{method} {url}")),
            None => KIND.to_owned(),
        }
    }

    fn run<'a>(
        &'a self,
        spec: Value,
        ctx: &'a StepContext,
    ) -> BoxFuture<'a, Result<Value, StepError>> {
        let span = tracing::info_span!(
            "http",
            run_id = %ctx.run_id,
            path = %ctx.path,
            attempt = ctx.attempt
        );
        Box::pin(run_attempt(spec, ctx).instrument(span))
    }
}

/// The spec as written, before checks that serde cannot express.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawSpec {
    method: Option<String>,
    url: String,
    #[serde(default)]
    headers: Map<String, Value>,
    #[serde(default)]
    query: Map<String, Value>,
    json: Option<Value>,
    body: Option<String>,
    #[serde(default, deserialize_with = "crate::util::duration_text")]
    timeout: Option<String>,
    expect: Option<Vec<Value>>,
    ca_file: Option<String>,
    #[serde(default)]
    insecure: bool,
    follow_redirects: Option<bool>,
    save_to: Option<String>,
}

/// What the request carries.
#[derive(Debug)]
enum Body {
    None,
    Json(Value),
    Text(String),
}

/// What makes two clients different; equal keys share a client.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
struct ClientKey {
    /// The contents of `ca_file`, read for every request so a rotated CA is noticed.
    ca_pem: Option<Vec<u8>>,
    insecure: bool,
    follow_redirects: bool,
}

/// A checked spec.
#[derive(Debug)]
struct Spec {
    method: Method,
    /// The URL as written, for messages.
    url_text: String,
    /// The URL with `query` added.
    url: Url,
    headers: HeaderMap,
    body: Body,
    timeout: Duration,
    /// `None`: any 2xx.
    expect: Option<Vec<u16>>,
    ca_file: Option<String>,
    insecure: bool,
    follow_redirects: bool,
    /// Write the whole body to this file instead of returning it (snapshots, backups).
    save_to: Option<String>,
}

fn spec_error(message: impl Into<String>) -> StepError {
    StepError::Spec {
        kind: KIND,
        message: message.into(),
    }
}

fn failed(message: impl Into<String>) -> StepError {
    StepError::Failed {
        message: message.into(),
        output: None,
    }
}

fn parse_method(text: &str) -> Result<Method, String> {
    let upper = text.trim().to_ascii_uppercase();
    if METHODS.contains(&upper.as_str()) {
        Method::from_bytes(upper.as_bytes()).map_err(|e| e.to_string())
    } else {
        Err(format!(
            "unknown method `{text}`; expected one of {}",
            METHODS.join(", ")
        ))
    }
}

fn has_http_scheme(url: &str) -> bool {
    let lower = url.trim_start().to_ascii_lowercase();
    lower.starts_with("http://") || lower.starts_with("https://")
}

fn scheme_problem(url: &str) -> String {
    format!(
        "`url` must start with http:// or https://, not `{}`",
        excerpt(url)
    )
}

/// A status code from `expect`: `Ok(None)` for a template not rendered yet.
fn status_code(value: &Value) -> Result<Option<u16>, String> {
    let code = match value {
        Value::Number(n) => n.as_u64(),
        Value::String(s) if s.contains("{{") => return Ok(None),
        Value::String(s) => s.trim().parse::<u64>().ok(),
        _ => None,
    };
    match code {
        Some(code @ 100..=599) => Ok(Some(code as u16)),
        _ => Err(format!(
            "`expect` holds `{value}`, which is not a status code (100–599)"
        )),
    }
}

/// A header value or query parameter given as a scalar.
fn scalar(field: &str, name: &str, value: &Value) -> Result<String, StepError> {
    match value {
        Value::String(s) => Ok(s.clone()),
        Value::Number(n) => Ok(n.to_string()),
        Value::Bool(b) => Ok(b.to_string()),
        other => Err(spec_error(format!(
            "`{field}.{name}` must be a string, number or bool, not {}",
            json_type(other)
        ))),
    }
}

impl Spec {
    fn parse(value: Value) -> Result<Self, StepError> {
        let raw: RawSpec = serde_json::from_value(value).map_err(|e| spec_error(e.to_string()))?;
        let method = match &raw.method {
            Some(text) => parse_method(text).map_err(|e| spec_error(format!("`method`: {e}")))?,
            None => Method::GET,
        };
        if !has_http_scheme(&raw.url) {
            return Err(spec_error(scheme_problem(&raw.url)));
        }
        let mut url = Url::parse(raw.url.trim())
            .map_err(|e| spec_error(format!("`url`: invalid URL `{}`: {e}", raw.url)))?;
        if !raw.query.is_empty() {
            let mut pairs = url.query_pairs_mut();
            for (name, value) in &raw.query {
                match value {
                    Value::Null => {}
                    Value::Array(items) => {
                        for item in items {
                            pairs.append_pair(name, &scalar("query", name, item)?);
                        }
                    }
                    other => {
                        pairs.append_pair(name, &scalar("query", name, other)?);
                    }
                }
            }
        }
        let mut headers = HeaderMap::new();
        for (name, value) in &raw.headers {
            let header = HeaderName::from_bytes(name.as_bytes())
                .map_err(|_| spec_error(format!("`headers.{name}`: invalid header name")))?;
            // The value is not quoted in the message: headers often hold tokens.
            let mut value = HeaderValue::from_str(&scalar("headers", name, value)?)
                .map_err(|_| spec_error(format!("`headers.{name}`: invalid header value")))?;
            value.set_sensitive(true);
            headers.append(header, value);
        }
        let body = match (raw.json, raw.body) {
            (Some(_), Some(_)) => return Err(spec_error(BOTH)),
            (Some(json), None) => Body::Json(json),
            (None, Some(text)) => Body::Text(text),
            (None, None) => Body::None,
        };
        let timeout = parse_duration("timeout", raw.timeout.as_deref())
            .map_err(spec_error)?
            .unwrap_or(DEFAULT_TIMEOUT);
        let expect = match raw.expect {
            None => None,
            Some(codes) if codes.is_empty() => return Err(spec_error(EMPTY_EXPECT)),
            Some(codes) => Some(
                codes
                    .iter()
                    .map(|code| match status_code(code) {
                        Ok(Some(code)) => Ok(code),
                        Ok(None) => Err(spec_error(format!(
                            "`expect` holds `{code}`, which is not a status code (100–599)"
                        ))),
                        Err(e) => Err(spec_error(e)),
                    })
                    .collect::<Result<_, _>>()?,
            ),
        };
        Ok(Self {
            method,
            url_text: raw.url,
            url,
            headers,
            body,
            timeout,
            expect,
            ca_file: raw.ca_file,
            insecure: raw.insecure,
            follow_redirects: raw.follow_redirects.unwrap_or(true),
            save_to: raw.save_to,
        })
    }

    /// `GET http://…`, for messages.
    fn what(&self) -> String {
        format!("{} {}", self.method, self.url_text)
    }

    fn accepts(&self, status: StatusCode) -> bool {
        match &self.expect {
            None => status.is_success(),
            Some(codes) => codes.contains(&status.as_u16()),
        }
    }

    /// What `expect` allows, for messages: `2xx`, `200`, `200 or 429`, `200, 201 or 429`.
    fn expected(&self) -> String {
        let Some(codes) = &self.expect else {
            return "2xx".to_owned();
        };
        let codes: Vec<String> = codes.iter().map(u16::to_string).collect();
        match codes.split_last() {
            Some((last, rest)) if !rest.is_empty() => format!("{} or {last}", rest.join(", ")),
            _ => codes.join(""),
        }
    }

    fn client_key(&self) -> Result<ClientKey, StepError> {
        let ca_pem = self
            .ca_file
            .as_ref()
            .map(|path| {
                std::fs::read(path)
                    .map_err(|e| failed(format!("cannot read `ca_file` {path}: {e}")))
            })
            .transpose()?;
        Ok(ClientKey {
            ca_pem,
            insecure: self.insecure,
            follow_redirects: self.follow_redirects,
        })
    }
}

type Clients = Mutex<HashMap<ClientKey, Client>>;

fn clients() -> MutexGuard<'static, HashMap<ClientKey, Client>> {
    static CLIENTS: OnceLock<Clients> = OnceLock::new();
    CLIENTS
        .get_or_init(Clients::default)
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
}

/// The shared client for `key`, built on first use.
fn client(key: ClientKey, ca_file: Option<&str>) -> Result<Client, StepError> {
    if let Some(client) = clients().get(&key) {
        return Ok(client.clone());
    }
    let built = build_client(&key, ca_file)?;
    Ok(clients().entry(key).or_insert(built).clone())
}

fn build_client(key: &ClientKey, ca_file: Option<&str>) -> Result<Client, StepError> {
    install_crypto_provider();
    match builder(key, ca_file)?.build() {
        Ok(client) => Ok(client),
        // Without system CA certificates (a minimal container) the system verifier cannot be
        // built at all; plain http:// must still work, and https:// then fails per request.
        Err(e) if key.ca_pem.is_none() && !key.insecure => {
            tracing::warn!(
                error = %cause(&e),
                "no usable system CA certificates: https:// requests will fail unless \
                 `ca_file` is given"
            );
            builder(key, ca_file)?
                .tls_certs_only([])
                .build()
                .map_err(|e| failed(format!("cannot build an HTTP client: {}", cause(&e))))
        }
        Err(e) => Err(failed(format!(
            "cannot build an HTTP client: {}",
            cause(&e)
        ))),
    }
}

fn builder(key: &ClientKey, ca_file: Option<&str>) -> Result<ClientBuilder, StepError> {
    let mut builder = Client::builder()
        .user_agent(concat!("runbook/", env!("CARGO_PKG_VERSION")))
        .redirect(if key.follow_redirects {
            redirect::Policy::limited(MAX_REDIRECTS)
        } else {
            redirect::Policy::none()
        });
    if let Some(pem) = &key.ca_pem {
        let path = ca_file.unwrap_or("?");
        let certs = reqwest::Certificate::from_pem_bundle(pem)
            .map_err(|e| failed(format!("cannot use `ca_file` {path}: {}", cause(&e))))?;
        if certs.is_empty() {
            return Err(failed(format!(
                "cannot use `ca_file` {path}: it holds no PEM certificate"
            )));
        }
        builder = builder.tls_certs_merge(certs);
    }
    if key.insecure {
        builder = builder.tls_danger_accept_invalid_certs(true);
    }
    Ok(builder)
}

/// Response headers as JSON: lowercased names, repeated values joined with `", "`.
fn headers_json(headers: &HeaderMap) -> Value {
    let mut out = Map::new();
    for (name, value) in headers {
        let value = String::from_utf8_lossy(value.as_bytes());
        match out.get_mut(name.as_str()) {
            Some(Value::String(joined)) => {
                joined.push_str(", ");
                joined.push_str(&value);
            }
            _ => {
                out.insert(name.as_str().to_owned(), Value::String(value.into_owned()));
            }
        }
    }
    Value::Object(out)
}

/// Streams the whole body into `path`: written to a temporary file beside it, synced, then
/// renamed into place, so the file is either absent or complete. Returns `{path, bytes, sha256}`.
async fn save(mut response: Response, path: &str) -> Result<Value, String> {
    use sha2::Digest as _;
    use tokio::io::AsyncWriteExt as _;
    let target = std::path::Path::new(path);
    let partial = target.with_extension(format!(
        "{}partial",
        target
            .extension()
            .map(|e| format!("{}.", e.to_string_lossy()))
            .unwrap_or_default()
    ));
    let mut file = tokio::fs::File::create(&partial)
        .await
        .map_err(|e| format!("cannot create {}: {e}", partial.display()))?;
    let mut hasher = sha2::Sha256::new();
    let mut bytes = 0u64;
    while let Some(chunk) = response.chunk().await.map_err(|e| cause(&e))? {
        hasher.update(&chunk);
        bytes += chunk.len() as u64;
        file.write_all(&chunk).await.map_err(|e| e.to_string())?;
    }
    file.sync_all().await.map_err(|e| e.to_string())?;
    drop(file);
    tokio::fs::rename(&partial, target)
        .await
        .map_err(|e| format!("cannot move the download into place: {e}"))?;
    let sha256 = hasher
        .finalize()
        .iter()
        .fold(String::with_capacity(64), |mut s, b| {
            use std::fmt::Write as _;
            let _ = write!(s, "{b:02x}");
            s
        });
    Ok(json!({ "path": path, "bytes": bytes, "sha256": sha256 }))
}

/// Reads the body, keeping the first [`BODY_LIMIT`] bytes; true if there was more.
async fn read_capped(mut response: Response) -> reqwest::Result<(Vec<u8>, bool)> {
    let mut body = Vec::new();
    while let Some(chunk) = response.chunk().await? {
        let room = BODY_LIMIT - body.len();
        if chunk.len() > room {
            body.extend_from_slice(&chunk[..room]);
            // The rest is not read: dropping the response closes the connection.
            return Ok((body, true));
        }
        body.extend_from_slice(&chunk);
    }
    Ok((body, false))
}

fn output(
    status: StatusCode,
    headers: Value,
    body: &[u8],
    truncated: bool,
    took: Duration,
) -> Value {
    let text = String::from_utf8_lossy(body);
    let mut out = Map::new();
    out.insert("status".into(), json!(status.as_u16()));
    out.insert("headers".into(), headers);
    out.insert("body".into(), json!(text));
    if truncated {
        out.insert("body_truncated".into(), json!(true));
    }
    if !truncated && let Some(parsed) = parse_json(&text) {
        out.insert("json".into(), parsed);
    }
    out.insert("duration_ms".into(), duration_ms(took));
    Value::Object(out)
}

async fn run_attempt(spec: Value, ctx: &StepContext) -> Result<Value, StepError> {
    let spec = Spec::parse(spec)?;
    if let Some(reason) = ctx.cancel.reason() {
        return Err(StepError::Cancelled {
            message: format!("{reason}; {} was not sent", spec.what()),
            reason,
            output: None,
        });
    }
    let client = client(spec.client_key()?, spec.ca_file.as_deref())?;
    if spec.insecure {
        tracing::warn!("TLS certificate verification is off for this request (insecure: true)");
    }
    tokio::select! {
        biased;
        reason = ctx.cancel.cancelled() => {
            tracing::info!(%reason, "abandoning the request");
            Err(StepError::Cancelled {
                message: format!("{reason}; {} was abandoned", spec.what()),
                reason,
                output: None,
            })
        }
        result = exchange(&client, &spec) => result,
    }
}

/// Sends the request and reads the answer, within the spec's timeout.
async fn exchange(client: &Client, spec: &Spec) -> Result<Value, StepError> {
    let started = Instant::now();
    let deadline = started + spec.timeout;
    let within = humantime::format_duration(spec.timeout);
    let mut request = client
        .request(spec.method.clone(), spec.url.clone())
        .headers(spec.headers.clone());
    request = match &spec.body {
        Body::None => request,
        // Sets `content-type: application/json` unless the spec's headers set one.
        Body::Json(value) => request.json(value),
        Body::Text(text) => request.body(text.clone()),
    };
    tracing::debug!(method = %spec.method, "sending request");

    let response = match tokio::time::timeout_at(deadline, request.send()).await {
        Err(_) => {
            return Err(failed(format!(
                "{} did not answer within {within}",
                spec.what()
            )));
        }
        Ok(Err(e)) => {
            let message = if e.is_connect() {
                format!("failed to connect to {}: {}", spec.url_text, cause(&e))
            } else if e.is_redirect() {
                format!("{}: {}", spec.what(), cause(&e))
            } else {
                format!("{} failed: {}", spec.what(), cause(&e))
            };
            return Err(failed(message));
        }
        Ok(Ok(response)) => response,
    };
    let status = response.status();
    let headers = headers_json(response.headers());
    if let Some(path) = &spec.save_to
        && spec.accepts(status)
    {
        let saved = match tokio::time::timeout_at(deadline, save(response, path)).await {
            Err(_) => Err(format!("did not send the whole body within {within}")),
            Ok(result) => result,
        }
        .map_err(|e| {
            failed(format!(
                "{} answered {status} but saving the body to {path} failed: {e}",
                spec.what()
            ))
        })?;
        let mut out = Map::new();
        out.insert("status".into(), json!(status.as_u16()));
        out.insert("headers".into(), headers);
        out.insert("saved".into(), saved);
        out.insert("duration_ms".into(), duration_ms(started.elapsed()));
        return Ok(Value::Object(out));
    }
    let (body, truncated) = match tokio::time::timeout_at(deadline, read_capped(response)).await {
        Err(_) => {
            return Err(failed(format!(
                "{} answered {status} but did not send the whole body within {within}",
                spec.what()
            )));
        }
        Ok(Err(e)) => {
            return Err(failed(format!(
                "{} answered {status} but reading the body failed: {}",
                spec.what(),
                cause(&e)
            )));
        }
        Ok(Ok(read)) => read,
    };
    let took = started.elapsed();
    tracing::debug!(
        status = status.as_u16(),
        duration_ms = took.as_millis() as u64,
        "answered"
    );
    let output = output(status, headers, &body, truncated, took);
    if spec.accepts(status) {
        return Ok(output);
    }
    let text = String::from_utf8_lossy(&body);
    let quoted = excerpt(text.trim());
    let mut message = format!(
        "{} answered {status} (expected {})",
        spec.what(),
        spec.expected()
    );
    if !quoted.is_empty() {
        message.push_str(": ");
        message.push_str(&quoted);
    }
    Err(StepError::Failed {
        message,
        output: Some(output),
    })
}

#[cfg(test)]
mod tests {
    use std::net::SocketAddr;
    use std::sync::Arc;

    use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
    use tokio::net::TcpListener;
    use tokio::task::JoinHandle;

    use super::*;
    use crate::test_support::{ctx, failed, first_poll, spec_message};
    use crate::{Cancel, CancelReason, CancelSource};

    async fn run(spec: Value) -> Result<Value, StepError> {
        Http.run(spec, &ctx(Cancel::never())).await
    }

    /// A minimal HTTP/1.1 server, one request per connection, on 127.0.0.1. Paths:
    /// `/json`, `/echo` (the request as JSON), `/status/N`, `/hang` (never answers),
    /// `/redirect` (to `/json`), `/big` (past [`BODY_LIMIT`]).
    struct TestServer {
        addr: SocketAddr,
        task: JoinHandle<()>,
    }

    impl Drop for TestServer {
        fn drop(&mut self) {
            self.task.abort();
        }
    }

    impl TestServer {
        async fn start(tls: Option<tokio_rustls::TlsAcceptor>) -> Self {
            let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
            let addr = listener.local_addr().unwrap();
            let task = tokio::spawn(async move {
                while let Ok((stream, _)) = listener.accept().await {
                    let tls = tls.clone();
                    tokio::spawn(async move {
                        match tls {
                            Some(acceptor) => {
                                // A client that rejects the certificate ends the handshake.
                                if let Ok(stream) = acceptor.accept(stream).await {
                                    handle(stream).await;
                                }
                            }
                            None => handle(stream).await,
                        }
                    });
                }
            });
            Self { addr, task }
        }

        fn url(&self, path: &str) -> String {
            format!("http://{}{path}", self.addr)
        }
    }

    async fn handle(mut stream: impl AsyncRead + AsyncWrite + Unpin) {
        let mut buf = Vec::new();
        let mut chunk = [0; 4096];
        let head_end = loop {
            if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                break i + 4;
            }
            match stream.read(&mut chunk).await {
                Ok(0) | Err(_) => return,
                Ok(n) => buf.extend_from_slice(&chunk[..n]),
            }
        };
        let head = String::from_utf8_lossy(&buf[..head_end]).into_owned();
        let mut lines = head.split("\r\n");
        let mut request_line = lines.next().unwrap().split(' ');
        let method = request_line.next().unwrap().to_owned();
        let target = request_line.next().unwrap().to_owned();
        let mut headers = Map::new();
        for line in lines.filter(|l| !l.is_empty()) {
            let (name, value) = line.split_once(':').unwrap();
            headers.insert(name.trim().to_ascii_lowercase(), json!(value.trim()));
        }
        let length: usize = headers
            .get("content-length")
            .and_then(Value::as_str)
            .map_or(0, |v| v.parse().unwrap());
        while buf.len() < head_end + length {
            match stream.read(&mut chunk).await {
                Ok(0) | Err(_) => return,
                Ok(n) => buf.extend_from_slice(&chunk[..n]),
            }
        }
        let body = String::from_utf8_lossy(&buf[head_end..head_end + length]).into_owned();
        let (path, query) = target.split_once('?').unwrap_or((&target, ""));
        let json_type = ("content-type", "application/json".to_owned());
        let (status, extra, body): (u16, Vec<(&str, String)>, String) = match path {
            "/json" => (
                200,
                vec![
                    json_type,
                    ("X-Custom", "A".into()),
                    ("Set-Cookie", "a=1".into()),
                    ("Set-Cookie", "b=2".into()),
                ],
                r#"{"ok": true, "n": [1, 2]}"#.into(),
            ),
            "/echo" => (
                200,
                vec![json_type],
                json!({"method": method, "path": path, "query": query, "headers": headers, "body": body})
                    .to_string(),
            ),
            "/hang" => std::future::pending().await,
            "/redirect" => (302, vec![("Location", "/json".into())], String::new()),
            "/big" => (200, vec![], "x".repeat(BODY_LIMIT + 10)),
            _ => match path.strip_prefix("/status/") {
                Some(code) => (code.parse().unwrap(), vec![], format!("status {code} body")),
                None => (404, vec![], "not found".into()),
            },
        };
        let mut response = format!("HTTP/1.1 {status} Whatever\r\n");
        for (name, value) in extra {
            response.extend([name, ": ", &value, "\r\n"]);
        }
        response.extend([
            "Content-Length: ",
            &body.len().to_string(),
            "\r\nConnection: close\r\n\r\n",
            &body,
        ]);
        let _ = stream.write_all(response.as_bytes()).await;
        let _ = stream.shutdown().await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn get_parses_json_and_lowercases_headers() {
        let server = TestServer::start(None).await;
        let out = run(json!({"url": server.url("/json")})).await.unwrap();
        assert_eq!(out["status"], 200);
        assert_eq!(out["json"], json!({"ok": true, "n": [1, 2]}));
        assert_eq!(out["body"], r#"{"ok": true, "n": [1, 2]}"#);
        assert_eq!(out["headers"]["x-custom"], "A");
        assert_eq!(out["headers"]["content-type"], "application/json");
        assert_eq!(out["headers"]["set-cookie"], "a=1, b=2");
        assert!(out["duration_ms"].is_u64());
        let keys: Vec<&str> = out
            .as_object()
            .unwrap()
            .keys()
            .map(String::as_str)
            .collect();
        assert_eq!(keys, ["status", "headers", "body", "json", "duration_ms"]);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn query_and_headers_are_sent() {
        let server = TestServer::start(None).await;
        let out = run(json!({
            "url": server.url("/echo?keep=1"),
            "query": {"name": "a b&c", "n": 3, "tag": ["x", "y"], "dry": true},
            "headers": {"X-Vault-Token": "s3cret", "X-Count": 2},
        }))
        .await
        .unwrap();
        let echo = &out["json"];
        assert_eq!(echo["method"], "GET");
        assert_eq!(
            echo["query"],
            "keep=1&name=a+b%26c&n=3&tag=x&tag=y&dry=true"
        );
        assert_eq!(echo["headers"]["x-vault-token"], "s3cret");
        assert_eq!(echo["headers"]["x-count"], "2");
        assert!(
            echo["headers"]["user-agent"]
                .as_str()
                .unwrap()
                .starts_with("runbook/")
        );
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn post_sends_a_json_or_text_body() {
        let server = TestServer::start(None).await;
        let out = run(json!({
            "method": "post",
            "url": server.url("/echo"),
            "json": {"replicas": 3, "name": "bao"},
        }))
        .await
        .unwrap();
        let echo = &out["json"];
        assert_eq!(echo["method"], "POST");
        assert_eq!(echo["headers"]["content-type"], "application/json");
        let sent: Value = serde_json::from_str(echo["body"].as_str().unwrap()).unwrap();
        assert_eq!(sent, json!({"replicas": 3, "name": "bao"}));

        let out = run(json!({
            "method": "PUT",
            "url": server.url("/echo"),
            "body": "plain text",
            "headers": {"content-type": "text/plain"},
        }))
        .await
        .unwrap();
        assert_eq!(out["json"]["method"], "PUT");
        assert_eq!(out["json"]["body"], "plain text");
        assert_eq!(out["json"]["headers"]["content-type"], "text/plain");
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn save_to_writes_the_whole_body_to_a_file() {
        let server = TestServer::start(None).await;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("snap.bin");
        let out = run(json!({"url": server.url("/big"), "save_to": path.to_str().unwrap()}))
            .await
            .unwrap();
        let written = std::fs::read(&path).unwrap();
        assert_eq!(
            written.len(),
            BODY_LIMIT + 10,
            "the whole body, not the capped one"
        );
        assert_eq!(out["saved"]["bytes"], BODY_LIMIT + 10);
        assert_eq!(out["saved"]["sha256"].as_str().unwrap().len(), 64);
        assert!(out.get("body").is_none());
        // A refused status saves nothing.
        let missing = dir.path().join("none.bin");
        let err =
            run(json!({"url": server.url("/status/503"), "save_to": missing.to_str().unwrap()}))
                .await
                .unwrap_err();
        assert!(err.to_string().contains("503"), "{err}");
        assert!(!missing.exists());
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn expect_lists_the_accepted_statuses() {
        let server = TestServer::start(None).await;
        let out = run(json!({"url": server.url("/status/429"), "expect": [200, 429]}))
            .await
            .unwrap();
        assert_eq!(out["status"], 429);
        assert_eq!(out["body"], "status 429 body");

        let (message, output) = failed(
            run(json!({"url": server.url("/status/200"), "expect": [204, "201", 202]})).await,
        );
        assert_eq!(
            message,
            format!(
                "GET {} answered 200 OK (expected 204, 201 or 202): status 200 body",
                server.url("/status/200")
            )
        );
        assert_eq!(output.unwrap()["status"], 200);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_503_fails_with_its_output() {
        let server = TestServer::start(None).await;
        let url = server.url("/status/503");
        let (message, output) = failed(run(json!({"url": url})).await);
        assert_eq!(
            message,
            format!("GET {url} answered 503 Service Unavailable (expected 2xx): status 503 body")
        );
        let output = output.expect("a status outside `expect` is still an answer");
        assert_eq!(output["status"], 503);
        assert_eq!(output["body"], "status 503 body");
        assert!(output.get("json").is_none());
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn redirects_are_followed_unless_turned_off() {
        let server = TestServer::start(None).await;
        let out = run(json!({"url": server.url("/redirect")})).await.unwrap();
        assert_eq!(out["status"], 200);
        assert_eq!(out["json"]["ok"], true);

        let out = run(json!({
            "url": server.url("/redirect"),
            "follow_redirects": false,
            "expect": [302],
        }))
        .await
        .unwrap();
        assert_eq!(out["headers"]["location"], "/json");
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_big_body_is_capped() {
        let server = TestServer::start(None).await;
        let out = run(json!({"url": server.url("/big")})).await.unwrap();
        assert_eq!(out["body"].as_str().unwrap().len(), BODY_LIMIT);
        assert_eq!(out["body_truncated"], true);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn connection_refused_is_a_clear_failure() {
        let (message, output) =
            failed(run(json!({"url": "http://127.0.0.1:1/v1/sys/health"})).await);
        assert_eq!(
            message,
            "failed to connect to http://127.0.0.1:1/v1/sys/health: connection refused"
        );
        assert_eq!(output, None);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_server_that_never_answers_times_out() {
        let server = TestServer::start(None).await;
        let url = server.url("/hang");
        let started = std::time::Instant::now();
        let (message, output) = failed(run(json!({"url": url, "timeout": "300ms"})).await);
        assert!(started.elapsed() < Duration::from_secs(5));
        assert_eq!(message, format!("GET {url} did not answer within 300ms"));
        assert_eq!(output, None);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn cancellation_drops_the_request_promptly() {
        let server = TestServer::start(None).await;
        let url = server.url("/hang");
        let source = CancelSource::new();
        let context = ctx(source.token());
        let fut = Http.run(json!({"url": url}), &context);
        tokio::pin!(fut);
        let first = first_poll(fut.as_mut()).await;
        assert!(first.is_pending());
        let started = std::time::Instant::now();
        source.cancel(CancelReason::Interrupted("SIGINT".into()));
        match fut.await {
            Err(StepError::Cancelled {
                reason,
                message,
                output,
            }) => {
                assert_eq!(reason, CancelReason::Interrupted("SIGINT".into()));
                assert_eq!(
                    message,
                    format!("interrupted by SIGINT; GET {url} was abandoned")
                );
                assert_eq!(output, None);
            }
            other => panic!("expected Cancelled, got {other:?}"),
        }
        assert!(started.elapsed() < Duration::from_secs(1));

        // Cancelled before the start: nothing is sent.
        let source = CancelSource::new();
        source.cancel(CancelReason::Timeout(Duration::from_secs(1)));
        match Http
            .run(json!({"method": "POST", "url": url}), &ctx(source.token()))
            .await
        {
            Err(StepError::Cancelled { message, .. }) => {
                assert_eq!(
                    message,
                    format!("timed out after 1s; POST {url} was not sent")
                );
            }
            other => panic!("expected Cancelled, got {other:?}"),
        }
    }

    /// A self-signed certificate for 127.0.0.1, its PEM, and a TLS acceptor serving it.
    fn tls_acceptor() -> (String, tokio_rustls::TlsAcceptor) {
        use rustls::pki_types::{PrivateKeyDer, PrivatePkcs8KeyDer};
        let rcgen::CertifiedKey { cert, signing_key } =
            rcgen::generate_simple_self_signed(vec!["127.0.0.1".to_owned()]).unwrap();
        let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(signing_key.serialize_der()));
        let config = rustls::ServerConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(vec![cert.der().clone()], key)
        .unwrap();
        (
            cert.pem(),
            tokio_rustls::TlsAcceptor::from(Arc::new(config)),
        )
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn tls_needs_the_ca_file_or_insecure() {
        let (pem, acceptor) = tls_acceptor();
        let server = TestServer::start(Some(acceptor)).await;
        let url = format!("https://{}/json", server.addr);

        let (message, output) = failed(run(json!({"url": url})).await);
        assert!(
            message.starts_with(&format!(
                "failed to connect to {url}: invalid peer certificate"
            )),
            "{message}"
        );
        assert_eq!(output, None);

        let dir = tempfile::tempdir().unwrap();
        let ca_file = dir.path().join("ca.pem");
        std::fs::write(&ca_file, &pem).unwrap();
        let out = run(json!({"url": url, "ca_file": ca_file})).await.unwrap();
        assert_eq!(out["json"]["ok"], true);

        let out = run(json!({"url": url, "insecure": true})).await.unwrap();
        assert_eq!(out["status"], 200);

        // A file that holds no certificate, and one that is not there, are clear failures.
        let empty = dir.path().join("empty.pem");
        std::fs::write(&empty, "nothing here\n").unwrap();
        let (message, _) = failed(run(json!({"url": url, "ca_file": empty})).await);
        assert_eq!(
            message,
            format!(
                "cannot use `ca_file` {}: it holds no PEM certificate",
                empty.display()
            )
        );
        let (message, _) = failed(run(json!({"url": url, "ca_file": "/no/such/ca.pem"})).await);
        assert_eq!(
            message,
            "cannot read `ca_file` /no/such/ca.pem: No such file or directory (os error 2)"
        );
    }

    #[test]
    fn clients_are_shared_per_tls_and_redirect_settings() {
        let key = |insecure, follow_redirects| ClientKey {
            ca_pem: None,
            insecure,
            follow_redirects,
        };
        let before = clients().len();
        client(key(true, false), None).unwrap();
        client(key(true, false), None).unwrap();
        let after_one = clients().len();
        assert!(after_one <= before + 1);
        assert!(clients().contains_key(&key(true, false)));
        client(key(true, true), None).unwrap();
        assert!(clients().contains_key(&key(true, true)));
    }

    #[test]
    fn idempotency_follows_the_method() {
        for method in ["GET", "get", "HEAD", "PUT", "Delete", "OPTIONS"] {
            assert!(
                Http.idempotent(&json!({"method": method, "url": "http://x"})),
                "{method}"
            );
        }
        for method in ["POST", "post", "PATCH", "patch"] {
            assert!(
                !Http.idempotent(&json!({"method": method, "url": "http://x"})),
                "{method}"
            );
        }
        assert!(Http.idempotent(&json!({"url": "http://x"})));
        assert_eq!(Http.name(), "http");
    }

    #[test]
    fn describe_leaves_headers_out() {
        assert_eq!(
            Http.describe(&json!({
                "method": "put",
                "url": "https://bao-0:8200/v1/sys/step-down",
                "headers": {"X-Vault-Token": "s3cret"},
            })),
            "PUT https://bao-0:8200/v1/sys/step-down"
        );
        assert_eq!(
            Http.describe(&json!({"url": "http://127.0.0.1/health"})),
            "GET http://127.0.0.1/health"
        );
    }

    #[test]
    fn validate_checks_the_unrendered_spec() {
        let problems = |spec: Value| Http.validate(&spec);
        assert_eq!(
            problems(json!({
                "method": "{{params.method}}",
                "url": "{{params.base}}/v1/sys/health",
                "expect": [200, "{{params.code}}"],
                "timeout": "{{params.t}}",
            })),
            []
        );
        assert_eq!(
            problems(json!({"url": "https://x", "method": "patch", "expect": ["429"]})),
            []
        );
        assert_eq!(
            problems(json!({
                "method": "FETCH",
                "url": "ftp://x",
                "json": {},
                "body": "",
                "expect": [200, 99, "abc"],
                "timeout": "soon",
            })),
            [
                (
                    "method".to_owned(),
                    "unknown method `FETCH`; expected one of GET, HEAD, POST, PUT, DELETE, \
                     PATCH, OPTIONS"
                        .to_owned()
                ),
                (
                    "url".to_owned(),
                    "`url` must start with http:// or https://, not `ftp://x`".to_owned()
                ),
                ("json".to_owned(), BOTH.to_owned()),
                (
                    "expect".to_owned(),
                    "`expect` holds `99`, which is not a status code (100–599)".to_owned()
                ),
                (
                    "expect".to_owned(),
                    "`expect` holds `\"abc\"`, which is not a status code (100–599)".to_owned()
                ),
                (
                    "timeout".to_owned(),
                    "invalid duration `soon`: expected number at 0".to_owned()
                ),
            ]
        );
        assert_eq!(
            problems(json!({"url": "http://x", "expect": []})),
            [("expect".to_owned(), EMPTY_EXPECT.to_owned())]
        );
    }

    #[tokio::test]
    async fn spec_mistakes_are_spec_errors() {
        let message = |spec: Value| async move { spec_message(run(spec).await, "http") };
        assert!(
            message(json!({"url": "http://x", "heders": {}}))
                .await
                .starts_with("unknown field `heders`, expected one of `method`, `url`")
        );
        assert_eq!(message(json!({})).await, "missing field `url`");
        assert_eq!(
            message(json!({"url": "http://x", "json": 1, "body": "b"})).await,
            BOTH
        );
        assert_eq!(
            message(json!({"url": "http://x", "method": "BREW"})).await,
            "`method`: unknown method `BREW`; expected one of GET, HEAD, POST, PUT, DELETE, \
             PATCH, OPTIONS"
        );
        assert_eq!(
            message(json!({"url": "http://x", "expect": [700]})).await,
            "`expect` holds `700`, which is not a status code (100–599)"
        );
        assert_eq!(
            message(json!({"url": "http://x", "headers": {"X-A": [1]}})).await,
            "`headers.X-A` must be a string, number or bool, not a list"
        );
        assert_eq!(
            message(json!({"url": "http://x", "headers": {"bad name": "v"}})).await,
            "`headers.bad name`: invalid header name"
        );
        assert_eq!(
            message(json!({"url": "http://x", "timeout": "soon"})).await,
            "`timeout`: invalid duration `soon`: expected number at 0"
        );
        assert_eq!(
            message(json!({"url": "unix:///run/x.sock"})).await,
            "`url` must start with http:// or https://, not `unix:///run/x.sock`"
        );
        assert!(
            message(json!({"url": "http://"}))
                .await
                .starts_with("`url`: invalid URL `http://`: ")
        );
    }
}
