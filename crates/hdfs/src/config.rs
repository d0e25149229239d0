//! Configuration files (TOML, kebab-case, unknown keys refused).
//!
//! [`ClusterConfig`] is the coordinator's view of one HDFS namespace: its
//! NameNodes, the trees to protect, its agents, the repository.
//! [`AgentConfig`] is one agent's: where it listens, the repository and the
//! NameNodes it reads from and writes to. Secrets (repository passphrase,
//! agent token) are only ever named by file.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use tidemark_cluster::auth::Token;
use tidemark_cluster::config::{ClusterFile, Common, RetentionConfig};
use tidemark_store::Location;

use crate::error::{HdfsError, Result};

/// The coordinator's description of one HDFS namespace (`--config FILE`).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct ClusterConfig {
    /// Name of the cluster in the catalog; backups are listed under it.
    pub name: String,
    /// Repository location: a path, or s3:http://HOST:PORT/BUCKET/PREFIX.
    pub repository: String,
    /// File holding the repository passphrase.
    pub password_file: PathBuf,
    pub hdfs: HdfsConfig,
    pub agents: AgentsConfig,
    #[serde(default)]
    pub backup: BackupConfig,
    #[serde(default)]
    pub restore: RestoreConfig,
    /// What `tidemark cluster forget` keeps when given no keep flags and no
    /// backup ids. None (the default): nothing is forgotten without flags.
    #[serde(default)]
    pub retention: Option<RetentionConfig>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct HdfsConfig {
    /// WebHDFS base URLs of the NameNodes (`http://nn1:9870`); with HA,
    /// all of them: the active one is found and used.
    pub namenodes: Vec<String>,
    /// The user tidemark acts as (simple authentication, `user.name`). It
    /// must be able to read every protected file; making a root
    /// snapshottable needs the HDFS superuser. Default "hdfs".
    #[serde(default = "default_user")]
    pub user: String,
    /// Absolute paths of the trees to protect; each is snapshotted on its
    /// own (see docs/hdfs.md on separate roots).
    pub roots: Vec<String>,
    /// Glob patterns of paths (absolute, `**` crosses directories) left out
    /// of every backup, e.g. "**/_temporary/**".
    #[serde(default)]
    pub exclude: Vec<String>,
    /// Make roots snapshottable when they are not (needs the superuser);
    /// false: refuse and name the admin command. Default true.
    #[serde(default = "yes")]
    pub allow_snapshot: bool,
    /// Record each file's HDFS checksum (one more request per file). Default true.
    #[serde(default = "yes")]
    pub checksums: bool,
    /// Default 60 s: a NameNode under load can take seconds per call.
    #[serde(default = "default_request_timeout", with = "humantime_serde")]
    pub request_timeout: Duration,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct AgentsConfig {
    /// File holding the token shared with every agent.
    pub token_file: PathBuf,
    pub node: Vec<AgentRef>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct AgentRef {
    /// The agent's name in reports (usually its host).
    pub name: String,
    /// Base URL of the agent's API, e.g. http://10.0.2.1:7500.
    pub url: String,
    /// The DataNode beside it, `host:port` as block locations name it (the
    /// DataNode's transfer address): files whose blocks it holds go to
    /// this agent. None: the agent gets files by load only.
    #[serde(default)]
    pub datanode: Option<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct BackupConfig {
    /// Files per request to an agent. Default 64: small enough that the
    /// agents stay evenly busy, large enough that a request's overhead is
    /// small beside its files.
    #[serde(default = "default_batch_files")]
    pub batch_files: usize,
    /// Bytes per request to an agent (a file bigger goes alone). Default 256 MiB.
    #[serde(default = "default_batch_bytes")]
    pub batch_bytes: u64,
    /// Requests in flight per agent. Default 4: each agent reads that many
    /// files at once, which hides the per-file latency of the NameNode and
    /// DataNode round trips.
    #[serde(default = "default_in_flight")]
    pub in_flight: usize,
    /// Files at least this big are given to an agent beside a DataNode that
    /// holds their blocks (one more NameNode call each). Default 32 MiB.
    #[serde(default = "default_locality_bytes")]
    pub locality_min_bytes: u64,
    /// Directories listed at once. Default 16.
    #[serde(default = "default_listers")]
    pub listers: usize,
    /// Upper bound on one agent request. Default 12 h.
    #[serde(default = "default_long_timeout", with = "humantime_serde")]
    pub timeout: Duration,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct RestoreConfig {
    /// Upper bound on one agent request. Default 12 h.
    #[serde(default = "default_long_timeout", with = "humantime_serde")]
    pub timeout: Duration,
}

/// One agent's file (`tidemark agent --config FILE` with an `[hdfs]` table).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct AgentConfig {
    /// Where the API listens, e.g. 10.0.2.1:7500.
    pub listen: SocketAddr,
    pub token_file: PathBuf,
    pub repository: String,
    pub password_file: PathBuf,
    /// The agent's name (as in the coordinator file).
    pub name: String,
    pub hdfs: AgentHdfs,
    #[serde(default)]
    pub limits: AgentLimits,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct AgentHdfs {
    pub namenodes: Vec<String>,
    #[serde(default = "default_user")]
    pub user: String,
    #[serde(default = "default_request_timeout", with = "humantime_serde")]
    pub request_timeout: Duration,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct AgentLimits {
    /// Files read or written at once. Default 4 (see `backup.in-flight`).
    #[serde(default)]
    pub threads: Option<usize>,
    /// Upload limit in KiB/s (none: unlimited).
    #[serde(default)]
    pub upload_kib_per_sec: Option<u64>,
    /// Download limit in KiB/s for restores (none: unlimited).
    #[serde(default)]
    pub download_kib_per_sec: Option<u64>,
}

fn yes() -> bool {
    true
}
fn default_user() -> String {
    "hdfs".into()
}
fn default_request_timeout() -> Duration {
    Duration::from_secs(60)
}
fn default_long_timeout() -> Duration {
    Duration::from_secs(12 * 3600)
}
fn default_batch_files() -> usize {
    64
}
fn default_batch_bytes() -> u64 {
    256 << 20
}
fn default_in_flight() -> usize {
    4
}
fn default_locality_bytes() -> u64 {
    32 << 20
}
fn default_listers() -> usize {
    16
}

impl Default for BackupConfig {
    fn default() -> Self {
        BackupConfig {
            batch_files: default_batch_files(),
            batch_bytes: default_batch_bytes(),
            in_flight: default_in_flight(),
            locality_min_bytes: default_locality_bytes(),
            listers: default_listers(),
            timeout: default_long_timeout(),
        }
    }
}

impl Default for RestoreConfig {
    fn default() -> Self {
        RestoreConfig { timeout: default_long_timeout() }
    }
}

fn read_toml<T: serde::de::DeserializeOwned>(path: &Path) -> Result<T> {
    let text = std::fs::read_to_string(path).map_err(|e| HdfsError::io(path, e))?;
    toml::from_str(&text).map_err(|e| HdfsError::Config { path: path.display().to_string(), reason: e.to_string() })
}

fn bad(path: &Path, reason: impl Into<String>) -> HdfsError {
    HdfsError::Config { path: path.display().to_string(), reason: reason.into() }
}

fn check_namenodes(path: &Path, field: &str, nns: &[String]) -> Result<()> {
    if nns.is_empty() {
        return Err(bad(path, format!("{field} is empty")));
    }
    for n in nns {
        if !(n.starts_with("http://") || n.starts_with("https://")) {
            return Err(bad(path, format!("{field}: {n:?} is not an http(s):// WebHDFS address")));
        }
    }
    Ok(())
}

/// An absolute, clean HDFS path: "/" or "/a/b" (no "." or "..", no "//").
pub fn check_hdfs_path(p: &str) -> std::result::Result<(), String> {
    if !p.starts_with('/') {
        return Err(format!("{p:?} is not absolute"));
    }
    if p != "/" && (p.ends_with('/') || p[1..].split('/').any(|s| s.is_empty() || s == "." || s == "..")) {
        return Err(format!("{p:?} is not a clean path (no trailing '/', '//', '.' or '..')"));
    }
    if p.split('/').any(|s| s == ".snapshot") {
        return Err(format!("{p:?} is inside a .snapshot directory"));
    }
    Ok(())
}

impl ClusterConfig {
    pub fn load(path: &Path) -> Result<ClusterConfig> {
        let c: ClusterConfig = read_toml(path)?;
        c.validate(path)?;
        Ok(c)
    }

    /// Parses and validates a file's text (`path` names it in errors).
    pub fn from_toml(text: &str, path: &Path) -> Result<ClusterConfig> {
        let c: ClusterConfig = toml::from_str(text).map_err(|e| bad(path, e.to_string()))?;
        c.validate(path)?;
        Ok(c)
    }

    /// Names the first bad field.
    pub fn validate(&self, path: &Path) -> Result<()> {
        if self.name.trim().is_empty() || self.name.contains('/') {
            return Err(bad(path, "name is empty or contains '/'"));
        }
        self.repository.parse::<Location>().map_err(|e| bad(path, format!("repository: {e}")))?;
        check_namenodes(path, "hdfs.namenodes", &self.hdfs.namenodes)?;
        if self.hdfs.roots.is_empty() {
            return Err(bad(path, "hdfs.roots is empty"));
        }
        for (i, r) in self.hdfs.roots.iter().enumerate() {
            check_hdfs_path(r).map_err(|e| bad(path, format!("hdfs.roots[{i}]: {e}")))?;
            if let Some(o) = self.hdfs.roots[..i].iter().find(|o| nested(o, r) || nested(r, o)) {
                return Err(bad(path, format!("hdfs.roots[{i}]: {r} and {o} overlap; keep the outer one")));
            }
        }
        crate::backup::walk::Exclude::new(&self.hdfs.exclude).map_err(|e| bad(path, format!("hdfs.exclude: {e}")))?;
        if self.agents.node.is_empty() {
            return Err(bad(path, "agents.node: no agent listed"));
        }
        for (i, a) in self.agents.node.iter().enumerate() {
            if !(a.url.starts_with("http://") || a.url.starts_with("https://")) {
                return Err(bad(path, format!("agents.node[{i}].url {:?} is not http(s)://", a.url)));
            }
            if self.agents.node[..i].iter().any(|b| b.name == a.name) {
                return Err(bad(path, format!("agents.node[{i}]: name {} listed twice", a.name)));
            }
        }
        let b = &self.backup;
        if b.batch_files == 0 || b.in_flight == 0 || b.listers == 0 {
            return Err(bad(path, "backup.batch-files, in-flight and listers must be at least 1"));
        }
        if let Some(r) = &self.retention {
            r.policy().map_err(|e| bad(path, e))?;
        }
        Ok(())
    }

    pub fn token(&self) -> Result<Token> {
        Ok(Token::from_file(&self.agents.token_file)?)
    }

    pub fn location(&self) -> Location {
        self.repository.parse().expect("validated")
    }
}

impl ClusterFile for ClusterConfig {
    fn store(&self) -> &'static str {
        crate::STORE
    }

    fn common(&self) -> Common<'_> {
        Common {
            name: &self.name,
            repository: &self.repository,
            password_file: &self.password_file,
            token_file: &self.agents.token_file,
            retention: self.retention.as_ref(),
        }
    }
}

/// Whether `inner` is `outer` or below it.
pub fn nested(outer: &str, inner: &str) -> bool {
    outer == "/" || inner == outer || inner.strip_prefix(outer).is_some_and(|r| r.starts_with('/'))
}

impl AgentConfig {
    pub fn load(path: &Path) -> Result<AgentConfig> {
        let c: AgentConfig = read_toml(path)?;
        c.validate(path)?;
        Ok(c)
    }

    pub fn validate(&self, path: &Path) -> Result<()> {
        self.repository.parse::<Location>().map_err(|e| bad(path, format!("repository: {e}")))?;
        check_namenodes(path, "hdfs.namenodes", &self.hdfs.namenodes)?;
        if self.limits.threads == Some(0) {
            return Err(bad(path, "limits.threads must be at least 1"));
        }
        Ok(())
    }

    pub fn token(&self) -> Result<Token> {
        Ok(Token::from_file(&self.token_file)?)
    }

    pub fn location(&self) -> Location {
        self.repository.parse().expect("validated")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const CLUSTER: &str = r#"
name = "lake"
repository = "/srv/backup"
password-file = "/etc/tidemark/pw"
[hdfs]
namenodes = ["http://nn1:9870", "http://nn2:9870"]
roots = ["/data/warehouse", "/user/etl"]
exclude = ["**/_temporary/**"]
[agents]
token-file = "/etc/tidemark/token"
[[agents.node]]
name = "dn1"
url = "http://10.0.2.1:7500"
datanode = "10.0.2.1:9866"
"#;

    #[test]
    fn cluster_config_parses_with_defaults() {
        let c: ClusterConfig = toml::from_str(CLUSTER).unwrap();
        c.validate(Path::new("x")).unwrap();
        assert_eq!(c.hdfs.user, "hdfs");
        assert!(c.hdfs.allow_snapshot && c.hdfs.checksums);
        assert_eq!(c.backup.in_flight, 4);
    }

    #[test]
    fn bad_fields_are_named() {
        let e = toml::from_str::<ClusterConfig>(&format!("{CLUSTER}\ncolour = 1")).unwrap_err();
        assert!(e.to_string().contains("colour"), "{e}");
        let check = |edit: &dyn Fn(&mut ClusterConfig), want: &str| {
            let mut c: ClusterConfig = toml::from_str(CLUSTER).unwrap();
            edit(&mut c);
            let e = c.validate(Path::new("c.toml")).unwrap_err().to_string();
            assert!(e.contains(want), "{e} lacks {want}");
        };
        check(&|c| c.hdfs.roots = vec!["data".into()], "hdfs.roots[0]");
        check(&|c| c.hdfs.roots = vec!["/data/".into()], "not a clean path");
        check(&|c| c.hdfs.roots = vec!["/data".into(), "/data/x".into()], "overlap");
        check(&|c| c.hdfs.namenodes = vec!["nn1:9870".into()], "hdfs.namenodes");
        check(&|c| c.hdfs.exclude = vec!["[".into()], "hdfs.exclude");
        check(&|c| c.agents.node[0].url = "10.0.2.1:7500".into(), "agents.node[0].url");
    }

    #[test]
    fn nesting_is_by_whole_components() {
        assert!(nested("/data", "/data/x"));
        assert!(nested("/data", "/data"));
        assert!(!nested("/data", "/database"));
        assert!(nested("/", "/x"));
    }
}
