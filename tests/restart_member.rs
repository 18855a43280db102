//! `openbao/restart-member` against answers OpenBao gives while a member comes back (issue 13's
//! bug list): a `/v1/sys/leader` answer without `leader_address` is no leader yet, so the wait
//! goes on instead of passing and failing the next step on an unknown variable. The member is
//! a small stand-in on loopback (Python's standard library) that answers the documented
//! shapes — the one part here that is not a real OpenBao; the real-server rollouts are in
//! `tests/openbao.rs` and `tests/openbao_command.rs`.

use std::process::{Child, Command, Stdio};
use std::time::Duration;

use crate::support::{Sandbox, wait_for};

/// Answers like a member that rejoins: `/v1/sys/leader` without `leader_address` on its 2nd
/// to 4th call (a node still starting), with it otherwise.
const STAND_IN: &str = r#"
import json, sys
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
calls = {"leader": 0}
class H(BaseHTTPRequestHandler):
    def log_message(self, *a): pass
    def do_GET(self):
        me = "http://127.0.0.1:%d" % self.server.server_port
        if self.path == "/v1/sys/leader":
            calls["leader"] += 1
            body = {"ha_enabled": True, "is_self": False}
            if not 2 <= calls["leader"] <= 4:
                body.update(leader_address=me, raft_applied_index=7, raft_committed_index=7)
            with open(sys.argv[1] + ".leader", "a") as f:
                f.write(json.dumps(body) + "\n")
        elif self.path == "/v1/sys/seal-status":
            body = {"sealed": False, "version": "2.7.2"}
        elif self.path == "/v1/sys/health":
            body = {"initialized": True, "sealed": False}
        elif self.path == "/v1/sys/storage/raft/autopilot/state":
            body = {"data": {"healthy": True, "failure_tolerance": 1}}
        else:
            self.send_response(404); self.end_headers(); return
        data = json.dumps(body).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)
server = ThreadingHTTPServer(("127.0.0.1", 0), H)
with open(sys.argv[1] + ".tmp", "w") as f:
    f.write(str(server.server_port))
import os; os.rename(sys.argv[1] + ".tmp", sys.argv[1])
server.serve_forever()
"#;

/// A driver that restarts nothing (the member here is the stand-in).
const DRIVER: &str = r##"
runbook: drivers/nothing/openbao
params:
  action: { type: string, required: true }
  member: { type: int, default: 0 }
  version: { type: string, default: "" }
  state: { type: string, default: "" }
  command: { type: map, default: {} }
  cluster_dir: { type: string, default: "" }
  namespace: { type: string, default: "" }
  release: { type: string, default: "" }
  image: { type: string, default: "" }
steps:
  - id: noop
    script: "params.action"
output: "#{ action: params.action, member: params.member }"
"##;

struct StandIn(Child);

impl Drop for StandIn {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[test]
fn an_answer_without_a_leader_address_is_no_leader_yet() {
    let sb = Sandbox::new();
    sb.write("stand_in.py", STAND_IN);
    sb.write("runbooks/drivers/nothing/openbao.yaml", DRIVER);
    let port_file = sb.path().join("port");
    let _stand_in = StandIn(
        Command::new("python3")
            .arg(sb.path().join("stand_in.py"))
            .arg(&port_file)
            .stdout(Stdio::null())
            .spawn()
            .expect("python3"),
    );
    wait_for("the stand-in to listen", Duration::from_secs(20), || {
        port_file.exists()
    });
    let port = std::fs::read_to_string(&port_file).expect("port");
    let addr = format!("http://127.0.0.1:{}", port.trim());
    let out = sb
        .cmd(&[
            "run",
            "openbao/restart-member",
            "-p",
            "member=0",
            "-p",
            &format!("addr={addr}"),
            "-p",
            "driver=nothing",
            "-p",
            "token=a-token-for-the-stand-in",
            "-p",
            "unseal_key=a-key-for-the-stand-in",
        ])
        .ok();
    let records = sb.records(&sb.only_run());
    let seen = records
        .iter()
        .rev()
        .find(|r| r["event"] == "step_succeeded" && r["path"] == "sees_leader")
        .unwrap_or_else(|| panic!("sees_leader did not succeed\n{}", out.stdout));
    assert_eq!(seen["output"]["json"]["leader_address"], addr.as_str());
    // It was asked again after the answers without an address, not satisfied by the first.
    let answers = std::fs::read_to_string(sb.path().join("port.leader")).expect("leader log");
    assert!(
        answers
            .lines()
            .filter(|l| !l.contains("leader_address"))
            .count()
            == 3
            && answers.lines().count() >= 5,
        "{answers}"
    );
}
