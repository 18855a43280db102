//! Where an etcd journal lives: `etcd://host:port[,host:port…]/prefix`, and how to reach it
//! (TLS files, user and password), as the command line gives them.
//!
//! The URL names the cluster's client endpoints and the key prefix under which this journal
//! keeps everything; two journals with different prefixes on one cluster never see each other.
//! The prefix is the URL's path, kept with its leading `/` (what `etcdctl get --prefix` takes);
//! it must not be empty or end with `/`.

use std::path::PathBuf;

/// The URL scheme of an etcd journal.
pub const SCHEME: &str = "etcd://";

/// A URL that does not name an etcd journal.
#[derive(Debug, thiserror::Error)]
#[error(
    "invalid etcd journal URL `{url}`: {reason} (expected etcd://host:port[,host:port…]/prefix)"
)]
pub struct EtcdUrlError {
    /// The URL given.
    pub url: String,
    /// What is wrong with it.
    pub reason: String,
}

/// TLS for the client connections: files in PEM, read when the journal is opened.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct EtcdTls {
    /// The CA that signed the members' certificates (`--etcd-cacert`); the system's roots when
    /// absent.
    pub ca_cert: Option<PathBuf>,
    /// The client certificate (`--etcd-cert`), with its key (`--etcd-key`), for clusters that
    /// authenticate clients by certificate.
    pub cert: Option<PathBuf>,
    /// The client certificate's private key.
    pub key: Option<PathBuf>,
}

/// An etcd journal's address and credentials.
#[derive(Clone, PartialEq, Eq)]
pub struct EtcdTarget {
    /// The client endpoints, `host:port` each.
    pub endpoints: Vec<String>,
    /// The key prefix, starting with `/`.
    pub prefix: String,
    /// TLS, when the cluster's client URLs are `https`.
    pub tls: Option<EtcdTls>,
    /// User name and password, for a cluster with authentication enabled.
    pub user: Option<(String, String)>,
}

impl std::fmt::Debug for EtcdTarget {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The password never appears in clear.
        f.debug_struct("EtcdTarget")
            .field("endpoints", &self.endpoints)
            .field("prefix", &self.prefix)
            .field("tls", &self.tls)
            .field("user", &self.user.as_ref().map(|(u, _)| u))
            .finish()
    }
}

impl EtcdTarget {
    /// Whether `value` (a `--journal` argument) names an etcd journal rather than a directory.
    pub fn is_url(value: &str) -> bool {
        value.starts_with(SCHEME)
    }

    /// Parses `etcd://host:port[,host:port…]/prefix` (no TLS, no user: set them after).
    pub fn parse(url: &str) -> Result<Self, EtcdUrlError> {
        let bad = |reason: &str| EtcdUrlError {
            url: url.to_owned(),
            reason: reason.to_owned(),
        };
        let rest = url
            .strip_prefix(SCHEME)
            .ok_or_else(|| bad("it does not start with etcd://"))?;
        let (hosts, path) = rest
            .split_once('/')
            .ok_or_else(|| bad("it names no key prefix after the endpoints"))?;
        if hosts.contains('@') {
            return Err(bad(
                "credentials do not belong in the URL: use --etcd-user/--etcd-password or \
                 ETCDCTL_USER/ETCDCTL_PASSWORD",
            ));
        }
        let mut endpoints = Vec::new();
        for host in hosts.split(',') {
            let (name, port) = host
                .rsplit_once(':')
                .ok_or_else(|| bad(&format!("endpoint `{host}` has no port")))?;
            if name.is_empty() {
                return Err(bad(&format!("endpoint `{host}` has no host")));
            }
            port.parse::<u16>()
                .map_err(|_| bad(&format!("endpoint `{host}` has an invalid port")))?;
            endpoints.push(host.to_owned());
        }
        let prefix = format!("/{path}");
        if path.is_empty() || prefix.ends_with('/') || prefix.contains("//") {
            return Err(bad(
                "the key prefix must be a non-empty path without an empty segment",
            ));
        }
        Ok(Self {
            endpoints,
            prefix,
            tls: None,
            user: None,
        })
    }

    /// The URL, without credentials (for messages and hints).
    pub fn url(&self) -> String {
        format!("{SCHEME}{}{}", self.endpoints.join(","), self.prefix)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_name_endpoints_and_a_prefix() {
        let t = EtcdTarget::parse("etcd://127.0.0.1:2379,10.0.0.2:2379/teams/ops").unwrap();
        assert_eq!(t.endpoints, ["127.0.0.1:2379", "10.0.0.2:2379"]);
        assert_eq!(t.prefix, "/teams/ops");
        assert_eq!(t.url(), "etcd://127.0.0.1:2379,10.0.0.2:2379/teams/ops");
        assert!(EtcdTarget::is_url("etcd://a:1/p"));
        assert!(!EtcdTarget::is_url("/var/lib/runbook"));
    }

    #[test]
    fn malformed_urls_say_what_is_wrong() {
        for (url, reason) in [
            ("etcd://127.0.0.1:2379", "no key prefix"),
            ("etcd://127.0.0.1:2379/", "non-empty path"),
            ("etcd://127.0.0.1:2379/a/", "non-empty path"),
            ("etcd://127.0.0.1/p", "has no port"),
            ("etcd://127.0.0.1:99999/p", "invalid port"),
            ("etcd://:2379/p", "has no host"),
            ("etcd://u:pw@127.0.0.1:2379/p", "credentials"),
            ("http://127.0.0.1:2379/p", "etcd://"),
        ] {
            let err = EtcdTarget::parse(url).unwrap_err().to_string();
            assert!(err.contains(reason), "{url}: {err}");
        }
    }

    #[test]
    fn the_password_is_not_shown() {
        let mut t = EtcdTarget::parse("etcd://h:1/p").unwrap();
        t.user = Some(("ops".into(), "hunter2".into()));
        let shown = format!("{t:?}");
        assert!(
            shown.contains("ops") && !shown.contains("hunter2"),
            "{shown}"
        );
    }
}
