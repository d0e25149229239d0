//! Files with several names (hard links) are read once per backup.
//!
//! The walk is parallel, so two names of one inode can reach the reader at
//! the same time. The first claims the inode and reads it; the others wait
//! for its chunk list instead of reading the same bytes again (a Cassandra
//! data directory with snapshots holds every SSTable under two names).
//!
//! Waiting inside a rayon pool needs care: a thread that waits may sit on
//! top of a stolen piece of the very read it waits for. So a thread never
//! waits for a read it started itself, and no wait lasts longer than
//! `max_wait`; after that the waiter reads the file itself, which costs a
//! second read, never a wrong or missing chunk list.

use std::collections::HashMap;
use std::sync::{Condvar, Mutex};
use std::thread::{self, ThreadId};
use std::time::{Duration, Instant};

use crate::id::Id;

/// (device, inode).
pub(super) type Key = (u64, u64);

enum State {
    Reading(ThreadId),
    Read(Vec<Id>),
}

pub(super) struct Links {
    state: Mutex<HashMap<Key, State>>,
    changed: Condvar,
    max_wait: Duration,
}

/// What a name of a multiply-linked file should do.
pub(super) enum Claim<'a> {
    /// Another name was read already: its chunk list.
    Read(Vec<Id>),
    /// Read it, then `Ticket::done` shares the chunk list with the others.
    Mine(Ticket<'a>),
    /// Read it without sharing (this thread is reading it already, deeper
    /// in its stack, or the wait ran out).
    Alone,
}

/// The right to read an inode for all its names. Dropped without `done`
/// (the read failed), the inode is free to be claimed again.
pub(super) struct Ticket<'a> {
    links: &'a Links,
    key: Key,
    finished: bool,
}

impl Links {
    pub(super) fn new(max_wait: Duration) -> Self {
        Links {
            state: Mutex::new(HashMap::new()),
            changed: Condvar::new(),
            max_wait,
        }
    }

    pub(super) fn claim(&self, key: Key) -> Claim<'_> {
        let me = thread::current().id();
        let deadline = Instant::now() + self.max_wait;
        let mut state = self.state.lock().expect("poisoned");
        loop {
            match state.get(&key) {
                None => {
                    state.insert(key, State::Reading(me));
                    return Claim::Mine(Ticket {
                        links: self,
                        key,
                        finished: false,
                    });
                }
                Some(State::Read(ids)) => return Claim::Read(ids.clone()),
                Some(State::Reading(t)) if *t == me => return Claim::Alone,
                Some(State::Reading(_)) => {
                    let now = Instant::now();
                    if now >= deadline {
                        return Claim::Alone;
                    }
                    state = self
                        .changed
                        .wait_timeout(state, deadline - now)
                        .expect("poisoned")
                        .0;
                }
            }
        }
    }
}

impl Ticket<'_> {
    pub(super) fn done(mut self, ids: &[Id]) {
        self.finished = true;
        self.links
            .state
            .lock()
            .expect("poisoned")
            .insert(self.key, State::Read(ids.to_vec()));
        self.links.changed.notify_all();
    }
}

impl Drop for Ticket<'_> {
    fn drop(&mut self) {
        if !self.finished {
            self.links
                .state
                .lock()
                .expect("poisoned")
                .remove(&self.key);
            self.links.changed.notify_all();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::mpsc;

    fn ids(n: u8) -> Vec<Id> {
        vec![Id::from_slice(&[n; 32]).unwrap()]
    }

    #[test]
    fn second_name_waits_for_the_first_read_and_gets_its_chunks() {
        let links = Links::new(Duration::from_secs(60));
        let Claim::Mine(ticket) = links.claim((1, 7)) else {
            panic!("first claim must read");
        };
        thread::scope(|s| {
            let (tx, rx) = mpsc::channel();
            let l = &links;
            let waiter = s.spawn(move || {
                tx.send(()).unwrap();
                l.claim((1, 7))
            });
            rx.recv().unwrap();
            // The waiter is blocked until the read is done.
            thread::sleep(Duration::from_millis(50));
            assert!(!waiter.is_finished());
            ticket.done(&ids(3));
            match waiter.join().unwrap() {
                Claim::Read(got) => assert_eq!(got, ids(3)),
                _ => panic!("the waiter must get the first read's chunks"),
            }
        });
        // Another inode, or the same inode on another device, is separate.
        assert!(matches!(links.claim((1, 8)), Claim::Mine(_)));
        assert!(matches!(links.claim((2, 7)), Claim::Mine(_)));
        assert!(matches!(links.claim((1, 7)), Claim::Read(_)));
    }

    #[test]
    fn failed_read_frees_the_inode_for_the_waiter() {
        let links = Links::new(Duration::from_secs(60));
        let Claim::Mine(ticket) = links.claim((1, 7)) else {
            panic!("first claim must read");
        };
        thread::scope(|s| {
            let waiter = s.spawn(|| matches!(links.claim((1, 7)), Claim::Mine(_)));
            thread::sleep(Duration::from_millis(50));
            drop(ticket);
            assert!(waiter.join().unwrap(), "the waiter must read it itself");
        });
    }

    #[test]
    fn no_wait_for_own_read_and_no_wait_past_the_limit() {
        let links = Links::new(Duration::from_millis(100));
        let Claim::Mine(_ticket) = links.claim((1, 7)) else {
            panic!("first claim must read");
        };
        // The reading thread itself (a stolen job deeper in its stack).
        assert!(matches!(links.claim((1, 7)), Claim::Alone));
        // Another thread gives up waiting and reads alone.
        thread::scope(|s| {
            let other = s.spawn(|| matches!(links.claim((1, 7)), Claim::Alone));
            assert!(other.join().unwrap());
        });
    }
}
