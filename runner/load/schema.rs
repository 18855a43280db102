//! `runbook schema`: a JSON Schema (draft 2020-12) of the runbook format for editors, built from
//! the loader's own field tables and the registered step kinds' fields — the same lists `check`
//! uses, so the two cannot drift apart. It describes shapes (which keys, which types); what only
//! the loader can tell (Rhai and template syntax, references, durations) stays with `check`.

use runbook_steps::{FieldType, Registry};
use serde_json::{Map, Value, json};

use crate::load::step::{
    CALL_FIELDS, CHECK_FIELDS, COMMON, CONCURRENCY, GATE_FIELDS, RETRY_FIELDS, WAIT_FIELDS,
};
use crate::load::{PARAM_FIELDS, TOP};

/// The schema of a runbook file.
pub fn runbook(registry: &Registry) -> Value {
    let mut top = Map::new();
    for key in TOP {
        top.insert((*key).to_owned(), top_field(key));
    }
    let mut defs = Map::new();
    defs.insert(
        "steps".into(),
        json!({ "type": "array", "items": { "$ref": "#/$defs/step" } }),
    );
    defs.insert("step".into(), step(registry));
    defs.insert("param".into(), param());
    defs.insert(
        "duration".into(),
        json!({
            "description": "30s, 5m, 1h30m; a bare number is seconds",
            "anyOf": [{ "type": "string" }, { "type": "number", "minimum": 0 }]
        }),
    );
    defs.insert(
        "amount".into(),
        json!({
            "description": "a count, or a percentage of the items such as \"25%\"",
            "anyOf": [
                { "type": "integer", "minimum": 0 },
                { "type": "string", "pattern": "^\\s*[0-9]+\\s*%$" },
                { "$ref": "#/$defs/template_setting" }
            ]
        }),
    );
    defs.insert(
        "template_setting".into(),
        json!({
            "description": "a template rendered when the loop starts, e.g. \"{{params.batch}}\"",
            "type": "string",
            "pattern": "\\{\\{"
        }),
    );
    json!({
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "title": "runbook",
        "description": "A runbook of runbook (YAML + Rhai + Handlebars). `runbook check` reports what a schema cannot see.",
        "type": "object",
        "required": ["runbook", "steps"],
        "additionalProperties": false,
        "properties": top,
        "$defs": defs,
    })
}

fn top_field(key: &str) -> Value {
    match key {
        "runbook" => json!({ "type": "string", "description": "the runbook's name" }),
        "params" => json!({
            "type": "object",
            "additionalProperties": { "$ref": "#/$defs/param" }
        }),
        "prechecks" | "steps" | "on_failure" | "on_abort" => json!({ "$ref": "#/$defs/steps" }),
        "functions" => json!({ "type": "string", "description": "a .rhai file of functions" }),
        "schedule" => json!({ "type": "object" }),
        _ => json!({ "type": "string" }),
    }
}

fn param() -> Value {
    let mut props = Map::new();
    for key in PARAM_FIELDS {
        let schema = match *key {
            "type" => json!({ "enum": crate::model::ParamType::NAMES }),
            "required" | "secret" | "short_secret_ok" => json!({ "type": "boolean" }),
            "enum" => json!({ "type": "array" }),
            "default" => json!({}),
            "from" => json!({ "type": "object" }),
            _ => json!({ "type": "string" }),
        };
        props.insert((*key).to_owned(), schema);
    }
    json!({
        "anyOf": [
            { "type": "string", "description": "shorthand: the type" },
            { "type": "object", "additionalProperties": false, "properties": props }
        ]
    })
}

/// What a field of a step kind may hold: its type, or a template string rendering to it.
fn kind_field(ty: FieldType) -> Value {
    let template = json!({ "type": "string" });
    match ty {
        FieldType::String | FieldType::Expr => json!({ "type": ["string", "number", "boolean"] }),
        FieldType::Int => json!({ "anyOf": [{ "type": "integer" }, template] }),
        FieldType::Bool => json!({ "anyOf": [{ "type": "boolean" }, template] }),
        FieldType::Duration => json!({ "$ref": "#/$defs/duration" }),
        FieldType::List => json!({ "anyOf": [{ "type": "array" }, template] }),
        FieldType::Map => json!({ "anyOf": [{ "type": "object" }, template] }),
        FieldType::Any => json!({}),
    }
}

fn object(keys: &[&str], each: impl Fn(&str) -> Value, required: &[&str]) -> Value {
    let props: Map<String, Value> = keys.iter().map(|k| ((*k).to_owned(), each(k))).collect();
    json!({ "type": "object", "additionalProperties": false, "properties": props, "required": required })
}

fn step(registry: &Registry) -> Value {
    let mut props = Map::new();
    for key in COMMON {
        let schema = match *key {
            "id" | "name" | "when" | "assert" | "message" => json!({ "type": "string" }),
            "timeout" => json!({ "$ref": "#/$defs/duration" }),
            "idempotent" | "continue_on_error" | "secret" => json!({ "type": "boolean" }),
            "retry" => object(
                RETRY_FIELDS,
                |k| match k {
                    "attempts" => json!({ "type": "integer", "minimum": 1 }),
                    "factor" => json!({ "type": "number" }),
                    _ => json!({ "$ref": "#/$defs/duration" }),
                },
                &["attempts"],
            ),
            "check" => json!({ "anyOf": [
                { "type": "string" },
                object(CHECK_FIELDS, |k| if k == "probe" { json!({ "$ref": "#/$defs/step" }) } else { json!({ "type": "string" }) }, &["probe", "until"])
            ]}),
            "on_failure" => json!({ "$ref": "#/$defs/steps" }),
            _ => json!({}),
        };
        props.insert((*key).to_owned(), schema);
    }
    let mut actions: Vec<String> = Vec::new();
    // The engine's own actions.
    props.insert(
        "script".into(),
        json!({ "anyOf": [
            { "type": "string" },
            object(&["file"], |_| json!({ "type": "string" }), &["file"])
        ]}),
    );
    props.insert(
        "wait".into(),
        object(
            WAIT_FIELDS,
            |k| match k {
                "probe" => json!({ "$ref": "#/$defs/step" }),
                "until" => json!({ "type": "string" }),
                _ => json!({ "$ref": "#/$defs/duration" }),
            },
            &["probe", "until"],
        ),
    );
    props.insert(
        "gate".into(),
        json!({ "anyOf": [
            { "type": "string" },
            object(GATE_FIELDS, |k| match k {
                "timeout" => json!({ "$ref": "#/$defs/duration" }),
                "four_eyes" => json!({ "type": "boolean" }),
                "approvals" => json!({ "type": "integer", "minimum": 1 }),
                "approvers" => json!({ "type": "array", "items": { "type": "string" } }),
            "on_timeout" => json!({ "enum": ["reject", "approve", "fail"] }),
                _ => json!({ "type": "string" }),
            }, &["prompt"])
        ]}),
    );
    props.insert("sleep".into(), json!({ "$ref": "#/$defs/duration" }));
    props.insert(
        "foreach".into(),
        json!({ "type": "string", "description": "a Rhai expression giving the items" }),
    );
    props.insert("as".into(), json!({ "type": "string" }));
    props.insert("steps".into(), json!({ "$ref": "#/$defs/steps" }));
    for key in CONCURRENCY {
        let schema = match *key {
            "parallel" => json!({ "anyOf": [
                { "type": "integer", "minimum": 1, "description": "on a foreach: iterations at once" },
                { "$ref": "#/$defs/template_setting" },
                { "$ref": "#/$defs/steps", "description": "branches that run at once" }
            ]}),
            "max_unavailable" => json!({ "anyOf": [
                { "type": "integer", "minimum": 1 },
                { "$ref": "#/$defs/template_setting" }
            ]}),
            _ => json!({ "$ref": "#/$defs/amount" }),
        };
        props.insert((*key).to_owned(), schema);
    }
    props.insert("call".into(), json!({ "anyOf": [
        { "type": "string" },
        object(CALL_FIELDS, |k| if k == "params" { json!({ "type": "object" }) } else { json!({ "type": "string" }) }, &["runbook"])
    ]}));
    actions.extend(["script", "wait", "gate", "sleep", "foreach", "call"].map(String::from));
    // The registered step kinds.
    for kind in registry.names() {
        let Some(k) = registry.get(kind) else {
            continue;
        };
        let fields = k.fields();
        let names: Vec<&str> = fields.iter().map(|f| f.name).collect();
        let required: Vec<&str> = fields
            .iter()
            .filter(|f| f.required)
            .map(|f| f.name)
            .collect();
        let spec = object(
            &names,
            |n| {
                fields
                    .iter()
                    .find(|f| f.name == n)
                    .map_or(json!({}), |f| kind_field(f.ty))
            },
            &required,
        );
        let schema = if kind == "shell" {
            json!({ "anyOf": [
                { "type": "string", "description": "run through sh -c" },
                { "type": "array", "items": { "type": "string" }, "description": "argv" },
                spec
            ]})
        } else {
            spec
        };
        props.insert(kind.to_owned(), schema);
        actions.push(kind.to_owned());
    }
    // Exactly one action; `parallel` is the action only without `foreach`.
    let mut one_of: Vec<Value> = actions.iter().map(|a| json!({ "required": [a] })).collect();
    one_of.push(json!({ "required": ["parallel"], "not": { "required": ["foreach"] } }));
    json!({
        "type": "object",
        "additionalProperties": false,
        "properties": props,
        "oneOf": one_of,
    })
}

#[cfg(test)]
mod tests {
    use super::runbook;
    use runbook_steps::Registry;
    use serde_json::Value;

    fn validator() -> jsonschema::Validator {
        jsonschema::validator_for(&runbook(&Registry::builtin())).expect("a valid schema")
    }

    fn json(yaml: &str) -> Value {
        let node = crate::yaml::parse(0, yaml).expect("yaml");
        node.to_json()
    }

    /// Every runbook file in the repository: the bundled library and the examples.
    fn runbooks() -> Vec<(String, String)> {
        let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
        let mut out = Vec::new();
        let mut dirs = vec![root.join("runbooks"), root.join("examples")];
        while let Some(dir) = dirs.pop() {
            for entry in std::fs::read_dir(&dir).expect("dir").flatten() {
                let path = entry.path();
                if path.is_dir() {
                    dirs.push(path);
                } else if path.extension().is_some_and(|e| e == "yaml")
                    && !path.ends_with("schedules.yaml")
                {
                    let text = std::fs::read_to_string(&path).expect("read");
                    out.push((path.display().to_string(), text));
                }
            }
        }
        out.push((
            "init".into(),
            include_str!("../cli/templates/init.yaml").replace("__NAME__", "x"),
        ));
        out
    }

    #[test]
    fn the_schema_accepts_every_runbook_of_the_repository() {
        let v = validator();
        let all = runbooks();
        assert!(all.len() > 15, "{}", all.len());
        for (name, text) in all {
            let doc = json(&text);
            let errors: Vec<String> = v
                .iter_errors(&doc)
                .map(|e| format!("{e} at {}", e.instance_path()))
                .collect();
            assert!(errors.is_empty(), "{name}: {errors:#?}");
        }
    }

    #[test]
    fn the_schema_refuses_what_check_refuses_by_shape() {
        let v = validator();
        let table = [
            (
                "runbook: t\nsteps:\n  - shell: x\n    sheel: y\n",
                "an unknown step key",
            ),
            (
                "runbook: t\nsteps:\n  - shell: x\n    script: \"1\"\n",
                "two actions",
            ),
            ("runbook: t\nsteps:\n  - id: a\n", "no action"),
            ("runbook: t\nstep: []\n", "an unknown top-level key"),
            (
                "runbook: t\nsteps:\n  - http: { url: x, methd: GET }\n",
                "an unknown field of a kind",
            ),
            (
                "runbook: t\nsteps:\n  - foreach: \"[1]\"\n    parallel: 0\n    steps: [{ shell: x }]\n",
                "parallel 0",
            ),
            (
                "runbook: t\nparams:\n  a: { type: number }\nsteps: []\n",
                "an unknown parameter type",
            ),
        ];
        for (yaml, what) in table {
            assert!(!v.is_valid(&json(yaml)), "{what} must be refused");
        }
        let fine = "runbook: t\nsteps:\n  - id: roll\n    foreach: \"[1]\"\n    parallel: 2\n    batch: \"50%\"\n    steps:\n      - parallel:\n          - shell: x\n          - shell: [echo, y]\n";
        assert!(
            v.is_valid(&json(fine)),
            "a parallel loop holding a parallel step"
        );
    }

    #[test]
    fn the_committed_schema_file_is_what_runbook_schema_prints() {
        let path =
            std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("schema/runbook.schema.json");
        let committed = std::fs::read_to_string(&path).expect("schema/runbook.schema.json");
        let now =
            serde_json::to_string_pretty(&runbook(&Registry::builtin())).expect("json") + "\n";
        assert!(
            committed == now,
            "schema/runbook.schema.json is stale: regenerate it with `runbook schema > schema/runbook.schema.json`"
        );
    }
}
