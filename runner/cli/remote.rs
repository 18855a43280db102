//! The command line talking to a running `serve` instead of the journal it holds: found
//! through `serve.json` in the journal directory, authenticated with the local token it
//! holds, acting as the command line's user.

use std::time::Duration;

use runbook_journals::{Record, RunId, RunState};
use serde_json::{Value, json};

use crate::cli::{CliError, Env};
use crate::failure::{ErrorBody, Kind};
use crate::serve::auth::ACT_AS;
use crate::serve::info::ServeInfo;

/// A `serve` on this machine.
pub struct Remote {
    url: String,
    token: String,
    who: String,
    client: reqwest::Client,
}

impl Remote {
    /// Where a command goes when opening the journal failed with `err`: to the `serve` that
    /// holds it when the journal is busy and a `serve` runs; otherwise `err` stands.
    pub fn instead_of(env: &Env, err: CliError) -> Result<Self, CliError> {
        match err {
            CliError::Journal(runbook_journals::JournalError::Busy { .. }) => {
                Self::find(env).ok_or(err)
            }
            other => Err(other),
        }
    }

    /// The `serve` holding this command line's journal, if one runs.
    pub fn find(env: &Env) -> Option<Self> {
        let info = ServeInfo::read_live(&env.journal_dir())?;
        runbook_steps::install_crypto_provider();
        let client = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(5))
            .build()
            .ok()?;
        Some(Self {
            url: info.url,
            token: info.token,
            who: env.who.clone(),
            client,
        })
    }

    fn request(&self, method: reqwest::Method, path: &str) -> reqwest::RequestBuilder {
        self.client
            .request(method, format!("{}/api/v1{path}", self.url))
            .bearer_auth(&self.token)
            .header(ACT_AS, &self.who)
    }

    fn unreachable(&self, e: &reqwest::Error) -> CliError {
        CliError::Other(anyhow::anyhow!(
            "failed to reach serve at {}: {e}",
            self.url
        ))
    }

    async fn send(&self, request: reqwest::RequestBuilder) -> Result<Value, CliError> {
        let response = request
            .timeout(Duration::from_secs(60))
            .send()
            .await
            .map_err(|e| self.unreachable(&e))?;
        let status = response.status();
        if status.is_success() {
            return Ok(response.json().await.unwrap_or(Value::Null));
        }
        Err(failure(status, response).await)
    }

    /// GET `/api/v1{path}`.
    pub async fn get(&self, path: &str) -> Result<Value, CliError> {
        self.send(self.request(reqwest::Method::GET, path)).await
    }

    /// POST `/api/v1{path}` with a JSON body.
    pub async fn post(&self, path: &str, body: Value) -> Result<Value, CliError> {
        self.send(self.request(reqwest::Method::POST, path).json(&body))
            .await
    }

    /// Follows a run's records (server-sent events), calling `each` for every one, until the
    /// run ends or — unless `until_end` — parks: after record `since` when given (the `since`
    /// of the answer to this command line's action on the run), so a park the run reached
    /// before the stream was opened counts too. Returns the last state seen.
    pub async fn follow(
        &self,
        run: &str,
        until_end: bool,
        since: Option<u64>,
        mut each: impl FnMut(RunId, &Record),
    ) -> Result<Option<RunState>, CliError> {
        let path = match since {
            Some(since) => format!("/runs/{run}/events?until_end={until_end}&since={since}"),
            None => format!("/runs/{run}/events?until_end={until_end}"),
        };
        let mut response = self
            .request(reqwest::Method::GET, &path)
            .send()
            .await
            .map_err(|e| self.unreachable(&e))?;
        if !response.status().is_success() {
            return Err(failure(response.status(), response).await);
        }
        let mut buffer = String::new();
        let mut data = String::new();
        let mut last_state = None;
        while let Some(chunk) = response
            .chunk()
            .await
            .map_err(|e| CliError::Other(anyhow::anyhow!("the event stream broke: {e}")))?
        {
            buffer.push_str(&String::from_utf8_lossy(&chunk));
            while let Some(end) = buffer.find('\n') {
                let line = buffer[..end].trim_end_matches('\r').to_owned();
                buffer.drain(..=end);
                if let Some(d) = line.strip_prefix("data:") {
                    data.push_str(d.trim_start());
                } else if line.is_empty() && !data.is_empty() {
                    if let Ok(mut v) = serde_json::from_str::<Value>(&data) {
                        let id = v["run"].as_str().and_then(|s| s.parse::<RunId>().ok());
                        if let Some(obj) = v.as_object_mut() {
                            obj.remove("run");
                        }
                        if let (Some(id), Ok(record)) = (id, serde_json::from_value::<Record>(v)) {
                            if let runbook_journals::Event::StateChanged { state, .. } =
                                &record.event
                            {
                                last_state = Some(*state);
                            }
                            each(id, &record);
                        }
                    }
                    data.clear();
                }
            }
        }
        Ok(last_state)
    }
}

/// The error an answer of `serve` other than a success stands for, of the kind `serve` says.
async fn failure(status: reqwest::StatusCode, response: reqwest::Response) -> CliError {
    let body: Option<ErrorBody> = response.json().await.ok();
    let message = body
        .as_ref()
        .map_or_else(|| format!("serve answered {status}"), |b| b.error.clone());
    // A `serve` older than the `kind` field: its statuses are all there is to go by.
    let kind = body.and_then(|b| b.kind).unwrap_or(match status.as_u16() {
        400 | 404 | 409 => Kind::BadInput,
        401 => Kind::Unauthorized,
        _ => Kind::Failed,
    });
    CliError::Remote { kind, message }
}

/// A JSON object of `name=value` pairs.
pub fn params_json(params: &[(String, String)]) -> Value {
    Value::Object(params.iter().map(|(k, v)| (k.clone(), json!(v))).collect())
}
