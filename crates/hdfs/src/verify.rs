//! Checks an HDFS backup against what it recorded: its snapshot and every
//! tree are readable, every file's chunks are in the index and add up to
//! its length; with `read_data`, every chunk is read, decrypted and checked
//! against its id. Damage names the HDFS path.

use serde::Serialize;
use tidemark_cluster::manifest::ClusterManifest;
use tidemark_cluster::verify::{check_tree, TreeCheck};
use tidemark_repo::{Id, Repository};

use crate::error::{HdfsError, Result};

#[derive(Debug, Clone, Default, Serialize)]
pub struct VerifyReport {
    pub backup: String,
    pub files: u64,
    pub dirs: u64,
    pub bytes: u64,
    pub chunks_checked: u64,
    pub chunks_read: u64,
    /// (path, what is wrong).
    pub damage: Vec<(String, String)>,
}

impl VerifyReport {
    pub fn is_clean(&self) -> bool {
        self.damage.is_empty()
    }
}

pub fn verify(repo: &Repository, id: &Id, m: &ClusterManifest, read_data: bool) -> Result<VerifyReport> {
    let mut r = VerifyReport { backup: id.to_hex(), ..Default::default() };
    let node = m.nodes.first().ok_or_else(|| HdfsError::Invalid("the manifest has no namespace snapshot".into()))?;
    let snap = match repo.load_snapshot(&node.snapshot) {
        Ok(s) => s,
        Err(e) => {
            r.damage.push(("/".into(), format!("snapshot {} unreadable: {e}", node.snapshot.short())));
            return Ok(r);
        }
    };
    let index = repo.load_index()?;
    let mut t = TreeCheck::default();
    check_tree(repo, &index, &snap.tree, "", read_data, &mut t);
    r.files = t.files;
    r.dirs = t.dirs;
    r.bytes = t.bytes;
    r.chunks_checked = t.chunks_checked;
    r.chunks_read = t.chunks_read;
    r.damage = t.damage;
    Ok(r)
}
