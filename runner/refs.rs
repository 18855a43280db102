//! Which earlier steps' outputs an expression or a template reads.
//!
//! An evaluation sees `steps.<id>.output` of every step before it; handing it all of them
//! would cost time in proportion to everything the run has produced so far, on every
//! evaluation (a run of 10,000 steps would be quadratic). So the evaluation gets only the
//! entries its text names — `steps.id`, `steps["id"]`, `steps?.id` — and all of them only when
//! it uses `steps` any other way (`steps[name]`, `for s in steps`, `lookup steps x`). Rhai
//! functions cannot see the run's variables, so an expression's text is all it can read;
//! a template reads only what its mustaches name.

use std::collections::BTreeSet;

/// The steps an expression or template reads: `None` means it may read any of them.
pub type StepRefs = Option<BTreeSet<String>>;

/// The steps a Rhai expression reads (identifiers cannot contain `-` there).
pub fn in_expression(src: &str) -> StepRefs {
    scan(src, |c| c.is_ascii_alphanumeric() || c == '_')
}

/// The steps a Handlebars template reads: inside its mustaches only.
pub fn in_template(text: &str) -> StepRefs {
    let mut out = BTreeSet::new();
    let mut rest = text;
    while let Some(open) = rest.find("{{") {
        let inner = &rest[open + 2..];
        let Some(close) = inner.find("}}") else {
            // An unclosed mustache does not render anyway; be safe.
            return None;
        };
        out.extend(scan(&inner[..close], |c| {
            !c.is_whitespace() && !matches!(c, '.' | '}' | ')' | '(' | '[' | ']' | '/' | '"' | '=')
        })?);
        rest = &inner[close + 2..];
    }
    Some(out)
}

/// The steps a JSON tree of templates reads.
pub fn in_templates(value: &serde_json::Value) -> StepRefs {
    let mut out = BTreeSet::new();
    let mut stack = vec![value];
    while let Some(v) = stack.pop() {
        match v {
            serde_json::Value::String(s) if s.contains("{{") => out.extend(in_template(s)?),
            serde_json::Value::Array(items) => stack.extend(items),
            serde_json::Value::Object(map) => stack.extend(map.values()),
            _ => {}
        }
    }
    Some(out)
}

/// Both sets together (`None` wins).
pub fn union(a: StepRefs, b: StepRefs) -> StepRefs {
    let mut a = a?;
    a.extend(b?);
    Some(a)
}

/// Every use of the word `steps` in `src` followed by a fixed name; `None` if any use is not.
fn scan(src: &str, id_char: impl Fn(char) -> bool) -> StepRefs {
    uses(src, "steps", id_char).collect()
}

/// The parameters named as `params.NAME`, `params?.NAME` or `params["NAME"]` anywhere in a
/// runbook's text (expressions, templates, or the words around them). Other uses of `params`
/// (the `params:` key, `params[name]`) name none.
pub fn params_named(src: &str) -> BTreeSet<String> {
    let template = |c: char| {
        !c.is_whitespace() && !matches!(c, '.' | '}' | ')' | '(' | '[' | ']' | '/' | '"' | '=')
    };
    // An expression's name stops at `-`, a template's does not: both readings count.
    uses(src, "params", |c| c.is_ascii_alphanumeric() || c == '_')
        .chain(uses(src, "params", template))
        .flatten()
        .collect()
}

/// Each use of the word `word` in `src`: the fixed name after it, or `None` where there is none.
fn uses<'a>(
    src: &'a str,
    word: &'a str,
    id_char: impl Fn(char) -> bool + 'a,
) -> impl Iterator<Item = Option<String>> + 'a {
    let bytes = src.as_bytes();
    let mut from = 0;
    std::iter::from_fn(move || {
        loop {
            let at = src[from..].find(word).map(|i| i + from)?;
            from = at + word.len();
            let word_char = |i: usize| {
                src[i..]
                    .chars()
                    .next()
                    .is_some_and(|c| c.is_ascii_alphanumeric() || c == '_')
            };
            // A byte before that is not ASCII belongs to a wider character, which is not a
            // word character here (and not a place to slice at).
            if (at > 0 && bytes[at - 1].is_ascii() && word_char(at - 1)) || word_char(from) {
                // Part of another word (`my_steps`, `stepsize`).
                continue;
            }
            return Some(name_after(&src[from..], &id_char));
        }
    })
}

/// The fixed name a use continues with: `.name`, `?.name` or `["name"]`.
fn name_after(after: &str, id_char: impl Fn(char) -> bool) -> Option<String> {
    let after = after.trim_start();
    if let Some(rest) = after.strip_prefix("?.").or_else(|| after.strip_prefix('.')) {
        let rest = rest.trim_start();
        let len = rest
            .chars()
            .take_while(|c| id_char(*c))
            .map(char::len_utf8)
            .sum();
        (len > 0).then(|| rest[..len].to_owned())
    } else if let Some(rest) = after.strip_prefix('[') {
        let rest = rest.trim_start();
        rest.strip_prefix('"')
            .and_then(|r| r.split_once('"'))
            .filter(|(_, tail)| tail.trim_start().starts_with(']'))
            .map(|(name, _)| name.to_owned())
    } else {
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(names: &[&str]) -> BTreeSet<String> {
        names.iter().map(|s| (*s).to_owned()).collect()
    }

    #[test]
    fn expressions_name_the_steps_they_read() {
        for (src, refs) in [
            ("1 + 1", Some(names(&[]))),
            (
                "steps.a.output.x > 2 && steps.b.status == \"ok\"",
                Some(names(&["a", "b"])),
            ),
            ("steps[\"c\"].output", Some(names(&["c"]))),
            ("steps ?. d", Some(names(&["d"]))),
            ("my_steps.e + stepsize", Some(names(&[]))),
            ("steps.a-b", Some(names(&["a"]))),
            ("steps[name].output", None),
            ("for s in steps { }", None),
            ("to_json(steps)", None),
        ] {
            assert_eq!(in_expression(src), refs, "{src}");
        }
    }

    #[test]
    fn templates_name_the_steps_their_mustaches_read() {
        for (text, refs) in [
            ("echo 3 steps", Some(names(&[]))),
            (
                "{{steps.use-line.output}} and {{sh steps.b.output.json.x}}",
                Some(names(&["use-line", "b"])),
            ),
            (
                "{{#each steps.items.output}}{{this}}{{/each}}",
                Some(names(&["items"])),
            ),
            ("{{lookup steps name}}", None),
            ("{{json steps}}", None),
            ("{{steps.a.output", None),
        ] {
            assert_eq!(in_template(text), refs, "{text}");
        }
        let spec = serde_json::json!({"args": ["x", "{{steps.a.output}}"], "env": {"K": "{{steps.b.output}}"}});
        assert_eq!(in_templates(&spec), Some(names(&["a", "b"])));
        assert_eq!(union(Some(names(&["a"])), None), None);
    }

    #[test]
    fn a_runbook_text_names_the_params_it_reads() {
        let text = "params:\n  token: { secret: true }\n  db-pass: string\n# … params\nsteps:\n  \
                    - shell: { run: \"echo {{params.db-pass}} {{sh params.token}}\" }\n  \
                    - when: 'params?.flag && params[\"other\"] != my_params.no'\n";
        assert_eq!(
            params_named(text),
            names(&["db", "db-pass", "flag", "other", "token"])
        );
    }
}
