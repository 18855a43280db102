//! Handlebars string templates: every string field of a step is rendered over the run context
//! (`params`, `steps.<id>.output`, the loop variable, `run`). This is the one place of
//! Handlebars in the runner.
//!
//! One registry serves the whole process. Strict mode is on, so a variable that does not exist is
//! an error rather than an empty string; HTML escaping is off. Templates are compiled once and
//! cached by their text.
//!
//! # Shell commands
//!
//! A string a POSIX shell will parse (a step kind names them: `shell`'s `run`, the script of
//! `args: [sh, -c, SCRIPT]`, …) is rendered by [`render_shell`]: a second registry whose escape
//! function stands every interpolated value — plain `{{x}}`, every helper's result, each
//! item of an `each` — in by a marker; the template's own text is trusted, so the rendered
//! text is lexed (`template/shell.rs`) to learn where each marker stands, and each value is
//! put back quoted for that place (a single-quoted word, escaped inside `"…"`, spliced into
//! `'…'`, …). A value is then always data, whatever it contains. Refused there: `{{{x}}}`
//! (it bypasses the escape function), a value inside backticks and the other places no
//! quoting makes safe, and `sh`/`unsafe_raw` nested inside another helper.
//! [`shell_problems`] finds what can be found before a run (`runbook check`).
//!
//! `{{unsafe_raw x}}` is the one way to put a value into a shell command as shell text: it
//! exists for a trusted fragment (a pipeline kept in a variable by the runbook's author) and
//! is an injection wherever `x` comes from a parameter or an output; [`raw_uses`] lets
//! `check` warn of those and refuse it outside shell commands, where nothing is quoted.
//!
//! Helpers, besides Handlebars' built-ins (`if`, `unless`, `each`, `with`, `lookup`, `eq`, `ne`,
//! `gt`, `gte`, `lt`, `lte`, `and`, `or`, `not`, `len`, `log`, `raw`):
//!
//! | helper | result |
//! |---|---|
//! | `{{sh x}}` | outside shell commands: `x` quoted for a POSIX shell, an array as its quoted items joined by spaces. In a shell command, the same as `{{x}}` (no double quoting), and an array is its items as separate quoted words where a word stands |
//! | `{{unsafe_raw x}}` | in a shell command: `x` as shell text, unquoted |
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

mod shell;

use std::cell::RefCell;
use std::collections::HashMap;
use std::sync::{Arc, Mutex, OnceLock};

use base64::Engine as _;
use handlebars::template::{HelperTemplate, Parameter, Template, TemplateElement};
use handlebars::{
    Context, Handlebars, Helper, HelperDef, HelperResult, Output, Path, PathSeg, RenderContext,
    RenderError, RenderErrorReason, Renderable, ScopedJson, StringOutput,
};
use serde_json::Value;

/// The compile cache is cleared when it grows beyond this many entries.
const CACHE_LIMIT: usize = 10_000;

/// Handlebars' built-in helpers and ours: a name-only mustache with one of these names is a
/// helper call, not a variable.
const HELPERS: &[&str] = &[
    "if", "unless", "each", "with", "lookup", "raw", "log", "eq", "ne", "gt", "gte", "lt", "lte",
    "and", "or", "not", "len", "sh", "json", "trim", "b64", "default", "lower", "upper",
    RAW_HELPER,
];

/// The helper that puts a value into a shell command unquoted. Loudly named on purpose.
pub const RAW_HELPER: &str = "unsafe_raw";

/// Around the index of an interpolation in a rendered shell template. Private-use code
/// points: a template containing them is refused, and values never reach the lexed text.
const MARK_OPEN: char = '\u{F0000}';
const MARK_CLOSE: char = '\u{F0001}';

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
        let mut hb = build();
        hb.register_escape_fn(handlebars::no_escape);
        hb.register_helper("sh", Box::new(ValueHelper { name: "sh", f: sh }));
        hb.register_helper(
            RAW_HELPER,
            Box::new(ValueHelper {
                name: RAW_HELPER,
                f: raw_text,
            }),
        );
        hb
    })
}

/// The registry for shell commands: every value becomes a marker (see [`render_shell`]).
fn shell_registry() -> &'static Handlebars<'static> {
    static REGISTRY: OnceLock<Handlebars<'static>> = OnceLock::new();
    REGISTRY.get_or_init(|| {
        let mut hb = build();
        hb.register_escape_fn(|value| mark(shell::Piece::Value(value.to_owned())));
        hb.register_helper("sh", Box::new(ShellPiece { name: "sh" }));
        hb.register_helper(RAW_HELPER, Box::new(ShellPiece { name: RAW_HELPER }));
        hb
    })
}

/// A registry with the helpers both modes share.
fn build() -> Handlebars<'static> {
    let mut hb = Handlebars::new();
    hb.set_strict_mode(true);
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
}

thread_local! {
    /// The interpolations of the shell template being rendered on this thread (rendering is
    /// synchronous, so one at a time).
    static PIECES: RefCell<Vec<shell::Piece>> = const { RefCell::new(Vec::new()) };
}

/// Records an interpolation and returns its marker.
fn mark(piece: shell::Piece) -> String {
    PIECES.with(|pieces| {
        let mut pieces = pieces.borrow_mut();
        pieces.push(piece);
        format!("{MARK_OPEN}{}{MARK_CLOSE}", pieces.len() - 1)
    })
}

/// `sh` and `unsafe_raw` in a shell command: they write their marker themselves, past the
/// escape function, so that it can tell a list or trusted text from a value.
struct ShellPiece {
    name: &'static str,
}

impl HelperDef for ShellPiece {
    fn call<'reg: 'rc, 'rc>(
        &self,
        h: &Helper<'rc>,
        _: &'reg Handlebars<'reg>,
        _: &'rc Context,
        rc: &mut RenderContext<'reg, 'rc>,
        out: &mut dyn Output,
    ) -> HelperResult {
        // Escaping is off only while a subexpression is evaluated (`{{{…}}}` is refused
        // before rendering): the marker would become another helper's input.
        if rc.is_disable_escape() {
            return Err(RenderErrorReason::Other(nested_message(self.name)).into());
        }
        if h.params().len() != 1 {
            return Err(RenderErrorReason::Other(format!(
                "`{}` takes one argument, got {}",
                self.name,
                h.params().len()
            ))
            .into());
        }
        let value = argument(h, self.name, 0)?;
        let fail = |e: String| {
            RenderError::from(RenderErrorReason::Other(format!("`{}`: {e}", self.name)))
        };
        let piece = if self.name == RAW_HELPER {
            shell::Piece::Raw(
                raw_text(value)
                    .and_then(|v| scalar_text(&v))
                    .map_err(fail)?,
            )
        } else {
            match value {
                Value::Array(items) => shell::Piece::Words(words(items).map_err(fail)?),
                Value::Object(_) => return Err(fail(OBJECT_QUOTE.to_owned())),
                other => shell::Piece::Value(scalar_text(other).map_err(fail)?),
            }
        };
        out.write(&mark(piece))?;
        Ok(())
    }
}

fn nested_message(helper: &str) -> String {
    format!(
        "`{helper}` cannot be an argument of another helper in a shell command: its result is shell text, not a value"
    )
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

const OBJECT_QUOTE: &str = "cannot quote an object; render it with `json` first";

/// A list's items as words.
fn words(items: &[Value]) -> Result<Vec<String>, String> {
    items
        .iter()
        .map(|item| match item {
            Value::Array(_) | Value::Object(_) => {
                Err("list items must be strings, numbers or booleans".to_owned())
            }
            other => scalar_text(other),
        })
        .collect()
}

fn sh(v: &Value) -> Result<Value, String> {
    let quoted = match v {
        Value::Array(items) => shell_words::join(words(items)?),
        Value::Object(_) => return Err(OBJECT_QUOTE.to_owned()),
        other => shell_words::quote(&scalar_text(other)?).into_owned(),
    };
    Ok(Value::String(quoted))
}

/// `unsafe_raw` outside a shell command (refused by `check`): the value's text as it is.
fn raw_text(v: &Value) -> Result<Value, String> {
    match v {
        Value::Array(_) | Value::Object(_) => Err(format!(
            "expects a string, got {}",
            if v.is_array() { "a list" } else { "an object" }
        )),
        other => Ok(Value::String(scalar_text(other)?)),
    }
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
    render_with(registry(), template, ctx)
}

fn render_with(
    hb: &Handlebars<'_>,
    template: &Template,
    ctx: &Context,
) -> Result<String, TemplateError> {
    let mut rc = RenderContext::new(None);
    let mut out = StringOutput::new();
    template
        .render(hb, ctx, &mut rc, &mut out)
        .map_err(|e| render_error(&e))?;
    out.into_string()
        .map_err(|_| TemplateError::new("template rendered to invalid UTF-8"))
}

/// A shell command rendered by [`render_shell`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ShellText {
    /// The command, every value quoted for its place.
    pub text: String,
    /// Each value (a list's items joined by spaces) and the text it became in the command,
    /// so that a secret is also known in its quoted form.
    pub values: Vec<(String, String)>,
}

/// Renders a template that a POSIX shell will parse, quoting every interpolated value for
/// its place in the shell text (see the module documentation). Errors: those of
/// [`render_str`], `{{{x}}}`, and values in places that cannot be quoted.
pub fn render_shell(tpl: &str, ctx: &Value) -> Result<ShellText, TemplateError> {
    if !tpl.contains("{{") {
        return Ok(ShellText {
            text: tpl.to_owned(),
            values: Vec::new(),
        });
    }
    if tpl.contains([MARK_OPEN, MARK_CLOSE]) {
        return Err(TemplateError::new(
            "a shell command cannot contain the characters U+F0000 and U+F0001 (reserved for quoting)",
        ));
    }
    let template = compiled(tpl)?;
    if let Some(&(line, column)) = triple_stashes(&template).first() {
        return Err(TemplateError {
            message: TRIPLE_STASH.to_owned(),
            line: Some(line),
            column: Some(column),
        });
    }
    PIECES.with(|p| p.borrow_mut().clear());
    let rendered = render_with(shell_registry(), &template, &Context::from(ctx.clone()));
    let pieces = PIECES.with(|p| std::mem::take(&mut *p.borrow_mut()));
    let rendered = rendered?;
    let toks = tokens(&rendered, &pieces);
    let lexed = shell::lex(&toks);
    let (text, values) =
        shell::substitute(&toks, &pieces, &lexed).map_err(|e| TemplateError::new(e.to_string()))?;
    Ok(ShellText { text, values })
}

const TRIPLE_STASH: &str = "`{{{…}}}` puts a value into a shell command unquoted; write `{{…}}` (values are quoted for their place), or `{{unsafe_raw …}}` for trusted shell text";

/// The rendered text as tokens: trusted characters (`unsafe_raw` text included) and markers.
fn tokens(rendered: &str, pieces: &[shell::Piece]) -> Vec<shell::Tok> {
    let mut toks = Vec::with_capacity(rendered.len());
    let mut chars = rendered.chars();
    while let Some(c) = chars.next() {
        if c != MARK_OPEN {
            toks.push(shell::Tok::C(c));
            continue;
        }
        let digits: String = chars.by_ref().take_while(|&c| c != MARK_CLOSE).collect();
        let index: usize = digits.parse().expect("markers are written by `mark`");
        match &pieces[index] {
            shell::Piece::Raw(raw) => toks.extend(raw.chars().map(shell::Tok::C)),
            _ => toks.push(shell::Tok::M(index)),
        }
    }
    toks
}

/// The positions of `{{{…}}}` in a template, blocks included.
fn triple_stashes(t: &Template) -> Vec<(usize, usize)> {
    let mut out = Vec::new();
    walk(t, &mut |e, at| {
        if let TemplateElement::HtmlExpression(_) = e {
            out.push(at);
        }
    });
    out
}

/// Visits every element of a template and of its blocks, with its line and column.
fn walk(t: &Template, f: &mut dyn FnMut(&TemplateElement, (usize, usize))) {
    for (i, e) in t.elements.iter().enumerate() {
        let at = t.mapping.get(i).map_or((1, 1), |m| (m.0, m.1));
        f(e, at);
        if let TemplateElement::HelperBlock(ht) = e {
            for inner in [&ht.template, &ht.inverse].into_iter().flatten() {
                walk(inner, f);
            }
        }
    }
}

/// What `check` can find wrong with a shell-command template without its values: `{{{…}}}`,
/// values in places that cannot be quoted (inside backticks, …), and `sh`/`unsafe_raw`
/// nested in another helper. Each error has the line and column of its mustache in the
/// template. A block's text is taken once (`if` and `else` in turn), which is how most
/// templates render; a run checks the real text again.
pub fn shell_problems(tpl: &str) -> Vec<TemplateError> {
    let Ok(template) = tpl.contains("{{").then(|| compiled(tpl)).transpose() else {
        return Vec::new();
    };
    let Some(template) = template else {
        return Vec::new();
    };
    let mut problems = Vec::new();
    let at = |message: String, (line, column): (usize, usize)| TemplateError {
        message,
        line: Some(line),
        column: Some(column),
    };
    for pos in triple_stashes(&template) {
        problems.push(at(TRIPLE_STASH.to_owned(), pos));
    }
    for (name, pos) in nested_shell_helpers(&template) {
        problems.push(at(nested_message(name), pos));
    }
    // The text with a marker for each value; `unsafe_raw` text is unknown, so taken as none.
    let mut text = String::new();
    let mut positions = Vec::new();
    skeleton(&template, &mut text, &mut positions);
    let pieces = vec![shell::Piece::Value(String::new()); positions.len()];
    let lexed = shell::lex(&tokens(&text, &pieces));
    for (index, place) in lexed.places {
        if let Err(refused) = place {
            problems.push(at(refused.to_string(), positions[index]));
        }
    }
    problems.sort_by_key(|p| (p.line, p.column));
    problems.dedup();
    problems
}

fn skeleton(t: &Template, text: &mut String, positions: &mut Vec<(usize, usize)>) {
    for (i, e) in t.elements.iter().enumerate() {
        let at = t.mapping.get(i).map_or((1, 1), |m| (m.0, m.1));
        match e {
            TemplateElement::RawString(s) => text.push_str(s),
            TemplateElement::Expression(ht) | TemplateElement::HtmlExpression(ht) => {
                if helper_name(ht) == Some(RAW_HELPER) {
                    continue;
                }
                positions.push(at);
                text.push(MARK_OPEN);
                text.push_str(&(positions.len() - 1).to_string());
                text.push(MARK_CLOSE);
            }
            TemplateElement::HelperBlock(ht) => {
                for inner in [&ht.template, &ht.inverse].into_iter().flatten() {
                    skeleton(inner, text, positions);
                }
            }
            _ => {}
        }
    }
}

/// The name of the helper a mustache calls, if it calls one of ours by name.
fn helper_name(ht: &HelperTemplate) -> Option<&str> {
    match &ht.name {
        Parameter::Name(n) => Some(n.as_str()),
        Parameter::Path(Path::Relative((_, raw))) => Some(raw.as_str()),
        _ => None,
    }
}

/// `sh` and `unsafe_raw` used as an argument of another helper, with positions.
fn nested_shell_helpers(t: &Template) -> Vec<(&'static str, (usize, usize))> {
    fn in_param(p: &Parameter, at: (usize, usize), out: &mut Vec<(&'static str, (usize, usize))>) {
        if let Parameter::Subexpression(sub) = p {
            if let TemplateElement::Expression(ht) | TemplateElement::HtmlExpression(ht) =
                sub.element.as_ref()
            {
                match helper_name(ht) {
                    Some("sh") => out.push(("sh", at)),
                    Some(RAW_HELPER) => out.push((RAW_HELPER, at)),
                    _ => {}
                }
                for p in ht.params.iter().chain(ht.hash.values()) {
                    in_param(p, at, out);
                }
            }
        }
    }
    let mut out = Vec::new();
    walk(t, &mut |e, at| {
        if let TemplateElement::Expression(ht)
        | TemplateElement::HtmlExpression(ht)
        | TemplateElement::HelperBlock(ht) = e
        {
            for p in ht.params.iter().chain(ht.hash.values()) {
                in_param(p, at, &mut out);
            }
        }
    });
    out
}

/// One use of [`RAW_HELPER`] in a template.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RawUse {
    /// 1-based line and column of its mustache in the template.
    pub line: usize,
    pub column: usize,
    /// The parameters its argument comes from (`params.x`), directly or through the
    /// `each`/`with` block it is in.
    pub params: Vec<String>,
}

/// Every use of [`RAW_HELPER`] in a template, nested ones included.
pub fn raw_uses(tpl: &str) -> Vec<RawUse> {
    let Some(Ok(template)) = tpl.contains("{{").then(|| compiled(tpl)) else {
        return Vec::new();
    };
    let mut out = Vec::new();
    raw_uses_in(&template, &Scopes::default(), &[], &mut out);
    out
}

fn raw_uses_in(t: &Template, scopes: &Scopes, block_params: &[String], out: &mut Vec<RawUse>) {
    for (i, e) in t.elements.iter().enumerate() {
        let (line, column) = t.mapping.get(i).map_or((1, 1), |m| (m.0, m.1));
        let (TemplateElement::Expression(ht)
        | TemplateElement::HtmlExpression(ht)
        | TemplateElement::HelperBlock(ht)) = e
        else {
            continue;
        };
        let mut found = Vec::new();
        if helper_name(ht) == Some(RAW_HELPER) {
            found.push(ht.params.as_slice());
        }
        collect_raw_params(ht.params.iter().chain(ht.hash.values()), &mut found);
        for params in found {
            let mut refs = Vec::new();
            for p in params {
                refs_in_param(p, scopes, &mut refs);
            }
            // A value relative to a block's context comes from what the block iterates.
            let relative = params
                .iter()
                .any(|p| matches!(p, Parameter::Path(_) | Parameter::Subexpression(_)))
                && refs.is_empty();
            let mut from: Vec<String> = refs
                .into_iter()
                .filter(|r| r == "params" || r.starts_with("params."))
                .collect();
            if relative {
                from.extend(block_params.iter().cloned());
            }
            from.dedup();
            out.push(RawUse {
                line,
                column,
                params: from,
            });
        }
        if let TemplateElement::HelperBlock(ht) = e {
            let mut inner_scopes = scopes.clone();
            let mut inner_params = block_params.to_vec();
            if matches!(ht.name.as_name(), Some("each" | "with")) {
                inner_scopes.depth += 1;
                let mut refs = Vec::new();
                for p in &ht.params {
                    refs_in_param(p, scopes, &mut refs);
                }
                inner_params.extend(
                    refs.into_iter()
                        .filter(|r| r == "params" || r.starts_with("params.")),
                );
            }
            if let Some(bp) = &ht.block_param {
                inner_scopes.block_params.extend(block_param_names(bp));
            }
            if let Some(inner) = &ht.template {
                raw_uses_in(inner, &inner_scopes, &inner_params, out);
            }
            if let Some(inner) = &ht.inverse {
                raw_uses_in(inner, scopes, block_params, out);
            }
        }
    }
}

/// The arguments of `unsafe_raw` calls nested in subexpressions.
fn collect_raw_params<'a>(
    params: impl Iterator<Item = &'a Parameter>,
    found: &mut Vec<&'a [Parameter]>,
) {
    for p in params {
        if let Parameter::Subexpression(sub) = p {
            if let TemplateElement::Expression(ht) | TemplateElement::HtmlExpression(ht) =
                sub.element.as_ref()
            {
                if helper_name(ht) == Some(RAW_HELPER) {
                    found.push(ht.params.as_slice());
                }
                collect_raw_params(ht.params.iter().chain(ht.hash.values()), found);
            }
        }
    }
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

    /// Values that try every way out of their place.
    const NASTY: &[&str] = &[
        "plain",
        "two words",
        "it's",
        "\"dq\"",
        "$(touch pwned)",
        "`touch pwned`",
        "x; touch pwned",
        "x && touch pwned #",
        "'; touch pwned; '",
        "\"; touch pwned; \"",
        "a\nb\n",
        "*",
        "",
        "\\",
        "trailing\\",
        "$HOME ${HOME} $1",
        "!bang",
        "}{",
        "~root",
        "a=b",
        "if",
        "-n",
        "tab\there",
    ];

    /// Runs `script` with `shell -c` in a fresh directory; its stdout, and whether it created
    /// the file `pwned`.
    fn run_in(shell: &str, script: &str) -> (String, bool) {
        let dir = tempfile::tempdir().expect("tempdir");
        let out = std::process::Command::new(shell)
            .arg("-c")
            .arg(script)
            .current_dir(dir.path())
            .env_remove("x")
            .output()
            .expect("run the shell");
        assert!(
            out.status.success(),
            "{shell} -c {script:?} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        (
            String::from_utf8(out.stdout).expect("utf-8"),
            dir.path().join("pwned").exists(),
        )
    }

    fn shell_render(tpl: &str, ctx: &Value) -> Result<String, TemplateError> {
        render_shell(tpl, ctx).map(|t| t.text)
    }

    #[test]
    fn every_value_reaches_the_shell_byte_for_byte_in_every_place() {
        // (template over `v`, what the script prints given the value)
        // What a script prints, given the value.
        type Printed = fn(&str) -> String;
        let places: &[(&str, Printed)] = &[
            ("printf '%s' {{v}}", str::to_owned),
            ("printf '%s' {{v}}{{v}}", |v| format!("{v}{v}")),
            ("printf '%s' \"{{v}}\"", str::to_owned),
            ("printf '%s' \"a {{v}} b\"", |v| format!("a {v} b")),
            ("printf '%s' '{{v}}'", str::to_owned),
            ("printf '%s' 'a {{v}} b'", |v| format!("a {v} b")),
            ("printf '%s' x{{v}}'y'\"z\"", |v| format!("x{v}yz")),
            // Command substitution keeps the value apart from its trailing newlines.
            (
                "o=$(printf '%s' {{v}}; echo .); printf '%s' \"${o%.}\"",
                str::to_owned,
            ),
            (
                "o=\"$(printf '%s' \"{{v}}\"; echo .)\"; printf '%s' \"${o%.}\"",
                str::to_owned,
            ),
            ("printf '%s' \"${x:-{{v}}}\"", str::to_owned),
            ("printf '%s' \"${x:-a{{v}}b}\"", |v| format!("a{v}b")),
            ("cat <<EOF\n{{v}}\nEOF", |v| format!("{v}\n")),
            ("cat <<-EOF\n\t{{v}}\n\tEOF", |v| format!("{v}\n")),
            ("cat <<'EOF'\n{{v}}\nEOF", |v| format!("{v}\n")),
            ("cat <<EOF\nx $(printf '%s' {{v}}) y\nEOF", |v| {
                format!("x {} y\n", v.trim_end_matches('\n'))
            }),
            ("printf '%s' ok # {{v}}", |_| "ok".to_owned()),
            ("printf '%s' ok #{{v}} {{v}}\nprintf '%s' .", |_| {
                "ok.".to_owned()
            }),
            ("case {{v}} in *) printf '%s' {{v}};; esac", str::to_owned),
            (
                "o=$(case {{v}} in *) printf '%s' {{v}};; esac; echo .); printf '%s' \"${o%.}\"",
                str::to_owned,
            ),
            ("f() { printf '%s' \"$1\"; }; f {{v}}", str::to_owned),
            ("printf '%s' {{sh v}}", str::to_owned),
            ("printf '%s' \"{{sh v}}\"", str::to_owned),
            ("printf '%s' {{trim v}}", |v| v.trim().to_owned()),
            ("printf '%s' {{upper v}}", str::to_uppercase),
            ("printf '%s' {{default nothing v}}", str::to_owned),
            (
                "{{#if v}}printf '%s' {{v}}{{else}}printf '%s' {{v}}{{/if}}",
                str::to_owned,
            ),
            ("printf '%s' {{json v}}", |v| {
                Value::String(v.to_owned()).to_string()
            }),
        ];
        for shell in ["sh", "bash"] {
            for (tpl, want) in places {
                for v in NASTY {
                    let ctx = json!({ "v": v, "nothing": null });
                    let script = match shell_render(tpl, &ctx) {
                        Ok(s) => s,
                        Err(e) => {
                            // A value whose line is the delimiter cannot be in a here-document;
                            // bash and dash disagree on a `'` inside "${…}".
                            assert!(
                                (tpl.contains("<<") && v.contains('\n'))
                                    || (tpl.contains("\"${x:-") && v.contains('\'')),
                                "{tpl:?} with {v:?}: {e}"
                            );
                            continue;
                        }
                    };
                    let (out, pwned) = run_in(shell, &script);
                    assert!(
                        !pwned,
                        "{shell}: {tpl:?} with {v:?} ran `touch`: {script:?}"
                    );
                    assert_eq!(
                        out,
                        want(v),
                        "{shell}: {tpl:?} with {v:?} rendered {script:?}"
                    );
                }
            }
        }
    }

    #[test]
    fn values_are_quoted_for_their_place() {
        let ctx = json!({"v": "it's $x", "n": 42, "list": ["a b", "c'd", 3], "empty": []});
        let cases = [
            ("echo {{v}}", r"echo 'it'\''s $x'"),
            ("echo \"{{v}}\"", r#"echo "it's \$x""#),
            ("echo '{{v}}'", r"echo 'it'\''s $x'"),
            ("echo \"${y:-{{n}}}\"", r#"echo "${y:-42}""#),
            ("echo $(echo {{v}})", r"echo $(echo 'it'\''s $x')"),
            ("echo \"$(echo {{v}})\"", r#"echo "$(echo 'it'\''s $x')""#),
            ("echo {{n}}", "echo '42'"),
            ("echo $(( {{n}} + 1 ))", "echo $(( 42 + 1 ))"),
            (
                "echo $[ ({{n}} + 1) * 2 ] {{n}}",
                "echo $[ (42 + 1) * 2 ] '42'",
            ),
            ("echo $(( ({{n}}) )) {{n}}", "echo $(( (42) )) '42'"),
            ("(( {{n}} > 1 ))", "(( 42 > 1 ))"),
            ("let x={{n}}+1", "let x=42+1"),
            ("a[{{n}}]=1", "a[42]=1"),
            ("echo ${a[{{n}}]} ${s:{{n}}}", "echo ${a[42]} ${s:42}"),
            ("[[ {{n}} -eq 42 ]]", "[[ 42 -eq 42 ]]"),
            ("[[ {{v}} == x ]]", r"[[ 'it'\''s $x' == x ]]"),
            ("echo {{sh list}}", r"echo 'a b' 'c'\''d' '3'"),
            ("echo \"{{sh list}}\"", r#"echo "a b c'd 3""#),
            ("echo x{{sh empty}}y", "echo xy"),
            (
                "echo {{#each list}}{{this}} {{/each}}",
                r"echo 'a b' 'c'\''d' '3' ",
            ),
            ("echo {{unsafe_raw v}}", "echo it's $x"),
            ("# {{v}}\necho", "# it's $x\necho"),
            ("echo no values", "echo no values"),
        ];
        for (tpl, want) in cases {
            assert_eq!(shell_render(tpl, &ctx).as_deref(), Ok(want), "{tpl}");
        }
        // A list's items are separate words where a word stands, one string in quotes.
        let (out, _) = run_in(
            "sh",
            &shell_render("printf '[%s]' {{sh list}}", &ctx).unwrap(),
        );
        assert_eq!(out, "[a b][c'd][3]");
        let (out, _) = run_in(
            "sh",
            &shell_render("printf '[%s]' \"{{sh list}}\"", &ctx).unwrap(),
        );
        assert_eq!(out, "[a b c'd 3]");
        let (out, _) = run_in(
            "bash",
            &shell_render("echo $(( {{n}} + 1 ))", &ctx).unwrap(),
        );
        assert_eq!(out, "43\n");
        // The quoted form of each value is reported (for secrets).
        let text = render_shell("echo {{v}} \"{{v}}\"", &ctx).unwrap();
        assert_eq!(
            text.values,
            [
                ("it's $x".to_owned(), r"'it'\''s $x'".to_owned()),
                ("it's $x".to_owned(), r"it's \$x".to_owned()),
            ]
        );
    }

    #[test]
    fn places_no_quoting_makes_safe_are_refused() {
        let ctx = json!({"v": "x", "q": "it's", "n": "1; touch pwned", "d": "x\nEOF\ntouch pwned"});
        let cases = [
            (
                "echo $[ {{n}} ]",
                "a value that is not an integer stands where the shell evaluates arithmetic (bash runs commands hidden in an arithmetic operand, even a quoted one); give an `int` parameter",
            ),
            (
                "echo `echo {{v}}`",
                "a value inside backticks cannot be quoted safely; write $(…) instead of `…`",
            ),
            (
                "echo \"`echo {{v}}`\"",
                "a value inside backticks cannot be quoted safely; write $(…) instead of `…`",
            ),
            (
                "echo $'{{v}}'",
                "a value inside $'…' cannot be quoted safely; use '…' or \"…\" around it instead",
            ),
            (
                "echo \\\\{{v}}",
                "a value right after a `\\` would have its first character escaped; remove the `\\`",
            ),
            (
                "echo \"\\\\{{v}}\"",
                "a value right after a `\\` would have its first character escaped; remove the `\\`",
            ),
            (
                "echo ${{v}}",
                "a value right after `$` would be read as part of an expansion; put a space or a quote between them",
            ),
            (
                "echo \"${{v}}\"",
                "a value right after `$` would be read as part of an expansion; put a space or a quote between them",
            ),
            (
                "cat <<{{v}}\nx\n",
                "a value cannot be a here-document's delimiter; write the delimiter literally",
            ),
            (
                "cat <<EOF\n${y:-{{v}}}\nEOF",
                "a value inside ${…} in a here-document cannot be quoted safely (bash and dash read it differently); set a variable before the here-document and use it",
            ),
            (
                "echo \"${y:-{{q}}}\"",
                "a value with a `'` cannot stand inside \"${…}\" (bash and dash read it differently); set a variable first and use \"$VAR\"",
            ),
            (
                "echo \"${y:-'{{v}}'}\"",
                "a value inside quotes inside \"${…}\" cannot be quoted safely (shells disagree on those quotes); drop the inner quotes",
            ),
            (
                "echo $(( {{n}} + 1 ))",
                "a value that is not an integer stands where the shell evaluates arithmetic (bash runs commands hidden in an arithmetic operand, even a quoted one); give an `int` parameter",
            ),
            (
                "[[ \"{{n}}\" -eq 1 ]]",
                "a value that is not an integer stands where the shell evaluates arithmetic (bash runs commands hidden in an arithmetic operand, even a quoted one); give an `int` parameter",
            ),
            (
                "cat <<EOF\n{{d}}\nEOF",
                "a value has a line `EOF` that would end the here-document early; the rest would run as commands",
            ),
            (
                "cat <<'EOF'\n{{d}}\nEOF",
                "a value has a line `EOF` that would end the here-document early; the rest would run as commands",
            ),
            ("echo {{{v}}}", TRIPLE_STASH),
            (
                "echo {{upper (sh v)}}",
                "`sh` cannot be an argument of another helper in a shell command: its result is shell text, not a value",
            ),
            (
                "echo \u{F0000}{{v}}",
                "a shell command cannot contain the characters U+F0000 and U+F0001 (reserved for quoting)",
            ),
        ];
        for (tpl, want) in cases {
            let err = shell_render(tpl, &ctx).expect_err(tpl);
            assert_eq!(err.message, want, "{tpl}");
        }
        let err = shell_render("a\n  echo {{{v}}}", &ctx).unwrap_err();
        assert_eq!((err.line, err.column), (Some(2), Some(8)));
        // Outside shell commands nothing changes.
        assert_eq!(
            render("{{{params.html}}} {{sh params.name}}").unwrap(),
            r"<&> 'it'\''s'"
        );
    }

    #[test]
    fn check_finds_shell_problems_with_their_place() {
        let found = |tpl: &str| -> Vec<(usize, usize, String)> {
            shell_problems(tpl)
                .into_iter()
                .map(|e| (e.line.unwrap(), e.column.unwrap(), e.message))
                .collect()
        };
        assert!(found("echo {{x}} \"{{y}}\" '{{z}}' $(echo {{w}})").is_empty());
        assert_eq!(
            found("echo {{{x}}}\n  echo `{{y}}`"),
            [
                (1, 6, TRIPLE_STASH.to_owned()),
                (2, 9, shell::Refused::Backtick.to_string()),
            ]
        );
        assert_eq!(
            found("{{#if a}}\necho $'{{b}}'{{/if}}"),
            [(2, 8, shell::Refused::AnsiC.to_string())]
        );
        assert_eq!(
            found("echo {{lower (unsafe_raw x)}}"),
            [(1, 6, nested_message(RAW_HELPER))]
        );
        // `unsafe_raw` text is the author's: `check` does not guess what it holds.
        assert!(found("{{unsafe_raw x}} `echo hi`").is_empty());
    }

    #[test]
    fn raw_uses_name_the_parameters_they_take() {
        let uses = raw_uses(
            "a {{unsafe_raw params.cmd}}\n{{unsafe_raw \"ls\"}} {{unsafe_raw steps.x.output}}",
        );
        assert_eq!(
            uses,
            [
                RawUse {
                    line: 1,
                    column: 3,
                    params: vec!["params.cmd".into()]
                },
                RawUse {
                    line: 2,
                    column: 1,
                    params: vec![]
                },
                RawUse {
                    line: 2,
                    column: 21,
                    params: vec![]
                },
            ]
        );
        let uses = raw_uses(
            "{{#each params.cmds as |c|}}{{unsafe_raw c}}{{/each}} {{lower (unsafe_raw params.y)}}",
        );
        assert_eq!(uses[0].params, ["params.cmds"]);
        assert_eq!(uses[1].params, ["params.y"]);
        assert!(raw_uses("{{params.x}}").is_empty());
    }

    #[test]
    fn cache_is_used() {
        let a = compiled("{{cache.test}}").unwrap();
        let b = compiled("{{cache.test}}").unwrap();
        assert!(Arc::ptr_eq(&a, &b));
    }
}
