//! The download cache: one fixed directory shared by every run, so only the
//! first start on a machine needs the network.

use std::fs::{self, File};
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{anyhow, bail, Context, Result};
use nix::fcntl::{Flock, FlockArg};

/// `$TESTBED_CACHE`, else /var/cache/tidemark/downloads.
pub fn cache_dir() -> PathBuf {
    std::env::var_os("TESTBED_CACHE")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/var/cache/tidemark/downloads"))
}

/// Runs `fill(dir)` once for `name` under the cache: a `.complete` marker
/// written after success makes later calls (from any process) skip it, and a
/// lock keeps two processes from filling the same entry at once.
pub fn ensure(name: &str, fill: impl FnOnce(&Path) -> Result<()>) -> Result<PathBuf> {
    let dir = cache_dir().join(name);
    let marker = dir.join(".complete");
    if marker.exists() {
        return Ok(dir);
    }
    fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    let lock = File::create(dir.join(".lock"))?;
    let _guard = Flock::lock(lock, FlockArg::LockExclusive)
        .map_err(|(_, e)| anyhow!("locking {}: {e}", dir.display()))?;
    if !marker.exists() {
        fill(&dir).with_context(|| format!("filling cache entry {}", dir.display()))?;
        fs::write(&marker, b"")?;
    }
    Ok(dir)
}

/// Maven artifacts with their runtime dependencies, copied into `<entry>/lib`
/// (`mvn dependency:copy-dependencies` on a generated pom; Maven's own
/// repository lives in the cache too, at `<cache>/m2`).
pub fn maven_jars(entry: &str, artifacts: &[(&str, &str, &str)]) -> Result<PathBuf> {
    let dir = ensure(entry, |dir| {
        let deps: String = artifacts
            .iter()
            .map(|(g, a, v)| {
                format!(
                    "    <dependency><groupId>{g}</groupId><artifactId>{a}</artifactId>\
                     <version>{v}</version></dependency>\n"
                )
            })
            .collect();
        let pom = format!(
            "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n\
             <project xmlns=\"http://maven.apache.org/POM/4.0.0\">\n\
             <modelVersion>4.0.0</modelVersion>\n\
             <groupId>tidemark.testbed</groupId><artifactId>{entry}</artifactId>\
             <version>1</version><packaging>pom</packaging>\n\
             <dependencies>\n{deps}</dependencies>\n</project>\n"
        );
        fs::write(dir.join("pom.xml"), pom)?;
        let output = Command::new("mvn")
            .current_dir(dir)
            .args(["-q", "-B", "dependency:copy-dependencies"])
            .arg("-DoutputDirectory=lib")
            .arg("-DincludeScope=runtime")
            .arg(format!(
                "-Dmaven.repo.local={}",
                cache_dir().join("m2").display()
            ))
            .output()
            .context("running mvn (is Maven installed?)")?;
        if !output.status.success() {
            bail!(
                "mvn dependency:copy-dependencies failed ({}):\n{}{}",
                output.status,
                String::from_utf8_lossy(&output.stdout),
                String::from_utf8_lossy(&output.stderr)
            );
        }
        Ok(())
    })?;
    Ok(dir.join("lib"))
}
