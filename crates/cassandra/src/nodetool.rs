//! The node's own nodetool, for agents configured without `jmx` (see
//! `control`): snapshot, clearsnapshot, import and status are JMX operations
//! Cassandra offers no CQL for. `parse_listsnapshots` serves tests that ask a
//! node what snapshots it holds.
//!
//! [`Nodetool`] runs the configured command line (JMX host and port
//! included) with tokio's process support, so a JVM start of a second or two
//! never holds an async worker. The parsers read what Cassandra 5.0.9's
//! nodetool prints; their tests use output captured from a testbed cluster.

use std::net::IpAddr;

use tokio::process::Command;

use crate::api::RingMember;
use crate::error::{CassandraError, Result};

/// How to run nodetool for one node.
#[derive(Debug, Clone)]
pub struct Nodetool {
    /// Command line before the subcommand, e.g. `["nodetool", "-h", "127.0.0.1", "-p", "7199"]`.
    pub argv: Vec<String>,
    /// The node's address, for error messages.
    pub node: String,
}

impl Nodetool {
    pub fn new(argv: Vec<String>, node: impl Into<String>) -> Nodetool {
        Nodetool {
            argv,
            node: node.into(),
        }
    }

    /// Runs `argv + args`; returns stdout. A non-zero exit (or a command that
    /// cannot be started) is [`CassandraError::Nodetool`] with the output.
    pub async fn run(&self, args: &[&str]) -> Result<String> {
        let fail = |output: String| CassandraError::Nodetool {
            node: self.node.clone(),
            args: args.join(" "),
            output,
        };
        let (program, pre) = self
            .argv
            .split_first()
            .ok_or_else(|| fail("empty nodetool command line".into()))?;
        let out = Command::new(program)
            .args(pre)
            .args(args)
            .stdin(std::process::Stdio::null())
            .kill_on_drop(true)
            .output()
            .await
            .map_err(|e| fail(format!("cannot run {program}: {e}")))?;
        let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
        if !out.status.success() {
            let stderr = String::from_utf8_lossy(&out.stderr);
            let output = format!("{}\n{}", stdout.trim(), stderr.trim());
            return Err(fail(format!("{}: {}", out.status, last_lines(&output, 30))));
        }
        Ok(stdout)
    }

    pub async fn status(&self) -> Result<Vec<RingMember>> {
        parse_status(&self.run(&["status"]).await?)
    }
}

/// The end of a long tool output (a Java stack trace runs to many lines).
pub fn last_lines(s: &str, n: usize) -> String {
    let lines: Vec<&str> = s.trim().lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

/// `nodetool status`: one [`RingMember`] per node line, the data centre
/// taken from the `Datacenter:` header above it.
pub fn parse_status(out: &str) -> Result<Vec<RingMember>> {
    let mut dc: Option<String> = None;
    let mut members = Vec::new();
    for line in out.lines() {
        if let Some(name) = line.strip_prefix("Datacenter:") {
            dc = Some(name.trim().to_string());
            continue;
        }
        let fields: Vec<&str> = line.split_whitespace().collect();
        // Node lines start with the two status letters: U/D then N/L/J/M.
        let Some(code) = fields.first() else { continue };
        let mut letters = code.chars();
        let (Some(ud), Some(state), None) = (letters.next(), letters.next(), letters.next()) else {
            continue;
        };
        if !matches!(ud, 'U' | 'D') || !matches!(state, 'N' | 'L' | 'J' | 'M') {
            continue;
        }
        // Load has a space inside ("104.5 KiB") or is "?": address comes
        // second, host id and rack last, whatever sits between.
        if fields.len() < 5 {
            return Err(CassandraError::Invalid(format!(
                "nodetool status: cannot read line {line:?}"
            )));
        }
        let address: IpAddr = fields[1].parse().map_err(|_| {
            CassandraError::Invalid(format!("nodetool status: bad address in {line:?}"))
        })?;
        let datacenter = dc.clone().ok_or_else(|| {
            CassandraError::Invalid(format!(
                "nodetool status: node line before any Datacenter: {line:?}"
            ))
        })?;
        members.push(RingMember {
            address,
            up: ud == 'U',
            state,
            host_id: fields[fields.len() - 2].to_string(),
            datacenter,
            rack: fields[fields.len() - 1].to_string(),
        });
    }
    if members.is_empty() {
        return Err(CassandraError::Invalid(format!(
            "nodetool status lists no node:\n{out}"
        )));
    }
    Ok(members)
}

/// `nodetool listsnapshots`: the distinct tags, in order of appearance.
pub fn parse_listsnapshots(out: &str) -> Vec<String> {
    let mut tags: Vec<String> = Vec::new();
    let mut in_table = false;
    for line in out.lines() {
        if line.starts_with("Snapshot name") {
            in_table = true;
            continue;
        }
        if !in_table {
            continue;
        }
        if line.starts_with("Total") {
            in_table = false;
            continue;
        }
        if let Some(tag) = line.split_whitespace().next() {
            if !tags.iter().any(|t| t == tag) {
                tags.push(tag.to_string());
            }
        }
    }
    tags
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `nodetool status` of a 3-node testbed cluster (Cassandra 5.0.9).
    const STATUS: &str = r#"Datacenter: datacenter1
=======================
Status=Up/Down
|/ State=Normal/Leaving/Joining/Moving
--  Address     Load        Tokens  Owns (effective)  Host ID                               Rack 
UN  127.0.66.2  121.23 KiB  4       66.7%             ac4a4aba-36a9-4975-a90b-fb67f5968b57  rack1
UN  127.0.66.1  114.44 KiB  4       66.7%             c8ddbd4d-6212-4991-a19b-4343684158e6  rack1
UN  127.0.66.3  115.37 KiB  4       66.7%             8c332301-d2ca-45d6-86a8-e2e60eabf63d  rack1

"#;

    /// `nodetool listsnapshots` (Cassandra 5.0.9), shortened.
    const LISTSNAPSHOTS: &str = r#"Snapshot Details: 
Snapshot name Keyspace name      Column family name             True size Size on disk Creation time            Expiration time
t1            system_schema      functions                      129 bytes 5.26 KiB     2026-11-25T16:21:01.970Z                
t1            system             peers                          129 bytes 5.73 KiB     2026-11-25T16:21:01.970Z                
t1            system             compaction_history             129 bytes 5.79 KiB     2026-11-25T16:21:01.970Z                
t2            system_schema      tables                         169 bytes 24.06 KiB    2026-11-25T16:21:03.324Z                
Total TrueDiskSpaceUsed: 0 bytes

"#;

    const NO_SNAPSHOTS: &str = "Snapshot Details: \nThere are no snapshots\n";

    #[test]
    fn status_lists_every_node_with_its_dc() {
        let ring = parse_status(STATUS).unwrap();
        assert_eq!(ring.len(), 3);
        assert_eq!(
            ring[1],
            RingMember {
                address: "127.0.66.1".parse().unwrap(),
                up: true,
                state: 'N',
                host_id: "c8ddbd4d-6212-4991-a19b-4343684158e6".into(),
                datacenter: "datacenter1".into(),
                rack: "rack1".into(),
            }
        );
        assert!(ring
            .iter()
            .all(|m| m.up && m.state == 'N' && m.datacenter == "datacenter1"));
    }

    #[test]
    fn status_reads_down_nodes_unknown_load_and_several_dcs() {
        let out = "Datacenter: dc1\n===\n--  Address  Load  Tokens  Owns  Host ID  Rack\n\
                   DN  10.0.0.1  ?  16  ?  aaaa-1  r1\n\nDatacenter: dc2\n===\n\
                   UJ  10.0.0.2  1.5 MiB  16  ?  bbbb-2  r2\n";
        let ring = parse_status(out).unwrap();
        assert_eq!(
            (ring[0].up, ring[0].state, ring[0].datacenter.as_str()),
            (false, 'N', "dc1")
        );
        assert_eq!(
            (
                ring[1].up,
                ring[1].state,
                ring[1].datacenter.as_str(),
                ring[1].host_id.as_str()
            ),
            (true, 'J', "dc2", "bbbb-2")
        );
        assert!(parse_status("nothing here")
            .unwrap_err()
            .to_string()
            .contains("no node"));
    }

    #[test]
    fn listsnapshots_gives_distinct_tags() {
        assert_eq!(
            parse_listsnapshots(LISTSNAPSHOTS),
            vec!["t1".to_string(), "t2".to_string()]
        );
        assert!(parse_listsnapshots(NO_SNAPSHOTS).is_empty());
    }
}
