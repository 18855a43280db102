//! Where the journal is: a directory (the sled journal) or an etcd cluster
//! (`--journal etcd://host:port[,host:port…]/prefix`), and opening it.
//!
//! An etcd journal still has a local directory, private to the user, for what belongs to this
//! machine rather than to the runs: the socket through which other commands reach the process
//! executing a run, follow files and logs. It is derived from the URL (one per cluster and
//! prefix), so two commands naming the same journal find each other.
//!
//! TLS and credentials are those etcdctl users set: `--etcd-cacert`, `--etcd-cert`,
//! `--etcd-key` (or `ETCDCTL_CACERT`, `ETCDCTL_CERT`, `ETCDCTL_KEY`), and `--etcd-user
//! NAME[:PASSWORD]` (or `ETCDCTL_USER`) with `ETCDCTL_PASSWORD`.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use runbook_journals::{EtcdJournal, EtcdTarget, EtcdTls, JournalError};

use crate::cli::{Cli, CliError};

/// How long one etcd request may take before the command reports the cluster unreachable.
const ETCD_TIMEOUT: Duration = Duration::from_secs(15);

/// Where the journal is.
#[derive(Debug)]
pub enum Location {
    /// A sled journal in this directory.
    Dir(PathBuf),
    /// An etcd journal.
    Etcd(EtcdTarget),
}

impl Location {
    /// The journal `--journal` or `$RUNBOOK_JOURNAL` names, with `cli`'s etcd options.
    pub fn of(cli: &Cli, given: Option<&Path>, default: &Path) -> Result<Self, CliError> {
        let Some(given) = given else {
            return Ok(Self::Dir(default.to_owned()));
        };
        let text = given.to_string_lossy();
        if !EtcdTarget::is_url(&text) {
            return Ok(Self::Dir(given.to_owned()));
        }
        let mut target = EtcdTarget::parse(&text).map_err(|e| CliError::Usage(e.to_string()))?;
        if cli.etcd_cacert.is_some() || cli.etcd_cert.is_some() || cli.etcd_key.is_some() {
            target.tls = Some(EtcdTls {
                ca_cert: cli.etcd_cacert.clone(),
                cert: cli.etcd_cert.clone(),
                key: cli.etcd_key.clone(),
            });
        }
        if let Some(user) = cli.etcd_user.as_deref().filter(|u| !u.is_empty()) {
            let (name, password) = match (user.split_once(':'), &cli.etcd_password) {
                (Some((name, password)), _) => (name.to_owned(), password.to_owned()),
                (None, Some(password)) => (user.to_owned(), password.clone()),
                (None, None) => {
                    return Err(CliError::Usage(format!(
                        "etcd user `{user}` has no password: give --etcd-user NAME:PASSWORD or \
                         set ETCDCTL_PASSWORD"
                    )));
                }
            };
            target.user = Some((name, password));
        }
        Ok(Self::Etcd(target))
    }

    /// The local directory of this journal: the journal itself, or an etcd journal's local
    /// state (see the module docs) under `state_base`.
    pub fn local_dir(&self, state_base: &Path) -> PathBuf {
        match self {
            Self::Dir(dir) => dir.clone(),
            Self::Etcd(target) => {
                let name: String = target
                    .url()
                    .trim_start_matches(runbook_journals::etcd_url::SCHEME)
                    .chars()
                    .map(|c| {
                        if c.is_ascii_alphanumeric() || c == '-' || c == '.' {
                            c
                        } else {
                            '_'
                        }
                    })
                    .collect();
                state_base.join("etcd").join(name)
            }
        }
    }

    /// Opens an etcd journal (sled journals are opened by their callers, who know how long to
    /// wait for a busy one); its local directory is created, private to the user.
    pub fn open_etcd(target: &EtcdTarget, local: &Path) -> Result<Arc<EtcdJournal>, CliError> {
        create_private_dir(local)?;
        Ok(Arc::new(EtcdJournal::open(target, ETCD_TIMEOUT)?))
    }
}

fn create_private_dir(dir: &Path) -> Result<(), CliError> {
    use std::os::unix::fs::DirBuilderExt;
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .map_err(|source| {
            CliError::Journal(JournalError::Io {
                action: "create",
                path: dir.to_owned(),
                source,
            })
        })
}
