//! The `exec` subresource over a websocket, as the kubelet streams it: the client offers
//! `v5.channel.k8s.io` and/or `v4.channel.k8s.io`; every binary frame starts with a channel
//! byte (0 stdin, 1 stdout, 2 stderr, 3 the closing `Status`, 255 "close channel N", v5 only).
//! The command's exit is reported on channel 3: `{"status":"Success"}`, or a `Failure` with
//! reason `NonZeroExitCode` and the code in `details.causes[reason=ExitCode]`.

use futures_util::{SinkExt as _, StreamExt as _};
use http_body_util::Full;
use hyper::body::{Bytes, Incoming};
use hyper::header::{
    CONNECTION, SEC_WEBSOCKET_ACCEPT, SEC_WEBSOCKET_KEY, SEC_WEBSOCKET_PROTOCOL, UPGRADE,
};
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use serde_json::{Value, json};
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::handshake::derive_accept_key;
use tokio_tungstenite::tungstenite::protocol::Role;

use super::ExecCall;
use super::server::{Body, flag, json_response, param};
use super::store::{ApiError, State, at, resource_at, str_at};

const PROTOCOLS: &[&str] = &["v5.channel.k8s.io", "v4.channel.k8s.io"];

fn refuse(e: &ApiError) -> Response<Body> {
    json_response(e.code, &e.status())
}

/// Answers the upgrade request and runs the session on the upgraded connection.
pub fn upgrade(
    state: &State,
    mut req: Request<Incoming>,
    ns: &str,
    pod: &str,
    query: &[(String, String)],
) -> Response<Body> {
    let pod_res = resource_at("", "v1", "pods").expect("pods");
    let (container, phase) = {
        let inner = state.lock();
        let Some(object) = inner.get(pod_res, ns, pod) else {
            return refuse(&ApiError::not_found(pod_res, pod));
        };
        let containers: Vec<String> = at(object, "spec.containers")
            .and_then(Value::as_array)
            .map(|c| {
                c.iter()
                    .filter_map(|c| c.get("name").and_then(Value::as_str).map(str::to_owned))
                    .collect()
            })
            .unwrap_or_default();
        let container = match param(query, "container") {
            Some(c) if containers.iter().any(|x| x == c) => c.to_owned(),
            Some(c) => {
                return refuse(&ApiError::bad_request(format!(
                    "container {c} is not valid for pod {pod}"
                )));
            }
            None => containers.first().cloned().unwrap_or_default(),
        };
        (container, str_at(object, "status.phase").to_owned())
    };
    if phase != "Running" {
        return refuse(&ApiError::bad_request(format!(
            "unable to upgrade connection: pod {pod} is not running (phase {phase})"
        )));
    }
    let command: Vec<String> = query
        .iter()
        .filter(|(k, _)| k == "command")
        .map(|(_, v)| v.clone())
        .collect();
    if command.is_empty() {
        return refuse(&ApiError::bad_request(
            "you must specify at least 1 command",
        ));
    }
    let header = |name| {
        req.headers()
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_owned()
    };
    let key = header(SEC_WEBSOCKET_KEY);
    let wants_ws = header(UPGRADE).eq_ignore_ascii_case("websocket");
    if key.is_empty() || !wants_ws {
        return refuse(&ApiError::bad_request(
            "exec needs a websocket upgrade (this fake does not speak SPDY)",
        ));
    }
    let offered = header(SEC_WEBSOCKET_PROTOCOL);
    let Some(protocol) = PROTOCOLS
        .iter()
        .find(|p| offered.split(',').any(|o| o.trim() == **p))
        .copied()
    else {
        return refuse(&ApiError::bad_request(format!(
            "no supported websocket subprotocol in `{offered}`; supported: {}",
            PROTOCOLS.join(", ")
        )));
    };
    let call = ExecCall {
        namespace: ns.to_owned(),
        pod: pod.to_owned(),
        container,
        command,
        stdin: String::new(),
    };
    let session = Session {
        call,
        stdin: flag(query, "stdin"),
        stdout: flag(query, "stdout"),
        stderr: flag(query, "stderr"),
        v5: protocol.starts_with("v5"),
        handler: state.options.exec.clone(),
    };
    let on_upgrade = hyper::upgrade::on(&mut req);
    tokio::spawn(async move {
        let Ok(upgraded) = on_upgrade.await else {
            return;
        };
        let ws = WebSocketStream::from_raw_socket(TokioIo::new(upgraded), Role::Server, None).await;
        session.run(ws).await;
    });
    Response::builder()
        .status(StatusCode::SWITCHING_PROTOCOLS)
        .header(UPGRADE, "websocket")
        .header(CONNECTION, "Upgrade")
        .header(SEC_WEBSOCKET_ACCEPT, derive_accept_key(key.as_bytes()))
        .header(SEC_WEBSOCKET_PROTOCOL, protocol)
        .body(Full::new(Bytes::new()))
        .expect("upgrade response")
}

struct Session {
    call: ExecCall,
    stdin: bool,
    stdout: bool,
    stderr: bool,
    v5: bool,
    handler: Option<super::ExecHandler>,
}

fn frame(channel: u8, data: &[u8]) -> Message {
    let mut bytes = Vec::with_capacity(data.len() + 1);
    bytes.push(channel);
    bytes.extend_from_slice(data);
    Message::binary(bytes)
}

/// The closing status the kubelet sends on channel 3.
fn status(code: i32) -> Value {
    if code == 0 {
        return json!({"metadata": {}, "status": "Success"});
    }
    json!({
        "metadata": {},
        "status": "Failure",
        "message": format!("command terminated with non-zero exit code: exit status {code}"),
        "reason": "NonZeroExitCode",
        "details": {"causes": [{"reason": "ExitCode", "message": code.to_string()}]},
    })
}

impl Session {
    async fn run<S>(mut self, ws: WebSocketStream<S>)
    where
        S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
    {
        let (mut tx, mut rx) = ws.split();
        // The kubelet opens each requested stream with an empty frame on its channel.
        for (open, channel) in [(self.stdout, 1u8), (self.stderr, 2u8)] {
            if open && tx.send(frame(channel, &[])).await.is_err() {
                return;
            }
        }
        if self.stdin {
            let mut input = Vec::new();
            while let Some(message) = rx.next().await {
                match message {
                    Ok(Message::Binary(data)) => match data.first() {
                        Some(0) => input.extend_from_slice(&data[1..]),
                        // v5: "channel 0 is closed" ends stdin.
                        Some(255) if data.get(1) == Some(&0) && self.v5 => break,
                        _ => {}
                    },
                    Ok(Message::Close(_)) | Err(_) => break,
                    Ok(_) => {}
                }
            }
            self.call.stdin = String::from_utf8_lossy(&input).into_owned();
        }
        let handler = self.handler.clone();
        let call = self.call.clone();
        let (out, err, code) = tokio::task::spawn_blocking(move || match handler {
            Some(handler) => handler(&call),
            None => (
                String::new(),
                "exec is not configured in this fake\n".into(),
                126,
            ),
        })
        .await
        .unwrap_or_else(|_| (String::new(), "the exec handler panicked\n".into(), 137));
        if self.stdout && !out.is_empty() {
            let _ = tx.send(frame(1, out.as_bytes())).await;
        }
        if self.stderr && !err.is_empty() {
            let _ = tx.send(frame(2, err.as_bytes())).await;
        }
        let _ = tx.send(frame(3, status(code).to_string().as_bytes())).await;
        let _ = tx.send(Message::Close(None)).await;
        // Drain until the client closes too, so the close handshake completes.
        let _ = tokio::time::timeout(std::time::Duration::from_secs(2), async {
            while let Some(Ok(_)) = rx.next().await {}
        })
        .await;
    }
}
