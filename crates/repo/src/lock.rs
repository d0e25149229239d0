//! Session locks: who is working on the repository right now.
//!
//! There is no global exclusive lock. Each backup (and each prune or copy)
//! writes a `locks/<id>` file when it starts and rewrites it every
//! [`REFRESH`]; a lock not refreshed for [`STALE_AFTER`] belongs to a process
//! that died (SIGKILL, lost host) and is ignored. Prune reads the live locks
//! *before* it reads the snapshots, and deletes a pack only when every backup
//! that could have deduplicated against it has finished (see prune.rs); a
//! backup writes its snapshot *before* removing its lock. Together that is
//! the delayed-deletion rule that keeps concurrent backups safe.

use std::sync::{Arc, Condvar, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::crypto::Cipher;
use crate::error::{RepoError, Result};
use crate::id::Id;
use crate::repo::{FileKind, Repository};

pub const REFRESH: Duration = Duration::from_secs(120);
pub const STALE_AFTER: Duration = Duration::from_secs(600);

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LockKind {
    Backup,
    Prune,
    Copy,
    Forget,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct LockInfo {
    pub kind: LockKind,
    pub hostname: String,
    pub username: String,
    pub pid: u32,
    pub started: DateTime<Utc>,
    pub refreshed: DateTime<Utc>,
}

impl LockInfo {
    pub fn is_stale(&self, now: DateTime<Utc>) -> bool {
        now.signed_duration_since(self.refreshed).to_std().unwrap_or_default() > STALE_AFTER
    }

    /// Whether the holder is known to be gone: it ran on this host and no
    /// process with its pid exists now (killed, crashed). Elsewhere only
    /// time tells ([`is_stale`](Self::is_stale)).
    pub fn holder_is_dead(&self) -> bool {
        self.hostname == crate::hostname() && self.pid != std::process::id() && !process_exists(self.pid)
    }

    pub fn describe(&self) -> String {
        format!(
            "{:?} by {}@{} pid {} since {}",
            self.kind, self.username, self.hostname, self.pid, self.started
        )
    }
}

/// A held lock; refreshed by a background thread, removed on drop.
pub struct Lock {
    shared: Arc<Shared>,
    thread: Option<JoinHandle<()>>,
    pub info: LockInfo,
}

struct Shared {
    store: tidemark_store::DynStore,
    rt: tokio::runtime::Handle,
    cipher: Cipher,
    current: Mutex<Option<Id>>,
    stop: (Mutex<bool>, Condvar),
}

impl Shared {
    fn write(&self, info: &LockInfo) -> Result<Id> {
        let bytes = crate::repo::seal_metadata(&self.cipher, &serde_json::to_vec(info).expect("lock serialises"));
        let id = Id::of_stored(&bytes);
        self.rt
            .block_on(self.store.put(&FileKind::Lock.key(&id), bytes::Bytes::from(bytes)))?;
        Ok(id)
    }

    fn remove(&self, id: &Id) {
        if let Err(e) = self.rt.block_on(self.store.delete(&FileKind::Lock.key(id))) {
            // Harmless: the lock goes stale and is ignored, and `unlock` removes it.
            tracing::warn!("could not remove lock {id}: {e}");
        }
    }
}

impl Lock {
    pub fn acquire(repo: &Repository, kind: LockKind) -> Result<Lock> {
        let now = Utc::now();
        let info = LockInfo {
            kind,
            hostname: crate::hostname(),
            username: crate::username(),
            pid: std::process::id(),
            started: now,
            refreshed: now,
        };
        let shared = Arc::new(Shared {
            store: repo.store().clone(),
            rt: repo.runtime().clone(),
            cipher: repo.key().cipher(),
            current: Mutex::new(None),
            stop: (Mutex::new(false), Condvar::new()),
        });
        let id = shared.write(&info)?;
        *shared.current.lock().expect("poisoned") = Some(id);
        let s = shared.clone();
        let mut refreshed = info.clone();
        let thread = std::thread::Builder::new()
            .name("tidemark-lock".into())
            .spawn(move || loop {
                let stopped = {
                    let (m, cv) = &s.stop;
                    let g = m.lock().expect("poisoned");
                    // The flag is checked before waiting too: a release right
                    // after acquire would otherwise be missed and the drop
                    // would wait a whole refresh period.
                    let (g, _) = cv.wait_timeout_while(g, REFRESH, |stopped| !*stopped).expect("poisoned");
                    *g
                };
                if stopped {
                    return;
                }
                refreshed.refreshed = Utc::now();
                match s.write(&refreshed) {
                    Ok(new) => {
                        let old = s.current.lock().expect("poisoned").replace(new);
                        if let Some(old) = old {
                            s.remove(&old);
                        }
                    }
                    Err(e) => tracing::warn!("could not refresh lock: {e}"),
                }
            })
            .map_err(|e| RepoError::io("lock refresh thread", e))?;
        Ok(Lock {
            shared,
            thread: Some(thread),
            info,
        })
    }

    /// Stop refreshing and remove the lock file.
    pub fn release(mut self) {
        self.stop();
    }

    fn stop(&mut self) {
        {
            let (m, cv) = &self.shared.stop;
            *m.lock().expect("poisoned") = true;
            cv.notify_all();
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
        if let Some(id) = self.shared.current.lock().expect("poisoned").take() {
            self.shared.remove(&id);
        }
    }
}

impl Drop for Lock {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Every lock file with its content; unreadable ones are reported as `None`.
pub fn all_locks(repo: &Repository) -> Result<Vec<(Id, Option<LockInfo>)>> {
    let mut out = Vec::new();
    for (id, _) in repo.list(FileKind::Lock)? {
        let info = match repo.load_file(FileKind::Lock, &id) {
            Ok(b) => serde_json::from_slice(&b).ok(),
            Err(RepoError::Store(e)) if e.is_not_found() => continue, // removed meanwhile
            Err(_) => None,
        };
        out.push((id, info));
    }
    Ok(out)
}

/// Locks of processes that are (as far as anyone can tell) still running.
pub fn live_locks(repo: &Repository) -> Result<Vec<LockInfo>> {
    let now = Utc::now();
    Ok(all_locks(repo)?
        .into_iter()
        .filter_map(|(_, i)| i)
        .filter(|i| !i.is_stale(now))
        .collect())
}

/// Whether a process with this pid exists; where /proc is missing (not
/// Linux) nobody can tell, so it is assumed to run.
fn process_exists(pid: u32) -> bool {
    let proc = std::path::Path::new("/proc");
    !proc.join("self").exists() || proc.join(pid.to_string()).exists()
}

/// Remove stale locks and those of dead processes on this host (or, with
/// `all`, every lock file); returns how many.
pub fn remove_locks(repo: &Repository, all: bool) -> Result<usize> {
    let now = Utc::now();
    let mut n = 0;
    for (id, info) in all_locks(repo)? {
        if all || info.map(|i| i.is_stale(now) || i.holder_is_dead()).unwrap_or(true) {
            repo.delete_file(FileKind::Lock, &id)?;
            n += 1;
        }
    }
    Ok(n)
}
