//! A memory budget shared by the file readers of one backup.
//!
//! Each reader borrows its read buffer from here, so the bytes held by all
//! readers together stay near the limit whatever the thread count: more
//! threads overlap more reads of small files, they do not multiply the
//! memory of big ones. Full-size segments are pooled and reused: no page
//! faults for fresh buffers, and the allocator cannot scatter them over
//! per-thread arenas. A pooled buffer keeps its (initialized) contents, so
//! readers get it as a slice without zeroing it again.
//!
//! Readers run inside a rayon pool, where a thread waiting in a join may run
//! an unrelated job (another file) on top of its stack. Waiting for memory in
//! such a nested job could deadlock (the memory is held by the frames below),
//! so a thread that already holds a grant never waits, and no wait lasts
//! longer than [`MAX_WAIT`] ([`MAX_WAIT_SEGMENT`] for a whole segment): past
//! that the reader goes ahead over the limit. The limit is a target, not a
//! hard cap. A small file goes ahead soon, so that many small reads overlap
//! on a slow disk, and overshoots by little; a whole segment waits much
//! longer, since with six threads per core the short wait let most threads
//! hold a segment at once (peak RSS on the SSTable-like bench set: 74 MiB
//! with 6 threads, 136 MiB with 12).

use std::cell::Cell;
use std::sync::{Condvar, Mutex};
use std::time::{Duration, Instant};

/// Longest wait for memory before going ahead anyway (see module doc).
const MAX_WAIT: Duration = Duration::from_millis(500);
/// The same for a request of a whole segment.
const MAX_WAIT_SEGMENT: Duration = Duration::from_secs(10);

thread_local! {
    /// Bytes this thread holds through live grants.
    static HELD: Cell<usize> = const { Cell::new(0) };
}

pub struct Budget {
    limit: usize,
    max_wait: Duration,
    max_wait_segment: Duration,
    /// Size of a full segment: buffers of exactly this capacity are pooled.
    segment: usize,
    state: Mutex<State>,
    freed: Condvar,
}

struct State {
    used: usize,
    pool: Vec<Vec<u8>>,
}

/// Borrowed memory: a buffer with (at least) the granted capacity, and its
/// share of the budget, both given back on drop.
pub struct Grant<'b> {
    budget: &'b Budget,
    bytes: usize,
    buf: Vec<u8>,
}

impl Budget {
    pub fn new(limit: usize, segment: usize) -> Budget {
        Budget {
            limit,
            max_wait: MAX_WAIT,
            max_wait_segment: MAX_WAIT_SEGMENT,
            segment,
            state: Mutex::new(State {
                used: 0,
                pool: Vec::new(),
            }),
            freed: Condvar::new(),
        }
    }

    pub fn segment(&self) -> usize {
        self.segment
    }

    /// Bytes actually lent for a request of `len`: at most a segment, and a
    /// whole (pooled) segment for anything above an eighth of one. Buffers
    /// of a few MiB allocated and freed per file end up in malloc's
    /// per-thread arenas, which keep them: the process grows by tens of
    /// MiB over the budget (measured on the mixed bench set). Only small
    /// files get buffers of their own size.
    fn lend(&self, len: usize) -> usize {
        if len > self.segment / 8 {
            self.segment
        } else {
            len
        }
    }

    /// Borrow a buffer of `len` bytes (at most one segment), waiting while
    /// the budget is spent (see the module doc for when it does not wait).
    pub fn take(&self, len: usize) -> Grant<'_> {
        let len = self.lend(len);
        let nested = HELD.with(|h| h.get()) > 0;
        let start = Instant::now();
        let mut st = self.state.lock().expect("poisoned");
        while !nested && st.used > 0 && st.used + len > self.limit {
            let max = if len == self.segment {
                self.max_wait_segment
            } else {
                self.max_wait
            };
            let left = max.saturating_sub(start.elapsed());
            if left.is_zero() {
                break;
            }
            st = self.freed.wait_timeout(st, left).expect("poisoned").0;
        }
        self.grant(st, len)
    }

    /// Borrow a buffer only if the budget allows it now.
    pub fn try_take(&self, len: usize) -> Option<Grant<'_>> {
        let len = self.lend(len);
        let st = self.state.lock().expect("poisoned");
        (st.used + len <= self.limit).then(|| self.grant(st, len))
    }

    fn grant(&self, mut st: std::sync::MutexGuard<'_, State>, len: usize) -> Grant<'_> {
        st.used += len;
        let pooled = if len == self.segment {
            st.pool.pop()
        } else {
            None
        };
        drop(st);
        HELD.with(|h| h.set(h.get() + len));
        let buf = pooled.unwrap_or_else(|| Vec::with_capacity(len));
        Grant {
            budget: self,
            bytes: len,
            buf,
        }
    }
}

impl Grant<'_> {
    /// Bytes granted: how much the buffer may hold.
    pub fn size(&self) -> usize {
        self.bytes
    }

    /// The granted bytes, for reading into. Their contents are whatever a
    /// previous holder left (zeros the first time).
    pub fn bytes_mut(&mut self) -> &mut [u8] {
        if self.buf.len() < self.bytes {
            self.buf.resize(self.bytes, 0);
        }
        &mut self.buf[..self.bytes]
    }

    pub fn bytes(&self) -> &[u8] {
        &self.buf[..self.bytes.min(self.buf.len())]
    }
}

impl Drop for Grant<'_> {
    fn drop(&mut self) {
        let buf = std::mem::take(&mut self.buf);
        // Grants are dropped on the thread that took them (readers keep them
        // on their stack), so the per-thread count stays exact.
        HELD.with(|h| h.set(h.get().saturating_sub(self.bytes)));
        let mut st = self.budget.state.lock().expect("poisoned");
        st.used -= self.bytes;
        // Only full segments are reused; the pool never holds more than the
        // budget could lend at once.
        if buf.capacity() == self.budget.segment
            && st.pool.len() < self.budget.limit / self.budget.segment
        {
            st.pool.push(buf);
        }
        drop(st);
        self.budget.freed.notify_all();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::Ordering;

    #[test]
    fn waits_for_memory_and_reuses_segments() {
        let b = Budget::new(16, 8);
        let g1 = b.take(8);
        let p1 = g1.buf.as_ptr();
        let g2 = b.take(8);
        assert!(b.try_take(8).is_none(), "budget spent");
        drop(g2);
        drop(g1);
        // A new segment is one of the pooled buffers, not a fresh one.
        let g3 = b.try_take(8).expect("budget free again");
        let g4 = b.try_take(8).expect("budget free again");
        assert!(g3.buf.as_ptr() == p1 || g4.buf.as_ptr() == p1);
        assert_eq!(g3.buf.capacity(), 8);
        assert_eq!(g3.size(), 8);
    }

    #[test]
    fn small_reads_go_ahead_soon_and_segments_wait_for_memory() {
        let b = Budget {
            max_wait: Duration::ZERO,
            max_wait_segment: Duration::from_secs(3600),
            ..Budget::new(128, 64)
        };
        let freed = std::sync::atomic::AtomicBool::new(false);
        std::thread::scope(|s| {
            let first = b.take(64);
            let second = b.take(64);
            // Other threads, holding nothing: a small file goes over the
            // limit at once...
            let small = s.spawn(|| b.take(2).size()).join().unwrap();
            assert_eq!(small, 2);
            // ...a segment waits until memory is given back.
            let waiter = s.spawn(|| {
                let g = b.take(64);
                assert!(freed.load(Ordering::SeqCst), "went ahead over the limit");
                g.size()
            });
            std::thread::sleep(Duration::from_millis(50));
            freed.store(true, Ordering::SeqCst);
            drop(first);
            assert_eq!(waiter.join().unwrap(), 64);
            drop(second);
        });
        assert_eq!(b.state.lock().unwrap().used, 0);
    }

    #[test]
    fn a_waiting_reader_goes_on_when_memory_is_freed() {
        let b = Budget {
            max_wait: Duration::from_secs(3600),
            max_wait_segment: Duration::from_secs(3600),
            ..Budget::new(8, 8)
        };
        std::thread::scope(|s| {
            let first = b.take(8);
            let waiter = s.spawn(|| {
                let g = b.take(8);
                g.buf.capacity()
            });
            std::thread::sleep(Duration::from_millis(20));
            drop(first);
            assert_eq!(waiter.join().unwrap(), 8);
        });
        assert_eq!(b.state.lock().unwrap().used, 0);
    }

    #[test]
    fn mid_sized_requests_get_pooled_segments() {
        let b = Budget::new(64, 16);
        let small = b.take(2);
        assert_eq!((small.size(), small.buf.capacity()), (2, 2));
        let mid = b.take(5);
        assert_eq!((mid.size(), mid.buf.capacity()), (16, 16));
        let p = mid.buf.as_ptr();
        drop(mid);
        assert_eq!(b.take(9).buf.as_ptr(), p, "a pooled segment is reused");
        drop(small);
    }

    #[test]
    fn a_thread_holding_memory_does_not_wait_for_more() {
        // A wait this long would hang the test: it must not wait at all.
        let b = Budget {
            max_wait: Duration::from_secs(3600),
            ..Budget::new(8, 8)
        };
        let g1 = b.take(8);
        // Nested (same thread, grant held): goes ahead over the limit.
        let g2 = b.take(8);
        assert_eq!(b.state.lock().unwrap().used, 16);
        drop((g1, g2));
        assert_eq!(b.state.lock().unwrap().used, 0);
    }
}
