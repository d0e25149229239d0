//! Checks an HDFS backup against what it recorded: its snapshot and every
//! tree are readable, every file's chunks are in the index and add up to
//! its length; with `read_data`, every chunk is read, decrypted and checked
//! against its id. Damage names the HDFS path.

use std::sync::Arc;

use serde::Serialize;
use tidemark_cluster::manifest::ClusterManifest;
use tidemark_repo::blob::BlobType;
use tidemark_repo::index::Index;
use tidemark_repo::tree::NodeKind;
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
    let index = Arc::new(repo.load_index()?);
    walk(repo, &index, &snap.tree, "", read_data, &mut r);
    Ok(r)
}

fn walk(repo: &Repository, index: &Index, tree: &Id, path: &str, read_data: bool, r: &mut VerifyReport) {
    let t = match repo.load_tree(index, tree) {
        Ok(t) => t,
        Err(e) => {
            r.damage.push((if path.is_empty() { "/".into() } else { path.into() }, format!("directory listing unreadable: {e}")));
            return;
        }
    };
    for n in &t.nodes {
        let p = format!("{path}/{}", n.name);
        match n.kind {
            NodeKind::Dir => {
                r.dirs += 1;
                match &n.subtree {
                    Some(s) => walk(repo, index, s, &p, read_data, r),
                    None => r.damage.push((p, "directory without a listing".into())),
                }
            }
            NodeKind::File => {
                r.files += 1;
                r.bytes += n.size;
                let mut len = 0u64;
                for c in &n.content {
                    r.chunks_checked += 1;
                    let Some(loc) = index.get(BlobType::Data, c) else {
                        r.damage.push((p.clone(), format!("chunk {} is missing", c.short())));
                        break;
                    };
                    len += u64::from(loc.raw_len);
                    if read_data {
                        r.chunks_read += 1;
                        if let Err(e) = repo.read_blob(index, BlobType::Data, c) {
                            r.damage.push((p.clone(), format!("chunk {}: {e}", c.short())));
                            break;
                        }
                    }
                }
                if len != n.size && r.damage.last().is_none_or(|(d, _)| d != &p) {
                    r.damage.push((p, format!("its chunks hold {len} bytes, the file has {}", n.size)));
                }
            }
            _ => {}
        }
    }
}
