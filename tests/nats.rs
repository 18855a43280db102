//! `rolling-restart-nats` on a real 3-node NATS cluster with JetStream, upgrading it from
//! Debian's 2.9 to 2.15 from PyPI (`testbeds/nats.sh` on loopback). A publisher sends to an R3
//! stream throughout; every message the stream acknowledged must still be in it afterwards.

use std::collections::BTreeSet;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::support::Sandbox;
use crate::support::clusters::{Cluster, Sampler, http, status_of};

/// One server in one sample: /healthz status, pid, and whether it sees itself as the
/// JetStream meta leader.
type ServerSample = (Option<u16>, Option<u32>, bool);

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime")
}

#[test]
fn rolling_upgrade_on_a_real_cluster_steps_leaders_down_first_and_loses_no_message() {
    let nats = Cluster::nats("2.9");
    let urls: Vec<String> = (1..=3)
        .map(|i| nats.var(&format!("NATS_URL_{i}")))
        .collect();
    let monitors: Vec<String> = (1..=3)
        .map(|i| nats.var(&format!("MONITOR_URL_{i}")))
        .collect();
    let sb = Sandbox::new();

    // An R3 stream, created as the application account (the no-auth user).
    let rt = runtime();
    let client = rt
        .block_on(async_nats::connect(addrs(&urls)))
        .expect("connect");
    let created = rt.block_on(async {
        let mut last = None;
        for _ in 0..50 {
            match client
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

    let monitor = {
        let (monitors, dir) = (monitors.clone(), nats.dir.clone());
        let agent = http();
        Sampler::start(Duration::from_millis(50), move || {
            monitors
                .iter()
                .enumerate()
                .map(|(i, m)| {
                    let pid = std::fs::read_to_string(dir.join(format!("n{}.pid", i + 1)))
                        .ok()
                        .and_then(|s| s.trim().parse().ok());
                    let leads = agent
                        .get(&format!("{m}/jsz"))
                        .call()
                        .ok()
                        .and_then(|r| r.into_json::<Value>().ok())
                        .is_some_and(|v| v["meta_cluster"]["leader"] == format!("n{}", i + 1));
                    (status_of(&agent, &format!("{m}/healthz")), pid, leads)
                })
                .collect::<Vec<ServerSample>>()
        })
    };

    // The publisher: JetStream publishes are requests answered with the stored sequence.
    let stop = Arc::new(AtomicBool::new(false));
    let acked = Arc::new(Mutex::new(Vec::<(u64, String)>::new()));
    let publisher = {
        let (urls, stop, acked) = (urls.clone(), stop.clone(), acked.clone());
        std::thread::spawn(move || {
            let rt = runtime();
            rt.block_on(async move {
                let client = async_nats::ConnectOptions::new()
                    .retry_on_initial_connect()
                    .connect(addrs(&urls))
                    .await
                    .expect("connect");
                let deadline = Instant::now() + Duration::from_secs(600);
                let mut n = 0u64;
                while !stop.load(Ordering::SeqCst) && Instant::now() < deadline {
                    let payload = format!("order-{n}");
                    let reply = tokio::time::timeout(
                        Duration::from_secs(2),
                        client.request(format!("orders.{n}"), payload.clone().into()),
                    )
                    .await;
                    if let Ok(Ok(reply)) = reply
                        && let Ok(v) = serde_json::from_slice::<Value>(&reply.payload)
                        && let Some(seq) = v["seq"].as_u64()
                    {
                        acked.lock().expect("acks").push((seq, payload));
                    }
                    n += 1;
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
            });
        })
    };

    let out = sb
        .cmd(&[
            "run",
            "rolling-restart-nats",
            "-p",
            &format!("cluster_dir={}", nats.path()),
            "-p",
            "version=2.15",
        ])
        .env("NATS_SYS_PASSWORD", nats.var("NATS_SYS_PASSWORD"))
        .env("NATS_APP_PASSWORD", nats.var("NATS_APP_PASSWORD"))
        .ok();
    stop.store(true, Ordering::SeqCst);
    publisher.join().expect("publisher");
    let samples = monitor.finish();
    let acked = acked.lock().expect("acks").clone();

    // Every server on 2.15 now (read from the servers).
    let agent = http();
    for m in &monitors {
        let v: Value = agent
            .get(&format!("{m}/varz"))
            .call()
            .expect("varz")
            .into_json()
            .expect("json");
        assert!(
            v["version"].as_str().is_some_and(|s| s.starts_with("2.15")),
            "{m} runs {}\n{}",
            v["version"],
            out.stdout
        );
    }
    // One server down at most; each restarted once; the meta leader at the start handed over
    // while its old process still ran.
    for (i, (_, servers)) in samples.iter().enumerate() {
        let down = servers.iter().filter(|(s, _, _)| s.is_none()).count();
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

    // Every acknowledged message is in the stream with its payload.
    assert!(
        acked.len() > 20,
        "the publisher made little progress: {}",
        acked.len()
    );
    let lost: Vec<u64> = rt.block_on(async {
        let mut lost = Vec::new();
        for (seq, payload) in &acked {
            // Right after a rolling restart the stream API may not answer at once: retry.
            let mut reply = None;
            for _ in 0..20 {
                match client
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
