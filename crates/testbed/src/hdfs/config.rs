//! Site files and JVM command lines for the NameNode and DataNodes.
//!
//! Every server gets its own conf directory, put first on its classpath, so
//! one set of jars serves all of them and a process's settings are visible in
//! one place next to its log.

use std::fmt::Write as _;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, Result};

use super::{DataNodeInfo, Info};

/// Settings shared by every process of the cluster (and by clients).
fn common(info: &Info) -> Vec<(&'static str, String)> {
    vec![
        ("fs.defaultFS", info.namenode.clone()),
        ("hadoop.tmp.dir", info.dir.join("tmp").display().to_string()),
        ("dfs.replication", info.datanodes.len().min(3).to_string()),
        // Tests act as arbitrary users through `user.name=`; permissions would
        // only get in their way, except where a test asks for them.
        ("dfs.permissions.enabled", info.permissions.to_string()),
        ("dfs.webhdfs.enabled", "true".into()),
        // Loopback addresses have no resolvable host names to check.
        (
            "dfs.namenode.datanode.registration.ip-hostname-check",
            "false".into(),
        ),
        // A fresh namespace has no blocks to wait for; the default 30 s
        // extension would only delay the first write.
        ("dfs.namenode.safemode.extension", "0".into()),
        ("dfs.heartbeat.interval", "1".into()),
        // A file still being written is captured in a snapshot with the
        // length it had then (tidemark stores exactly that length).
        ("dfs.namenode.snapshot.capture.openfiles", "true".into()),
        // Block-size independent checksums (GETFILECHECKSUM), so a file
        // restored with another block size can still be compared.
        ("dfs.checksum.combine.mode", "COMPOSITE_CRC".into()),
        ("dfs.namenode.acls.enabled", "true".into()),
        ("dfs.namenode.xattrs.enabled", "true".into()),
    ]
}

pub fn write_namenode(info: &Info) -> Result<()> {
    let mut props = common(info);
    props.extend([
        ("dfs.namenode.name.dir", path(&info.name_dir)),
        (
            "dfs.namenode.rpc-address",
            format!("127.0.0.1:{}", info.rpc_port),
        ),
        (
            "dfs.namenode.http-address",
            format!("127.0.0.1:{}", info.http_port),
        ),
        // Not served (HTTP_ONLY), but keep every address on loopback anyway.
        ("dfs.namenode.https-address", "127.0.0.1:0".into()),
        ("dfs.namenode.secondary.http-address", "127.0.0.1:0".into()),
        ("dfs.namenode.secondary.https-address", "127.0.0.1:0".into()),
    ]);
    write_conf(&info.namenode_conf(), &props)
}

pub fn write_datanode(info: &Info, dn: &DataNodeInfo) -> Result<()> {
    let mut props = common(info);
    props.extend([
        ("dfs.datanode.data.dir", path(&dn.data_dir)),
        (
            "dfs.datanode.address",
            format!("127.0.0.1:{}", dn.xfer_port),
        ),
        (
            "dfs.datanode.http.address",
            format!("127.0.0.1:{}", dn.http_port),
        ),
        (
            "dfs.datanode.ipc.address",
            format!("127.0.0.1:{}", dn.ipc_port),
        ),
        ("dfs.datanode.https.address", "127.0.0.1:0".into()),
        // What the NameNode hands out in WebHDFS redirects and block locations.
        ("dfs.datanode.hostname", "127.0.0.1".into()),
    ]);
    write_conf(&dn.conf_dir(), &props)
}

/// A client-side conf dir (fs.defaultFS and friends) for tools run later.
pub fn write_client(info: &Info) -> Result<()> {
    write_conf(&info.client_conf(), &common(info))
}

fn write_conf(dir: &Path, props: &[(&str, String)]) -> Result<()> {
    fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let mut xml = String::from("<?xml version=\"1.0\"?>\n<configuration>\n");
    for (k, v) in props {
        writeln!(
            xml,
            "  <property><name>{k}</name><value>{}</value></property>",
            escape(v)
        )?;
    }
    xml.push_str("</configuration>\n");
    // core-site and hdfs-site are both read by every Hadoop daemon and client;
    // one file under both names keeps them from disagreeing.
    fs::write(dir.join("core-site.xml"), &xml)?;
    fs::write(dir.join("hdfs-site.xml"), &xml)?;
    fs::write(dir.join("log4j.properties"), LOG4J)?;
    Ok(())
}

/// Everything to the console, which `process::spawn` sends to the log file.
const LOG4J: &str = "\
log4j.rootLogger=INFO,console
log4j.appender.console=org.apache.log4j.ConsoleAppender
log4j.appender.console.target=System.err
log4j.appender.console.layout=org.apache.log4j.PatternLayout
log4j.appender.console.layout.ConversionPattern=%d{ISO8601} %p %c{2}: %m%n
";

fn escape(v: &str) -> String {
    v.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

fn path(p: &Path) -> String {
    p.display().to_string()
}

/// `java` with the given conf dir first on the classpath, then the web UI
/// resources (which WebHDFS's HTTP server needs) and the jars.
pub fn java(info: &Info, conf: &Path, heap: &str, main: &str) -> Command {
    let classpath: Vec<PathBuf> = vec![
        conf.to_path_buf(),
        info.webapps.clone(),
        info.jars.join("*"),
    ];
    let classpath = std::env::join_paths(classpath).expect("no ':' in testbed paths");
    let mut cmd = Command::new("java");
    cmd.arg(format!("-Xmx{heap}"))
        // Start-up time dominates on a small machine; peak speed does not matter.
        .args(["-XX:+UseSerialGC", "-XX:TieredStopAtLevel=1"])
        .arg("-Djava.net.preferIPv4Stack=true")
        .arg(format!("-Dhadoop.log.dir={}", info.dir.display()))
        .arg("-cp")
        .arg(classpath)
        .arg(main);
    cmd
}
