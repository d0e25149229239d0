//! The cluster file of any adapter: read once, the adapter picked by the
//! file's one store table (`[cassandra]`), then parsed and validated by that
//! adapter. Commands that need only what every cluster file has (name,
//! repository, retention) use [`AnyConfig::common`].

use std::path::Path;

use anyhow::{Context, Result};
use tidemark_cluster::config::{pick_store, ClusterFile, Common};
use tidemark_cluster::ClusterError;
use tidemark_repo::Repository;

use crate::ctx::{read_password, runtime, Global};

/// The store tables that pick an adapter.
const STORES: &[&str] = &[tidemark_cassandra::STORE, tidemark_hdfs::STORE, tidemark_mongodb::STORE];

/// A coordinator file, of whichever adapter.
#[derive(Debug, Clone)]
pub enum AnyConfig {
    Cassandra(tidemark_cassandra::config::ClusterConfig),
    Hdfs(tidemark_hdfs::config::ClusterConfig),
    Mongodb(tidemark_mongodb::config::ClusterConfig),
}

impl AnyConfig {
    pub fn load(path: &Path) -> Result<AnyConfig> {
        let text = std::fs::read_to_string(path).map_err(|e| ClusterError::file(path, e))?;
        Ok(match pick_store(&text, path, STORES)? {
            tidemark_cassandra::STORE => AnyConfig::Cassandra(
                tidemark_cassandra::config::ClusterConfig::from_toml(&text, path)?,
            ),
            tidemark_hdfs::STORE => AnyConfig::Hdfs(tidemark_hdfs::config::ClusterConfig::from_toml(&text, path)?),
            tidemark_mongodb::STORE => {
                AnyConfig::Mongodb(tidemark_mongodb::config::ClusterConfig::from_toml(&text, path).map_err(super::mongodb::unwrap)?)
            }
            other => unreachable!("store {other} is in STORES without an adapter"),
        })
    }

    pub fn file(&self) -> &dyn ClusterFile {
        match self {
            AnyConfig::Cassandra(c) => c,
            AnyConfig::Hdfs(c) => c,
            AnyConfig::Mongodb(c) => c,
        }
    }

    pub fn common(&self) -> Common<'_> {
        self.file().common()
    }

    /// The repository the file names, opened with its passphrase file, its
    /// metadata cached under `g`'s cache root. A wrong passphrase stays a
    /// `RepoError::WrongPassword` (exit 12).
    pub fn open_repository(&self, g: &Global) -> Result<Repository> {
        self.open_in(g, false)
    }

    /// For verify: every file read from the repository, none from the cache
    /// (which keeps copies of those that check out).
    pub fn open_repository_uncached(&self, g: &Global) -> Result<Repository> {
        self.open_in(g, true)
    }

    fn open_in(&self, g: &Global, write_only: bool) -> Result<Repository> {
        let c = self.common();
        let password = read_password(Some(&c.password_file.to_path_buf()), "TIDEMARK_PASSWORD")?;
        let loc: tidemark_store::Location = c.repository.parse().expect("validated when loaded");
        let opts = tidemark_store::OpenOptions::default();
        tidemark_repo::repo::open_location_cached(
            &loc,
            &opts,
            runtime().handle().clone(),
            password.as_bytes(),
            &[],
            g.cache_root().as_deref(),
            write_only,
        )
        .with_context(|| format!("opening the repository {}", c.repository))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    use tidemark_cassandra::config::MINIMAL_CLUSTER_FILE as CASSANDRA;

    fn load(text: &str) -> (tempfile::TempDir, Result<AnyConfig>) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("c.toml");
        std::fs::write(&path, text).unwrap();
        let c = AnyConfig::load(&path);
        (dir, c)
    }

    #[test]
    fn the_store_table_picks_the_adapter_and_the_adapter_validates() {
        let (_d, c) = load(CASSANDRA);
        let c = c.unwrap();
        assert!(matches!(c, AnyConfig::Cassandra(_)));
        assert_eq!(c.common().name, "prod");
        assert_eq!(c.common().token_file, Path::new("/etc/tidemark/token"));

        let (d, e) = load(&CASSANDRA.replace("[cassandra]", "[casandra]"));
        let e = format!("{:#}", e.unwrap_err());
        assert!(
            e.contains(&d.path().join("c.toml").display().to_string()) && e.contains("[cassandra]"),
            "{e}"
        );
        let (_d, e) = load(&format!("{CASSANDRA}\ncolour = 1\n"));
        assert!(format!("{:#}", e.unwrap_err()).contains("colour"));
    }
}
