//! Directory trees written as soon as they are complete, so a backup of a
//! namespace of any size holds only the directories still in progress.
//!
//! The walk hands over each listed directory with the place of its entry in
//! the parent. A directory is complete when every file of it that had to be
//! read has its chunks (or was left out, unreadable) and every
//! subdirectory's tree is written (or was left out, unlisted); its tree is
//! then written at once, its entries dropped, and its parent told. The
//! memory a walk needs is therefore the directories between the root and
//! the work in flight, not the namespace.

use tidemark_repo::tree::{Node, NodeKind, Tree};
use tidemark_repo::Id;

use super::walk::{set_tree_totals, tree_totals, DirWork, Todo};
use crate::api::ReadResult;
use crate::manifest::attr;

/// Where a directory's entry sits in its parent: (directory index, entry index).
pub type Parent = Option<(usize, usize)>;

enum Slot {
    /// Announced by its parent's listing, not listed yet.
    Waiting,
    Open { dir: DirWork, parent: Parent, outstanding: usize },
    Stored,
}

/// The directories of one root in progress, by the walk's numbering (the
/// root is 0).
#[derive(Default)]
pub struct Assembly {
    slots: Vec<Slot>,
    root: Option<(Id, (u64, u64))>,
    /// Entries held in open directories (for the peak figure).
    held: usize,
    pub peak_held: usize,
}

/// A file of an open directory that the agents must read.
#[derive(Debug, Clone)]
pub struct ToRead {
    pub dir: usize,
    pub entry: usize,
    /// Path relative to the root.
    pub rel: String,
    pub length: u64,
}

pub type Save<'a> = dyn Fn(Tree) -> tidemark_repo::Result<Id> + 'a;

impl Assembly {
    /// A directory listed by the walk. Returns its files to read; a
    /// directory with none and no subdirectories to wait for is written at
    /// once.
    pub fn listed(&mut self, index: usize, parent: Parent, dir: DirWork, save: &Save<'_>) -> tidemark_repo::Result<Vec<ToRead>> {
        let mut reads = Vec::new();
        let mut outstanding = 0;
        for (e, entry) in dir.entries.iter().enumerate() {
            match entry.todo {
                Todo::Read { length } => {
                    outstanding += 1;
                    reads.push(ToRead { dir: index, entry: e, rel: super::walk::join(&dir.rel, &entry.node.name), length });
                }
                Todo::Dir(j) => {
                    outstanding += 1;
                    self.ensure(j);
                }
                Todo::Done | Todo::Skip => {}
            }
        }
        self.ensure(index);
        self.held += dir.entries.len();
        self.peak_held = self.peak_held.max(self.held);
        self.slots[index] = Slot::Open { dir, parent, outstanding };
        if outstanding == 0 {
            self.complete(index, save)?;
        }
        Ok(reads)
    }

    /// A directory the backup user may not list: left out of its parent.
    pub fn unlisted(&mut self, index: usize, parent: Parent, save: &Save<'_>) -> tidemark_repo::Result<()> {
        self.ensure(index);
        self.slots[index] = Slot::Stored;
        match parent {
            Some((p, e)) => self.settle(p, e, None, save),
            None => Ok(()),
        }
    }

    /// The agents' answer for a file: its chunks, or an error (the file is
    /// then left out; the caller names it).
    pub fn read(&mut self, r: &ToRead, result: ReadResult, save: &Save<'_>) -> tidemark_repo::Result<()> {
        let done = match result.error {
            Some(_) => None,
            None => {
                let mut extra = Vec::new();
                if let Some(c) = result.checksum {
                    extra.push((attr::CHECKSUM.to_string(), format!("{}:{}", c.algorithm, c.bytes)));
                }
                Some(Filled::File { content: result.content, extra })
            }
        };
        self.settle(r.dir, r.entry, done, save)
    }

    /// The root's tree and totals, once everything is written.
    pub fn finish(self) -> Option<(Id, (u64, u64))> {
        self.root
    }

    fn ensure(&mut self, index: usize) {
        while self.slots.len() <= index {
            self.slots.push(Slot::Waiting);
        }
    }

    /// One outstanding entry of directory `d` is settled: filled in, or
    /// left out (`None`).
    fn settle(&mut self, d: usize, e: usize, fill: Option<Filled>, save: &Save<'_>) -> tidemark_repo::Result<()> {
        let Slot::Open { dir, outstanding, .. } = &mut self.slots[d] else {
            unreachable!("an entry of a directory that is not open");
        };
        let entry = &mut dir.entries[e];
        match fill {
            None => entry.todo = Todo::Skip,
            Some(Filled::File { content, extra }) => {
                entry.node.content = content;
                entry.node.extra.extend(extra);
                entry.todo = Todo::Done;
            }
            Some(Filled::Dir { subtree, totals }) => {
                entry.node.subtree = Some(subtree);
                set_tree_totals(&mut entry.node, totals);
                entry.todo = Todo::Done;
            }
        }
        *outstanding -= 1;
        if *outstanding == 0 {
            self.complete(d, save)?;
        }
        Ok(())
    }

    /// Writes directory `d`'s tree and tells its parent, up as far as
    /// directories complete.
    fn complete(&mut self, d: usize, save: &Save<'_>) -> tidemark_repo::Result<()> {
        let Slot::Open { dir, parent, .. } = std::mem::replace(&mut self.slots[d], Slot::Stored) else {
            unreachable!("completing a directory that is not open");
        };
        self.held -= dir.entries.len();
        let mut nodes: Vec<Node> = Vec::with_capacity(dir.entries.len());
        let mut totals = (0u64, 0u64);
        for e in dir.entries {
            if matches!(e.todo, Todo::Skip) {
                continue;
            }
            let (f, b) = match e.node.kind {
                NodeKind::File => (1, e.node.size),
                NodeKind::Dir => tree_totals(&e.node),
                _ => (0, 0),
            };
            totals = (totals.0 + f, totals.1 + b);
            nodes.push(e.node);
        }
        let id = save(Tree { nodes })?;
        match parent {
            Some((p, e)) => self.settle(p, e, Some(Filled::Dir { subtree: id, totals }), save),
            None => {
                self.root = Some((id, totals));
                Ok(())
            }
        }
    }
}

enum Filled {
    File { content: Vec<Id>, extra: Vec<(String, String)> },
    Dir { subtree: Id, totals: (u64, u64) },
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backup::walk::{empty_node, Entry};

    fn dir(name: &str) -> Node {
        let mut d = empty_node(name);
        d.kind = NodeKind::Dir;
        d
    }

    fn file(name: &str, size: u64) -> Node {
        let mut f = empty_node(name);
        f.size = size;
        f
    }

    #[test]
    fn trees_are_written_as_they_complete_children_first() {
        let saved = std::cell::RefCell::new(Vec::<Tree>::new());
        let save = |t: Tree| {
            let mut s = saved.borrow_mut();
            s.push(t);
            Ok(Id([s.len() as u8; 32]))
        };
        let mut a = Assembly::default();
        // root: d/ (listed later), secret/ (unlisted), big (to read), bad (unreadable)
        let root = DirWork {
            rel: String::new(),
            entries: vec![
                Entry { node: dir("d"), todo: Todo::Dir(1) },
                Entry { node: dir("secret"), todo: Todo::Dir(2) },
                Entry { node: file("big", 10), todo: Todo::Read { length: 10 } },
                Entry { node: file("bad", 4), todo: Todo::Read { length: 4 } },
            ],
        };
        let reads = a.listed(0, None, root, &save).unwrap();
        assert_eq!(reads.iter().map(|r| r.rel.as_str()).collect::<Vec<_>>(), ["big", "bad"]);
        assert!(saved.borrow().is_empty(), "the root waits for its entries");
        // d holds one file already done: written at once.
        let d = DirWork { rel: "d".into(), entries: vec![Entry { node: file("f", 3), todo: Todo::Done }] };
        assert!(a.listed(1, Some((0, 0)), d, &save).unwrap().is_empty());
        assert_eq!(saved.borrow().len(), 1);
        a.unlisted(2, Some((0, 1)), &save).unwrap();
        let ok = ReadResult { content: vec![Id([9; 32])], size: 10, ..Default::default() };
        a.read(&reads[0], ok, &save).unwrap();
        assert_eq!(a.peak_held, 5);
        let failed = ReadResult { error: Some("permission denied".into()), ..Default::default() };
        a.read(&reads[1], failed, &save).unwrap();
        let (root_id, totals) = a.finish().expect("the root is written");
        let saved = saved.into_inner();
        assert_eq!(saved.len(), 2);
        let top = &saved[1];
        assert_eq!(top.nodes.iter().map(|n| n.name.as_str()).collect::<Vec<_>>(), ["d", "big"], "unlisted and unreadable entries are left out");
        assert_eq!(top.nodes[0].subtree, Some(Id([1; 32])));
        assert_eq!(tree_totals(&top.nodes[0]), (1, 3));
        assert_eq!(top.nodes[1].content, vec![Id([9; 32])]);
        assert_eq!((root_id, totals), (Id([2; 32]), (2, 13)));
    }
}
