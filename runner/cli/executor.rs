//! This process as an executor of an etcd journal shared with other executors: its name
//! (`--executor-name`, by default `HOST-PID`) and its lease's time to live (`--lease-ttl`), and
//! joining the fleet ([`crate::serve::fleet`]) with them.
//!
//! The TTL bounds how long the runs of an executor that died wait for another to take them up,
//! and how long a short outage of the store is ridden out before runs stop: etcd counts leases
//! in whole seconds, and grants none shorter than its election allows, so it is taken in whole
//! seconds from 2 s to 1 h.

use std::sync::Arc;
use std::time::Duration;

use runbook_journals::{EtcdJournal, Fleet, JournalError};

use crate::cli::CliError;
use crate::serve::fleet::{Join, Member};

/// The shortest lease TTL taken.
const TTL_MIN: Duration = Duration::from_secs(2);
/// The longest lease TTL taken.
const TTL_MAX: Duration = Duration::from_secs(3600);
/// The longest executor name taken.
const NAME_MAX: usize = 64;

/// An executor's name and lease TTL.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Executor {
    /// Its name (the identity adds the lease).
    pub name: String,
    /// Its lease's time to live.
    pub ttl: Duration,
}

impl Executor {
    /// The executor the options give: `name` (or `HOST-PID`) and `ttl`, checked.
    pub fn of(name: Option<&str>, ttl: Duration) -> Result<Self, CliError> {
        let name = match name {
            Some(name) => check_name(name)?,
            None => default_name(),
        };
        if ttl.subsec_nanos() != 0 || ttl < TTL_MIN || ttl > TTL_MAX {
            return Err(CliError::Usage(format!(
                "--lease-ttl {} is not a whole number of seconds from {} to {}: etcd counts leases in whole seconds, and an executor that died is replaced within its TTL",
                humantime::format_duration(ttl),
                humantime::format_duration(TTL_MIN),
                humantime::format_duration(TTL_MAX),
            )));
        }
        Ok(Self { name, ttl })
    }

    /// How this executor joins the fleet of `journal` (again, after losing its lease).
    pub fn joiner(&self, journal: &Arc<EtcdJournal>) -> Join {
        let journal = Arc::clone(journal);
        let me = self.clone();
        Arc::new(move || join_etcd(&journal, &me.name, me.ttl))
    }

    /// Joins the fleet of `journal` as this executor, until the membership is dropped.
    pub fn join(&self, journal: &Arc<EtcdJournal>) -> Result<Joined, CliError> {
        let join = self.joiner(journal);
        Ok(Joined(tokio::task::block_in_place(|| Member::join(join))?))
    }
}

/// A command's membership of the fleet: it leaves when dropped, so whatever the command still
/// owns is free for another executor at once.
#[derive(Debug)]
pub struct Joined(Arc<Member>);

impl Joined {
    /// The membership.
    pub fn member(&self) -> &Arc<Member> {
        &self.0
    }
}

impl Drop for Joined {
    fn drop(&mut self) {
        tokio::task::block_in_place(|| self.0.leave());
    }
}

fn join_etcd(
    journal: &Arc<EtcdJournal>,
    name: &str,
    ttl: Duration,
) -> Result<Arc<dyn Fleet>, JournalError> {
    Ok(journal.join(name, ttl)?)
}

/// A name of letters, digits, `.`, `_` and `-` (it is part of keys in the store and of the
/// executor's identity, `NAME/LEASE`).
fn check_name(name: &str) -> Result<String, CliError> {
    let fine = !name.is_empty()
        && name.len() <= NAME_MAX
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'));
    if fine {
        Ok(name.to_owned())
    } else {
        Err(CliError::Usage(format!(
            "--executor-name `{name}` is not 1 to {NAME_MAX} letters, digits, `.`, `_` or `-`"
        )))
    }
}

/// `HOST-PID`, the host name cut down to what a name may hold.
fn default_name() -> String {
    let host: String = nix::unistd::gethostname()
        .ok()
        .and_then(|h| h.into_string().ok())
        .unwrap_or_default()
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-') {
                c
            } else {
                '-'
            }
        })
        .take(NAME_MAX - 11)
        .collect();
    let host = if host.is_empty() {
        "executor".into()
    } else {
        host
    };
    format!("{host}-{}", std::process::id())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_default_name_is_the_host_and_the_pid_and_fits() {
        let e = Executor::of(None, Duration::from_secs(10)).expect("defaults are fine");
        assert!(
            e.name.ends_with(&format!("-{}", std::process::id())),
            "{}",
            e.name
        );
        assert!(check_name(&e.name).is_ok(), "{}", e.name);
        assert_eq!(e.ttl, Duration::from_secs(10));
    }

    #[test]
    fn a_ttl_outside_whole_seconds_from_2s_to_1h_is_refused_with_why() {
        for bad in [
            Duration::from_millis(1500),
            Duration::from_secs(1),
            Duration::from_millis(2500),
            Duration::from_secs(3601),
        ] {
            let err = Executor::of(Some("a"), bad).expect_err("refused");
            assert!(
                err.to_string()
                    .contains("is not a whole number of seconds from 2s to 1h"),
                "{err}"
            );
        }
        assert!(Executor::of(Some("a"), Duration::from_secs(2)).is_ok());
        assert!(Executor::of(Some("a"), Duration::from_secs(3600)).is_ok());
    }

    #[test]
    fn a_name_with_a_slash_or_a_space_is_refused() {
        for bad in ["", "a/b", "a b", &"x".repeat(65)] {
            let err = Executor::of(Some(bad), Duration::from_secs(10)).expect_err("refused");
            assert!(err.to_string().contains("is not 1 to 64 letters"), "{err}");
        }
        assert_eq!(
            Executor::of(Some("exec-A_1.x"), Duration::from_secs(10))
                .expect("fine")
                .name,
            "exec-A_1.x"
        );
    }
}
