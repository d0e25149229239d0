//! Faults around `tidemark cluster backup`, each with the real binary:
//! malformed coordinator files, a wrong agent token, an unreachable agent
//! and a node down before the backup (refused after the freeze wait). A
//! refused backup leaves nothing listed; after the fault is gone the next
//! backup succeeds.

mod common;

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;

use common::{cql, run_command, Output};
use scylla::client::session_builder::SessionBuilder;
use serde_json::Value;
use testbed::cassandra::{self, Info};
use testbed::fixture::SharedCell;
use testbed::Kind;

static CLUSTER: SharedCell = SharedCell::with_agents(
    Kind::Cassandra,
    "TESTBED_CASSANDRA_ROOT",
    Some(3),
    env!("CARGO_BIN_EXE_tidemark"),
);

fn tidemark(args: &[&str]) -> Output {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_tidemark"));
    for v in [
        "TIDEMARK_REPOSITORY",
        "TIDEMARK_PASSWORD",
        "TIDEMARK_PASSWORD_FILE",
    ] {
        cmd.env_remove(v);
    }
    cmd.args(args);
    run_command(cmd)
}

fn backup(config: &Path) -> Output {
    tidemark(&[
        "cluster",
        "backup",
        "--config",
        &config.display().to_string(),
    ])
}

fn listed(config: &Path) -> usize {
    let out = tidemark(&[
        "cluster",
        "list",
        "--json",
        "--config",
        &config.display().to_string(),
    ]);
    assert_eq!(out.code, 0, "cluster list failed:\n{}", out.stderr);
    match out.json() {
        Value::Array(a) => a.len(),
        other => panic!("cluster list --json is not an array: {other}"),
    }
}

/// `text` with the value of every line `key = ...` replaced.
fn set_key(text: &str, key: &str, value: &str) -> String {
    text.lines()
        .map(|l| {
            if l.trim_start().starts_with(&format!("{key} =")) {
                format!("{key} = {value}")
            } else {
                l.to_string()
            }
        })
        .collect::<Vec<_>>()
        .join("\n")
        + "\n"
}

fn write(dir: &Path, name: &str, text: &str) -> PathBuf {
    let p = dir.join(name);
    fs::write(&p, text).unwrap();
    p
}

fn secret(dir: &Path, name: &str, text: &str) -> PathBuf {
    let p = write(dir, name, text);
    fs::set_permissions(&p, fs::Permissions::from_mode(0o600)).unwrap();
    p
}

fn failed(out: &Output, what: &str) -> String {
    assert_ne!(out.code, 0, "{what}: exit 0\nstdout:\n{}", out.stdout);
    println!("{what}: exit {}\n{}", out.code, out.stderr);
    out.stderr.clone()
}

#[test]
fn malformed_config_names_file_and_field() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let token = secret(d, "token", &"ab".repeat(32));
    let pw = secret(d, "password", "pw");
    let good = format!(
        "name = \"c\"\nrepository = \"{repo}\"\npassword-file = \"{pw}\"\n\n\
         [cassandra]\ncontact-points = [\"127.0.0.1:9042\"]\n\n\
         [agents]\ntoken-file = \"{token}\"\n\n\
         [[agents.node]]\naddress = \"127.0.0.1\"\nurl = \"http://127.0.0.1:1\"\n",
        repo = d.join("repo").display(),
        pw = pw.display(),
        token = token.display()
    );

    let unknown = write(d, "unknown.toml", &format!("colour = \"blue\"\n{good}"));
    let err = failed(&backup(&unknown), "unknown key");
    assert!(err.contains(&unknown.display().to_string()), "{err}");
    assert!(err.contains("colour"), "{err}");

    let bad_url = write(
        d,
        "url.toml",
        &set_key(&good, "url", "\"ftp://127.0.0.1:1\""),
    );
    let err = failed(&backup(&bad_url), "bad url");
    assert!(err.contains(&bad_url.display().to_string()), "{err}");
    assert!(err.contains("agents.node[0].url"), "{err}");

    let missing = d.join("no-such.toml");
    let err = failed(&backup(&missing), "missing file");
    assert!(err.contains(&missing.display().to_string()), "{err}");
}

#[test]
fn agent_faults_are_named_and_a_down_node_is_refused() {
    let shared = CLUSTER.get();
    let info: Info = shared.info();
    let config = PathBuf::from(
        shared.info["tidemark_config"]
            .as_str()
            .expect("cluster started with agents"),
    );
    let text = fs::read_to_string(&config).unwrap();
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let session = SessionBuilder::new()
            .known_nodes(&info.contact_points)
            .build()
            .await
            .unwrap();
        cql::create_and_fill(&session, "faults_ks", 3, 40)
            .await
            .unwrap();
    });
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let before = listed(&config);

    // A token the agents do not know.
    let wrong = secret(d, "wrong-token", &"cd".repeat(32));
    let cfg = write(
        d,
        "wrong-token.toml",
        &set_key(&text, "token-file", &format!("\"{}\"", wrong.display())),
    );
    let err = failed(&backup(&cfg), "wrong token");
    assert!(err.contains("refused the credentials"), "{err}");
    assert!(!err.contains(&"cd".repeat(32)), "the token leaked: {err}");

    // An agent on a port nobody listens on.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let first_url = text
        .lines()
        .find_map(|l| l.trim().strip_prefix("url = "))
        .unwrap()
        .trim_matches('"')
        .to_string();
    let dead_url = format!("http://127.0.0.1:{port}");
    let cfg = write(d, "dead.toml", &text.replacen(&first_url, &dead_url, 1));
    let err = failed(&backup(&cfg), "unreachable agent");
    assert!(err.contains(&dead_url), "{err}");
    assert_eq!(listed(&config), before, "a failed backup was listed");

    // A node down before the backup: refused after a short freeze wait.
    let node = info.node(3).unwrap();
    let short = write(
        d,
        "short.toml",
        &format!("{text}\n[backup]\nfreeze-wait = \"5s\"\n"),
    );
    cassandra::stop_node(&shared.root, &shared.name, 3).unwrap();
    let out = backup(&short);
    cassandra::start_node(&shared.root, &shared.name, 3).unwrap();
    let err = failed(&out, "node down");
    assert!(err.contains(&node.address.to_string()), "{err}");
    assert_eq!(listed(&config), before, "a refused backup was listed");

    // With the node back, the next backup succeeds.
    let out = backup(&short);
    assert_eq!(out.code, 0, "backup after recovery:\n{}", out.stderr);
    assert_eq!(listed(&config), before + 1);
}
