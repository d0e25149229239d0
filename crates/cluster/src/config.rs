//! What every coordinator file has, whichever the data store.
//!
//! Each adapter owns its cluster file's struct (kebab-case, unknown keys
//! refused, validated by the adapter), because serde cannot refuse unknown
//! keys of a struct that flattens a shared one. What every such file has in
//! common (`name`, `repository`, `password-file`, `[agents] token-file`,
//! `[retention]`) is offered through [`ClusterFile::common`], so that shared
//! code (forget, copy, list) reads it without knowing the adapter.
//! Which adapter a file is for is said by its one store table (`[cassandra]`,
//! `[hdfs]`): [`pick_store`].

use std::path::Path;

use serde::{Deserialize, Serialize};
use tidemark_repo::forget::{KeepPolicy, Within};

use crate::auth::Token;
use crate::error::{ClusterError, Result};

/// An adapter's coordinator file.
pub trait ClusterFile {
    /// The adapter's store name: the manifests' `store`, the first part of
    /// its node snapshots' host names and their store tag (see `tag`).
    fn store(&self) -> &'static str;
    fn common(&self) -> Common<'_>;
}

/// The part of a coordinator file every adapter has.
#[derive(Debug, Clone, Copy)]
pub struct Common<'a> {
    /// Name of the cluster in the catalog; backups are listed under it.
    pub name: &'a str,
    /// Repository location as written (validated by the adapter's file).
    pub repository: &'a str,
    /// File holding the repository passphrase.
    pub password_file: &'a Path,
    /// File holding the token shared with every agent.
    pub token_file: &'a Path,
    pub retention: Option<&'a RetentionConfig>,
}

impl Common<'_> {
    pub fn token(&self) -> Result<Token> {
        Token::from_file(self.token_file)
    }
}

/// Which of `stores` the file at `path` (its text) is for: the one of them
/// that is a top-level table. None or two of them is refused, naming the
/// file and the tables.
pub fn pick_store(text: &str, path: &Path, stores: &[&'static str]) -> Result<&'static str> {
    let bad = |reason: String| ClusterError::Config { path: path.display().to_string(), reason };
    let table: toml::Table = toml::from_str(text).map_err(|e| bad(e.to_string()))?;
    let found: Vec<&'static str> =
        stores.iter().copied().filter(|s| table.get(*s).is_some_and(toml::Value::is_table)).collect();
    let tables = |names: &[&str]| names.iter().map(|s| format!("[{s}]")).collect::<Vec<_>>().join(", ");
    match found[..] {
        [one] => Ok(one),
        [] => Err(bad(format!("no data store table: the file needs one of {}", tables(stores)))),
        _ => Err(bad(format!("{} are all there: a cluster file describes one data store", tables(&found)))),
    }
}

/// `[retention]`: the keep rules of `tidemark cluster forget`, with the same
/// meaning as its `--keep-*` flags (a backup is kept if any rule keeps it;
/// its time is the backup's start). Zero or absent means "this rule keeps
/// nothing"; a table that keeps nothing at all is refused.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct RetentionConfig {
    #[serde(default)]
    pub keep_last: u32,
    #[serde(default)]
    pub keep_hourly: u32,
    #[serde(default)]
    pub keep_daily: u32,
    #[serde(default)]
    pub keep_weekly: u32,
    #[serde(default)]
    pub keep_monthly: u32,
    #[serde(default)]
    pub keep_yearly: u32,
    /// A duration like 7d, 2w, 1y2m or 36h, counted back from the newest backup.
    #[serde(default)]
    pub keep_within: Option<String>,
}

impl RetentionConfig {
    /// The policy, or why the table is unusable (named by field).
    pub fn policy(&self) -> std::result::Result<KeepPolicy, String> {
        let within = match &self.keep_within {
            Some(w) => Some(w.parse::<Within>().map_err(|e| format!("retention.keep-within: {e}"))?),
            None => None,
        };
        let p = KeepPolicy {
            last: self.keep_last,
            hourly: self.keep_hourly,
            daily: self.keep_daily,
            weekly: self.keep_weekly,
            monthly: self.keep_monthly,
            yearly: self.keep_yearly,
            within,
            tags: Vec::new(),
        };
        if p.is_empty() {
            return Err(
                "retention keeps nothing: give at least one keep-* rule above zero (or remove the table)".into()
            );
        }
        Ok(p)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_one_store_table_picks_the_adapter() {
        let p = Path::new("c.toml");
        let stores = ["cassandra", "hdfs"];
        assert_eq!(pick_store("name = \"x\"\n[hdfs]\nroots = []\n", p, &stores).unwrap(), "hdfs");
        assert_eq!(pick_store("hdfs = 1\n[cassandra.x]\n", p, &stores).unwrap(), "cassandra");
        let e = pick_store("name = \"x\"\n", p, &stores).unwrap_err().to_string();
        assert_eq!(e, "config c.toml: no data store table: the file needs one of [cassandra], [hdfs]");
        let e = pick_store("[hdfs]\n[cassandra]\n", p, &stores).unwrap_err().to_string();
        assert_eq!(e, "config c.toml: [cassandra], [hdfs] are all there: a cluster file describes one data store");
        let e = pick_store("name = ", p, &stores).unwrap_err().to_string();
        assert!(e.starts_with("config c.toml: TOML parse error"), "{e}");
    }

    #[test]
    fn retention_policy_names_the_bad_field() {
        let r = RetentionConfig { keep_last: 3, keep_within: Some("2w".into()), ..Default::default() };
        let p = r.policy().unwrap();
        assert_eq!((p.last, p.within.unwrap().days), (3, 14));
        let r = RetentionConfig { keep_within: Some("7 days".into()), ..Default::default() };
        assert!(r.policy().unwrap_err().starts_with("retention.keep-within: "));
        let e = RetentionConfig::default().policy().unwrap_err();
        assert!(e.starts_with("retention keeps nothing"), "{e}");
    }
}
