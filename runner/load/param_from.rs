//! A parameter's `from:` — the secret store its value is read from (see [`crate::openbao`]) —
//! checked when the runbook is loaded, every problem at its own line and column.

use crate::load::Loader;
use crate::openbao::{Auth, SecretId, Source};
use crate::yaml::{Map, Node};

/// The stores `from:` knows.
const STORES: &[&str] = &["openbao"];

const OPENBAO_FIELDS: &[&str] = &["addr", "path", "field", "namespace", "ca_file", "auth"];

const AUTH_FIELDS: &[&str] = &["token_env", "token_file", "approle"];

const APPROLE_FIELDS: &[&str] = &["role_id", "secret_id_env", "secret_id_file", "mount"];

impl Loader<'_> {
    /// The source of `from: { openbao: {…} }`, or `None` with its problems recorded.
    pub(super) fn param_from(&mut self, node: &Node) -> Option<Source> {
        let map = self.f.map(node, "`from`")?;
        self.f.known_keys(map, STORES, "`from`");
        let Some(store) = map.get("openbao") else {
            if map.entries.is_empty() {
                self.f
                    .error(node, "`from` needs a store: `openbao: { path, field }`");
            }
            return None;
        };
        let bao = self.f.map(store, "`openbao`")?;
        self.f.known_keys(bao, OPENBAO_FIELDS, "`openbao`");
        let key = map.key("openbao").expect("present");
        let text = |loader: &mut Self, field: &str| {
            bao.get(field)
                .and_then(|n| loader.f.string(n, &format!("`{field}`")))
                .map(|s| s.text.trim().to_owned())
        };
        let need = |loader: &mut Self, field: &str, what: &str| {
            let value = text(loader, field);
            if bao.get(field).is_none() {
                loader
                    .f
                    .error_at(key, format!("`openbao` needs `{field}`, {what}"));
            }
            value.filter(|v| !v.is_empty())
        };
        let path = need(
            self,
            "path",
            "the secret's API path (KV v2: secret/data/NAME)",
        );
        let field = need(self, "field", "the field of the secret to read");
        let addr = text(self, "addr");
        if let (Some(a), Some(n)) = (&addr, bao.get("addr"))
            && !(a.starts_with("http://") || a.starts_with("https://"))
        {
            self.f.error(
                n,
                format!("`addr` must start with http:// or https://, not `{a}`"),
            );
        }
        let auth = match bao.get("auth") {
            Some(n) => self.bao_auth(n)?,
            None => Auth::Default,
        };
        Some(Source {
            addr,
            path: path?,
            field: field?,
            namespace: text(self, "namespace"),
            ca_file: text(self, "ca_file"),
            auth,
        })
    }

    fn bao_auth(&mut self, node: &Node) -> Option<Auth> {
        let map = self.f.map(node, "`auth`")?;
        self.f.known_keys(map, AUTH_FIELDS, "`auth`");
        let given: Vec<&str> = AUTH_FIELDS
            .iter()
            .copied()
            .filter(|f| map.get(f).is_some())
            .collect();
        if given.len() != 1 {
            self.f.error(
                node,
                "`auth` takes one of `token_env`, `token_file` or `approle`",
            );
            return None;
        }
        let string = |loader: &mut Self, map: &Map, field: &str| {
            map.get(field)
                .and_then(|n| loader.f.string(n, &format!("`{field}`")))
                .map(|s| s.text.trim().to_owned())
        };
        match given[0] {
            "token_env" => string(self, map, "token_env").map(Auth::TokenEnv),
            "token_file" => string(self, map, "token_file").map(Auth::TokenFile),
            _ => {
                let approle_node = map.get("approle").expect("given");
                let approle = self.f.map(approle_node, "`approle`")?;
                self.f.known_keys(approle, APPROLE_FIELDS, "`approle`");
                let role_id = string(self, approle, "role_id");
                if approle.get("role_id").is_none() {
                    self.f.error(approle_node, "`approle` needs `role_id`");
                }
                let secret_id = match (
                    string(self, approle, "secret_id_env"),
                    string(self, approle, "secret_id_file"),
                ) {
                    (Some(env), None) => Some(SecretId::Env(env)),
                    (None, Some(file)) => Some(SecretId::File(file)),
                    _ => {
                        self.f.error(
                            approle_node,
                            "`approle` needs one of `secret_id_env` or `secret_id_file`",
                        );
                        None
                    }
                };
                let mount = string(self, approle, "mount").unwrap_or_else(|| "approle".to_owned());
                Some(Auth::AppRole {
                    role_id: role_id?,
                    secret_id: secret_id?,
                    mount,
                })
            }
        }
    }
}
