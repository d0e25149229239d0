//! Free ports and loopback address blocks.
//!
//! Ports come from the kernel (`bind(addr:0)`), which hands them out from the
//! ephemeral range at a random offset, so two test runs asking at the same
//! time get different ports; a process-wide set stops one run from being
//! given the same port twice before its servers bind them.

use std::collections::HashSet;
use std::net::{Ipv4Addr, SocketAddrV4, TcpListener};
use std::sync::{Mutex, OnceLock};

use anyhow::{bail, Context, Result};

fn handed_out() -> &'static Mutex<HashSet<u16>> {
    static PORTS: OnceLock<Mutex<HashSet<u16>>> = OnceLock::new();
    PORTS.get_or_init(|| Mutex::new(HashSet::new()))
}

/// A port that is free on every address in `addrs` and was not handed out
/// earlier in this process.
pub fn free_port_on(addrs: &[Ipv4Addr]) -> Result<u16> {
    let first = *addrs.first().context("no address given")?;
    for _ in 0..100 {
        let port = TcpListener::bind(SocketAddrV4::new(first, 0))
            .with_context(|| format!("binding {first}:0"))?
            .local_addr()?
            .port();
        let free_everywhere = addrs
            .iter()
            .all(|a| TcpListener::bind(SocketAddrV4::new(*a, port)).is_ok());
        if free_everywhere && handed_out().lock().expect("ports lock").insert(port) {
            return Ok(port);
        }
    }
    bail!("no free port on {addrs:?} after 100 tries")
}

/// A free port on 127.0.0.1.
pub fn free_port() -> Result<u16> {
    free_port_on(&[Ipv4Addr::LOCALHOST])
}

/// Local addresses with a listening TCP socket (from /proc/net/tcp).
pub fn listening_addresses() -> Result<HashSet<Ipv4Addr>> {
    let table = std::fs::read_to_string("/proc/net/tcp").context("reading /proc/net/tcp")?;
    let mut out = HashSet::new();
    for line in table.lines().skip(1) {
        let fields: Vec<&str> = line.split_whitespace().collect();
        // st 0A = LISTEN; the address is hex of the in-memory (little-endian) u32.
        if fields.get(3) != Some(&"0A") {
            continue;
        }
        let Some(hex) = fields.get(1).and_then(|a| a.split(':').next()) else {
            continue;
        };
        if let Ok(raw) = u32::from_str_radix(hex, 16) {
            out.insert(Ipv4Addr::from(raw.swap_bytes()));
        }
    }
    Ok(out)
}

/// A /24 block 127.0.B.0 (B in 1..=254) on which nothing listens, picked from
/// a random start so that concurrent runs rarely even try the same block.
/// Cassandra needs one address per node and a cluster's nodes must not meet
/// another cluster's on the same address and port.
pub fn free_block() -> Result<u8> {
    let busy = listening_addresses()?;
    let start = (std::process::id() as usize ^ nanos()) % 254;
    for i in 0..254 {
        let b = ((start + i) % 254 + 1) as u8;
        if !busy.iter().any(|a| a.octets()[..3] == [127, 0, b]) {
            return Ok(b);
        }
    }
    bail!("every loopback block 127.0.1-254.x has a listener")
}

fn nanos() -> usize {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos() as usize)
        .unwrap_or(0)
}
