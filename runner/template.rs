//! Handlebars string templates: every string field of a step is rendered over the run context
//! (`params`, `steps.<id>.output`, the loop variable, `run`).
//!
//! One registry serves the whole process. Strict mode is on, so a variable that does not exist is
//! an error rather than an empty string; HTML escaping is off. Templates are compiled once and
//! cached by their text.
//!
//! Helpers, besides Handlebars' built-ins (`if`, `unless`, `each`, `with`, `lookup`, `eq`, `ne`,
//! `gt`, `gte`, `lt`, `lte`, `and`, `or`, `not`, `len`, `log`, `raw`):
//!
//! | helper | result |
//! |---|---|
//! | `{{sh x}}` | `x` quoted for a POSIX shell; an array becomes its quoted items joined by spaces |
//! | `{{json x}}` | `x` as compact JSON |
//! | `{{trim x}}`, `{{lower x}}`, `{{upper x}}` | string functions |
//! | `{{b64 x}}` | base64 (standard alphabet) of the string |
//! | `{{default x "fallback"}}` | `x`, or the fallback when `x` is missing or null |
//!
//! In strict mode Handlebars passes a missing helper argument to the helper as "missing" instead
//! of failing, so `default` works on unknown variables; `{{#if x}}` treats a missing `x` as false.
//! All other helpers here fail on a missing argument with the same "unknown variable" error as a
//! plain `{{x}}`.
//!
//! [`render_value`] renders a whole JSON tree; a string that is exactly one mustache over a path
//! (`"{{ordinal}}"`) keeps the type of the value it names.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, OnceLock};

use base64::Engine as _;
use handlebars::template::{HelperTemplate, Parameter, Template, TemplateElement};
use handlebars::{
    Context, Handlebars, Helper, HelperDef, Path, PathSeg, RenderContext, RenderError,
    RenderErrorReason, Renderable, ScopedJson, StringOutput,
};
use serde_json::Value;

/// The compile cache is cleared when it grows beyond this many entries.
const CACHE_LIMIT: usize = 10_000;

/// Handlebars' built-in helpers and ours: a name-only mustache with one of these names is a
/// helper call, not a variable.
const HELPERS: &[&str] = &[
    "if", "unless", "each", "with", "lookup", "raw", "log", "eq", "ne", "gt", "gte", "lt", "lte",
    "and", "or", "not", "len", "sh", "json", "trim", "b64", "default", "lower", "upper",
];

/// A template that failed to compile or to render.
///
/// `line` and `column` are 1-based and relative to the template text; the caller adds the
/// position of the template in its file.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct TemplateError {
    pub message: String,
    pub line: Option<usize>,
    pub column: Option<usize>,
}

impl TemplateError {
    fn new(message: impl Into<String>) -> Self {
        TemplateError {
            message: message.into(),
            line: None,
            column: None,
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Registry and helpers

fn registry() -> &'static Handlebars<'static> {
    static REGISTRY: OnceLock<Handlebars<'static>> = OnceLock::new();
    REGISTRY.get_or_init(|| {
        let mut hb = Handlebars::new();
        hb.set_strict_mode(true);
        hb.register_escape_fn(handlebars::no_escape);
        hb.register_helper("sh", Box::new(ValueHelper { name: "sh", f: sh }));
        hb.register_helper(
            "json",
            Box::new(ValueHelper {
                name: "json",
                f: json,
            }),
        );
        hb.register_helper(
            "trim",
            Box::new(ValueHelper {
                name: "trim",
                f: trim,
            }),
        );
        hb.register_helper(
            "b64",
            Box::new(ValueHelper {
                name: "b64",
                f: b64,
            }),
        );
        hb.register_helper(
            "lower",
            Box::new(ValueHelper {
                name: "lower",
                f: lower,
            }),
        );
        hb.register_helper(
            "upper",
            Box::new(ValueHelper {
                name: "upper",
                f: upper,
            }),
        );
        hb.register_helper("default", Box::new(DefaultHelper));
        hb
    })
}

/// A helper of exactly one argument that maps a value to a value.
struct ValueHelper {
    name: &'static str,
    f: fn(&Value) -> Result<Value, String>,
}

/// The helper's `index`th argument; a missing one is the strict-mode "unknown variable" error.
fn argument<'a>(h: &'a Helper<'_>, name: &str, index: usize) -> Result<&'a Value, RenderError> {
    match h.param(index) {
        None => Err(
            RenderErrorReason::Other(format!("`{name}` needs {} argument(s)", index + 1)).into(),
        ),
        Some(p) if p.is_value_missing() => Err(RenderError::strict_error(p.relative_path())),
        Some(p) => Ok(p.value()),
    }
}

impl HelperDef for ValueHelper {
    fn call_inner<'reg: 'rc, 'rc>(
        &self,
        h: &Helper<'rc>,
        _: &'reg Handlebars<'reg>,
        _: &'rc Context,
        _: &mut RenderContext<'reg, 'rc>,
    ) -> Result<ScopedJson<'rc>, RenderError> {
        if h.params().len() != 1 {
            return Err(RenderErrorReason::Other(format!(
                "`{}` takes one argument, got {}",
                self.name,
                h.params().len()
            ))
            .into());
        }
        let value = argument(h, self.name, 0)?;
        (self.f)(value)
            .map(ScopedJson::Derived)
            .map_err(|e| RenderErrorReason::Other(format!("`{}`: {e}", self.name)).into())
    }
}

/// `{{default x fallback}}`: `x` unless it is missing or null.
struct DefaultHelper;

impl HelperDef for DefaultHelper {
    fn call_inner<'reg: 'rc, 'rc>(
        &self,
        h: &Helper<'rc>,
        _: &'reg Handlebars<'reg>,
        _: &'rc Context,
        _: &mut RenderContext<'reg, 'rc>,
    ) -> Result<ScopedJson<'rc>, RenderError> {
        if h.params().len() != 2 {
            return Err(RenderErrorReason::Other(format!(
                "`default` takes two arguments (a value and its fallback), got {}",
                h.params().len()
            ))
            .into());
        }
        let value = h
            .param(0)
            .filter(|p| !p.is_value_missing())
            .map(handlebars::PathAndJson::value);
        match value {
            Some(v) if !v.is_null() => Ok(ScopedJson::Derived(v.clone())),
            _ => Ok(ScopedJson::Derived(argument(h, "default", 1)?.clone())),
        }
    }
}

/// A scalar as text (strings as they are); arrays and objects are refused.
fn scalar_text(v: &Value) -> Result<String, String> {
    match v {
        Value::String(s) => Ok(s.clone()),
        Value::Null => Ok(String::new()),
        Value::Bool(_) | Value::Number(_) => Ok(v.to_string()),
        Value::Array(_) => Err("expected a string, got a list".to_owned()),
        Value::Object(_) => Err("expected a string, got an object".to_owned()),
    }
}

fn sh(v: &Value) -> Result<Value, String> {
    let quoted = match v {
        Value::Array(items) => {
            let words = items
                .iter()
                .map(|item| match item {
                    Value::Array(_) | Value::Object(_) => {
                        Err("list items must be strings, numbers or booleans".to_owned())
                    }
                    other => scalar_text(other),
                })
                .collect::<Result<Vec<_>, _>>()?;
            shell_words::join(words)
        }
        Value::Object(_) => {
            return Err("cannot quote an object; render it with `json` first".to_owned());
        }
        other => shell_words::quote(&scalar_text(other)?).into_owned(),
    };
    Ok(Value::String(quoted))
}

#[allow(clippy::unnecessary_wraps)] // the signature of every `ValueHelper`
fn json(v: &Value) -> Result<Value, String> {
    Ok(Value::String(v.to_string()))
}

fn trim(v: &Value) -> Result<Value, String> {
    Ok(Value::String(scalar_text(v)?.trim().to_owned()))
}

fn b64(v: &Value) -> Result<Value, String> {
    Ok(Value::String(
        base64::engine::general_purpose::STANDARD.encode(scalar_text(v)?),
    ))
}

fn lower(v: &Value) -> Result<Value, String> {
    Ok(Value::String(scalar_text(v)?.to_lowercase()))
}

fn upper(v: &Value) -> Result<Value, String> {
    Ok(Value::String(scalar_text(v)?.to_uppercase()))
}

// ---------------------------------------------------------------------------------------------
// Compiling

fn compiled(tpl: &str) -> Result<Arc<Template>, TemplateError> {
    static CACHE: OnceLock<Mutex<HashMap<String, Arc<Template>>>> = OnceLock::new();
    let cache = CACHE.get_or_init(|| Mutex::new(HashMap::new()));
    if let Some(t) = cache
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
        .get(tpl)
    {
        return Ok(Arc::clone(t));
    }
    let template = Template::compile(tpl).map_err(|e| syntax_error(&e, tpl))?;
    let mut cache = cache
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    if cache.len() >= CACHE_LIMIT {
        cache.clear();
    }
    Ok(Arc::clone(
        cache
            .entry(tpl.to_owned())
            .or_insert_with(|| Arc::new(template)),
    ))
}

fn syntax_error(e: &handlebars::TemplateError, tpl: &str) -> TemplateError {
    let message = match e.reason() {
        handlebars::TemplateErrorReason::InvalidSyntax(_) if e.pos() == Some(end_position(tpl)) => {
            "invalid template syntax: the template ends inside a `{{ … }}` or an open block"
                .to_owned()
        }
        handlebars::TemplateErrorReason::InvalidSyntax(_) => "invalid template syntax".to_owned(),
        handlebars::TemplateErrorReason::MismatchingClosedHelper(open, close) => {
            format!("block `{{{{#{open}}}}}` is closed by `{{{{/{close}}}}}`")
        }
        other => format!("invalid template: {}", lower_first(&other.to_string())),
    };
    let (line, column) = e.pos().unzip();
    TemplateError {
        message,
        line,
        column,
    }
}

/// The 1-based line and column just past the end of `tpl`, as the template parser counts them.
fn end_position(tpl: &str) -> (usize, usize) {
    let line = tpl.matches('\n').count() + 1;
    let last = tpl.rsplit('\n').next().unwrap_or("");
    (line, last.chars().count() + 1)
}

/// Checks a template's syntax without rendering it.
pub fn check(tpl: &str) -> Result<(), TemplateError> {
    if tpl.contains("{{") {
        compiled(tpl)?;
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// Rendering

/// Renders a template over `ctx`. A string without `{{` is returned as it is.
pub fn render_str(tpl: &str, ctx: &Value) -> Result<String, TemplateError> {
    if !tpl.contains("{{") {
        return Ok(tpl.to_owned());
    }
    let template = compiled(tpl)?;
    render_compiled(&template, &Context::from(ctx.clone()))
}

fn render_compiled(template: &Template, ctx: &Context) -> Result<String, TemplateError> {
    let hb = registry();
    let mut rc = RenderContext::new(None);
    let mut out = StringOutput::new();
    template
        .render(hb, ctx, &mut rc, &mut out)
        .map_err(|e| render_error(&e))?;
    out.into_string()
        .map_err(|_| TemplateError::new("template rendered to invalid UTF-8"))
}

fn render_error(e: &RenderError) -> TemplateError {
    let message = match e.reason() {
        RenderErrorReason::MissingVariable(Some(path)) => {
            format!("unknown variable `{}`", display_path(path))
        }
        RenderErrorReason::MissingVariable(None) => {
            "a helper produced no value (an unknown variable or key?)".to_owned()
        }
        RenderErrorReason::HelperNotFound(name) => format!("unknown helper `{name}`"),
        RenderErrorReason::PartialNotFound(name) => {
            format!("unknown partial `{name}` (partials are not supported)")
        }
        RenderErrorReason::ParamNotFoundForIndex(helper, index) => format!(
            "`{helper}` needs argument {}, which is missing or an unknown variable",
            index + 1
        ),
        RenderErrorReason::InvalidJsonIndex(index) => {
            format!("cannot index a list with `{index}`")
        }
        RenderErrorReason::ParamNotFoundForName(helper, name) => {
            format!("`{helper}` needs its `{name}` argument")
        }
        RenderErrorReason::TemplateError(t) => return syntax_error(t, ""),
        RenderErrorReason::Other(msg) => msg.clone(),
        other => lower_first(&other.to_string()),
    };
    TemplateError {
        message,
        line: e.line_no,
        column: e.column_no,
    }
}

/// Handlebars reports paths as written in the template; show `a/b` as `a.b`.
fn display_path(path: &str) -> String {
    path.replace('/', ".")
}

/// Lowercases the first character unless it starts an acronym.
fn lower_first(s: &str) -> String {
    let mut chars = s.chars();
    match (chars.next(), chars.next()) {
        (Some(first), second) if !second.is_some_and(char::is_uppercase) => first
            .to_lowercase()
            .chain(s[first.len_utf8()..].chars())
            .collect(),
        _ => s.to_owned(),
    }
}

/// Renders every string in a JSON tree over `ctx`, object keys included.
///
/// A string that is exactly one mustache over a plain path (`"{{ordinal}}"`,
/// `"{{ steps.sts.output.spec.replicas }}"`) becomes the value at that path with its JSON type
/// (a number stays a number, an object an object, null stays null); anything else renders to a
/// string.
pub fn render_value(v: &Value, ctx: &Value) -> Result<Value, TemplateError> {
    let mut hb_ctx = None;
    render_value_in(v, ctx, &mut hb_ctx)
}

fn render_value_in(
    v: &Value,
    ctx: &Value,
    hb_ctx: &mut Option<Context>,
) -> Result<Value, TemplateError> {
    match v {
        Value::String(s) if s.contains("{{") => {
            let template = compiled(s)?;
            if let Some(value) = typed_lookup(&template, ctx) {
                return Ok(value.clone());
            }
            let hb_ctx = hb_ctx.get_or_insert_with(|| Context::from(ctx.clone()));
            render_compiled(&template, hb_ctx).map(Value::String)
        }
        Value::Array(items) => items
            .iter()
            .map(|item| render_value_in(item, ctx, hb_ctx))
            .collect::<Result<_, _>>()
            .map(Value::Array),
        Value::Object(entries) => {
            let mut out = serde_json::Map::with_capacity(entries.len());
            for (key, value) in entries {
                let rendered_key = if key.contains("{{") {
                    let template = compiled(key)?;
                    let hb_ctx = hb_ctx.get_or_insert_with(|| Context::from(ctx.clone()));
                    render_compiled(&template, hb_ctx)?
                } else {
                    key.clone()
                };
                let rendered = render_value_in(value, ctx, hb_ctx)?;
                if out.insert(rendered_key.clone(), rendered).is_some() {
                    return Err(TemplateError::new(format!(
                        "two keys of the same object render to `{rendered_key}`"
                    )));
                }
            }
            Ok(Value::Object(out))
        }
        other => Ok(other.clone()),
    }
}

/// The value named by a template that is one plain-path mustache and nothing else, if it exists.
/// `None` when the template is anything else or the path does not resolve (rendering it then
/// gives Handlebars' own result or error).
fn typed_lookup<'v>(template: &Template, ctx: &'v Value) -> Option<&'v Value> {
    let [TemplateElement::Expression(ht) | TemplateElement::HtmlExpression(ht)] =
        template.elements.as_slice()
    else {
        return None;
    };
    if ht.block || !ht.params.is_empty() || !ht.hash.is_empty() {
        return None;
    }
    let Parameter::Path(Path::Relative((segs, raw))) = &ht.name else {
        return None;
    };
    if segs.is_empty() || HELPERS.contains(&raw.as_str()) {
        return None;
    }
    let mut current = ctx;
    for seg in segs {
        let PathSeg::Named(name) = seg else {
            return None;
        };
        current = match current {
            Value::Object(map) => map.get(name)?,
            Value::Array(items) => items.get(name.parse::<usize>().ok()?)?,
            _ => return None,
        };
    }
    Some(current)
}

// ---------------------------------------------------------------------------------------------
// References

/// The variable paths a template reads from the context (`params.release`,
/// `steps.sts.output.spec.replicas`, `ordinal`), helper arguments included, in order of first
/// use, without duplicates. Paths relative to an `each`/`with` block's own context, block
/// parameters and `@index`-style locals are left out; `@root.x` and `../x` that reach the top
/// are included as `x`. A template that does not compile has no references (see [`check`]).
pub fn refs(tpl: &str) -> Vec<String> {
    let mut out = Vec::new();
    if tpl.contains("{{") {
        if let Ok(template) = compiled(tpl) {
            refs_in_template(&template, &Scopes::default(), &mut out);
        }
    }
    out
}

/// Where a path is evaluated: how many context-changing blocks deep, and the block parameters
/// in force.
#[derive(Default, Clone)]
struct Scopes {
    depth: usize,
    block_params: Vec<String>,
}

fn refs_in_template(t: &Template, scopes: &Scopes, out: &mut Vec<String>) {
    for element in &t.elements {
        match element {
            TemplateElement::Expression(ht) | TemplateElement::HtmlExpression(ht) => {
                refs_in_expression(ht, scopes, out);
            }
            TemplateElement::HelperBlock(ht) => {
                refs_in_expression(ht, scopes, out);
                let mut inner = scopes.clone();
                if matches!(ht.name.as_name(), Some("each" | "with")) {
                    inner.depth += 1;
                }
                if let Some(bp) = &ht.block_param {
                    inner.block_params.extend(block_param_names(bp));
                }
                if let Some(t) = &ht.template {
                    refs_in_template(t, &inner, out);
                }
                if let Some(t) = &ht.inverse {
                    refs_in_template(t, scopes, out);
                }
            }
            TemplateElement::DecoratorExpression(dt)
            | TemplateElement::DecoratorBlock(dt)
            | TemplateElement::PartialExpression(dt)
            | TemplateElement::PartialBlock(dt) => {
                for p in dt.params.iter().chain(dt.hash.values()) {
                    refs_in_param(p, scopes, out);
                }
                if let Some(t) = &dt.template {
                    refs_in_template(t, scopes, out);
                }
            }
            _ => {}
        }
    }
}

fn block_param_names(bp: &handlebars::template::BlockParam) -> Vec<String> {
    match bp {
        handlebars::template::BlockParam::Single(p) => {
            p.as_name().into_iter().map(str::to_owned).collect()
        }
        handlebars::template::BlockParam::Pair((a, b)) => [a, b]
            .iter()
            .filter_map(|p| p.as_name().map(str::to_owned))
            .collect(),
        _ => Vec::new(),
    }
}

fn refs_in_expression(ht: &HelperTemplate, scopes: &Scopes, out: &mut Vec<String>) {
    let name_is_helper = match &ht.name {
        Parameter::Name(_) => true,
        Parameter::Path(Path::Relative((_, raw))) => HELPERS.contains(&raw.as_str()),
        _ => false,
    };
    if !name_is_helper {
        refs_in_param(&ht.name, scopes, out);
    }
    for p in ht.params.iter().chain(ht.hash.values()) {
        refs_in_param(p, scopes, out);
    }
}

fn refs_in_param(p: &Parameter, scopes: &Scopes, out: &mut Vec<String>) {
    match p {
        Parameter::Path(Path::Relative((segs, _))) => {
            if let Some(path) = top_level_path(segs, scopes) {
                if !out.contains(&path) {
                    out.push(path);
                }
            }
        }
        Parameter::Subexpression(sub) => match sub.element.as_ref() {
            TemplateElement::Expression(ht) | TemplateElement::HtmlExpression(ht) => {
                refs_in_expression(ht, scopes, out);
            }
            _ => {}
        },
        _ => {}
    }
}

/// The dotted path from the top-level context a path names, if it names one.
fn top_level_path(segs: &[PathSeg], scopes: &Scopes) -> Option<String> {
    // `Rule` (of `PathSeg::Ruled`) is not exported; its Debug name identifies it.
    let mut ups = 0;
    let mut from_root = false;
    let mut names = Vec::new();
    for seg in segs {
        match seg {
            PathSeg::Named(name) => names.push(name.as_str()),
            PathSeg::Ruled(rule) => match format!("{rule:?}").as_str() {
                "path_up" => ups += 1,
                "path_root" => from_root = true,
                _ => return None, // @local
            },
            #[allow(unreachable_patterns)]
            _ => return None,
        }
    }
    let first = names.first()?;
    if !from_root {
        if ups < scopes.depth {
            return None;
        }
        if ups == 0 && scopes.block_params.iter().any(|b| b == first) {
            return None;
        }
    }
    Some(names.join("."))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn ctx() -> Value {
        json!({
            "params": {"name": "it's", "release": "openbao", "n": 2, "list": ["a b", "c'd", 3],
                       "flag": true, "nothing": null, "html": "<&>", "pad": "  x  "},
            "steps": {"sts": {"output": {"spec": {"replicas": 3}}},
                      "step-down": {"output": {"ok": true}}},
            "ordinal": 2,
            "items": [{"name": "x"}, {"name": "y"}],
        })
    }

    fn render(tpl: &str) -> Result<String, TemplateError> {
        render_str(tpl, &ctx())
    }

    #[test]
    fn plain_passthrough() {
        assert_eq!(
            render("no mustache { here }").unwrap(),
            "no mustache { here }"
        );
        assert_eq!(
            render_value(&json!("plain"), &ctx()).unwrap(),
            json!("plain")
        );
        assert_eq!(
            render("{{params.release}}-{{ordinal}}").unwrap(),
            "openbao-2"
        );
    }

    #[test]
    fn strict_unknown_variable() {
        let err = render("x {{params.nme}}").unwrap_err();
        assert_eq!(err.message, "unknown variable `params.nme`");
        assert_eq!(err.to_string(), "unknown variable `params.nme`");
        assert_eq!((err.line, err.column), (Some(1), Some(3)));
        let err = render("a\n  {{steps.nope.output}}").unwrap_err();
        assert_eq!(err.message, "unknown variable `steps.nope.output`");
        assert_eq!((err.line, err.column), (Some(2), Some(3)));
        // Helpers fail the same way on an unknown argument.
        let err = render("{{sh params.nme}}").unwrap_err();
        assert_eq!(err.message, "unknown variable `params.nme`");
        // A null value is not missing: it renders empty.
        assert_eq!(render("[{{params.nothing}}]").unwrap(), "[]");
    }

    #[test]
    fn no_html_escaping() {
        assert_eq!(render("{{params.html}}").unwrap(), "<&>");
        assert_eq!(render("{{{params.html}}}").unwrap(), "<&>");
    }

    #[test]
    fn sh_quoting() {
        assert_eq!(
            render("echo {{sh params.name}}").unwrap(),
            r"echo 'it'\''s'"
        );
        assert_eq!(render("{{sh params.release}}").unwrap(), "openbao");
        assert_eq!(render("{{sh params.list}}").unwrap(), r"'a b' 'c'\''d' 3");
        assert_eq!(
            render("{{sh params.n}} {{sh params.flag}}").unwrap(),
            "2 true"
        );
        assert_eq!(render("{{sh \"\"}}").unwrap(), "''");
        let err = render("{{sh steps.sts}}").unwrap_err();
        assert!(
            err.message.starts_with("`sh`: cannot quote an object"),
            "{err}"
        );
        // The quoting survives a shell round trip.
        let words = shell_words::split(&render("{{sh params.list}}").unwrap()).unwrap();
        assert_eq!(words, vec!["a b", "c'd", "3"]);
    }

    #[test]
    fn other_helpers() {
        assert_eq!(
            render("{{json params.list}}").unwrap(),
            r#"["a b","c'd",3]"#
        );
        assert_eq!(
            render("{{json steps.sts.output}}").unwrap(),
            r#"{"spec":{"replicas":3}}"#
        );
        assert_eq!(render("[{{trim params.pad}}]").unwrap(), "[x]");
        assert_eq!(render("{{b64 params.release}}").unwrap(), "b3BlbmJhbw==");
        assert_eq!(
            render("{{upper params.release}} {{lower \"AbC\"}}").unwrap(),
            "OPENBAO abc"
        );
        assert_eq!(render("{{upper (trim params.pad)}}").unwrap(), "X");
        assert_eq!(render("{{len params.list}}").unwrap(), "3");
        assert_eq!(render("{{#if (eq params.n 2)}}two{{/if}}").unwrap(), "two");
    }

    #[test]
    fn default_helper_and_strict_mode() {
        // Strict mode hands a missing argument to the helper, so `default` works.
        assert_eq!(
            render("{{default params.x \"fallback\"}}").unwrap(),
            "fallback"
        );
        assert_eq!(render("{{default params.x.y.z 5}}").unwrap(), "5");
        assert_eq!(render("{{default params.nothing \"n\"}}").unwrap(), "n");
        assert_eq!(
            render("{{default params.release \"fallback\"}}").unwrap(),
            "openbao"
        );
        assert_eq!(
            render("{{sh (default params.x \"a b\")}}").unwrap(),
            "'a b'"
        );
        let err = render("{{default params.x params.y}}").unwrap_err();
        assert_eq!(err.message, "unknown variable `params.y`");
        let err = render("{{default params.x}}").unwrap_err();
        assert!(err.message.contains("two arguments"), "{err}");
        // `if` treats a missing variable as false, without an error.
        assert_eq!(
            render("{{#if params.x}}yes{{else}}no{{/if}}").unwrap(),
            "no"
        );
        assert_eq!(
            render("{{#unless params.x}}none{{/unless}}").unwrap(),
            "none"
        );
        // The comparison helpers do not.
        let err = render("{{#if (eq params.x 1)}}yes{{/if}}").unwrap_err();
        assert_eq!(
            err.message,
            "`eq` needs argument 1, which is missing or an unknown variable"
        );
    }

    #[test]
    fn blocks() {
        assert_eq!(
            render("{{#if params.flag}}on{{else}}off{{/if}}").unwrap(),
            "on"
        );
        assert_eq!(
            render("{{#each items}}{{@index}}={{name}}/{{../params.n}};{{/each}}").unwrap(),
            "0=x/2;1=y/2;"
        );
        assert_eq!(
            render("{{#each params.list as |w|}}<{{w}}>{{/each}}").unwrap(),
            "<a b><c'd><3>"
        );
        assert_eq!(
            render("{{#with steps.sts.output}}{{spec.replicas}}{{/with}}").unwrap(),
            "3"
        );
        let err = render("{{#each params.none}}x{{/each}}").unwrap_err();
        assert_eq!(err.message, "unknown variable `params.none`");
    }

    #[test]
    fn typed_single_mustache() {
        let c = ctx();
        assert_eq!(render_value(&json!("{{ordinal}}"), &c).unwrap(), json!(2));
        assert_eq!(
            render_value(&json!("x{{ordinal}}"), &c).unwrap(),
            json!("x2")
        );
        assert_eq!(
            render_value(&json!(" {{ordinal}}"), &c).unwrap(),
            json!(" 2")
        );
        assert_eq!(
            render_value(&json!("{{ steps.sts.output.spec.replicas }}"), &c).unwrap(),
            json!(3)
        );
        assert_eq!(
            render_value(&json!("{{steps.sts.output}}"), &c).unwrap(),
            json!({"spec": {"replicas": 3}})
        );
        assert_eq!(
            render_value(&json!("{{params.flag}}"), &c).unwrap(),
            json!(true)
        );
        assert_eq!(
            render_value(&json!("{{params.nothing}}"), &c).unwrap(),
            Value::Null
        );
        assert_eq!(
            render_value(&json!("{{params.list.[1]}}"), &c).unwrap(),
            json!("c'd")
        );
        assert_eq!(
            render_value(&json!("{{params.list.2}}"), &c).unwrap(),
            json!(3)
        );
        // Helpers always give strings.
        assert_eq!(
            render_value(&json!("{{json params.n}}"), &c).unwrap(),
            json!("2")
        );
        let err = render_value(&json!("{{params.nope}}"), &c).unwrap_err();
        assert_eq!(err.message, "unknown variable `params.nope`");
        assert_eq!((err.line, err.column), (Some(1), Some(1)));
    }

    #[test]
    fn nested_value_rendering() {
        let spec = json!({
            "merge": {"spec": {"updateStrategy": {"rollingUpdate": {"partition": "{{ordinal}}"}}}},
            "name": "{{params.release}}",
            "labels": {"{{params.release}}/ordinal": "n-{{ordinal}}", "plain": 1},
            "args": ["exec", "{{params.release}}-0", "{{params.n}}", false, null],
        });
        let out = render_value(&spec, &ctx()).unwrap();
        assert_eq!(
            out,
            json!({
                "merge": {"spec": {"updateStrategy": {"rollingUpdate": {"partition": 2}}}},
                "name": "openbao",
                "labels": {"openbao/ordinal": "n-2", "plain": 1},
                "args": ["exec", "openbao-0", 2, false, null],
            })
        );
        let dup = json!({"{{params.release}}": 1, "openbao": 2});
        assert!(
            render_value(&dup, &ctx())
                .unwrap_err()
                .message
                .contains("two keys")
        );
    }

    #[test]
    fn hyphenated_ids() {
        assert_eq!(render("{{steps.step-down.output.ok}}").unwrap(), "true");
        assert_eq!(
            render_value(&json!("{{steps.step-down.output.ok}}"), &ctx()).unwrap(),
            json!(true)
        );
        assert_eq!(render("{{steps.[step-down].output.ok}}").unwrap(), "true");
    }

    #[test]
    fn check_reports_syntax_errors() {
        assert!(check("plain").is_ok());
        assert!(check("{{#if x}}a{{/if}}").is_ok());
        // `check` does not need the variables to exist.
        assert!(check("{{nope.at.all}}").is_ok());
        let err = check("a\n{{#if x}}b").unwrap_err();
        assert_eq!((err.line, err.column), (Some(2), Some(11)), "{err:?}");
        assert_eq!(
            err.message,
            "invalid template syntax: the template ends inside a `{{ … }}` or an open block"
        );
        let err = check("ok {{params.x").unwrap_err();
        assert_eq!((err.line, err.column), (Some(1), Some(14)), "{err:?}");
        let err = check("a {{/if}} b").unwrap_err();
        assert_eq!(err.message, "invalid template syntax");
        assert_eq!((err.line, err.column), (Some(1), Some(5)), "{err:?}");
        let err = check("{{#if x}}a{{/each}}").unwrap_err();
        assert_eq!(err.message, "block `{{#if}}` is closed by `{{/each}}`");
        // A render of a bad template reports the same error.
        assert_eq!(render("a\n{{#if x}}b").unwrap_err().line, Some(2));
    }

    #[test]
    fn references() {
        let tpl = "https://{{params.release}}-{{ordinal}}:{{steps.sts.output.spec.replicas}} \
                   {{sh params.release}} {{default params.x \"lit\"}} {{json (lower steps.step-down.output)}}";
        assert_eq!(
            refs(tpl),
            vec![
                "params.release",
                "ordinal",
                "steps.sts.output.spec.replicas",
                "params.x",
                "steps.step-down.output",
            ]
        );
        let tpl = "{{#each items as |it|}}{{it.name}}{{name}}{{@index}}{{../params.n}}{{@root.run.id}}{{/each}}\
                   {{#if params.flag}}{{params.a}}{{else}}{{params.b}}{{/if}}{{#with steps.sts}}{{output}}{{/with}}";
        assert_eq!(
            refs(tpl),
            vec![
                "items",
                "params.n",
                "run.id",
                "params.flag",
                "params.a",
                "params.b",
                "steps.sts"
            ]
        );
        assert_eq!(
            refs("{{params.list.[0]}} {{this.ordinal}} {{! params.comment }}"),
            vec!["params.list.0", "ordinal"]
        );
        assert!(refs("no templates").is_empty());
        assert!(refs("{{#if broken").is_empty());
    }

    #[test]
    fn cache_is_used() {
        let a = compiled("{{cache.test}}").unwrap();
        let b = compiled("{{cache.test}}").unwrap();
        assert!(Arc::ptr_eq(&a, &b));
    }
}
