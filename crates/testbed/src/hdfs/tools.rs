//! Hadoop's own client tools against a testbed cluster: the file system shell
//! (`hdfs dfs`), DFSAdmin (`hdfs dfsadmin`) and DistCp (`hadoop distcp`).
//!
//! The shell and DFSAdmin run from the cluster's jars. DistCp needs the
//! MapReduce client besides, and the testbed has no YARN: it runs in local
//! MapReduce mode (`mapreduce.framework.name=local`, the LocalJobRunner maps
//! inside the client JVM). Its jars are a cache entry of their own, resolved
//! together with the HDFS client they were built against, so the daemons'
//! classpath stays what it was.
//!
//! Every tool is a client of the named cluster: its `client-conf` comes first
//! on the classpath (fs.defaultFS, replication), so paths without a scheme
//! are on that cluster; other clusters are reached by `hdfs://` URIs.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::str::FromStr;

use anyhow::{bail, Context, Result};

use super::{Info, VERSION};
use crate::cache;

/// The client tools that run from the cluster's own jars.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Class {
    /// `org.apache.hadoop.fs.FsShell`: `-ls -R`, `-du`, `-put`,
    /// `-createSnapshot`, `-checksum`, ...
    Fs,
    /// `org.apache.hadoop.hdfs.tools.DFSAdmin`: `-allowSnapshot`, `-report`, ...
    Dfsadmin,
}

impl Class {
    pub const ALL: [Class; 2] = [Class::Fs, Class::Dfsadmin];

    pub fn as_str(self) -> &'static str {
        match self {
            Class::Fs => "fs",
            Class::Dfsadmin => "dfsadmin",
        }
    }

    fn main_class(self) -> &'static str {
        match self {
            Class::Fs => "org.apache.hadoop.fs.FsShell",
            Class::Dfsadmin => "org.apache.hadoop.hdfs.tools.DFSAdmin",
        }
    }
}

impl FromStr for Class {
    type Err = anyhow::Error;

    fn from_str(s: &str) -> Result<Class> {
        match Class::ALL.into_iter().find(|c| c.as_str() == s) {
            Some(c) => Ok(c),
            None => bail!("unknown tool class {s:?} (one of: fs, dfsadmin)"),
        }
    }
}

/// `java ... <class> ARGS` as a client of `info`'s cluster, not yet started.
pub fn shell(info: &Info, class: Class, args: &[String]) -> Result<Command> {
    let log4j = tools_log4j(&info.jars)?;
    let mut cmd = client_java(info, &info.jars, &log4j, "WARN");
    // Short-lived and start-up bound: the daemons' C1-only JIT fits.
    cmd.arg("-XX:TieredStopAtLevel=1")
        .arg(class.main_class())
        .args(args);
    Ok(cmd)
}

/// `DistCp -Dmapreduce.framework.name=local ARGS` as a client of `info`'s
/// cluster, not yet started; fetches DistCp's jars first if needed.
///
/// The LocalJobRunner runs one map at a time unless
/// `mapreduce.local.map.tasks.maximum` says otherwise; ARGS may set it (and
/// anything else) with generic `-D` options, which must come first. Full JIT:
/// DistCp is measured against tidemark, so it runs as fast as it can here.
pub fn distcp(info: &Info, args: &[String]) -> Result<Command> {
    let jars = fetch_distcp()?;
    let log4j = tools_log4j(&jars)?;
    let mut cmd = client_java(info, &jars, &log4j, "INFO");
    cmd.arg("org.apache.hadoop.tools.DistCp")
        .arg("-Dmapreduce.framework.name=local")
        .args(args);
    Ok(cmd)
}

/// DistCp and what it needs to run a local MapReduce job, with their runtime
/// dependencies, in `<cache>/hadoop-VERSION-distcp/lib`. Besides
/// `hadoop-distcp` itself: `hadoop-common` and `hadoop-hdfs-client` (both
/// `provided` in its pom), `hadoop-mapreduce-client-core` (the job API) and
/// `-common` (the LocalJobRunner and its `ClientProtocolProvider`). The
/// `-jobclient`, `-app` and `-shuffle` modules are for YARN and not needed.
pub fn fetch_distcp() -> Result<PathBuf> {
    let hadoop = "org.apache.hadoop";
    cache::maven_jars(
        &format!("hadoop-{VERSION}-distcp"),
        &[
            (hadoop, "hadoop-distcp", VERSION),
            (hadoop, "hadoop-common", VERSION),
            (hadoop, "hadoop-hdfs-client", VERSION),
            (hadoop, "hadoop-mapreduce-client-core", VERSION),
            (hadoop, "hadoop-mapreduce-client-common", VERSION),
        ],
    )
}

/// A client JVM: the cluster's client conf first, then `<jars>/*`; log4j to
/// stderr at `level` (the conf dir's own log4j.properties is for daemons).
fn client_java(info: &Info, jars: &Path, log4j: &Path, level: &str) -> Command {
    let classpath = std::env::join_paths([info.client_conf(), jars.join("*")])
        .expect("no ':' in testbed paths");
    let mut cmd = Command::new("java");
    cmd.arg(format!("-Xmx{}", heap()))
        .arg("-Djava.net.preferIPv4Stack=true")
        .arg(format!("-Dlog4j.configuration=file:{}", log4j.display()))
        .arg(format!("-Dtestbed.tool.level={level}"))
        .arg(format!("-Dhadoop.log.dir={}", info.dir.display()))
        .arg("-cp")
        .arg(classpath);
    cmd
}

/// `$TESTBED_HADOOP_TOOL_HEAP` (e.g. `4g`), else 1g: DistCp's copy listing
/// and `-ls -R` of a million-file namespace fit in it.
fn heap() -> String {
    std::env::var("TESTBED_HADOOP_TOOL_HEAP").unwrap_or_else(|_| "1g".into())
}

/// log4j settings for the tools next to their jars, written once (atomically:
/// several processes may get here at the same time).
fn tools_log4j(jars: &Path) -> Result<PathBuf> {
    let dir = jars.parent().context("jars dir has a parent")?;
    let path = dir.join("log4j-tools.properties");
    if !path.exists() {
        let tmp = dir.join(format!("log4j-tools.properties.{}", std::process::id()));
        std::fs::write(&tmp, LOG4J_TOOLS)?;
        std::fs::rename(&tmp, &path)?;
    }
    Ok(path)
}

/// The level comes from `-Dtestbed.tool.level`; warnings every run prints
/// (no native library on this machine) are left out.
const LOG4J_TOOLS: &str = "\
log4j.rootLogger=${testbed.tool.level},console
log4j.appender.console=org.apache.log4j.ConsoleAppender
log4j.appender.console.target=System.err
log4j.appender.console.layout=org.apache.log4j.PatternLayout
log4j.appender.console.layout.ConversionPattern=%d{ISO8601} %p %c{2}: %m%n
log4j.logger.org.apache.hadoop.util.NativeCodeLoader=ERROR
";
