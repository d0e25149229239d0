//! Turning filesystem metadata into tree nodes, and back (owner, mode, times).

use std::collections::HashMap;
use std::ffi::OsStr;
use std::fs::Metadata;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::Path;
use std::sync::Mutex;

use crate::tree::{Node, NodeKind};

/// Caches uid/gid to name lookups (one passwd lookup per id per run).
#[derive(Default)]
pub struct Names {
    users: Mutex<HashMap<u32, String>>,
    groups: Mutex<HashMap<u32, String>>,
}

impl Names {
    pub fn user(&self, uid: u32) -> String {
        self.users
            .lock()
            .expect("poisoned")
            .entry(uid)
            .or_insert_with(|| {
                nix::unistd::User::from_uid(uid.into())
                    .ok()
                    .flatten()
                    .map(|u| u.name)
                    .unwrap_or_default()
            })
            .clone()
    }

    pub fn group(&self, gid: u32) -> String {
        self.groups
            .lock()
            .expect("poisoned")
            .entry(gid)
            .or_insert_with(|| {
                nix::unistd::Group::from_gid(gid.into())
                    .ok()
                    .flatten()
                    .map(|g| g.name)
                    .unwrap_or_default()
            })
            .clone()
    }
}

pub fn kind_of(m: &Metadata) -> NodeKind {
    let t = m.file_type();
    if t.is_dir() {
        NodeKind::Dir
    } else if t.is_symlink() {
        NodeKind::Symlink
    } else if t.is_fifo() {
        NodeKind::Fifo
    } else if t.is_socket() {
        NodeKind::Socket
    } else if t.is_char_device() {
        NodeKind::Chardev
    } else if t.is_block_device() {
        NodeKind::Blockdev
    } else {
        NodeKind::File
    }
}

fn ns(secs: i64, nsec: i64) -> i64 {
    secs.saturating_mul(1_000_000_000).saturating_add(nsec)
}

/// A node with the metadata of `m` (content, subtree and target left empty).
pub fn node_from(name: &OsStr, m: &Metadata, names: &Names) -> Node {
    let kind = kind_of(m);
    let mut n = Node {
        name: String::new(),
        name_bytes: None,
        kind,
        mode: m.mode(),
        uid: m.uid(),
        gid: m.gid(),
        user: names.user(m.uid()),
        group: names.group(m.gid()),
        mtime_ns: ns(m.mtime(), m.mtime_nsec()),
        atime_ns: ns(m.atime(), m.atime_nsec()),
        ctime_ns: ns(m.ctime(), m.ctime_nsec()),
        inode: m.ino(),
        device: m.dev(),
        links: m.nlink(),
        rdev: if matches!(kind, NodeKind::Chardev | NodeKind::Blockdev) { m.rdev() } else { 0 },
        size: if kind == NodeKind::File { m.size() } else { 0 },
        content: Vec::new(),
        // Fewer 512-byte blocks allocated than the size needs: it has holes.
        sparse: kind == NodeKind::File && m.blocks().saturating_mul(512) < m.size(),
        subtree: None,
        target: None,
        target_bytes: None,
        extra: Default::default(),
    };
    n.set_name(name);
    n
}

pub fn set_link_target(n: &mut Node, target: &Path) {
    use std::os::unix::ffi::OsStrExt;
    let t = target.as_os_str();
    match t.to_str() {
        Some(s) => n.target = Some(s.to_string()),
        None => {
            n.target = Some(t.to_string_lossy().into_owned());
            n.target_bytes = Some(t.as_bytes().to_vec());
        }
    }
}

/// Restore owner (when running as root, or when it does not change),
/// permission bits and times of `path` from `n`. Symlinks get owner and times
/// only (Linux has no symlink modes).
pub fn apply_metadata(path: &Path, n: &Node, as_root: bool) -> std::io::Result<()> {
    if as_root {
        std::os::unix::fs::lchown(path, Some(n.uid), Some(n.gid))?;
    }
    if n.kind != NodeKind::Symlink {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(n.mode & 0o7777))?;
    }
    let at = filetime::FileTime::from_unix_time(n.atime_ns.div_euclid(1_000_000_000), n.atime_ns.rem_euclid(1_000_000_000) as u32);
    let mt = filetime::FileTime::from_unix_time(n.mtime_ns.div_euclid(1_000_000_000), n.mtime_ns.rem_euclid(1_000_000_000) as u32);
    filetime::set_symlink_file_times(path, at, mt)
}
