//! Quoting values for their place in a POSIX shell script.
//!
//! A shell template is rendered with every interpolated value replaced by a marker (see
//! `template.rs`); this module lexes the result — the template's own text, which is trusted —
//! to learn where each marker stands, and puts each value back quoted for that place:
//!
//! | place | the value becomes |
//! |---|---|
//! | a word, unquoted (also inside `$(…)`, `(…)`, `<(…)`) | one single-quoted word: `'…'`, a `'` as `'\''` |
//! | inside `"…"` (and `$"…"`) | `\` before `$`, `` ` ``, `"`, `\` |
//! | inside `"${…}"` | the same, and `\}`; a value with a `'` is refused (bash wants it balanced, dash does not) |
//! | inside `'…'` | spliced in, a `'` as `'\''` |
//! | a here-document body, unquoted delimiter | `\` before `$`, `` ` ``, `\` (`"` is not special there) |
//! | a here-document body, quoted delimiter | as it is |
//! | a `#` comment | newlines become spaces |
//! | arithmetic: `$((…))`, `$[…]`, `((…))`, `let`, `[[ … -eq … ]]`, `${x:N}`, `${a[N]}`, `a[N]=` | only an integer is accepted, as it is |
//!
//! `!` is not escaped: history expansion exists only in interactive shells, and `\!` inside
//! double quotes would reach the command as two characters.
//!
//! Refused, because no quoting is safe there: a value inside backticks (`$(…)` works), inside
//! `$'…'` (dash reads it as `$` and a single-quoted string, bash does not), right after an
//! escaping `\` or after `$`, in a here-document's delimiter, inside quotes nested in
//! `"${…}"` and inside `${…}` in a here-document (shells disagree on both), and any value
//! whose lines would end a here-document early. Bash evaluates arithmetic recursively — `a[$(cmd)]` runs `cmd` even from a quoted
//! string — hence the integer rule; bash arithmetic this lexer cannot see (`declare -i`
//! variables, `test -eq` in ksh) is the runbook author's to guard, with an `int` parameter.

use std::fmt;

/// What one interpolation produced.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Piece {
    /// A value's text.
    Value(String),
    /// A list's items (`{{sh list}}`): separate words where a word is expected.
    Words(Vec<String>),
    /// Shell text the author declared trusted (`{{unsafe_raw x}}`), put in as it is.
    Raw(String),
}

/// One token of a marked script: a character of trusted text, or an interpolation.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Tok {
    /// A character of trusted text.
    C(char),
    /// The interpolation with this index.
    M(usize),
}

/// Where an interpolation stands in the script.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Place {
    /// A word, or part of one, outside quotes.
    Unquoted,
    /// Inside double quotes.
    Double,
    /// Inside `${…}` inside double quotes.
    DoubleBrace,
    /// Inside single quotes.
    Single,
    /// In the body of a here-document whose delimiter is not quoted.
    Heredoc,
    /// In the body of a here-document whose delimiter is quoted.
    HeredocLiteral,
    /// In a `#` comment.
    Comment,
    /// Where the shell evaluates arithmetic.
    Arithmetic,
}

/// Why an interpolation cannot be quoted where it stands.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Refused {
    /// Inside backticks.
    Backtick,
    /// Inside `$'…'`.
    AnsiC,
    /// Right after a `\` that escapes it.
    AfterBackslash,
    /// Right after `$`.
    AfterDollar,
    /// In a here-document's delimiter word.
    HeredocWord,
    /// Inside quotes nested in `"${…}"`.
    QuoteInBrace,
    /// Inside `${…}` in a here-document.
    BraceInHeredoc,
}

impl fmt::Display for Refused {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Refused::Backtick => {
                "a value inside backticks cannot be quoted safely; write $(…) instead of `…`"
            }
            Refused::AnsiC => {
                "a value inside $'…' cannot be quoted safely; use '…' or \"…\" around it instead"
            }
            Refused::AfterBackslash => {
                "a value right after a `\\` would have its first character escaped; remove the `\\`"
            }
            Refused::AfterDollar => {
                "a value right after `$` would be read as part of an expansion; put a space or a quote between them"
            }
            Refused::HeredocWord => {
                "a value cannot be a here-document's delimiter; write the delimiter literally"
            }
            Refused::BraceInHeredoc => {
                "a value inside ${…} in a here-document cannot be quoted safely (bash and dash read it differently); set a variable before the here-document and use it"
            }
            Refused::QuoteInBrace => {
                "a value inside quotes inside \"${…}\" cannot be quoted safely (shells disagree on those quotes); drop the inner quotes"
            }
        })
    }
}

/// A value that cannot be put where it stands.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum QuoteError {
    /// The place refuses every value.
    Refused(Refused),
    /// Arithmetic takes integers only.
    NotAnInteger,
    /// The lexer did not reach the value (a bug: refused rather than guessed).
    Unplaced,
    /// A line of the value would end the here-document early.
    EndsHeredoc(String),
    /// A `'` inside `"${…}"`, where bash needs quotes balanced and dash does not.
    QuoteInBraceValue,
}

impl fmt::Display for QuoteError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            QuoteError::Refused(r) => r.fmt(f),
            QuoteError::NotAnInteger => f.write_str(
                "a value that is not an integer stands where the shell evaluates arithmetic (bash runs commands hidden in an arithmetic operand, even a quoted one); give an `int` parameter",
            ),
            QuoteError::QuoteInBraceValue => f.write_str(
                "a value with a `'` cannot stand inside \"${…}\" (bash and dash read it differently); set a variable first and use \"$VAR\"",
            ),
            QuoteError::Unplaced => f.write_str("a value could not be placed in the shell text"),
            QuoteError::EndsHeredoc(d) => write!(
                f,
                "a value has a line `{d}` that would end the here-document early; the rest would run as commands"
            ),
        }
    }
}

/// The place of each interpolation of `toks` (by index), and the here-documents.
#[derive(Debug, Default)]
pub struct Lexed {
    /// `(interpolation, its place or why it has none)`, in text order.
    pub places: Vec<(usize, Result<Place, Refused>)>,
    /// Here-document bodies, as token ranges.
    docs: Vec<Doc>,
}

/// A here-document body.
#[derive(Debug)]
struct Doc {
    start: usize,
    end: usize,
    delimiter: String,
    strip_tabs: bool,
}

/// A here-document whose body starts at the next newline.
#[derive(Debug)]
struct PendingDoc {
    delimiter: String,
    strip_tabs: bool,
    quoted: bool,
}

/// A nesting level of the lexer.
#[derive(Debug)]
enum Frame {
    /// Commands: the script, `$(…)`, `(…)`, `<(…)`.
    Code(Code),
    /// `"…"`.
    Double,
    /// `${…}`.
    Brace {
        /// Where the `${` stands.
        within: Within,
        /// The text after `${` so far (a value counts as `x`).
        seen: String,
        /// A quote was seen inside a double-quoted `${…}`.
        nested_quote: bool,
    },
    /// `$((…))` or `((…))` (or bash's old `$[…]`: `bracket`), with the depth of inner
    /// parentheses (brackets).
    Arith { depth: u32, bracket: bool },
    /// The body of a here-document with an unquoted delimiter.
    Body,
}

/// Where a `${…}` stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Within {
    /// Outside quotes.
    Code,
    /// Inside double quotes.
    Double,
    /// In a here-document body, where bash and dash disagree on quotes and backslashes.
    Body,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum CodeKind {
    Top,
    Subst,
    Paren,
}

#[derive(Debug)]
struct Code {
    kind: CodeKind,
    /// Open `case` commands (their pattern `)` closes nothing).
    case_depth: u32,
    /// The next word stands where a command name does.
    cmd: bool,
    /// The literal characters of the current word.
    word: String,
    /// The current word is plain text (no quotes, expansions or values).
    plain: bool,
    /// Inside a word.
    in_word: bool,
    /// The command is `let`: its arguments are arithmetic.
    let_cmd: bool,
    /// Inside `[[ … ]]`: the index in `places` where it started, and whether an arithmetic
    /// comparison was seen.
    dbracket: Option<(usize, bool)>,
}

impl Code {
    fn new(kind: CodeKind) -> Self {
        Code {
            kind,
            case_depth: 0,
            cmd: true,
            word: String::new(),
            plain: true,
            in_word: false,
            let_cmd: false,
            dbracket: None,
        }
    }
}

/// Words that leave the next word in command position.
const LEADING_KEYWORDS: &[&str] = &[
    "if", "then", "else", "elif", "do", "while", "until", "!", "{", "}", "time", "fi", "done",
];

/// `[[ … ]]` operators that compare arithmetically.
const ARITH_TESTS: &[&str] = &["-eq", "-ne", "-lt", "-le", "-gt", "-ge"];

struct Lexer<'t> {
    toks: &'t [Tok],
    i: usize,
    end: usize,
    stack: Vec<Frame>,
    pending: Vec<PendingDoc>,
    out: Lexed,
}

/// Lexes a marked script.
pub fn lex(toks: &[Tok]) -> Lexed {
    let mut lexer = Lexer {
        toks,
        i: 0,
        end: toks.len(),
        stack: vec![Frame::Code(Code::new(CodeKind::Top))],
        pending: Vec::new(),
        out: Lexed::default(),
    };
    lexer.run();
    lexer.out
}

impl Lexer<'_> {
    fn at(&self, i: usize) -> Option<Tok> {
        (i < self.end).then(|| self.toks[i])
    }

    fn is(&self, i: usize, c: char) -> bool {
        self.at(i) == Some(Tok::C(c))
    }

    fn record(&mut self, index: usize, place: Result<Place, Refused>) {
        let in_arith = self.stack.iter().any(|f| matches!(f, Frame::Arith { .. }));
        let place = match place {
            Ok(_) if in_arith => Ok(Place::Arithmetic),
            other => other,
        };
        self.out.places.push((index, place));
    }

    fn code(&mut self) -> Option<&mut Code> {
        match self.stack.last_mut() {
            Some(Frame::Code(c)) => Some(c),
            _ => None,
        }
    }

    /// Marks the current word as not plain text (it has quotes, an expansion or a value).
    fn touch_word(&mut self) {
        if let Some(c) = self.code() {
            c.in_word = true;
            c.plain = false;
        }
    }

    fn run(&mut self) {
        while self.i < self.end {
            match self.stack.last() {
                Some(Frame::Code(_)) => self.step_code(),
                Some(Frame::Double) => self.step_double(),
                Some(Frame::Brace { .. }) => self.step_brace(),
                Some(Frame::Arith { .. }) => self.step_arith(),
                Some(Frame::Body) => self.step_body(),
                None => break,
            }
        }
        if let Some(Frame::Code(_)) = self.stack.last() {
            self.end_word();
        }
    }

    /// `$…` at `self.i` (the `$` itself): expansions that nest, or a refusal.
    fn dollar(&mut self, within: Within) {
        let quoted = within != Within::Code;
        let i = self.i;
        match self.at(i + 1) {
            Some(Tok::C('(')) if self.is(i + 2, '(') => {
                self.stack.push(Frame::Arith {
                    depth: 0,
                    bracket: false,
                });
                self.i += 3;
            }
            Some(Tok::C('[')) => {
                self.stack.push(Frame::Arith {
                    depth: 0,
                    bracket: true,
                });
                self.i += 2;
            }
            Some(Tok::C('(')) => {
                self.stack.push(Frame::Code(Code::new(CodeKind::Subst)));
                self.i += 2;
            }
            Some(Tok::C('{')) => {
                self.stack.push(Frame::Brace {
                    within,
                    seen: String::new(),
                    nested_quote: false,
                });
                self.i += 2;
            }
            Some(Tok::C('\'')) if !quoted => {
                self.i += 2;
                self.ansi_c();
            }
            Some(Tok::C('"')) if !quoted => {
                self.stack.push(Frame::Double);
                self.i += 2;
            }
            Some(Tok::M(m)) => {
                self.record(m, Err(Refused::AfterDollar));
                self.i += 2;
            }
            _ => self.i += 1,
        }
    }

    /// After `\` at `self.i`: `escapes` are the characters it escapes here.
    fn backslash(&mut self, escapes: &[char]) {
        match self.at(self.i + 1) {
            Some(Tok::M(m)) => {
                self.record(m, Err(Refused::AfterBackslash));
                self.i += 2;
            }
            Some(Tok::C(c)) if escapes.is_empty() || escapes.contains(&c) => self.i += 2,
            _ => self.i += 1,
        }
    }

    /// Skips `'…'` from after the opening quote; values inside are in `place`.
    fn single(&mut self, place: Result<Place, Refused>) {
        while let Some(t) = self.at(self.i) {
            self.i += 1;
            match t {
                Tok::C('\'') => return,
                Tok::M(m) => self.record(m, place),
                Tok::C(_) => {}
            }
        }
    }

    /// Skips `$'…'` from after the opening quote.
    fn ansi_c(&mut self) {
        while let Some(t) = self.at(self.i) {
            self.i += 1;
            match t {
                Tok::C('\'') => return,
                Tok::C('\\') => {
                    if let Some(Tok::M(m)) = self.at(self.i) {
                        self.record(m, Err(Refused::AnsiC));
                    }
                    self.i += 1;
                }
                Tok::M(m) => self.record(m, Err(Refused::AnsiC)),
                Tok::C(_) => {}
            }
        }
    }

    /// Skips `` `…` `` from after the opening backtick.
    fn backtick(&mut self) {
        while let Some(t) = self.at(self.i) {
            self.i += 1;
            match t {
                Tok::C('`') => return,
                Tok::C('\\') => {
                    if let Some(Tok::M(m)) = self.at(self.i) {
                        self.record(m, Err(Refused::Backtick));
                    }
                    self.i += 1;
                }
                Tok::M(m) => self.record(m, Err(Refused::Backtick)),
                Tok::C(_) => {}
            }
        }
    }

    fn step_code(&mut self) {
        let Some(t) = self.at(self.i) else { return };
        match t {
            Tok::M(m) => {
                let arith = self
                    .code()
                    .is_some_and(|c| c.let_cmd || open_subscript(&c.word));
                self.touch_word();
                let place = if arith {
                    Place::Arithmetic
                } else {
                    Place::Unquoted
                };
                self.record(m, Ok(place));
                self.i += 1;
            }
            Tok::C(c) => self.code_char(c),
        }
    }

    fn code_char(&mut self, c: char) {
        let i = self.i;
        match c {
            '\\' => {
                if self.is(i + 1, '\n') {
                    self.i += 2;
                    return;
                }
                self.touch_word();
                self.backslash(&[]);
            }
            '\'' => {
                self.touch_word();
                self.i += 1;
                self.single(Ok(Place::Single));
            }
            '"' => {
                self.touch_word();
                self.stack.push(Frame::Double);
                self.i += 1;
            }
            '`' => {
                self.touch_word();
                self.i += 1;
                self.backtick();
            }
            '$' => {
                self.touch_word();
                self.dollar(Within::Code);
            }
            '#' if !self.code().is_some_and(|c| c.in_word) => {
                while let Some(t) = self.at(self.i) {
                    match t {
                        Tok::C('\n') => break,
                        Tok::M(m) => self.record(m, Ok(Place::Comment)),
                        Tok::C(_) => {}
                    }
                    self.i += 1;
                }
            }
            '\n' => {
                self.end_word();
                self.i += 1;
                self.separator();
                self.heredoc_bodies();
            }
            ' ' | '\t' => {
                self.end_word();
                self.i += 1;
            }
            ';' | '&' | '|' => {
                self.end_word();
                self.i += 1;
                self.separator();
            }
            '(' => {
                let at_start = !self.code().is_some_and(|c| c.in_word);
                self.end_word();
                if self.is(i + 1, '(') && at_start {
                    self.stack.push(Frame::Arith {
                        depth: 0,
                        bracket: false,
                    });
                    self.i += 2;
                } else {
                    self.stack.push(Frame::Code(Code::new(CodeKind::Paren)));
                    self.i += 1;
                }
            }
            ')' => {
                self.end_word();
                self.i += 1;
                let code = self.code().expect("in code");
                if code.case_depth > 0 {
                    code.cmd = true;
                } else if code.kind != CodeKind::Top {
                    self.stack.pop();
                }
            }
            '<' | '>' => {
                self.end_word();
                if self.is(i + 1, '(') {
                    self.stack.push(Frame::Code(Code::new(CodeKind::Subst)));
                    self.i += 2;
                } else if c == '<' && self.is(i + 1, '<') && !self.is(i + 2, '<') {
                    self.i += 2;
                    self.heredoc_word();
                } else {
                    self.i += 1;
                    while matches!(self.at(self.i), Some(Tok::C('<' | '>' | '&' | '|'))) {
                        self.i += 1;
                    }
                }
            }
            other => {
                if let Some(code) = self.code() {
                    code.in_word = true;
                    code.word.push(other);
                }
                self.i += 1;
            }
        }
    }

    /// After `;`, `&`, `|` or a newline: a new command starts (`[[ … ]]` spans them).
    fn separator(&mut self) {
        if let Some(code) = self.code() {
            if code.dbracket.is_none() {
                code.cmd = true;
                code.let_cmd = false;
            }
        }
    }

    /// Ends the current word of a `Code` frame, noting keywords.
    fn end_word(&mut self) {
        let start = self.out.places.len();
        let Some(code) = self.code() else { return };
        if !code.in_word {
            return;
        }
        let word = std::mem::take(&mut code.word);
        let plain = code.plain;
        code.in_word = false;
        code.plain = true;
        let kw = if plain { word.as_str() } else { "" };
        if let Some((from, arith)) = code.dbracket {
            if kw == "]]" {
                code.dbracket = None;
                code.cmd = false;
                if arith {
                    self.arithmetic_since(from);
                }
            } else if ARITH_TESTS.contains(&kw) {
                code.dbracket = Some((from, true));
            }
            return;
        }
        if !code.cmd {
            return;
        }
        match kw {
            "case" => {
                code.case_depth += 1;
                code.cmd = false;
            }
            "esac" if code.case_depth > 0 => {
                code.case_depth -= 1;
                code.cmd = false;
            }
            "[[" => {
                code.dbracket = Some((start, false));
                code.cmd = false;
            }
            "let" => {
                code.let_cmd = true;
                code.cmd = false;
            }
            k if LEADING_KEYWORDS.contains(&k) => {}
            _ if is_assignment(&word) => {}
            _ => code.cmd = false,
        }
    }

    /// Values found since `from` stand in arithmetic.
    fn arithmetic_since(&mut self, from: usize) {
        for (_, place) in &mut self.out.places[from..] {
            if place.is_ok() {
                *place = Ok(Place::Arithmetic);
            }
        }
    }

    /// Reads the delimiter word after `<<` (at `self.i`).
    fn heredoc_word(&mut self) {
        let strip_tabs = self.is(self.i, '-');
        if strip_tabs {
            self.i += 1;
        }
        while matches!(self.at(self.i), Some(Tok::C(' ' | '\t'))) {
            self.i += 1;
        }
        let mut delimiter = String::new();
        let mut quoted = false;
        let mut valid = true;
        while let Some(t) = self.at(self.i) {
            match t {
                Tok::C(' ' | '\t' | '\n' | ';' | '&' | '|' | '<' | '>' | '(' | ')') => break,
                Tok::C(q @ ('\'' | '"')) => {
                    quoted = true;
                    self.i += 1;
                    while let Some(t) = self.at(self.i) {
                        self.i += 1;
                        match t {
                            Tok::C(c) if c == q => break,
                            Tok::C(c) => delimiter.push(c),
                            Tok::M(m) => {
                                self.record(m, Err(Refused::HeredocWord));
                                valid = false;
                            }
                        }
                    }
                    continue;
                }
                Tok::C('\\') => {
                    quoted = true;
                    match self.at(self.i + 1) {
                        Some(Tok::C(c)) => delimiter.push(c),
                        Some(Tok::M(m)) => {
                            self.record(m, Err(Refused::HeredocWord));
                            valid = false;
                        }
                        None => {}
                    }
                    self.i += 2;
                    continue;
                }
                Tok::C(c) => delimiter.push(c),
                Tok::M(m) => {
                    self.record(m, Err(Refused::HeredocWord));
                    valid = false;
                }
            }
            self.i += 1;
        }
        if valid && !delimiter.is_empty() {
            self.pending.push(PendingDoc {
                delimiter,
                strip_tabs,
                quoted,
            });
        }
    }

    /// At the start of a line after `<<` operators: reads their bodies.
    fn heredoc_bodies(&mut self) {
        for doc in std::mem::take(&mut self.pending) {
            let start = self.i;
            let mut end = self.end;
            while self.i < self.end {
                let line_start = self.i;
                let mut line = String::new();
                let mut has_value = false;
                while let Some(t) = self.at(self.i) {
                    self.i += 1;
                    match t {
                        Tok::C('\n') => break,
                        Tok::C(c) => line.push(c),
                        Tok::M(_) => has_value = true,
                    }
                }
                let text = if doc.strip_tabs {
                    line.trim_start_matches('\t')
                } else {
                    &line
                };
                if !has_value && text == doc.delimiter {
                    end = line_start;
                    break;
                }
            }
            if doc.quoted {
                for t in &self.toks[start..end] {
                    if let Tok::M(m) = *t {
                        self.record(m, Ok(Place::HeredocLiteral));
                    }
                }
            } else {
                let mut body = Lexer {
                    toks: self.toks,
                    i: start,
                    end,
                    stack: vec![Frame::Body],
                    pending: Vec::new(),
                    out: Lexed::default(),
                };
                body.run();
                self.out.places.extend(body.out.places);
                self.out.docs.extend(body.out.docs);
            }
            self.out.docs.push(Doc {
                start,
                end,
                delimiter: doc.delimiter,
                strip_tabs: doc.strip_tabs,
            });
        }
    }

    fn step_double(&mut self) {
        let Some(t) = self.at(self.i) else { return };
        match t {
            Tok::M(m) => {
                self.record(m, Ok(Place::Double));
                self.i += 1;
            }
            Tok::C('"') => {
                self.stack.pop();
                self.i += 1;
            }
            Tok::C('\\') => self.backslash(&['$', '`', '"', '\\', '\n']),
            Tok::C('$') => self.dollar(Within::Double),
            Tok::C('`') => {
                self.i += 1;
                self.backtick();
            }
            Tok::C(_) => self.i += 1,
        }
    }

    fn step_body(&mut self) {
        let Some(t) = self.at(self.i) else { return };
        match t {
            Tok::M(m) => {
                self.record(m, Ok(Place::Heredoc));
                self.i += 1;
            }
            Tok::C('\\') => self.backslash(&['$', '`', '\\', '\n']),
            Tok::C('$') => self.dollar(Within::Body),
            Tok::C('`') => {
                self.i += 1;
                self.backtick();
            }
            Tok::C(_) => self.i += 1,
        }
    }

    fn step_brace(&mut self) {
        let Some(t) = self.at(self.i) else { return };
        let Some(Frame::Brace {
            within,
            seen,
            nested_quote,
        }) = self.stack.last()
        else {
            return;
        };
        let (within, nested_quote, arith) = (*within, *nested_quote, brace_arithmetic(seen));
        let quoted = within != Within::Code;
        let seen_char = match t {
            Tok::M(_) => Some('x'),
            Tok::C('\\') => match self.at(self.i + 1) {
                Some(Tok::C(c)) => Some(c),
                _ => None,
            },
            Tok::C('}') => None,
            Tok::C(c) => Some(c),
        };
        if let (Some(c), Some(Frame::Brace { seen, .. })) = (seen_char, self.stack.last_mut()) {
            seen.push(c);
        }
        match t {
            Tok::M(m) => {
                let place = if within == Within::Body {
                    Err(Refused::BraceInHeredoc)
                } else if nested_quote {
                    Err(Refused::QuoteInBrace)
                } else if arith {
                    Ok(Place::Arithmetic)
                } else if quoted {
                    Ok(Place::DoubleBrace)
                } else {
                    Ok(Place::Unquoted)
                };
                self.record(m, place);
                self.i += 1;
            }
            Tok::C('}') => {
                self.stack.pop();
                self.i += 1;
            }
            Tok::C('\'' | '"') if quoted => {
                if let Some(Frame::Brace { nested_quote, .. }) = self.stack.last_mut() {
                    *nested_quote = true;
                }
                self.i += 1;
            }
            Tok::C('\'') => {
                self.i += 1;
                self.single(Ok(Place::Single));
            }
            Tok::C('"') => {
                self.stack.push(Frame::Double);
                self.i += 1;
            }
            Tok::C('\\') => self.backslash(&[]),
            Tok::C('$') => self.dollar(within),
            Tok::C('`') => {
                self.i += 1;
                self.backtick();
            }
            Tok::C(_) => self.i += 1,
        }
    }

    fn step_arith(&mut self) {
        let Some(t) = self.at(self.i) else { return };
        let Some(&Frame::Arith { depth, bracket }) = self.stack.last() else {
            return;
        };
        let (open, close) = if bracket { ('[', ']') } else { ('(', ')') };
        match t {
            Tok::M(m) => {
                self.record(m, Ok(Place::Arithmetic));
                self.i += 1;
            }
            Tok::C(c) if c == open => {
                self.stack.pop();
                self.stack.push(Frame::Arith {
                    depth: depth + 1,
                    bracket,
                });
                self.i += 1;
            }
            Tok::C(c) if c == close => {
                self.i += 1;
                self.stack.pop();
                if depth > 0 {
                    self.stack.push(Frame::Arith {
                        depth: depth - 1,
                        bracket,
                    });
                } else if !bracket && self.is(self.i, ')') {
                    self.i += 1;
                }
            }
            Tok::C('\\') => self.backslash(&[]),
            Tok::C('$') => self.dollar(Within::Code),
            Tok::C('\'') => {
                self.i += 1;
                self.single(Ok(Place::Arithmetic));
            }
            Tok::C('"') => {
                self.stack.push(Frame::Double);
                self.i += 1;
            }
            Tok::C('`') => {
                self.i += 1;
                self.backtick();
            }
            Tok::C(_) => self.i += 1,
        }
    }
}

/// `NAME=…`: an assignment, after which a command name may still come.
fn is_assignment(word: &str) -> bool {
    word.split_once('=').is_some_and(|(name, _)| {
        name.chars()
            .next()
            .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
            && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
    })
}

/// A word with an unclosed `[` so far (`arr[` of `arr[N]=…`): bash evaluates the subscript.
fn open_subscript(word: &str) -> bool {
    word.rfind('[')
        .is_some_and(|open| !word[open..].contains(']'))
}

/// Whether the text after `${` so far puts what follows in arithmetic: a subscript
/// (`${a[N]}`) or a substring offset or length (`${x:N}`, `${x:1:N}`).
fn brace_arithmetic(seen: &str) -> bool {
    let rest = seen.strip_prefix(['#', '!']).unwrap_or(seen);
    let name_len = match rest.chars().next() {
        Some(c) if c.is_ascii_alphabetic() || c == '_' => rest
            .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
            .unwrap_or(rest.len()),
        Some(c) if c.is_ascii_digit() => rest
            .find(|c: char| !c.is_ascii_digit())
            .unwrap_or(rest.len()),
        Some('@' | '*' | '#' | '?' | '-' | '$' | '!') => 1,
        _ => return false,
    };
    let mut after = &rest[name_len..];
    if let Some(sub) = after.strip_prefix('[') {
        match sub.find(']') {
            None => return true,
            Some(close) => after = &sub[close + 1..],
        }
    }
    match after.strip_prefix(':') {
        Some(op) => !op.starts_with(['-', '=', '?', '+']),
        None => false,
    }
}

/// Quotes every piece for its place and returns the script, and for each value the text it
/// became (for the redaction of secrets).
pub fn substitute(
    toks: &[Tok],
    pieces: &[Piece],
    lexed: &Lexed,
) -> Result<(String, Vec<(String, String)>), QuoteError> {
    let mut places = vec![None; pieces.len()];
    for (index, place) in &lexed.places {
        let place = place.map_err(QuoteError::Refused)?;
        if let Some(slot) = places.get_mut(*index) {
            *slot = Some(place);
        }
    }
    let mut out = String::new();
    let mut offsets = Vec::with_capacity(toks.len() + 1);
    let mut written = Vec::new();
    for t in toks {
        offsets.push(out.len());
        match *t {
            Tok::C(c) => out.push(c),
            Tok::M(m) => {
                let place = places
                    .get(m)
                    .copied()
                    .flatten()
                    .ok_or(QuoteError::Unplaced)?;
                let piece = &pieces[m];
                let text = quote(piece, place)?;
                out.push_str(&text);
                match piece {
                    Piece::Value(v) => written.push((v.clone(), text)),
                    Piece::Words(items) => written.push((items.join(" "), text)),
                    Piece::Raw(_) => {}
                }
            }
        }
    }
    offsets.push(out.len());
    for doc in &lexed.docs {
        let body = &out[offsets[doc.start]..offsets[doc.end]];
        for line in body.split('\n') {
            let line = if doc.strip_tabs {
                line.trim_start_matches('\t')
            } else {
                line
            };
            if line == doc.delimiter {
                return Err(QuoteError::EndsHeredoc(doc.delimiter.clone()));
            }
        }
    }
    Ok((out, written))
}

/// A piece's text for its place.
pub fn quote(piece: &Piece, place: Place) -> Result<String, QuoteError> {
    let text = match piece {
        Piece::Raw(raw) => return Ok(raw.clone()),
        Piece::Words(items) if place == Place::Unquoted => {
            return Ok(items
                .iter()
                .map(|w| single_quoted(w))
                .collect::<Vec<_>>()
                .join(" "));
        }
        Piece::Words(items) => items.join(" "),
        Piece::Value(v) => v.clone(),
    };
    Ok(match place {
        Place::Unquoted => single_quoted(&text),
        Place::Double => backslashed(&text, &['$', '`', '"', '\\']),
        Place::DoubleBrace if text.contains('\'') => return Err(QuoteError::QuoteInBraceValue),
        Place::DoubleBrace => backslashed(&text, &['$', '`', '"', '\\', '}']),
        Place::Single => text.replace('\'', r"'\''"),
        Place::Heredoc => backslashed(&text, &['$', '`', '\\']),
        Place::HeredocLiteral => text,
        Place::Comment => text.replace('\n', " "),
        Place::Arithmetic => {
            let digits = text.strip_prefix('-').unwrap_or(&text);
            if digits.is_empty() || !digits.chars().all(|c| c.is_ascii_digit()) {
                return Err(QuoteError::NotAnInteger);
            }
            text
        }
    })
}

/// `'text'`, each `'` as `'\''`.
pub fn single_quoted(text: &str) -> String {
    format!("'{}'", text.replace('\'', r"'\''"))
}

fn backslashed(text: &str, special: &[char]) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        if special.contains(&c) {
            out.push('\\');
        }
        out.push(c);
    }
    out
}
