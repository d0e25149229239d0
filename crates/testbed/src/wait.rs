//! Readiness polling: a check retried until it holds or time runs out, and on
//! failure an error carrying the tail of every relevant log.

use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{bail, Result};

use crate::process::{log_tail, ProcessRecord};

/// Lines of each log shown when a readiness check fails.
const TAIL_LINES: usize = 80;

/// Polls `check` every 250 ms until it returns `Ok(true)`. An `Err` from the
/// check, a dead watched process or the timeout ends the wait with an error
/// that includes the last lines of `logs` (and of a watched process that died).
pub fn wait_for(
    what: &str,
    timeout: Duration,
    watched: &[&ProcessRecord],
    logs: &[PathBuf],
    mut check: impl FnMut() -> Result<bool>,
) -> Result<()> {
    let start = Instant::now();
    let mut logs: Vec<PathBuf> = logs.to_vec();
    let failure = loop {
        match check() {
            Ok(true) => return Ok(()),
            Ok(false) => {}
            Err(e) => break format!("{what}: check failed: {e:#}"),
        }
        if let Some(dead) = watched.iter().find(|p| !p.is_alive()) {
            if !logs.contains(&dead.log) {
                logs.insert(0, dead.log.clone());
            }
            break format!("{what}: {} (pid {}) exited", dead.name, dead.pid);
        }
        if start.elapsed() > timeout {
            break format!("{what}: not ready after {:?}", timeout);
        }
        std::thread::sleep(Duration::from_millis(250));
    };
    let mut message = failure;
    for log in &logs {
        message.push_str(&format!(
            "\n--- last {TAIL_LINES} lines of {} ---\n{}",
            log.display(),
            log_tail(log, TAIL_LINES)
        ));
    }
    bail!(message)
}

/// True if something accepts TCP connections at `addr`.
pub fn tcp_open(addr: SocketAddr) -> bool {
    TcpStream::connect_timeout(&addr, Duration::from_millis(500)).is_ok()
}

/// True if the file contains `needle` (a missing file does not, yet).
pub fn log_contains(path: &Path, needle: &str) -> bool {
    std::fs::read(path)
        .map(|b| String::from_utf8_lossy(&b).contains(needle))
        .unwrap_or(false)
}
