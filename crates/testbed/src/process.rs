//! Child processes: each in its own process group, output to a log file under
//! the root, recorded with enough identity (pid + kernel start time) that another
//! process can later stop it without hitting a recycled pid.

use std::collections::HashMap;
use std::fs::{self, OpenOptions};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use nix::sys::signal::{killpg, Signal};
use nix::unistd::Pid;
use serde::{Deserialize, Serialize};

/// One started process as kept in the root's state file.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "kebab-case")]
pub struct ProcessRecord {
    /// Name inside its cluster, e.g. `node2`.
    pub name: String,
    pub pid: i32,
    /// Process group id; equal to `pid` since every child leads its own group.
    pub pgid: i32,
    /// Kernel start time (clock ticks since boot, field 22 of /proc/PID/stat):
    /// tells our process apart from a later one that got the same pid.
    pub start_time: u64,
    pub log: PathBuf,
    #[serde(default)]
    pub ports: Vec<u16>,
    pub command: Vec<String>,
}

/// Children spawned by this process, kept so that stopping one reaps it instead
/// of leaving a zombie until the test binary exits.
fn children() -> &'static Mutex<HashMap<i32, Child>> {
    static CHILDREN: OnceLock<Mutex<HashMap<i32, Child>>> = OnceLock::new();
    CHILDREN.get_or_init(|| Mutex::new(HashMap::new()))
}

/// Spawns `cmd` in a new process group with stdin closed and stdout/stderr
/// appended to `log`.
pub fn spawn(name: &str, mut cmd: Command, log: &Path, ports: Vec<u16>) -> Result<ProcessRecord> {
    if let Some(dir) = log.parent() {
        fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    let out = OpenOptions::new()
        .create(true)
        .append(true)
        .open(log)
        .with_context(|| format!("opening log {}", log.display()))?;
    let err = out.try_clone()?;
    let mut command = vec![cmd.get_program().to_string_lossy().into_owned()];
    command.extend(cmd.get_args().map(|a| a.to_string_lossy().into_owned()));
    cmd.stdin(Stdio::null())
        .stdout(out)
        .stderr(err)
        .process_group(0);
    let child = cmd
        .spawn()
        .with_context(|| format!("starting {name}: {}", command.join(" ")))?;
    let pid = i32::try_from(child.id()).context("pid out of range")?;
    let start_time = start_time(pid).with_context(|| format!("{name} (pid {pid}) died at once"))?;
    children().lock().expect("children lock").insert(pid, child);
    Ok(ProcessRecord {
        name: name.to_string(),
        pid,
        pgid: pid,
        start_time,
        log: log.to_path_buf(),
        ports,
        command,
    })
}

/// Start time of a live (non-zombie) process, `None` if it is gone.
fn start_time(pid: i32) -> Option<u64> {
    let stat = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name may hold spaces and parentheses: fields start after the last ')'.
    let rest = &stat[stat.rfind(')')? + 2..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    if matches!(fields.first(), Some(&"Z") | Some(&"X")) {
        return None;
    }
    fields.get(19)?.parse().ok()
}

impl ProcessRecord {
    /// True while the recorded process (not a successor with the same pid) runs.
    pub fn is_alive(&self) -> bool {
        reap(self.pid);
        start_time(self.pid) == Some(self.start_time)
    }

    /// SIGTERM to the whole group, SIGKILL after `grace`; returns once the
    /// leader is gone. Members other than the leader get the same signals.
    pub fn stop(&self, grace: Duration) -> Result<()> {
        if !self.is_alive() {
            // The leader may be gone while members of its group live on.
            let _ = killpg(Pid::from_raw(self.pgid), Signal::SIGKILL);
            return Ok(());
        }
        let group = Pid::from_raw(self.pgid);
        let _ = killpg(group, Signal::SIGTERM);
        let deadline = Instant::now() + grace;
        while self.is_alive() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(100));
        }
        let _ = killpg(group, Signal::SIGKILL);
        let deadline = Instant::now() + Duration::from_secs(10);
        while self.is_alive() {
            if Instant::now() > deadline {
                bail!("{} (pid {}) survived SIGKILL", self.name, self.pid);
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        Ok(())
    }
}

/// Waits for our own child if it exited, so it does not linger as a zombie.
fn reap(pid: i32) {
    let mut map = children().lock().expect("children lock");
    if let Some(child) = map.get_mut(&pid) {
        if matches!(child.try_wait(), Ok(Some(_))) {
            map.remove(&pid);
        }
    }
}

/// Last `lines` lines of a log file, for error messages.
pub fn log_tail(log: &Path, lines: usize) -> String {
    match fs::read(log) {
        Ok(bytes) => {
            let text = String::from_utf8_lossy(&bytes);
            let all: Vec<&str> = text.lines().collect();
            all[all.len().saturating_sub(lines)..].join("\n")
        }
        Err(e) => format!("(cannot read {}: {e})", log.display()),
    }
}
