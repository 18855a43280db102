//! Label and field selectors as the API server parses them.
//!
//! Labels: `a=b`, `a==b`, `a!=b`, `a in (x,y)`, `a notin (x,y)`, `a` (exists), `!a`; commas
//! join requirements (and). Fields: `metadata.name`, `metadata.namespace` for every resource,
//! plus `status.phase` and `spec.nodeName` for pods; `=`, `==`, `!=`.

use serde_json::Value;

use super::store::{ApiError, at};

#[derive(Debug, PartialEq, Eq)]
enum Req {
    Eq(String, String),
    NotEq(String, String),
    In(String, Vec<String>),
    NotIn(String, Vec<String>),
    Exists(String),
    NotExists(String),
}

/// A parsed label selector.
#[derive(Debug, Default)]
pub struct Labels(Vec<Req>);

/// Splits on commas outside parentheses.
fn terms(text: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut depth = 0;
    let mut current = String::new();
    for c in text.chars() {
        match c {
            '(' => {
                depth += 1;
                current.push(c);
            }
            ')' => {
                depth -= 1;
                current.push(c);
            }
            ',' if depth == 0 => out.push(std::mem::take(&mut current)),
            _ => current.push(c),
        }
    }
    out.push(current);
    out.into_iter()
        .map(|t| t.trim().to_owned())
        .filter(|t| !t.is_empty())
        .collect()
}

fn valid_key(key: &str) -> bool {
    !key.is_empty()
        && key
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.' | '/'))
}

fn set(values: &str) -> Option<Vec<String>> {
    let inner = values.trim().strip_prefix('(')?.strip_suffix(')')?;
    Some(
        inner
            .split(',')
            .map(|v| v.trim().to_owned())
            .filter(|v| !v.is_empty())
            .collect(),
    )
}

impl Labels {
    pub fn parse(text: &str) -> Result<Self, ApiError> {
        let bad = |term: &str| {
            ApiError::bad_request(format!(
                "unable to parse requirement: found '{term}', expected: in, notin, =, ==, !=, \
                 gt, lt"
            ))
        };
        let mut reqs = Vec::new();
        for term in terms(text) {
            let words: Vec<&str> = term.splitn(2, char::is_whitespace).collect();
            let req = if let Some(key) = term.strip_prefix('!') {
                Req::NotExists(key.trim().to_owned())
            } else if words.len() == 2 && words[1].trim_start().starts_with("notin") {
                let values = set(words[1].trim_start().trim_start_matches("notin"))
                    .ok_or_else(|| bad(&term))?;
                Req::NotIn(words[0].to_owned(), values)
            } else if words.len() == 2 && words[1].trim_start().starts_with("in") {
                let values = set(words[1].trim_start().trim_start_matches("in"))
                    .ok_or_else(|| bad(&term))?;
                Req::In(words[0].to_owned(), values)
            } else if let Some((k, v)) = term.split_once("!=") {
                Req::NotEq(k.trim().to_owned(), v.trim().to_owned())
            } else if let Some((k, v)) = term.split_once("==") {
                Req::Eq(k.trim().to_owned(), v.trim().to_owned())
            } else if let Some((k, v)) = term.split_once('=') {
                Req::Eq(k.trim().to_owned(), v.trim().to_owned())
            } else {
                Req::Exists(term.clone())
            };
            let key = match &req {
                Req::Eq(k, _)
                | Req::NotEq(k, _)
                | Req::In(k, _)
                | Req::NotIn(k, _)
                | Req::Exists(k)
                | Req::NotExists(k) => k,
            };
            if !valid_key(key) {
                return Err(bad(&term));
            }
            reqs.push(req);
        }
        Ok(Self(reqs))
    }

    pub fn matches(&self, object: &Value) -> bool {
        let labels = at(object, "metadata.labels");
        let get = |k: &str| labels.and_then(|l| l.get(k)).and_then(Value::as_str);
        self.0.iter().all(|req| match req {
            Req::Eq(k, v) => get(k) == Some(v),
            Req::NotEq(k, v) => get(k) != Some(v),
            Req::In(k, vs) => get(k).is_some_and(|x| vs.iter().any(|v| v == x)),
            Req::NotIn(k, vs) => get(k).is_none_or(|x| vs.iter().all(|v| v != x)),
            Req::Exists(k) => get(k).is_some(),
            Req::NotExists(k) => get(k).is_none(),
        })
    }
}

/// A parsed field selector.
#[derive(Debug, Default)]
pub struct Fields(Vec<(String, bool, String)>);

impl Fields {
    pub fn parse(text: &str, kind: &str) -> Result<Self, ApiError> {
        let mut out = Vec::new();
        for term in terms(text) {
            let (field, equal, value) = if let Some((f, v)) = term.split_once("!=") {
                (f, false, v)
            } else if let Some((f, v)) = term.split_once("==") {
                (f, true, v)
            } else if let Some((f, v)) = term.split_once('=') {
                (f, true, v)
            } else {
                return Err(ApiError::bad_request(format!(
                    "invalid selector: '{text}'; can't understand '{term}'"
                )));
            };
            let field = field.trim();
            let supported = matches!(field, "metadata.name" | "metadata.namespace")
                || (kind == "Pod" && matches!(field, "status.phase" | "spec.nodeName"));
            if !supported {
                return Err(ApiError::bad_request(format!(
                    "field label not supported: {field}"
                )));
            }
            out.push((field.to_owned(), equal, value.trim().to_owned()));
        }
        Ok(Self(out))
    }

    pub fn matches(&self, object: &Value) -> bool {
        self.0.iter().all(|(field, equal, value)| {
            let actual = at(object, field).and_then(Value::as_str).unwrap_or("");
            (actual == value) == *equal
        })
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn label_selectors_follow_the_documented_grammar() {
        let pod = json!({"metadata": {"labels": {"app": "openbao", "tier": "db"}}});
        let yes = [
            "app=openbao",
            "app==openbao",
            "app=openbao,tier!=web",
            "app in (openbao, vault)",
            "tier notin (web)",
            "app",
            "!canary",
            "",
        ];
        for s in yes {
            assert!(Labels::parse(s).unwrap().matches(&pod), "{s}");
        }
        let no = [
            "app=nats",
            "app!=openbao",
            "app in (nats)",
            "tier notin (db,web)",
            "canary",
            "!app",
        ];
        for s in no {
            assert!(!Labels::parse(s).unwrap().matches(&pod), "{s}");
        }
        assert!(Labels::parse("a b c").is_err());
    }

    #[test]
    fn field_selectors_know_their_fields() {
        let pod =
            json!({"metadata": {"name": "p", "namespace": "n"}, "status": {"phase": "Running"}});
        assert!(
            Fields::parse("status.phase=Running", "Pod")
                .unwrap()
                .matches(&pod)
        );
        assert!(
            Fields::parse("status.phase!=Pending,metadata.name==p", "Pod")
                .unwrap()
                .matches(&pod)
        );
        assert!(
            !Fields::parse("metadata.namespace=x", "Pod")
                .unwrap()
                .matches(&pod)
        );
        let e = Fields::parse("status.phase=Running", "ConfigMap").unwrap_err();
        assert_eq!(e.message, "field label not supported: status.phase");
    }
}
