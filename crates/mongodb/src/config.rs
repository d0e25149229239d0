//! The coordinator file of a MongoDB deployment (TOML, kebab-case, unknown
//! keys refused).
//!
//! Either one `uri-file` (a replica set, a standalone server or, for a
//! sharded cluster, a mongos: the shards and the config server replica set
//! are found from it), or one `[[mongodb.replica-set]]` per replica set that
//! is cut together without a mongos. Connection strings that carry
//! credentials are only ever read from files; an inline `uri` with a
//! password is refused.

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use tidemark_cluster::config::{ClusterFile, Common, RetentionConfig};
use tidemark_store::Location;

use crate::error::{MongoError, Result};

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct ClusterConfig {
    /// Name of the deployment in the catalog; backups are listed under it.
    pub name: String,
    /// Repository location: a path, or s3:http://HOST:PORT/BUCKET/PREFIX.
    pub repository: String,
    /// File holding the repository passphrase.
    pub password_file: PathBuf,
    pub mongodb: MongoConfig,
    /// Agents beside the replica sets (not used yet: the coordinator copies
    /// every replica set itself; see docs/mongodb.md).
    #[serde(default)]
    pub agents: Option<AgentsConfig>,
    #[serde(default)]
    pub retention: Option<RetentionConfig>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct AgentsConfig {
    pub token_file: PathBuf,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct MongoConfig {
    /// File whose first line is the connection string of a replica set, a
    /// server or a mongos.
    #[serde(default)]
    pub uri_file: Option<PathBuf>,
    /// Replica sets cut together without a mongos.
    #[serde(default, rename = "replica-set")]
    pub replica_sets: Vec<ReplicaSetRef>,
    /// Where documents are read: primary, primaryPreferred, secondary,
    /// secondaryPreferred (default) or nearest. The oplog is always read
    /// from the same member as the documents.
    #[serde(default = "default_read_preference")]
    pub read_preference: String,
    /// How long to wait for running chunk migrations once the balancer is
    /// stopped before refusing the backup (sharded clusters). Default 5 min.
    #[serde(default = "default_freeze_wait", with = "humantime_serde")]
    pub freeze_wait: Duration,
    /// A step's time limit with one replica set; it grows with their
    /// number (see [`MongoConfig::step_timeout_for`]). Default 2 min.
    #[serde(default = "default_step_timeout", with = "humantime_serde")]
    pub step_timeout: Duration,
    /// Only these databases (default: every database but admin, config
    /// and local).
    #[serde(default)]
    pub databases: Vec<String>,
    /// Namespaces left out: `db.collection`, or `db.*` for a database.
    #[serde(default)]
    pub exclude: Vec<String>,
    /// Back up the users and roles of the admin database. Default true.
    #[serde(default = "yes")]
    pub users_and_roles: bool,
    /// Collections copied at once per replica set. Default 4.
    #[serde(default = "default_parallel")]
    pub parallel_collections: usize,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct ReplicaSetRef {
    /// Name in the backup (default: the set name the server reports, or
    /// `rs<N>` for a server that has none).
    #[serde(default)]
    pub name: Option<String>,
    #[serde(default)]
    pub uri_file: Option<PathBuf>,
    /// A connection string without credentials.
    #[serde(default)]
    pub uri: Option<String>,
}

fn yes() -> bool {
    true
}
fn default_read_preference() -> String {
    "secondaryPreferred".into()
}
fn default_freeze_wait() -> Duration {
    Duration::from_secs(300)
}
fn default_step_timeout() -> Duration {
    Duration::from_secs(120)
}
fn default_parallel() -> usize {
    4
}

fn bad(path: &Path, reason: impl Into<String>) -> MongoError {
    MongoError::Config { path: path.display().to_string(), reason: reason.into() }
}

/// A connection string names a password (`user:pass@`).
pub fn has_password(uri: &str) -> bool {
    let rest = uri.split_once("://").map(|(_, r)| r).unwrap_or(uri);
    let authority = rest.split(['/', '?']).next().unwrap_or("");
    authority.rsplit_once('@').is_some_and(|(userinfo, _)| userinfo.contains(':'))
}

/// The first line of a connection-string file.
pub fn read_uri_file(path: &Path) -> Result<String> {
    let text = std::fs::read_to_string(path).map_err(|e| MongoError::io(path, e))?;
    let uri = text.lines().next().unwrap_or("").trim().to_string();
    if !(uri.starts_with("mongodb://") || uri.starts_with("mongodb+srv://")) {
        // Never echo the line: it may hold a password.
        return Err(MongoError::Invalid(format!(
            "{}: the first line is not a mongodb:// or mongodb+srv:// connection string",
            path.display()
        )));
    }
    Ok(uri)
}

pub const READ_PREFERENCES: &[&str] = &["primary", "primaryPreferred", "secondary", "secondaryPreferred", "nearest"];

impl MongoConfig {
    /// A step's limit with `sets` replica sets: the base, and half of it
    /// again for every further set (they share the coordinator and the
    /// network).
    pub fn step_timeout_for(&self, sets: usize) -> Duration {
        self.step_timeout + self.step_timeout / 2 * (sets.saturating_sub(1) as u32)
    }

    /// Whether `db.coll` is backed up.
    pub fn wants(&self, db: &str, coll: &str) -> bool {
        if !self.databases.is_empty() && !self.databases.iter().any(|d| d == db) {
            return false;
        }
        !self.exclude.iter().any(|x| match x.split_once('.') {
            Some((d, "*")) => d == db,
            Some((d, c)) => d == db && c == coll,
            None => x == db,
        })
    }
}

impl ClusterConfig {
    pub fn load(path: &Path) -> Result<ClusterConfig> {
        let text = std::fs::read_to_string(path).map_err(|e| MongoError::io(path, e))?;
        Self::from_toml(&text, path)
    }

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
        let m = &self.mongodb;
        match (&m.uri_file, m.replica_sets.is_empty()) {
            (Some(_), false) => {
                return Err(bad(path, "mongodb: give uri-file or [[mongodb.replica-set]] entries, not both"))
            }
            (None, true) => {
                return Err(bad(path, "mongodb: no uri-file and no [[mongodb.replica-set]]: nothing to back up"))
            }
            _ => {}
        }
        for (i, rs) in m.replica_sets.iter().enumerate() {
            match (&rs.uri, &rs.uri_file) {
                (Some(_), Some(_)) | (None, None) => {
                    return Err(bad(path, format!("mongodb.replica-set[{i}]: give exactly one of uri and uri-file")))
                }
                (Some(u), None) if has_password(u) => {
                    return Err(bad(
                        path,
                        format!("mongodb.replica-set[{i}].uri carries a password; put the connection string in a file and name it with uri-file"),
                    ))
                }
                (Some(u), None) if !u.starts_with("mongodb://") && !u.starts_with("mongodb+srv://") => {
                    return Err(bad(path, format!("mongodb.replica-set[{i}].uri is not a mongodb:// connection string")))
                }
                _ => {}
            }
            if let Some(n) = &rs.name {
                if n.is_empty() || n.contains('/') {
                    return Err(bad(path, format!("mongodb.replica-set[{i}].name is empty or contains '/'")));
                }
                if m.replica_sets[..i].iter().any(|o| o.name.as_deref() == Some(n)) {
                    return Err(bad(path, format!("mongodb.replica-set[{i}]: name {n} listed twice")));
                }
            }
        }
        if !READ_PREFERENCES.contains(&m.read_preference.as_str()) {
            return Err(bad(path, format!("mongodb.read-preference {:?}: one of {}", m.read_preference, READ_PREFERENCES.join(", "))));
        }
        if m.parallel_collections == 0 {
            return Err(bad(path, "mongodb.parallel-collections must be at least 1"));
        }
        for x in &m.exclude {
            if x.is_empty() || x.starts_with('.') {
                return Err(bad(path, format!("mongodb.exclude {x:?}: db.collection or db.*")));
            }
        }
        if let Some(r) = &self.retention {
            r.policy().map_err(|e| bad(path, e))?;
        }
        Ok(())
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
            // No agents yet: an empty path, which no MongoDB command reads.
            token_file: self.agents.as_ref().map(|a| a.token_file.as_path()).unwrap_or(Path::new("")),
            retention: self.retention.as_ref(),
        }
    }
}

/// A small valid file, for tests and docs.
pub const MINIMAL_CLUSTER_FILE: &str = r#"
name = "orders"
repository = "/var/backups/tidemark"
password-file = "/etc/tidemark/repo.pass"

[mongodb]
uri-file = "/etc/tidemark/mongo.uri"
"#;

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> std::result::Result<ClusterConfig, String> {
        ClusterConfig::from_toml(text, Path::new("m.toml")).map_err(|e| e.to_string())
    }

    #[test]
    fn minimal_file_has_the_documented_defaults() {
        let c = parse(MINIMAL_CLUSTER_FILE).unwrap();
        assert_eq!(c.mongodb.read_preference, "secondaryPreferred");
        assert_eq!(c.mongodb.freeze_wait, Duration::from_secs(300));
        assert!(c.mongodb.users_and_roles);
        assert_eq!(c.mongodb.step_timeout_for(1), Duration::from_secs(120));
        assert_eq!(c.mongodb.step_timeout_for(3), Duration::from_secs(240));
        assert_eq!(c.common().name, "orders");
    }

    #[test]
    fn replica_sets_are_checked_field_by_field() {
        let sets = |body: &str| {
            format!("name = \"x\"\nrepository = \"/r\"\npassword-file = \"/p\"\n[mongodb]\n{body}")
        };
        let ok = parse(&sets("[[mongodb.replica-set]]\nuri = \"mongodb://a:1/?replicaSet=rs0\"\n[[mongodb.replica-set]]\nuri-file = \"/f\"\nname = \"b\"\n")).unwrap();
        assert_eq!(ok.mongodb.replica_sets.len(), 2);
        let e = parse(&sets("[[mongodb.replica-set]]\nuri = \"mongodb://u:secret@a:1/\"\n")).unwrap_err();
        assert!(e.contains("carries a password") && !e.contains("secret"), "{e}");
        let e = parse(&sets("uri-file = \"/f\"\n[[mongodb.replica-set]]\nuri = \"mongodb://a\"\n")).unwrap_err();
        assert!(e.contains("not both"), "{e}");
        let e = parse(&sets("read-preference = \"fastest\"\nuri-file = \"/f\"\n")).unwrap_err();
        assert!(e.contains("read-preference"), "{e}");
        let e = parse(&sets("uri-file = \"/f\"\ncolour = 1\n")).unwrap_err();
        assert!(e.contains("colour"), "{e}");
        let e = parse("name = \"x\"\nrepository = \"/r\"\npassword-file = \"/p\"\n[mongodb]\n").unwrap_err();
        assert!(e.contains("nothing to back up"), "{e}");
    }

    #[test]
    fn passwords_are_found_in_the_authority_only() {
        assert!(has_password("mongodb://u:p@h:1/db"));
        assert!(has_password("mongodb+srv://u:p%40x@cluster0.example.net/"));
        assert!(!has_password("mongodb://u@h:1/?authMechanism=MONGODB-X509"));
        assert!(!has_password("mongodb://h:1/db?replicaSet=a:b@c"));
        assert!(!has_password("mongodb://h1:1,h2:2/"));
    }

    #[test]
    fn includes_and_excludes_pick_namespaces() {
        let mut m = parse(MINIMAL_CLUSTER_FILE).unwrap().mongodb;
        assert!(m.wants("shop", "items"));
        m.exclude = vec!["shop.logs".into(), "tmp.*".into(), "scratch".into()];
        assert!(!m.wants("shop", "logs") && m.wants("shop", "items"));
        assert!(!m.wants("tmp", "x") && !m.wants("scratch", "y"));
        m.databases = vec!["shop".into()];
        assert!(!m.wants("crm", "people") && m.wants("shop", "items"));
    }
}
