//! Keeping secrets out of everything written or printed.
//!
//! Redaction is by value: the values of secret parameters and secret step outputs — and every
//! value *derived* from them — are remembered, and every event is scrubbed of them before it
//! reaches the journal, the terminal, `--output json`, webhooks or the web page. Scrubbing by value
//! catches a secret wherever it ends up — in a rendered command line, an HTTP header, an error
//! message or a child's stderr.
//!
//! Derived values are caught two ways:
//!
//! - **Encodings, learned with the secret.** Each secret is also remembered base64-encoded
//!   (standard and URL alphabets, padded or not, and the part of its encoding that is the same
//!   wherever it sits inside a longer base64 text — `b64("user:" + secret)` in a Basic header),
//!   URL-encoded, JSON-escaped and shell-quoted. These catch a secret that a child process, a
//!   server or a template helper re-encoded.
//! - **Taint, by evaluating twice.** An expression or template whose inputs hold secrets is
//!   evaluated a second time over a *shadow* of its inputs in which every secret is replaced by a
//!   different value of the same shape ([`Redactor::shadow`]); wherever the two results differ,
//!   the result depends on a secret, and the differing part of the real result is remembered as a
//!   secret too ([`Redactor::taint`]). This follows a secret through any computation — string
//!   building in Rhai, `b64`/`json`/`sh`, a field or a line of a secret output, a number — without
//!   the scripts or templates knowing about it.
//!
//! Masking does not garble: a secret shorter than [`MIN_ANYWHERE`] characters (a PIN, a dummy
//! token `x`) is masked only where it stands as a whole token — not inside a longer word or number
//! — so `exited` stays `exited` when the secret is `x`.

use std::sync::{Arc, RwLock};

use base64::Engine as _;
use serde_json::Value;

/// The shortest string inside a secret step's output that is learned *by value* from the output
/// itself (shorter ones — `ok`, `200` — are structure; they are still secret where a later step
/// uses them, through taint).
pub const MIN_OUTPUT_SECRET: usize = 4;

/// Secrets at least this long are masked wherever they occur; shorter ones only as whole tokens.
pub const MIN_ANYWHERE: usize = 4;

/// What a redacted secret is replaced with.
pub const MASK: &str = "***";

/// The set of secret values known to a run. Cheap to clone; clones share the set.
#[derive(Clone, Debug, Default)]
pub struct Redactor {
    inner: Arc<RwLock<Inner>>,
}

#[derive(Debug, Default)]
struct Inner {
    /// Masked wherever they occur, longest first.
    anywhere: Vec<String>,
    /// Masked only as whole tokens, longest first.
    tokens: Vec<String>,
    /// Bumped whenever a secret is learned (shadows computed before are stale).
    generation: u64,
}

impl Redactor {
    /// An empty set.
    pub fn new() -> Self {
        Self::default()
    }

    /// Remembers a secret value (without its surrounding whitespace: a command's output ends in
    /// a newline that templates and scripts usually trim away, and whitespace is no secret) and
    /// its encodings. Blank strings are ignored (they would match everywhere).
    pub fn add(&self, secret: &str) {
        let secret = secret.trim();
        if secret.is_empty() || secret == MASK {
            return;
        }
        let mut forms = vec![secret.to_owned()];
        if secret.chars().count() >= MIN_ANYWHERE {
            forms.extend(encodings(secret));
        }
        self.learn(forms);
    }

    /// Remembers a value derived from a secret as it is (no further encodings: the value is
    /// already an encoding, or a part of one).
    pub fn add_derived(&self, derived: &str) {
        let derived = derived.trim();
        if derived.is_empty() || derived == MASK || derived.contains(MASK) {
            return;
        }
        self.learn(vec![derived.to_owned()]);
    }

    fn learn(&self, forms: Vec<String>) {
        let mut inner = self.inner.write().expect("redactor poisoned");
        let mut changed = false;
        for form in forms {
            if form.is_empty() || form == MASK {
                continue;
            }
            let list = if form.chars().count() >= MIN_ANYWHERE {
                &mut inner.anywhere
            } else {
                &mut inner.tokens
            };
            if !list.contains(&form) {
                list.push(form);
                // Longest first, so a secret that contains another is masked whole.
                list.sort_by_key(|s| std::cmp::Reverse(s.len()));
                changed = true;
            }
        }
        if changed {
            inner.generation += 1;
        }
    }

    /// Remembers every string inside a value, and the value itself if it is a bare number (a
    /// secret PIN). Numbers inside a structure are not learned by value: they are an output's
    /// exit code, duration or status (where a later step uses one, taint catches it).
    pub fn add_value(&self, value: &Value) {
        match value {
            Value::Number(n) => self.add(&n.to_string()),
            other => self.add_strings(other),
        }
    }

    /// Remembers the strings inside a secret step's output, and each of their lines. Strings
    /// shorter than [`MIN_OUTPUT_SECRET`] characters (`ok`, `200`, `true`) are structure, not
    /// secrets, by value; the output as a whole is never journaled.
    pub fn add_output(&self, value: &Value) {
        match value {
            Value::String(s) if s.trim().chars().count() >= MIN_OUTPUT_SECRET => {
                self.add(s);
                for line in s.lines() {
                    if line.trim().chars().count() >= MIN_OUTPUT_SECRET {
                        self.add(line);
                    }
                }
            }
            Value::Array(items) => items.iter().for_each(|v| self.add_output(v)),
            Value::Object(map) => map.values().for_each(|v| self.add_output(v)),
            _ => {}
        }
    }

    fn add_strings(&self, value: &Value) {
        match value {
            Value::String(s) => self.add(s),
            Value::Array(items) => items.iter().for_each(|v| self.add_strings(v)),
            Value::Object(map) => map.values().for_each(|v| self.add_strings(v)),
            Value::Null | Value::Bool(_) | Value::Number(_) => {}
        }
    }

    /// Whether any secret is known.
    pub fn is_empty(&self) -> bool {
        let inner = self.inner.read().expect("redactor poisoned");
        inner.anywhere.is_empty() && inner.tokens.is_empty()
    }

    /// A number that changes whenever a secret is learned.
    pub fn generation(&self) -> u64 {
        self.inner.read().expect("redactor poisoned").generation
    }

    /// The text with every known secret masked.
    pub fn text(&self, text: &str) -> String {
        let inner = self.inner.read().expect("redactor poisoned");
        let mut out = text.to_owned();
        for s in &inner.anywhere {
            if out.contains(s.as_str()) {
                out = out.replace(s.as_str(), MASK);
            }
        }
        for s in &inner.tokens {
            if out.contains(s.as_str()) {
                out = replace_tokens(&out, s, MASK);
            }
        }
        out
    }

    /// How many bytes at the start of `text` — the part of a stream not shown yet, to which
    /// more may be added — can be masked with [`Redactor::text`] and shown now, the rest kept
    /// until more comes (or the stream ends, when all of it can).
    ///
    /// A tail that may be the start of a secret the next chunk completes (the text from some
    /// point on is the beginning of a secret form) is kept back, and the cut never falls inside
    /// a secret `text` holds whole.
    /// So every secret of the whole stream lies whole inside one of the parts masked one by
    /// one, and is masked as masking the whole stream at once would mask it (a short secret,
    /// masked only as a whole word, may be masked at a cut where the whole stream would not:
    /// more is masked, never less).
    pub fn settled(&self, text: &str) -> usize {
        let inner = self.inner.read().expect("redactor poisoned");
        let forms = || inner.anywhere.iter().chain(&inner.tokens);
        let Some(longest) = forms().map(String::len).max() else {
            return text.len();
        };
        // Only the last `longest` bytes can begin a form that more text would complete.
        let mut from = text.len().saturating_sub(longest);
        while !text.is_char_boundary(from) {
            from -= 1;
        }
        let mut cut = text[from..]
            .char_indices()
            .map(|(i, _)| from + i)
            .find(|&at| {
                let rest = &text[at..];
                forms().any(|form| form.len() > rest.len() && form.starts_with(rest))
            })
            .unwrap_or(text.len());
        loop {
            let past = forms()
                .flat_map(|form| {
                    text.match_indices(form.as_str())
                        .map(|(at, found)| (at, at + found.len()))
                })
                .filter(|&(start, end)| start < cut && end > cut)
                .map(|(_, end)| end)
                .max();
            match past {
                Some(end) => cut = end,
                None => return cut,
            }
        }
    }

    /// The value with every known secret masked in every string (keys included); a number that
    /// is a secret becomes the mask.
    pub fn value(&self, value: &Value) -> Value {
        if self.is_empty() {
            return value.clone();
        }
        match value {
            Value::String(s) => Value::String(self.text(s)),
            Value::Array(items) => Value::Array(items.iter().map(|v| self.value(v)).collect()),
            Value::Object(map) => Value::Object(
                map.iter()
                    .map(|(k, v)| (self.text(k), self.value(v)))
                    .collect(),
            ),
            Value::Number(n) => {
                let s = n.to_string();
                if self.text(&s) == s {
                    value.clone()
                } else {
                    Value::String(MASK.to_owned())
                }
            }
            Value::Null | Value::Bool(_) => value.clone(),
        }
    }

    /// The shadow of a value: every known secret inside it replaced by a different value of the
    /// same shape, so that evaluating over the shadow tells what depends on a secret.
    pub fn shadow(&self, value: &Value) -> Value {
        let inner = self.inner.read().expect("redactor poisoned");
        shadow_with(&inner, value)
    }

    /// Learns, as secrets, the parts of `real` that differ from `shadow` — the same evaluation
    /// over the real inputs and over their shadow. Booleans are never learned (a condition over
    /// a secret is not the secret).
    pub fn taint(&self, real: &Value, shadow: &Value) {
        if real == shadow {
            return;
        }
        match (real, shadow) {
            (Value::String(r), Value::String(s)) => {
                self.add_derived(differing_span(r, s).unwrap_or(r));
            }
            (Value::Number(r), _) => self.add_derived(&r.to_string()),
            (Value::Array(r), Value::Array(s)) if r.len() == s.len() => {
                for (r, s) in r.iter().zip(s) {
                    self.taint(r, s);
                }
            }
            (Value::Object(r), Value::Object(s)) => {
                for (k, rv) in r {
                    match s.get(k) {
                        Some(sv) => self.taint(rv, sv),
                        None => self.taint_all(rv),
                    }
                }
            }
            (Value::Bool(_) | Value::Null, _) => {}
            // Different shapes: everything in the real value depends on a secret.
            (other, _) => self.taint_all(other),
        }
    }

    /// Learns every string and number inside `value` as derived from a secret.
    pub fn taint_all(&self, value: &Value) {
        match value {
            Value::String(s) => self.add_derived(s),
            Value::Number(n) => self.add_derived(&n.to_string()),
            Value::Array(items) => items.iter().for_each(|v| self.taint_all(v)),
            Value::Object(map) => map.values().for_each(|v| self.taint_all(v)),
            Value::Null | Value::Bool(_) => {}
        }
    }
}

/// The encodings of a secret that a template helper, a client library or a child process may
/// put where the secret itself would not be recognised.
fn encodings(secret: &str) -> Vec<String> {
    use base64::engine::general_purpose::{STANDARD, STANDARD_NO_PAD, URL_SAFE, URL_SAFE_NO_PAD};
    let bytes = secret.as_bytes();
    let mut out = Vec::new();
    for engine in [&STANDARD, &URL_SAFE] {
        out.push(engine.encode(bytes));
    }
    for engine in [&STANDARD_NO_PAD, &URL_SAFE_NO_PAD] {
        // The characters of the encoding that depend on the secret alone, whatever comes before
        // it: the secret inside a longer base64 text, at each of the three alignments.
        for lead in 0..3_usize {
            let mut padded = vec![0_u8; lead];
            padded.extend_from_slice(bytes);
            let encoded = engine.encode(&padded);
            let first = (8 * lead).div_ceil(6);
            let last = (8 * (lead + bytes.len())) / 6;
            if last > first + 3 {
                out.push(encoded[first..last].to_owned());
            }
        }
    }
    out.push(
        percent_encoding::utf8_percent_encode(secret, percent_encoding::NON_ALPHANUMERIC)
            .to_string(),
    );
    out.push(percent_encoding::utf8_percent_encode(secret, COMPONENT).to_string());
    out.push(form_urlencoded_byte(secret));
    let json = serde_json::to_string(secret).expect("a string serializes");
    out.push(json[1..json.len() - 1].to_owned());
    out.push(shell_words::quote(secret).into_owned());
    // Inside double quotes (what the shell-context quoting of templates produces there).
    out.push(
        secret
            .chars()
            .flat_map(|c| {
                let escape = matches!(c, '$' | '`' | '"' | '\\');
                escape.then_some('\\').into_iter().chain(std::iter::once(c))
            })
            .collect(),
    );
    out.push(secret.replace('\'', r"'\''"));
    out.retain(|form| form != secret);
    out.sort();
    out.dedup();
    out
}

/// What JavaScript's `encodeURIComponent` leaves alone.
const COMPONENT: &percent_encoding::AsciiSet = &percent_encoding::NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'_')
    .remove(b'.')
    .remove(b'!')
    .remove(b'~')
    .remove(b'*')
    .remove(b'\'')
    .remove(b'(')
    .remove(b')');

/// `application/x-www-form-urlencoded` (spaces as `+`).
fn form_urlencoded_byte(secret: &str) -> String {
    percent_encoding::utf8_percent_encode(secret, FORM)
        .to_string()
        .replace("%20", "+")
}

const FORM: &percent_encoding::AsciiSet = &percent_encoding::NON_ALPHANUMERIC
    .remove(b'*')
    .remove(b'-')
    .remove(b'.')
    .remove(b'_');

/// `text` with every whole-token occurrence of `token` replaced: an occurrence counts when the
/// characters around it are not letters, digits or `_`.
fn replace_tokens(text: &str, token: &str, with: &str) -> String {
    let word = |c: Option<char>| c.is_some_and(|c| c.is_alphanumeric() || c == '_');
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    let mut before: Option<char> = None;
    while let Some(at) = rest.find(token) {
        let prev = rest[..at].chars().next_back().or(before);
        let next = rest[at + token.len()..].chars().next();
        out.push_str(&rest[..at]);
        if word(prev) || word(next) {
            // Not a whole token: keep its first character and look again after it.
            let first = token.chars().next().expect("tokens are not empty");
            out.push(first);
            before = Some(first);
            rest = &rest[at + first.len_utf8()..];
        } else {
            out.push_str(with);
            before = token.chars().next_back();
            rest = &rest[at + token.len()..];
        }
    }
    out.push_str(rest);
    out
}

fn shadow_with(inner: &Inner, value: &Value) -> Value {
    match value {
        Value::String(s) => Value::String(shadow_text(inner, s)),
        Value::Number(n) => {
            let text = n.to_string();
            if inner.tokens.contains(&text) || inner.anywhere.contains(&text) {
                shadow_number(n)
            } else {
                value.clone()
            }
        }
        Value::Array(items) => Value::Array(items.iter().map(|v| shadow_with(inner, v)).collect()),
        Value::Object(map) => Value::Object(
            map.iter()
                .map(|(k, v)| (k.clone(), shadow_with(inner, v)))
                .collect(),
        ),
        Value::Null | Value::Bool(_) => value.clone(),
    }
}

fn shadow_text(inner: &Inner, text: &str) -> String {
    let mut out = text.to_owned();
    for s in &inner.anywhere {
        if out.contains(s.as_str()) {
            out = out.replace(s.as_str(), &perturb(s));
        }
    }
    for s in &inner.tokens {
        if out.contains(s.as_str()) {
            out = replace_tokens(&out, s, &perturb(s));
        }
    }
    out
}

/// The shadow of a runbook's parameter values: every parameter declared secret replaced by a
/// different value of the same shape; the others as they are. What depends on a secret parameter
/// differs between an evaluation over the real values and one over these.
pub fn shadow_params(
    book: &crate::model::Runbook,
    clear: &serde_json::Map<String, Value>,
) -> serde_json::Map<String, Value> {
    clear
        .iter()
        .map(|(name, value)| {
            let secret = book.param(name).is_some_and(|p| p.secret);
            let shadow = if secret {
                perturb_value(value)
            } else {
                value.clone()
            };
            (name.clone(), shadow)
        })
        .collect()
}

/// A value of the same shape as a secret value with every scalar changed: what a secret step's
/// output is replaced with in the shadow.
pub fn perturb_value(value: &Value) -> Value {
    match value {
        Value::String(s) => Value::String(perturb(s)),
        Value::Number(n) => shadow_number(n),
        Value::Array(items) => Value::Array(items.iter().map(perturb_value).collect()),
        Value::Object(map) => Value::Object(
            map.iter()
                .map(|(k, v)| (k.clone(), perturb_value(v)))
                .collect(),
        ),
        Value::Null | Value::Bool(_) => value.clone(),
    }
}

/// A number with every digit changed (so no part of it survives in the shadow).
fn shadow_number(n: &serde_json::Number) -> Value {
    let text = perturb(&n.to_string().replace('-', ""));
    let negative = n.as_f64().is_some_and(|f| f < 0.0);
    if let Ok(u) = text.parse::<u64>() {
        let u = if u == n.as_u64().unwrap_or(u64::MAX) {
            u + 1
        } else {
            u
        };
        if negative {
            Value::from(-i64::try_from(u).unwrap_or(i64::MAX))
        } else {
            Value::from(u)
        }
    } else {
        // A float: `perturb` turned its `.` and `e` into letters; any other float will do.
        Value::from(n.as_f64().unwrap_or(0.0).mul_add(-1.5, 0.25))
    }
}

/// Every character changed to another of its class (digit to digit, letter to letter of the same
/// case), others to `x`: the same length and the same rough shape, never the same text.
pub fn perturb(s: &str) -> String {
    s.chars()
        .map(|c| match c {
            '0'..='9' => rotate(c, '0', 10, 5),
            'a'..='z' => rotate(c, 'a', 26, 13),
            'A'..='Z' => rotate(c, 'A', 26, 13),
            _ => 'x',
        })
        .collect()
}

fn rotate(c: char, base: char, len: u32, by: u32) -> char {
    char::from_u32((c as u32 - base as u32 + by) % len + base as u32).unwrap_or(c)
}

/// The part of `real` between the first and the last character where it differs from
/// `shadow` (both ends included), if any.
fn differing_span<'a>(real: &'a str, shadow: &str) -> Option<&'a str> {
    let prefix = real
        .char_indices()
        .zip(shadow.chars())
        .find(|((_, r), s)| r != s)
        .map_or_else(|| real.len().min(shadow.len()), |((i, _), _)| i);
    let suffix = real
        .chars()
        .rev()
        .zip(shadow.chars().rev())
        .take_while(|(r, s)| r == s)
        .map(|(r, _)| r.len_utf8())
        .sum::<usize>();
    let end = real.len().saturating_sub(suffix).max(prefix);
    let span = &real[prefix..end];
    (!span.is_empty()).then_some(span)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn masks_secrets_anywhere_in_a_value() {
        let r = Redactor::new();
        r.add("s3cr3t");
        let v = json!({"cmd": "login --token s3cr3t", "s3cr3t": 1, "list": ["a", "xs3cr3tx"]});
        assert_eq!(
            r.value(&v),
            json!({"cmd": "login --token ***", "***": 1, "list": ["a", "x***x"]})
        );
    }

    /// A stream given in `chunks`, masked part by part as [`Redactor::settled`] allows.
    fn streamed(r: &Redactor, chunks: &[&str]) -> String {
        let mut pending = String::new();
        let mut shown = String::new();
        for chunk in chunks {
            pending.push_str(chunk);
            let n = r.settled(&pending);
            shown.push_str(&r.text(&pending[..n]));
            pending.drain(..n);
        }
        shown.push_str(&r.text(&pending));
        shown
    }

    #[test]
    fn a_stream_masked_in_parts_is_masked_as_the_whole_wherever_it_is_cut() {
        let r = Redactor::new();
        r.add("hunter2-secret");
        r.add("line-one\nline-two");
        let whole = "login with hunter2-secret\ntoken aHVudGVyMi1zZWNyZXQ= then\nline-one\nline-two, done: hunter2-secret";
        let masked = r.text(whole);
        assert!(
            !masked.contains("hunter")
                && !masked.contains("aHVudGVy")
                && !masked.contains("line-one"),
            "{masked}"
        );
        let bytes = whole.len();
        for i in 0..=bytes {
            for j in i..=bytes {
                let (a, b, c) = (&whole[..i], &whole[i..j], &whole[j..]);
                assert_eq!(streamed(&r, &[a, b, c]), masked, "cut at {i} and {j}");
            }
        }
        // One byte at a time, and with nothing to mask (everything goes at once).
        let bytewise: Vec<&str> = (0..bytes).map(|i| &whole[i..=i]).collect();
        assert_eq!(streamed(&r, &bytewise), masked);
        assert_eq!(Redactor::new().settled(whole), bytes);
    }

    #[test]
    fn a_stream_keeps_back_only_what_may_begin_a_secret() {
        let r = Redactor::new();
        // One form only (no encodings), so what may begin it is plain to see.
        r.add_derived("abcdef");
        assert_eq!(r.settled("0123456789"), 10);
        // `abc` may be the start of the secret: it waits for the next chunk.
        assert_eq!(r.settled("0123456789abc"), 10);
        assert_eq!(r.settled("xxabcdeab"), 7);
        // A secret held whole goes with what is before it.
        assert_eq!(r.settled("0123abcdefXY"), 12);
        // A cut never splits a UTF-8 character.
        let r = Redactor::new();
        r.add_derived("éa1");
        assert_eq!(r.settled("xxé"), 2);
    }

    #[test]
    fn a_short_secret_streamed_is_masked_at_least_where_the_whole_would_be() {
        let r = Redactor::new();
        r.add("pin");
        let whole = "pin: pin, spinning, pin";
        let masked = r.text(whole);
        assert_eq!(masked, "***: ***, spinning, ***");
        for i in 0..=whole.len() {
            let shown = streamed(&r, &[&whole[..i], &whole[i..]]);
            assert!(shown.matches("***").count() >= 3, "cut at {i}: {shown}");
            assert!(
                !shown.contains(" pin") && !shown.starts_with("pin"),
                "cut at {i}: {shown}"
            );
        }
    }

    #[test]
    fn longer_secrets_are_masked_whole() {
        let r = Redactor::new();
        r.add("abcd");
        r.add("abcdef");
        assert_eq!(r.text("x abcdef y abcd"), "x *** y ***");
    }

    #[test]
    fn values_of_secret_outputs_are_learned() {
        let r = Redactor::new();
        r.add_value(&json!({"root_token": "hvs.123", "keys": ["k1k1k1"], "exit_code": 0}));
        r.add_value(&json!(424_242));
        assert_eq!(r.text("hvs.123 k1k1k1 424242"), "*** *** ***");
        assert_eq!(r.value(&json!(424_242)), json!("***"));
        // An exit code inside a secret output is not a secret.
        assert_eq!(r.text("exit 0 after 10s"), "exit 0 after 10s");
    }

    #[test]
    fn a_secret_is_masked_with_or_without_its_trailing_newline() {
        let r = Redactor::new();
        r.add_value(&json!({"stdout": "pw-123\n", "stderr": "\n"}));
        assert_eq!(r.text("use pw-123 now"), "use *** now");
        assert_eq!(r.text("pw-123\n"), "***\n");
        assert_eq!(r.text("a\nb"), "a\nb", "blank strings are not secrets");
    }

    #[test]
    fn short_strings_of_a_secret_output_are_structure_not_secrets() {
        let r = Redactor::new();
        r.add_output(&json!({"status": "ok", "token": "s.abcdef", "keys": ["k1k1k1"]}));
        assert_eq!(r.text("ok s.abcdef k1k1k1"), "ok *** ***");
    }

    #[test]
    fn lines_of_a_secret_output_are_secrets_on_their_own() {
        let r = Redactor::new();
        r.add_output(&json!({"stdout": "user=admin\npassword=hunter22\n"}));
        assert_eq!(r.text("got password=hunter22 ok"), "got *** ok");
    }

    #[test]
    fn a_short_secret_is_masked_only_as_a_whole_token() {
        let r = Redactor::new();
        r.add("x");
        r.add("42");
        assert_eq!(
            r.text("exited 0; token x, pin=42, 1420 /v1/sys/x/"),
            "exited 0; token ***, pin=***, 1420 /v1/sys/***/"
        );
        assert_eq!(r.value(&json!(42)), json!("***"));
        assert_eq!(r.value(&json!(420)), json!(420));
        assert_eq!(replace_tokens("xx x xx", "x", "*"), "xx * xx");
    }

    #[test]
    fn encodings_of_a_secret_are_masked() {
        let r = Redactor::new();
        let secret = "p4ss'w\"o$rd/+";
        r.add(secret);
        let b64 = base64::engine::general_purpose::STANDARD;
        for (what, text) in [
            ("base64", b64.encode(secret)),
            ("basic auth", b64.encode(format!("admin:{secret}"))),
            (
                "basic auth, other alignment",
                b64.encode(format!("adm:{secret}")),
            ),
            (
                "basic auth, third alignment",
                b64.encode(format!("ad:{secret}")),
            ),
            (
                "url",
                percent_encoding::utf8_percent_encode(secret, percent_encoding::NON_ALPHANUMERIC)
                    .to_string(),
            ),
            ("json", serde_json::to_string(secret).unwrap()),
            ("shell", shell_words::quote(secret).into_owned()),
        ] {
            let masked = r.text(&format!("<{text}>"));
            assert!(masked.contains(MASK), "{what}: {text} → {masked}");
            assert!(
                !masked.contains(&text) && !masked.contains(secret),
                "{what}: {masked}"
            );
        }
    }

    #[test]
    fn taint_learns_what_differs_between_the_real_and_the_shadow_result() {
        let r = Redactor::new();
        r.add("s3cr3t-value");
        let real = json!({"cmd": "curl -H 'Authorization: Bearer czNjcjN0LXZhbHVl' http://x", "n": 3, "ok": true});
        let input = json!("s3cr3t-value");
        assert_ne!(r.shadow(&input), input);
        let shadow = json!({"cmd": "curl -H 'Authorization: Bearer ZmZmZmZmZmZmZmZm' http://x", "n": 3, "ok": false});
        r.taint(&real, &shadow);
        let masked = r.value(&real);
        assert_eq!(
            masked,
            json!({"cmd": "curl -H 'Authorization: Bearer ***' http://x", "n": 3, "ok": true})
        );
        // A secret number and a secret step's output in the shadow.
        r.add("987654321");
        assert_eq!(r.shadow(&json!(987_654_321)), json!(432_109_876));
        assert_ne!(
            perturb_value(&json!({"pin": 12, "s": "ab"})),
            json!({"pin": 12, "s": "ab"})
        );
    }

    #[test]
    fn perturbing_changes_every_character() {
        for s in ["abc", "XYZ", "0123456789", "a-b_c", "x", "é"] {
            let p = perturb(s);
            assert_eq!(p.chars().count(), s.chars().count());
            assert!(p.chars().zip(s.chars()).all(|(a, b)| a != b), "{s} → {p}");
        }
    }

    #[test]
    fn the_differing_span_covers_every_difference() {
        assert_eq!(differing_span("a-SECRET-b", "a-XXXXXX-b"), Some("SECRET"));
        assert_eq!(differing_span("S1 and S2", "X1 and X2"), Some("S1 and S"));
        assert_eq!(differing_span("same", "same"), None);
        assert_eq!(differing_span("longer", "long"), Some("er"));
        assert_eq!(differing_span("é1", "é2"), Some("1"));
    }
}
