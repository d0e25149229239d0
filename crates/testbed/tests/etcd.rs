//! etcd through Debian's etcdctl (put on one member, get from another), and
//! the `testbed` binary's up / status / down cycle leaving nothing behind, and
//! its refusal of bad node counts.

use std::process::Command;

use serde_json::Value;
use testbed::etcd::{etcdctl, Info};
use testbed::fixture::SharedCell;
use testbed::Kind;

static ETCD: SharedCell = SharedCell::new(Kind::Etcd, "TESTBED_ETCD_ROOT", None);

#[test]
fn put_on_one_member_get_from_another() {
    let info: Info = ETCD.get().info();
    assert_eq!(info.members.len(), 3);
    let (first, second) = (&info.members[0].client_url, &info.members[1].client_url);
    etcdctl(std::slice::from_ref(first), &["put", "/tidemark/k", "v1"]).unwrap();
    let got = etcdctl(
        std::slice::from_ref(second),
        &["get", "/tidemark/k", "--print-value-only"],
    )
    .unwrap();
    assert_eq!(got.trim(), "v1");
    let absent = etcdctl(
        std::slice::from_ref(second),
        &["get", "/tidemark/absent", "--print-value-only"],
    )
    .unwrap();
    assert_eq!(absent.trim(), "");

    // One leader, and every member agrees on it.
    let status = etcdctl(&info.endpoints, &["endpoint", "status", "-w", "json"]).unwrap();
    let status: Value = serde_json::from_str(&status).unwrap();
    let leaders: Vec<&Value> = status
        .as_array()
        .unwrap()
        .iter()
        .map(|s| &s["Status"]["leader"])
        .collect();
    assert_eq!(leaders.len(), 3);
    assert!(leaders.iter().all(|l| *l == leaders[0]), "{status}");
}

fn testbed(root: &std::path::Path, args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_testbed"))
        .arg("--root")
        .arg(root)
        .args(args)
        .output()
        .unwrap()
}

#[test]
fn binary_up_status_down_leaves_no_process() {
    let root = tempfile::tempdir().unwrap();
    let up = testbed(root.path(), &["up", "etcd", "--nodes", "1"]);
    assert!(
        up.status.success(),
        "{}",
        String::from_utf8_lossy(&up.stderr)
    );
    let info: Value = serde_json::from_slice(&up.stdout).unwrap();
    let endpoint = info["endpoints"][0].as_str().unwrap().to_string();
    etcdctl(std::slice::from_ref(&endpoint), &["put", "k", "v"]).unwrap();

    let status = testbed(root.path(), &["status", "--json"]);
    let status: Value = serde_json::from_slice(&status.stdout).unwrap();
    let pids: Vec<i64> = status
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["pid"].as_i64().unwrap())
        .collect();
    assert_eq!(pids.len(), 1);
    assert!(status[0]["alive"].as_bool().unwrap());

    let down = testbed(root.path(), &["down"]);
    assert!(
        down.status.success(),
        "{}",
        String::from_utf8_lossy(&down.stderr)
    );
    let after = testbed(root.path(), &["status", "--json"]);
    assert_eq!(
        serde_json::from_slice::<Value>(&after.stdout).unwrap(),
        Value::Array(vec![])
    );
    for pid in pids {
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
        // Gone, or a zombie its (exited) parent left for init to reap.
        assert!(
            stat.is_empty() || stat.contains(") Z "),
            "etcd pid {pid} still runs: {stat}"
        );
    }
    assert!(
        etcdctl(&[endpoint], &["get", "k"]).is_err(),
        "etcd still answers after down"
    );
}

#[test]
fn bad_node_counts_are_refused_before_anything_starts() {
    let root = tempfile::tempdir().unwrap();
    for (kind, nodes) in [
        ("etcd", "0"),
        ("redis", "2"),
        ("hdfs", "0"),
        ("mongodb", "0"),
    ] {
        let out = testbed(root.path(), &["up", kind, "--nodes", nodes]);
        assert!(!out.status.success(), "{kind} --nodes {nodes} was accepted");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(stderr.contains("--nodes"), "{kind}: {stderr}");
    }
    let status = testbed(root.path(), &["status", "--json"]);
    assert_eq!(
        serde_json::from_slice::<Value>(&status.stdout).unwrap(),
        Value::Array(vec![])
    );
}
