//! Reading steps: the common fields, exactly one action, and the action's own fields.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use runbook_steps::FieldType;
use serde_json::Value;

use crate::diag::Diagnostic;
use crate::load::Loader;
use crate::load::refs::Scope;
use crate::model::{
    Action, Check, Concurrency, Expr, GateRules, Retry, Setting, Step, Template, Wait,
};
use crate::source::Pos;
use crate::yaml::{Map, Node, Scalar};
use runbook_journals::GateTimeout;

/// Fields every step may have.
pub(crate) const COMMON: &[&str] = &[
    "id",
    "name",
    "when",
    "timeout",
    "retry",
    "assert",
    "message",
    "idempotent",
    "check",
    "on_failure",
    "continue_on_error",
    "secret",
];

/// Actions the engine implements itself.
const CONTROL: &[&str] = &[
    "script", "wait", "gate", "sleep", "foreach", "parallel", "call",
];

/// What a `foreach` may say about overlapping iterations.
pub(crate) const CONCURRENCY: &[&str] = &["parallel", "batch", "max_failures", "max_unavailable"];

/// The fields of `retry`, `check`, `wait`, `gate` and `call` (also `runbook schema`'s).
pub(crate) const RETRY_FIELDS: &[&str] = &["attempts", "backoff", "factor", "max_backoff"];
pub(crate) const CHECK_FIELDS: &[&str] = &["probe", "until"];
pub(crate) const WAIT_FIELDS: &[&str] = &["probe", "until", "every", "timeout"];
pub(crate) const GATE_FIELDS: &[&str] = &[
    "prompt",
    "timeout",
    "four_eyes",
    "approvals",
    "approvers",
    "on_timeout",
];
pub(crate) const CALL_FIELDS: &[&str] = &["runbook", "params"];

/// Ids that would clash with the segments the engine adds to paths.
const RESERVED_IDS: &[&str] = &["on_failure", "on_abort", "prechecks", "probe", "check"];

/// Where a step appears, which limits what it may do.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Role {
    /// A step of `steps`, `on_failure` or a loop.
    Step,
    /// A precheck: read-only, no gates, sleeps or calls.
    Precheck,
    /// The probe of a `wait` or `check`: an effect or a script only.
    Probe,
}

impl Loader<'_> {
    /// Reads a list of steps that run in order. Ids must be unique among siblings.
    pub fn steps(&mut self, node: &Node, what: &str, role: Role, scope: &Scope) -> Vec<Step> {
        let Some(items) = self.f.list(node, what) else {
            return Vec::new();
        };
        let ids: Vec<Option<(String, Scalar)>> = items
            .iter()
            .map(|item| {
                item.as_map()
                    .and_then(|m| m.get("id"))
                    .and_then(Node::as_scalar)
                    .map(|s| (s.text.clone(), s.clone()))
            })
            .collect();
        let mut seen: HashMap<&str, &Scalar> = HashMap::new();
        for (id, scalar) in ids.iter().flatten() {
            if let Some(first) = seen.get(id.as_str()) {
                self.f.push(
                    Diagnostic::new(
                        scalar.content,
                        id.chars().count(),
                        format!("duplicate step id `{id}`: ids must be unique among sibling steps"),
                    )
                    .label(format!(
                        "`{id}` is already the id of the step on line {}",
                        first.pos.line
                    )),
                );
            } else {
                seen.insert(id, scalar);
            }
        }
        let mut out = Vec::new();
        let mut scope = scope.clone();
        let outer_later = scope.later().cloned();
        // Each step's ids from its position on (a step without one holds an empty id).
        let list: Arc<[String]> = ids
            .iter()
            .map(|i| i.as_ref().map(|(id, _)| id.clone()).unwrap_or_default())
            .collect();
        for (i, item) in items.iter().enumerate() {
            let here = scope.at(&list, i, outer_later.as_ref());
            if let Some(step) = self.step(item, role, &here) {
                out.push(step);
            }
            // A step with problems still runs before the next ones: references to it are
            // fine, and only its own problems are reported.
            if let Some((id, _)) = &ids[i] {
                scope.push_id(id);
            }
        }
        out
    }

    /// Reads one step.
    pub fn step(&mut self, node: &Node, role: Role, scope: &Scope) -> Option<Step> {
        let map = self.f.map(node, "a step")?;
        let actions: Vec<&Scalar> = map
            .entries
            .iter()
            .map(|(k, _)| k)
            .filter(|k| CONTROL.contains(&k.text.as_str()) || self.registry.get(&k.text).is_some())
            // On a loop, `parallel: N` says how many iterations overlap: not an action.
            .filter(|k| k.text != "parallel" || map.get("foreach").is_none())
            .collect();
        let kinds: Vec<&str> = self
            .registry
            .names()
            .chain(CONTROL.iter().copied())
            .collect();
        let action_key = match actions.as_slice() {
            [one] => Some((*one).clone()),
            [] => {
                let which = map
                    .get("id")
                    .and_then(Node::as_scalar)
                    .map_or_else(|| "step".to_owned(), |s| format!("step `{}`", s.text));
                self.f.push(
                    Diagnostic::new(map.pos, 1, format!("{which} has no action"))
                        .help(format!("give it one of: {}", kinds.join(", "))),
                );
                None
            }
            [first, second, ..] => {
                self.f.push(
                    Diagnostic::new(
                        second.content,
                        second.text.chars().count(),
                        format!(
                            "step has more than one action: `{}` and `{}`",
                            first.text, second.text
                        ),
                    )
                    .help("a step does one thing: split it into two steps"),
                );
                None
            }
        };
        let mut allowed: Vec<&str> = COMMON.to_vec();
        allowed.extend(kinds.iter().copied());
        if action_key.as_ref().is_some_and(|k| k.text == "foreach") {
            allowed.extend(["as", "steps"]);
            allowed.extend(CONCURRENCY);
        }
        self.f.known_keys(map, &allowed, "a step");

        let id = map.get("id").and_then(|n| self.id(n));
        let name = map
            .get("name")
            .and_then(|n| self.f.string(n, "`name`"))
            .map(|s| s.text.clone());
        let when = map.get("when").and_then(|n| self.expr(n, "`when`", scope));
        let timeout = map
            .get("timeout")
            .and_then(|n| self.f.duration(n, "`timeout`"));
        let retry = map.get("retry").and_then(|n| self.retry(n));
        let assert = map
            .get("assert")
            .and_then(|n| self.expr(n, "`assert`", &scope.with_output()));
        let message = map
            .get("message")
            .and_then(|n| self.template(n, "`message`", &scope.with_output()));
        let idempotent = map
            .get("idempotent")
            .and_then(|n| self.f.bool(n, "`idempotent`"));
        let continue_on_error = map
            .get("continue_on_error")
            .and_then(|n| self.f.bool(n, "`continue_on_error`"))
            .unwrap_or(false);
        let secret = map
            .get("secret")
            .and_then(|n| self.f.bool(n, "`secret`"))
            .unwrap_or(false);
        let check = map.get("check").and_then(|n| self.check(n, scope));
        let mut own = scope.clone();
        if let Some(id) = &id {
            own.push_id(id);
        }
        let on_failure = map
            .get("on_failure")
            .map(|n| self.steps(n, "`on_failure`", Role::Step, &own))
            .unwrap_or_default();

        if message.is_some() && assert.is_none() {
            self.f.error_at(
                map.key("message").expect("present"),
                "`message` goes with `assert`",
            );
        }
        let action_key = action_key?;
        let action = self.action(map, &action_key, role, scope)?;
        if retry.is_some()
            && !matches!(
                action,
                Action::Effect { .. } | Action::Wait(_) | Action::Script(_)
            )
        {
            self.f.error_at(
                map.key("retry").expect("present"),
                format!(
                    "`retry` applies to effects, scripts and waits, not to `{}`",
                    action.kind()
                ),
            );
        }
        if matches!(action, Action::Call { .. }) && !on_failure.is_empty() {
            self.f.error_at(
                map.key("on_failure").expect("present"),
                "a `call` step cannot have `on_failure`; give the called runbook one",
            );
        }
        let step = Step {
            id,
            name,
            when,
            timeout,
            retry,
            assert,
            message,
            idempotent,
            check,
            on_failure,
            continue_on_error,
            secret,
            action,
            pos: map.pos,
        };
        Some(step)
    }

    fn id(&mut self, node: &Node) -> Option<String> {
        let s = self.f.string(node, "`id`")?;
        let valid = s
            .text
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
            && s.text
                .chars()
                .next()
                .is_some_and(|c| c.is_ascii_alphabetic() || c == '_');
        if !valid {
            self.f.error_at(
                s,
                format!(
                    "invalid step id `{}`: use letters, digits, `_` and `-`, starting with a letter",
                    s.text
                ),
            );
            return None;
        }
        if RESERVED_IDS.contains(&s.text.as_str()) {
            self.f.error_at(
                s,
                format!("`{}` is reserved and cannot be a step id", s.text),
            );
            return None;
        }
        Some(s.text.clone())
    }

    fn retry(&mut self, node: &Node) -> Option<Retry> {
        let map = self.f.map(node, "`retry`")?;
        self.f.known_keys(map, RETRY_FIELDS, "`retry`");
        let attempts = match map.get("attempts") {
            Some(n) => match self.f.uint(n, "`attempts`")? {
                0 => {
                    self.f
                        .error(n, "`attempts` counts the first try too; it must be ≥ 1");
                    return None;
                }
                a => u32::try_from(a).unwrap_or(u32::MAX),
            },
            None => {
                self.f
                    .push(Diagnostic::new(map.pos, 1, "`retry` needs `attempts`"));
                return None;
            }
        };
        let backoff = match map.get("backoff") {
            Some(n) => self.f.duration(n, "`backoff`")?,
            None => Duration::from_secs(1),
        };
        let factor = match map.get("factor") {
            Some(n) => self.f.float(n, "`factor`")?,
            None => 2.0,
        };
        let max_backoff = match map.get("max_backoff") {
            Some(n) => self.f.duration(n, "`max_backoff`")?,
            None => Duration::from_secs(300),
        };
        Some(Retry {
            attempts,
            backoff,
            factor,
            max_backoff,
        })
    }

    fn check(&mut self, node: &Node, scope: &Scope) -> Option<Check> {
        if node.as_scalar().is_some() {
            return self.expr(node, "`check`", scope).map(Check::Expr);
        }
        let map = self.f.map(node, "`check`")?;
        self.f.known_keys(map, CHECK_FIELDS, "`check`");
        let probe = self.probe(map, "`check`", scope);
        let until = match map.get("until") {
            Some(n) => self.expr(n, "`until`", &scope.with_output()),
            None => {
                self.f.push(Diagnostic::new(
                    map.pos,
                    1,
                    "`check` with a probe needs `until`",
                ));
                None
            }
        };
        Some(Check::Probe {
            probe: Box::new(probe?),
            until: until?,
        })
    }

    fn probe(&mut self, map: &Map, what: &str, scope: &Scope) -> Option<Step> {
        match map.get("probe") {
            Some(n) => self.step(n, Role::Probe, scope),
            None => {
                self.f.push(Diagnostic::new(
                    map.pos,
                    1,
                    format!("{what} needs a `probe` step"),
                ));
                None
            }
        }
    }

    fn action(&mut self, map: &Map, key: &Scalar, role: Role, scope: &Scope) -> Option<Action> {
        let node = map.get(&key.text).expect("key present");
        let kind = key.text.as_str();
        let allowed_here = match role {
            Role::Step => true,
            Role::Precheck => !matches!(kind, "gate" | "sleep" | "call" | "parallel"),
            Role::Probe => !CONTROL.contains(&kind) || kind == "script",
        };
        if !allowed_here {
            let what = if role == Role::Precheck {
                "a precheck"
            } else {
                "a probe"
            };
            self.f
                .error_at(key, format!("`{kind}` cannot be used in {what}"));
            return None;
        }
        match kind {
            "script" => self.script(node, scope).map(Action::Script),
            "wait" => self.wait(node, scope).map(Action::Wait),
            "gate" => self.gate(node, scope),
            "sleep" => {
                let s = self.f.string(node, "`sleep`")?;
                if !s.text.contains("{{") {
                    self.f.duration(node, "`sleep`")?;
                }
                self.template(node, "`sleep`", scope).map(Action::Sleep)
            }
            "foreach" => self.foreach(map, node, role, scope),
            "parallel" => {
                let branches = self.steps(node, "`parallel`", role, scope);
                if branches.is_empty() {
                    self.f
                        .error(node, "`parallel` needs a list of steps (its branches)");
                    return None;
                }
                Some(Action::Parallel { branches })
            }
            "call" => self.call(node, scope),
            _ => self.effect(key, node, scope),
        }
    }

    fn script(&mut self, node: &Node, scope: &Scope) -> Option<Expr> {
        if node.as_scalar().is_some() {
            return self.expr(node, "`script`", scope);
        }
        let map = self.f.map(node, "`script`")?;
        self.f.known_keys(map, &["file"], "`script`");
        let Some(file_node) = map.get("file") else {
            self.f.push(Diagnostic::new(
                map.pos,
                1,
                "`script` is an expression, or `{ file: NAME.rhai }`",
            ));
            return None;
        };
        let file = self.f.string(file_node, "`file`")?;
        self.rhai_file(file, scope)
    }

    fn wait(&mut self, node: &Node, scope: &Scope) -> Option<Wait> {
        let map = self.f.map(node, "`wait`")?;
        self.f.known_keys(map, WAIT_FIELDS, "`wait`");
        let probe = self.probe(map, "`wait`", scope);
        let until = match map.get("until") {
            Some(n) => self.expr(n, "`until`", &scope.with_output()),
            None => {
                self.f.push(Diagnostic::new(
                    map.pos,
                    1,
                    "`wait` needs an `until` condition",
                ));
                None
            }
        };
        let every = match map.get("every") {
            Some(n) => self.f.duration(n, "`every`")?,
            None => Duration::from_secs(5),
        };
        // A template (`timeout: "{{params.ready_timeout}}"`) is rendered when the wait starts.
        let templated = map
            .get("timeout")
            .and_then(Node::as_scalar)
            .is_some_and(|s| s.text.contains("{{"));
        let (timeout, timeout_template) = match map.get("timeout") {
            Some(n) if templated => (
                Duration::from_secs(300),
                Some(self.template(n, "`timeout`", scope)?),
            ),
            Some(n) => (self.f.duration(n, "`timeout`")?, None),
            None => (Duration::from_secs(300), None),
        };
        Some(Wait {
            probe: Box::new(probe?),
            until: until?,
            every,
            timeout,
            timeout_template,
        })
    }

    fn gate(&mut self, node: &Node, scope: &Scope) -> Option<Action> {
        if node.as_scalar().is_some() {
            let prompt = self.template(node, "`gate`", scope)?;
            return Some(Action::Gate {
                prompt,
                timeout: None,
                four_eyes: false,
                rules: GateRules::default(),
            });
        }
        let map = self.f.map(node, "`gate`")?;
        self.f.known_keys(map, GATE_FIELDS, "`gate`");
        let prompt = match map.get("prompt") {
            Some(n) => self.template(n, "`prompt`", scope),
            None => {
                self.f
                    .push(Diagnostic::new(map.pos, 1, "`gate` needs a `prompt`"));
                None
            }
        };
        let timeout = map
            .get("timeout")
            .and_then(|n| self.f.duration(n, "`timeout`"));
        let four_eyes = map
            .get("four_eyes")
            .and_then(|n| self.f.bool(n, "`four_eyes`"))
            .unwrap_or(false);
        let rules = self.gate_rules(map);
        if let (Some(rules), None) = (&rules, timeout)
            && rules.on_timeout != GateTimeout::default()
        {
            let key = map.key("on_timeout").expect("present");
            self.f.error_at(
                key,
                "`on_timeout` needs a `timeout`: without one the gate never expires",
            );
        }
        Some(Action::Gate {
            prompt: prompt?,
            timeout,
            four_eyes,
            rules: rules?,
        })
    }

    /// `approvals`, `approvers` and `on_timeout` of a gate; every problem is recorded.
    fn gate_rules(&mut self, map: &Map) -> Option<GateRules> {
        let mut ok = true;
        let mut rules = GateRules::default();
        if let Some(n) = map.get("approvals") {
            match self.f.uint(n, "`approvals`") {
                Some(0) => {
                    self.f.error(
                        n,
                        "`approvals` must be at least 1 (how many distinct people must approve)",
                    );
                    ok = false;
                }
                Some(k) => match u32::try_from(k) {
                    Ok(k) => rules.approvals = k,
                    Err(_) => {
                        self.f.error(
                            n,
                            format!("`approvals` of {k} is more than anyone can give"),
                        );
                        ok = false;
                    }
                },
                None => ok = false,
            }
        }
        if let Some(n) = map.get("approvers") {
            match self.f.list(n, "`approvers`") {
                Some(items) => {
                    for item in items {
                        match self.f.string(item, "an approver") {
                            Some(s) if s.text.trim().is_empty() => {
                                self.f.error_at(s, "an approver's name cannot be empty");
                                ok = false;
                            }
                            Some(s) if rules.approvers.contains(&s.text) => {
                                self.f.error_at(
                                    s,
                                    format!("`{}` is listed twice in `approvers`", s.text),
                                );
                                ok = false;
                            }
                            Some(s) => rules.approvers.push(s.text.clone()),
                            None => ok = false,
                        }
                    }
                    if ok && rules.approvers.is_empty() {
                        self.f.error(
                            n,
                            "`approvers` is empty: nobody could approve; leave it out to let anyone approve",
                        );
                        ok = false;
                    }
                }
                None => ok = false,
            }
        }
        if ok
            && !rules.approvers.is_empty()
            && usize::try_from(rules.approvals).is_ok_and(|k| k > rules.approvers.len())
        {
            let n = map
                .get("approvals")
                .or_else(|| map.get("approvers"))
                .expect("present");
            self.f.error(
                n,
                format!(
                    "`approvals: {}` cannot be met: only {} {} listed in `approvers`",
                    rules.approvals,
                    rules.approvers.len(),
                    if rules.approvers.len() == 1 {
                        "person is"
                    } else {
                        "people are"
                    }
                ),
            );
            ok = false;
        }
        if let Some(n) = map.get("on_timeout") {
            const CHOICES: [&str; 3] = ["reject", "approve", "fail"];
            match self.f.string(n, "`on_timeout`") {
                Some(s) => match s.text.as_str() {
                    "approve" => rules.on_timeout = GateTimeout::Approve,
                    "reject" => rules.on_timeout = GateTimeout::Reject,
                    "fail" => rules.on_timeout = GateTimeout::Fail,
                    other => {
                        let mut d = Diagnostic::new(
                            s.content,
                            s.text.chars().count().max(1),
                            format!(
                                "`on_timeout` must be one of reject, approve, fail, not `{other}`"
                            ),
                        );
                        if let Some(g) = crate::load::fields::suggest(other, CHOICES) {
                            d = d.did_you_mean(g);
                        }
                        self.f.push(d);
                        ok = false;
                    }
                },
                None => ok = false,
            }
        }
        ok.then_some(rules)
    }

    fn foreach(&mut self, map: &Map, node: &Node, role: Role, scope: &Scope) -> Option<Action> {
        let items = self.expr(node, "`foreach`", scope);
        let var = match map.get("as") {
            Some(n) => {
                let s = self.f.string(n, "`as`")?;
                let ok = s
                    .text
                    .chars()
                    .next()
                    .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
                    && s.text
                        .chars()
                        .all(|c| c.is_ascii_alphanumeric() || c == '_');
                if !ok {
                    self.f.error_at(
                        s,
                        format!(
                            "`as` must be a plain identifier such as `item`, not `{}`",
                            s.text
                        ),
                    );
                    return None;
                }
                if ["params", "steps", "run", "output"].contains(&s.text.as_str()) {
                    self.f
                        .error_at(s, format!("`{}` is a built-in name; pick another", s.text));
                    return None;
                }
                s.text.clone()
            }
            None => "item".to_owned(),
        };
        let Some(steps_node) = map.get("steps") else {
            self.f.push(Diagnostic::new(
                map.pos,
                1,
                "`foreach` needs nested `steps`",
            ));
            return None;
        };
        let mut inner = scope.clone();
        inner.vars.push(var.clone());
        let steps = self.steps(steps_node, "`steps`", role, &inner);
        let (concurrency, templated) = self.concurrency(map, scope)?;
        Some(Action::Foreach {
            items: items?,
            var,
            steps,
            concurrency,
            templated,
        })
    }

    /// `parallel`, `batch`, `max_failures` and `max_unavailable` of a loop: each a value, read
    /// now, or a template, rendered when the loop starts.
    fn concurrency(
        &mut self,
        map: &Map,
        scope: &Scope,
    ) -> Option<(Concurrency, Vec<(Setting, Template)>)> {
        let mut ok = true;
        let mut fixed = Concurrency::default();
        let mut templated = Vec::new();
        for setting in [
            Setting::Parallel,
            Setting::Batch,
            Setting::MaxFailures,
            Setting::MaxUnavailable,
        ] {
            let Some(node) = map.get(setting.key()) else {
                continue;
            };
            let what = format!("`{}`", setting.key());
            if node.as_scalar().is_some_and(|s| s.text.contains("{{")) {
                match self.template(node, &what, scope) {
                    Some(t) => templated.push((setting, t)),
                    None => ok = false,
                }
                continue;
            }
            let text = match node.as_scalar() {
                Some(s) if !s.is_null() && !matches!(s.to_json(), Value::Bool(_)) => s.text.clone(),
                _ => String::new(),
            };
            if let Err(message) = fixed.set(setting, &text) {
                self.f.error(node, message);
                ok = false;
            }
        }
        ok.then_some((fixed, templated))
    }

    fn call(&mut self, node: &Node, scope: &Scope) -> Option<Action> {
        if node.as_scalar().is_some() {
            let runbook = self.template(node, "`call`", scope)?;
            return Some(Action::Call {
                runbook,
                params: serde_json::Map::new(),
            });
        }
        let map = self.f.map(node, "`call`")?;
        self.f.known_keys(map, CALL_FIELDS, "`call`");
        let runbook = match map.get("runbook") {
            Some(n) => self.template(n, "`runbook`", scope),
            None => {
                self.f.push(Diagnostic::new(
                    map.pos,
                    1,
                    "`call` needs the `runbook` to call",
                ));
                None
            }
        };
        let params = match map.get("params") {
            Some(n) => {
                let m = self.f.map(n, "`params`")?;
                self.templates_in(n, scope, &[]);
                m.entries
                    .iter()
                    .map(|(k, v)| (k.text.clone(), v.to_json()))
                    .collect()
            }
            None => serde_json::Map::new(),
        };
        Some(Action::Call {
            runbook: runbook?,
            params,
        })
    }

    fn effect(&mut self, key: &Scalar, node: &Node, scope: &Scope) -> Option<Action> {
        let kind = key.text.as_str();
        let step_kind = self.registry.get(kind).expect("checked by caller");
        // Shorthands: `shell: "cmd"` runs through sh -c, `shell: [argv…]` runs argv.
        let node = match (kind, node) {
            ("shell", Node::Scalar(s)) if !s.is_null() => {
                let spec = serde_json::json!({ "run": s.text });
                let shell = shell_scalars(&step_kind.shell_scripts(&spec), node, Some("run"));
                self.templates_in(node, scope, &shell);
                return Some(Action::Effect {
                    kind: kind.to_owned(),
                    spec,
                });
            }
            ("shell", Node::Seq(_)) => {
                let spec = serde_json::json!({ "args": node.to_json() });
                let shell = shell_scalars(&step_kind.shell_scripts(&spec), node, Some("args"));
                self.templates_in(node, scope, &shell);
                return Some(Action::Effect {
                    kind: kind.to_owned(),
                    spec,
                });
            }
            _ => node,
        };
        let map = self.f.map(node, &format!("`{kind}`"))?;
        let fields = step_kind.fields();
        let names: Vec<&str> = fields.iter().map(|f| f.name).collect();
        self.f.known_keys(map, &names, &format!("`{kind}`"));
        let mut reported: Vec<&str> = Vec::new();
        for field in fields {
            match map.get(field.name) {
                None if field.required => self
                    .f
                    .error_at(key, format!("`{kind}` needs `{}`", field.name)),
                Some(value) if !self.field_type(field.name, field.ty, value) => {
                    reported.push(field.name);
                }
                None | Some(_) => {}
            }
        }
        let spec = node.to_json();
        let shell = shell_scalars(&step_kind.shell_scripts(&spec), node, None);
        self.templates_in(node, scope, &shell);
        for (field, message) in step_kind.validate(&spec) {
            // A JSON Pointer (`/statements/1/sq`) names a place inside a field.
            let top = field
                .trim_start_matches('/')
                .split('/')
                .next()
                .unwrap_or_default();
            if reported.contains(&top) {
                continue;
            }
            if field.starts_with('/') {
                match pointed(node, &field) {
                    Some(Pointed::Key(k)) => self.f.error_at(k, message),
                    Some(Pointed::Node(n)) => self.f.error(n, message),
                    None => self.f.error_at(key, message),
                }
                continue;
            }
            match map.key(&field) {
                Some(k) => self.f.error_at(k, message),
                // A problem of the spec as a whole: point at the action's key.
                None if message.contains(&format!("`{kind}`")) => self.f.error_at(key, message),
                None => self.f.error_at(key, format!("`{kind}` {message}")),
            }
        }
        Some(Action::Effect {
            kind: kind.to_owned(),
            spec,
        })
    }

    /// Checks a field's value against its type; false if a problem was recorded.
    fn field_type(&mut self, name: &str, ty: FieldType, value: &Node) -> bool {
        let templated = value.as_scalar().is_some_and(|s| s.text.contains("{{"));
        if templated {
            return true;
        }
        let json = value.to_json();
        let ok = match ty {
            FieldType::String => {
                matches!(json, Value::String(_) | Value::Number(_) | Value::Bool(_))
            }
            FieldType::Int => json.is_i64() || json.is_u64(),
            FieldType::Bool => json.is_boolean(),
            FieldType::Duration => {
                if value.as_scalar().is_some() {
                    return self.f.duration(value, &format!("`{name}`")).is_some();
                }
                false
            }
            FieldType::List => json.is_array(),
            FieldType::Map => json.is_object(),
            FieldType::Any => true,
            FieldType::Expr => {
                let Some(s) = value.as_scalar().filter(|s| !s.is_null()) else {
                    self.f
                        .error(value, format!("`{name}` must be a Rhai condition"));
                    return false;
                };
                return match crate::script::compile(&s.text) {
                    Ok(_) => true,
                    Err(e) => {
                        let pos = s.pos_at(e.line.unwrap_or(1), e.column.unwrap_or(1));
                        self.f.push(crate::diag::Diagnostic::new(
                            pos,
                            1,
                            format!("invalid Rhai in `{name}`: {}", e.message),
                        ));
                        false
                    }
                };
            }
        };
        if !ok {
            let want = match ty {
                FieldType::String => "a string",
                FieldType::Int => "an integer",
                FieldType::Bool => "true or false",
                FieldType::Duration => "a duration",
                FieldType::List => "a list",
                FieldType::Map => "a mapping",
                FieldType::Any | FieldType::Expr => "a value",
            };
            self.f.error(
                value,
                format!("`{name}` must be {want}, not {}", value.describe()),
            );
        }
        ok
    }

    /// Checks the syntax and references of every template inside a node (keys and values).
    /// `shell` holds the positions of the scalars a POSIX shell will parse.
    pub fn templates_in(&mut self, node: &Node, scope: &Scope, shell: &[Pos]) {
        match node {
            Node::Scalar(s) => self.template_scalar(s, scope, shell.contains(&s.pos)),
            Node::Map(m) => {
                for (k, v) in &m.entries {
                    self.template_scalar(k, scope, false);
                    self.templates_in(v, scope, shell);
                }
            }
            Node::Seq(s) => {
                for item in &s.items {
                    self.templates_in(item, scope, shell);
                }
            }
        }
    }

    fn template_scalar(&mut self, s: &Scalar, scope: &Scope, shell: bool) {
        if !s.text.contains("{{") {
            return;
        }
        if let Err(e) = crate::template::check(&s.text) {
            let pos = s.pos_at(e.line.unwrap_or(1), e.column.unwrap_or(1));
            let message = if e.message.starts_with("invalid template") {
                e.message
            } else {
                format!("invalid template: {}", e.message)
            };
            self.f.push(Diagnostic::new(pos, 2, message));
            return;
        }
        let params = self.param_names.clone();
        self.f
            .check_template_refs(s, &crate::load::refs::Names { params: &params }, scope);
        if shell {
            for e in crate::template::shell_problems(&s.text) {
                let pos = s.pos_at(e.line.unwrap_or(1), e.column.unwrap_or(1));
                self.f.push(Diagnostic::new(pos, 2, e.message));
            }
        }
        let raw = crate::template::RAW_HELPER;
        for used in crate::template::raw_uses(&s.text) {
            let pos = s.pos_at(used.line, used.column);
            let len = raw.chars().count() + 2;
            if !shell {
                self.f.push(
                    Diagnostic::new(
                        pos,
                        len,
                        format!("`{raw}` is only for shell commands, and this is not one"),
                    )
                    .help("nothing is quoted here: write `{{…}}`"),
                );
            } else if let Some(param) = used.params.first() {
                self.f.push(
                    Diagnostic::new(
                        pos,
                        len,
                        format!(
                            "`{raw}` puts `{param}` into a shell command as code: whoever sets the parameter can run any command"
                        ),
                    )
                    .label("not quoted")
                    .help(format!(
                        "write `{{{{{param}}}}}`: values in shell commands are quoted for their place"
                    ))
                    .warning(),
                );
            }
        }
    }

    /// A template string field.
    pub fn template(&mut self, node: &Node, what: &str, scope: &Scope) -> Option<Template> {
        let s = self.f.string(node, what)?;
        let before = self.f.diags.len();
        self.template_scalar(s, scope, false);
        (self.f.diags.len() == before).then(|| Template {
            text: s.text.clone(),
            pos: s.content,
        })
    }

    /// A Rhai expression field, compiled now; errors point into the YAML.
    pub fn expr(&mut self, node: &Node, what: &str, scope: &Scope) -> Option<Expr> {
        let s = match node {
            Node::Scalar(s) if !s.is_null() => s,
            _ => {
                self.f.error(
                    node,
                    format!("{what} must be a Rhai expression, not {}", node.describe()),
                );
                return None;
            }
        };
        self.compile(s, scope)
    }

    fn compile(&mut self, s: &Scalar, scope: &Scope) -> Option<Expr> {
        match crate::script::compile_with_lib(&s.text, self.functions.as_deref()) {
            Ok(ast) => {
                let params = self.param_names.clone();
                self.f
                    .check_expr_refs(s, &crate::load::refs::Names { params: &params }, scope);
                self.check_calls(s, &ast);
                Some(Expr {
                    src: s.text.clone(),
                    refs: crate::refs::in_expression(&s.text),
                    scalar: s.clone(),
                    ast,
                })
            }
            Err(e) => {
                let pos = s.pos_at(e.line.unwrap_or(1), e.column.unwrap_or(1));
                self.f.push(Diagnostic::new(
                    pos,
                    1,
                    format!("invalid Rhai: {}", e.message),
                ));
                None
            }
        }
    }

    /// Every function an expression calls exists: a misspelt name otherwise passes `check` and
    /// fails only when the run reaches it.
    fn check_calls(&mut self, s: &Scalar, ast: &rhai::AST) {
        let known = crate::script::known_functions();
        let own: Vec<String> = ast.iter_functions().map(|f| f.name.to_owned()).collect();
        for call in crate::script::fn_calls(&s.text) {
            if known.contains(&call.name) || own.contains(&call.name) {
                continue;
            }
            // A variable holding a function pointer is called like a function.
            let bound = [format!("let {}", call.name), format!("const {}", call.name)];
            if bound.iter().any(|b| s.text.contains(b.as_str())) {
                continue;
            }
            let what = if call.method { "method" } else { "function" };
            let candidates = known
                .iter()
                .map(String::as_str)
                .chain(own.iter().map(String::as_str));
            let mut d = Diagnostic::new(
                s.pos_at_offset(call.offset),
                call.name.chars().count(),
                format!("unknown {what} `{}`", call.name),
            );
            if let Some(near) = crate::load::suggest(&call.name, candidates) {
                d = d.did_you_mean(near);
            }
            self.f.push(d);
        }
    }

    fn rhai_file(&mut self, file: &Scalar, scope: &Scope) -> Option<Expr> {
        let (text, id) = self.read_relative(file)?;
        let pos = crate::source::Pos {
            file: id,
            line: 1,
            column: 1,
        };
        let scalar = Scalar {
            text,
            pos,
            plain: false,
            content: pos,
            chars: None,
        };
        self.compile(&scalar, scope)
    }
}

/// The positions of the scalars at `pointers` (JSON Pointers into the spec) in `node`. A short
/// form (`shell: "…"`, `shell: [argv…]`) is the value of the spec's field `wrapped`.
fn shell_scalars(pointers: &[String], node: &Node, wrapped: Option<&str>) -> Vec<Pos> {
    pointers
        .iter()
        .filter_map(|pointer| {
            let mut path: Vec<String> = pointer
                .split('/')
                .skip(1)
                .map(|t| t.replace("~1", "/").replace("~0", "~"))
                .collect();
            if let Some(field) = wrapped {
                if path.first().map(String::as_str) != Some(field) {
                    return None;
                }
                path.remove(0);
            }
            let mut current = node;
            for token in &path {
                current = match current {
                    Node::Map(m) => m.get(token)?,
                    Node::Seq(s) => s.items.get(token.parse::<usize>().ok()?)?,
                    Node::Scalar(_) => return None,
                };
            }
            current.as_scalar().map(|s| s.pos)
        })
        .collect()
}

/// What a JSON Pointer from a kind's `validate` names in the spec as written.
enum Pointed<'n> {
    /// A mapping's key (the pointer's last step names it).
    Key(&'n Scalar),
    /// A list's item, or the value at the pointer.
    Node(&'n Node),
}

/// The key or item `pointer` (`/statements/1/sq`) names inside `node`, if it is there: a
/// mapping's key when the pointer ends at one, so the caret is under the key.
fn pointed<'n>(node: &'n Node, pointer: &str) -> Option<Pointed<'n>> {
    let steps: Vec<String> = pointer
        .split('/')
        .skip(1)
        // JSON Pointer escapes: `~1` is `/`, `~0` is `~`.
        .map(|s| s.replace("~1", "/").replace("~0", "~"))
        .collect();
    let mut current = node;
    for (i, step) in steps.iter().enumerate() {
        let last = i + 1 == steps.len();
        current = match current {
            Node::Map(m) if last => return m.key(step).map(Pointed::Key),
            Node::Map(m) => m.get(step)?,
            Node::Seq(s) => s.items.get(step.parse::<usize>().ok()?)?,
            Node::Scalar(_) => return None,
        };
    }
    Some(Pointed::Node(current))
}
