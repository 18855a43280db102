//! Every runbook in `examples/` passes `check` and does what its comment says, without servers
//! (the HTTP one against a loopback listener the test starts).

use std::io::{BufRead as _, BufReader, Write as _};
use std::net::TcpListener;
use std::path::PathBuf;

use crate::support::Sandbox;

fn example(name: &str) -> String {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("examples")
        .join(name)
        .to_string_lossy()
        .into_owned()
}

fn step_output(sb: &Sandbox, run: &str, path: &str) -> serde_json::Value {
    sb.records(run)
        .into_iter()
        .find(|r| r["event"] == "step_succeeded" && r["path"] == path)
        .map_or_else(|| panic!("no success of {path}"), |r| r["output"].clone())
}

#[test]
fn every_example_passes_check() {
    let sb = Sandbox::new();
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("examples");
    let mut checked = 0;
    for entry in std::fs::read_dir(&dir).expect("examples/") {
        let path = entry.expect("entry").path();
        let name = path
            .file_name()
            .expect("name")
            .to_string_lossy()
            .into_owned();
        if path.extension().is_none_or(|e| e != "yaml") || name == "schedules.yaml" {
            continue;
        }
        sb.cmd(&["check", &path.to_string_lossy()]).ok();
        checked += 1;
    }
    assert!(checked >= 6, "only {checked} examples");
}

/// A listener on 127.0.0.1 answering 503 `failures` times, then 200; returns its URL.
fn flaky_server(failures: usize) -> String {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let url = format!("http://{}/health", listener.local_addr().expect("addr"));
    std::thread::spawn(move || {
        for (i, stream) in listener.incoming().enumerate() {
            let Ok(mut stream) = stream else { return };
            let mut reader = BufReader::new(stream.try_clone().expect("clone"));
            let mut line = String::new();
            while reader.read_line(&mut line).is_ok_and(|n| n > 2) {
                line.clear();
            }
            let status = if i < failures {
                "503 Service Unavailable"
            } else {
                "200 OK"
            };
            let _ = write!(
                stream,
                "HTTP/1.1 {status}\r\ncontent-length: 2\r\nconnection: close\r\n\r\nok"
            );
        }
    });
    url
}

#[test]
fn http_retry_tries_again_until_the_endpoint_answers_200() {
    let sb = Sandbox::new();
    let url = flaky_server(2);
    sb.cmd(&[
        "run",
        &example("http-retry.yaml"),
        "-p",
        &format!("url={url}"),
    ])
    .ok();
    let run = sb.only_run();
    assert_eq!(step_output(&sb, &run, "health")["status"], 200);
    let failed = sb
        .records(&run)
        .iter()
        .filter(|r| r["event"] == "step_failed" && r["path"] == "health")
        .count();
    assert_eq!(failed, 2, "two 503s, each a journaled failed attempt");
}

#[test]
fn on_failure_runs_the_step_handler_then_the_runbook_cleanup() {
    let sb = Sandbox::new();
    sb.cmd(&["run", &example("on-failure.yaml")]).code(1);
    assert_eq!(
        sb.read("on-failure.log"),
        "trying an optional step\nmigrating\nrestoring what migrate changed\npaging the on-call person\n"
    );
    std::fs::remove_file(sb.path().join("on-failure.log")).expect("rm");
    sb.cmd(&["run", &example("on-failure.yaml"), "-p", "fail=false"])
        .ok();
    assert_eq!(
        sb.read("on-failure.log"),
        "trying an optional step\nmigrating\nfinished\n"
    );
}

#[test]
fn call_runs_the_callee_under_the_step_and_returns_its_output() {
    let sb = Sandbox::new();
    sb.cmd(&["run", &example("call.yaml")]).ok();
    let run = sb.only_run();
    assert_eq!(step_output(&sb, &run, "both"), "hello, ops / hello, dev");
    assert_eq!(
        step_output(&sb, &run, "greet_ops.hello")["stdout"],
        "hello, ops"
    );
}

#[test]
fn lock_refuses_a_second_run_on_the_same_target_until_the_first_ends() {
    let sb = Sandbox::new();
    let lock = example("lock.yaml");
    sb.cmd(&["run", &lock, "-p", "target=db1"]).code(3);
    let first = sb.only_run();
    let refused = sb.cmd(&["run", &lock, "-p", "target=db1"]).code(1);
    assert!(
        refused.stderr.contains(&first) || refused.stdout.contains(&first),
        "the refusal names the holder: {}",
        refused.explain("second run")
    );
    sb.cmd(&["run", &lock, "-p", "target=db2"]).code(3);
    sb.cmd(&["approve", &first, "--comment", "done"]).ok();
    sb.cmd(&["run", &lock, "-p", "target=db1"]).code(3);
}

#[test]
fn parallel_rolls_in_waves_and_stops_after_too_many_failures() {
    let sb = Sandbox::new();
    sb.cmd(&["run", &example("parallel.yaml")]).ok();
    assert_eq!(sb.read("parallel.log").lines().count(), 8);
    std::fs::remove_file(sb.path().join("parallel.log")).expect("rm");
    sb.cmd(&[
        "run",
        &example("parallel.yaml"),
        "-p",
        r#"broken=["n3","n4"]"#,
    ])
    .code(1);
    let mut restarted: Vec<String> = sb.read("parallel.log").lines().map(str::to_owned).collect();
    restarted.sort();
    assert_eq!(
        restarted,
        [
            "restarting n1",
            "restarting n2",
            "restarting n3",
            "restarting n4"
        ],
        "the wave with two failures is the last"
    );
}
