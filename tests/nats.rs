//! `rolling-restart-nats` on a real 3-node NATS cluster with JetStream, upgrading it from
//! Debian's 2.9 to 2.15 from PyPI (`testbeds/nats.sh` on loopback). A publisher sends to an R3
//! stream throughout; every message the stream acknowledged must still be in it afterwards.

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::support::Sandbox;
use crate::support::clusters::{Cluster, Sampler, down, get_json, http, status_of};

/// One server in one sample: /healthz status, pid, and whether it sees itself as the
/// JetStream meta leader.
pub(crate) type ServerSample = (Option<u16>, Option<u32>, bool);

/// A message the stream acknowledged: its sequence and payload.
pub(crate) type Ack = (u64, String);

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime")
}

/// A 3-node testbed NATS cluster with JetStream, observed from its servers, and a client
/// connected to it (the application account).
pub(crate) struct Nats {
    /// The testbed cluster, when the servers are one (`None`: a layout of the test's own).
    pub(crate) cluster: Option<Cluster>,
    /// Client and monitoring URL of each server by ordinal.
    pub(crate) urls: Vec<String>,
    pub(crate) monitors: Vec<String>,
    /// Each server's pid file, and each server's name (`server_name`), by ordinal.
    pub(crate) pid_files: Vec<std::path::PathBuf>,
    pub(crate) names: Vec<String>,
    /// The passwords of the system and the application account.
    pub(crate) passwords: (String, String),
    rt: tokio::runtime::Runtime,
    client: async_nats::Client,
}

impl Nats {
    /// A cluster made by `Cluster::nats`; connects once any server answers.
    pub(crate) fn from_cluster(cluster: Cluster) -> Self {
        let urls: Vec<String> = (1..=3)
            .map(|i| cluster.var(&format!("NATS_URL_{i}")))
            .collect();
        let monitors = (1..=3)
            .map(|i| cluster.var(&format!("MONITOR_URL_{i}")))
            .collect();
        let pid_files = (1..=3)
            .map(|i| cluster.dir.join(format!("n{i}.pid")))
            .collect();
        let names = (1..=3).map(|i| format!("n{i}")).collect();
        let passwords = (
            cluster.var("NATS_SYS_PASSWORD"),
            cluster.var("NATS_APP_PASSWORD"),
        );
        Self::connect(Some(cluster), urls, monitors, pid_files, names, passwords)
    }

    /// Servers at `urls`, however they were started; connects once any answers.
    pub(crate) fn connect(
        cluster: Option<Cluster>,
        urls: Vec<String>,
        monitors: Vec<String>,
        pid_files: Vec<std::path::PathBuf>,
        names: Vec<String>,
        passwords: (String, String),
    ) -> Self {
        let rt = runtime();
        let client = rt
            .block_on(
                async_nats::ConnectOptions::new()
                    .retry_on_initial_connect()
                    .connect(addrs(&urls)),
            )
            .expect("connect");
        Self {
            cluster,
            urls,
            monitors,
            pid_files,
            names,
            passwords,
            rt,
            client,
        }
    }

    /// `runbook ARGS` with the accounts' passwords the runbook reads from the environment.
    pub(crate) fn runbook(&self, sb: &Sandbox, args: &[&str]) -> crate::support::Cmd {
        sb.cmd(args)
            .env("NATS_SYS_PASSWORD", &self.passwords.0)
            .env("NATS_APP_PASSWORD", &self.passwords.1)
    }

    /// Creates the R3 stream ORDERS (subjects `orders.>`), retrying while JetStream settles.
    pub(crate) fn create_stream(&self) {
        let created = self.rt.block_on(async {
            let mut last = None;
            for _ in 0..50 {
                match self
                    .client
                    .request(
                        "$JS.API.STREAM.CREATE.ORDERS",
                        json!({"name": "ORDERS", "subjects": ["orders.>"], "num_replicas": 3})
                            .to_string()
                            .into(),
                    )
                    .await
                {
                    Ok(reply) => {
                        let v: Value = serde_json::from_slice(&reply.payload).expect("json");
                        if v.get("error").is_none() {
                            return Ok(v);
                        }
                        last = Some(v.to_string());
                    }
                    Err(e) => last = Some(e.to_string()),
                }
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
            Err(last.unwrap_or_default())
        });
        created.expect("create stream");
        // The new R3 stream is current on every server a moment later.
        let agent = http();
        crate::support::wait_for(
            "the stream current everywhere",
            Duration::from_secs(30),
            || {
                self.monitors
                    .iter()
                    .all(|m| status_of(&agent, &format!("{m}/healthz")) == Some(200))
            },
        );
    }

    /// Samples every server's /healthz, pid and meta leadership every 50 ms.
    pub(crate) fn monitor(&self) -> Sampler<Vec<ServerSample>> {
        let (monitors, pid_files) = (self.monitors.clone(), self.pid_files.clone());
        let names = self.names.clone();
        let agent = http();
        Sampler::start(Duration::from_millis(50), move || {
            monitors
                .iter()
                .enumerate()
                .map(|(i, m)| {
                    let pid = std::fs::read_to_string(&pid_files[i])
                        .ok()
                        .and_then(|s| s.trim().parse().ok());
                    let leads = agent
                        .get(&format!("{m}/jsz"))
                        .call()
                        .ok()
                        .and_then(|r| r.into_json::<Value>().ok())
                        .is_some_and(|v| v["meta_cluster"]["leader"] == names[i]);
                    (status_of(&agent, &format!("{m}/healthz")), pid, leads)
                })
                .collect()
        })
    }

    /// A publisher to `orders.N` every 20 ms; JetStream publishes are requests answered with
    /// the stored sequence, and each sample is what was acknowledged, if anything.
    pub(crate) fn publisher(&self) -> Sampler<Option<Ack>> {
        // A worker thread of its own keeps the connection serviced between publishes.
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .expect("runtime");
        let client = rt
            .block_on(
                async_nats::ConnectOptions::new()
                    .retry_on_initial_connect()
                    .connect(addrs(&self.urls)),
            )
            .expect("connect");
        let mut n = 0u64;
        Sampler::start(Duration::from_millis(20), move || {
            let payload = format!("order-{n}");
            let request = client.request(format!("orders.{n}"), payload.clone().into());
            let reply =
                rt.block_on(async { tokio::time::timeout(Duration::from_secs(2), request).await });
            n += 1;
            let reply = reply.ok()?.ok()?;
            let seq = serde_json::from_slice::<Value>(&reply.payload).ok()?["seq"].as_u64()?;
            Some((seq, payload))
        })
    }

    /// The version each server reports (`/varz`).
    pub(crate) fn versions(&self) -> Vec<String> {
        let agent = http();
        self.monitors
            .iter()
            .map(|m| {
                let v = get_json(&agent, &format!("{m}/varz"));
                v["version"].as_str().expect("version").to_owned()
            })
            .collect()
    }

    /// Every acknowledged message is in the stream with its payload.
    pub(crate) fn assert_messages(&self, acked: &[Ack]) {
        assert!(
            acked.len() > 20,
            "the publisher made little progress: {}",
            acked.len()
        );
        let lost: Vec<u64> = self.rt.block_on(async {
            let mut lost = Vec::new();
            for (seq, payload) in acked {
                // Right after a rolling restart the stream API may not answer at once: retry.
                let mut reply = None;
                for _ in 0..20 {
                    match self
                        .client
                        .request(
                            "$JS.API.STREAM.MSG.GET.ORDERS",
                            json!({ "seq": seq }).to_string().into(),
                        )
                        .await
                    {
                        Ok(r) => {
                            reply = Some(r);
                            break;
                        }
                        Err(_) => tokio::time::sleep(Duration::from_millis(500)).await,
                    }
                }
                let reply = reply.expect("the stream answers a message get");
                let v: Value = serde_json::from_slice(&reply.payload).expect("json");
                let data = v["message"]["data"].as_str().unwrap_or_default();
                if decode_b64(data) != payload.as_bytes() {
                    lost.push(*seq);
                }
            }
            lost
        });
        assert!(lost.is_empty(), "acknowledged messages lost: {lost:?}");
    }
}

/// What a rolling restart must look like from the servers: one server down at most; each
/// restarted exactly once; the meta leader at the start handed over while its old process
/// still ran.
pub(crate) fn assert_rolled(samples: &[(Instant, Vec<ServerSample>)]) {
    for i in 0..samples.len() {
        let down = (0..3)
            .filter(|s| down(samples, i, *s, |v| v.0.is_some(), |v| v.1))
            .count();
        assert!(down <= 1, "sample {i}: {down} servers down at once");
    }
    for s in 0..3 {
        let pids: BTreeSet<u32> = samples.iter().filter_map(|(_, v)| v[s].1).collect();
        assert_eq!(pids.len(), 2, "n{} restarted exactly once", s + 1);
        let first = samples[0].1[s].1;
        if samples[0].1[s].2 {
            assert!(
                samples
                    .iter()
                    .any(|(_, v)| v[s].1 == first && v[s].0.is_some() && !v[s].2),
                "n{} led at the start and was never seen without the lead before its restart",
                s + 1
            );
        }
    }
}

/// The run stepped the meta leader and stream leaders down (from the journal).
pub(crate) fn assert_journaled_stepdowns(sb: &Sandbox) {
    let run = sb.only_run();
    let stepped = sb
        .records(&run)
        .iter()
        .filter(|r| r["event"] == "step_succeeded")
        .filter_map(|r| r["path"].as_str().map(str::to_owned))
        .filter(|p| p.ends_with(".stepdown"))
        .count();
    assert!(stepped >= 2, "meta and stream leaders were stepped down");
}

/// The acknowledged messages among a publisher's samples.
pub(crate) fn acknowledged(samples: Vec<(Instant, Option<Ack>)>) -> Vec<Ack> {
    samples.into_iter().filter_map(|(_, a)| a).collect()
}

#[test]
fn rolling_upgrade_on_a_real_cluster_steps_leaders_down_first_and_loses_no_message() {
    let nats = Nats::from_cluster(Cluster::nats("2.9"));
    let sb = Sandbox::new();
    nats.create_stream();
    let monitor = nats.monitor();
    let publisher = nats.publisher();
    let out = nats
        .runbook(
            &sb,
            &[
                "run",
                "rolling-restart-nats",
                "-p",
                &format!(
                    "cluster_dir={}",
                    nats.cluster.as_ref().expect("testbed").path()
                ),
                "-p",
                "version=2.15",
            ],
        )
        .ok();
    let acked = acknowledged(publisher.finish());
    let samples = monitor.finish();

    // Every server on 2.15 now (read from the servers).
    for (m, v) in nats.monitors.iter().zip(nats.versions()) {
        assert!(v.starts_with("2.15"), "{m} runs {v}\n{}", out.stdout);
    }
    assert_rolled(&samples);
    nats.assert_messages(&acked);
    assert_journaled_stepdowns(&sb);
}

fn addrs(urls: &[String]) -> Vec<async_nats::ServerAddr> {
    urls.iter()
        .map(|u| u.parse().expect("server address"))
        .collect()
}

fn decode_b64(s: &str) -> Vec<u8> {
    const T: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = Vec::new();
    let mut buf = 0u32;
    let mut bits = 0;
    for c in s.bytes().filter(|c| *c != b'=') {
        let Some(v) = T.iter().position(|t| *t == c) else {
            continue;
        };
        buf = (buf << 6) | u32::try_from(v).unwrap_or(0);
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            out.push(u8::try_from((buf >> bits) & 0xFF).unwrap_or(0));
        }
    }
    out
}
