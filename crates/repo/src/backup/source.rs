//! Reading one source file into segments.
//!
//! A file of at least a segment is read with O_DIRECT where the file system
//! allows it: the disk writes straight into the segment buffer, with no copy
//! out of the page cache. That copy was the biggest cost of a first backup
//! outside chunking, hashing and compressing: on the benchmark machine
//! (2 cores, virtio disk) reading 1 GiB of big files cost 0.9 s of CPU in
//! `_copy_to_iter` inside a backup, while the other core compressed, and
//! 0.05 s with O_DIRECT. It also leaves the page cache of a live database
//! node alone: a backup of SSTables no longer evicts the node's hot data.
//! Smaller files are read through the page cache, where readahead serves
//! many small reads better than synchronous direct ones.
//!
//! O_DIRECT wants the buffer, the file offset and the length aligned to the
//! device's logical block. New bytes are therefore read to an aligned place
//! in the buffer, and the carried end of the previous segment (a chunk cut
//! short by the segment end) is put just before it. A file system that
//! refuses O_DIRECT (at open or at a read), or a short read that leaves the
//! offset unaligned, turns the file back to ordinary reads from where it is.
//!
//! Files are opened with O_NOATIME where allowed (the owner, or root), as
//! restic and borg do: a backup leaves no trace in the tree it reads, and on
//! a `relatime` mount the first read after a write would otherwise dirty the
//! inode of every new file.

use std::fs::File;
use std::io::{self, Read};
use std::path::Path;

use super::budget::Grant;

/// Alignment of direct reads: the largest logical block size in common use.
pub const ALIGN: usize = 4096;

/// A segment buffer and the range of it that holds file data.
pub struct Segment<'b> {
    grant: Grant<'b>,
    start: usize,
    end: usize,
}

impl<'b> Segment<'b> {
    pub fn new(grant: Grant<'b>) -> Segment<'b> {
        Segment {
            grant,
            start: 0,
            end: 0,
        }
    }

    pub fn data(&self) -> &[u8] {
        &self.grant.bytes()[self.start..self.end]
    }

    /// Bytes the buffer can hold (the grant).
    pub fn capacity(&self) -> usize {
        self.grant.size()
    }
}

pub struct Source {
    file: File,
    direct: bool,
    eof: bool,
}

impl Source {
    /// Open `path`; `big` asks for direct reads (see the module doc).
    pub fn open(path: &Path, big: bool) -> io::Result<Source> {
        let (file, direct) = open_file(path, big)?;
        Ok(Source {
            file,
            direct,
            eof: false,
        })
    }

    /// True once a read found the end of the file.
    pub fn eof(&self) -> bool {
        self.eof
    }

    #[cfg(test)]
    pub fn is_direct(&self) -> bool {
        self.direct
    }

    /// Put `carry` at the start of `seg`'s data and read after it.
    pub fn fill(&mut self, seg: &mut Segment<'_>, carry: &[u8]) -> io::Result<()> {
        let at = self.read_offset(seg, carry.len());
        let buf = seg.grant.bytes_mut();
        buf[at - carry.len()..at].copy_from_slice(carry);
        seg.start = at - carry.len();
        seg.end = at + self.read(&mut buf[at..])?;
        Ok(())
    }

    /// Keep the data of `seg` after its first `done` bytes, and read after it
    /// in the same buffer.
    pub fn refill(&mut self, seg: &mut Segment<'_>, done: usize) -> io::Result<()> {
        let (from, to) = (seg.start + done, seg.end);
        let carry = to - from;
        let at = self.read_offset(seg, carry);
        let buf = seg.grant.bytes_mut();
        buf.copy_within(from..to, at - carry);
        seg.start = at - carry;
        seg.end = at + self.read(&mut buf[at..])?;
        Ok(())
    }

    /// Where in the buffer new bytes go after `carry` bytes: right after
    /// them, or for direct reads at the first aligned address after them.
    fn read_offset(&mut self, seg: &mut Segment<'_>, carry: usize) -> usize {
        if self.direct {
            let base = seg.grant.bytes_mut().as_ptr().align_offset(ALIGN);
            let at = base + carry.next_multiple_of(ALIGN);
            if at + ALIGN <= seg.capacity() {
                return at;
            }
            // No room for an aligned read (a tiny segment): read as usual;
            // should the flag stay on, the next read reports the error.
            let _ = self.buffered();
        }
        carry
    }

    /// Read until `buf` is full (for direct reads: its aligned part) or the
    /// file ends; the number of bytes read.
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let mut got = 0;
        loop {
            let want = if self.direct {
                buf.len() / ALIGN * ALIGN
            } else {
                buf.len()
            };
            if got >= want {
                return Ok(got);
            }
            match self.file.read(&mut buf[got..want]) {
                Ok(0) => {
                    self.eof = true;
                    return Ok(got);
                }
                Ok(n) => {
                    got += n;
                    // A short read leaves the offset unaligned only at the
                    // end of the file; the next read (which finds the end)
                    // goes through the page cache.
                    if self.direct && got % ALIGN != 0 {
                        self.buffered()?;
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) if self.direct && e.raw_os_error() == Some(libc_einval()) => {
                    self.buffered()?;
                }
                Err(e) => return Err(e),
            }
        }
    }

    /// Go on with ordinary reads from the current offset.
    fn buffered(&mut self) -> io::Result<()> {
        self.direct = false;
        #[cfg(target_os = "linux")]
        {
            use nix::fcntl::{fcntl, FcntlArg, OFlag};
            let flags = fcntl(&self.file, FcntlArg::F_GETFL).map_err(io::Error::from)?;
            let flags = OFlag::from_bits_retain(flags) - OFlag::O_DIRECT;
            fcntl(&self.file, FcntlArg::F_SETFL(flags)).map_err(io::Error::from)?;
        }
        Ok(())
    }
}

fn libc_einval() -> i32 {
    nix::errno::Errno::EINVAL as i32
}

/// Open for reading with O_NOATIME (and O_DIRECT when `direct`), dropping
/// each flag the kernel refuses; whether the file reads direct.
fn open_file(path: &Path, direct: bool) -> io::Result<(File, bool)> {
    #[cfg(target_os = "linux")]
    {
        use nix::fcntl::OFlag;
        use std::os::unix::fs::OpenOptionsExt;
        let mut tries = Vec::with_capacity(4);
        if direct {
            tries.extend([OFlag::O_NOATIME | OFlag::O_DIRECT, OFlag::O_DIRECT]);
        }
        tries.extend([OFlag::O_NOATIME, OFlag::empty()]);
        for flags in tries {
            match std::fs::OpenOptions::new()
                .read(true)
                .custom_flags(flags.bits())
                .open(path)
            {
                Ok(f) => return Ok((f, flags.contains(OFlag::O_DIRECT))),
                // EPERM: O_NOATIME on another user's file; EINVAL: no
                // O_DIRECT on this file system (tmpfs).
                Err(e)
                    if e.raw_os_error() == Some(nix::errno::Errno::EPERM as i32)
                        || e.raw_os_error() == Some(libc_einval()) => {}
                Err(e) => return Err(e),
            }
        }
    }
    #[cfg(not(target_os = "linux"))]
    let _ = direct;
    Ok((File::open(path)?, false))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backup::budget::Budget;
    use crate::walk::tests::random_bytes;

    /// Whether this file system takes O_DIRECT at all (tmpfs does not).
    fn fs_allows_direct(path: &Path) -> bool {
        use std::os::unix::fs::OpenOptionsExt;
        std::fs::OpenOptions::new()
            .read(true)
            .custom_flags(nix::fcntl::OFlag::O_DIRECT.bits())
            .open(path)
            .is_ok()
    }

    /// Read `path` the way a backup does, carrying `carry(i)` bytes of the
    /// i-th segment into the next, alternating new buffers and refills.
    fn read_back(path: &Path, seg: usize, carry: impl Fn(usize) -> usize) -> (Vec<u8>, bool) {
        let budget = Budget::new(4 * seg, seg);
        let mut src = Source::open(path, true).unwrap();
        let direct = src.is_direct();
        let mut cur = Segment::new(budget.take(seg));
        src.fill(&mut cur, &[]).unwrap();
        let mut out = Vec::new();
        for i in 0.. {
            let data = cur.data();
            if src.eof() {
                out.extend_from_slice(data);
                break;
            }
            let keep = carry(i).min(data.len());
            let done = data.len() - keep;
            out.extend_from_slice(&data[..done]);
            if i % 2 == 0 {
                let mut next = Segment::new(budget.take(seg));
                src.fill(&mut next, &data[done..]).unwrap();
                cur = next;
            } else {
                src.refill(&mut cur, done).unwrap();
            }
        }
        (out, direct)
    }

    #[test]
    fn segments_hold_the_file_byte_for_byte_with_any_carry() {
        let dir = tempfile::tempdir().unwrap();
        let seg = 64 * 1024 + 2 * ALIGN;
        for (len, name) in [
            (5 * seg + 777, "odd tail"),
            (16 * ALIGN, "aligned end"),
            (seg, "one segment"),
            (3 * seg - 1, "one byte short"),
        ] {
            let data = random_bytes(len);
            let path = dir.path().join("f");
            std::fs::write(&path, &data).unwrap();
            for carry in [0, 1, ALIGN, 5000, 32 * 1024] {
                let (back, direct) = read_back(&path, seg, |i| carry + i);
                assert!(back == data, "{name}, carry {carry}: data differs");
                if fs_allows_direct(&path) {
                    assert!(direct, "{name}: not read direct");
                }
            }
        }
    }

    #[test]
    fn a_file_turned_to_buffered_reads_goes_on_where_it_was() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f");
        let data = random_bytes(300_000);
        std::fs::write(&path, &data).unwrap();
        let seg = 64 * 1024 + 2 * ALIGN;
        let budget = Budget::new(2 * seg, seg);
        let mut src = Source::open(&path, true).unwrap();
        let mut cur = Segment::new(budget.take(seg));
        src.fill(&mut cur, &[]).unwrap();
        let mut out = cur.data()[..1000].to_vec();
        // As after a refused direct read: the rest comes through the cache.
        src.buffered().unwrap();
        assert!(!src.is_direct());
        while !src.eof() {
            let done = cur.data().len().min(1000);
            src.refill(&mut cur, done).unwrap();
            out.extend_from_slice(&cur.data()[..cur.data().len().min(1000)]);
        }
        out.extend_from_slice(&cur.data()[cur.data().len().min(1000)..]);
        assert!(out == data, "data differs after the switch");
    }

    #[test]
    fn small_files_read_through_the_cache_and_missing_ones_fail() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("small");
        std::fs::write(&path, b"abc").unwrap();
        let budget = Budget::new(1 << 20, 1 << 16);
        let mut src = Source::open(&path, false).unwrap();
        assert!(!src.is_direct());
        let mut seg = Segment::new(budget.take(4));
        src.fill(&mut seg, &[]).unwrap();
        assert_eq!(seg.data(), b"abc");
        assert!(src.eof());
        let err = Source::open(&dir.path().join("gone"), true).err().unwrap();
        assert_eq!(err.kind(), io::ErrorKind::NotFound);
    }
}
