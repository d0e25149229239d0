//! Differences between two snapshots, found by walking both trees side by
//! side. Subtrees with equal ids are the same directory down to the last
//! byte and are not loaded: that is what makes diff of two similar large
//! snapshots cheap.

use std::path::{Path, PathBuf};

use serde::Serialize;

use super::{Visit, Walker};
use crate::error::Result;
use crate::id::Id;
use crate::index::Index;
use crate::repo::Repository;
use crate::tree::{Node, NodeKind};

/// How a path differs between two snapshots.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Change {
    /// Only in the second snapshot.
    Added,
    /// Only in the first snapshot.
    Removed,
    /// Content (or, for links and devices, target) differs, or the type.
    Modified,
    /// Same content; mode, owner or modification time differ.
    Metadata,
}

impl Change {
    pub fn symbol(self) -> char {
        match self {
            Change::Added => '+',
            Change::Removed => '-',
            Change::Modified => 'M',
            Change::Metadata => 'U',
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct DiffEntry {
    pub path: PathBuf,
    pub change: Change,
    /// The type in the second snapshot (in the first when removed).
    #[serde(rename = "type")]
    pub kind: NodeKind,
    pub size_before: Option<u64>,
    pub size_after: Option<u64>,
}

/// Counts of changed paths, and content bytes: `bytes_added` is the size of
/// added files plus the new size of modified files, `bytes_removed` the size
/// of removed files plus the old size of modified files.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct DiffSummary {
    pub added: u64,
    pub removed: u64,
    pub modified: u64,
    pub metadata: u64,
    pub bytes_added: u64,
    pub bytes_removed: u64,
}

/// Compare two snapshot trees, calling `f` for each difference in path
/// order. Subtrees with equal ids are identical and are not loaded.
pub fn diff(
    repo: &Repository,
    index: &Index,
    a: &Id,
    b: &Id,
    f: &mut dyn FnMut(DiffEntry) -> Result<()>,
) -> Result<DiffSummary> {
    let mut d = Differ {
        w: Walker::new(repo, index),
        sum: DiffSummary::default(),
        f,
    };
    d.trees(Path::new("/"), a, b)?;
    Ok(d.sum)
}

struct Differ<'a, 'f> {
    w: Walker<'a>,
    sum: DiffSummary,
    f: &'f mut dyn FnMut(DiffEntry) -> Result<()>,
}

fn file_size(n: &Node) -> Option<u64> {
    (n.kind == NodeKind::File).then_some(n.size)
}

fn same_metadata(x: &Node, y: &Node) -> bool {
    (x.mode, x.uid, x.gid, x.mtime_ns, &x.user, &x.group)
        == (y.mode, y.uid, y.gid, y.mtime_ns, &y.user, &y.group)
}

fn same_content(x: &Node, y: &Node) -> bool {
    match x.kind {
        NodeKind::File => x.size == y.size && x.content == y.content,
        NodeKind::Symlink => x.target_os() == y.target_os(),
        NodeKind::Chardev | NodeKind::Blockdev => x.rdev == y.rdev,
        _ => true,
    }
}

impl Differ<'_, '_> {
    fn emit(
        &mut self,
        path: PathBuf,
        change: Change,
        before: Option<&Node>,
        after: Option<&Node>,
    ) -> Result<()> {
        let (size_before, size_after) = (before.and_then(file_size), after.and_then(file_size));
        let s = &mut self.sum;
        match change {
            Change::Added => s.added += 1,
            Change::Removed => s.removed += 1,
            Change::Modified => s.modified += 1,
            Change::Metadata => s.metadata += 1,
        }
        if change != Change::Metadata {
            s.bytes_added += size_after.unwrap_or(0);
            s.bytes_removed += size_before.unwrap_or(0);
        }
        let kind = after.or(before).expect("one side exists").kind;
        (self.f)(DiffEntry {
            path,
            change,
            kind,
            size_before,
            size_after,
        })
    }

    /// Report everything below a directory that exists on one side only.
    fn one_sided(&mut self, dir: &Path, n: &Node, change: Change) -> Result<()> {
        let Some(sub) = n.subtree.filter(|_| n.kind == NodeKind::Dir) else {
            return Ok(());
        };
        let mut found = Vec::new();
        self.w.walk_below(dir, &sub, &mut |p: &Path, n: &Node| {
            found.push((p.to_path_buf(), n.clone()));
            Ok(Visit::Descend)
        })?;
        for (p, n) in found {
            let (before, after) = if change == Change::Added {
                (None, Some(&n))
            } else {
                (Some(&n), None)
            };
            self.emit(p, change, before, after)?;
        }
        Ok(())
    }

    fn trees(&mut self, dir: &Path, a: &Id, b: &Id) -> Result<()> {
        if a == b {
            return Ok(());
        }
        let mut both = self.w.load_many(&[*a, *b])?;
        let tb = both.pop().expect("two trees");
        let ta = both.pop().expect("two trees");
        let (mut i, mut j) = (0, 0);
        while i < ta.nodes.len() || j < tb.nodes.len() {
            let (x, y) = (ta.nodes.get(i), tb.nodes.get(j));
            let order = match (x, y) {
                (Some(x), Some(y)) => x.name_os().cmp(&y.name_os()),
                (Some(_), None) => std::cmp::Ordering::Less,
                _ => std::cmp::Ordering::Greater,
            };
            match order {
                std::cmp::Ordering::Less => {
                    let x = x.expect("left side");
                    let p = dir.join(x.name_os());
                    self.emit(p.clone(), Change::Removed, Some(x), None)?;
                    self.one_sided(&p, x, Change::Removed)?;
                    i += 1;
                }
                std::cmp::Ordering::Greater => {
                    let y = y.expect("right side");
                    let p = dir.join(y.name_os());
                    self.emit(p.clone(), Change::Added, None, Some(y))?;
                    self.one_sided(&p, y, Change::Added)?;
                    j += 1;
                }
                std::cmp::Ordering::Equal => {
                    let (x, y) = (x.expect("both"), y.expect("both"));
                    self.pair(dir.join(x.name_os()), x, y)?;
                    i += 1;
                    j += 1;
                }
            }
        }
        Ok(())
    }

    fn pair(&mut self, p: PathBuf, x: &Node, y: &Node) -> Result<()> {
        if x.kind != y.kind {
            self.emit(p.clone(), Change::Modified, Some(x), Some(y))?;
            self.one_sided(&p, x, Change::Removed)?;
            return self.one_sided(&p, y, Change::Added);
        }
        if !same_content(x, y) {
            self.emit(p.clone(), Change::Modified, Some(x), Some(y))?;
        } else if !same_metadata(x, y) {
            self.emit(p.clone(), Change::Metadata, Some(x), Some(y))?;
        }
        match (x.kind, x.subtree, y.subtree) {
            (NodeKind::Dir, Some(s), Some(t)) => self.trees(&p, &s, &t),
            (NodeKind::Dir, Some(_), None) => self.one_sided(&p, x, Change::Removed),
            (NodeKind::Dir, None, Some(_)) => self.one_sided(&p, y, Change::Added),
            _ => Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::walk::tests::TestRepo;

    #[test]
    fn diff_reports_added_removed_modified_and_metadata() {
        use std::os::unix::fs::PermissionsExt;
        let t = TestRepo::new();
        let src = t.dir.path().join("src");
        std::fs::create_dir_all(src.join("keep/deep")).unwrap();
        std::fs::create_dir_all(src.join("gone")).unwrap();
        std::fs::write(src.join("keep/deep/same"), b"same").unwrap();
        std::fs::write(src.join("gone/x"), b"12345").unwrap();
        std::fs::write(src.join("edit"), b"before").unwrap();
        std::fs::write(src.join("chmod"), b"c").unwrap();
        std::fs::write(src.join("becomes_dir"), b"bd").unwrap();
        let (_, a) = t.backup(&[&src]);
        std::fs::remove_dir_all(src.join("gone")).unwrap();
        std::fs::write(src.join("edit"), b"after!!").unwrap();
        std::fs::set_permissions(src.join("chmod"), std::fs::Permissions::from_mode(0o600))
            .unwrap();
        std::fs::remove_file(src.join("becomes_dir")).unwrap();
        std::fs::create_dir(src.join("becomes_dir")).unwrap();
        std::fs::write(src.join("becomes_dir/inner"), b"in").unwrap();
        std::fs::write(src.join("new"), b"0123456789").unwrap();
        let (_, b) = t.backup(&[&src]);
        let index = t.repo.load_index().unwrap();
        let mut got = Vec::new();
        let sum = diff(&t.repo, &index, &a.tree, &b.tree, &mut |e| {
            got.push(e);
            Ok(())
        })
        .unwrap();
        let rel = |e: &DiffEntry| {
            e.path
                .strip_prefix(&src)
                .map(|p| p.display().to_string())
                .unwrap_or_default()
        };
        let mut files: Vec<(String, char)> = got
            .iter()
            .filter(|e| !(e.kind == NodeKind::Dir && e.change == Change::Metadata))
            .map(|e| (rel(e), e.change.symbol()))
            .collect();
        files.sort();
        let want = [
            ("becomes_dir", 'M'),
            ("becomes_dir/inner", '+'),
            ("chmod", 'U'),
            ("edit", 'M'),
            ("gone", '-'),
            ("gone/x", '-'),
            ("new", '+'),
        ];
        let want: Vec<(String, char)> = want.iter().map(|(p, c)| (p.to_string(), *c)).collect();
        assert_eq!(files, want);
        // Only the changed directory (and its ancestors) show up as metadata changes.
        assert!(got
            .iter()
            .filter(|e| e.kind == NodeKind::Dir && e.change == Change::Metadata)
            .all(|e| src.starts_with(&e.path)));
        assert_eq!((sum.added, sum.removed, sum.modified), (2, 2, 2));
        assert_eq!(sum.bytes_added, 10 + 2 + 7);
        assert_eq!(sum.bytes_removed, 5 + 6 + 2);
        // Identical snapshots: nothing.
        let none = diff(&t.repo, &index, &a.tree, &a.tree, &mut |_| {
            panic!("no change expected")
        })
        .unwrap();
        assert_eq!(none, DiffSummary::default());
    }
}
