//! The `testbed` binary as CI uses it: `up` in one process, `status`,
//! `nodetool` and `down` in others, and nothing left running afterwards.

use std::path::Path;
use std::process::{Command, Output};

use anyhow::{ensure, Context, Result};
use serde_json::Value;

fn testbed(root: &Path, args: &[&str]) -> Result<Output> {
    Command::new(env!("CARGO_BIN_EXE_testbed"))
        .arg("--root")
        .arg(root)
        .args(args)
        .output()
        .context("running testbed")
}

fn ok(out: Output) -> Result<String> {
    ensure!(
        out.status.success(),
        "testbed failed ({}):\n{}{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    Ok(String::from_utf8(out.stdout)?)
}

#[test]
fn unknown_kind_is_a_clear_error() -> Result<()> {
    let root = tempfile::tempdir()?;
    let out = testbed(root.path(), &["up", "nosuch"])?;
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("unknown kind \"nosuch\""), "{err}");
    assert!(err.contains("cassandra"), "{err}");
    Ok(())
}

#[test]
fn up_status_nodetool_down_from_separate_processes() -> Result<()> {
    let root = tempfile::tempdir()?;
    let up = testbed(root.path(), &["up", "cassandra", "--nodes", "1"]);
    // Whatever happens next, stop what `up` started.
    let result = (|| {
        let info: Value = serde_json::from_str(&ok(up?)?)?;
        let contact = info["contact_points"][0]
            .as_str()
            .context("contact point")?;
        let addr: std::net::SocketAddr = contact.parse()?;
        assert!(addr.ip().is_loopback());
        assert!(std::net::TcpStream::connect(addr).is_ok(), "CQL at {addr}");
        let node = &info["nodes"][0];
        assert!(Path::new(node["config"].as_str().context("config")?).is_file());
        assert!(node["jmx_port"].as_u64().is_some());

        let status: Value =
            serde_json::from_str(&ok(testbed(root.path(), &["status", "--json"])?)?)?;
        let procs = status.as_array().context("status is a list")?;
        assert_eq!(procs.len(), 1);
        assert_eq!(procs[0]["alive"], Value::Bool(true));

        let nodetool = ok(testbed(
            root.path(),
            &["nodetool", "--node", "1", "--", "status"],
        )?)?;
        assert_eq!(nodetool.lines().filter(|l| l.starts_with("UN ")).count(), 1);
        let bad = testbed(root.path(), &["nodetool", "--node", "1", "--", "nosuchcmd"])?;
        assert!(!bad.status.success(), "a bad nodetool command must fail");
        let missing = testbed(root.path(), &["nodetool", "--node", "7", "--", "status"])?;
        assert!(!missing.status.success());
        assert!(String::from_utf8_lossy(&missing.stderr).contains("no node 7"));

        let pid = procs[0]["pid"].as_i64().context("pid")?;
        ok(testbed(root.path(), &["down"])?)?;
        // `down` returns once the JVM is dead; its new parent (init, since
        // `up` has exited) reaps it a moment later.
        let proc_dir = format!("/proc/{pid}");
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        while Path::new(&proc_dir).exists() && std::time::Instant::now() < deadline {
            std::thread::sleep(std::time::Duration::from_millis(100));
        }
        assert!(
            !Path::new(&proc_dir).exists(),
            "pid {pid} remains after down"
        );
        let after: Value =
            serde_json::from_str(&ok(testbed(root.path(), &["status", "--json"])?)?)?;
        assert_eq!(after, Value::Array(vec![]));
        anyhow::Ok(())
    })();
    let _ = testbed(root.path(), &["down"]);
    result
}
