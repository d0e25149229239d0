//! How the agent drives its node: ring status, snapshot, clearsnapshot and
//! import are JMX operations Cassandra offers no CQL for.
//!
//! Two ways, chosen by the agent's config: the JMX bridge (`jmx = host:port`;
//! one JVM kept connected, see [`jmx`]) or the node's own nodetool (one JVM
//! start per operation). Both give the same results; the bridge costs a
//! round trip instead of about a second of CPU per call.

pub mod jmx;

use std::net::IpAddr;
use std::path::Path;
use std::time::Duration;

use crate::api::RingMember;
use crate::config::{split_host_port, AgentConfig};
use crate::error::{CassandraError, Result};
use crate::nodetool::Nodetool;
use jmx::{JmxBridge, JmxSettings};

/// Ring status is answered from memory on the node; longer means it hangs.
const STATUS_TIMEOUT: Duration = Duration::from_secs(60);

pub enum Control {
    Nodetool(Nodetool),
    Jmx(Box<JmxBridge>),
}

impl Control {
    /// The bridge when `jmx` is configured (its dir under `work_dir`), else
    /// nodetool.
    pub async fn from_config(config: &AgentConfig, bridge_dir: &Path) -> Result<Control> {
        let node = config.node_address.to_string();
        let Some(endpoint) = &config.jmx else {
            return Ok(Control::Nodetool(Nodetool::new(
                config.nodetool.clone(),
                node,
            )));
        };
        let (host, port) = split_host_port(endpoint).map_err(CassandraError::Invalid)?;
        let credentials = match (&config.jmx_user, &config.jmx_password_file) {
            (Some(user), Some(file)) => {
                let text =
                    std::fs::read_to_string(file).map_err(|e| CassandraError::io(file, e))?;
                Some((user.clone(), text.lines().next().unwrap_or("").to_string()))
            }
            _ => None,
        };
        let java = config
            .java
            .clone()
            .unwrap_or_else(|| match std::env::var_os("JAVA_HOME") {
                Some(home) => Path::new(&home).join("bin/java"),
                None => "java".into(),
            });
        let settings = JmxSettings {
            host,
            port,
            credentials,
            java,
            dir: bridge_dir.to_path_buf(),
            node,
        };
        Ok(Control::Jmx(Box::new(JmxBridge::start(settings).await?)))
    }

    /// The ring as this node sees it (what `nodetool status` shows).
    pub async fn status(&self) -> Result<Vec<RingMember>> {
        match self {
            Control::Nodetool(n) => n.status().await,
            Control::Jmx(b) => {
                parse_bridge_status(&b.call(&["status"], Some(STATUS_TIMEOUT)).await?)
            }
        }
    }

    /// Flushes and snapshots every keyspace under `tag`.
    pub async fn snapshot(&self, tag: &str) -> Result<()> {
        match self {
            Control::Nodetool(n) => n.run(&["snapshot", "-t", tag]).await.map(drop),
            Control::Jmx(b) => b.call(&["snapshot", tag], None).await.map(drop),
        }
    }

    pub async fn clear_snapshot(&self, tag: &str) -> Result<()> {
        match self {
            Control::Nodetool(n) => n.run(&["clearsnapshot", "-t", tag]).await.map(drop),
            Control::Jmx(b) => b.call(&["clear", tag], None).await.map(drop),
        }
    }

    /// `nodetool import` of the SSTables in `dir` (with its defaults: verify
    /// SSTables and tokens, reset levels, move the files in). Files Cassandra
    /// skipped stay in `dir`; the caller checks.
    pub async fn import(&self, keyspace: &str, table: &str, dir: &Path) -> Result<()> {
        let dir_s = dir.display().to_string();
        match self {
            Control::Nodetool(n) => n.run(&["import", keyspace, table, &dir_s]).await.map(drop),
            Control::Jmx(b) => {
                let failed = b.call(&["import", keyspace, table, &dir_s], None).await?;
                if failed.trim().is_empty() {
                    Ok(())
                } else {
                    Err(CassandraError::Node {
                        node: b.node().to_string(),
                        reason: format!(
                            "import {keyspace}.{table} failed for: {}",
                            failed.replace('\n', ", ")
                        ),
                    })
                }
            }
        }
    }
}

/// The bridge's status payload: one node per line, TAB between address,
/// U/D, N/J/L/M, host id, data centre and rack.
fn parse_bridge_status(payload: &str) -> Result<Vec<RingMember>> {
    let bad =
        |line: &str| CassandraError::Invalid(format!("JMX status: cannot read line {line:?}"));
    let mut ring = Vec::new();
    for line in payload.lines().filter(|l| !l.is_empty()) {
        let f: Vec<&str> = line.split('\t').collect();
        let [address, ud, state, host_id, datacenter, rack] = f[..] else {
            return Err(bad(line));
        };
        let address: IpAddr = address.parse().map_err(|_| bad(line))?;
        let state = match state {
            "N" => 'N',
            "J" => 'J',
            "L" => 'L',
            "M" => 'M',
            _ => return Err(bad(line)),
        };
        ring.push(RingMember {
            address,
            up: ud == "U",
            state,
            host_id: host_id.to_string(),
            datacenter: datacenter.to_string(),
            rack: rack.to_string(),
        });
    }
    if ring.is_empty() {
        return Err(CassandraError::Invalid("JMX status lists no node".into()));
    }
    Ok(ring)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bridge_status_reads_every_field() {
        let p = "127.0.218.1\tU\tN\t9b40-a1\tdatacenter1\track1\n10.0.0.2\tD\tJ\t?\tdc 2\tr2";
        let ring = parse_bridge_status(p).unwrap();
        assert_eq!(
            ring[1],
            RingMember {
                address: "10.0.0.2".parse().unwrap(),
                up: false,
                state: 'J',
                host_id: "?".into(),
                datacenter: "dc 2".into(),
                rack: "r2".into(),
            }
        );
        assert!(ring[0].up && ring[0].state == 'N');
        assert!(parse_bridge_status("").is_err());
        assert!(parse_bridge_status("127.0.0.1\tU\tX\ta\tb\tc").is_err());
        assert!(parse_bridge_status("127.0.0.1\tU\tN\ta\tb").is_err());
    }
}
