//! Readiness probes: a pod's `readinessProbe` timings applied to an HTTP URL, and a task per
//! running process that probes it and publishes whether the process is ready.
//!
//! As with a kubelet: nothing is probed before `initialDelaySeconds`; a 2xx or 3xx answer
//! within `timeoutSeconds` is a success, anything else (another status, no answer) a failure;
//! the process starts not ready, becomes ready after `successThreshold` successes in a row and
//! not ready again after `failureThreshold` failures in a row.

use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::core::v1::Probe;
use tokio::sync::{Notify, watch};
use tokio::task::JoinHandle;

/// How to probe one process.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Readiness {
    /// The URL probed with GET.
    pub url: String,
    /// Before the first probe.
    pub initial_delay: Duration,
    /// Between probes.
    pub period: Duration,
    /// For one answer.
    pub timeout: Duration,
    /// Successes in a row that make the process ready.
    pub success_threshold: u32,
    /// Failures in a row that make it not ready.
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

impl Readiness {
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
    pub fn observe(&mut self, success: bool, r: &Readiness) -> bool {
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
}

/// Whether an HTTP status is a probe success.
pub fn success(status: u16) -> bool {
    (200..400).contains(&status)
}

/// A running probe task; dropping it stops the probing.
pub struct Prober {
    ready: watch::Receiver<bool>,
    task: JoinHandle<()>,
}

impl Prober {
    /// Starts probing; `changed` is notified whenever readiness flips.
    pub fn start(r: Readiness, http: reqwest::Client, changed: Arc<Notify>) -> Self {
        let (tx, ready) = watch::channel(false);
        let task = tokio::spawn(async move {
            tokio::time::sleep(r.initial_delay).await;
            let mut verdict = Verdict::new();
            let mut every = tokio::time::interval(r.period);
            every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                every.tick().await;
                let ok = match http.get(&r.url).timeout(r.timeout).send().await {
                    Ok(resp) => success(resp.status().as_u16()),
                    Err(_) => false,
                };
                let now = verdict.observe(ok, &r);
                if *tx.borrow() != now {
                    tracing::info!(url = %r.url, ready = now, "readiness changed");
                    tx.send_replace(now);
                    changed.notify_one();
                }
            }
        });
        Self { ready, task }
    }

    /// The latest verdict.
    pub fn ready(&self) -> bool {
        *self.ready.borrow()
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

    fn readiness(success_threshold: u32, failure_threshold: u32) -> Readiness {
        Readiness {
            url: String::new(),
            initial_delay: Duration::ZERO,
            period: Duration::from_secs(1),
            timeout: Duration::from_secs(1),
            success_threshold,
            failure_threshold,
        }
    }

    fn run(r: &Readiness, results: &[bool]) -> Vec<bool> {
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
        let r = Readiness::from_probe("u".into(), &Probe::default());
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
