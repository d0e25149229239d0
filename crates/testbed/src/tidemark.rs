//! What every kind's `--with-agents` shares: the `tidemark` binary, the
//! repository shared by the clusters of a root, secret and TOML files, and
//! starting an agent process.

use std::fs::{self, File, OpenOptions};
use std::io::{Read, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{anyhow, bail, Context, Result};
use nix::fcntl::{Flock, FlockArg};
use serde::{Deserialize, Serialize};

use crate::process::{self, ProcessRecord};
use crate::root::Root;

/// Names the tidemark binary when `--tidemark-bin` is not given.
pub const TIDEMARK_BIN_ENV: &str = "TIDEMARK_BIN";
/// What the agents of a cluster share; set once `--with-agents` prepared it.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub struct Tidemark {
    /// The `tidemark` binary the agents run (and a later added node's agent).
    pub bin: PathBuf,
    pub repository: PathBuf,
    pub password_file: PathBuf,
    /// The agents' shared bearer token.
    pub token_file: PathBuf,
}

/// `given`, else `$TIDEMARK_BIN`, else a `tidemark` next to the running
/// executable (for a test binary in `target/debug/deps`, also one level up).
pub fn resolve_bin(given: Option<&Path>) -> Result<PathBuf> {
    let check = |path: PathBuf, from: &str| -> Result<PathBuf> {
        if !path.is_file() {
            bail!("{from} names {}, which is not a file", path.display());
        }
        path.canonicalize()
            .with_context(|| format!("resolving {}", path.display()))
    };
    if let Some(path) = given {
        return check(path.to_path_buf(), "--tidemark-bin");
    }
    if let Some(path) = std::env::var_os(TIDEMARK_BIN_ENV) {
        return check(PathBuf::from(path), TIDEMARK_BIN_ENV);
    }
    let exe = std::env::current_exe().context("finding the running executable")?;
    let mut looked = Vec::new();
    if let Some(dir) = exe.parent() {
        looked.push(dir.join("tidemark"));
        if dir.file_name().is_some_and(|n| n == "deps") {
            if let Some(up) = dir.parent() {
                looked.push(up.join("tidemark"));
            }
        }
    }
    if let Some(found) = looked.iter().find(|p| p.is_file()) {
        return check(found.clone(), "the executable's directory");
    }
    let looked: Vec<String> = looked.iter().map(|p| p.display().to_string()).collect();
    bail!(
        "--with-agents needs the tidemark binary: give --tidemark-bin PATH or set \
         {TIDEMARK_BIN_ENV}=PATH (build it with `cargo build -p tidemark`); \
         not found at {}",
        looked.join(", ")
    )
}

/// Starts `tidemark -v agent --config CONFIG` as process `process_name` of
/// cluster `cluster`, logging to `log`; everything comes from the config
/// file, nothing from the caller's shell.
pub fn spawn_agent(
    root: &Root,
    cluster: &str,
    tm: &Tidemark,
    process_name: &str,
    config: &Path,
    log: &Path,
    port: u16,
) -> Result<ProcessRecord> {
    let mut cmd = Command::new(&tm.bin);
    // -v: the agent's info-level log, for post-mortems.
    cmd.arg("-v").arg("agent").arg("--config").arg(config);
    for var in ["TIDEMARK_REPOSITORY", "TIDEMARK_PASSWORD", "TIDEMARK_PASSWORD_FILE"] {
        cmd.env_remove(var);
    }
    // The agents' metadata cache stays under the root (and goes with it),
    // not in the home directory of whoever runs the testbed.
    cmd.env("TIDEMARK_CACHE_DIR", root.dir().join("tidemark").join("cache"));
    let record = process::spawn(process_name, cmd, log, vec![port])?;
    root.add_process(cluster, record.clone())?;
    Ok(record)
}

/// The repository and a fresh token for one cluster's agents.
pub fn prepare(root: &Root, cluster: &str, bin: Option<&Path>, location: Option<&str>) -> Result<Tidemark> {
    let bin = resolve_bin(bin)?;
    let (repository, password_file) = ensure_repository(root, &bin, location)?;
    let token_file = root.cluster_dir(cluster).join("agents/token");
    write_secret(&token_file, &random_hex(32)?)?;
    Ok(Tidemark { bin, repository, password_file, token_file })
}

/// A cluster's agent token (first line of its token file).
pub fn read_token(tm: &Tidemark) -> Result<String> {
    let text = fs::read_to_string(&tm.token_file).with_context(|| format!("reading {}", tm.token_file.display()))?;
    Ok(text.lines().next().unwrap_or("").trim().to_string())
}

/// `<root>/tidemark/{repo,password}`, created by the first cluster that asks;
/// or, with `location` (`--repository`, e.g. an `s3:` URL), that repository
/// with the same password file, initialised once (a marker under
/// `<root>/tidemark/remote/` remembers it). The agents reach an S3
/// repository with the AWS variables of the environment `testbed up` runs in.
/// `TIDEMARK_INSECURE_TEST_KDF`, if set, reaches `tidemark init` through the
/// environment (fast key derivation for tests; the demo runs without it).
pub fn ensure_repository(root: &Root, bin: &Path, location: Option<&str>) -> Result<(PathBuf, PathBuf)> {
    let dir = root.dir().join("tidemark");
    fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    let lock_path = dir.join(".init.lock");
    let lock =
        File::create(&lock_path).with_context(|| format!("creating {}", lock_path.display()))?;
    // Two clusters starting at once: the second waits and finds the repository.
    let _guard = Flock::lock(lock, FlockArg::LockExclusive)
        .map_err(|(_, e)| anyhow!("locking {}: {e}", lock_path.display()))?;
    let password = dir.join("password");
    if !password.exists() {
        write_secret(&password, &random_hex(32)?)?;
    }
    if let Some(location) = location {
        let marker = dir.join("remote").join(marker_name(location));
        if !marker.exists() {
            match init(bin, location, &password) {
                Ok(()) => {}
                // Made by an earlier root with this password file, or by
                // the caller: the agents' first request says if the
                // password does not open it.
                Err(e) if format!("{e:#}").contains("a repository already exists") => {}
                Err(e) => return Err(e),
            }
            write_atomic(&marker, location)?;
        }
        return Ok((PathBuf::from(location), password));
    }
    let repo = dir.join("repo");
    // The config object is written last by init: without it, an earlier init
    // died half-way and its leftovers are no repository.
    if !repo.join("config").exists() {
        if repo.exists() {
            fs::remove_dir_all(&repo).with_context(|| format!("removing {}", repo.display()))?;
        }
        let location = repo.to_str().with_context(|| format!("path {} is not UTF-8", repo.display()))?;
        init(bin, location, &password)?;
    }
    Ok((repo, password))
}

/// `tidemark init --repo LOCATION` with the root's password file.
fn init(bin: &Path, location: &str, password: &Path) -> Result<()> {
    let out = Command::new(bin)
        .arg("init")
        .arg("--repo")
        .arg(location)
        .arg("--password-file")
        .arg(password)
        .env_remove("TIDEMARK_REPOSITORY")
        .env_remove("TIDEMARK_PASSWORD")
        .output()
        .with_context(|| format!("running {} init", bin.display()))?;
    if !out.status.success() {
        bail!(
            "{} init --repo {location} failed ({}):\n{}{}",
            bin.display(),
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(())
}

/// A file name standing for a repository location: its letters and digits,
/// other characters as `_`.
fn marker_name(location: &str) -> String {
    location.chars().map(|c| if c.is_ascii_alphanumeric() || c == '-' || c == '.' { c } else { '_' }).collect()
}

/// Writes a secret file with mode 0600 from the start (never readable by
/// others, not even for a moment), replacing any earlier one.
pub fn write_secret(path: &Path, secret: &str) -> Result<()> {
    let dir = path.parent().context("secret file has a directory")?;
    fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let tmp = dir.join(format!(".{}.tmp.{}", file_name(path), std::process::id()));
    let _ = fs::remove_file(&tmp);
    let mut file = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&tmp)
        .with_context(|| format!("creating {}", tmp.display()))?;
    file.write_all(format!("{secret}\n").as_bytes())
        .and_then(|()| file.sync_all())
        .with_context(|| format!("writing {}", tmp.display()))?;
    fs::rename(&tmp, path).with_context(|| format!("renaming to {}", path.display()))
}

pub fn write_atomic(path: &Path, text: &str) -> Result<()> {
    let dir = path.parent().context("file has a directory")?;
    fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let tmp = dir.join(format!(".{}.tmp.{}", file_name(path), std::process::id()));
    fs::write(&tmp, text).with_context(|| format!("writing {}", tmp.display()))?;
    fs::rename(&tmp, path).with_context(|| format!("renaming to {}", path.display()))
}

fn file_name(path: &Path) -> String {
    path.file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default()
}

/// `bytes` random bytes from the kernel, as lower-case hex.
pub fn random_hex(bytes: usize) -> Result<String> {
    let mut buf = vec![0u8; bytes];
    File::open("/dev/urandom")
        .and_then(|mut f| f.read_exact(&mut buf))
        .context("reading /dev/urandom")?;
    Ok(buf.iter().map(|b| format!("{b:02x}")).collect())
}

/// A TOML basic string.
pub fn toml_str(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            c if c.is_control() => out.push_str(&format!("\\u{:04X}", c as u32)),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

pub fn toml_path(p: &Path) -> Result<String> {
    let s = p
        .to_str()
        .with_context(|| format!("path {} is not UTF-8", p.display()))?;
    Ok(toml_str(s))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn toml_strings_escape_quotes_backslashes_and_controls() {
        assert_eq!(toml_str("/a b/c"), r#""/a b/c""#);
        assert_eq!(toml_str(r#"x"y\z"#), r#""x\"y\\z""#);
        assert_eq!(toml_str("a\nb"), r#""a\u000Ab""#);
    }

    #[test]
    fn random_hex_has_the_length_and_differs() {
        let a = random_hex(32).unwrap();
        assert_eq!(a.len(), 64);
        assert!(a.chars().all(|c| c.is_ascii_hexdigit()));
        assert_ne!(a, random_hex(32).unwrap());
    }

    #[test]
    fn secrets_are_private() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("sub/token");
        write_secret(&path, "abc").unwrap();
        write_secret(&path, "def").unwrap();
        assert_eq!(fs::read_to_string(&path).unwrap(), "def\n");
        let mode = fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
    }
}
