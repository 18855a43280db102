//! The live tree on a real pseudo-terminal, read back as a terminal would show it (the `vt100`
//! emulator, scrollback included): a gate's question stays on screen and is answered by typing,
//! and a tree taller than the terminal leaves every finished step in the scrollback exactly
//! once (issue 12, items 1 and 2).

use std::io::{Read as _, Write as _};
use std::num::NonZeroU16;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use portable_pty::{Child, CommandBuilder, MasterPty, PtySize, native_pty_system};

use crate::support::{Sandbox, wait_for};

/// `runbook` running on a pseudo-terminal of a given size, everything it writes kept.
struct Tty {
    child: Box<dyn Child + Send + Sync>,
    // Held so the terminal stays open while the child runs.
    _master: Box<dyn MasterPty + Send>,
    input: Box<dyn std::io::Write + Send>,
    bytes: Arc<Mutex<Vec<u8>>>,
    rows: u16,
    cols: u16,
}

impl Tty {
    fn spawn(sb: &Sandbox, args: &[&str], rows: u16, cols: u16) -> Self {
        let pair = native_pty_system()
            .openpty(PtySize {
                rows,
                cols,
                pixel_width: 0,
                pixel_height: 0,
            })
            .expect("a pseudo-terminal");
        let mut cmd = CommandBuilder::new(env!("CARGO_BIN_EXE_runbook"));
        cmd.args(args);
        cmd.cwd(sb.path());
        cmd.env("RUNBOOK_JOURNAL", sb.journal());
        cmd.env("USER", "tester");
        cmd.env("TERM", "xterm-256color");
        for var in ["RUNBOOK_USER", "RUNBOOK_PATH", "RUNBOOK_LOG", "NO_COLOR"] {
            cmd.env_remove(var);
        }
        let child = pair.slave.spawn_command(cmd).expect("spawn runbook");
        // Only the child holds the terminal's other end: its exit ends our reads.
        drop(pair.slave);
        let mut reader = pair.master.try_clone_reader().expect("reader");
        let input = pair.master.take_writer().expect("writer");
        let bytes = Arc::new(Mutex::new(Vec::new()));
        let sink = bytes.clone();
        std::thread::spawn(move || {
            let mut buf = [0u8; 4096];
            while let Ok(n) = reader.read(&mut buf) {
                if n == 0 {
                    break;
                }
                sink.lock().expect("bytes").extend_from_slice(&buf[..n]);
            }
        });
        Self {
            child,
            _master: pair.master,
            input,
            bytes,
            rows,
            cols,
        }
    }

    /// The terminal as it shows everything written so far: its scrollback, then its screen,
    /// one string per row.
    fn rows(&self) -> Vec<String> {
        let mut term = vt100::Parser::new(
            NonZeroU16::new(self.rows).expect("rows"),
            NonZeroU16::new(self.cols).expect("cols"),
            10_000,
        );
        term.process(&self.bytes.lock().expect("bytes"));
        let screen = term.screen_mut();
        screen.set_scrollback(usize::MAX);
        let back = screen.scrollback();
        let mut rows = Vec::new();
        // Scrolled back by `offset`, the top row is the scrollback's row `back - offset`.
        for offset in (1..=back).rev() {
            screen.set_scrollback(offset);
            rows.extend(screen.rows(0, self.cols).take(1));
        }
        screen.set_scrollback(0);
        rows.extend(screen.rows(0, self.cols));
        rows
    }

    fn text(&self) -> String {
        self.rows().join("\n")
    }

    fn type_line(&mut self, line: &str) {
        self.input
            .write_all(format!("{line}\r").as_bytes())
            .expect("type");
        self.input.flush().expect("flush");
    }

    /// Waits for the child to end; its exit code.
    fn wait(&mut self, limit: Duration) -> u32 {
        let mut code = None;
        wait_for("runbook to end", limit, || {
            code = self.child.try_wait().expect("try_wait");
            code.is_some()
        });
        code.expect("ended").exit_code()
    }
}

impl Drop for Tty {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
        }
    }
}

#[test]
fn a_gate_s_question_stays_on_the_terminal_and_typing_y_approves_it() {
    let sb = Sandbox::new();
    sb.write(
        "gated.yaml",
        r#"runbook: gated
steps:
  - id: before
    shell: { run: "echo before" }
  - id: confirm
    gate: { prompt: "Are the dashboards green?" }
  - id: after
    shell: { run: "echo after" }
"#,
    );
    let mut tty = Tty::spawn(&sb, &["run", "./gated.yaml"], 24, 100);
    let asked = |t: &Tty| {
        let text = t.text();
        text.contains("Are the dashboards green?") && text.contains("approve? [y/n")
    };
    wait_for("the gate's question", Duration::from_secs(20), || {
        asked(&tty)
    });
    // The live tree redraws every 120 ms; a redraw over the question would erase it. It must
    // still be there many redraws later, nothing else having happened.
    std::thread::sleep(Duration::from_secs(1));
    assert!(asked(&tty), "the question left the screen:\n{}", tty.text());
    tty.type_line("y dashboards are green");
    assert_eq!(tty.wait(Duration::from_secs(30)), 0, "{}", tty.text());
    let status = sb.status(&sb.only_run());
    assert_eq!(status["state"], "succeeded", "{status:#}");
    let gate = &status["gates"][0];
    assert_eq!(gate["decision"]["approved"], true, "{status:#}");
    assert_eq!(gate["decision"]["by"], "tester", "{status:#}");
    assert_eq!(gate["decision"]["comment"], "dashboards are green");
    let text = tty.text();
    assert!(text.contains("Are the dashboards green?"), "{text}");
    assert!(text.contains("✓ after"), "{text}");
}

#[test]
fn a_tree_taller_than_the_terminal_leaves_each_finished_step_once_in_the_scrollback() {
    let sb = Sandbox::new();
    sb.write(
        "roll.yaml",
        r#"runbook: roll
steps:
  - id: before
    shell: { run: "true" }
  - id: roll
    foreach: "range(0, 8)"
    as: n
    steps:
      - id: drain
        shell: { run: "sleep 0.1" }
      - id: restart
        shell: { run: "sleep 0.1" }
      - id: healthy
        shell: { run: "true" }
  - id: after
    shell: { run: "true" }
"#,
    );
    let mut tty = Tty::spawn(&sb, &["run", "./roll.yaml"], 15, 80);
    assert_eq!(tty.wait(Duration::from_secs(60)), 0, "{}", tty.text());
    // The reader may still hold the last bytes: wait until the run's last line is in.
    wait_for("the run's last line", Duration::from_secs(10), || {
        tty.text().contains("succeeded")
    });
    let rows = tty.rows();
    let mut finished: Vec<String> = vec!["before".into(), "roll".into()];
    for n in 0..8 {
        for step in ["drain", "restart", "healthy"] {
            finished.push(format!("roll[{n}].{step}"));
        }
    }
    finished.push("after".into());
    let mut at = Vec::new();
    for path in &finished {
        let mark = format!("✓ {path} ");
        let shown: Vec<usize> = (0..rows.len())
            .filter(|&i| rows[i].contains(&mark))
            .collect();
        assert_eq!(
            shown.len(),
            1,
            "`{mark}` shown {} times:\n{}",
            shown.len(),
            rows.join("\n")
        );
        at.push(shown[0]);
    }
    let ticks = rows.iter().filter(|r| r.contains('✓')).count();
    assert_eq!(ticks, finished.len(), "{}", rows.join("\n"));
    // In tree order: the loop's line, then its iterations in order, then what follows.
    assert!(
        at.windows(2).all(|w| w[0] < w[1]),
        "out of order:\n{}",
        rows.join("\n")
    );
}
