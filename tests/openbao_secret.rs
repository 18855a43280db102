//! Parameters read from a real OpenBao (`testbeds/openbao.sh`, one node, KV v2): `from: {
//! openbao: … }` with a token file and with an `AppRole` login. The value is read when the run
//! starts and again when it goes on after a gate (a rotated secret is picked up), is masked in
//! everything printed, and is never in the journal. What the steps used is read from the files
//! they wrote, not from the runbook's output.

use std::time::Duration;

use serde_json::{Value, json};

use crate::support::clusters::{Cluster, http};
use crate::support::{Output, Sandbox, wait_for};

const FIRST: &str = "bao-S3cret-first-71c";
const SECOND: &str = "bao-S3cret-second-3d9";

/// The single node's address and root token, with KV v2 at `secret/`.
struct Bao {
    /// Held so that the node lives as long as the test.
    _cluster: Cluster,
    addr: String,
    root: String,
}

impl Bao {
    fn start() -> Self {
        let cluster = Cluster::openbao_single("2.7.2");
        let addr = cluster.var("BAO_ADDR_1");
        let root = cluster.json("init.json")["root_token"]
            .as_str()
            .expect("root token")
            .to_owned();
        let bao = Self {
            _cluster: cluster,
            addr,
            root,
        };
        bao.call(
            "POST",
            "sys/mounts/secret",
            &json!({"type": "kv", "options": {"version": "2"}}),
        );
        bao
    }

    /// A request as root; the error says what OpenBao answered.
    fn try_call(&self, method: &str, path: &str, body: &Value) -> Result<Value, String> {
        let url = format!("{}/v1/{path}", self.addr);
        let request = http()
            .request(method, &url)
            .set("X-Vault-Token", &self.root);
        let response = if body.is_null() {
            request.call()
        } else {
            request.send_json(body.clone())
        };
        match response {
            Ok(r) => Ok(r.into_json().unwrap_or(Value::Null)),
            Err(ureq::Error::Status(code, r)) => Err(format!(
                "{method} {url}: {code} {}",
                r.into_string().unwrap_or_default()
            )),
            Err(e) => Err(format!("{method} {url}: {e}")),
        }
    }

    /// A request as root; panics unless OpenBao answers 2xx.
    fn call(&self, method: &str, path: &str, body: &Value) -> Value {
        self.try_call(method, path, body)
            .unwrap_or_else(|e| panic!("{e}"))
    }

    /// Writes a new version of `secret/app/db`. A KV v2 mount just made answers "upgrading
    /// from non-versioned to versioned data" for a moment: the first write waits that out.
    fn write_secret(&self, password: &str) {
        let body = json!({"data": {"password": password, "port": "5432"}});
        wait_for("KV v2 to take a write", Duration::from_secs(15), || {
            self.try_call("POST", "secret/data/app/db", &body).is_ok()
        });
    }
}

fn assert_clean(what: &str, text: &str) {
    for secret in [FIRST, SECOND] {
        assert!(
            !text.contains(secret),
            "{what} holds a secret in clear:\n{text}"
        );
    }
}

fn assert_output_clean(what: &str, out: &Output) {
    assert_clean(&format!("{what}'s stdout"), &out.stdout);
    assert_clean(&format!("{what}'s stderr"), &out.stderr);
}

fn runbook(addr: &str, token_file: &str, role_id: &str) -> String {
    format!(
        r#"
runbook: uses-bao
params:
  password:
    description: the database password
    from:
      openbao:
        addr: {addr}
        path: secret/data/app/db
        field: password
        auth: {{ token_file: {token_file} }}
  port:
    type: int
    from:
      openbao:
        addr: {addr}
        path: secret/data/app/db
        field: port
        auth: {{ approle: {{ role_id: {role_id}, secret_id_env: BAO_SECRET_ID }} }}
steps:
  - id: before
    shell: {{ args: [sh, -c, 'printf %s "$1" > before.txt; echo "using $1"', sh, "{{{{params.password}}}}"] }}
  - id: port
    script: "params.port == 5432"
  - id: confirm
    gate: {{ prompt: "go on?" }}
  - id: after
    shell: {{ args: [sh, -c, 'printf %s "$1" > after.txt; echo "now using $1"', sh, "{{{{params.password}}}}"] }}
"#
    )
}

#[test]
fn openbao_secret_params_are_read_at_start_and_again_on_resume_and_never_journaled() {
    let bao = Bao::start();
    bao.write_secret(FIRST);
    // An AppRole that may read the secret and nothing else.
    bao.call(
        "PUT",
        "sys/policies/acl/read-db",
        &json!({"policy": "path \"secret/data/app/db\" { capabilities = [\"read\"] }"}),
    );
    bao.call("POST", "sys/auth/approle", &json!({"type": "approle"}));
    bao.call(
        "POST",
        "auth/approle/role/runbook",
        &json!({"token_policies": ["read-db"], "token_ttl": "5m"}),
    );
    let role_id =
        bao.call("GET", "auth/approle/role/runbook/role-id", &Value::Null)["data"]["role_id"]
            .as_str()
            .expect("role id")
            .to_owned();
    let secret_id =
        bao.call("POST", "auth/approle/role/runbook/secret-id", &json!({}))["data"]["secret_id"]
            .as_str()
            .expect("secret id")
            .to_owned();

    let sb = Sandbox::new();
    let token_file = sb.write("bao-token", &format!("{}\n", bao.root));
    let token_file = token_file.to_str().expect("utf-8 path");
    sb.write("uses-bao.yaml", &runbook(&bao.addr, token_file, &role_id));

    let out = sb
        .cmd(&["run", "uses-bao.yaml"])
        .env("BAO_SECRET_ID", &secret_id)
        .code(3);
    assert_eq!(
        sb.read("before.txt"),
        FIRST,
        "the step got the value OpenBao holds"
    );
    assert_output_clean("run", &out);
    let run = sb.only_run();
    let before = sb
        .records(&run)
        .into_iter()
        .find(|r| r["event"] == "step_succeeded" && r["path"] == "before")
        .expect("before succeeded");
    assert_eq!(before["output"]["stdout"], "using ***\n", "{before}");

    // Without a way to read the secret, going on is refused and nothing is journaled.
    let count = sb.records(&run).len();
    std::fs::rename(token_file, format!("{token_file}.away")).expect("move the token away");
    let out = sb
        .cmd(&["approve", &run])
        .env("BAO_SECRET_ID", &secret_id)
        .code(2);
    assert!(
        out.stderr.contains(&format!(
            "parameter `password`: cannot read it from OpenBao (secret/data/app/db#password): \
             cannot read the token file {token_file}: "
        )),
        "{}",
        out.explain("approve must say which secret it cannot read")
    );
    assert_eq!(
        sb.records(&run).len(),
        count,
        "a refused approve writes nothing"
    );
    assert_eq!(sb.status(&run)["state"], "waiting");
    std::fs::rename(format!("{token_file}.away"), token_file).expect("move the token back");

    // The secret is rotated while the run waits at its gate; going on reads it again.
    bao.write_secret(SECOND);
    let out = sb
        .cmd(&["approve", &run])
        .env("BAO_SECRET_ID", &secret_id)
        .ok();
    assert_eq!(
        sb.read("after.txt"),
        SECOND,
        "the resumed run read the secret again"
    );
    assert_output_clean("approve", &out);
    assert_eq!(sb.status(&run)["state"], "succeeded");

    let log = sb.cmd(&["log", &run, "--output", "json"]).ok();
    assert_output_clean("log --output json", &log);
    assert_clean("the journal", &String::from_utf8_lossy(&sb.journal_bytes()));
    let started = sb
        .records(&run)
        .into_iter()
        .find(|r| r["event"] == "run_started")
        .expect("run_started");
    assert_eq!(started["params"]["password"], "***", "{started}");
    assert_eq!(started["params"]["port"], "***", "{started}");
}

#[test]
fn openbao_secret_failures_name_the_parameter_and_what_openbao_said() {
    let bao = Bao::start();
    bao.write_secret(FIRST);
    let sb = Sandbox::new();
    let token_file = sb.write("bao-token", &bao.root);
    let token_file = token_file.to_str().expect("utf-8 path");
    let book = |path: &str, field: &str, auth: &str| {
        format!(
            "runbook: b\nparams:\n  password:\n    from: {{ openbao: {{ addr: {}, path: {path}, field: {field}, auth: {auth} }} }}\nsteps:\n  - id: s\n    script: \"true\"\n",
            bao.addr
        )
    };
    let expect = |name: &str, yaml: String, message: &str| {
        sb.write(name, &yaml);
        let out = sb.cmd(&["run", name]).code(2);
        assert!(
            out.stderr.contains(message),
            "{}",
            out.explain(&format!("expected {message:?}"))
        );
        assert_output_clean(name, &out);
    };
    let token = format!("{{ token_file: {token_file} }}");
    expect(
        "no-field.yaml",
        book("secret/data/app/db", "pasword", &token),
        &format!(
            "parameter `password`: cannot read it from OpenBao (secret/data/app/db#pasword): \
             secret/data/app/db at {} has no field `pasword`; its fields: password, port",
            bao.addr
        ),
    );
    expect(
        "kv-v1-path.yaml",
        book("secret/app/db", "password", &token),
        "cannot read secret/app/db at",
    );
    expect(
        "kv-v1-path.yaml",
        book("secret/app/db", "password", &token),
        "(a KV v2 secret's path has `data/` after the mount: secret/data/NAME)",
    );
    std::fs::write(sb.path().join("bad-token"), "not-a-token").expect("write");
    expect(
        "bad-token.yaml",
        book(
            "secret/data/app/db",
            "password",
            "{ token_file: bad-token }",
        ),
        "permission denied (HTTP 403)",
    );
    expect(
        "no-env.yaml",
        book(
            "secret/data/app/db",
            "password",
            "{ token_env: RUNBOOK_TEST_UNSET_TOKEN }",
        ),
        "parameter `password`: cannot read it from OpenBao (secret/data/app/db#password): no \
         OpenBao token: $RUNBOOK_TEST_UNSET_TOKEN is not set",
    );
    drop(bao);
}

#[test]
fn check_points_at_each_bad_field_of_an_openbao_source() {
    let sb = Sandbox::new();
    sb.write(
        "bad.yaml",
        r#"runbook: bad
params:
  password:
    from:
      openbao:
        addr: bao.example:8200
        feild: password
        auth: { token_env: BAO_TOKEN, token_file: /run/token }
  key:
    from: { vault: { path: secret/data/k, field: k } }
  token:
    secret: false
    from: { openbao: { path: auth/token/lookup-self, field: id } }
steps:
  - id: s
    script: "true"
"#,
    );
    let out = sb.cmd(&["check", "bad.yaml"]).run();
    out.expect_code(2);
    assert_eq!(
        out.stderr,
        r"error: `openbao` needs `path`, the secret's API path (KV v2: secret/data/NAME)
 --> bad.yaml:5:7
  |
5 |       openbao:
  |       ^^^^^^^

error: `openbao` needs `field`, the field of the secret to read
 --> bad.yaml:5:7
  |
5 |       openbao:
  |       ^^^^^^^

error: `addr` must start with http:// or https://, not `bao.example:8200`
 --> bad.yaml:6:15
  |
6 |         addr: bao.example:8200
  |               ^^^^^^^^^^^^^^^^

error: unknown field `feild` in `openbao`
 --> bad.yaml:7:9
  |
7 |         feild: password
  |         ^^^^^ did you mean `field`?

error: `auth` takes one of `token_env`, `token_file` or `approle`
 --> bad.yaml:8:15
  |
8 |         auth: { token_env: BAO_TOKEN, token_file: /run/token }
  |               ^

error: unknown field `vault` in `from`
  --> bad.yaml:10:13
   |
10 |     from: { vault: { path: secret/data/k, field: k } }
   |             ^^^^^
   |
help: the fields of `from` are: openbao

error: parameter `token` comes from OpenBao, so it is always secret
  --> bad.yaml:12:13
   |
12 |     secret: false
   |             ^^^^^

error: 7 problems found
",
        "{}",
        out.explain("unexpected stderr")
    );
}
