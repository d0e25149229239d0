//! Checks a MongoDB backup against what it recorded: every set's snapshot
//! and trees are readable and every file's chunks are in the index; with
//! `read_data`, every chunk is read and checked, and each collection's
//! documents are counted and hashed against the counts and checksums taken
//! at backup time. Damage names the replica set and the namespace.

use serde::Serialize;
use tidemark_cluster::manifest::ClusterManifest;
use tidemark_cluster::verify::{check_tree, TreeCheck};
use tidemark_repo::{Id, Repository};

use crate::dump::Docs;
use crate::error::Result;
use crate::manifest::{self as mm, SetDetail};

#[derive(Debug, Clone, Default, Serialize)]
pub struct VerifyReport {
    pub backup: String,
    pub sets: u64,
    pub collections: u64,
    pub documents: u64,
    pub chunks_checked: u64,
    /// (where, what is wrong).
    pub damage: Vec<(String, String)>,
}

impl VerifyReport {
    pub fn is_clean(&self) -> bool {
        self.damage.is_empty()
    }
}

pub fn verify(repo: &Repository, id: &Id, m: &ClusterManifest, read_data: bool) -> Result<VerifyReport> {
    let mut r = VerifyReport { backup: id.to_hex(), ..Default::default() };
    let index = repo.load_index()?;
    for n in &m.nodes {
        r.sets += 1;
        let d: SetDetail = n.detail()?;
        let snap = match repo.load_snapshot(&n.snapshot) {
            Ok(s) => s,
            Err(e) => {
                r.damage.push((n.node.clone(), format!("snapshot {} unreadable: {e}", n.snapshot.short())));
                continue;
            }
        };
        let mut t = TreeCheck::default();
        check_tree(repo, &index, &snap.tree, &n.node, read_data, &mut t);
        r.chunks_checked += t.chunks_checked;
        r.damage.append(&mut t.damage);
        let files = t.found;
        for c in &d.collections {
            r.collections += 1;
            if c.kind == "view" {
                continue;
            }
            let path = format!("{}/{}/{}/{}/{}", n.node, mm::DB_DIR, mm::encode_name(&c.db), mm::encode_name(&c.name), mm::DOCUMENTS);
            let Some((_, node)) = files.iter().find(|(p, _)| p == &path) else {
                r.damage.push((format!("{} {}", n.node, c.ns()), "its documents are not in the snapshot".into()));
                continue;
            };
            if node.size != c.bytes {
                r.damage.push((format!("{} {}", n.node, c.ns()), format!("{} bytes stored, {} recorded", node.size, c.bytes)));
                continue;
            }
            if !read_data {
                continue;
            }
            let mut docs = Docs::new(repo, &index, &node.content, path.clone());
            let mut h = blake3::Hasher::new();
            let mut count = 0u64;
            let outcome = loop {
                match docs.next_doc() {
                    Ok(Some(doc)) => {
                        h.update(doc.as_bytes());
                        count += 1;
                    }
                    Ok(None) => break Ok(()),
                    Err(e) => break Err(e),
                }
            };
            let place = format!("{} {}", n.node, c.ns());
            match outcome {
                Err(e) => r.damage.push((place, e.to_string())),
                Ok(()) if count != c.documents => r.damage.push((place, format!("{count} documents read, {} recorded", c.documents))),
                Ok(()) if h.finalize().to_hex().as_str() != c.checksum => {
                    r.damage.push((place, "checksum differs from the one taken at backup time".into()))
                }
                Ok(()) => r.documents += count,
            }
        }
    }
    Ok(r)
}
