//! What every adapter's `cluster verify` checks of a node snapshot's tree:
//! every listing is readable, every file's chunks are in the index and add
//! up to its length, and (reading the data) every chunk decrypts and
//! matches its id. Damage is named by the path in the tree; the adapter
//! adds its own checks (per table, per collection) on the files found.

use tidemark_repo::blob::BlobType;
use tidemark_repo::index::Index;
use tidemark_repo::tree::{Node, NodeKind};
use tidemark_repo::{Id, Repository};

#[derive(Debug, Default)]
pub struct TreeCheck {
    pub files: u64,
    pub dirs: u64,
    pub bytes: u64,
    pub chunks_checked: u64,
    pub chunks_read: u64,
    /// (path, what is wrong).
    pub damage: Vec<(String, String)>,
    /// Every file found, by path, for the adapter's own checks.
    pub found: Vec<(String, Node)>,
}

/// Walks the tree `tree` (shown as `path`), checking every file's chunks.
pub fn check_tree(repo: &Repository, index: &Index, tree: &Id, path: &str, read_data: bool, out: &mut TreeCheck) {
    let t = match repo.load_tree(index, tree) {
        Ok(t) => t,
        Err(e) => {
            out.damage.push((if path.is_empty() { "/".into() } else { path.into() }, format!("directory listing unreadable: {e}")));
            return;
        }
    };
    for n in t.nodes {
        let p = format!("{path}/{}", n.name);
        match n.kind {
            NodeKind::Dir => {
                out.dirs += 1;
                match &n.subtree {
                    Some(s) => check_tree(repo, index, s, &p, read_data, out),
                    None => out.damage.push((p, "directory without a listing".into())),
                }
            }
            NodeKind::File => {
                out.files += 1;
                out.bytes += n.size;
                check_file(repo, index, &p, &n, read_data, out);
                out.found.push((p, n));
            }
            _ => {}
        }
    }
}

fn check_file(repo: &Repository, index: &Index, path: &str, n: &Node, read_data: bool, out: &mut TreeCheck) {
    let mut len = 0u64;
    for c in &n.content {
        out.chunks_checked += 1;
        let Some(loc) = index.get(BlobType::Data, c) else {
            out.damage.push((path.to_string(), format!("chunk {} is missing", c.short())));
            return;
        };
        len += u64::from(loc.raw_len);
        if read_data {
            out.chunks_read += 1;
            if let Err(e) = repo.read_blob(index, BlobType::Data, c) {
                out.damage.push((path.to_string(), format!("chunk {}: {e}", c.short())));
                return;
            }
        }
    }
    if len != n.size {
        out.damage.push((path.to_string(), format!("its chunks hold {len} bytes, the file has {}", n.size)));
    }
}
