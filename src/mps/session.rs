//! Sessions (filaments): their state, receive queue and waiters, and the table
//! that maps handles and (conduit, domain, mailbox) names to them.

use super::dispatch::Queued;
use super::{Callback, Held, SessionId};
use crate::cmi::Conn;
use crate::status::Status;
use crate::sync::{Condvar, Mutex, RwLock};
use hashbrown::HashTable;
use rustc_hash::FxHasher;
use std::hash::{Hash, Hasher};
use std::collections::VecDeque;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;
use std::time::Instant;

/// A session's name within its SP.
#[derive(Clone, PartialEq, Eq, Hash, Debug)]
pub(crate) struct Key {
    pub conduit: u32,
    pub domain: u32,
}

/// One open session. Its mutable state lives in one place, `st`.
pub(crate) struct Session {
    pub id: SessionId,
    pub key: Key,
    pub name: String,
    pub context: usize,
    pub callback: Option<Callback>,
    pub st: Mutex<State>,
    /// Signalled, while test receives wait (`State::testers`), when a
    /// message bound for the queue is dispatched or dropped, and at close.
    pub settled: Condvar,
}

/// Everything about a session that changes.
#[derive(Default)]
pub(crate) struct State {
    /// `MpsClose` was called: new sends and receives are refused.
    pub closing: bool,
    /// The close completed; the name and handle are free again.
    pub closed: bool,
    /// Sends not finished: synchronous ones still in their call, asynchronous
    /// ones until their MessageSent callback has returned.
    pub sends: usize,
    /// Asynchronous sends among `sends` (bounded by `async_sends_per_session`).
    pub async_sends: usize,
    /// Threads inside `MpsSynchronousReceive` for this session.
    pub receivers: usize,
    /// Messages for synchronous receive, oldest first (seed FIG. 8B).
    pub queue: VecDeque<Held>,
    /// Blocked receivers, oldest first.
    pub waiters: VecDeque<Arc<Waiter>>,
    /// Events for the callback, in order.
    pub events: VecDeque<Queued>,
    /// MessageReceived events among `events` (bounded like `queue`).
    pub received_events: usize,
    /// Messages accepted (their confirmation on its way) but not yet dispatched.
    pub reserved: usize,
    /// Those of `reserved` bound for `queue`, by ticket in the order they were
    /// accepted (`queue_ticket_base` is the front's; `true` once dispatched or
    /// dropped, popped from the front once settled). A test receive waits for
    /// the ones accepted before it began, and only those.
    pub queue_tickets: VecDeque<bool>,
    /// The ticket of `queue_tickets`' front.
    pub queue_ticket_base: u64,
    /// Test receives waiting on `settled`.
    pub testers: usize,
    /// The SP the last message came from (the link a receiver may read itself).
    pub last_sender: Option<crate::sp_id::SpId>,
    /// Bytes of the messages the session holds for its client: reserved,
    /// queued, or waiting for the callback (bounded by `session_queue_bytes`).
    pub held_bytes: u64,
    /// The session is on the dispatcher's run queue or a worker is running its callback.
    pub scheduled: bool,
    /// A worker is running one of this session's callbacks right now (the
    /// event has left `events`): a close meanwhile is pending, and its
    /// `CloseCompleted` follows that callback's return.
    pub running: bool,
}

impl State {
    /// Reserves a place for a message being accepted; its ticket when it is
    /// bound for `queue` (0 otherwise).
    pub fn reserve(&mut self, for_queue: bool) -> u64 {
        self.reserved += 1;
        if !for_queue {
            return 0;
        }
        let ticket = self.next_queue_ticket();
        self.queue_tickets.push_back(false);
        ticket
    }

    /// Ends a reservation made by `reserve` (the message was dispatched, or dropped).
    pub fn unreserve(&mut self, for_queue: bool, ticket: u64) {
        self.reserved -= 1;
        if for_queue {
            self.queue_tickets[(ticket - self.queue_ticket_base) as usize] = true;
            while self.queue_tickets.front() == Some(&true) {
                self.queue_tickets.pop_front();
                self.queue_ticket_base += 1;
            }
        }
    }

    /// The ticket the next message bound for `queue` will get.
    pub fn next_queue_ticket(&self) -> u64 {
        self.queue_ticket_base + self.queue_tickets.len() as u64
    }

    /// A message bound for `queue` and accepted before ticket `horizon` was
    /// handed out is not yet dispatched (its confirmation may have reached
    /// its sender already).
    pub fn unsettled_before(&self, horizon: u64) -> bool {
        !self.queue_tickets.is_empty() && self.queue_ticket_base < horizon
    }

    /// Nothing keeps a closing session open any more: no send unfinished, no
    /// receiver inside `receive`, no event undelivered or callback running,
    /// and no message confirmed to its sender but not yet dispatched (a
    /// confirmed message always reaches the session: SPEC 5).
    pub fn idle(&self) -> bool {
        self.sends == 0 && self.receivers == 0 && self.events.is_empty() && !self.running && self.reserved == 0
    }
}

/// A thread blocked in `MpsSynchronousReceive`.
pub(crate) struct Waiter {
    pub transaction: u32,
    slot: Mutex<Option<Result<Held, Status>>>,
    cv: Condvar,
    /// The link this waiter's thread is reading, if it is: a completion from
    /// another thread must interrupt that read.
    reading: Mutex<Option<(crate::sync::ThreadId, Arc<Conn>)>>,
}

impl Waiter {
    pub fn new(transaction: u32) -> Arc<Waiter> {
        Arc::new(Waiter { transaction, slot: Mutex::new(None), cv: Condvar::new(), reading: Mutex::new(None) })
    }

    /// Whether a message with `tag` is for this waiter.
    pub fn wants(&self, tag: u32) -> bool {
        self.transaction == 0 || self.transaction == tag
    }

    /// Hands the waiter its result. Called with the session's lock held, after
    /// removing the waiter from the session's list.
    pub fn complete(&self, r: Result<Held, Status>) {
        *self.slot.lock() = Some(r);
        self.cv.notify_one();
        if let Some((reader, conn)) = self.reading.lock().as_ref() {
            if *reader != crate::sync::current_thread() {
                conn.interrupt();
            }
        }
    }

    /// Runs `f` (which reads `conn`) with this waiter known as its reader.
    pub fn lead(&self, conn: &Arc<Conn>, f: impl FnOnce()) {
        *self.reading.lock() = Some((crate::sync::current_thread(), conn.clone()));
        f();
        *self.reading.lock() = None;
    }

    /// True once `complete` has run.
    pub fn is_done(&self) -> bool {
        self.slot.lock().is_some()
    }

    /// Waits until `complete` has run, without taking the result.
    pub fn wait_done(&self) {
        let mut s = self.slot.lock();
        while s.is_none() {
            self.cv.wait(&mut s);
        }
    }

    /// Waits for a result until `deadline` (`None`: forever). `None` when the time ran out.
    pub fn wait(&self, deadline: Option<Instant>) -> Option<Result<Held, Status>> {
        let mut s = self.slot.lock();
        loop {
            if let Some(r) = s.take() {
                return Some(r);
            }
            match deadline {
                None => self.cv.wait(&mut s),
                Some(d) => {
                    if self.cv.wait_until(&mut s, d).timed_out() {
                        return s.take();
                    }
                }
            }
        }
    }

    /// Takes a result that `complete` stored (after the waiter lost its place in the list).
    pub fn take(&self) -> Option<Result<Held, Status>> {
        self.slot.lock().take()
    }
}

/// The caller of a synchronous send, waiting for its confirmation.
pub(crate) struct SyncSlot {
    status: Mutex<Option<Status>>,
    cv: Condvar,
}

impl SyncSlot {
    pub fn new() -> Arc<SyncSlot> {
        Arc::new(SyncSlot { status: Mutex::new(None), cv: Condvar::new() })
    }
    pub fn complete(&self, st: Status) {
        *self.status.lock() = Some(st);
        self.cv.notify_one();
    }
    pub fn is_done(&self) -> bool {
        self.status.lock().is_some()
    }
    /// Blocks until `complete`. A confirmation always comes: from the peer, or
    /// as STATUS_CONNECTION_DISCONNECTED when the link is lost (bounded by the
    /// dead-peer timeout), or at shutdown.
    pub fn wait(&self) -> Status {
        let mut s = self.status.lock();
        loop {
            if let Some(st) = *s {
                return st;
            }
            self.cv.wait(&mut s);
        }
    }
}

// --- the table ------------------------------------------------------------------

/// Most sessions one SP can have open (24 bits of the handle).
pub const MAX_SESSIONS: usize = 1 << 24;
const HANDLE_TAG: u64 = 0xA5 << 56;

/// Process-wide, so a handle from one SP instance (or from before a shutdown)
/// never matches a session of another.
static NEXT_GENERATION: AtomicU32 = AtomicU32::new(1);

struct Slot {
    generation: u32,
    session: Option<Arc<Session>>,
}

/// Handles and names of the open sessions.
#[derive(Default)]
pub(crate) struct Table {
    slots: RwLock<Vec<Slot>>,
    free: Mutex<Vec<u32>>,
    /// Every open session, found by (conduit, domain, mailbox name): one
    /// probe per delivered message, so an entry is only the `Arc` (the name
    /// it is compared with lives in the session).
    names: RwLock<HashTable<Arc<Session>>>,
}

impl SessionId {
    fn new(generation: u32, index: u32) -> SessionId {
        SessionId(HANDLE_TAG | (generation as u64) << 24 | index as u64)
    }
    fn parts(self) -> Option<(u32, usize)> {
        if self.0 & (0xFF << 56) != HANDLE_TAG {
            return None;
        }
        Some(((self.0 >> 24) as u32, (self.0 & 0xFF_FFFF) as usize))
    }
}

/// The hash a session is filed under in `Table::names`.
fn name_hash(key: &Key, name: &str) -> u64 {
    let mut h = FxHasher::default();
    key.hash(&mut h);
    name.hash(&mut h);
    h.finish()
}

impl Table {
    /// Registers a new session under its name; `None` when the name is taken
    /// or the table is full (the error says which).
    pub fn insert(
        &self,
        key: Key,
        name: String,
        make: impl FnOnce(SessionId) -> Session,
    ) -> Result<Arc<Session>, Status> {
        let hash = name_hash(&key, &name);
        let mut names = self.names.write();
        if names.find(hash, |s| s.key == key && s.name == name).is_some() {
            return Err(Status::STATUS_OBJECT_NAME_COLLISION);
        }
        let mut slots = self.slots.write();
        let index = match self.free.lock().pop() {
            Some(i) => i as usize,
            None if slots.len() < MAX_SESSIONS => {
                slots.push(Slot { generation: 0, session: None });
                slots.len() - 1
            }
            None => return Err(Status::STATUS_INSUFFICIENT_RESOURCES),
        };
        let mut generation = NEXT_GENERATION.fetch_add(1, Ordering::Relaxed);
        if generation == 0 {
            generation = NEXT_GENERATION.fetch_add(1, Ordering::Relaxed);
        }
        let s = Arc::new(make(SessionId::new(generation, index as u32)));
        slots[index] = Slot { generation, session: Some(s.clone()) };
        debug_assert!(s.key == key && s.name == name, "the session carries the name it is filed under");
        names.insert_unique(hash, s.clone(), |x| name_hash(&x.key, &x.name));
        Ok(s)
    }

    /// The open session behind a handle; `STATUS_INVALID_HANDLE` for anything else.
    pub fn get(&self, id: SessionId) -> Result<Arc<Session>, Status> {
        let (generation, index) = id.parts().ok_or(Status::STATUS_INVALID_HANDLE)?;
        let slots = self.slots.read();
        match slots.get(index) {
            Some(Slot { generation: g, session: Some(s) }) if *g == generation => Ok(s.clone()),
            _ => Err(Status::STATUS_INVALID_HANDLE),
        }
    }

    /// The session open under a name, for delivery.
    pub fn lookup(&self, key: &Key, name: &str) -> Option<Arc<Session>> {
        self.names.read().find(name_hash(key, name), |s| s.key == *key && s.name == name).cloned()
    }

    /// Forgets a session: its handle goes stale and its name is free.
    pub fn remove(&self, s: &Session) {
        let mut names = self.names.write();
        if let Ok(entry) = names.find_entry(name_hash(&s.key, &s.name), |x| x.id == s.id) {
            entry.remove();
        }
        if let Some((generation, index)) = s.id.parts() {
            let mut slots = self.slots.write();
            if slots.get(index).is_some_and(|sl| sl.generation == generation && sl.session.is_some()) {
                slots[index].session = None;
                self.free.lock().push(index as u32);
            }
        }
    }

    /// Every open session (for shutdown).
    pub fn all(&self) -> Vec<Arc<Session>> {
        self.slots.read().iter().filter_map(|s| s.session.clone()).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn open(t: &Table, conduit: u32, name: &str) -> Result<Arc<Session>, Status> {
        let key = Key { conduit, domain: 7 };
        t.insert(key.clone(), name.to_string(), |id| Session {
            id,
            key,
            name: name.to_string(),
            context: 0,
            callback: None,
            st: Mutex::new(State::default()),
            settled: Condvar::new(),
        })
    }

    #[test]
    fn names_are_found_per_conduit_collide_and_come_free_on_removal() {
        let t = Table::default();
        let mut open_now = Vec::new();
        for k in 0..2000 {
            for conduit in [0, 1] {
                open_now.push(open(&t, conduit, &format!("m{k}")).unwrap());
            }
        }
        assert_eq!(open(&t, 0, "m5").err(), Some(Status::STATUS_OBJECT_NAME_COLLISION));
        let key = |conduit| Key { conduit, domain: 7 };
        for s in &open_now {
            let found = t.lookup(&s.key, &s.name).expect("every open name is found");
            assert_eq!(found.id, s.id, "and it is that session, not the same name on the other conduit");
        }
        assert!(t.lookup(&key(2), "m5").is_none() && t.lookup(&key(0), "m2000").is_none());
        assert!(t.lookup(&Key { conduit: 0, domain: 8 }, "m5").is_none(), "the domain is part of the name");
        // Remove every other session: those names are free, the rest still found.
        for (i, s) in open_now.iter().enumerate() {
            if i % 2 == 0 {
                t.remove(s);
            }
        }
        for (i, s) in open_now.iter().enumerate() {
            assert_eq!(t.lookup(&s.key, &s.name).is_some(), i % 2 == 1, "{} on conduit {}", s.name, s.key.conduit);
            assert_eq!(t.get(s.id).is_ok(), i % 2 == 1);
        }
        // A removed name opens again, as a new session with a new handle.
        let again = open(&t, 0, "m0").unwrap();
        assert_ne!(again.id, open_now[0].id);
        assert_eq!(t.lookup(&key(0), "m0").unwrap().id, again.id);
        // Removing a stale session object does not remove its successor.
        t.remove(&open_now[0]);
        assert_eq!(t.lookup(&key(0), "m0").unwrap().id, again.id);
    }
}
