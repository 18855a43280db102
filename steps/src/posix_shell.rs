//! Which argument of an argv a POSIX shell will parse as a script.
//!
//! A kind that runs an argv (`shell`'s `args`, `kube`'s exec `command`) hands a string to a
//! shell when the program is one (`sh`, `bash`, `dash`, `zsh`, `ksh`, `mksh`, `ash`, or
//! `busybox sh|ash`, by basename) and either a `-c`-style option (`-c`, `-ec`, `-euxc` …) is
//! given — then the script is the first operand after the options — or no operand is given
//! (or `-s` is), in which case the shell reads its script from standard input. The runner
//! renders templates in those strings with every value quoted for its place in the script.
//!
//! Only what the argv says is known: a program that itself runs a shell (`env sh -c`,
//! `sudo sh -c`, `ssh host CMD`, `kubectl exec … -- sh -c`) is not recognised.

use serde_json::Value;

/// Shells whose command line follows POSIX `sh` (`-c`, `-s`, `-o NAME`).
const SHELLS: &[&str] = &["sh", "bash", "dash", "zsh", "ksh", "mksh", "ash"];

/// Long options of bash and zsh that take the next argument as their value.
const LONG_WITH_VALUE: &[&str] = &["--rcfile", "--init-file"];

/// Where a shell run from an argv takes its script from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ScriptSource {
    /// The argument at this index of the argv.
    Arg(usize),
    /// Standard input.
    Stdin,
}

/// Where the shell started by `argv` reads its script, or `None` when `argv` does not start
/// a POSIX shell (or only runs a script file, whose text is not in the spec).
pub fn script_source(argv: &[Value]) -> Option<ScriptSource> {
    let word = |i: usize| argv.get(i).and_then(Value::as_str);
    let program = basename(word(0)?);
    let mut i = 1;
    if program == "busybox" {
        if !SHELLS.contains(&word(1)?) {
            return None;
        }
        i = 2;
    } else if !SHELLS.contains(&program) {
        return None;
    }
    let mut command_string = false;
    let mut from_stdin = false;
    while let Some(arg) = word(i) {
        if arg == "--" {
            i += 1;
            break;
        }
        if LONG_WITH_VALUE.contains(&arg) {
            i += 2;
            continue;
        }
        if arg.starts_with("--") {
            i += 1;
            continue;
        }
        let Some(letters) = arg.strip_prefix('-').or_else(|| arg.strip_prefix('+')) else {
            break;
        };
        if letters.is_empty() {
            // A lone `-` ends the options, as `--` does.
            i += 1;
            break;
        }
        command_string |= letters.contains('c') && arg.starts_with('-');
        from_stdin |= letters.contains('s') && arg.starts_with('-');
        // `-o NAME` and bash's `-O NAME` take the next argument.
        i += if letters.ends_with('o') || letters.ends_with('O') {
            2
        } else {
            1
        };
    }
    if command_string {
        return (i < argv.len()).then_some(ScriptSource::Arg(i));
    }
    if from_stdin || i >= argv.len() {
        return Some(ScriptSource::Stdin);
    }
    None
}

/// The part of a path after its last `/`.
fn basename(path: &str) -> &str {
    path.rsplit('/').next().unwrap_or(path)
}

/// The JSON Pointers of the shell-script strings of a spec that runs `argv_field` (a list),
/// with its standard input in `stdin_field`.
pub(crate) fn script_pointers(spec: &Value, argv_field: &str, stdin_field: &str) -> Vec<String> {
    let Some(argv) = spec.get(argv_field).and_then(Value::as_array) else {
        return Vec::new();
    };
    match script_source(argv) {
        Some(ScriptSource::Arg(i)) => vec![format!("/{argv_field}/{i}")],
        Some(ScriptSource::Stdin) if spec.get(stdin_field).is_some_and(Value::is_string) => {
            vec![format!("/{stdin_field}")]
        }
        _ => Vec::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn source(argv: &Value) -> Option<ScriptSource> {
        script_source(argv.as_array().expect("a list"))
    }

    #[test]
    fn the_script_of_a_shell_is_the_operand_after_the_options() {
        let cases = [
            (json!(["sh", "-c", "echo"]), Some(ScriptSource::Arg(2))),
            (
                json!(["/bin/bash", "-ec", "echo", "name", "a"]),
                Some(ScriptSource::Arg(2)),
            ),
            (
                json!(["bash", "-e", "-o", "pipefail", "-c", "x"]),
                Some(ScriptSource::Arg(5)),
            ),
            (json!(["bash", "-euxc", "x"]), Some(ScriptSource::Arg(2))),
            (
                json!(["bash", "--norc", "-c", "x"]),
                Some(ScriptSource::Arg(3)),
            ),
            (
                json!(["bash", "--rcfile", "f", "-c", "x"]),
                Some(ScriptSource::Arg(4)),
            ),
            (json!(["dash", "-c", "--", "x"]), Some(ScriptSource::Arg(3))),
            (json!(["zsh", "-c", "x"]), Some(ScriptSource::Arg(2))),
            (
                json!(["/usr/bin/ksh", "-c", "x"]),
                Some(ScriptSource::Arg(2)),
            ),
            (
                json!(["busybox", "sh", "-c", "x"]),
                Some(ScriptSource::Arg(3)),
            ),
            (
                json!(["busybox", "ash", "-xc", "x"]),
                Some(ScriptSource::Arg(3)),
            ),
            (json!(["sh"]), Some(ScriptSource::Stdin)),
            (json!(["bash", "-e"]), Some(ScriptSource::Stdin)),
            (json!(["bash", "-s", "arg"]), Some(ScriptSource::Stdin)),
            // A script file: its text is not in the spec.
            (json!(["sh", "script.sh", "-c"]), None),
            (json!(["bash", "-e", "script.sh"]), None),
            // `-c` without its script is the shell's error to report.
            (json!(["sh", "-c"]), None),
            // `+c` is not `-c`.
            (json!(["sh", "+c", "x"]), None),
            (json!(["echo", "-c", "x"]), None),
            (json!(["busybox", "ls", "-c", "x"]), None),
            (json!(["shellcheck", "-c", "x"]), None),
            (json!(["kubectl", "exec", "p", "--", "sh", "-c", "x"]), None),
            (json!([]), None),
            (json!([3, "-c", "x"]), None),
        ];
        for (argv, want) in cases {
            assert_eq!(source(&argv), want, "{argv}");
        }
    }

    #[test]
    fn pointers_name_the_script_or_stdin() {
        let spec = json!({"args": ["sh", "-c", "echo"], "stdin": "x"});
        assert_eq!(script_pointers(&spec, "args", "stdin"), ["/args/2"]);
        let spec = json!({"args": ["sh"], "stdin": "echo"});
        assert_eq!(script_pointers(&spec, "args", "stdin"), ["/stdin"]);
        let spec = json!({"args": ["sh"]});
        assert!(script_pointers(&spec, "args", "stdin").is_empty());
        let spec = json!({"args": "{{params.argv}}"});
        assert!(script_pointers(&spec, "args", "stdin").is_empty());
    }
}
