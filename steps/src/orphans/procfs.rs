//! What `/proc` says about processes: their group, state and start time, and the attempt a
//! process belongs to (from its environment). Linux only; elsewhere nothing is found.

use std::path::Path;

use super::Attempt;

/// The fields of `/proc/PID/stat` that are needed here.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Stat {
    /// `R`, `S`, `D`, `Z` (zombie), `X` (dead), …
    pub(crate) state: char,
    /// The process group.
    pub(crate) pgrp: i32,
    /// When the process started, in clock ticks since boot: with the pid, it names one process
    /// even after the pid is reused.
    pub(crate) start: u64,
}

impl Stat {
    /// Whether the process has ended (a zombie waits only for its parent to reap it).
    pub(crate) fn is_dead(self) -> bool {
        matches!(self.state, 'Z' | 'X')
    }
}

/// Parses a `/proc/PID/stat` line: `pid (comm) state ppid pgrp … starttime …`. `comm` may hold
/// spaces and parentheses, so fields are counted from the last `)`.
pub(crate) fn parse_stat(line: &str) -> Option<Stat> {
    let rest = &line[line.rfind(')')? + 1..];
    let mut fields = rest.split_whitespace();
    // Fields 3 (state), 5 (pgrp) and 22 (starttime) of proc(5).
    let state = fields.next()?.chars().next()?;
    let pgrp = fields.nth(1)?.parse().ok()?;
    let start = fields.nth(16)?.parse().ok()?;
    Some(Stat { state, pgrp, start })
}

/// The stat of process `pid`, if it exists.
pub(crate) fn stat(pid: i32) -> Option<Stat> {
    read_stat(&format!("/proc/{pid}/stat"))
}

/// Reads a stat file with one `read` (and the one that sees its end): it is read for every step
/// process as it starts, and `fs::read_to_string` would first `statx` and `lseek` for a size
/// hint (`/proc` says 0) and then read in doubling chunks from 32 bytes, nine calls for a line.
fn read_stat(path: &str) -> Option<Stat> {
    use std::io::Read as _;
    let mut file = std::fs::File::open(path).ok()?;
    let mut buf = [0; STAT_READ];
    let mut len = 0;
    loop {
        match file.read(&mut buf[len..]) {
            Ok(0) => break,
            Ok(n) => len += n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(_) => return None,
        }
        if len == STAT_READ {
            // Longer than any stat line can be: read the rest the general way.
            let mut line = buf.to_vec();
            file.read_to_end(&mut line).ok()?;
            return parse_stat(std::str::from_utf8(&line).ok()?);
        }
    }
    parse_stat(std::str::from_utf8(&buf[..len]).ok()?)
}

/// Room for any `/proc/PID/stat` line: 52 fields of at most 20 digits and a name of at most
/// 64 bytes.
const STAT_READ: usize = 2048;

/// A process at one instant.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Proc {
    /// Its id.
    pub(crate) pid: i32,
    /// Its stat.
    pub(crate) stat: Stat,
    /// The attempt its environment names, if any (and if its environment can be read: a
    /// process of another user's cannot, and could not be signalled either).
    pub(crate) attempt: Option<Attempt>,
}

/// Every process now, with the attempt each belongs to.
pub(crate) fn snapshot() -> Vec<Proc> {
    snapshot_of(Path::new("/proc"))
}

fn snapshot_of(proc: &Path) -> Vec<Proc> {
    let Ok(entries) = std::fs::read_dir(proc) else {
        return Vec::new();
    };
    let mut procs = Vec::new();
    for entry in entries.flatten() {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|name| name.parse::<i32>().ok())
        else {
            continue;
        };
        // A process that went away meanwhile has no stat; it is not there.
        let Some(stat) = std::fs::read_to_string(entry.path().join("stat"))
            .ok()
            .and_then(|line| parse_stat(&line))
        else {
            continue;
        };
        let attempt = std::fs::read(entry.path().join("environ"))
            .ok()
            .and_then(|environ| Attempt::from_environ(&environ));
        procs.push(Proc { pid, stat, attempt });
    }
    procs
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stat_lines_with_odd_command_names_parse() {
        let line = "4242 (my (odd) cmd) S 1 4240 4240 0 -1 4194560 1 2 3 4 5 6 7 8 20 0 1 0 \
                    987654 1000 200 18446744073709551615";
        assert_eq!(
            parse_stat(line),
            Some(Stat {
                state: 'S',
                pgrp: 4240,
                start: 987_654
            })
        );
        assert_eq!(parse_stat("garbage"), None);
        assert_eq!(parse_stat("1 (short) S 0 1"), None);
    }

    #[test]
    fn this_process_is_in_the_snapshot_as_its_own_stat_says() {
        let me = i32::try_from(std::process::id()).unwrap();
        let mine = stat(me).expect("this process has a stat");
        assert!(!mine.is_dead());
        assert_eq!(mine.pgrp, nix::unistd::getpgrp().as_raw());
        let found = snapshot().into_iter().find(|p| p.pid == me);
        assert_eq!(found.map(|p| p.stat.start), Some(mine.start));
    }
}
