//! `tidemark ls`: the paths of a snapshot, streamed as the trees are walked.

use std::io::Write;
use std::path::{Path, PathBuf};

use anyhow::Result;
use tidemark_repo::tree::{Node, NodeKind};
use tidemark_repo::walk::{Visit, Walker};
use tidemark_repo::RepoError;

use crate::ctx::Global;

#[derive(clap::Args, Debug)]
pub struct Args {
    /// Snapshot id, unique prefix, or `latest`
    pub snapshot: String,
    /// Only this path and what is below it (absolute, as listed)
    pub path: Option<PathBuf>,
    /// Mode, owner, size and modification time before each path
    #[arg(long, short = 'l')]
    pub long: bool,
    /// A JSON array of {path, type, size, mode, uid, gid, user, group, mtime, ...}
    #[arg(long)]
    pub json: bool,
}

pub fn run(g: &Global, a: Args) -> Result<i32> {
    let repo = g.open_for(Global::INDEX_AND_SNAPSHOTS)?;
    let (_, snap) = repo.find_snapshot(&a.snapshot)?;
    let index = repo.load_index()?;
    let mut walker = Walker::new(&repo, &index);
    let at = a
        .path
        .as_ref()
        .map(|p| Path::new("/").join(p))
        .unwrap_or_else(|| PathBuf::from("/"));
    let start = walker.locate(&snap.tree, &at)?;
    let stdout = std::io::stdout();
    let mut out = std::io::BufWriter::new(stdout.lock());
    let mut first = true;
    let io = |e: std::io::Error| RepoError::io("stdout", e);
    if a.json {
        out.write_all(b"[").map_err(io)?;
    }
    let walked = walker.walk(&start, &mut |p: &Path, n: &Node| {
        if a.json {
            let sep = if first { "\n" } else { ",\n" };
            first = false;
            write!(out, "{sep}{}", json_entry(p, n)).map_err(io)?;
        } else if a.long {
            writeln!(out, "{}", long_line(p, n)).map_err(io)?;
        } else {
            writeln!(out, "{}", p.display()).map_err(io)?;
        }
        Ok(Visit::Descend)
    });
    let finished = walked.and_then(|_| {
        if a.json {
            out.write_all(b"\n]\n").map_err(io)?;
        }
        out.flush().map_err(io)
    });
    match finished {
        // `tidemark ls ... | head` is not an error.
        Err(RepoError::Io { source, .. }) if source.kind() == std::io::ErrorKind::BrokenPipe => {
            Ok(0)
        }
        Err(e) => Err(e.into()),
        Ok(()) => Ok(0),
    }
}

fn mtime(n: &Node) -> chrono::DateTime<chrono::Utc> {
    chrono::DateTime::from_timestamp_nanos(n.mtime_ns)
}

fn json_entry(p: &Path, n: &Node) -> String {
    let mut v = serde_json::json!({
        "path": p.display().to_string(),
        "name": n.name,
        "type": n.kind,
        "size": n.size,
        "mode": n.mode & 0o7777,
        "permissions": mode_string(n),
        "uid": n.uid,
        "gid": n.gid,
        "user": n.user,
        "group": n.group,
        "mtime": mtime(n).to_rfc3339(),
        "links": n.links,
        "inode": n.inode,
    });
    if let Some(t) = &n.target {
        v["target"] = t.clone().into();
    }
    if let Some(s) = n.subtree {
        v["subtree"] = s.to_hex().into();
    }
    if n.kind == NodeKind::File {
        v["blobs"] = n.content.len().into();
    }
    v.to_string()
}

fn long_line(p: &Path, n: &Node) -> String {
    let owner = if n.user.is_empty() {
        n.uid.to_string()
    } else {
        n.user.clone()
    };
    let group = if n.group.is_empty() {
        n.gid.to_string()
    } else {
        n.group.clone()
    };
    let link = n
        .target
        .as_ref()
        .map(|t| format!(" -> {t}"))
        .unwrap_or_default();
    format!(
        "{} {:<8} {:<8} {:>12} {} {}{link}",
        mode_string(n),
        owner,
        group,
        n.size,
        mtime(n)
            .with_timezone(&chrono::Local)
            .format("%Y-%m-%d %H:%M:%S"),
        p.display()
    )
}

/// `drwxr-xr-x`, as ls(1) shows it.
pub fn mode_string(n: &Node) -> String {
    let t = match n.kind {
        NodeKind::File => '-',
        NodeKind::Dir => 'd',
        NodeKind::Symlink => 'l',
        NodeKind::Fifo => 'p',
        NodeKind::Socket => 's',
        NodeKind::Chardev => 'c',
        NodeKind::Blockdev => 'b',
    };
    let m = n.mode;
    let mut s = String::with_capacity(10);
    s.push(t);
    for (shift, special, lower, upper) in [
        (6, 0o4000, 's', 'S'),
        (3, 0o2000, 's', 'S'),
        (0, 0o1000, 't', 'T'),
    ] {
        let bits = (m >> shift) & 7;
        s.push(if bits & 4 != 0 { 'r' } else { '-' });
        s.push(if bits & 2 != 0 { 'w' } else { '-' });
        s.push(match (m & special != 0, bits & 1 != 0) {
            (true, true) => lower,
            (true, false) => upper,
            (false, true) => 'x',
            (false, false) => '-',
        });
    }
    s
}
