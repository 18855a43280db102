//! The `shell` step kind: runs a command and reports how it ended.
//!
//! ```yaml
//! shell: { args: [kubectl, get, pods, -o, json], timeout: 30s }   # argv, no shell (preferred)
//! shell: { run: "pg_dump app | gzip > /backup/app.sql.gz" }       # a string for `sh -c`
//! shell: { host: db-2, user: ops, known_hosts: ./known_hosts, args: [uptime] }   # over SSH
//! ```
//!
//! With `host`, the same command runs on that host through the OpenSSH client, with the same
//! output and the same way of ending; [`crate::ssh`] says how.
//!
//! The output is `{exit_code, stdout, stderr, duration_ms}`, plus `json` when stdout parses as
//! JSON, `signal` when a signal ended the command, and `stdout_truncated` / `stderr_truncated`
//! when a stream went past `capture_limit`.
//!
//! # How a command can end
//!
//! - It exits with a code in `ok_codes`: success.
//! - It exits with another code, or a signal nobody here sent kills it: [`StepError::Failed`].
//! - It cannot be started (no such program, bad `cwd`): [`StepError::Failed`] without output.
//! - The engine cancels the step (its timeout, Ctrl-C) or the kind's own `timeout` passes:
//!   the command is stopped and the step ends [`StepError::Cancelled`], never `Failed`, so an
//!   interrupted run is recorded as interrupted.
//!
//! # Stopping a command
//!
//! The child runs in its own process group, so a Ctrl-C at the terminal reaches only runbook,
//! which then stops the command deliberately: SIGTERM to the whole group (the child and
//! everything it started), up to `grace` for the group to go, then SIGKILL to whatever is left.
//! If the step's future is dropped mid-flight, the whole group is killed with SIGKILL. If
//! runbook itself dies, the group goes the same way through its watchdog, and the command
//! carries its attempt in its environment for a later resume to find (see [`crate::orphans`]).
//!
//! # Reading output
//!
//! stdout and stderr are read concurrently, each up to `capture_limit` bytes; past the limit
//! the pipe is still drained (so the child never blocks on a full pipe) but the bytes are
//! dropped. A command that exits normally may leave a background process holding its pipes
//! (`daemon &`). Starting such a process is legitimate, so it is not killed; instead reading
//! stops [`DRAIN_LIMIT`] after the command exits, and what was read by then is the output.
//!
//! The `helm` kind runs helm with the same readers and the same group stop (`Reader`, `drain`,
//! `stop`), so a helm process is stopped exactly as a command is.

use std::collections::BTreeMap;
use std::io;
use std::os::unix::process::ExitStatusExt;
use std::process::{ExitStatus, Stdio};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use nix::errno::Errno;
use nix::sys::signal::{Signal, killpg};
use nix::unistd::Pid;
use serde::Deserialize;
use serde_json::{Map, Value, json};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt};
use tokio::process::{Child, Command};
use tokio::task::JoinHandle;
use tokio::time::Instant;
use tracing::Instrument;

use crate::orphans::{self, Attempt};
use crate::ssh::{self, Remote};
use crate::util::{duration_ms, duration_problem, excerpt, json_type, parse_duration, parse_json};
use crate::{
    BoxFuture, CancelReason, Field, FieldType, OutputSink, OutputStream, StepContext, StepError,
    StepKind,
};

const KIND: &str = "shell";

/// How long to wait between SIGTERM and SIGKILL unless the spec says otherwise.
const DEFAULT_GRACE: Duration = Duration::from_secs(5);

/// Bytes kept per stream unless the spec says otherwise.
const DEFAULT_CAPTURE_LIMIT: usize = 1024 * 1024;

/// How long to keep reading the pipes after the command has exited (or been killed): data
/// already in a pipe is read at once, so this bound only matters when a background process
/// still holds the pipe open.
const DRAIN_LIMIT: Duration = Duration::from_secs(2);

/// How long to wait for processes killed with SIGKILL to disappear. SIGKILL cannot be ignored; this only
/// guards against a process stuck in uninterruptible sleep.
const KILL_WAIT: Duration = Duration::from_secs(2);

/// How often to look whether a signalled process group is gone.
const GROUP_POLL: Duration = Duration::from_millis(25);

/// The `shell` step kind.
pub struct Shell;

static FIELDS: &[Field] = &[
    Field::optional("args", FieldType::List),
    Field::optional("run", FieldType::String),
    Field::optional("env", FieldType::Map),
    Field::optional("clear_env", FieldType::Bool),
    Field::optional("cwd", FieldType::String),
    Field::optional("stdin", FieldType::String),
    Field::optional("timeout", FieldType::Duration),
    Field::optional("ok_codes", FieldType::List),
    Field::optional("grace", FieldType::Duration),
    Field::optional("capture_limit", FieldType::Int),
    Field::optional("host", FieldType::String),
    Field::optional("user", FieldType::String),
    Field::optional("port", FieldType::Int),
    Field::optional("identity", FieldType::String),
    Field::optional("known_hosts", FieldType::String),
];

/// The fields that only mean something with `host`.
const REMOTE_ONLY: [&str; 4] = ["user", "port", "identity", "known_hosts"];

impl StepKind for Shell {
    fn name(&self) -> &'static str {
        KIND
    }

    fn fields(&self) -> &'static [Field] {
        FIELDS
    }

    fn validate(&self, spec: &Value) -> Vec<(String, String)> {
        let mut problems = Vec::new();
        let given = |field: &str| spec.get(field).is_some_and(|v| !v.is_null());
        match (given("args"), given("run")) {
            (true, true) => problems.push(("args".into(), BOTH.into())),
            (false, false) => problems.push((KIND.into(), NEITHER.into())),
            _ => {}
        }
        if spec
            .get("args")
            .and_then(Value::as_array)
            .is_some_and(Vec::is_empty)
        {
            problems.push(("args".into(), EMPTY_ARGS.into()));
        }
        // Durations can be checked now unless they are templates, filled in at run time.
        for field in ["timeout", "grace"] {
            problems.extend(duration_problem(spec, field));
        }
        if given("host") {
            if given("clear_env") {
                problems.push(("clear_env".into(), REMOTE_CLEAR_ENV.into()));
            }
            if let Some(env) = spec.get("env").and_then(Value::as_object) {
                for name in env.keys().filter(|name| !ssh::is_env_name(name)) {
                    problems.push((format!("env.{name}"), remote_env_name(name)));
                }
            }
        } else {
            for field in REMOTE_ONLY.into_iter().filter(|&field| given(field)) {
                problems.push((field.into(), format!("`{field}` needs `host`")));
            }
        }
        problems
    }

    fn shell_scripts(&self, spec: &Value) -> Vec<String> {
        if spec.get("run").is_some_and(Value::is_string) {
            return vec!["/run".to_owned()];
        }
        crate::posix_shell::script_pointers(spec, "args", "stdin")
    }

    fn idempotent(&self, _spec: &Value) -> bool {
        // Nothing is known about what a command does.
        false
    }

    fn describe(&self, spec: &Value) -> String {
        let line = if let Some(args) = spec.get("args").and_then(Value::as_array) {
            let words: Vec<String> = args
                .iter()
                .map(|a| a.as_str().map_or_else(|| a.to_string(), str::to_owned))
                .collect();
            shell_words::join(words)
        } else if let Some(run) = spec.get("run").and_then(Value::as_str) {
            format!("sh -c {}", shell_words::quote(run))
        } else {
            KIND.to_owned()
        };
        match remote_of(spec) {
            Some(remote) => excerpt(&format!("ssh {} {line}", remote.target())),
            None => excerpt(&line),
        }
    }

    fn run<'a>(
        &'a self,
        spec: Value,
        ctx: &'a StepContext,
    ) -> BoxFuture<'a, Result<Value, StepError>> {
        let span = tracing::info_span!(
            "shell",
            run_id = %ctx.run_id,
            path = %ctx.path,
            attempt = ctx.attempt
        );
        Box::pin(run_attempt(spec, ctx).instrument(span))
    }
}

const BOTH: &str = "give either `args` or `run`, not both";
const NEITHER: &str = "needs `args` or `run`";
const EMPTY_ARGS: &str = "`args` must not be empty";
const REMOTE_CLEAR_ENV: &str =
    "`clear_env` is not supported with `host`: a remote command gets its account's environment";

fn remote_env_name(name: &str) -> String {
    format!("`{name}` cannot be exported by a remote shell (letters, digits and `_` only)")
}

/// Where a spec's `host` fields say to run, as far as they can be read (for `describe`).
fn remote_of(spec: &Value) -> Option<Remote> {
    let text = |field: &str| spec.get(field).and_then(Value::as_str).map(str::to_owned);
    Some(Remote {
        host: text("host")?,
        user: text("user"),
        port: spec
            .get("port")
            .and_then(|v| v.as_u64().or_else(|| v.as_str()?.parse().ok()))
            .and_then(|p| u16::try_from(p).ok()),
        identity: text("identity"),
        known_hosts: text("known_hosts"),
    })
}

/// Reads `port` as a number or a template that rendered to digits.
fn port<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<u16>, D::Error> {
    let raw: Option<Value> = Option::deserialize(d)?;
    raw.map(|v| {
        v.as_u64()
            .or_else(|| v.as_str().and_then(|s| s.trim().parse().ok()))
            .and_then(|p| u16::try_from(p).ok())
            .filter(|p| *p > 0)
            .ok_or_else(|| {
                serde::de::Error::custom(format!("`port` must be a port number, not {v}"))
            })
    })
    .transpose()
}

/// Reads `args`, turning numbers and booleans into words: `args: [sleep, 30]` means what it
/// says. Anything else (a list, a map, null) is refused.
fn words<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<Vec<String>>, D::Error> {
    let raw: Option<Vec<Value>> = Option::deserialize(d)?;
    raw.map(|items| {
        items
            .into_iter()
            .map(|v| match v {
                Value::String(s) => Ok(s),
                Value::Number(n) => Ok(n.to_string()),
                Value::Bool(b) => Ok(b.to_string()),
                other => Err(serde::de::Error::custom(format!(
                    "`args` items must be strings, numbers or booleans, not {other}"
                ))),
            })
            .collect()
    })
    .transpose()
}

/// The spec as written, before checks that serde cannot express.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawSpec {
    #[serde(default, deserialize_with = "words")]
    args: Option<Vec<String>>,
    run: Option<String>,
    #[serde(default)]
    env: BTreeMap<String, Value>,
    #[serde(default)]
    clear_env: bool,
    cwd: Option<String>,
    stdin: Option<String>,
    #[serde(default, deserialize_with = "crate::util::duration_text")]
    timeout: Option<String>,
    ok_codes: Option<Vec<i32>>,
    #[serde(default, deserialize_with = "crate::util::duration_text")]
    grace: Option<String>,
    capture_limit: Option<usize>,
    host: Option<String>,
    user: Option<String>,
    #[serde(default, deserialize_with = "port")]
    port: Option<u16>,
    identity: Option<String>,
    known_hosts: Option<String>,
}

/// What to run.
#[derive(Debug)]
enum Program {
    /// argv, run directly.
    Args(Vec<String>),
    /// A script for `sh -c`.
    Run(String),
}

/// A checked spec.
#[derive(Debug)]
struct Spec {
    program: Program,
    env: Vec<(String, String)>,
    clear_env: bool,
    cwd: Option<String>,
    stdin: Option<String>,
    timeout: Option<Duration>,
    ok_codes: Vec<i32>,
    grace: Duration,
    capture_limit: usize,
    /// The host to run on, or `None` for here.
    remote: Option<Remote>,
}

fn spec_error(message: impl Into<String>) -> StepError {
    StepError::Spec {
        kind: KIND,
        message: message.into(),
    }
}

impl Spec {
    fn parse(value: Value) -> Result<Self, StepError> {
        let raw: RawSpec = serde_json::from_value(value).map_err(|e| spec_error(e.to_string()))?;
        let program = match (raw.args, raw.run) {
            (Some(_), Some(_)) => return Err(spec_error(BOTH)),
            (None, None) => return Err(spec_error(NEITHER)),
            (Some(args), None) if args.is_empty() => return Err(spec_error(EMPTY_ARGS)),
            (Some(args), None) => Program::Args(args),
            (None, Some(run)) => Program::Run(run),
        };
        let env = raw
            .env
            .into_iter()
            .map(|(name, value)| {
                let value = match value {
                    Value::String(s) => s,
                    Value::Number(n) => n.to_string(),
                    Value::Bool(b) => b.to_string(),
                    other => {
                        return Err(spec_error(format!(
                            "`env.{name}` must be a string, number or bool, not {}",
                            json_type(&other)
                        )));
                    }
                };
                Ok((name, value))
            })
            .collect::<Result<Vec<(String, String)>, _>>()?;
        let remote = match raw.host {
            Some(host) => {
                if raw.clear_env {
                    return Err(spec_error(REMOTE_CLEAR_ENV));
                }
                if let Some((name, _)) = env.iter().find(|(name, _)| !ssh::is_env_name(name)) {
                    return Err(spec_error(remote_env_name(name)));
                }
                if host.is_empty() || host.starts_with('-') {
                    return Err(spec_error(format!("`host` is not a host name: {host:?}")));
                }
                Some(Remote {
                    host,
                    user: raw.user,
                    port: raw.port,
                    identity: raw.identity,
                    known_hosts: raw.known_hosts,
                })
            }
            None => {
                if let Some(field) = [&raw.user, &raw.identity, &raw.known_hosts]
                    .into_iter()
                    .zip(["user", "identity", "known_hosts"])
                    .find_map(|(value, name)| value.as_ref().map(|_| name))
                    .or(raw.port.map(|_| "port"))
                {
                    return Err(spec_error(format!("`{field}` needs `host`")));
                }
                None
            }
        };
        Ok(Self {
            remote,
            program,
            env,
            clear_env: raw.clear_env,
            cwd: raw.cwd,
            stdin: raw.stdin,
            timeout: parse_duration("timeout", raw.timeout.as_deref()).map_err(spec_error)?,
            ok_codes: raw.ok_codes.unwrap_or_else(|| vec![0]),
            grace: parse_duration("grace", raw.grace.as_deref())
                .map_err(spec_error)?
                .unwrap_or(DEFAULT_GRACE),
            capture_limit: raw.capture_limit.unwrap_or(DEFAULT_CAPTURE_LIMIT),
        })
    }

    /// The program that is executed (`sh` for `run`, `ssh` on another host).
    fn program_name(&self) -> &str {
        match (&self.remote, &self.program) {
            (Some(_), _) => "ssh",
            (None, Program::Args(argv)) => &argv[0],
            (None, Program::Run(_)) => "sh",
        }
    }

    /// The argv the program amounts to (`run` is `sh -c SCRIPT`).
    fn argv(&self) -> Vec<String> {
        match &self.program {
            Program::Args(argv) => argv.clone(),
            Program::Run(script) => vec!["sh".into(), "-c".into(), script.clone()],
        }
    }

    /// What the command reads on stdin: the wrapper's preamble on another host.
    fn input(&self) -> Option<Vec<u8>> {
        match &self.remote {
            Some(_) => Some(ssh::preamble(&self.env, self.stdin.as_deref())),
            None => self.stdin.as_ref().map(|s| s.clone().into_bytes()),
        }
    }

    fn command(&self, attempt: &Attempt) -> Result<Command, ssh::ConnectError> {
        if let Some(remote) = &self.remote {
            let line = ssh::remote_command(&self.argv(), self.cwd.as_deref(), self.grace);
            let mut cmd = remote.command(&line)?;
            orphans::mark(&mut cmd, attempt);
            // The session's input stays open while the command runs: its end stops it.
            cmd.stdin(Stdio::piped())
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .kill_on_drop(true);
            return Ok(cmd);
        }
        let mut cmd = match &self.program {
            Program::Args(argv) => {
                let mut cmd = Command::new(&argv[0]);
                cmd.args(&argv[1..]);
                cmd
            }
            Program::Run(script) => {
                let mut cmd = Command::new("sh");
                cmd.arg("-c").arg(script);
                cmd
            }
        };
        if self.clear_env {
            let path = std::env::var_os("PATH");
            cmd.env_clear();
            if let Some(path) = path {
                cmd.env("PATH", path);
            }
        }
        cmd.envs(self.env.iter().map(|(k, v)| (k, v)));
        // Its own group (a Ctrl-C at the terminal reaches only runbook, and stopping the
        // command can signal everything it started at once), and the attempt it belongs to,
        // so that it dies with this executor (see `orphans`).
        orphans::mark(&mut cmd, attempt);
        if let Some(cwd) = &self.cwd {
            cmd.current_dir(cwd);
        }
        cmd.stdin(if self.stdin.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
        Ok(cmd)
    }
}

/// One stream's captured bytes.
#[derive(Debug, Default)]
pub(crate) struct Capture {
    pub(crate) bytes: Vec<u8>,
    pub(crate) truncated: bool,
}

type SharedCapture = Arc<Mutex<Capture>>;

fn lock(capture: &SharedCapture) -> std::sync::MutexGuard<'_, Capture> {
    capture.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Where a stream's chunks go as they are read, besides its capture.
pub(crate) type Tap = (Arc<dyn OutputSink>, OutputStream);

/// Reads `pipe` to its end, keeping the first `limit` bytes in `capture` and handing the same
/// bytes to `tap` as they come.
async fn read_capped(
    mut pipe: impl AsyncRead + Unpin,
    capture: SharedCapture,
    limit: usize,
    tap: Option<Tap>,
) {
    let mut buf = vec![0; 16 * 1024];
    loop {
        match pipe.read(&mut buf).await {
            Ok(0) => break,
            Ok(n) => {
                let take = {
                    let mut capture = lock(&capture);
                    let take = limit.saturating_sub(capture.bytes.len()).min(n);
                    capture.bytes.extend_from_slice(&buf[..take]);
                    if take < n {
                        capture.truncated = true;
                    }
                    take
                };
                if let Some((sink, stream)) = &tap
                    && take > 0
                {
                    sink.chunk(*stream, &buf[..take]);
                }
            }
            Err(e) => {
                tracing::warn!(error = %e, "failed to read the command's output");
                break;
            }
        }
    }
}

/// A stream being read in the background.
pub(crate) struct Reader {
    capture: SharedCapture,
    task: Option<JoinHandle<()>>,
}

impl Reader {
    pub(crate) fn start(
        pipe: Option<impl AsyncRead + Unpin + Send + 'static>,
        limit: usize,
        tap: Option<Tap>,
    ) -> Self {
        let capture = SharedCapture::default();
        let task = pipe.map(|pipe| {
            tokio::spawn(read_capped(pipe, Arc::clone(&capture), limit, tap).in_current_span())
        });
        Self { capture, task }
    }
}

/// The tap of `stream` for a step whose output someone follows live.
pub(crate) fn tap(ctx: &StepContext, stream: OutputStream) -> Option<Tap> {
    ctx.output.as_ref().map(|sink| (Arc::clone(sink), stream))
}

/// Lets the readers reach the end of their pipes, for at most [`DRAIN_LIMIT`], then takes what
/// they captured.
pub(crate) async fn drain(readers: [Reader; 2]) -> [Capture; 2] {
    let [mut out, mut err] = readers;
    let finished = tokio::time::timeout(DRAIN_LIMIT, async {
        for task in [&mut out.task, &mut err.task].into_iter().flatten() {
            // A reader never panics; a JoinError could only be a cancellation, not done here.
            let _ = task.await;
        }
    })
    .await;
    if finished.is_err() {
        tracing::warn!(
            "the command's output is still open after it ended (a background process holds it); \
             stopped reading after {}",
            humantime::format_duration(DRAIN_LIMIT)
        );
    }
    [out, err].map(|reader| {
        if let Some(task) = reader.task {
            task.abort();
        }
        std::mem::take(&mut *lock(&reader.capture))
    })
}

pub(crate) fn signal_name(signal: i32) -> String {
    Signal::try_from(signal).map_or_else(|_| format!("signal {signal}"), |s| s.as_str().to_owned())
}

/// The output object shared by success, failure and cancellation.
fn output(
    exit_code: Option<i32>,
    signal: Option<&str>,
    [stdout, stderr]: &[Capture; 2],
    duration: Duration,
) -> Value {
    let stdout_text = String::from_utf8_lossy(&stdout.bytes);
    let stderr_text = String::from_utf8_lossy(&stderr.bytes);
    let mut out = Map::new();
    out.insert("exit_code".into(), json!(exit_code));
    if let Some(signal) = signal {
        out.insert("signal".into(), json!(signal));
    }
    out.insert("stdout".into(), json!(stdout_text));
    out.insert("stderr".into(), json!(stderr_text));
    if !stdout.truncated
        && let Some(parsed) = parse_json(&stdout_text)
    {
        out.insert("json".into(), parsed);
    }
    out.insert("duration_ms".into(), duration_ms(duration));
    if stdout.truncated {
        out.insert("stdout_truncated".into(), json!(true));
    }
    if stderr.truncated {
        out.insert("stderr_truncated".into(), json!(true));
    }
    Value::Object(out)
}

/// The last non-blank line of stderr, for failure messages.
fn last_line(stderr: &Capture) -> Option<String> {
    String::from_utf8_lossy(&stderr.bytes)
        .lines()
        .map(str::trim)
        .rfind(|line| !line.is_empty())
        .map(excerpt)
}

/// Why the wait for the child ended.
enum Ended {
    Exited(ExitStatus),
    WaitFailed(io::Error),
    Stop(CancelReason),
}

/// How a stopped command ended.
pub(crate) struct Stopped {
    pub(crate) status: Option<ExitStatus>,
    /// The signal that ended the child: SIGTERM if it went within `grace`, else SIGKILL.
    pub(crate) signal: Signal,
    /// How it ended, for the message.
    pub(crate) how: String,
}

async fn run_attempt(spec: Value, ctx: &StepContext) -> Result<Value, StepError> {
    let spec = Spec::parse(spec)?;
    if let Some(reason) = ctx.cancel.reason() {
        return Err(StepError::Cancelled {
            message: format!("{reason}; the command was not started"),
            reason,
            output: None,
        });
    }

    let started = Instant::now();
    if let Some(remote) = &spec.remote {
        let connected = tokio::select! {
            biased;
            reason = ctx.cancel.cancelled() => {
                return Err(StepError::Cancelled {
                    message: format!("{reason} while connecting to {}; the command was not started", remote.target()),
                    reason,
                    output: None,
                });
            }
            connected = remote.connect() => connected,
        };
        connected.map_err(|e| StepError::Failed {
            message: e.to_string(),
            output: None,
        })?;
    }
    let attempt = Attempt::of(ctx);
    let mut command = spec.command(&attempt).map_err(|e| StepError::Failed {
        message: e.to_string(),
        output: None,
    })?;
    let mut child = command.spawn().map_err(|e| {
        let program = spec.program_name();
        let message = match &spec.cwd {
            Some(cwd) => format!("failed to spawn `{program}` in `{cwd}`: {e}"),
            None => format!("failed to spawn `{program}`: {e}"),
        };
        StepError::Failed {
            message,
            output: None,
        }
    })?;
    let pid = child.id().expect("a child that was just spawned has a pid");
    // The child leads its own group, so the group id is its pid.
    let group = Pid::from_raw(i32::try_from(pid).expect("pids fit in an i32"));
    let tracked = orphans::track(pid, &attempt, spec.grace);
    tracing::debug!(pid, "command started");

    let readers = [
        Reader::start(
            child.stdout.take(),
            spec.capture_limit,
            tap(ctx, OutputStream::Stdout),
        ),
        Reader::start(
            child.stderr.take(),
            spec.capture_limit,
            tap(ctx, OutputStream::Stderr),
        ),
    ];
    let remote = spec.remote.is_some();
    let mut stdin_task = match (child.stdin.take(), spec.input()) {
        (Some(mut pipe), Some(data)) => Some(tokio::spawn(
            async move {
                // A child that exits without reading its input makes this fail; that is its
                // business, not an error of the step.
                if let Err(e) = pipe.write_all(&data).await {
                    tracing::debug!(error = %e, "the command did not read all of its stdin");
                }
                if remote {
                    // The remote wrapper stops the command when its input ends, so the pipe
                    // stays open until this task is aborted.
                    std::future::pending::<()>().await;
                }
                // Dropping `pipe` closes it, so the child sees the end of its input.
            }
            .in_current_span(),
        )),
        _ => None,
    };

    let kind_timeout = async {
        match spec.timeout {
            Some(timeout) => tokio::time::sleep(timeout).await,
            None => std::future::pending::<()>().await,
        }
    };
    let ended = tokio::select! {
        biased;
        status = child.wait() => match status {
            Ok(status) => Ended::Exited(status),
            Err(e) => Ended::WaitFailed(e),
        },
        reason = ctx.cancel.cancelled() => Ended::Stop(reason),
        () = kind_timeout => Ended::Stop(CancelReason::Timeout(spec.timeout.unwrap_or_default())),
    };

    let result = match ended {
        Ended::Exited(status) => Ok(status),
        Ended::WaitFailed(e) => {
            tracing::warn!(error = %e, "failed to wait for the command; killing it");
            let stopped = stop(&mut child, group, Duration::ZERO).await;
            Err((
                stopped,
                format!("failed to wait for the command: {e}"),
                None,
            ))
        }
        Ended::Stop(reason) => {
            tracing::info!(%reason, "stopping the command");
            let stopped = match &spec.remote {
                Some(remote) => {
                    stop_remote(&mut child, group, stdin_task.take(), spec.grace, remote).await
                }
                None => stop(&mut child, group, spec.grace).await,
            };
            let message = format!("{reason}; {}", stopped.how);
            Err((stopped, message, Some(reason)))
        }
    };
    // The child was waited for: what it left running on purpose is its own business.
    tracked.reaped();
    if let Some(task) = stdin_task {
        task.abort();
    }
    let captures = drain(readers).await;
    let duration = started.elapsed();

    match result {
        Ok(status) => {
            let code = status.code();
            let signal = status.signal().map(signal_name);
            tracing::debug!(?code, ?signal, "command ended");
            let output = output(code, signal.as_deref(), &captures, duration);
            match (code, signal) {
                (Some(code), _) if spec.ok_codes.contains(&code) => Ok(output),
                (Some(code), _) => Err(StepError::Failed {
                    message: match last_line(&captures[1]) {
                        Some(line) => format!("command exited with code {code}: {line}"),
                        None => format!("command exited with code {code}"),
                    },
                    output: Some(output),
                }),
                (None, signal) => Err(StepError::Failed {
                    message: format!(
                        "command was killed by signal {}",
                        signal.as_deref().unwrap_or("unknown")
                    ),
                    output: Some(output),
                }),
            }
        }
        Err((stopped, message, reason)) => {
            let output = output(
                stopped.status.and_then(|s| s.code()),
                Some(stopped.signal.as_str()),
                &captures,
                duration,
            );
            match reason {
                Some(reason) => Err(StepError::Cancelled {
                    reason,
                    message,
                    output: Some(output),
                }),
                None => Err(StepError::Failed {
                    message,
                    output: Some(output),
                }),
            }
        }
    }
}

/// How long past `grace` a remote command may take to report that it stopped (the wrapper
/// looks once a second whether the command's group is gone, and the news crosses the network).
const REMOTE_MARGIN: Duration = Duration::from_secs(5);

/// Stops a command on another host: closing the session's input makes the remote wrapper
/// stop the command's group (SIGTERM, then SIGKILL after `grace`) and exit with its status.
/// If ssh has not ended by `grace` plus [`REMOTE_MARGIN`], it is killed here, which closes the
/// session all the same.
async fn stop_remote(
    child: &mut Child,
    group: Pid,
    input: Option<JoinHandle<()>>,
    grace: Duration,
    remote: &Remote,
) -> Stopped {
    if let Some(task) = input {
        task.abort();
        // Wait for the abort to drop the pipe, so the remote side sees its input end now.
        let _ = task.await;
    }
    let target = remote.target();
    if let Ok(Ok(status)) = tokio::time::timeout(grace + REMOTE_MARGIN, child.wait()).await {
        let (signal, how) = match status.code() {
            Some(143) => (Signal::SIGTERM, format!("stopped with SIGTERM on {target}")),
            Some(137) => (
                Signal::SIGKILL,
                format!(
                    "did not stop within {} on {target} and was killed with SIGKILL",
                    humantime::format_duration(grace)
                ),
            ),
            _ => (Signal::SIGTERM, format!("stopped on {target}")),
        };
        return Stopped {
            status: Some(status),
            signal,
            how,
        };
    }
    let mut stopped = stop(child, group, Duration::ZERO).await;
    stopped.how = format!(
        "{target} did not report the command stopped; ssh was killed (which ends the remote \
         session); {}",
        stopped.how
    );
    stopped
}

/// Stops the child's process group: SIGTERM, up to `grace` for the whole group to go, then
/// SIGKILL to what is left.
pub(crate) async fn stop(child: &mut Child, pgid: Pid, grace: Duration) -> Stopped {
    signal_group(pgid, Signal::SIGTERM);
    let deadline = Instant::now() + grace;
    let grace_text = humantime::format_duration(grace);
    if let Ok(status) = tokio::time::timeout_at(deadline, child.wait()).await {
        // The child is gone; what it started gets the rest of the grace period.
        let how = if wait_group_gone(pgid, deadline).await {
            "stopped with SIGTERM".to_owned()
        } else {
            signal_group(pgid, Signal::SIGKILL);
            wait_group_gone(pgid, Instant::now() + KILL_WAIT).await;
            format!(
                "stopped with SIGTERM; processes it started did not stop within {grace_text} \
                 and were killed with SIGKILL"
            )
        };
        return Stopped {
            status: status.ok(),
            signal: Signal::SIGTERM,
            how,
        };
    }
    signal_group(pgid, Signal::SIGKILL);
    let status = tokio::time::timeout(KILL_WAIT, child.wait()).await;
    wait_group_gone(pgid, Instant::now() + KILL_WAIT).await;
    let how = match status {
        Ok(_) => {
            format!("child did not stop within {grace_text} and was killed with SIGKILL")
        }
        Err(_) => format!(
            "child did not stop within {grace_text}, was sent SIGKILL, and had not exited {} later",
            humantime::format_duration(KILL_WAIT)
        ),
    };
    Stopped {
        status: status.ok().and_then(Result::ok),
        signal: Signal::SIGKILL,
        how,
    }
}

fn signal_group(pgid: Pid, signal: Signal) {
    match killpg(pgid, signal) {
        // Already gone.
        Ok(()) | Err(Errno::ESRCH) => tracing::debug!(%pgid, %signal, "signalled process group"),
        Err(e) => tracing::warn!(%pgid, %signal, error = %e, "failed to signal process group"),
    }
}

/// Waits until no process of the group is alive, or `deadline`; true if the group is gone.
async fn wait_group_gone(pgid: Pid, deadline: Instant) -> bool {
    loop {
        if !group_alive(pgid) {
            return true;
        }
        let now = Instant::now();
        if now >= deadline {
            return false;
        }
        tokio::time::sleep(GROUP_POLL.min(deadline - now)).await;
    }
}

/// Whether a process of the group is still running. Zombies do not count: a background
/// process orphaned by the child is reaped by init (or a container's pid 1), which may take
/// its time, but it is dead already.
pub(crate) fn group_alive(pgid: Pid) -> bool {
    match killpg(pgid, None) {
        Err(Errno::ESRCH) => false,
        Ok(()) | Err(_) => !only_zombies_left(pgid),
    }
}

/// Whether every process in group `pgid` is a zombie (vacuously true for an empty group).
#[cfg(target_os = "linux")]
fn only_zombies_left(pgid: Pid) -> bool {
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return false;
    };
    for entry in entries.flatten() {
        let is_process = entry
            .file_name()
            .to_str()
            .is_some_and(|name| name.parse::<u32>().is_ok());
        if !is_process {
            continue;
        }
        // A process that went away meanwhile has no stat; it is not alive either.
        let Ok(stat) = std::fs::read_to_string(entry.path().join("stat")) else {
            continue;
        };
        if let Some(stat) = orphans::parse_stat(&stat)
            && stat.pgrp == pgid.as_raw()
            && !stat.is_dead()
        {
            return false;
        }
    }
    true
}

/// Without /proc, a group that answers a signal counts as alive.
#[cfg(not(target_os = "linux"))]
fn only_zombies_left(_pgid: Pid) -> bool {
    false
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_support::{ctx, failed, first_poll, spec_message};
    use crate::util::EXCERPT_CHARS;
    use crate::{Cancel, CancelSource};

    async fn run(spec: Value) -> Result<Value, StepError> {
        Shell.run(spec, &ctx(Cancel::never())).await
    }

    #[test]
    fn shell_scripts_are_run_and_the_script_of_a_shell_argv() {
        assert_eq!(Shell.shell_scripts(&json!({"run": "echo"})), ["/run"]);
        assert_eq!(
            Shell.shell_scripts(&json!({"args": ["bash", "-ec", "echo", "x"]})),
            ["/args/2"]
        );
        assert_eq!(
            Shell.shell_scripts(&json!({"args": ["sh"], "stdin": "echo"})),
            ["/stdin"]
        );
        assert!(
            Shell
                .shell_scripts(&json!({"args": ["echo", "-c", "x"], "stdin": "y"}))
                .is_empty()
        );
    }

    fn cancelled(result: Result<Value, StepError>) -> (CancelReason, String, Value) {
        match result {
            Err(StepError::Cancelled {
                reason,
                message,
                output,
            }) => (
                reason,
                message,
                output.expect("a stopped command has output"),
            ),
            other => panic!("expected Cancelled, got {other:?}"),
        }
    }

    /// The process group whose leader printed `$$` as the first line of stdout.
    fn group_of(output: &Value) -> Pid {
        let first = output["stdout"].as_str().unwrap().lines().next().unwrap();
        Pid::from_raw(first.parse().unwrap())
    }

    /// Asserts that nothing in the group is alive. Where pid 1 reaps orphans lazily (as in
    /// some containers), a killed background process may linger as a zombie for a moment; it
    /// is dead, so a group of zombies counts as gone.
    fn assert_group_gone(pgid: Pid) {
        match killpg(pgid, None) {
            Err(Errno::ESRCH) => {}
            other => assert!(
                only_zombies_left(pgid),
                "process group {pgid} still has live members ({other:?})"
            ),
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn numbers_and_booleans_in_args_are_words() {
        let out = run(json!({"args": ["echo", 42, true, 1.5]})).await.unwrap();
        assert_eq!(out["stdout"], "42 true 1.5\n");
        let err = run(json!({"args": ["echo", ["nested"]]}))
            .await
            .unwrap_err();
        assert!(
            err.to_string().contains("`args` items must be strings"),
            "{err}"
        );
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn echo_is_captured() {
        let out = run(json!({"args": ["echo", "hello", "world"]}))
            .await
            .unwrap();
        assert_eq!(out["exit_code"], 0);
        assert_eq!(out["stdout"], "hello world\n");
        assert_eq!(out["stderr"], "");
        assert!(out["duration_ms"].is_u64());
        let keys: Vec<&str> = out
            .as_object()
            .unwrap()
            .keys()
            .map(String::as_str)
            .collect();
        // No `json` (not JSON), no truncation flags (nothing truncated), no `signal`.
        assert_eq!(keys, ["exit_code", "stdout", "stderr", "duration_ms"]);
    }

    /// Collects what a step hands its sink, by stream.
    #[derive(Debug, Default)]
    struct Collect(Mutex<Vec<(OutputStream, Vec<u8>)>>);

    impl OutputSink for Collect {
        fn chunk(&self, stream: OutputStream, bytes: &[u8]) {
            lock_chunks(&self.0).push((stream, bytes.to_vec()));
        }
    }

    fn lock_chunks<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
        m.lock().unwrap_or_else(PoisonError::into_inner)
    }

    impl Collect {
        fn text(&self, stream: OutputStream) -> String {
            let chunks = lock_chunks(&self.0);
            let bytes: Vec<u8> = chunks
                .iter()
                .filter(|(s, _)| *s == stream)
                .flat_map(|(_, b)| b.iter().copied())
                .collect();
            String::from_utf8_lossy(&bytes).into_owned()
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_sink_sees_the_output_while_the_command_runs_and_all_of_what_is_captured() {
        let dir = tempfile::tempdir().unwrap();
        let go = dir.path().join("go");
        let sink = Arc::new(Collect::default());
        let mut context = ctx(Cancel::never());
        context.output = Some(sink.clone());
        let spec = json!({
            "run": "echo first; echo oops >&2; while [ ! -e \"$GO\" ]; do sleep 0.01; done; echo second",
            "env": { "GO": go.to_str().unwrap() },
            "capture_limit": 10,
        });
        let step = tokio::spawn(async move { Shell.run(spec, &context).await });
        let deadline = Instant::now() + Duration::from_secs(10);
        while sink.text(OutputStream::Stdout) != "first\n"
            || sink.text(OutputStream::Stderr) != "oops\n"
        {
            assert!(
                Instant::now() < deadline,
                "the sink saw nothing while the command ran"
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        assert!(!step.is_finished(), "the command waits for `go`");
        std::fs::write(&go, "").unwrap();
        let out = step.await.unwrap().unwrap();
        // The sink sees what the output captures, up to the same limit.
        assert_eq!(out["stdout"], "first\nseco");
        assert_eq!(out["stdout_truncated"], true);
        assert_eq!(sink.text(OutputStream::Stdout), "first\nseco");
        assert_eq!(sink.text(OutputStream::Stderr), "oops\n");
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn json_stdout_is_parsed() {
        let out = run(json!({"run": r#"printf '  {"ready": true, "n": [1, 2]}\n'"#}))
            .await
            .unwrap();
        assert_eq!(out["json"], json!({"ready": true, "n": [1, 2]}));

        let out = run(json!({"args": ["echo", "42"]})).await.unwrap();
        assert_eq!(out["json"], json!(42));

        let out = run(json!({"args": ["true"]})).await.unwrap();
        assert_eq!(out["stdout"], "");
        assert!(out.get("json").is_none(), "empty stdout is not JSON: {out}");
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn nonzero_exit_fails_with_the_last_stderr_line() {
        let (message, output) = failed(
            run(json!({"run": "echo working; echo 'first' >&2; echo '  disk full  ' >&2; exit 3"}))
                .await,
        );
        assert_eq!(message, "command exited with code 3: disk full");
        let output = output.unwrap();
        assert_eq!(output["exit_code"], 3);
        assert_eq!(output["stdout"], "working\n");
        assert_eq!(output["stderr"], "first\n  disk full  \n");

        let (message, _) = failed(run(json!({"run": "exit 4"})).await);
        assert_eq!(message, "command exited with code 4");
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn ok_codes_make_other_codes_succeed() {
        let out = run(json!({"run": "exit 1", "ok_codes": [0, 1]}))
            .await
            .unwrap();
        assert_eq!(out["exit_code"], 1);
        let (message, _) = failed(run(json!({"run": "exit 0", "ok_codes": [1]})).await);
        assert_eq!(message, "command exited with code 0");
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn env_cwd_and_stdin_reach_the_command() {
        let out = run(json!({
            "run": r#"echo "$NAME $COUNT $DRY"; pwd; cat"#,
            "env": {"NAME": "openbao", "COUNT": 3, "DRY": true},
            "cwd": "/",
            "stdin": "line one\nline two\n",
        }))
        .await
        .unwrap();
        assert_eq!(out["stdout"], "openbao 3 true\n/\nline one\nline two\n");
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn clear_env_keeps_only_path_the_given_env_and_the_attempt() {
        let out = run(json!({"args": ["env"], "clear_env": true, "env": {"ONLY": "me"}}))
            .await
            .unwrap();
        let mut names: Vec<&str> = out["stdout"]
            .as_str()
            .unwrap()
            .lines()
            .map(|line| line.split('=').next().unwrap())
            .collect();
        names.sort_unstable();
        assert_eq!(
            names,
            [
                "ONLY",
                "PATH",
                "RUNBOOK_RUN_ID",
                "RUNBOOK_STEP_ATTEMPT",
                "RUNBOOK_STEP_PATH"
            ]
        );
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn failing_to_spawn_says_which_program() {
        let (message, output) =
            failed(run(json!({"args": ["runbook-no-such-program", "--flag"]})).await);
        assert_eq!(
            message,
            "failed to spawn `runbook-no-such-program`: No such file or directory (os error 2)"
        );
        assert_eq!(output, None);

        let (message, _) = failed(run(json!({"args": ["true"], "cwd": "/no/such/dir"})).await);
        assert_eq!(
            message,
            "failed to spawn `true` in `/no/such/dir`: No such file or directory (os error 2)"
        );
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn an_external_signal_is_reported() {
        let (message, output) = failed(run(json!({"run": "echo before; kill -9 $$"})).await);
        assert_eq!(message, "command was killed by signal SIGKILL");
        let output = output.unwrap();
        assert_eq!(output["signal"], "SIGKILL");
        assert_eq!(output["exit_code"], Value::Null);
        assert_eq!(output["stdout"], "before\n");
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn kind_timeout_stops_the_whole_group() {
        let result = run(json!({
            "run": "echo $$; sleep 30 & sleep 30",
            "timeout": "500ms",
            "grace": "3s",
        }))
        .await;
        let (reason, message, output) = cancelled(result);
        assert_eq!(reason, CancelReason::Timeout(Duration::from_millis(500)));
        assert_eq!(message, "timed out after 500ms; stopped with SIGTERM");
        assert_eq!(output["signal"], "SIGTERM");
        assert_eq!(output["exit_code"], Value::Null);
        assert_group_gone(group_of(&output));
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_bare_number_is_a_timeout_in_seconds_as_elsewhere_in_a_runbook() {
        for timeout in [json!(0.5), json!("0.5")] {
            let result = run(json!({ "run": "sleep 30", "timeout": timeout, "grace": 3 })).await;
            let (reason, _, _) = cancelled(result);
            assert_eq!(reason, CancelReason::Timeout(Duration::from_millis(500)));
        }
        assert_eq!(Shell.validate(&json!({"run": "true", "timeout": 5})), []);
        assert_eq!(
            Shell.validate(&json!({"run": "true", "timeout": -1})),
            [(
                "timeout".to_owned(),
                "invalid duration `-1`: must not be negative".to_owned()
            )]
        );
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_child_ignoring_sigterm_is_killed_after_grace() {
        let result = run(json!({
            // The ignored TERM is inherited by `sleep`, so nothing in the group reacts to it.
            "run": "trap '' TERM; echo $$; sleep 30 & sleep 30",
            "timeout": "500ms",
            "grace": "200ms",
        }))
        .await;
        let (reason, message, output) = cancelled(result);
        assert_eq!(reason, CancelReason::Timeout(Duration::from_millis(500)));
        assert_eq!(
            message,
            "timed out after 500ms; child did not stop within 200ms and was killed with SIGKILL"
        );
        assert_eq!(output["signal"], "SIGKILL");
        assert_group_gone(group_of(&output));
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn leftover_processes_are_killed_after_grace() {
        // The shell dies on TERM, its background job ignores it.
        let result = run(json!({
            "run": "echo $$; (trap '' TERM; sleep 30) & wait",
            "timeout": "500ms",
            "grace": "200ms",
        }))
        .await;
        let (_, message, output) = cancelled(result);
        assert_eq!(
            message,
            "timed out after 500ms; stopped with SIGTERM; processes it started did not stop \
             within 200ms and were killed with SIGKILL"
        );
        assert_eq!(output["signal"], "SIGTERM");
        assert_group_gone(group_of(&output));
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn engine_cancel_interrupts() {
        let source = CancelSource::new();
        let ctx = ctx(source.token());
        let fut = Shell.run(json!({"args": ["sleep", "30"], "grace": "3s"}), &ctx);
        tokio::pin!(fut);
        // The first poll spawns the command and waits for it: no sleep needed to know it runs.
        let first = first_poll(fut.as_mut()).await;
        assert!(first.is_pending());
        source.cancel(CancelReason::Interrupted("SIGINT".into()));
        let (reason, message, output) = cancelled(fut.await);
        assert_eq!(reason, CancelReason::Interrupted("SIGINT".into()));
        assert_eq!(message, "interrupted by SIGINT; stopped with SIGTERM");
        assert_eq!(output["signal"], "SIGTERM");
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn cancelled_before_start_runs_nothing() {
        let source = CancelSource::new();
        source.cancel(CancelReason::Timeout(Duration::from_secs(1)));
        let result = Shell
            .run(
                json!({"args": ["touch", "/should-not-exist"]}),
                &ctx(source.token()),
            )
            .await;
        match result {
            Err(StepError::Cancelled {
                reason,
                message,
                output,
            }) => {
                assert_eq!(reason, CancelReason::Timeout(Duration::from_secs(1)));
                assert_eq!(message, "timed out after 1s; the command was not started");
                assert_eq!(output, None);
            }
            other => panic!("expected Cancelled, got {other:?}"),
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn output_past_the_limit_is_drained_and_flagged() {
        let out = run(json!({
            "run": r"head -c 200000 /dev/zero | tr '\0' a; echo done >&2",
            "capture_limit": 1000,
        }))
        .await
        .unwrap();
        assert_eq!(out["stdout"], "a".repeat(1000));
        assert_eq!(out["stdout_truncated"], true);
        assert_eq!(out["stderr"], "done\n");
        assert!(out.get("stderr_truncated").is_none());
        assert!(out.get("json").is_none());
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_background_process_holding_the_pipe_does_not_hang_the_step() {
        let started = std::time::Instant::now();
        let out = run(json!({"run": "echo $$; sleep 30 & echo started"}))
            .await
            .unwrap();
        assert!(started.elapsed() < DRAIN_LIMIT + Duration::from_secs(3));
        let pgid = group_of(&out);
        assert!(out["stdout"].as_str().unwrap().ends_with("\nstarted\n"));
        // The background process is left alone (it may be a daemon); clean it up here.
        assert!(group_alive(pgid));
        killpg(pgid, Signal::SIGKILL).unwrap();
    }

    #[tokio::test]
    async fn spec_mistakes_are_spec_errors() {
        let message = |spec: Value| async move { spec_message(run(spec).await, "shell") };
        assert!(
            message(json!({"args": ["true"], "argz": 1}))
                .await
                .starts_with("unknown field `argz`, expected one of `args`, `run`")
        );
        assert_eq!(
            message(json!({"args": ["true"], "run": "true"})).await,
            "give either `args` or `run`, not both"
        );
        assert_eq!(message(json!({})).await, "needs `args` or `run`");
        assert_eq!(
            message(json!({"args": []})).await,
            "`args` must not be empty"
        );
        assert_eq!(
            message(json!({"run": "true", "timeout": "soon"})).await,
            "`timeout`: invalid duration `soon`: expected number at 0"
        );
        assert_eq!(
            message(json!({"run": "true", "env": {"A": [1]}})).await,
            "`env.A` must be a string, number or bool, not a list"
        );
        assert_eq!(
            message(json!({"run": "true", "ok_codes": "0"})).await,
            "invalid type: string \"0\", expected a sequence"
        );
    }

    #[test]
    fn validate_checks_the_unrendered_spec() {
        let problems = |spec: Value| Shell.validate(&spec);
        assert_eq!(
            problems(json!({"args": ["kubectl", "{{params.ns}}"], "timeout": "{{params.t}}"})),
            []
        );
        assert_eq!(
            problems(json!({"args": ["x"], "run": "x"})),
            [(
                "args".to_owned(),
                "give either `args` or `run`, not both".to_owned()
            )]
        );
        assert_eq!(
            problems(json!({"cwd": "/"})),
            [("shell".to_owned(), "needs `args` or `run`".to_owned())]
        );
        assert_eq!(
            problems(json!({"args": [], "grace": "5 parsecs"})),
            [
                ("args".to_owned(), "`args` must not be empty".to_owned()),
                (
                    "grace".to_owned(),
                    "invalid duration `5 parsecs`: unknown time unit \"parsecs\", supported units: \
                     ns, us/µs, ms, sec, min, hours, days, weeks, months, years (and few variations)"
                        .to_owned()
                ),
            ]
        );
    }

    #[test]
    fn describe_quotes_the_command() {
        assert_eq!(
            Shell.describe(
                &json!({"args": ["kubectl", "exec", "-n", "vault system", "--", "bao", "it's"]})
            ),
            r"kubectl exec -n 'vault system' -- bao 'it'\''s'"
        );
        assert_eq!(
            Shell.describe(&json!({"run": "pg_dump app | gzip > app.gz"})),
            "sh -c 'pg_dump app | gzip > app.gz'"
        );
        let long = Shell.describe(&json!({"args": ["echo", "x".repeat(500)]}));
        assert_eq!(long.chars().count(), EXCERPT_CHARS + 1);
        assert!(long.ends_with('…'));
        assert!(!Shell.idempotent(&json!({"args": ["true"]})));
        assert_eq!(Shell.name(), "shell");
    }
}
