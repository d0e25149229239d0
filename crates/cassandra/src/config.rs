//! Configuration files (TOML, kebab-case, unknown keys refused).
//!
//! [`ClusterConfig`] is the coordinator's view of one cluster: how to reach it
//! over CQL, its agents, the repository. [`AgentConfig`] is one agent's: the
//! node it serves, where that node keeps its data, how to run its tools.
//! Secrets (repository passphrase, agent token, CQL password) are only ever
//! named by file, never written in these files.

use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use tidemark_cluster::auth::Token;
use tidemark_cluster::config::{ClusterFile, Common};
use tidemark_store::Location;

/// `[retention]` is the same for every adapter.
pub use tidemark_cluster::config::RetentionConfig;

use crate::error::{CassandraError, Result};

/// The smallest valid cluster file: one node, every default (for tests of
/// code that reads cluster files, here and in the CLI).
pub const MINIMAL_CLUSTER_FILE: &str = r#"
name = "prod"
repository = "/srv/backup"
password-file = "/etc/tidemark/pw"
[cassandra]
contact-points = ["127.0.1.1:9042"]
[agents]
token-file = "/etc/tidemark/token"
[[agents.node]]
address = "127.0.1.1"
url = "http://127.0.0.1:7401"
"#;

/// The coordinator's description of one cluster (`--config FILE`).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct ClusterConfig {
    /// Name of the cluster in the catalog; backups are listed under it.
    pub name: String,
    /// Repository location: a path, or s3:http://HOST:PORT/BUCKET/PREFIX.
    pub repository: String,
    /// File holding the repository passphrase.
    pub password_file: PathBuf,
    pub cassandra: CqlConfig,
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
pub struct CqlConfig {
    /// `address:port` of one or more nodes' CQL endpoints.
    pub contact_points: Vec<String>,
    /// For PasswordAuthenticator; none with AllowAllAuthenticator.
    #[serde(default)]
    pub username: Option<String>,
    #[serde(default)]
    pub password_file: Option<PathBuf>,
    /// Default: 30 s, generous for a loaded node.
    #[serde(default = "default_request_timeout", with = "humantime_serde")]
    pub request_timeout: Duration,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct AgentsConfig {
    /// File holding the token shared with every agent.
    pub token_file: PathBuf,
    /// One agent per node.
    pub node: Vec<AgentRef>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct AgentRef {
    /// The node's broadcast address as Cassandra reports it (system.peers_v2).
    pub address: IpAddr,
    /// Base URL of the agent's API, e.g. http://127.0.0.1:7400.
    pub url: String,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct BackupConfig {
    /// How long to wait for the cluster to become ready (all nodes up, schema
    /// in agreement, nobody joining/leaving/moving) before refusing.
    /// Default 60 s: a rolling restart of one node usually fits.
    #[serde(default = "default_freeze_wait", with = "humantime_serde")]
    pub freeze_wait: Duration,
    /// Upper bound on one node's upload. Default 12 h.
    #[serde(default = "default_upload_timeout", with = "humantime_serde")]
    pub upload_timeout: Duration,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct RestoreConfig {
    /// Upper bound on one node's download and load. Default 12 h.
    #[serde(default = "default_upload_timeout", with = "humantime_serde")]
    pub timeout: Duration,
}

/// One agent's file (`tidemark agent --config FILE`).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct AgentConfig {
    /// Where the API listens, e.g. 127.0.0.1:7400.
    pub listen: SocketAddr,
    /// File holding the shared token.
    pub token_file: PathBuf,
    pub repository: String,
    pub password_file: PathBuf,
    /// The served node's broadcast address.
    pub node_address: IpAddr,
    /// The node's cassandra.yaml (stored with every backup).
    pub cassandra_yaml: PathBuf,
    /// The node's data_file_directories.
    pub data_dirs: Vec<PathBuf>,
    /// Command line of the node's nodetool, JMX host and port included, e.g.
    /// ["nodetool", "-h", "127.0.0.1", "-p", "7199"]. Used when `jmx` is not
    /// set: every operation then starts a nodetool JVM.
    #[serde(default)]
    pub nodetool: Vec<String>,
    /// The node's JMX endpoint, `host:port` (e.g. "127.0.0.1:7199"). With it
    /// the agent keeps one small JVM connected to the node for ring status,
    /// snapshot, clearsnapshot and import, instead of a nodetool start (about
    /// a second of CPU) per operation.
    #[serde(default)]
    pub jmx: Option<String>,
    /// JMX user, when the node's JMX requires authentication.
    #[serde(default)]
    pub jmx_user: Option<String>,
    /// File holding that user's JMX password (first line), mode 0600.
    #[serde(default)]
    pub jmx_password_file: Option<PathBuf>,
    /// The java binary that runs the JMX bridge (default: $JAVA_HOME/bin/java,
    /// else java on PATH).
    #[serde(default)]
    pub java: Option<PathBuf>,
    /// Command line of sstableloader; the agent adds the target nodes (`-d`)
    /// unless given here.
    pub sstableloader: Vec<String>,
    /// The agent's own working space (staging of snapshots and restores). It
    /// must be on the same filesystem as the data dirs: snapshots are staged
    /// by hard link, never copied.
    pub work_dir: PathBuf,
    #[serde(default)]
    pub limits: AgentLimits,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct AgentLimits {
    /// Backup worker threads. Default: one per core, so a backup leaves the
    /// node half of what the engine would take on an idle machine.
    #[serde(default)]
    pub upload_threads: Option<usize>,
    /// Upload limit in KiB/s (none: unlimited).
    #[serde(default)]
    pub upload_kib_per_sec: Option<u64>,
    /// Download limit in KiB/s for restores (none: unlimited).
    #[serde(default)]
    pub download_kib_per_sec: Option<u64>,
}

fn default_request_timeout() -> Duration {
    Duration::from_secs(30)
}
fn default_freeze_wait() -> Duration {
    Duration::from_secs(60)
}
fn default_upload_timeout() -> Duration {
    Duration::from_secs(12 * 3600)
}

impl Default for BackupConfig {
    fn default() -> Self {
        BackupConfig { freeze_wait: default_freeze_wait(), upload_timeout: default_upload_timeout() }
    }
}

impl Default for RestoreConfig {
    fn default() -> Self {
        RestoreConfig { timeout: default_upload_timeout() }
    }
}

fn read_toml<T: serde::de::DeserializeOwned>(path: &Path) -> Result<T> {
    let text = std::fs::read_to_string(path).map_err(|e| CassandraError::io(path, e))?;
    toml::from_str(&text).map_err(|e| CassandraError::Config { path: path.display().to_string(), reason: e.to_string() })
}

fn bad(path: &Path, reason: impl Into<String>) -> CassandraError {
    CassandraError::Config { path: path.display().to_string(), reason: reason.into() }
}

impl ClusterConfig {
    pub fn load(path: &Path) -> Result<ClusterConfig> {
        let text = std::fs::read_to_string(path).map_err(|e| CassandraError::io(path, e))?;
        ClusterConfig::from_toml(&text, path)
    }

    /// Parses and validates the text of the file at `path` (named in errors).
    pub fn from_toml(text: &str, path: &Path) -> Result<ClusterConfig> {
        let c: ClusterConfig = toml::from_str(text).map_err(|e| bad(path, e.to_string()))?;
        c.validate(path)?;
        Ok(c)
    }

    /// Names the first bad field.
    pub fn validate(&self, path: &Path) -> Result<()> {
        if self.name.trim().is_empty() {
            return Err(bad(path, "name is empty"));
        }
        self.repository
            .parse::<Location>()
            .map_err(|e| bad(path, format!("repository: {e}")))?;
        if self.cassandra.contact_points.is_empty() {
            return Err(bad(path, "cassandra.contact-points is empty"));
        }
        for cp in &self.cassandra.contact_points {
            if !cp.contains(':') {
                return Err(bad(path, format!("cassandra.contact-points: {cp:?} lacks :port")));
            }
        }
        if self.cassandra.username.is_some() != self.cassandra.password_file.is_some() {
            return Err(bad(path, "cassandra.username and cassandra.password-file go together"));
        }
        if self.agents.node.is_empty() {
            return Err(bad(path, "agents.node: no agent listed"));
        }
        for (i, a) in self.agents.node.iter().enumerate() {
            if !(a.url.starts_with("http://") || a.url.starts_with("https://")) {
                return Err(bad(path, format!("agents.node[{i}].url {:?} is not http(s)://", a.url)));
            }
            if self.agents.node[..i].iter().any(|b| b.address == a.address) {
                return Err(bad(path, format!("agents.node[{i}]: address {} listed twice", a.address)));
            }
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

    pub fn agent_for(&self, address: IpAddr) -> Option<&AgentRef> {
        self.agents.node.iter().find(|a| a.address == address)
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

impl AgentConfig {
    pub fn load(path: &Path) -> Result<AgentConfig> {
        let c: AgentConfig = read_toml(path)?;
        c.validate(path)?;
        Ok(c)
    }

    pub fn validate(&self, path: &Path) -> Result<()> {
        self.repository
            .parse::<Location>()
            .map_err(|e| bad(path, format!("repository: {e}")))?;
        if self.data_dirs.is_empty() {
            return Err(bad(path, "data-dirs is empty"));
        }
        match &self.jmx {
            Some(jmx) => {
                split_host_port(jmx).map_err(|e| bad(path, format!("jmx: {e}")))?;
            }
            None if self.nodetool.is_empty() => {
                return Err(bad(path, "set jmx (host:port) or nodetool (its command line)"));
            }
            None => {}
        }
        if self.jmx_user.is_some() != self.jmx_password_file.is_some() {
            return Err(bad(path, "jmx-user and jmx-password-file go together"));
        }
        if self.sstableloader.is_empty() {
            return Err(bad(path, "sstableloader: empty command line"));
        }
        if self.limits.upload_threads == Some(0) {
            return Err(bad(path, "limits.upload-threads must be at least 1"));
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

/// `host:port`, `[v6]:port` or `v6-without-brackets` is refused: the port
/// must be unambiguous.
pub fn split_host_port(s: &str) -> std::result::Result<(String, u16), String> {
    let (host, port) = if let Some(rest) = s.strip_prefix('[') {
        let (h, p) = rest.split_once("]:").ok_or_else(|| format!("{s:?} is not [address]:port"))?;
        (h, p)
    } else {
        let (h, p) = s.rsplit_once(':').ok_or_else(|| format!("{s:?} lacks :port"))?;
        if h.contains(':') {
            return Err(format!("{s:?}: write an IPv6 address as [address]:port"));
        }
        (h, p)
    };
    if host.is_empty() {
        return Err(format!("{s:?} has no host"));
    }
    let port: u16 = port.parse().map_err(|_| format!("{s:?}: bad port {port:?}"))?;
    if port == 0 {
        return Err(format!("{s:?}: port 0"));
    }
    Ok((host.to_string(), port))
}

#[cfg(test)]
mod tests {
    use super::*;

    const CLUSTER: &str = MINIMAL_CLUSTER_FILE;

    #[test]
    fn cluster_config_parses_with_defaults() {
        let c: ClusterConfig = toml::from_str(CLUSTER).unwrap();
        c.validate(Path::new("x")).unwrap();
        assert_eq!(c.backup.freeze_wait, Duration::from_secs(60));
        assert_eq!(c.agents.node[0].address.to_string(), "127.0.1.1");
    }

    #[test]
    fn unknown_and_bad_fields_are_named() {
        let e = toml::from_str::<ClusterConfig>(&format!("{CLUSTER}\ncolour = 1")).unwrap_err();
        assert!(e.to_string().contains("colour"), "{e}");
        let mut c: ClusterConfig = toml::from_str(CLUSTER).unwrap();
        c.agents.node[0].url = "127.0.0.1:7401".into();
        let e = c.validate(Path::new("c.toml")).unwrap_err().to_string();
        assert!(e.contains("agents.node[0].url"), "{e}");
        let mut c: ClusterConfig = toml::from_str(CLUSTER).unwrap();
        c.cassandra.contact_points = vec!["127.0.1.1".into()];
        assert!(c.validate(Path::new("c.toml")).unwrap_err().to_string().contains("lacks :port"));
    }

    #[test]
    fn retention_table_parses_and_is_validated() {
        let c: ClusterConfig = toml::from_str(CLUSTER).unwrap();
        assert!(c.retention.is_none(), "no retention unless configured");
        let c: ClusterConfig =
            toml::from_str(&format!("{CLUSTER}\n[retention]\nkeep-last = 3\nkeep-daily = 7\nkeep-within = \"2w\"\n")).unwrap();
        c.validate(Path::new("c.toml")).unwrap();
        let p = c.retention.as_ref().unwrap().policy().unwrap();
        assert_eq!((p.last, p.daily, p.weekly), (3, 7, 0));
        assert_eq!(p.within.unwrap().days, 14);

        let e = toml::from_str::<ClusterConfig>(&format!("{CLUSTER}\n[retention]\nkeep-lats = 3\n")).unwrap_err();
        assert!(e.to_string().contains("keep-lats"), "{e}");
        let c: ClusterConfig =
            toml::from_str(&format!("{CLUSTER}\n[retention]\nkeep-within = \"7 days\"\n")).unwrap();
        let e = c.validate(Path::new("c.toml")).unwrap_err().to_string();
        assert!(e.contains("retention.keep-within") && e.contains("c.toml"), "{e}");
        let c: ClusterConfig = toml::from_str(&format!("{CLUSTER}\n[retention]\nkeep-last = 0\n")).unwrap();
        let e = c.validate(Path::new("c.toml")).unwrap_err().to_string();
        assert!(e.contains("retention keeps nothing"), "{e}");
    }

    #[test]
    fn jmx_endpoint_needs_an_unambiguous_port() {
        assert_eq!(split_host_port("127.0.0.1:7199").unwrap(), ("127.0.0.1".into(), 7199));
        assert_eq!(split_host_port("[::1]:7199").unwrap(), ("::1".into(), 7199));
        assert_eq!(split_host_port("node-1.example:7199").unwrap(), ("node-1.example".into(), 7199));
        for bad in ["127.0.0.1", "::1:7199", ":7199", "h:0", "h:x", "[::1]7199"] {
            assert!(split_host_port(bad).is_err(), "{bad} accepted");
        }
    }
}
