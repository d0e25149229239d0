//! `--read-data`: download packs and check every byte of them.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;

use rayon::prelude::*;

use super::{is_damage, reason_about, short_reason, Findings, ObjectKind, VerifyReport};
use crate::blob;
use crate::error::{RepoError, Result};
use crate::id::Id;
use crate::pack::{self, PackEntry};
use crate::progress::Progress;
use crate::repo::{FileKind, Repository};

/// Download packs in parallel and check each completely.
#[allow(clippy::too_many_arguments)]
pub(super) fn read_packs(
    repo: &Repository,
    packs: &[Id],
    entries: &HashMap<Id, Vec<PackEntry>>,
    sizes: &HashMap<Id, u64>,
    threads: usize,
    f: &mut Findings,
    report: &mut VerifyReport,
    progress: &dyn Progress,
) -> Result<()> {
    let total: u64 = packs.iter().map(|p| sizes[p]).sum();
    progress.set_total(packs.len() as u64, total);
    let bytes = AtomicU64::new(0);
    let blobs = AtomicU64::new(0);
    let found = Mutex::new(Vec::new());
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(threads.max(1))
        .thread_name(|i| format!("tidemark-verify-{i}"))
        .build()
        .map_err(|e| RepoError::Invalid(format!("thread pool: {e}")))?;
    let res: Result<()> = pool.install(|| {
        packs.par_iter().try_for_each(|p| {
            let data = match repo.get(&FileKind::Pack.key(p)) {
                Ok(d) => d,
                Err(RepoError::Store(e)) if e.is_not_found() => {
                    found.lock().expect("poisoned").push(PackFinding::Gone(*p));
                    return Ok(());
                }
                Err(e) if is_damage(&e) => {
                    found
                        .lock()
                        .expect("poisoned")
                        .push(PackFinding::Pack(*p, reason_about(&e, p)));
                    return Ok(());
                }
                Err(e) => return Err(e),
            };
            let n = check_pack(repo, p, &data, &entries[p]);
            blobs.fetch_add(entries[p].len() as u64, Ordering::Relaxed);
            bytes.fetch_add(data.len() as u64, Ordering::Relaxed);
            progress.advance(1, data.len() as u64);
            found.lock().expect("poisoned").extend(n);
            Ok(())
        })
    });
    res?;
    report.stats.packs_read = packs.len() as u64;
    report.stats.bytes_read = bytes.into_inner();
    report.stats.blobs_read = blobs.into_inner();
    for x in found.into_inner().expect("poisoned") {
        match x {
            PackFinding::Pack(p, why) => f.add(ObjectKind::Pack, p, why),
            // Listed a moment ago: a prune running meanwhile removed it.
            PackFinding::Gone(p) => report
                .notes
                .push(format!("pack {p} was deleted while verify ran (by prune?)")),
            PackFinding::Blob(p, b, why) => {
                f.add(ObjectKind::Pack, p, "holds damaged blobs");
                f.add(ObjectKind::Blob, b, format!("in pack {p}: {why}"));
                f.taint(b, (ObjectKind::Pack, p));
                f.taint(b, (ObjectKind::Blob, b));
            }
        }
    }
    Ok(())
}

enum PackFinding {
    Pack(Id, String),
    Gone(Id),
    Blob(Id, Id, String),
}

/// Check one downloaded pack against its name, its header and the index.
/// Every indexed blob is checked even when the pack is known bad, so that
/// exactly the spoiled files are named.
fn check_pack(repo: &Repository, p: &Id, data: &[u8], indexed: &[PackEntry]) -> Vec<PackFinding> {
    let mut out = Vec::new();
    if Id::of_stored(data) != *p {
        out.push(PackFinding::Pack(
            *p,
            "content does not match its id (altered or truncated)".into(),
        ));
    }
    match pack::entries_of(repo.cipher(), data, p) {
        Ok(header) => {
            if header != indexed {
                let differ = indexed.iter().filter(|e| !header.contains(e)).count();
                out.push(PackFinding::Pack(
                    *p,
                    format!(
                        "header lists {} blobs, the index {} ({} index entries not in the header)",
                        header.len(),
                        indexed.len(),
                        differ
                    ),
                ));
            }
        }
        Err(e) => out.push(PackFinding::Pack(*p, reason_about(&e, p))),
    }
    for e in indexed {
        let what = || format!("blob {} in pack {p}", e.id);
        let end = e.offset as usize + e.length as usize;
        let Some(sealed) = data.get(e.offset as usize..end) else {
            out.push(PackFinding::Blob(
                *p,
                e.id,
                "beyond the end of the pack".into(),
            ));
            continue;
        };
        let res =
            blob::unseal(repo.cipher(), sealed, e.flags, e.raw_len, &what).and_then(|plain| {
                if repo.key().blob_id(&plain) == e.id {
                    Ok(())
                } else {
                    Err(RepoError::corrupt(what(), "content does not match its id"))
                }
            });
        if let Err(err) = res {
            out.push(PackFinding::Blob(*p, e.id, short_reason(&err)));
        }
    }
    out
}
