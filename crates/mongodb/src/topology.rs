//! What the deployment is made of: the replica sets cut together, each with
//! its client, name, members, versions; for a sharded cluster also the
//! mongos (balancer, shard map).
//!
//! A replica set is reached by its own connection string; with a mongos,
//! the shards' and the config server's are built from the mongos's (same
//! credentials and options, the set's hosts). What a set reports of itself
//! (`hello`, `buildInfo`, the feature compatibility version) goes into the
//! backup's manifest.

use std::time::Duration;

use mongodb::bson::{doc, Document};
use mongodb::options::{ClientOptions, ReadPreference, ReadPreferenceOptions, SelectionCriteria, ServerAddress};
use mongodb::Client;
use serde::{Deserialize, Serialize};

use crate::config::{read_uri_file, ClusterConfig};
use crate::error::{Context, MongoError, Result};

/// One replica set (or standalone server) as backed up and restored.
#[derive(Clone)]
pub struct ReplicaSet {
    /// Its name in the backup: configured, else the set name, else `rs<N>`.
    pub name: String,
    /// Reads documents and the oplog with the configured read preference.
    pub client: Client,
    /// For writes (restore) and commands that need the primary.
    pub primary: Client,
    pub info: SetInfo,
}

impl std::fmt::Debug for ReplicaSet {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The clients hold the credentials: never printed.
        f.debug_struct("ReplicaSet").field("name", &self.name).field("info", &self.info).finish()
    }
}

/// What a replica set says of itself.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub struct SetInfo {
    /// `hello.setName`; None for a standalone server.
    pub set_name: Option<String>,
    pub hosts: Vec<String>,
    /// `buildInfo.version` (FerretDB reports the MongoDB version it imitates).
    pub version: String,
    /// FerretDB's own version when the server is FerretDB.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ferretdb: Option<String>,
    /// `featureCompatibilityVersion`, when the server has one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fcv: Option<String>,
    /// "shard", "config" or "replica-set".
    pub role: String,
}

/// The deployment: its replica sets and, when sharded, the mongos.
pub struct Topology {
    pub sets: Vec<ReplicaSet>,
    pub mongos: Option<Client>,
}

/// How long the driver looks for a usable member before a request fails:
/// a set that cannot be reached fails the step fast, naming the set.
const SELECT_TIMEOUT: Duration = Duration::from_secs(20);
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

pub fn read_preference(name: &str) -> ReadPreference {
    let options: Option<ReadPreferenceOptions> = None;
    match name {
        "primary" => ReadPreference::Primary,
        "primaryPreferred" => ReadPreference::PrimaryPreferred { options },
        "secondary" => ReadPreference::Secondary { options },
        "nearest" => ReadPreference::Nearest { options },
        _ => ReadPreference::SecondaryPreferred { options },
    }
}

async fn parse(uri: &str, what: &str) -> Result<ClientOptions> {
    let mut o = ClientOptions::parse(uri)
        .await
        // The driver's message may quote the string; ours names the source only.
        .map_err(|e| MongoError::Invalid(format!("{what}: not a usable connection string ({})", e.kind)))?;
    o.app_name = Some("tidemark".into());
    o.server_selection_timeout.get_or_insert(SELECT_TIMEOUT);
    o.connect_timeout.get_or_insert(CONNECT_TIMEOUT);
    Ok(o)
}

fn clients(mut o: ClientOptions, read_pref: &str) -> Result<(Client, Client)> {
    let mut p = o.clone();
    p.selection_criteria = Some(SelectionCriteria::ReadPreference(ReadPreference::Primary));
    let primary = Client::with_options(p).map_err(|e| MongoError::Invalid(format!("client: {e}")))?;
    o.selection_criteria = Some(SelectionCriteria::ReadPreference(read_preference(read_pref)));
    let client = Client::with_options(o).map_err(|e| MongoError::Invalid(format!("client: {e}")))?;
    Ok((client, primary))
}

/// Connects to every replica set the file names and asks each what it is.
pub async fn discover(config: &ClusterConfig) -> Result<Topology> {
    let m = &config.mongodb;
    let mut sets = Vec::new();
    if let Some(file) = &m.uri_file {
        let uri = read_uri_file(file)?;
        let opts = parse(&uri, &file.display().to_string()).await?;
        let (client, primary) = clients(opts.clone(), &m.read_preference)?;
        let hello = command(&primary, "admin", doc! { "hello": 1 }, "deployment", "hello").await?;
        if hello.get_str("msg") == Ok("isdbgrid") {
            return discover_sharded(config, opts, primary).await;
        }
        sets.push(describe(None, 1, client, primary, "replica-set").await?);
    } else {
        for (i, r) in m.replica_sets.iter().enumerate() {
            let (uri, what) = match (&r.uri, &r.uri_file) {
                (Some(u), _) => (u.clone(), format!("mongodb.replica-set[{i}].uri")),
                (None, Some(f)) => (read_uri_file(f)?, f.display().to_string()),
                (None, None) => unreachable!("validated"),
            };
            let (client, primary) = clients(parse(&uri, &what).await?, &m.read_preference)?;
            sets.push(describe(r.name.clone(), i + 1, client, primary, "replica-set").await?);
        }
    }
    check_names(&sets)?;
    Ok(Topology { sets, mongos: None })
}

fn check_names(sets: &[ReplicaSet]) -> Result<()> {
    for (i, s) in sets.iter().enumerate() {
        if sets[..i].iter().any(|o| o.name == s.name) {
            return Err(MongoError::Invalid(format!(
                "two replica sets are both called {}: give each a name in [[mongodb.replica-set]]",
                s.name
            )));
        }
    }
    Ok(())
}

/// A sharded cluster: every shard and the config server replica set, each
/// reached with the mongos's credentials and options at its own hosts.
/// Built to MongoDB's documented `listShards` and `getShardMap`; not run
/// against a real mongos here (see docs/mongodb.md).
async fn discover_sharded(config: &ClusterConfig, opts: ClientOptions, mongos: Client) -> Result<Topology> {
    let m = &config.mongodb;
    let shards = command(&mongos, "admin", doc! { "listShards": 1 }, "mongos", "listShards").await?;
    let mut sets = Vec::new();
    let list = shards.get_array("shards").map_err(|_| MongoError::Invalid("listShards: no shards array".into()))?;
    let mut members: Vec<(String, String, &str)> = Vec::new();
    for s in list {
        let s = s.as_document().ok_or_else(|| MongoError::Invalid("listShards: a shard is not a document".into()))?;
        let id = s.get_str("_id").unwrap_or("?").to_string();
        let host = s.get_str("host").map_err(|_| MongoError::Invalid(format!("listShards: shard {id} has no host")))?;
        members.push((id, host.to_string(), "shard"));
    }
    let map = command(&mongos, "admin", doc! { "getShardMap": 1 }, "mongos", "getShardMap").await?;
    let cfg = map
        .get_document("map")
        .ok()
        .and_then(|d| d.get_str("config").ok())
        .ok_or_else(|| MongoError::Invalid("getShardMap: no config server entry".into()))?;
    members.push(("config".into(), cfg.to_string(), "config"));
    for (i, (id, host, role)) in members.into_iter().enumerate() {
        // "rsName/h1:p1,h2:p2"
        let (set, hosts) = host.split_once('/').unwrap_or(("", host.as_str()));
        let mut o = opts.clone();
        o.hosts = hosts
            .split(',')
            .map(|h| ServerAddress::parse(h).map_err(|e| MongoError::Invalid(format!("shard {id}: host {h}: {e}"))))
            .collect::<Result<_>>()?;
        o.repl_set_name = (!set.is_empty()).then(|| set.to_string());
        o.direct_connection = None;
        let (client, primary) = clients(o, &m.read_preference)?;
        sets.push(describe(Some(id), i + 1, client, primary, role).await?);
    }
    check_names(&sets)?;
    Ok(Topology { sets, mongos: Some(mongos) })
}

async fn describe(name: Option<String>, n: usize, client: Client, primary: Client, role: &str) -> Result<ReplicaSet> {
    let label = name.clone().unwrap_or_else(|| format!("#{n}"));
    let hello = command(&primary, "admin", doc! { "hello": 1 }, &label, "hello").await?;
    let set_name = hello.get_str("setName").ok().map(str::to_string);
    let hosts = hello
        .get_array("hosts")
        .map(|a| a.iter().filter_map(|h| h.as_str().map(str::to_string)).collect())
        .unwrap_or_default();
    let build = command(&primary, "admin", doc! { "buildInfo": 1 }, &label, "buildInfo").await?;
    let version = build.get_str("version").unwrap_or("unknown").to_string();
    let ferretdb = build.get_str("ferretdbVersion").ok().map(str::to_string);
    let fcv = command(&primary, "admin", doc! { "getParameter": 1, "featureCompatibilityVersion": 1 }, &label, "getParameter")
        .await
        .ok()
        .and_then(|d| d.get_document("featureCompatibilityVersion").ok().and_then(|f| f.get_str("version").ok()).map(str::to_string));
    // FerretDB answers every instance with the same set name (its oplog
    // emulation needs one): the configured name, else the set's name with
    // the entry's number, keeps them apart.
    let name = name.unwrap_or_else(|| match (&set_name, &ferretdb) {
        (Some(s), None) => s.clone(),
        (Some(s), Some(_)) => format!("{s}-{n}"),
        (None, _) => format!("rs{n}"),
    });
    Ok(ReplicaSet {
        name,
        client,
        primary,
        info: SetInfo { set_name, hosts, version, ferretdb, fcv, role: role.to_string() },
    })
}

/// Runs an admin or database command; errors name the set and the command.
pub async fn command(client: &Client, db: &str, cmd: Document, rs: &str, what: &str) -> Result<Document> {
    client.database(db).run_command(cmd).await.ctx(rs, || what.to_string())
}

/// The balancer of a sharded cluster, stopped for the cut and put back as
/// it was, also after a failure (see `backup`). Built to MongoDB's
/// documented `balancerStatus`, `balancerStop` and `balancerStart`.
pub struct Balancer {
    mongos: Client,
    was_on: bool,
}

impl Balancer {
    /// Stops the balancer and waits until no balancing round (chunk
    /// migration) runs, at most `wait`; refuses after it.
    pub async fn stop(mongos: &Client, wait: Duration) -> Result<Balancer> {
        let status = command(mongos, "admin", doc! { "balancerStatus": 1 }, "mongos", "balancerStatus").await?;
        let was_on = status.get_str("mode").map(|m| m != "off").unwrap_or(true);
        command(mongos, "admin", doc! { "balancerStop": 1, "maxTimeMS": 60_000 }, "mongos", "balancerStop").await?;
        let bal = Balancer { mongos: mongos.clone(), was_on };
        let deadline = tokio::time::Instant::now() + wait;
        loop {
            let s = command(mongos, "admin", doc! { "balancerStatus": 1 }, "mongos", "balancerStatus").await?;
            if !s.get_bool("inBalancerRound").unwrap_or(false) {
                return Ok(bal);
            }
            if tokio::time::Instant::now() >= deadline {
                bal.restore().await;
                return Err(MongoError::NotReady(format!(
                    "chunk migrations still running after {} s (mongodb.freeze-wait); the balancer was put back as it was",
                    wait.as_secs()
                )));
            }
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
    }

    pub fn was_on(&self) -> bool {
        self.was_on
    }

    /// Puts the balancer back as it was (a failure is logged: the backup's
    /// outcome does not depend on it, but an operator must know).
    pub async fn restore(&self) {
        if !self.was_on {
            return;
        }
        if let Err(e) = command(&self.mongos, "admin", doc! { "balancerStart": 1, "maxTimeMS": 60_000 }, "mongos", "balancerStart").await {
            tracing::error!("the balancer could not be started again; start it with sh.startBalancer(): {e}");
        }
    }
}
