//! `runbook check`: every kind of problem a runbook can have is reported at `file:line:col`
//! with the source line and a caret, all problems of a file in one run and in file order.
//! The tests assert the whole rendered message, so a wrong column or a vaguer wording shows.

use std::path::Path;

use crate::support::{Output, Sandbox};

/// Drops the newline that starts an indented raw-string literal.
fn text(s: &str) -> &str {
    s.strip_prefix('\n').unwrap_or(s)
}

/// Writes `broken.yaml` into a fresh sandbox and runs `runbook check broken.yaml`.
fn check(yaml: &str) -> Output {
    let sb = Sandbox::new();
    sb.write("broken.yaml", text(yaml));
    sb.cmd(&["check", "broken.yaml"]).run()
}

/// The list of step kinds in a "no action" hint grows with every new kind; the tests check
/// that it names the basic ones and compare the rest of the text exactly.
const KINDS: &str = "help: give it one of: ";

fn without_kinds(stderr: &str) -> String {
    stderr
        .lines()
        .map(|line| match line.strip_prefix(KINDS) {
            Some(kinds) => {
                let named: Vec<&str> = kinds.split(", ").collect();
                for kind in [
                    "shell", "script", "wait", "gate", "sleep", "foreach", "call",
                ] {
                    assert!(named.contains(&kind), "{line}");
                }
                format!("{KINDS}…")
            }
            None => line.to_owned(),
        })
        .map(|line| line + "\n")
        .collect()
}

/// Expects `runbook check` to refuse `yaml` with exit code 2 and exactly `stderr`.
#[track_caller]
fn expect(yaml: &str, stderr: &str) {
    let out = check(yaml);
    out.expect_code(2);
    assert!(
        without_kinds(&out.stderr) == text(stderr),
        "{}\n--- expected stderr ---\n{}",
        out.explain("unexpected stderr"),
        text(stderr)
    );
    assert_eq!(out.stdout, "", "{}", out.explain("nothing on stdout"));
}

// ---------------------------------------------------------------------------------------------
// YAML

#[test]
fn bad_yaml_syntax_points_at_the_error_and_says_which_bracket_is_open() {
    expect(
        r"
runbook: t
steps:
  - id: a
    shell: [echo, hi
  - id: b
    shell: echo
",
        r"
error: invalid YAML: illegal placement of ':' indicator
 --> broken.yaml:5:7
  |
5 |   - id: b
  |       ^
  |
help: the `[` on line 4, column 12 is never closed

error: 1 problem found
",
    );
}

#[test]
fn yaml_error_columns_count_characters_not_bytes() {
    expect(
        r#"
runbook: t
steps:
  - id: a
    shell: "é" x
"#,
        r#"
error: invalid YAML: invalid trailing content after double-quoted scalar
 --> broken.yaml:4:16
  |
4 |     shell: "é" x
  |                ^

error: 1 problem found
"#,
    );
}

#[test]
fn a_tab_used_for_indentation_is_pointed_at() {
    expect(
        "
runbook: t
steps:
  - id: a
\tshell: echo
",
        "
error: invalid YAML: a tab where only spaces may be
 --> broken.yaml:4:1
  |
4 |     shell: echo
  | ^^^^
  |
help: indent with spaces: YAML does not allow tabs for indentation

error: 1 problem found
",
    );
}

#[test]
fn duplicate_keys_anchors_and_tags_are_refused_where_they_are_written() {
    expect(
        r"
runbook: t
steps:
  - id: a
    shell: echo
    id: b
",
        r"
error: duplicate key `id`
 --> broken.yaml:5:5
  |
5 |     id: b
  |     ^^ first given on line 3

error: 1 problem found
",
    );
    expect(
        r"
runbook: t
steps:
  - id: a
    shell: &cmd echo
",
        r"
error: YAML anchors and aliases are not supported in runbooks
 --> broken.yaml:4:12
  |
4 |     shell: &cmd echo
  |            ^
  |
help: repeat the value, or move shared logic into a called runbook

error: 1 problem found
",
    );
    expect(
        r"
runbook: t
steps:
  - id: a
    shell: !!str echo
",
        r"
error: YAML tags (`!tag`) are not supported in runbooks
 --> broken.yaml:4:12
  |
4 |     shell: !!str echo
  |            ^

error: 1 problem found
",
    );
}

#[test]
fn an_empty_file_is_not_a_runbook() {
    expect(
        "",
        r"
error: the runbook is empty
 --> broken.yaml:1:1
help: a runbook needs at least `runbook: NAME` and `steps:`

error: 1 problem found
",
    );
    expect(
        r"
- id: a
  shell: echo
",
        r"
error: a runbook must be a YAML mapping (`runbook: NAME`, `steps: […]`, …)
 --> broken.yaml:1:1
  |
1 | - id: a
  | ^

error: 1 problem found
",
    );
}

// ---------------------------------------------------------------------------------------------
// File encoding and documents

/// Writes `bytes` as `name` into the sandbox (the test's files need not be UTF-8).
fn write_bytes(sb: &Sandbox, name: &str, bytes: &[u8]) {
    std::fs::write(sb.path().join(name), bytes).expect("write");
}

/// Expects `out` to be exit code 2 with exactly `stderr` and nothing on stdout.
#[track_caller]
fn expect_refused(out: &Output, stderr: &str) {
    out.expect_code(2);
    assert!(
        out.stderr == text(stderr),
        "{}\n--- expected stderr ---\n{}",
        out.explain("unexpected stderr"),
        text(stderr)
    );
    assert_eq!(out.stdout, "", "{}", out.explain("nothing on stdout"));
}

const SECOND_DOCUMENT: &str = r"
runbook: first
steps:
  - id: a
    shell: echo
---
runbook: second
steps:
  - id: b
    shell: echo
";

#[test]
fn a_second_yaml_document_is_refused_where_it_starts() {
    let expected = r"
error: a second YAML document: a file holds one document
 --> broken.yaml:5:1
  |
5 | ---
  | ^^^
  |
help: only the first would be read: remove the `---` line, or put each document in a file of its own

error: 1 problem found
";
    expect(SECOND_DOCUMENT, expected);
    // `run` refuses it too, instead of running the first document only.
    let sb = Sandbox::new();
    sb.write("broken.yaml", text(SECOND_DOCUMENT));
    let out = sb.cmd(&["run", "broken.yaml"]).run();
    out.expect_code(2);
    assert!(
        out.stderr.contains(
            "error: a second YAML document: a file holds one document\n --> broken.yaml:5:1\n"
        ),
        "{}",
        out.explain("the second document named")
    );
}

#[test]
fn a_document_after_an_end_marker_is_refused_too() {
    expect(
        r"
runbook: t
steps:
  - id: a
    shell: echo
...
runbook: u
",
        r"
error: a second YAML document: a file holds one document
 --> broken.yaml:6:1
  |
6 | runbook: u
  | ^
  |
help: only the first would be read: remove the `---` line, or put each document in a file of its own

error: 1 problem found
",
    );
}

#[test]
fn an_explicit_start_of_the_only_document_is_fine() {
    let sb = Sandbox::new();
    sb.write(
        "ok.yaml",
        "---\nrunbook: t\nsteps:\n  - id: a\n    shell: echo\n",
    );
    let out = sb.cmd(&["check", "ok.yaml"]).ok();
    assert_eq!(out.stdout, "ok: t (ok.yaml)\n");
}

#[test]
fn a_byte_order_mark_is_accepted_and_columns_stay_right() {
    let sb = Sandbox::new();
    write_bytes(
        &sb,
        "bom.yaml",
        b"\xef\xbb\xbfrunbook: t\nsteps:\n  - id: a\n    shell: echo\n",
    );
    let out = sb.cmd(&["check", "bom.yaml"]).ok();
    assert_eq!(out.stdout, "ok: t (bom.yaml)\n");
    sb.cmd(&["run", "bom.yaml"]).ok();

    write_bytes(&sb, "broken.yaml", b"\xef\xbb\xbfrunbook: t\nsteps: 3\n");
    let out = sb.cmd(&["check", "broken.yaml"]).run();
    expect_refused(
        &out,
        r"
error: `steps` must be a list, not a scalar
 --> broken.yaml:2:8
  |
2 | steps: 3
  |        ^

error: 1 problem found
",
    );
    write_bytes(&sb, "broken.yaml", b"\xef\xbb\xbfrunbok: t\nsteps: []\n");
    let out = sb.cmd(&["check", "broken.yaml"]).run();
    expect_refused(
        &out,
        r"
error: unknown field `runbok` in a runbook
 --> broken.yaml:1:1
  |
1 | runbok: t
  | ^^^^^^ did you mean `runbook`?

error: a runbook needs a name
 --> broken.yaml:1:1
  |
1 | runbok: t
  | ^
  |
help: add `runbook: NAME` at the top

error: 2 problems found
",
    );
}

#[test]
fn invalid_utf8_is_reported_at_its_byte() {
    let sb = Sandbox::new();
    // "café" in Latin-1: é is the single byte 0xe9.
    write_bytes(
        &sb,
        "broken.yaml",
        b"runbook: t\nsteps:\n  - id: a\n    shell: echo caf\xe9 ok\n",
    );
    let out = sb.cmd(&["check", "broken.yaml"]).run();
    expect_refused(
        &out,
        "
error: invalid UTF-8: byte 0xe9 is not UTF-8 text
 --> broken.yaml:4:20
  |
4 |     shell: echo caf\u{fffd} ok
  |                    ^
  |
help: runbooks are UTF-8 text: save the file as UTF-8

error: 1 problem found
",
    );
    // After a byte order mark and multi-byte characters, the column still counts characters.
    write_bytes(
        &sb,
        "broken.yaml",
        b"\xef\xbb\xbfrunbook: \xc3\xa9t\xc3\xa9 \xff\n",
    );
    let out = sb.cmd(&["check", "broken.yaml"]).run();
    expect_refused(
        &out,
        "
error: invalid UTF-8: byte 0xff is not UTF-8 text
 --> broken.yaml:1:14
  |
1 | runbook: été \u{fffd}
  |              ^
  |
help: runbooks are UTF-8 text: save the file as UTF-8

error: 1 problem found
",
    );
}

#[test]
fn invalid_utf8_in_a_functions_file_points_into_that_file() {
    let sb = Sandbox::new();
    sb.write(
        "main.yaml",
        "runbook: main\nfunctions: lib.rhai\nsteps:\n  - id: a\n    script: \"1\"\n",
    );
    write_bytes(&sb, "lib.rhai", b"fn f() {\n  \"\xc0\"\n}\n");
    let out = sb.cmd(&["check", "main.yaml"]).run();
    expect_refused(
        &out,
        "
error: invalid UTF-8: byte 0xc0 is not UTF-8 text
 --> lib.rhai:2:4
  |
2 |   \"\u{fffd}\"
  |    ^
  |
help: runbooks are UTF-8 text: save the file as UTF-8

error: 1 problem found
",
    );
}

/// `runbook schedule list` with the schedules file `schedules.yaml` written from `bytes`.
fn schedule_list(bytes: &[u8]) -> (Sandbox, Output) {
    let sb = Sandbox::new();
    write_bytes(&sb, "schedules.yaml", bytes);
    let out = sb
        .cmd(&["schedule", "list", "--schedules", "schedules.yaml"])
        .run();
    (sb, out)
}

#[test]
fn schedules_files_get_the_same_checks() {
    let (_sb, out) = schedule_list(
        b"schedules:\n  - runbook: hello\n    cron: \"@daily\"\n---\nschedules: []\n",
    );
    expect_refused(
        &out,
        r"
error: a second YAML document: a file holds one document
 --> schedules.yaml:4:1
  |
4 | ---
  | ^^^
  |
help: only the first would be read: remove the `---` line, or put each document in a file of its own
error: the schedules have problems
",
    );
    let (_sb, out) = schedule_list(b"schedules:\n  - runbook: hello\n    cron: \"@daily \xff\"\n");
    expect_refused(
        &out,
        "
error: invalid UTF-8: byte 0xff is not UTF-8 text
 --> schedules.yaml:3:19
  |
3 |     cron: \"@daily \u{fffd}\"
  |                   ^
  |
help: runbooks are UTF-8 text: save the file as UTF-8
error: the schedules have problems
",
    );
    let (_sb, out) =
        schedule_list(b"\xef\xbb\xbfschedules:\n  - runbook: hello\n    cron: \"@daily\"\n");
    out.expect_code(0);
    assert!(
        out.stdout.contains("hello"),
        "{}",
        out.explain("the schedule listed")
    );
}

// ---------------------------------------------------------------------------------------------
// Unknown fields

#[test]
fn unknown_field_in_a_step_suggests_the_closest() {
    expect(
        r#"
runbook: t
steps:
  - id: a
    whne: "true"
    shell: echo
"#,
        r#"
error: unknown field `whne` in a step
 --> broken.yaml:4:5
  |
4 |     whne: "true"
  |     ^^^^ did you mean `when`?

error: 1 problem found
"#,
    );
}

#[test]
fn unknown_top_level_field_suggests_the_closest_or_lists_them_all() {
    expect(
        r"
runbook: t
descripton: typo
owner: me
steps:
  - shell: echo
",
        r"
error: unknown field `descripton` in a runbook
 --> broken.yaml:2:1
  |
2 | descripton: typo
  | ^^^^^^^^^^ did you mean `description`?

error: unknown field `owner` in a runbook
 --> broken.yaml:3:1
  |
3 | owner: me
  | ^^^^^
  |
help: the fields of a runbook are: runbook, description, params, lock, prechecks, steps, on_failure, on_abort, output, functions, schedule

error: 2 problems found
",
    );
}

#[test]
fn unknown_field_in_a_shell_spec_suggests_the_closest() {
    expect(
        r"
runbook: t
steps:
  - id: a
    shell: { argz: [echo, hi] }
",
        r"
error: `shell` needs `args` or `run`
 --> broken.yaml:4:5
  |
4 |     shell: { argz: [echo, hi] }
  |     ^^^^^

error: unknown field `argz` in `shell`
 --> broken.yaml:4:14
  |
4 |     shell: { argz: [echo, hi] }
  |              ^^^^ did you mean `args`?

error: 2 problems found
",
    );
}

#[test]
fn unknown_fields_in_nested_specs_are_found_too() {
    expect(
        r#"
runbook: t
steps:
  - id: ready
    wait:
      evrey: 1s
      probe: { shell: { args: [true], timout: 5s } }
      until: "output.exit_code == 0"
"#,
        r"
error: unknown field `evrey` in `wait`
 --> broken.yaml:5:7
  |
5 |       evrey: 1s
  |       ^^^^^ did you mean `every`?

error: unknown field `timout` in `shell`
 --> broken.yaml:6:39
  |
6 |       probe: { shell: { args: [true], timout: 5s } }
  |                                       ^^^^^^ did you mean `timeout`?

error: 2 problems found
",
    );
}

// ---------------------------------------------------------------------------------------------
// Rhai: the caret points into the YAML line, whatever the scalar's style

#[test]
fn bad_rhai_in_a_plain_scalar() {
    expect(
        r"
runbook: t
params:
  name: { default: é }
steps:
  - id: a
    when: params.name == 'é' && (1 +)
    shell: echo
",
        r"
error: invalid Rhai: unexpected ')'
 --> broken.yaml:6:37
  |
6 |     when: params.name == 'é' && (1 +)
  |                                     ^

error: 1 problem found
",
    );
}

#[test]
fn bad_rhai_in_a_double_quoted_scalar_with_escapes() {
    expect(
        r#"
runbook: t
params:
  name: { default: é }
steps:
  - id: a
    when: "params.name == \"é\" && (1 +)"
    shell: echo
"#,
        r#"
error: invalid Rhai: unexpected ')'
 --> broken.yaml:6:40
  |
6 |     when: "params.name == \"é\" && (1 +)"
  |                                        ^

error: 1 problem found
"#,
    );
}

#[test]
fn bad_rhai_in_a_single_quoted_scalar_with_doubled_quotes() {
    expect(
        r"
runbook: t
params:
  name: { default: é }
steps:
  - id: a
    when: 'params.name == ''é'' )'
    shell: echo
",
        r"
error: invalid Rhai: expecting ';' to terminate this statement
 --> broken.yaml:6:33
  |
6 |     when: 'params.name == ''é'' )'
  |                                 ^

error: 1 problem found
",
    );
}

#[test]
fn bad_rhai_in_a_block_scalar() {
    expect(
        r#"
runbook: t
steps:
  - id: a
    when: |
      let greeting = "héllo";
      greeting +* 2
    shell: echo
"#,
        r"
error: invalid Rhai: unexpected '*'
 --> broken.yaml:6:17
  |
6 |       greeting +* 2
  |                 ^

error: 1 problem found
",
    );
}

#[test]
fn bad_rhai_in_folded_and_multi_line_scalars() {
    expect(
        r#"
runbook: t
steps:
  - id: folded
    when: >
      "é".len()
      == )
    shell: echo
  - id: quoted
    when: "1 ==
      )"
    shell: echo
  - id: plain
    when: 1 ==
      )
    shell: echo
"#,
        r#"
error: invalid Rhai: unexpected ')'
 --> broken.yaml:6:10
  |
6 |       == )
  |          ^

error: invalid Rhai: unexpected ')'
  --> broken.yaml:10:7
   |
10 |       )"
   |       ^

error: invalid Rhai: unexpected ')'
  --> broken.yaml:14:7
   |
14 |       )
   |       ^

error: 3 problems found
"#,
    );
}

#[test]
fn an_incomplete_expression_points_just_past_its_end() {
    expect(
        r#"
runbook: t
steps:
  - id: a
    assert: "output.exit_code =="
    shell: echo
"#,
        r#"
error: invalid Rhai: script is incomplete
 --> broken.yaml:4:33
  |
4 |     assert: "output.exit_code =="
  |                                 ^

error: 1 problem found
"#,
    );
}

// ---------------------------------------------------------------------------------------------
// References

#[test]
fn unknown_step_in_an_expression_and_in_a_template() {
    expect(
        r#"
runbook: t
steps:
  - id: first
    shell: echo
  - id: b
    when: 'steps.nosuch.output == "é"'
    shell: "echo é {{steps.nosuch.output}}"
  - id: c
    when: steps.frist.output.exit_code == 0
    shell: echo
"#,
        r#"
error: unknown step `nosuch`
 --> broken.yaml:6:18
  |
6 |     when: 'steps.nosuch.output == "é"'
  |                  ^^^^^^ no step with this id runs before this point

error: unknown step `nosuch`
 --> broken.yaml:7:28
  |
7 |     shell: "echo é {{steps.nosuch.output}}"
  |                            ^^^^^^ no step with this id runs before this point

error: unknown step `frist`
 --> broken.yaml:9:17
  |
9 |     when: steps.frist.output.exit_code == 0
  |                 ^^^^^ did you mean `first`?

error: 3 problems found
"#,
    );
}

#[test]
fn a_step_that_runs_later_cannot_be_referred_to() {
    expect(
        r#"
runbook: t
prechecks:
  - id: pre
    script: "steps.main.output"
steps:
  - id: early
    when: "steps.late.output == 1"
    shell: "echo {{steps.late.output}}"
  - id: late
    shell: echo
"#,
        r#"
error: unknown step `main`
 --> broken.yaml:4:20
  |
4 |     script: "steps.main.output"
  |                    ^^^^ no step with this id runs before this point

error: step `late` runs after this point; its output is not available here
 --> broken.yaml:7:18
  |
7 |     when: "steps.late.output == 1"
  |                  ^^^^

error: step `late` runs after this point; its output is not available here
 --> broken.yaml:8:26
  |
8 |     shell: "echo {{steps.late.output}}"
  |                          ^^^^

error: 3 problems found
"#,
    );
}

#[test]
fn unknown_parameter_in_a_template_and_an_expression() {
    expect(
        r#"
runbook: t
params:
  name: { type: string, default: world }
  namespace: { type: string, default: default }
steps:
  - id: a
    shell: "echo {{params.name}} {{params.nme}}"
  - id: b
    when: 'params.namespce != ""'
    shell: "echo {{params.zone}}"
"#,
        r#"
error: unknown parameter `nme`
 --> broken.yaml:7:43
  |
7 |     shell: "echo {{params.name}} {{params.nme}}"
  |                                           ^^^ did you mean `name`?

error: unknown parameter `namespce`
 --> broken.yaml:9:19
  |
9 |     when: 'params.namespce != ""'
  |                   ^^^^^^^^ did you mean `namespace`?

error: unknown parameter `zone`
  --> broken.yaml:10:27
   |
10 |     shell: "echo {{params.zone}}"
   |                           ^^^^
   |
help: parameters are: name, namespace

error: 3 problems found
"#,
    );
}

#[test]
fn steps_with_problems_can_still_be_referred_to() {
    // Only `a`'s own problem is reported, not a second one at every use of `a`.
    expect(
        r#"
runbook: t
steps:
  - id: a
    timeout: soon
    shell: echo
  - id: b
    shell: { argz: x }
  - id: c
    when: "steps.a.output.exit_code == 0 && steps.b.output.exit_code == 0"
    shell: "echo {{steps.b.output.stdout}}"
"#,
        r"
error: `timeout` is not a duration: `soon` is not a number followed by a unit
 --> broken.yaml:4:14
  |
4 |     timeout: soon
  |              ^^^^
  |
help: write a number and a unit, e.g. 250ms, 30s, 5m, 1h30m

error: `shell` needs `args` or `run`
 --> broken.yaml:7:5
  |
7 |     shell: { argz: x }
  |     ^^^^^

error: unknown field `argz` in `shell`
 --> broken.yaml:7:14
  |
7 |     shell: { argz: x }
  |              ^^^^ did you mean `args`?

error: 3 problems found
",
    );
}

// ---------------------------------------------------------------------------------------------
// Parameters

#[test]
fn a_default_of_the_wrong_type() {
    expect(
        r"
runbook: t
params:
  replicas: { type: int, default: abc }
  snapshot: { type: bool, default: 'yes' }
steps:
  - shell: echo
",
        r"
error: `default` of parameter `replicas` must be int, not string
 --> broken.yaml:3:35
  |
3 |   replicas: { type: int, default: abc }
  |                                   ^^^

error: `default` of parameter `snapshot` must be bool, not string
 --> broken.yaml:4:37
  |
4 |   snapshot: { type: bool, default: 'yes' }
  |                                     ^^^

error: 2 problems found
",
    );
}

#[test]
fn an_unknown_parameter_type_suggests_the_closest() {
    expect(
        r"
runbook: t
params:
  flag: { type: boolen }
  name: strin
  when: { type: timestamp }
steps:
  - shell: echo
",
        r"
error: unknown parameter type `boolen`
 --> broken.yaml:3:17
  |
3 |   flag: { type: boolen }
  |                 ^^^^^^ did you mean `bool`?

error: unknown parameter type `strin`
 --> broken.yaml:4:9
  |
4 |   name: strin
  |         ^^^^^ did you mean `string`?

error: unknown parameter type `timestamp`
 --> broken.yaml:5:17
  |
5 |   when: { type: timestamp }
  |                 ^^^^^^^^^
  |
help: types are: string, int, bool, list, map

error: 3 problems found
",
    );
}

// ---------------------------------------------------------------------------------------------
// Steps

#[test]
fn duplicate_step_ids_among_siblings() {
    expect(
        r"
runbook: t
steps:
  - id: backup
    shell: echo
  - id: roll
    foreach: '[1, 2]'
    steps:
      - id: restart
        shell: echo
      - id: restart
        shell: echo
  - id: backup
    shell: echo
",
        r"
error: duplicate step id `restart`: ids must be unique among sibling steps
  --> broken.yaml:10:13
   |
10 |       - id: restart
   |             ^^^^^^^ `restart` is already the id of the step on line 8

error: duplicate step id `backup`: ids must be unique among sibling steps
  --> broken.yaml:12:9
   |
12 |   - id: backup
   |         ^^^^^^ `backup` is already the id of the step on line 3

error: 2 problems found
",
    );
}

#[test]
fn the_same_id_in_different_loop_bodies_is_fine() {
    let sb = Sandbox::new();
    sb.write(
        "loops.yaml",
        text(
            r#"
runbook: loops
steps:
  - id: first
    foreach: "[1, 2]"
    steps:
      - id: item
        shell: "echo {{item}}"
  - id: second
    foreach: "[3, 4]"
    as: n
    steps:
      - id: item
        shell: "echo {{n}}"
    on_failure:
      - id: item
        shell: echo
"#,
        ),
    );
    let out = sb.cmd(&["check", "loops.yaml"]).ok();
    assert_eq!(
        out.stdout,
        "ok: loops (loops.yaml)\n",
        "{}",
        out.explain("ok")
    );
    assert_eq!(out.stderr, "", "{}", out.explain("no problems"));
}

#[test]
fn a_step_with_two_actions_or_none() {
    expect(
        r#"
runbook: t
steps:
  - id: both
    shell: echo
    gate: "ok?"
  - id: neither
    name: does nothing
"#,
        r#"
error: step has more than one action: `shell` and `gate`
 --> broken.yaml:5:5
  |
5 |     gate: "ok?"
  |     ^^^^
  |
help: a step does one thing: split it into two steps

error: step `neither` has no action
 --> broken.yaml:6:5
  |
6 |   - id: neither
  |     ^
  |
help: give it one of: …

error: 2 problems found
"#,
    );
}

#[test]
fn bad_durations() {
    expect(
        r"
runbook: t
steps:
  - id: a
    timeout: soon
    shell: { args: [true], grace: 5 parsecs }
  - id: b
    sleep: -5s
  - id: c
    wait:
      every: ''
      probe: { shell: 'true' }
      until: output.exit_code == 0
",
        r"
error: `timeout` is not a duration: `soon` is not a number followed by a unit
 --> broken.yaml:4:14
  |
4 |     timeout: soon
  |              ^^^^
  |
help: write a number and a unit, e.g. 250ms, 30s, 5m, 1h30m

error: `grace` is not a duration: unknown unit `parsecs`
 --> broken.yaml:5:35
  |
5 |     shell: { args: [true], grace: 5 parsecs }
  |                                   ^^^^^^^^^
  |
help: write a number and a unit, e.g. 250ms, 30s, 5m, 1h30m

error: `sleep` is not a duration: it must not be negative
 --> broken.yaml:7:12
  |
7 |     sleep: -5s
  |            ^^^
  |
help: write a number and a unit, e.g. 250ms, 30s, 5m, 1h30m

error: `every` is not a duration: it is empty
  --> broken.yaml:10:14
   |
10 |       every: ''
   |              ^^
   |
help: write a number and a unit, e.g. 250ms, 30s, 5m, 1h30m

error: 4 problems found
",
    );
}

#[test]
fn retry_on_a_gate_and_a_gate_in_prechecks() {
    expect(
        r#"
runbook: t
prechecks:
  - id: ask
    gate: "really?"
steps:
  - id: confirm
    retry: { attempts: 3 }
    gate: "ok?"
"#,
        r#"
error: `gate` cannot be used in a precheck
 --> broken.yaml:4:5
  |
4 |     gate: "really?"
  |     ^^^^

error: `retry` applies to effects, scripts and waits, not to `gate`
 --> broken.yaml:7:5
  |
7 |     retry: { attempts: 3 }
  |     ^^^^^

error: 2 problems found
"#,
    );
}

#[test]
fn bad_template_syntax() {
    expect(
        r#"
runbook: t
params:
  name: { default: é }
steps:
  - id: open
    shell: "echo é {{#if params.name}}yes"
  - id: mismatched
    shell: "echo {{#if params.name}}yes{{/each}}"
"#,
        r#"
error: invalid template syntax: the template ends inside a `{{ … }}` or an open block
 --> broken.yaml:6:42
  |
6 |     shell: "echo é {{#if params.name}}yes"
  |                                          ^

error: invalid template: block `{{#if}}` is closed by `{{/each}}`
 --> broken.yaml:8:40
  |
8 |     shell: "echo {{#if params.name}}yes{{/each}}"
  |                                        ^^

error: 2 problems found
"#,
    );
}

// ---------------------------------------------------------------------------------------------
// All at once

#[test]
fn every_problem_of_a_file_is_reported_in_one_run_in_file_order() {
    let out = check(
        r#"
runbook: many
descripton: several problems
params:
  count: { type: int, default: abc }
steps:
  - id: a
    whne: "true"
    shell: "echo {{params.cont}}"
  - id: b
    when: "steps.nosuch.output =="
    shell: { argz: [echo] }
  - id: a
    timeout: soon
    gate: "ok?"
    retry: { attempts: 2 }
"#,
    );
    out.expect_code(2);
    let headlines: Vec<&str> = out
        .stderr
        .lines()
        .filter(|l| l.starts_with("error") || l.starts_with(" -->") || l.starts_with("  -->"))
        .collect();
    assert_eq!(
        headlines,
        [
            "error: unknown field `descripton` in a runbook",
            " --> broken.yaml:2:1",
            "error: `default` of parameter `count` must be int, not string",
            " --> broken.yaml:4:32",
            "error: unknown field `whne` in a step",
            " --> broken.yaml:7:5",
            "error: unknown parameter `cont`",
            " --> broken.yaml:8:27",
            "error: invalid Rhai: script is incomplete",
            "  --> broken.yaml:10:34",
            "error: `shell` needs `args` or `run`",
            "  --> broken.yaml:11:5",
            "error: unknown field `argz` in `shell`",
            "  --> broken.yaml:11:14",
            "error: duplicate step id `a`: ids must be unique among sibling steps",
            "  --> broken.yaml:12:9",
            "error: `timeout` is not a duration: `soon` is not a number followed by a unit",
            "  --> broken.yaml:13:14",
            "error: `retry` applies to effects, scripts and waits, not to `gate`",
            "  --> broken.yaml:15:5",
            "error: 10 problems found",
        ],
        "{}",
        out.explain("every problem, in file order")
    );
    assert!(out.stderr.ends_with("\n\nerror: 10 problems found\n"));
}

#[test]
fn several_files_are_checked_in_one_run() {
    let sb = Sandbox::new();
    sb.write("good.yaml", "runbook: good\nsteps:\n  - shell: echo\n");
    sb.write("bad.yaml", "runbook: bad\nsteps:\n  - shel: echo\n");
    sb.write(
        "worse.yaml",
        "runbook: worse\nsteps:\n  - shell: echo\n    when: '1 +'\n",
    );
    let out = sb
        .cmd(&["check", "good.yaml", "bad.yaml", "worse.yaml"])
        .code(2);
    assert_eq!(
        out.stdout,
        "ok: good (good.yaml)\n",
        "{}",
        out.explain("one ok")
    );
    assert_eq!(
        without_kinds(&out.stderr),
        text(
            r"
error: step has no action
 --> bad.yaml:3:5
  |
3 |   - shel: echo
  |     ^
  |
help: give it one of: …

error: unknown field `shel` in a step
 --> bad.yaml:3:5
  |
3 |   - shel: echo
  |     ^^^^ did you mean `shell`?

error: invalid Rhai: script is incomplete
 --> worse.yaml:4:15
  |
4 |     when: '1 +'
  |               ^

error: 3 problems found
"
        ),
        "{}",
        out.explain("both files' problems")
    );
}

// ---------------------------------------------------------------------------------------------
// Calls

#[test]
fn a_call_to_a_missing_runbook_is_reported_at_the_call() {
    let sb = Sandbox::new();
    sb.write(
        "caller.yaml",
        text(
            r#"
runbook: caller
steps:
  - id: typo
    call: helo
  - id: nowhere
    call: no-such-runbook
  - id: relative
    call: { runbook: "./missing.yaml" }
"#,
        ),
    );
    let out = sb.cmd(&["check", "caller.yaml"]).code(2);
    let missing = sb.path().join("missing.yaml");
    assert_eq!(
        out.stderr,
        format!(
            "{}",
            text(&format!(
                r#"
error: no runbook `helo` to call
 --> caller.yaml:4:11
  |
4 |     call: helo
  |           ^^^^ did you mean `hello`?

error: no runbook `no-such-runbook` to call
 --> caller.yaml:6:11
  |
6 |     call: no-such-runbook
  |           ^^^^^^^^^^^^^^^
  |
help: runbooks are found by name in ./runbooks, $RUNBOOK_PATH and the bundled library, or by a path starting with `./`

error: cannot read the runbook `./missing.yaml` to call: failed to read {}: No such file or directory (os error 2)
 --> caller.yaml:8:23
  |
8 |     call: {{ runbook: "./missing.yaml" }}
  |                       ^^^^^^^^^^^^^^

error: 3 problems found
"#,
                missing.display()
            ))
        ),
        "{}",
        out.explain("each missing target at its call")
    );
}

#[test]
fn problems_of_a_called_runbook_are_reported_with_the_callers() {
    let sb = Sandbox::new();
    sb.write(
        "main.yaml",
        text(
            r#"
runbook: main
steps:
  - id: sub
    call: { runbook: ./lib/sub.yaml, params: { name: x } }
  - id: after
    shell: "echo {{steps.sbu.output}}"
"#,
        ),
    );
    sb.write(
        "lib/sub.yaml",
        text(
            r"
runbook: sub
params:
  name: string
steps:
  - id: greet
    shell: { args: [echo, '{{params.nmae}}'] }
",
        ),
    );
    let out = sb.cmd(&["check", "main.yaml"]).code(2);
    assert_eq!(
        out.stderr,
        text(
            r#"
error: unknown step `sbu`
 --> main.yaml:6:26
  |
6 |     shell: "echo {{steps.sbu.output}}"
  |                          ^^^ did you mean `sub`?

error: unknown parameter `nmae`
 --> lib/sub.yaml:6:37
  |
6 |     shell: { args: [echo, '{{params.nmae}}'] }
  |                                     ^^^^ did you mean `name`?

error: 2 problems found
"#
        ),
        "{}",
        out.explain("both files' problems")
    );
}

#[test]
fn parameters_a_call_passes_are_checked_against_the_called_runbook() {
    let sb = Sandbox::new();
    sb.write(
        "main.yaml",
        text(
            r"
runbook: main
steps:
  - id: greet
    call: { runbook: ./greet.yaml, params: { nmae: x } }
",
        ),
    );
    sb.write(
        "greet.yaml",
        "runbook: greet\nparams:\n  name: string\nsteps:\n  - shell: echo\n",
    );
    let out = sb.cmd(&["check", "main.yaml"]).code(2);
    assert_eq!(
        out.stderr,
        text(
            r"
error: runbook `greet` has no parameter `nmae`
 --> main.yaml:4:22
  |
4 |     call: { runbook: ./greet.yaml, params: { nmae: x } }
  |                      ^^^^^^^^^^^^ did you mean `name`?

error: the call to `greet` does not pass its required parameter `name`
 --> main.yaml:4:22
  |
4 |     call: { runbook: ./greet.yaml, params: { nmae: x } }
  |                      ^^^^^^^^^^^^

error: 2 problems found
"
        ),
        "{}",
        out.explain("the call's parameter problems")
    );
}

// ---------------------------------------------------------------------------------------------
// Rhai files

#[test]
fn problems_in_rhai_files_point_into_those_files() {
    let sb = Sandbox::new();
    sb.write(
        "main.yaml",
        text(
            r"
runbook: main
functions: lib/helpers.rhai
steps:
  - id: compute
    script: { file: lib/compute.rhai }
  - id: missing
    script: { file: lib/nope.rhai }
",
        ),
    );
    sb.write("lib/helpers.rhai", "fn double(x) {\n  x +* 2\n}\n");
    sb.write("lib/compute.rhai", "let a = 1;\na +\n");
    let out = sb.cmd(&["check", "main.yaml"]).code(2);
    let nope = sb.path().join("lib/nope.rhai");
    assert_eq!(
        out.stderr,
        text(&format!(
            r"
error: cannot read `lib/nope.rhai`: failed to read {}: No such file or directory (os error 2)
 --> main.yaml:7:21
  |
7 |     script: {{ file: lib/nope.rhai }}
  |                     ^^^^^^^^^^^^^

error: invalid Rhai: unexpected '*'
 --> lib/helpers.rhai:2:6
  |
2 |   x +* 2
  |      ^

error: invalid Rhai: script is incomplete
 --> lib/compute.rhai:2:4
  |
2 | a +
  |    ^

error: 3 problems found
",
            nope.display()
        )),
        "{}",
        out.explain("problems in the .rhai files")
    );
}

#[test]
fn a_yaml_error_at_the_end_of_the_file_shows_the_last_line() {
    expect(
        r"
runbook: t
steps:
  - shell: [echo, hi
",
        r"
error: invalid YAML: while parsing a flow sequence, expected ',' or ']'
 --> broken.yaml:3:21
  |
3 |   - shell: [echo, hi
  |                     ^
  |
help: the `[` on line 3, column 12 is never closed

error: 1 problem found
",
    );
}

#[test]
fn machine_output_is_one_object_per_problem_then_a_verdict_per_file() {
    let sb = Sandbox::new();
    sb.write("good.yaml", "runbook: good\nsteps:\n  - shell: echo\n");
    sb.write(
        "bad.yaml",
        "runbook: bad\nsteps:\n  - shell: echo\n    whne: x\n",
    );
    let out = sb
        .cmd(&["check", "good.yaml", "bad.yaml", "--output", "json"])
        .code(2);
    let lines: Vec<serde_json::Value> = out
        .stdout
        .lines()
        .map(|l| serde_json::from_str(l).expect("JSON line"))
        .collect();
    assert_eq!(
        lines,
        [
            serde_json::json!({ "event": "checked", "target": "good.yaml", "runbook": "good",
                                "origin": "good.yaml", "ok": true, "errors": 0, "warnings": 0 }),
            serde_json::json!({
                "event": "problem",
                "target": "bad.yaml",
                "severity": "error",
                "file": "bad.yaml",
                "line": 4,
                "column": 5,
                "message": "unknown field `whne` in a step",
                "suggestion": "when",
                "help": null,
            }),
            serde_json::json!({ "event": "checked", "target": "bad.yaml", "runbook": null,
                                "origin": null, "ok": false, "errors": 1, "warnings": 0 }),
        ],
        "{}",
        out.explain("one JSON line per file")
    );
}

// ---------------------------------------------------------------------------------------------
// The library

/// Every `*.yaml` below `dir`, sorted.
fn yaml_files(dir: &Path, out: &mut Vec<std::path::PathBuf>) {
    let mut entries: Vec<_> = std::fs::read_dir(dir)
        .expect("read runbooks/")
        .map(|e| e.expect("dir entry").path())
        .collect();
    entries.sort();
    for path in entries {
        if path.is_dir() {
            yaml_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "yaml" || e == "yml") {
            out.push(path);
        }
    }
}

#[test]
fn every_runbook_in_the_repository_passes_check() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("runbooks");
    let mut files = Vec::new();
    yaml_files(&dir, &mut files);
    assert!(!files.is_empty(), "no runbooks in {}", dir.display());
    let sb = Sandbox::new();
    for file in &files {
        let path = file.to_str().expect("UTF-8 path");
        let out = sb.cmd(&["check", path]).run();
        out.expect_code(0);
        assert!(
            out.stdout.starts_with("ok: ") && out.stdout.contains(path),
            "{}",
            out.explain("`ok: NAME (PATH)`")
        );
        assert_eq!(out.stderr, "", "{}", out.explain("no problems"));
    }
}

#[test]
fn check_without_arguments_checks_the_bundled_library() {
    let sb = Sandbox::new();
    let out = sb.cmd(&["check"]).ok();
    let lines: Vec<&str> = out.stdout.lines().collect();
    assert!(
        !lines.is_empty() && lines.iter().all(|l| l.starts_with("ok: ")),
        "{}",
        out.explain("one `ok:` line per runbook")
    );
    assert!(
        lines.contains(&"ok: hello (bundled:hello.yaml)"),
        "{}",
        out.explain("the bundled hello runbook")
    );
    assert_eq!(out.stderr, "", "{}", out.explain("no problems"));
}

#[test]
fn check_of_an_unknown_name_is_bad_input() {
    let sb = Sandbox::new();
    let out = sb.cmd(&["check", "nosuch"]).code(2);
    assert_eq!(
        out.stderr,
        "error: no runbook `nosuch` in ./runbooks, $RUNBOOK_PATH or the bundled library (`runbook list` shows them)\n\n\
         error: 1 problem found\n",
        "{}",
        out.explain("not found")
    );
}

#[test]
fn an_unknown_function_or_method_is_named_where_it_is_called() {
    expect(
        r#"
runbook: t
steps:
  - id: a
    script: "semver_gtt('1', '0') || `${type_of(1)}`.len() > 0"
  - id: b
    when: "fn sq(x) { x * x } let f = |x| x; sq(2) + f.call(1) + [1].map(|x| x).len() > 0"
    script: 'let s = "x"; s.trimm(); s'
"#,
        r#"
error: unknown function `semver_gtt`
 --> broken.yaml:4:14
  |
4 |     script: "semver_gtt('1', '0') || `${type_of(1)}`.len() > 0"
  |              ^^^^^^^^^^ did you mean `semver_gt`?

error: unknown method `trimm`
 --> broken.yaml:7:29
  |
7 |     script: 'let s = "x"; s.trimm(); s'
  |                             ^^^^^ did you mean `trim`?

error: 2 problems found
"#,
    );
}
