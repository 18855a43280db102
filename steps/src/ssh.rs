//! Running a `shell` step on another host with the OpenSSH client.
//!
//! ```yaml
//! shell: { host: db-2, user: ops, port: 22, identity: ~/.ssh/ops, known_hosts: ./known_hosts,
//!          args: [systemctl, restart, postgresql] }
//! ```
//!
//! # The contract
//!
//! - **Host keys are checked, never learnt.** `ssh` runs with `BatchMode=yes` and
//!   `StrictHostKeyChecking=yes` against `known_hosts` (or the user's and the system's files
//!   when none is given): an unknown or changed key refuses the connection, and the step fails
//!   with ssh's own words ("Host key verification failed.") before any command runs.
//! - **One connection per host and process.** The first step that reaches a destination opens
//!   a master connection (`ControlMaster`), kept [`PERSIST`] after its last use; later steps of
//!   the process run as sessions over it. Its socket lives in a directory of this process only,
//!   mode 0700, so no other user (nor another runbook process) can use it.
//! - **The command means what it means locally.** `args` reach the remote program as the same
//!   argv, and `run` is given to the remote `sh -c` as the same script: the remote login shell
//!   parses the command line once more, so every word is single-quoted for it here (a
//!   POSIX-compatible login shell is assumed: sh, bash, dash, zsh, ksh). Templates are thus
//!   quoted exactly as for a local step and stay data. `cwd` is changed into remotely; `env`
//!   and `stdin` travel inside the session's input, never on a command line (remote process
//!   lists show no values).
//! - **Exit code, stdout and stderr are the remote command's.** A remote command killed by a
//!   signal reports the shell's `128 + N`.
//! - **Stopping reaches the remote process.** The command runs under a small `sh` wrapper, in
//!   its own session (`setsid`, from util-linux or busybox, is required on the host). The
//!   session's input stays open while the step runs; when it closes — the step is stopped and
//!   closes it, or ssh, the connection or runbook die — the wrapper sends SIGTERM to the
//!   command's process group, SIGKILL after `grace`, and exits once the group is gone. `ssh
//!   -tt` would stop it too (the pty hangs up), but mixes stderr into stdout and rewrites line
//!   ends; the wrapper keeps both streams exact.

use std::fmt::Write as _;
use std::path::PathBuf;
use std::process::Stdio;
use std::sync::OnceLock;
use std::time::Duration;

use tokio::process::Command;
use tokio::sync::Mutex;

/// How long a master connection outlives its last session.
pub(crate) const PERSIST: Duration = Duration::from_secs(30);

/// How long ssh may take to reach a host and authenticate.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(15);

/// Where the remote shell was told to go.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Remote {
    pub(crate) host: String,
    pub(crate) user: Option<String>,
    pub(crate) port: Option<u16>,
    pub(crate) identity: Option<String>,
    pub(crate) known_hosts: Option<String>,
}

/// Why a connection could not be made.
#[derive(Debug, thiserror::Error)]
pub(crate) enum ConnectError {
    /// The private socket directory could not be made.
    #[error("failed to create a private directory for ssh connections: {0}")]
    ControlDir(String),
    /// ssh could not be started.
    #[error("failed to run `ssh` (the OpenSSH client): {0}")]
    Spawn(#[source] std::io::Error),
    /// ssh ran and gave up.
    #[error("failed to connect to {target}: {reason}")]
    Refused {
        /// `user@host port N`.
        target: String,
        /// ssh's last words, or its exit status.
        reason: String,
    },
}

/// The process's own 0700 directory for control sockets, made on first use. It is left behind
/// at exit (the masters remove their sockets when they expire).
fn control_dir() -> Result<&'static PathBuf, ConnectError> {
    static DIR: OnceLock<Result<PathBuf, String>> = OnceLock::new();
    DIR.get_or_init(|| {
        tempfile::Builder::new()
            .prefix("runbook-ssh-")
            .tempdir()
            .map(tempfile::TempDir::keep)
            .map_err(|e| e.to_string())
    })
    .as_ref()
    .map_err(|e| ConnectError::ControlDir(e.clone()))
}

impl Remote {
    /// `user@host` (or `host`), as ssh takes it.
    fn destination(&self) -> String {
        match &self.user {
            Some(user) => format!("{user}@{}", self.host),
            None => self.host.clone(),
        }
    }

    /// `user@host port N`, for messages and `describe`.
    pub(crate) fn target(&self) -> String {
        match self.port {
            Some(port) => format!("{} port {port}", self.destination()),
            None => self.destination(),
        }
    }

    /// The options every ssh invocation for this destination shares.
    fn options(&self, dir: &std::path::Path) -> Vec<String> {
        let mut args: Vec<String> = Vec::new();
        let mut option = |o: String| {
            args.push("-o".into());
            args.push(o);
        };
        option("BatchMode=yes".into());
        option("StrictHostKeyChecking=yes".into());
        option(format!("ConnectTimeout={}", CONNECT_TIMEOUT.as_secs()));
        option(format!("ControlPath={}/%C", dir.display()));
        option("LogLevel=ERROR".into());
        if let Some(file) = &self.known_hosts {
            option(format!("UserKnownHostsFile={}", quote_option(file)));
            option("GlobalKnownHostsFile=/dev/null".into());
        }
        if let Some(identity) = &self.identity {
            option(format!("IdentityFile={}", quote_option(identity)));
            option("IdentitiesOnly=yes".into());
        }
        if let Some(port) = self.port {
            args.push("-p".into());
            args.push(port.to_string());
        }
        args
    }

    /// Makes sure a master connection to the destination is up, opening one if needed.
    pub(crate) async fn connect(&self) -> Result<(), ConnectError> {
        // Steps running at once must not race to open two masters on one socket path.
        static OPENING: Mutex<()> = Mutex::const_new(());
        let dir = control_dir()?;
        let _guard = OPENING.lock().await;
        let destination = self.destination();
        let check = Command::new("ssh")
            .args(self.options(dir))
            .args(["-O", "check", "--", destination.as_str()])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .await
            .map_err(ConnectError::Spawn)?;
        if check.success() {
            return Ok(());
        }
        // `-f` returns once authenticated; the master lives on in the background, detached
        // from our pipes, in a session of its own (a Ctrl-C at the terminal does not reach it).
        let opened = Command::new("ssh")
            .args(self.options(dir))
            .args([
                "-o".to_owned(),
                "ControlMaster=yes".to_owned(),
                "-o".to_owned(),
                format!("ControlPersist={}", PERSIST.as_secs()),
                "-f".to_owned(),
                "-N".to_owned(),
                "--".to_owned(),
                destination,
            ])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .output()
            .await
            .map_err(ConnectError::Spawn)?;
        if opened.status.success() {
            return Ok(());
        }
        let stderr = String::from_utf8_lossy(&opened.stderr);
        let mut reason = last_words(&stderr);
        if reason.is_empty() {
            reason = format!("ssh ended with {}", opened.status);
        }
        if let Some(file) = &self.known_hosts
            && reason.contains("Host key verification failed")
        {
            let _ = write!(reason, " (host keys are checked against {file})");
        }
        Err(ConnectError::Refused {
            target: self.target(),
            reason: crate::util::excerpt(&reason),
        })
    }

    /// The ssh command that runs `remote_command` as a session over the master connection.
    pub(crate) fn command(&self, remote_command: &str) -> Result<Command, ConnectError> {
        let dir = control_dir()?;
        let mut cmd = Command::new("ssh");
        cmd.args(self.options(dir))
            // Never become a master here (that is `connect`'s job); never allocate a pty.
            .args(["-o", "ControlMaster=no", "-T", "--"])
            .arg(self.destination())
            .arg(remote_command);
        Ok(cmd)
    }
}

/// ssh's last two lines: the cause and its verdict ("Host key for … has changed and you have
/// requested strict checking. Host key verification failed."), without the banner of `@`s and
/// the advice before them.
fn last_words(stderr: &str) -> String {
    let lines: Vec<&str> = stderr
        .lines()
        .map(str::trim)
        .filter(|line| !line.is_empty() && !line.starts_with('@'))
        .collect();
    lines[lines.len().saturating_sub(2)..].join(" ")
}

/// A path for an `ssh -o` value: `%` doubled (ssh expands `%` tokens in these paths), then
/// double-quoted with `\` and `"` escaped, the way ssh splits an option's words.
fn quote_option(value: &str) -> String {
    let value = value.replace('%', "%%");
    format!("\"{}\"", value.replace('\\', "\\\\").replace('"', "\\\""))
}

/// The wrapper the remote command runs under (see the module docs). Positional parameters:
/// the grace period in whole seconds, the directory to change into (empty: the login
/// directory), then the command's argv. Its input: one line `NAME VALUE` per environment
/// variable and a line `.`, then one line with the command's stdin (or `-` for none), values
/// encoded by [`encode`]; then nothing, until it closes.
const WRAPPER: &str = r#"g=$1 d=$2
shift 2
while IFS= read -r l && [ "$l" != . ]; do
  v=$(printf "${l#* }x") && export "${l%% *}=${v%x}" || exit 125
done
IFS= read -r l || exit 125
if [ -n "$d" ]; then cd -- "$d" || exit 125; fi
command -v setsid >/dev/null || { echo "runbook: setsid is not installed on this host" >&2; exit 125; }
if [ "$l" = - ]; then
  setsid "$@" </dev/null &
else
  v=$(printf "${l}x") || exit 125
  printf %s "${v%x}" | setsid "$@" &
fi
p=$!
stop() {
  trap - USR1
  kill -TERM -"$p" 2>/dev/null
  setsid sh -c 'sleep "$1"; kill -KILL -"$2"' k "$g" "$p" >/dev/null 2>&1 </dev/null &
  k=$!
  wait "$p" 2>/dev/null
  r=$?
  while kill -0 -"$p" 2>/dev/null; do sleep 1; done
  kill -KILL -"$k" 2>/dev/null
  exit "$r"
}
trap stop USR1
# An asynchronous list reads /dev/null unless told otherwise: watch the session's input.
exec 3<&0
{ while IFS= read -r _; do :; done; kill -USR1 $$; } <&3 >/dev/null 2>&1 &
w=$!
wait "$p"
r=$?
kill -KILL "$w" 2>/dev/null
exit "$r"
"#;

/// The command line for the remote login shell: the wrapper, then `argv` as its words, each
/// single-quoted so that the login shell's parse gives back exactly these strings.
pub(crate) fn remote_command(argv: &[String], cwd: Option<&str>, grace: Duration) -> String {
    let grace = grace.as_secs() + u64::from(grace.subsec_nanos() > 0);
    let mut words: Vec<String> = vec![
        "exec".into(),
        "sh".into(),
        "-c".into(),
        WRAPPER.into(),
        "runbook-ssh".into(),
        grace.to_string(),
        cwd.unwrap_or_default().into(),
    ];
    words.extend(argv.iter().cloned());
    words.iter().map(|w| quote(w)).collect::<Vec<_>>().join(" ")
}

/// One word, single-quoted for a POSIX shell: `'…'`, a `'` as `'\''`. Always quoted, even
/// when plain, so an empty word stays a word.
fn quote(word: &str) -> String {
    format!("'{}'", word.replace('\'', r"'\''"))
}

/// What the wrapper reads first: the environment and the command's stdin.
pub(crate) fn preamble(env: &[(String, String)], stdin: Option<&str>) -> Vec<u8> {
    let mut out = String::new();
    for (name, value) in env {
        let _ = writeln!(out, "{name} {}", encode(value));
    }
    out.push_str(".\n");
    match stdin {
        Some(data) => {
            out.push_str(&encode(data));
            out.push('\n');
        }
        None => out.push_str("-\n"),
    }
    out.into_bytes()
}

/// `text` as a `printf` format that prints it back: letters, digits and `_./:,=@+-` as they
/// are, every other byte as a `\ooo` octal escape (so no newline, `%` or `\` is left).
fn encode(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for byte in text.bytes() {
        if byte.is_ascii_alphanumeric() || b"_./:,=@+-".contains(&byte) {
            out.push(char::from(byte));
        } else {
            let _ = write!(out, "\\{byte:03o}");
        }
    }
    out
}

/// Whether `name` can be exported by a POSIX shell.
pub(crate) fn is_env_name(name: &str) -> bool {
    let mut chars = name.chars();
    chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_refusal_gives_the_cause_and_the_verdict_not_the_banner() {
        let changed = "@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@\n\
            @    WARNING: REMOTE HOST IDENTIFICATION HAS CHANGED!     @\n\
            @@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@\n\
            IT IS POSSIBLE THAT SOMEONE IS DOING SOMETHING NASTY!\n\
            Host key for [127.0.0.1]:2222 has changed and you have requested strict checking.\n\
            Host key verification failed.\n";
        assert_eq!(
            last_words(changed),
            "Host key for [127.0.0.1]:2222 has changed and you have requested strict checking. \
             Host key verification failed."
        );
        assert_eq!(
            last_words("ssh: connect to host 127.0.0.1 port 1: Connection refused\r\n"),
            "ssh: connect to host 127.0.0.1 port 1: Connection refused"
        );
        assert_eq!(last_words(""), "");
    }

    /// Runs `words` as a login shell would run the command line, with the preamble as input.
    fn through_sh(line: &str, input: &[u8]) -> std::process::Output {
        use std::io::Write as _;
        let mut child = std::process::Command::new("sh")
            .args(["-c", line])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        // The input stays open until the command is done: its end means "stop".
        let mut stdin = child.stdin.take().unwrap();
        stdin.write_all(input).unwrap();
        let out = child.wait_with_output().unwrap();
        drop(stdin);
        out
    }

    #[test]
    fn the_login_shell_gives_back_the_argv_and_the_preamble_the_values() {
        let nasty = "a'b \"c\" $(touch pwned) `x` \\ % %s\n\ttab; é";
        let dir = tempfile::tempdir().unwrap();
        let argv = vec![
            "sh".to_owned(),
            "-c".to_owned(),
            r#"printf '%s|' "$@" "$V" "$(cat)" "$(pwd)""#.to_owned(),
            "name".to_owned(),
            nasty.to_owned(),
            String::new(),
        ];
        let line = remote_command(
            &argv,
            Some(dir.path().to_str().unwrap()),
            Duration::from_secs(1),
        );
        let input = preamble(&[("V".into(), nasty.into())], Some(nasty));
        let out = through_sh(&line, &input);
        let stdout = String::from_utf8(out.stdout).unwrap();
        let cwd = dir.path().canonicalize().unwrap();
        assert_eq!(
            stdout,
            format!("{nasty}||{nasty}|{nasty}|{}|", cwd.display()),
            "stderr: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(!std::path::Path::new("pwned").exists());
        assert_eq!(out.status.code(), Some(0));
    }

    #[test]
    fn the_remote_exit_code_is_the_commands() {
        let line = remote_command(
            &[
                "sh".into(),
                "-c".into(),
                "echo out; echo err >&2; exit 7".into(),
            ],
            None,
            Duration::from_secs(1),
        );
        let out = through_sh(&line, &preamble(&[], None));
        assert_eq!(out.status.code(), Some(7));
        assert_eq!(out.stdout, b"out\n");
        assert_eq!(out.stderr, b"err\n");
    }

    #[test]
    fn env_names_are_shell_names() {
        assert!(is_env_name("PGPASSWORD"));
        assert!(is_env_name("_x1"));
        assert!(!is_env_name("1x"));
        assert!(!is_env_name("A-B"));
        assert!(!is_env_name(""));
    }
}
