//! `{name}` templates of the agent's config (a member's command, log file, environment and
//! readiness URL).
//!
//! Contract: `{name}` (a letter or `_`, then letters, digits, `_`) is replaced by the variable
//! `name`; `{{` and `}}` are a literal `{` and `}`; any other `{` is an error when the config is
//! loaded, so a shell's `${VAR}` must be written `${{VAR}}`. Which names exist is checked when
//! the config is loaded ([`Template::vars`]); rendering a template with a variable that has no
//! value for a given pod (an ordinal for a pod that has none) is an error for that pod only.

use std::fmt;

/// A parsed template.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Template {
    source: String,
    parts: Vec<Part>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
enum Part {
    Text(String),
    Var(String),
}

/// Why a template does not parse.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("template `{text}`: {problem} at byte {at} (write {{{{ and }}}} for literal braces)")]
pub struct ParseError {
    text: String,
    problem: &'static str,
    at: usize,
}

/// A variable a template uses has no value for this pod.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("template `{template}` uses {{{var}}}, which has no value for this pod")]
pub struct MissingVar {
    /// The template's source.
    pub template: String,
    /// The variable.
    pub var: String,
}

impl Template {
    /// Parses `source`.
    pub fn parse(source: &str) -> Result<Self, ParseError> {
        let fail = |problem, at| ParseError {
            text: source.to_owned(),
            problem,
            at,
        };
        let mut parts = Vec::new();
        let mut text = String::new();
        let mut chars = source.char_indices().peekable();
        while let Some((i, c)) = chars.next() {
            match c {
                '{' if chars.peek().is_some_and(|(_, n)| *n == '{') => {
                    chars.next();
                    text.push('{');
                }
                '}' if chars.peek().is_some_and(|(_, n)| *n == '}') => {
                    chars.next();
                    text.push('}');
                }
                '{' => {
                    let mut name = String::new();
                    loop {
                        match chars.next() {
                            Some((_, '}')) => break,
                            Some((_, c)) if c == '_' || c.is_ascii_alphanumeric() => name.push(c),
                            Some((j, _)) => {
                                return Err(fail(
                                    "a variable name has only letters, digits and _",
                                    j,
                                ));
                            }
                            None => return Err(fail("unclosed {", i)),
                        }
                    }
                    if name.is_empty() || name.starts_with(|c: char| c.is_ascii_digit()) {
                        return Err(fail("a variable name starts with a letter or _", i));
                    }
                    if !text.is_empty() {
                        parts.push(Part::Text(std::mem::take(&mut text)));
                    }
                    parts.push(Part::Var(name));
                }
                c => text.push(c),
            }
        }
        if !text.is_empty() {
            parts.push(Part::Text(text));
        }
        Ok(Self {
            source: source.to_owned(),
            parts,
        })
    }

    /// The variables it uses, in order of appearance.
    pub fn vars(&self) -> impl Iterator<Item = &str> {
        self.parts.iter().filter_map(|p| match p {
            Part::Var(v) => Some(v.as_str()),
            Part::Text(_) => None,
        })
    }

    /// Renders with `lookup` giving each variable's value.
    pub fn render(&self, lookup: impl Fn(&str) -> Option<String>) -> Result<String, MissingVar> {
        let mut out = String::new();
        for part in &self.parts {
            match part {
                Part::Text(t) => out.push_str(t),
                Part::Var(v) => out.push_str(&lookup(v).ok_or_else(|| MissingVar {
                    template: self.source.clone(),
                    var: v.clone(),
                })?),
            }
        }
        Ok(out)
    }
}

impl fmt::Display for Template {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.source)
    }
}

impl TryFrom<String> for Template {
    type Error = ParseError;
    fn try_from(source: String) -> Result<Self, Self::Error> {
        Self::parse(&source)
    }
}

impl<'de> serde::Deserialize<'de> for Template {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        Self::parse(&s).map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn render(t: &str, vars: &[(&str, &str)]) -> Result<String, MissingVar> {
        Template::parse(t).expect("parses").render(|k| {
            vars.iter()
                .find(|(name, _)| *name == k)
                .map(|(_, v)| (*v).to_owned())
        })
    }

    #[test]
    fn variables_are_replaced_and_doubled_braces_are_literal() {
        assert_eq!(
            render(
                "echo {tag} > {dir}/node-{n1}.version; exec bash {dir}/node-{n1}.cmd",
                &[("tag", "2.7.2"), ("dir", "/tmp/c"), ("n1", "3")]
            )
            .expect("renders"),
            "echo 2.7.2 > /tmp/c/node-3.version; exec bash /tmp/c/node-3.cmd"
        );
        assert_eq!(
            render("echo ${{HOME}} {{x}} {a_1}", &[("a_1", "v")]).expect("renders"),
            "echo ${HOME} {x} v"
        );
    }

    #[test]
    fn vars_lists_every_use() {
        let t = Template::parse("{addr}{probe_path} {addr}").expect("parses");
        assert_eq!(t.vars().collect::<Vec<_>>(), ["addr", "probe_path", "addr"]);
    }

    #[test]
    fn a_variable_without_a_value_names_it() {
        assert_eq!(
            render("node-{n1}", &[]).expect_err("missing").to_string(),
            "template `node-{n1}` uses {n1}, which has no value for this pod"
        );
    }

    #[test]
    fn a_shell_brace_that_is_not_a_variable_is_refused_with_the_fix() {
        let e = Template::parse("echo ${HOME:-/}").expect_err("refused");
        assert_eq!(
            e.to_string(),
            "template `echo ${HOME:-/}`: a variable name has only letters, digits and _ at byte 11 (write {{ and }} for literal braces)"
        );
        assert!(Template::parse("x {").is_err());
        assert!(Template::parse("{}").is_err());
        assert!(Template::parse("{1a}").is_err());
    }
}
