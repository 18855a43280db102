//! HTTP probes: a pod's `startupProbe` and `readinessProbe` timings applied to HTTP URLs, and a
//! task per running process that probes them and publishes what they say.
//!
//! As with a kubelet: nothing is probed before `initialDelaySeconds`; a 2xx or 3xx answer
//! within `timeoutSeconds` is a success, anything else (another status, no answer) a failure.
//! While a startup probe has not succeeded the process is neither started nor ready and the
//! readiness probe does not run; `failureThreshold` startup failures in a row mean the process
//! failed to start (the agent then kills it and restarts it per the pod's `restartPolicy`).
//! Once started (at once without a startup probe) the readiness probe runs: the process starts
//! not ready, becomes ready after `successThreshold` successes in a row and not ready again
//! after `failureThreshold` failures in a row; without a readiness probe it is ready once
//! started.

use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::core::v1::Probe;
use tokio::sync::{Notify, watch};
use tokio::task::JoinHandle;

/// How to probe one process over HTTP.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HttpProbe {
    /// The URL probed with GET.
    pub url: String,
    /// Before the first probe.
    pub initial_delay: Duration,
    /// Between probes.
    pub period: Duration,
    /// For one answer.
    pub timeout: Duration,
    /// Successes in a row that make the probe succeed.
    pub success_threshold: u32,
    /// Failures in a row that make it fail.
    pub failure_threshold: u32,
}

fn seconds(value: Option<i32>, default: u64) -> Duration {
    Duration::from_secs(value.and_then(|v| u64::try_from(v).ok()).unwrap_or(default))
}

fn count(value: Option<i32>, default: u32) -> u32 {
    value
        .and_then(|v| u32::try_from(v).ok())
        .filter(|v| *v > 0)
        .unwrap_or(default)
}

impl HttpProbe {
    /// `url` probed with the timings of `probe` (the kubelet's defaults where it gives none).
    pub fn from_probe(url: String, probe: &Probe) -> Self {
        Self {
            url,
            initial_delay: seconds(probe.initial_delay_seconds, 0),
            period: seconds(probe.period_seconds, 10).max(Duration::from_secs(1)),
            timeout: seconds(probe.timeout_seconds, 1).max(Duration::from_secs(1)),
            success_threshold: count(probe.success_threshold, 1),
            failure_threshold: count(probe.failure_threshold, 3),
        }
    }
}

/// The thresholds applied to a sequence of probe results.
#[derive(Debug)]
pub struct Verdict {
    ready: bool,
    successes: u32,
    failures: u32,
}

/// Where a startup probe stands.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Startup {
    /// Not decided yet: probe again.
    Probing,
    /// It succeeded: the process has started.
    Started,
    /// It failed `failureThreshold` times in a row.
    Failed,
}

impl Verdict {
    /// Not ready, nothing observed yet.
    pub fn new() -> Self {
        Self {
            ready: false,
            successes: 0,
            failures: 0,
        }
    }

    /// Takes one probe result; returns whether the process is ready now.
    pub fn observe(&mut self, success: bool, r: &HttpProbe) -> bool {
        if success {
            self.failures = 0;
            self.successes = self.successes.saturating_add(1);
            if self.successes >= r.success_threshold {
                self.ready = true;
            }
        } else {
            self.successes = 0;
            self.failures = self.failures.saturating_add(1);
            if self.failures >= r.failure_threshold {
                self.ready = false;
            }
        }
        self.ready
    }

    /// Takes one result of a startup probe.
    pub fn startup(&mut self, success: bool, r: &HttpProbe) -> Startup {
        if self.observe(success, r) {
            Startup::Started
        } else if self.failures >= r.failure_threshold {
            Startup::Failed
        } else {
            Startup::Probing
        }
    }
}

/// Whether an HTTP status is a probe success.
pub fn success(status: u16) -> bool {
    (200..400).contains(&status)
}

/// What the probes say of one process.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Health {
    /// The startup probe succeeded (at once without one).
    pub started: bool,
    /// The readiness verdict (never before `started`).
    pub ready: bool,
    /// The startup probe failed: the process is to be killed.
    pub startup_failed: bool,
}

/// The probes of one container.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Probes {
    pub startup: Option<HttpProbe>,
    pub readiness: Option<HttpProbe>,
}

/// A running probe task; dropping it stops the probing.
pub struct Prober {
    health: watch::Receiver<Health>,
    task: JoinHandle<()>,
}

/// Probes `r` at its period (after its initial delay), handing each result to `verdict` until
/// that returns a value.
async fn probe_until<T>(
    http: &reqwest::Client,
    r: &HttpProbe,
    mut verdict: impl FnMut(bool) -> Option<T>,
) -> T {
    tokio::time::sleep(r.initial_delay).await;
    let mut every = tokio::time::interval(r.period);
    every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        every.tick().await;
        let ok = match http.get(&r.url).timeout(r.timeout).send().await {
            Ok(resp) => success(resp.status().as_u16()),
            Err(_) => false,
        };
        if let Some(out) = verdict(ok) {
            return out;
        }
    }
}

impl Prober {
    /// Starts probing; `changed` is notified whenever the health changes.
    pub fn start(probes: Probes, http: reqwest::Client, changed: Arc<Notify>) -> Self {
        let (tx, health) = watch::channel(Health::default());
        let publish = move |h: Health, why: &str| {
            if *tx.borrow() != h {
                tracing::info!(
                    started = h.started,
                    ready = h.ready,
                    startup_failed = h.startup_failed,
                    "{why}"
                );
                tx.send_replace(h);
                changed.notify_one();
            }
        };
        let task = tokio::spawn(async move {
            if let Some(s) = &probes.startup {
                let mut verdict = Verdict::new();
                let outcome = probe_until(&http, s, |ok| match verdict.startup(ok, s) {
                    Startup::Probing => None,
                    done => Some(done),
                })
                .await;
                if outcome == Startup::Failed {
                    let h = Health {
                        startup_failed: true,
                        ..Health::default()
                    };
                    publish(h, &format!("startup probe failed: {}", s.url));
                    return;
                }
            }
            let started = Health {
                started: true,
                ready: probes.readiness.is_none(),
                startup_failed: false,
            };
            let url = probes
                .startup
                .as_ref()
                .map_or("no startup probe", |s| s.url.as_str());
            publish(started, &format!("started: {url}"));
            let Some(r) = &probes.readiness else { return };
            let mut verdict = Verdict::new();
            probe_until(&http, r, |ok| {
                let ready = verdict.observe(ok, r);
                publish(
                    Health { ready, ..started },
                    &format!("readiness changed: {}", r.url),
                );
                None::<()>
            })
            .await;
        });
        Self { health, task }
    }

    /// The latest verdict.
    pub fn health(&self) -> Health {
        *self.health.borrow()
    }
}

impl Drop for Prober {
    fn drop(&mut self) {
        self.task.abort();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn readiness(success_threshold: u32, failure_threshold: u32) -> HttpProbe {
        HttpProbe {
            url: String::new(),
            initial_delay: Duration::ZERO,
            period: Duration::from_secs(1),
            timeout: Duration::from_secs(1),
            success_threshold,
            failure_threshold,
        }
    }

    fn run(r: &HttpProbe, results: &[bool]) -> Vec<bool> {
        let mut v = Verdict::new();
        results.iter().map(|ok| v.observe(*ok, r)).collect()
    }

    #[test]
    fn ready_after_enough_successes_and_unready_after_enough_failures() {
        let r = readiness(1, 2);
        assert_eq!(
            run(&r, &[false, true, false, true, false, false, true]),
            [false, true, true, true, true, false, true]
        );
        let r = readiness(2, 1);
        assert_eq!(
            run(&r, &[true, false, true, true, false]),
            [false, false, false, true, false]
        );
    }

    #[test]
    fn a_startup_probe_succeeds_once_and_fails_after_enough_failures_in_a_row() {
        use Startup::{Failed, Probing, Started};
        let startup = |r: &HttpProbe, results: &[bool]| {
            let mut v = Verdict::new();
            results
                .iter()
                .map(|ok| v.startup(*ok, r))
                .collect::<Vec<_>>()
        };
        let r = readiness(1, 3);
        assert_eq!(
            startup(&r, &[false, false, true]),
            [Probing, Probing, Started]
        );
        assert_eq!(
            startup(&r, &[false, false, false]),
            [Probing, Probing, Failed]
        );
        // A success between failures starts their count over.
        let r = readiness(2, 2);
        assert_eq!(
            startup(&r, &[false, true, false, true, true]),
            [Probing, Probing, Probing, Probing, Started]
        );
    }

    /// A server on loopback that answers each path with the statuses listed for it in turn
    /// (the last one from then on), and keeps the paths it was asked for in order.
    async fn scripted(
        answers: &'static [(&'static str, &'static [u16])],
    ) -> (String, Arc<std::sync::Mutex<Vec<String>>>) {
        use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let base = format!("http://{}", listener.local_addr().expect("addr"));
        let asked = Arc::new(std::sync::Mutex::new(Vec::<String>::new()));
        let seen = asked.clone();
        tokio::spawn(async move {
            while let Ok((mut conn, _)) = listener.accept().await {
                let mut buf = vec![0u8; 4096];
                let n = conn.read(&mut buf).await.unwrap_or(0);
                let request = String::from_utf8_lossy(&buf[..n]).into_owned();
                let path = request.split(' ').nth(1).unwrap_or_default().to_owned();
                let status = {
                    let mut asked = seen.lock().expect("asked");
                    let before = asked.iter().filter(|p| **p == path).count();
                    asked.push(path.clone());
                    answers
                        .iter()
                        .find(|(p, _)| *p == path)
                        .map_or(404, |(_, s)| s[before.min(s.len() - 1)])
                };
                let reply = format!(
                    "HTTP/1.1 {status} X\r\ncontent-length: 0\r\nconnection: close\r\n\r\n"
                );
                let _ = conn.write_all(reply.as_bytes()).await;
            }
        });
        (base, asked)
    }

    /// A client as the agent makes one (its TLS needs the process's crypto provider).
    fn client() -> reqwest::Client {
        let _ = rustls::crypto::ring::default_provider().install_default();
        reqwest::Client::builder()
            .no_proxy()
            .build()
            .expect("client")
    }

    fn fast(url: String, failure_threshold: u32) -> HttpProbe {
        HttpProbe {
            url,
            initial_delay: Duration::ZERO,
            period: Duration::from_millis(20),
            timeout: Duration::from_secs(1),
            success_threshold: 1,
            failure_threshold,
        }
    }

    async fn wait_for(prober: &Prober, done: impl Fn(Health) -> bool) -> Health {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        loop {
            let h = prober.health();
            if done(h) {
                return h;
            }
            assert!(tokio::time::Instant::now() < deadline, "stuck at {h:?}");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    #[tokio::test]
    async fn readiness_is_probed_only_once_the_startup_probe_succeeded() {
        let (base, asked) = scripted(&[("/startup", &[503, 503, 200]), ("/ready", &[200])]).await;
        let probes = Probes {
            startup: Some(fast(format!("{base}/startup"), 5)),
            readiness: Some(fast(format!("{base}/ready"), 1)),
        };
        let prober = Prober::start(probes, client(), Arc::new(Notify::new()));
        assert_eq!(prober.health(), Health::default());
        let h = wait_for(&prober, |h| h.ready).await;
        assert_eq!(
            h,
            Health {
                started: true,
                ready: true,
                startup_failed: false
            }
        );
        let asked = asked.lock().expect("asked").clone();
        assert_eq!(
            asked[..3],
            ["/startup", "/startup", "/startup"],
            "{asked:?}"
        );
        assert!(asked[3..].iter().all(|p| p == "/ready"), "{asked:?}");
    }

    #[tokio::test]
    async fn a_startup_probe_that_keeps_failing_fails_the_start_and_readiness_never_runs() {
        let (base, asked) = scripted(&[("/startup", &[503]), ("/ready", &[200])]).await;
        let probes = Probes {
            startup: Some(fast(format!("{base}/startup"), 3)),
            readiness: Some(fast(format!("{base}/ready"), 1)),
        };
        let prober = Prober::start(probes, client(), Arc::new(Notify::new()));
        let h = wait_for(&prober, |h| h.startup_failed).await;
        assert!(!h.started && !h.ready);
        // Probing stopped at the third failure.
        tokio::time::sleep(Duration::from_millis(100)).await;
        assert_eq!(*asked.lock().expect("asked"), ["/startup"; 3]);
    }

    #[tokio::test]
    async fn without_a_startup_probe_the_process_is_started_at_once_and_ready_by_its_probe() {
        let (base, _) = scripted(&[("/ready", &[503, 200])]).await;
        let probes = Probes {
            startup: None,
            readiness: Some(fast(format!("{base}/ready"), 1)),
        };
        let prober = Prober::start(probes, client(), Arc::new(Notify::new()));
        let h = wait_for(&prober, |h| h.started).await;
        assert!(!h.startup_failed);
        wait_for(&prober, |h| h.ready).await;
        let probes = Probes {
            startup: Some(fast(format!("{base}/ready"), 3)),
            readiness: None,
        };
        let prober = Prober::start(probes, client(), Arc::new(Notify::new()));
        // Ready as soon as started when there is no readiness probe.
        wait_for(&prober, |h| h.started && h.ready).await;
    }

    #[test]
    fn only_2xx_and_3xx_answers_succeed() {
        // OpenBao's /v1/sys/health: 200 active (or standby with standbyok), 429 standby,
        // 503 sealed, 501 not initialised.
        assert!(success(200));
        assert!(success(307));
        assert!(!success(429));
        assert!(!success(503));
        assert!(!success(501));
    }

    #[test]
    fn timings_default_as_the_kubelets() {
        let r = HttpProbe::from_probe("u".into(), &Probe::default());
        assert_eq!(
            (
                r.initial_delay,
                r.period,
                r.timeout,
                r.success_threshold,
                r.failure_threshold
            ),
            (
                Duration::ZERO,
                Duration::from_secs(10),
                Duration::from_secs(1),
                1,
                3
            )
        );
    }
}
