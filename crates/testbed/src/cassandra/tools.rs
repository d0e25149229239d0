//! nodetool and sstableloader from the same jars as the nodes.

use std::path::PathBuf;
use std::process::{Command, Output};

use anyhow::{bail, Context, Result};

use super::{config, Info};

/// Runs `nodetool ARGS` against node `n` over its local JMX port.
pub fn nodetool(info: &Info, n: usize, args: &[String]) -> Result<Output> {
    let node = info.node(n)?;
    let mut cmd = Command::new("java");
    cmd.args(config::tool_jvm_args(info, &tools_logback(info)?, false))
        .arg("org.apache.cassandra.tools.NodeTool")
        .args(["-h", "127.0.0.1", "-p", &node.jmx_port.to_string()])
        .args(args);
    cmd.output().context("running nodetool")
}

/// Like [`nodetool`], but a non-zero exit is an error carrying its output;
/// returns stdout.
pub fn nodetool_ok(info: &Info, n: usize, args: &[&str]) -> Result<String> {
    let args: Vec<String> = args.iter().map(|s| s.to_string()).collect();
    let out = nodetool(info, n, &args)?;
    if !out.status.success() {
        bail!(
            "nodetool {} on node {n} failed ({}):\n{}{}",
            args.join(" "),
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// How many nodes node `n` lists as Up/Normal in `nodetool status`.
pub fn up_normal_count(info: &Info, n: usize) -> Result<usize> {
    let out = nodetool_ok(info, n, &["status"])?;
    Ok(out.lines().filter(|l| l.starts_with("UN ")).count())
}

/// Runs sstableloader (org.apache.cassandra.tools.BulkLoader). Unless ARGS
/// name the nodes (`-d`/`--nodes`), the cluster's contact points and ports are
/// passed first.
pub fn sstableloader(info: &Info, args: &[String]) -> Result<Output> {
    let mut cmd = Command::new("java");
    cmd.args(config::tool_jvm_args(info, &tools_logback(info)?, true))
        .arg("org.apache.cassandra.tools.BulkLoader");
    if !args.iter().any(|a| a == "-d" || a == "--nodes") {
        let hosts: Vec<String> = info.nodes.iter().map(|n| n.address.to_string()).collect();
        cmd.args(["-d", &hosts.join(",")])
            .args(["-p", &info.native_port.to_string()])
            .args(["-sp", &info.storage_port.to_string()]);
    }
    cmd.args(args);
    cmd.output().context("running sstableloader")
}

/// A logback file for tools next to the jars, written once (atomically, since
/// several processes may get here at the same time).
fn tools_logback(info: &Info) -> Result<PathBuf> {
    let dir = info.jars.parent().context("jars dir has a parent")?;
    let path = dir.join("logback-tools.xml");
    if !path.exists() {
        let tmp = dir.join(format!("logback-tools.xml.{}", std::process::id()));
        std::fs::write(&tmp, config::LOGBACK_TOOLS)?;
        std::fs::rename(&tmp, &path)?;
    }
    Ok(path)
}

/// The node's own tool commands as wrapper scripts, what an operator has on
/// a real node: `<node>/bin/nodetool` (JMX host and port built in) and
/// `<node>/bin/sstableloader` (native and storage ports built in, no `-d`).
/// Returns their paths (nodetool, sstableloader).
pub fn write_tool_scripts(info: &Info, n: usize) -> Result<(PathBuf, PathBuf)> {
    use std::os::unix::fs::PermissionsExt;
    let node = info.node(n)?;
    let bin = config::node_dir(node).join("bin");
    std::fs::create_dir_all(&bin).with_context(|| format!("creating {}", bin.display()))?;
    let quote = |args: &[String]| -> String {
        args.iter()
            .map(|a| format!("'{}'", a.replace('\'', r"'\''")))
            .collect::<Vec<_>>()
            .join(" ")
    };
    let logback = tools_logback(info)?;
    let nodetool = format!(
        "#!/bin/sh\n# nodetool of testbed node {n} ({})\nexec java {} org.apache.cassandra.tools.NodeTool -h 127.0.0.1 -p {} \"$@\"\n",
        node.address,
        quote(&config::tool_jvm_args(info, &logback, false)),
        node.jmx_port
    );
    let loader = format!(
        "#!/bin/sh\n# sstableloader for testbed cluster {}\nexec java {} org.apache.cassandra.tools.BulkLoader -p {} -sp {} \"$@\"\n",
        info.name,
        quote(&config::tool_jvm_args(info, &logback, true)),
        info.native_port,
        info.storage_port
    );
    let mut out = Vec::new();
    for (name, text) in [("nodetool", nodetool), ("sstableloader", loader)] {
        let path = bin.join(name);
        std::fs::write(&path, text).with_context(|| format!("writing {}", path.display()))?;
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755))?;
        out.push(path);
    }
    Ok((out.remove(0), out.remove(0)))
}
