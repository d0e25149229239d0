//! Hadoop from Maven Central, fetched once into the download cache.
//!
//! The NameNode and DataNode HTTP servers (and so WebHDFS) refuse to start
//! without `webapps/hdfs` and `webapps/datanode` on the classpath; of what
//! Maven Central carries, only the release's `tests` jar has them. Just that
//! directory is unpacked from it; its test classes are not used.

use std::fs;
use std::path::PathBuf;
use std::process::Command;

use anyhow::{bail, Context, Result};

use super::VERSION;
use crate::cache;

/// Hadoop's jars and the unpacked web resources, fetched once into the cache.
pub fn fetch() -> Result<(PathBuf, PathBuf)> {
    let jars = cache::maven_jars(
        &format!("hadoop-{VERSION}"),
        &[
            ("org.apache.hadoop", "hadoop-hdfs", VERSION),
            // `provided` in hadoop-hdfs's pom, so it must be named.
            ("org.apache.hadoop", "hadoop-common", VERSION),
            ("org.apache.hadoop", "hadoop-hdfs-client", VERSION),
        ],
    )?;
    let webapps = cache::ensure(&format!("hadoop-{VERSION}-webapps"), |dir| {
        let artifact = format!("org.apache.hadoop:hadoop-hdfs:{VERSION}:jar:tests");
        run(Command::new("mvn")
            .current_dir(dir)
            .args(["-q", "-B", "dependency:copy", "-DoutputDirectory=."])
            .arg(format!("-Dartifact={artifact}"))
            .arg(format!(
                "-Dmaven.repo.local={}",
                cache::cache_dir().join("m2").display()
            )))?;
        let jar = format!("hadoop-hdfs-{VERSION}-tests.jar");
        run(Command::new("jar")
            .current_dir(dir)
            .args(["xf", &jar, "webapps"]))?;
        fs::remove_file(dir.join(&jar))?;
        Ok(())
    })?;
    Ok((jars, webapps))
}

fn run(cmd: &mut Command) -> Result<()> {
    let out = cmd
        .output()
        .with_context(|| format!("running {:?}", cmd.get_program()))?;
    if !out.status.success() {
        bail!(
            "{:?} failed ({}):\n{}{}",
            cmd,
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(())
}
