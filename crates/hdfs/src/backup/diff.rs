//! What changed in a root between two of its snapshots, from
//! GETSNAPSHOTDIFFLISTING (paged: the NameNode sends a bounded number of
//! entries per call, so a diff of millions of entries never arrives whole).
//!
//! The walk needs three answers from it, all by path relative to the root:
//! - `dirty`: may something at or below this path have changed? (the
//!   directories to list again);
//! - `touched`: did the entry itself change (content or attributes)?
//! - `old_path`: where was this path in the earlier snapshot? (renames).
//!
//! The diff is used only to decide what need not be looked at; what is
//! looked at is read from the new snapshot itself. A path the diff names in
//! the earlier snapshot's terms or the later one's marks both, so a
//! misreading of the report costs listing, never a stale entry.

use std::collections::HashSet;

use super::walk::with_ancestors;
use crate::error::Result;
use crate::webhdfs::WebHdfs;

#[derive(Debug, Default)]
pub struct Changes {
    dirty: HashSet<String>,
    touched: HashSet<String>,
    /// (old, new), longest new path first.
    renames: Vec<(String, String)>,
    pub entries: u64,
}

impl Changes {
    pub async fn load(hdfs: &WebHdfs, root: &str, from: &str, to: &str) -> Result<Changes> {
        let mut c = Changes::default();
        let mut raw: Vec<String> = Vec::new();
        let mut start = None;
        loop {
            let page = hdfs.diff_page(root, from, to, start.as_ref()).await?;
            c.entries += (page.created.len() + page.deleted.len() + page.modified.len() + page.renamed.len()) as u64;
            raw.extend(page.created);
            raw.extend(page.deleted);
            raw.extend(page.modified);
            for (old, new) in page.renamed {
                raw.push(old.clone());
                raw.push(new.clone());
                c.renames.push((old, new));
            }
            // Paths go into the sets page by page: only the sets stay.
            for p in raw.drain(..) {
                let p = p.trim_matches('/').to_string();
                c.dirty.extend(with_ancestors([p.clone()]));
                c.touched.insert(p);
            }
            match page.next {
                Some(n) if Some(&n) != start.as_ref() => start = Some(n),
                _ => break,
            }
        }
        c.renames.sort_by_key(|(_, new)| std::cmp::Reverse(new.len()));
        Ok(c)
    }

    /// Where `rel` was in the earlier snapshot.
    pub fn old_path(&self, rel: &str) -> String {
        for (old, new) in &self.renames {
            if rel == new {
                return old.clone();
            }
            if let Some(rest) = rel.strip_prefix(new.as_str()).and_then(|r| r.strip_prefix('/')) {
                return if old.is_empty() { rest.to_string() } else { format!("{old}/{rest}") };
            }
        }
        rel.to_string()
    }

    pub fn renamed_into(&self, rel: &str) -> bool {
        self.old_path(rel) != rel
    }

    pub fn dirty(&self, rel: &str) -> bool {
        self.dirty.contains(rel) || self.dirty.contains(&self.old_path(rel))
    }

    pub fn touched(&self, rel: &str) -> bool {
        self.touched.contains(rel) || self.touched.contains(&self.old_path(rel))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn changes(paths: &[&str], renames: &[(&str, &str)]) -> Changes {
        let mut c = Changes::default();
        for p in paths.iter().chain(renames.iter().flat_map(|(a, b)| [a, b])) {
            c.dirty.extend(with_ancestors([p.to_string()]));
            c.touched.insert(p.to_string());
        }
        c.renames = renames.iter().map(|(a, b)| (a.to_string(), b.to_string())).collect();
        c.renames.sort_by_key(|(_, new)| std::cmp::Reverse(new.len()));
        c
    }

    #[test]
    fn renamed_paths_map_back_by_whole_components() {
        let c = changes(&["logs/today/x"], &[("events/2026", "archive/2026"), ("a", "b")]);
        assert_eq!(c.old_path("archive/2026/part-0"), "events/2026/part-0");
        assert_eq!(c.old_path("archive/2026"), "events/2026");
        assert_eq!(c.old_path("archive/20260"), "archive/20260");
        assert_eq!(c.old_path("b/c"), "a/c");
        assert_eq!(c.old_path("bc"), "bc");
        assert!(c.renamed_into("b"));
        assert!(!c.renamed_into("logs"));
    }

    #[test]
    fn dirty_covers_ancestors_and_both_names_of_a_rename() {
        let c = changes(&["logs/today/x"], &[("events/2026", "archive/2026")]);
        for p in ["", "logs", "logs/today", "logs/today/x", "archive", "events", "archive/2026"] {
            assert!(c.dirty(p), "{p} should be dirty");
        }
        assert!(!c.dirty("logs/yesterday"));
        // Inside a renamed directory nothing changed: not dirty, so its old
        // tree is reused whole.
        assert!(!c.dirty("archive/2026/part-0"));
        assert!(c.touched("logs/today/x") && !c.touched("logs/today"));
    }
}
