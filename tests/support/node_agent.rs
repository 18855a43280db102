//! The node agent (`testbeds/node-agent`, binary `runbook-node-agent`) as a test runs it: the
//! kubelet of a Kubernetes testbed's agent node (`Cluster::kubernetes(&["--agent-node", …])`),
//! backing that node's pods with real local processes. Stopped when dropped (SIGTERM, which
//! stops the processes it started, then SIGKILL if it has not exited within 90 s).

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant, SystemTime};

use super::clusters::{Cluster, repo};

/// A running node agent.
pub struct NodeAgent {
    child: Child,
    log: PathBuf,
}

/// The newest modification time of the files below `dir`.
fn newest(dir: &Path) -> SystemTime {
    let mut out = SystemTime::UNIX_EPOCH;
    for entry in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let path = entry.path();
        let t = if path.is_dir() {
            newest(&path)
        } else {
            entry
                .metadata()
                .and_then(|m| m.modified())
                .unwrap_or(SystemTime::UNIX_EPOCH)
        };
        out = out.max(t);
    }
    out
}

impl NodeAgent {
    /// The agent's binary: next to `runbook` (`cargo build -p runbook-node-agent`, which
    /// test.sh runs before the tests). A missing or stale one fails the test with that advice.
    pub fn binary() -> PathBuf {
        let bin = Path::new(env!("CARGO_BIN_EXE_runbook")).with_file_name("runbook-node-agent");
        let built = std::fs::metadata(&bin).and_then(|m| m.modified());
        let sources = newest(&repo().join("testbeds/node-agent"));
        match built {
            Ok(t) if t >= sources => bin,
            Ok(_) => panic!(
                "{} is older than testbeds/node-agent: run `cargo build -p runbook-node-agent` (test.sh does)",
                bin.display()
            ),
            Err(e) => panic!(
                "{} not found ({e}): run `cargo build -p runbook-node-agent` (test.sh does)",
                bin.display()
            ),
        }
    }

    /// Starts the agent for `cluster`'s agent node with `config` (written to
    /// `CLUSTER/node-agent.json`; its log is `CLUSTER/node-agent.log`, its pid
    /// `CLUSTER/node-agent.pid`, so `kubernetes.sh destroy` stops it too) and waits until it
    /// has made the node Ready.
    pub fn start(cluster: &Cluster, config: &serde_json::Value) -> Self {
        let node = cluster.var("AGENT_NODE");
        assert!(
            !node.is_empty(),
            "the cluster has no agent node (--agent-node NAME)"
        );
        let config_path = cluster.dir.join("node-agent.json");
        std::fs::write(
            &config_path,
            serde_json::to_string_pretty(config).expect("json"),
        )
        .expect("write the agent's config");
        let log = cluster.dir.join("node-agent.log");
        let out = std::fs::File::create(&log).expect("agent log");
        let child = Command::new(Self::binary())
            .arg("--kubeconfig")
            .arg(cluster.kubeconfig())
            .args(["--node", &node, "--heartbeat", "5s"])
            .arg("--config")
            .arg(&config_path)
            .arg("--pid-file")
            .arg(cluster.dir.join("node-agent.pid"))
            .env("RUNBOOK_NODE_AGENT_LOG", "info")
            .stdin(Stdio::null())
            .stdout(out.try_clone().expect("log"))
            .stderr(out)
            .spawn()
            .expect("start runbook-node-agent");
        let mut agent = Self { child, log };
        let deadline = Instant::now() + Duration::from_secs(60);
        while !agent.log().contains("node Ready") {
            if let Ok(Some(status)) = agent.child.try_wait() {
                panic!("the node agent exited ({status}):\n{}", agent.log());
            }
            assert!(
                Instant::now() < deadline,
                "the node agent did not make the node Ready in 60 s:\n{}",
                agent.log()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
        agent
    }

    /// Everything the agent logged so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for NodeAgent {
    fn drop(&mut self) {
        let pid = nix::unistd::Pid::from_raw(i32::try_from(self.child.id()).expect("pid"));
        let _ = nix::sys::signal::kill(pid, nix::sys::signal::SIGTERM);
        let deadline = Instant::now() + Duration::from_secs(90);
        while Instant::now() < deadline {
            if !matches!(self.child.try_wait(), Ok(None)) {
                return;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
