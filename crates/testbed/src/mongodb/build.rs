//! FerretDB built once per machine from the Go module proxy.
//!
//! `go install github.com/FerretDB/FerretDB/cmd/ferretdb@v1.24.2` builds a
//! binary that panics at start ("Invalid build/version/version.txt"): the
//! module carries no `version.txt`, which FerretDB's own build generates from
//! git. So the same module is fetched from the proxy with `go mod download`,
//! the file written as their `task gen-version` would, and built with
//! `go build`. Module and build caches live in the download cache.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{bail, Context, Result};

use crate::cache;

pub const MODULE: &str = "github.com/FerretDB/FerretDB";

/// Path of the `ferretdb` binary, building it on first use.
pub fn ferretdb(version: &str) -> Result<PathBuf> {
    let dir = cache::ensure(&format!("ferretdb-{version}"), |dir| build(dir, version))?;
    Ok(dir.join("ferretdb"))
}

fn go(dir: &Path) -> Command {
    let mut cmd = Command::new("go");
    cmd.current_dir(dir)
        .env("GOMODCACHE", cache::cache_dir().join("gomod"))
        .env("GOFLAGS", "-buildvcs=false")
        // Never fetch another Go toolchain: the machine's Go (>= 1.24) builds it.
        .env("GOTOOLCHAIN", "local");
    cmd
}

fn output(cmd: &mut Command) -> Result<Vec<u8>> {
    let out = cmd
        .output()
        .with_context(|| format!("running {cmd:?} (is Go >= 1.24 installed?)"))?;
    if !out.status.success() {
        bail!(
            "{cmd:?} failed ({}):\n{}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(out.stdout)
}

fn build(dir: &Path, version: &str) -> Result<()> {
    let module = format!("{MODULE}@v{version}");
    let listing = output(go(dir).args(["mod", "download", "-json", &module]))?;
    let listing: serde_json::Value = serde_json::from_slice(&listing)?;
    let module_dir = listing["Dir"]
        .as_str()
        .with_context(|| format!("`go mod download` gave no Dir for {module}: {listing}"))?;
    let src = dir.join("src");
    if src.exists() {
        fs::remove_dir_all(&src)?;
    }
    // The module cache is read-only; the build needs one generated file in it.
    output(Command::new("cp").arg("-R").arg(module_dir).arg(&src))?;
    output(Command::new("chmod").arg("-R").arg("u+w").arg(&src))?;
    fs::write(
        src.join("build/version/version.txt"),
        format!("v{version}\n"),
    )?;
    eprintln!("testbed: building FerretDB v{version} (a few minutes, once per machine)");
    output(
        go(&src)
            .args(["build", "-trimpath", "-o"])
            .arg(dir.join("ferretdb"))
            .arg("./cmd/ferretdb"),
    )?;
    fs::remove_dir_all(&src)?;
    let version_out = output(Command::new(dir.join("ferretdb")).arg("--version"))?;
    let printed = String::from_utf8_lossy(&version_out);
    if !printed.contains(&format!("version: v{version}")) {
        bail!("built ferretdb reports an unexpected version:\n{printed}");
    }
    Ok(())
}
