//! The target cluster over CQL: its ring, its keyspaces' replication, which
//! keyspaces, types and tables exist, and the statements a restore runs
//! there (schema, TRUNCATE).
//!
//! The ring comes from the backup's own discovery (`crate::topology`); the
//! rest is what only a restore needs.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::time::Duration;

use scylla::client::execution_profile::ExecutionProfile;
use scylla::client::session::Session;
use scylla::client::session_builder::SessionBuilder;
use scylla::statement::unprepared::Statement;
use scylla::statement::Consistency;

use crate::config::ClusterConfig;
use crate::error::{CassandraError, Result};
use crate::restore::plan::RingNode;
use crate::restore::schema::quote_ident;
use crate::topology::Cql;

/// TRUNCATE waits for every node to drop its SSTables; the server's own
/// limit is truncate_request_timeout (60 s by default), so wait a bit longer.
const TRUNCATE_TIMEOUT: Duration = Duration::from_secs(120);

pub struct Target {
    session: Session,
    pub cluster: String,
}

/// What exists on the target.
#[derive(Debug, Default)]
pub struct Existing {
    pub keyspaces: BTreeMap<String, BTreeMap<String, String>>,
    pub types: BTreeSet<(String, String)>,
    pub tables: BTreeSet<(String, String)>,
}

impl Target {
    pub async fn connect(cfg: &ClusterConfig) -> Result<Target> {
        let profile = ExecutionProfile::builder()
            .request_timeout(Some(cfg.cassandra.request_timeout))
            .consistency(Consistency::Quorum)
            .build();
        let mut b = SessionBuilder::new()
            .known_nodes(&cfg.cassandra.contact_points)
            .default_execution_profile_handle(profile.into_handle());
        if let (Some(user), Some(pw_file)) = (&cfg.cassandra.username, &cfg.cassandra.password_file)
        {
            let pw =
                std::fs::read_to_string(pw_file).map_err(|e| CassandraError::io(pw_file, e))?;
            b = b.user(user, pw.lines().next().unwrap_or(""));
        }
        let session = b.build().await.map_err(|e| {
            CassandraError::Cql(format!(
                "connecting to {} ({}): {e}",
                cfg.name,
                cfg.cassandra.contact_points.join(", ")
            ))
        })?;
        Ok(Target {
            session,
            cluster: cfg.name.clone(),
        })
    }

    async fn rows<T>(&self, cql: &str) -> Result<Vec<T>>
    where
        T: for<'f, 'm> scylla::deserialize::row::DeserializeRow<'f, 'm>,
    {
        let res = self
            .session
            .query_unpaged(cql, ())
            .await
            .map_err(|e| self.err(cql, e))?;
        let rows = res.into_rows_result().map_err(|e| self.err(cql, e))?;
        let out = rows
            .rows::<T>()
            .map_err(|e| self.err(cql, e))?
            .collect::<std::result::Result<Vec<T>, _>>();
        out.map_err(|e| self.err(cql, e))
    }

    fn err(&self, cql: &str, e: impl std::fmt::Display) -> CassandraError {
        CassandraError::Cql(format!(
            "{} on cluster {}: {e}",
            cql.split_whitespace().take(6).collect::<Vec<_>>().join(" "),
            self.cluster
        ))
    }

    /// Every node with its tokens, by the backup's own discovery
    /// (`crate::topology`), which reads system.local and system.peers_v2
    /// from one pinned node so that no node is missed or seen twice.
    pub async fn ring(&self, cfg: &ClusterConfig) -> Result<Vec<RingNode>> {
        let topo = Cql::connect(&cfg.cassandra).await?.discover().await?;
        let mut out = Vec::new();
        for n in topo.nodes {
            let tokens = n
                .tokens
                .iter()
                .map(|t| {
                    t.parse::<i64>().map_err(|_| {
                        self.err(
                            "tokens",
                            format!("node {}: token {t:?} is not Murmur3", n.address),
                        )
                    })
                })
                .collect::<Result<Vec<i64>>>()?;
            out.push(RingNode {
                address: n.address,
                datacenter: n.datacenter,
                rack: n.rack,
                tokens,
            });
        }
        out.sort_by_key(|n| n.address);
        Ok(out)
    }

    pub async fn existing(&self) -> Result<Existing> {
        let mut ex = Existing::default();
        let ks: Vec<(String, HashMap<String, String>)> = self
            .rows("SELECT keyspace_name, replication FROM system_schema.keyspaces")
            .await?;
        ex.keyspaces = ks
            .into_iter()
            .map(|(k, r)| (k, r.into_iter().collect()))
            .collect();
        let types: Vec<(String, String)> = self
            .rows("SELECT keyspace_name, type_name FROM system_schema.types")
            .await?;
        ex.types = types.into_iter().collect();
        let tables: Vec<(String, String)> = self
            .rows("SELECT keyspace_name, table_name FROM system_schema.tables")
            .await?;
        ex.tables = tables.into_iter().collect();
        Ok(ex)
    }

    /// Runs one schema statement and waits until every node agrees on it.
    pub async fn ddl(&self, cql: &str) -> Result<()> {
        self.session
            .query_unpaged(cql, ())
            .await
            .map_err(|e| self.err(cql, e))?;
        self.session
            .await_schema_agreement()
            .await
            .map_err(|e| self.err("schema agreement", e))?;
        Ok(())
    }

    pub async fn truncate(&self, keyspace: &str, table: &str) -> Result<()> {
        let cql = format!("TRUNCATE {}.{}", quote_ident(keyspace), quote_ident(table));
        let mut st = Statement::new(cql.clone());
        st.set_request_timeout(Some(TRUNCATE_TIMEOUT));
        self.session
            .query_unpaged(st, ())
            .await
            .map_err(|e| self.err(&cql, e))?;
        Ok(())
    }
}
