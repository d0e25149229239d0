//! Redis Cluster through Debian's redis-cli: every slot served exactly once,
//! and a key written on a master read back from its replica.

use std::io::Write;
use std::process::{Command, Stdio};

use testbed::fixture::SharedCell;
use testbed::redis::{cli, Info, NodeInfo, SLOTS};
use testbed::Kind;

static REDIS: SharedCell = SharedCell::new(Kind::Redis, "TESTBED_REDIS_ROOT", None);

/// Several commands over one connection (READONLY and WAIT act per connection).
fn session(port: u16, commands: &str) -> Vec<String> {
    let mut child = Command::new("redis-cli")
        .args(["-h", "127.0.0.1", "-p", &port.to_string()])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(commands.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success());
    String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(str::to_string)
        .collect()
}

/// Slot ranges each master serves, from one node's `CLUSTER NODES`.
fn slot_owners(port: u16) -> Vec<(String, usize, usize)> {
    let mut owners = Vec::new();
    for line in cli(port, &["cluster", "nodes"]).unwrap().lines() {
        let fields: Vec<&str> = line.split_whitespace().collect();
        let addr = fields[1].split('@').next().unwrap().to_string();
        // Fields 8.. are slot ranges ("0-5460" or a single "17").
        for range in fields.iter().skip(8) {
            let (lo, hi) = range.split_once('-').unwrap_or((range, range));
            owners.push((addr.clone(), lo.parse().unwrap(), hi.parse().unwrap()));
        }
    }
    owners
}

#[test]
fn all_slots_covered_by_three_masters() {
    let info: Info = REDIS.get().info();
    assert_eq!(info.nodes.len(), 6);
    assert_eq!(info.masters.len(), 3);
    for node in &info.nodes {
        let mut served = vec![0u8; SLOTS];
        let owners = slot_owners(node.port);
        for (owner, lo, hi) in &owners {
            assert!(
                info.masters.contains(owner),
                "{owner} serves slots but is no master"
            );
            served[*lo..=*hi].iter_mut().for_each(|s| *s += 1);
        }
        assert!(
            served.iter().all(|&s| s == 1),
            "node {} sees gaps or overlaps",
            node.addr
        );
    }
    let check = Command::new("redis-cli")
        .args(["--cluster", "check", &info.seeds[0]])
        .output()
        .unwrap();
    let report = String::from_utf8_lossy(&check.stdout);
    assert!(report.contains("[OK] All 16384 slots covered."), "{report}");
}

#[test]
fn key_set_on_master_is_read_from_its_replica() {
    let info: Info = REDIS.get().info();
    let key = "tidemark:replicated";
    let slot: usize = cli(info.nodes[0].port, &["cluster", "keyslot", key])
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    let owners = slot_owners(info.nodes[0].port);
    let (master_addr, _, _) = owners
        .iter()
        .find(|(_, lo, hi)| (*lo..=*hi).contains(&slot))
        .unwrap();
    let by_addr = |a: &str| -> &NodeInfo { info.nodes.iter().find(|n| n.addr == a).unwrap() };
    let master = by_addr(master_addr);
    let replica = info
        .nodes
        .iter()
        .find(|n| n.master.as_deref() == Some(master_addr.as_str()))
        .expect("every master has a replica");

    // WAIT 1: returns once one replica acknowledged the write.
    let wrote = session(master.port, &format!("SET {key} value-42\nWAIT 1 5000\n"));
    assert_eq!(wrote, ["OK", "1"]);

    // A replica redirects reads unless the connection asks for READONLY.
    let redirected = session(replica.port, &format!("GET {key}\n"));
    assert!(redirected[0].starts_with("MOVED"), "{redirected:?}");
    let read = session(replica.port, &format!("READONLY\nGET {key}\n"));
    assert_eq!(read, ["OK", "value-42"]);
}
