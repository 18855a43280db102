//! Parameter values read from OpenBao (or Vault): `from: { openbao: { path, field, … } }`.
//!
//! ```yaml
//! params:
//!   db_password:
//!     from:
//!       openbao:
//!         addr: https://bao.example:8200    # default: $BAO_ADDR, then $VAULT_ADDR
//!         path: secret/data/db/app          # the API path after /v1/ (KV v2: MOUNT/data/NAME)
//!         field: password
//!         namespace: team-a                 # optional (X-Vault-Namespace)
//!         ca_file: /etc/bao/ca.pem          # optional: the CA of an https addr
//!         auth: { token_env: BAO_TOKEN }    # or token_file: FILE, or approle: {…}; default
//!                                           # $BAO_TOKEN, then $VAULT_TOKEN
//! ```
//!
//! # Contract
//!
//! - A parameter with such a source is secret whatever its declaration says: its value is
//!   masked in everything written or printed and journaled as the mask only.
//! - It is read when a run starts and again on every resume (the journal does not hold it), so
//!   a resumed run uses the value OpenBao holds then — a rotated password is picked up. A `-p`
//!   value, the parameter's `env:` and its `file:` come first, in that order; the default last.
//! - KV v2 and KV v1 are both read: a response whose `data` holds `data` and `metadata` is v2.
//!   The field's JSON value is typed as the parameter (a string `"5"` for an `int` parameter is
//!   parsed as `-p` would be; a number is taken as it is).
//! - `auth` is a token from an environment variable (`token_env`) or a file (`token_file`), or
//!   an `AppRole` login (`approle: { role_id, secret_id_env | secret_id_file, mount }`, mount
//!   `approle` by default) whose token is used for every read of the same resolution and then
//!   dropped (it is never written anywhere).
//! - Every failure names the parameter, the path and what OpenBao answered; no token or secret
//!   value appears in a message.
//!
//! Reads block the calling thread (parameter resolution is synchronous): each is made on a
//! thread of its own with a bounded timeout, and a caller on a multi-threaded tokio runtime
//! hands its worker over (`block_in_place`) while it waits.

use std::collections::HashMap;
use std::time::Duration;

use serde_json::{Value, json};

/// How long one HTTP exchange with OpenBao may take.
const TIMEOUT: Duration = Duration::from_secs(10);

/// Where a parameter's value lives in OpenBao.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Source {
    /// The server's address (`http(s)://host:port`); `None`: `$BAO_ADDR`, then `$VAULT_ADDR`.
    pub addr: Option<String>,
    /// The API path after `/v1/` (KV v2: `MOUNT/data/NAME`).
    pub path: String,
    /// The field of the secret's data.
    pub field: String,
    /// An OpenBao namespace, if any.
    pub namespace: Option<String>,
    /// A PEM file of the CA that signed an https server's certificate.
    pub ca_file: Option<String>,
    /// How to get a token.
    pub auth: Auth,
}

/// How a token is obtained.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Auth {
    /// `$BAO_TOKEN`, then `$VAULT_TOKEN`.
    Default,
    /// The token is in this environment variable.
    TokenEnv(String),
    /// The token is in this file (trimmed).
    TokenFile(String),
    /// An `AppRole` login.
    AppRole {
        /// The role's id.
        role_id: String,
        /// Where its secret id is.
        secret_id: SecretId,
        /// The auth method's mount (`approle`).
        mount: String,
    },
}

/// Where an `AppRole` secret id is.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SecretId {
    /// In this environment variable.
    Env(String),
    /// In this file (trimmed).
    File(String),
}

impl Source {
    /// `secret/data/db#password`, for messages.
    pub fn describe(&self) -> String {
        format!("{}#{}", self.path, self.field)
    }

    fn addr(&self) -> Result<String, String> {
        if let Some(a) = &self.addr {
            return Ok(a.trim_end_matches('/').to_owned());
        }
        ["BAO_ADDR", "VAULT_ADDR"]
            .iter()
            .find_map(|v| std::env::var(v).ok().filter(|a| !a.trim().is_empty()))
            .map(|a| a.trim().trim_end_matches('/').to_owned())
            .ok_or_else(|| "no OpenBao address: give `addr` or set $BAO_ADDR".to_owned())
    }
}

/// Reads OpenBao sources, keeping the token of each login for the reads that follow.
#[derive(Default)]
pub struct Reader {
    /// Tokens from `AppRole` logins, by (address, mount, role id).
    logins: HashMap<(String, String, String), String>,
}

impl Reader {
    /// A reader with no login yet.
    pub fn new() -> Self {
        Self::default()
    }

    /// The value of the source's field; the error is a sentence for the operator.
    pub fn read(&mut self, source: &Source) -> Result<Value, String> {
        let addr = source.addr()?;
        let key = match &source.auth {
            Auth::AppRole { role_id, mount, .. } => {
                Some((addr.clone(), mount.clone(), role_id.clone()))
            }
            _ => None,
        };
        let cached = key.as_ref().and_then(|k| self.logins.get(k)).cloned();
        let (value, token) = off_runtime(|| {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .map_err(|e| format!("cannot start an HTTP client: {e}"))?;
            runtime.block_on(fetch(source, &addr, cached))
        })?;
        if let Some(k) = key {
            self.logins.insert(k, token);
        }
        Ok(value)
    }
}

/// Runs `f` on a thread of its own, handing a tokio worker over while it waits.
fn off_runtime<T: Send>(f: impl FnOnce() -> T + Send) -> T {
    let run = || std::thread::scope(|s| s.spawn(f).join().expect("the OpenBao reader panicked"));
    match tokio::runtime::Handle::try_current() {
        Ok(h) if h.runtime_flavor() == tokio::runtime::RuntimeFlavor::MultiThread => {
            tokio::task::block_in_place(run)
        }
        _ => run(),
    }
}

fn client(source: &Source) -> Result<reqwest::Client, String> {
    runbook_steps::install_crypto_provider();
    let mut builder = reqwest::Client::builder().timeout(TIMEOUT);
    if let Some(path) = &source.ca_file {
        let pem = std::fs::read(path).map_err(|e| format!("cannot read `ca_file` {path}: {e}"))?;
        let cert = reqwest::Certificate::from_pem(&pem)
            .map_err(|e| format!("cannot use `ca_file` {path}: {e}"))?;
        builder = builder.add_root_certificate(cert);
    }
    builder
        .build()
        .map_err(|e| format!("cannot set up an HTTP client: {e}"))
}

/// The token to read with: the cached login's, or a fresh one. Returns it for the cache.
async fn token(
    http: &reqwest::Client,
    source: &Source,
    addr: &str,
    cached: Option<String>,
) -> Result<String, String> {
    let env = |name: &str| {
        std::env::var(name)
            .ok()
            .map(|t| t.trim().to_owned())
            .filter(|t| !t.is_empty())
    };
    let file = |path: &str, what: &str| {
        std::fs::read_to_string(path)
            .map(|t| t.trim().to_owned())
            .map_err(|e| format!("cannot read the {what} file {path}: {e}"))
    };
    match &source.auth {
        Auth::Default => env("BAO_TOKEN")
            .or_else(|| env("VAULT_TOKEN"))
            .ok_or_else(|| {
                "no OpenBao token: set $BAO_TOKEN or give `auth` (token_env, token_file, approle)"
                    .to_owned()
            }),
        Auth::TokenEnv(name) => {
            env(name).ok_or_else(|| format!("no OpenBao token: ${name} is not set"))
        }
        Auth::TokenFile(path) => file(path, "token"),
        Auth::AppRole {
            role_id,
            secret_id,
            mount,
        } => {
            if let Some(token) = cached {
                return Ok(token);
            }
            let secret_id = match secret_id {
                SecretId::Env(name) => {
                    env(name).ok_or_else(|| format!("no AppRole secret id: ${name} is not set"))?
                }
                SecretId::File(path) => file(path, "secret id")?,
            };
            let url = format!("{addr}/v1/auth/{mount}/login");
            let body = send(namespaced(http.post(&url), source).json(&json!({
                "role_id": role_id,
                "secret_id": secret_id,
            })))
            .await
            .map_err(|e| format!("AppRole login at {url} failed: {e}"))?;
            body["auth"]["client_token"]
                .as_str()
                .map(str::to_owned)
                .ok_or_else(|| format!("AppRole login at {url} returned no token"))
        }
    }
}

fn namespaced(request: reqwest::RequestBuilder, source: &Source) -> reqwest::RequestBuilder {
    match &source.namespace {
        Some(ns) => request.header("X-Vault-Namespace", ns),
        None => request,
    }
}

/// Sends a request and returns its JSON body, or OpenBao's errors with the status.
async fn send(request: reqwest::RequestBuilder) -> Result<Value, String> {
    let response = request.send().await.map_err(|e| transport_cause(&e))?;
    let status = response.status();
    let body: Value = response.json().await.unwrap_or(Value::Null);
    if status.is_success() {
        return Ok(body);
    }
    let errors: Vec<&str> = body["errors"]
        .as_array()
        .map(|e| e.iter().filter_map(Value::as_str).collect())
        .unwrap_or_default();
    Err(if errors.is_empty() {
        format!("HTTP {}", status.as_u16())
    } else {
        format!("{} (HTTP {})", errors.join("; "), status.as_u16())
    })
}

/// The innermost cause of a transport error ("connection refused"), without the URL.
fn transport_cause(e: &reqwest::Error) -> String {
    let mut current: &dyn std::error::Error = e;
    while let Some(next) = current.source() {
        current = next;
    }
    if e.is_timeout() {
        format!("no answer within {}", humantime::format_duration(TIMEOUT))
    } else {
        current.to_string()
    }
}

/// Logs in if needed and reads the field; returns the value and the token used.
async fn fetch(
    source: &Source,
    addr: &str,
    cached: Option<String>,
) -> Result<(Value, String), String> {
    let http = client(source)?;
    let token = token(&http, source, addr, cached).await?;
    let path = source.path.trim_matches('/');
    let url = format!("{addr}/v1/{path}");
    let body = send(namespaced(http.get(&url), source).header("X-Vault-Token", &token))
        .await
        .map_err(|e| {
            let hint = if e.starts_with("HTTP 404") && !path.contains("/data/") {
                " (a KV v2 secret's path has `data/` after the mount: secret/data/NAME)"
            } else {
                ""
            };
            format!("cannot read {path} at {addr}: {e}{hint}")
        })?;
    let data = &body["data"];
    let fields = if data["data"].is_object() && data["metadata"].is_object() {
        &data["data"]
    } else {
        data
    };
    let Some(map) = fields.as_object() else {
        return Err(format!("{path} at {addr} holds no data"));
    };
    match map.get(&source.field) {
        Some(value) if !value.is_null() => Ok((value.clone(), token)),
        _ => {
            let names: Vec<&str> = map.keys().map(String::as_str).collect();
            Err(format!(
                "{path} at {addr} has no field `{}`; its fields: {}",
                source.field,
                if names.is_empty() {
                    "none".to_owned()
                } else {
                    names.join(", ")
                }
            ))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn source(addr: Option<&str>) -> Source {
        Source {
            addr: addr.map(str::to_owned),
            path: "secret/data/db".into(),
            field: "password".into(),
            namespace: None,
            ca_file: None,
            auth: Auth::TokenEnv("RUNBOOK_TEST_NO_SUCH_TOKEN_VAR".into()),
        }
    }

    #[test]
    fn a_missing_token_is_named_before_anything_is_sent() {
        // Nothing listens on port 9 of loopback; the token check comes first.
        let err = Reader::new()
            .read(&source(Some("http://127.0.0.1:9/")))
            .unwrap_err();
        assert_eq!(
            err,
            "no OpenBao token: $RUNBOOK_TEST_NO_SUCH_TOKEN_VAR is not set"
        );
        assert_eq!(source(None).describe(), "secret/data/db#password");
    }

    #[test]
    fn an_unreachable_server_is_a_clear_error() {
        let mut s = source(Some("http://127.0.0.1:9"));
        let dir = tempfile::tempdir().unwrap();
        let token = dir.path().join("token");
        std::fs::write(&token, "s.abc\n").unwrap();
        s.auth = Auth::TokenFile(token.to_str().unwrap().to_owned());
        let err = Reader::new().read(&s).unwrap_err();
        assert!(
            err.starts_with("cannot read secret/data/db at http://127.0.0.1:9: "),
            "{err}"
        );
        assert!(!err.contains("s.abc"), "{err}");
    }
}
