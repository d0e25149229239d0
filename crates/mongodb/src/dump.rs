//! Collections in and out of the repository as raw BSON.
//!
//! A collection's documents are read in `_id` order and stored back to back
//! exactly as the server sent them (no decode, no re-encode), through the
//! engine's content-defined chunking: a document that did not change keeps
//! its bytes and, mostly, its chunk, so a backup after 1 % of documents
//! changed stores about 1 % anew.

use std::io::{self, Read};

use futures_util::StreamExt;
use mongodb::bson::{doc, Document, RawDocument, RawDocumentBuf};
use mongodb::Client;
use tidemark_repo::blob::BlobType;
use tidemark_repo::index::Index;
use tidemark_repo::ingest::{Session, StoreError, Stored};
use tidemark_repo::tree::{Node, NodeKind};
use tidemark_repo::{Id, Repository};
use tokio::runtime::Handle;

use crate::error::{Context, MongoError, Result};

/// Documents gathered per trip to the runtime (one `block_on`).
const FILL: usize = 1 << 20;
/// Documents per insert on restore (the server caps a batch at 48 MB).
pub const INSERT_BYTES: usize = 8 << 20;

/// A `Read` over a collection's documents in `_id` order, back to back;
/// counts them and hashes what it hands out.
pub struct DocReader<'a> {
    rt: &'a Handle,
    cursor: mongodb::Cursor<RawDocumentBuf>,
    buf: Vec<u8>,
    pos: usize,
    done: bool,
    pub documents: u64,
    pub hasher: blake3::Hasher,
}

impl<'a> DocReader<'a> {
    pub fn open(rt: &'a Handle, client: &Client, rs: &str, db: &str, coll: &str) -> Result<DocReader<'a>> {
        let c = client.database(db).collection::<RawDocumentBuf>(coll);
        let cursor = rt
            .block_on(async { c.find(doc! {}).sort(doc! { "_id": 1 }).batch_size(1000).await })
            .ctx(rs, || format!("reading {db}.{coll}"))?;
        Ok(DocReader { rt, cursor, buf: Vec::new(), pos: 0, done: false, documents: 0, hasher: blake3::Hasher::new() })
    }

    fn fill(&mut self) -> io::Result<()> {
        self.buf.clear();
        self.pos = 0;
        let (cursor, buf) = (&mut self.cursor, &mut self.buf);
        let mut n = 0u64;
        let more = self.rt.block_on(async {
            while buf.len() < FILL {
                if !cursor.advance().await? {
                    return Ok::<bool, mongodb::error::Error>(false);
                }
                buf.extend_from_slice(cursor.current().as_bytes());
                n += 1;
            }
            Ok(true)
        });
        self.documents += n;
        self.hasher.update(&self.buf);
        match more {
            Ok(m) => {
                self.done = !m;
                Ok(())
            }
            Err(e) => Err(io::Error::other(e)),
        }
    }
}

impl Read for DocReader<'_> {
    fn read(&mut self, out: &mut [u8]) -> io::Result<usize> {
        while self.pos == self.buf.len() {
            if self.done {
                return Ok(0);
            }
            self.fill()?;
        }
        let n = out.len().min(self.buf.len() - self.pos);
        out[..n].copy_from_slice(&self.buf[self.pos..self.pos + n]);
        self.pos += n;
        Ok(n)
    }
}

/// A file node for stored content.
pub fn file_node(name: &str, stored: &Stored) -> Node {
    let mut n = Node::new(name, NodeKind::File);
    n.mode = 0o100600;
    n.size = stored.size;
    n.content = stored.content.clone();
    n
}

/// Stores bytes held in memory (specs, index lists, the oplog).
pub fn store_bytes(session: &Session<'_>, bytes: &[u8]) -> Result<Stored> {
    session.store(&mut &bytes[..], Some(bytes.len() as u64)).map_err(|e| match e {
        StoreError::Repo(r) => MongoError::Repo(r),
        StoreError::Source(s) => MongoError::Invalid(format!("storing: {s}")),
    })
}

/// Documents back to back, as one buffer.
pub fn concat<'d>(docs: impl IntoIterator<Item = &'d RawDocument>) -> Vec<u8> {
    let mut out = Vec::new();
    for d in docs {
        out.extend_from_slice(d.as_bytes());
    }
    out
}

/// Runs a cursor command (listCollections, listIndexes) and keeps each
/// entry's raw bytes.
pub async fn cursor_entries(client: &Client, db: &str, cmd: Document, rs: &str, what: &str) -> Result<Vec<RawDocumentBuf>> {
    let mut cursor = client.database(db).run_cursor_command(cmd).await.ctx(rs, || what.to_string())?;
    let mut out = Vec::new();
    while let Some(d) = cursor.next().await {
        let d = d.ctx(rs, || what.to_string())?;
        out.push(RawDocumentBuf::from_document(&d).map_err(|e| MongoError::Invalid(format!("{what}: {e}")))?);
    }
    Ok(out)
}

/// Reads a stored file whole (small files: specs, index lists, users).
pub fn read_file(repo: &Repository, index: &Index, node: &Node) -> Result<Vec<u8>> {
    let mut out = Vec::with_capacity(node.size as usize);
    for id in &node.content {
        out.extend_from_slice(&repo.read_blob(index, BlobType::Data, id)?);
    }
    Ok(out)
}

/// The documents of stored content, in order, however the chunks cut them.
pub struct Docs<'a> {
    repo: &'a Repository,
    index: &'a Index,
    chunks: std::slice::Iter<'a, Id>,
    buf: Vec<u8>,
    pos: usize,
    what: String,
}

impl<'a> Docs<'a> {
    pub fn new(repo: &'a Repository, index: &'a Index, content: &'a [Id], what: String) -> Docs<'a> {
        Docs { repo, index, chunks: content.iter(), buf: Vec::new(), pos: 0, what }
    }

    /// The next document, or None at the end; a torn or bad document is
    /// an error naming the file.
    pub fn next_doc(&mut self) -> Result<Option<&RawDocument>> {
        loop {
            let have = self.buf.len() - self.pos;
            if have >= 4 {
                let len = i32::from_le_bytes(self.buf[self.pos..self.pos + 4].try_into().expect("4 bytes")) as usize;
                if len < 5 {
                    return Err(MongoError::Invalid(format!("{}: a document claims {len} bytes", self.what)));
                }
                if have >= len {
                    let start = self.pos;
                    self.pos += len;
                    let doc = RawDocument::from_bytes(&self.buf[start..start + len])
                        .map_err(|e| MongoError::Invalid(format!("{}: bad document at byte {start}: {e}", self.what)))?;
                    return Ok(Some(doc));
                }
            }
            match self.chunks.next() {
                Some(id) => {
                    self.buf.drain(..self.pos);
                    self.pos = 0;
                    let chunk = self.repo.read_blob(self.index, BlobType::Data, id)?;
                    self.buf.extend_from_slice(&chunk);
                }
                None if have == 0 => return Ok(None),
                None => return Err(MongoError::Invalid(format!("{}: {have} bytes after the last whole document", self.what))),
            }
        }
    }
}

/// Splits bytes of back-to-back documents (small files held whole).
pub fn split_docs(bytes: &[u8], what: &str) -> Result<Vec<RawDocumentBuf>> {
    let mut out = Vec::new();
    let mut pos = 0;
    while pos < bytes.len() {
        if bytes.len() - pos < 5 {
            return Err(MongoError::Invalid(format!("{what}: {} stray bytes at the end", bytes.len() - pos)));
        }
        let len = i32::from_le_bytes(bytes[pos..pos + 4].try_into().expect("4 bytes")) as usize;
        if len < 5 || pos + len > bytes.len() {
            return Err(MongoError::Invalid(format!("{what}: a document at byte {pos} claims {len} bytes")));
        }
        out.push(
            RawDocumentBuf::from_bytes(bytes[pos..pos + len].to_vec())
                .map_err(|e| MongoError::Invalid(format!("{what}: bad document at byte {pos}: {e}")))?,
        );
        pos += len;
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use mongodb::bson::rawdoc;

    #[test]
    fn back_to_back_documents_split_again_and_torn_ones_are_named() {
        let a = rawdoc! { "_id": 1, "x": "ab" };
        let b = rawdoc! { "_id": 2, "y": [1, 2, 3] };
        let bytes = concat([a.as_ref(), b.as_ref()]);
        let got = split_docs(&bytes, "t").unwrap();
        assert_eq!(got, vec![a.clone(), b]);
        let e = split_docs(&bytes[..bytes.len() - 3], "coll.bson").unwrap_err().to_string();
        assert!(e.contains("coll.bson"), "{e}");
        assert!(split_docs(&[], "t").unwrap().is_empty());
    }
}
