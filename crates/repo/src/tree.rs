//! Trees: one directory listing per `Tree` blob, JSON, nodes sorted by name.
//!
//! The encoding is deterministic (sorted nodes, fixed field order), so an
//! unchanged directory produces the same blob id and is stored once.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::error::{RepoError, Result};
use crate::id::Id;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum NodeKind {
    File,
    Dir,
    Symlink,
    Fifo,
    Socket,
    Chardev,
    Blockdev,
}

/// One entry of a directory, with its metadata.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Node {
    /// The name when it is valid UTF-8; otherwise the lossy form, with the
    /// exact bytes in `name_bytes`.
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none", with = "opt_hex")]
    pub name_bytes: Option<Vec<u8>>,
    #[serde(rename = "type")]
    pub kind: NodeKind,
    /// Full st_mode (type and permission bits).
    pub mode: u32,
    pub uid: u32,
    pub gid: u32,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub user: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub group: String,
    /// Nanoseconds since the Unix epoch.
    pub mtime_ns: i64,
    pub atime_ns: i64,
    pub ctime_ns: i64,
    pub inode: u64,
    pub device: u64,
    pub links: u64,
    /// Device number of character and block devices.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub rdev: u64,
    #[serde(default)]
    pub size: u64,
    /// Files: the data blobs of the content, in order.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub content: Vec<Id>,
    /// Files with holes (allocated less than their size) are restored sparse.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub sparse: bool,
    /// Directories: the tree blob of the listing.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub subtree: Option<Id>,
    /// Symlinks: the target, exactly as stored (bytes when not UTF-8).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none", with = "opt_hex")]
    pub target_bytes: Option<Vec<u8>>,
    /// Attributes a data store has beyond a POSIX file's (HDFS: replication,
    /// block size, storage and erasure-coding policy, ACL, xattrs, file id,
    /// checksum), as the adapter that wrote the tree names them. Absent for
    /// file-tree backups, so their tree blobs are unchanged by its addition.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub extra: BTreeMap<String, String>,
}

fn is_zero(v: &u64) -> bool {
    *v == 0
}

impl Node {
    /// A node with only a name and a kind; every other field zero or empty
    /// (adapters that build trees from a store's own metadata fill the rest).
    pub fn new(name: &str, kind: NodeKind) -> Node {
        Node {
            name: name.to_string(),
            name_bytes: None,
            kind,
            mode: 0,
            uid: 0,
            gid: 0,
            user: String::new(),
            group: String::new(),
            mtime_ns: 0,
            atime_ns: 0,
            ctime_ns: 0,
            inode: 0,
            device: 0,
            links: 1,
            rdev: 0,
            size: 0,
            content: Vec::new(),
            sparse: false,
            subtree: None,
            target: None,
            target_bytes: None,
            extra: Default::default(),
        }
    }

    pub fn name_os(&self) -> std::ffi::OsString {
        use std::os::unix::ffi::OsStringExt;
        match &self.name_bytes {
            Some(b) => std::ffi::OsString::from_vec(b.clone()),
            None => self.name.clone().into(),
        }
    }

    /// The exact name bytes, without allocating (the sort and search key).
    pub fn name_key(&self) -> &[u8] {
        self.name_bytes.as_deref().unwrap_or(self.name.as_bytes())
    }

    pub fn set_name(&mut self, name: &std::ffi::OsStr) {
        use std::os::unix::ffi::OsStrExt;
        match name.to_str() {
            Some(s) => {
                self.name = s.to_string();
                self.name_bytes = None;
            }
            None => {
                self.name = name.to_string_lossy().into_owned();
                self.name_bytes = Some(name.as_bytes().to_vec());
            }
        }
    }

    pub fn target_os(&self) -> Option<std::ffi::OsString> {
        use std::os::unix::ffi::OsStringExt;
        match (&self.target_bytes, &self.target) {
            (Some(b), _) => Some(std::ffi::OsString::from_vec(b.clone())),
            (None, Some(t)) => Some(t.into()),
            _ => None,
        }
    }

    /// Whether the file content is surely unchanged since `self` was
    /// recorded: the incremental-backup test (path is matched by the caller).
    /// `ignore_ctime`: a new hard link changes a file's ctime but not its
    /// content; immutable files reached through fresh links (Cassandra
    /// snapshots) are matched on the rest.
    pub fn same_file_as(&self, now: &Node, ignore_ctime: bool) -> bool {
        self.kind == NodeKind::File
            && now.kind == NodeKind::File
            && self.size == now.size
            && self.mtime_ns == now.mtime_ns
            && (ignore_ctime || self.ctime_ns == now.ctime_ns)
            && self.inode == now.inode
            && self.device == now.device
    }
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Tree {
    pub nodes: Vec<Node>,
}

impl Tree {
    /// Sort by name bytes (the order of `OsStr` on Unix).
    pub fn sort(&mut self) {
        self.nodes.sort_by(|a, b| a.name_key().cmp(b.name_key()));
    }

    pub fn encode(&self) -> Vec<u8> {
        serde_json::to_vec(self).expect("tree serialises")
    }

    pub fn decode(b: &[u8], id: &Id) -> Result<Tree> {
        serde_json::from_slice(b)
            .map_err(|e| RepoError::corrupt(format!("tree {id}"), e.to_string()))
    }

    /// The node named `name`: a binary search (stored trees are sorted),
    /// then a scan in case this one is not. Nothing is allocated: a backup
    /// calls this once per entry of a directory with the parent's listing.
    pub fn find(&self, name: &std::ffi::OsStr) -> Option<&Node> {
        use std::os::unix::ffi::OsStrExt;
        let key = name.as_bytes();
        match self.nodes.binary_search_by(|n| n.name_key().cmp(key)) {
            Ok(i) => Some(&self.nodes[i]),
            Err(_) => self.nodes.iter().find(|n| n.name_key() == key),
        }
    }
}

mod opt_hex {
    use serde::{Deserialize, Deserializer, Serializer};
    pub fn serialize<S: Serializer>(v: &Option<Vec<u8>>, s: S) -> Result<S::Ok, S::Error> {
        match v {
            Some(b) => s.serialize_str(&hex::encode(b)),
            None => s.serialize_none(),
        }
    }
    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Vec<u8>>, D::Error> {
        let s: Option<String> = Option::deserialize(d)?;
        s.map(|s| hex::decode(s).map_err(serde::de::Error::custom))
            .transpose()
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use proptest::prelude::*;

    pub fn arb_node() -> impl Strategy<Value = Node> {
        (
            proptest::collection::vec(
                any::<u8>().prop_filter("no slash or nul", |b| *b != b'/' && *b != 0),
                1..20,
            ),
            0usize..7,
            any::<(u32, u32, u32, i64, i64, i64, u64, u64, u64)>(),
            proptest::collection::vec(any::<[u8; 32]>(), 0..4),
            any::<bool>(),
        )
            .prop_map(
                |(name, k, (mode, uid, gid, m, a, c, ino, dev, size), content, sparse)| {
                    let kinds = [
                        NodeKind::File,
                        NodeKind::Dir,
                        NodeKind::Symlink,
                        NodeKind::Fifo,
                        NodeKind::Socket,
                        NodeKind::Chardev,
                        NodeKind::Blockdev,
                    ];
                    let mut n = Node {
                        name: String::new(),
                        name_bytes: None,
                        kind: kinds[k],
                        mode,
                        uid,
                        gid,
                        user: "u".into(),
                        group: String::new(),
                        mtime_ns: m,
                        atime_ns: a,
                        ctime_ns: c,
                        inode: ino,
                        device: dev,
                        links: 1,
                        rdev: 0,
                        size,
                        content: content.into_iter().map(Id).collect(),
                        sparse,
                        subtree: None,
                        target: None,
                        target_bytes: None,
                        extra: Default::default(),
                    };
                    use std::os::unix::ffi::OsStrExt;
                    n.set_name(std::ffi::OsStr::from_bytes(&name));
                    n
                },
            )
    }

    fn named(name: &[u8]) -> Node {
        use std::os::unix::ffi::OsStrExt;
        let mut n = Node::new("", NodeKind::File);
        n.mode = 0o100644;
        n.inode = name.len() as u64;
        n.set_name(std::ffi::OsStr::from_bytes(name));
        n
    }

    #[test]
    fn find_in_sorted_and_unsorted_trees() {
        use std::os::unix::ffi::OsStrExt;
        let names: [&[u8]; 6] = [b"b", b"a", b"\xff\xfe", b"B", b"a\xe9", b"ab"];
        let mut t = Tree {
            nodes: names.iter().map(|n| named(n)).collect(),
        };
        // Unsorted: found by the scan.
        for n in names {
            assert_eq!(
                t.find(std::ffi::OsStr::from_bytes(n)).unwrap().name_key(),
                n
            );
        }
        t.sort();
        // Sorted in byte order, the order `OsStr` compares in.
        let keys: Vec<&[u8]> = t.nodes.iter().map(|n| n.name_key()).collect();
        assert_eq!(keys, [&b"B"[..], b"a", b"ab", b"a\xe9", b"b", b"\xff\xfe"]);
        for n in names {
            assert_eq!(
                t.find(std::ffi::OsStr::from_bytes(n)).unwrap().name_key(),
                n
            );
        }
        assert!(t.find(std::ffi::OsStr::new("c")).is_none());
        assert!(t.find(std::ffi::OsStr::new("")).is_none());
    }

    proptest! {
        #[test]
        fn tree_round_trip(nodes in proptest::collection::vec(arb_node(), 0..20)) {
            let mut t = Tree { nodes };
            t.sort();
            let enc = t.encode();
            let back = Tree::decode(&enc, &Id::default()).unwrap();
            prop_assert_eq!(&back, &t);
            // Deterministic: encoding again gives the same bytes (same blob id).
            prop_assert_eq!(back.encode(), enc);
        }
    }
}
