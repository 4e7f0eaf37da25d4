//! MPS: the Message Passing Service (seed FIG. 2-8C, SPEC sections 4 and 5).
//! Sessions over conduits, synchronous and asynchronous sends with their
//! confirmations, synchronous receive, and the dispatch of events to callbacks.

mod buffer;
mod dispatch;
mod session;
#[cfg(all(test, loom))]
mod model;
// Real SPs and statics: not for the model checker's build (--cfg loom).
#[cfg(all(test, not(loom)))]
mod panic_tests;
#[cfg(all(test, not(loom)))]
mod delivered_tests;
#[cfg(all(test, not(loom)))]
mod resume_tests;
#[cfg(all(test, not(loom)))]
mod tests;

pub use buffer::{MessageBuf, MessageBytes, Payload};
pub(crate) use buffer::LentBytes;
pub use session::MAX_SESSIONS;

use crate::cmi::{frame, Cmi, ConfirmLater, Conn, InboundMessage, LinkDown, NotConfigured, Upcall};
use crate::config::{Address, Config, ConfigError, ConfirmPoint};
use crate::log::{log, Level};
use crate::sp_id::SpId;
use crate::status::Status;
use dispatch::{Delivery, Dispatcher, Queued};
use crate::sync::{AtomicBool, AtomicU64, Mutex};
use session::{Key, Session, SyncSlot, Table, Waiter};
use rustc_hash::FxHashMap;
use std::collections::HashMap;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Weak};
use std::time::{Duration, Instant};

/// Longest mailbox name, in characters (SPEC 4: "of bounded length").
pub const MAX_MAILBOX_NAME: usize = 64;

/// A session handle: opaque, never reused (a closed or forged one is refused).
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
pub struct SessionId(pub u64);

/// A session's callback. Runs on a library thread; calls for one session are
/// serialized and in event order; no library lock is held while it runs.
pub type Callback = Arc<dyn Fn(Event) + Send + Sync>;

/// What a callback is told.
#[derive(Debug)]
pub enum Event {
    /// A pending close completed; the session is gone.
    CloseCompleted {
        /// The session that closed.
        session: SessionId,
        /// `STATUS_SUCCESS`.
        status: Status,
    },
    /// An asynchronous send has its final status; the buffer is the client's again.
    MessageSent {
        /// The sending session.
        session: SessionId,
        /// The client's value from the send.
        context: usize,
        /// `STATUS_SUCCESS` (confirmed) or why it failed.
        status: Status,
        /// The send's SequenceTag.
        tag: u32,
        /// The buffer that was sent.
        buffer: MessageBuf,
    },
    /// A message arrived.
    MessageReceived(ReceivedMessage),
}

/// A message delivered to a session.
#[derive(Debug)]
pub struct ReceivedMessage {
    /// The bytes.
    pub data: Vec<u8>,
    /// The SP that sent it.
    pub sender: SpId,
    /// The sender's SequenceTag.
    pub tag: u32,
    /// The receiving session.
    pub session: SessionId,
    /// The receiving session's context (from `open`).
    pub context: usize,
}

/// How long `receive` waits (the seed's `Timeout` argument).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Timeout {
    /// `Timeout < 0`: until a message comes (or the session closes).
    Forever,
    /// `Timeout == 0`: only looks.
    Test,
    /// `Timeout > 0`: at most this many seconds.
    Seconds(u32),
}

impl Timeout {
    /// From the seed's `LONG Timeout`.
    pub fn from_long(t: i32) -> Timeout {
        match t {
            t if t < 0 => Timeout::Forever,
            0 => Timeout::Test,
            t => Timeout::Seconds(t as u32),
        }
    }
}

/// A session's state at one moment (`Mps::session_info`, `MpsQuerySession`):
/// for diagnostics, and for tests that must know a receiver is waiting.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct SessionInfo {
    /// Messages queued for `receive`, not yet taken.
    pub queued: usize,
    /// Threads inside `receive` on this session (waiting, or about to).
    pub receivers: usize,
    /// Sends not finished (synchronous ones in their call, asynchronous ones
    /// until their `MessageSent` callback has been run).
    pub sends: usize,
    /// Events waiting for the callback.
    pub pending_events: usize,
    /// Read from a callback: the events of the delivery the running event
    /// came in that have not started yet. A delivery is what the library
    /// hands over at once: the completions one CONFIRM frame brings, spread
    /// over any number of sessions, or the failures of one link's end; any
    /// other event is a delivery of its own. 0 means the running event is the
    /// last of its delivery: the moment to wake a thread waiting on them, and
    /// it comes at the end of every delivery, however backlogged other
    /// sessions are.
    ///
    /// Read from any other thread: the events not yet started for all this
    /// SP's callbacks (a diagnostic; it stays above 0 for as long as any
    /// session is backlogged, so nothing should wait for it to reach 0).
    pub sp_pending_events: usize,
    /// `close` was called and the close is pending.
    pub closing: bool,
}

/// What `close` did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CloseOutcome {
    /// Closed now; no callback follows.
    Closed,
    /// Work was outstanding; the session closes when it is done, and a session
    /// with a callback then gets exactly one `CloseCompleted`.
    Pending,
}

impl CloseOutcome {
    /// `STATUS_SUCCESS` or `STATUS_PENDING`.
    pub fn status(self) -> Status {
        match self {
            CloseOutcome::Closed => Status::STATUS_SUCCESS,
            CloseOutcome::Pending => Status::STATUS_PENDING,
        }
    }
}

/// How a send is finished when its confirmation (or failure) comes.
enum Pending {
    Sync(Arc<SyncSlot>),
    Async { session: Arc<Session>, buffer: MessageBuf, tag: u32, context: usize },
}

/// A send on a link, awaiting its confirmation.
struct Outstanding {
    epoch: u64,
    pending: Pending,
}

/// A reading thread's scratch space for one CONFIRM frame.
#[derive(Default)]
struct ConfirmBatch {
    done: Vec<(Pending, Status)>,
    wake: Vec<Arc<Session>>,
}

thread_local! {
    static BATCH: std::cell::RefCell<ConfirmBatch> = std::cell::RefCell::new(ConfirmBatch::default());
    /// Set while a library thread runs a client callback.
    static IN_CALLBACK: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
    /// While a callback runs: the events of its delivery not yet started.
    static DELIVERY_LEFT: std::cell::Cell<Option<usize>> = const { std::cell::Cell::new(None) };
}

/// The delivery for the events that completing `pending` will queue (one per
/// asynchronous send), or `None` when there are none.
fn async_delivery<'a>(pending: impl Iterator<Item = &'a Pending>) -> Option<Arc<Delivery>> {
    let n = pending.filter(|p| matches!(p, Pending::Async { .. })).count();
    (n > 0).then(|| Delivery::new(n))
}

/// True on a library thread while it runs a client callback.
pub fn in_callback() -> bool {
    IN_CALLBACK.with(|c| c.get())
}

pub(crate) struct Core {
    /// This core itself (for the loopback receipts that complete its sends).
    me: Weak<Core>,
    cfg: Arc<Config>,
    table: Table,
    dispatcher: Dispatcher,
    cmi: once_cell::sync::OnceCell<Cmi<Up>>,
    /// Sends awaiting confirmation, per peer SP.
    outstanding: HashMap<SpId, Mutex<FxHashMap<u64, Outstanding>>>,
    next_message_id: AtomicU64,
    stopped: AtomicBool,
    /// Held (shared) by a send from its checks until its completion is in the
    /// hands of whoever will report it (the outstanding table, or the
    /// session's events); `shutdown` takes it exclusively once, after setting
    /// `stopped`: every send either started before and has its completion
    /// queued before the callback threads stop, or sees `stopped` and is
    /// refused (issue 8, item 16(c)).
    send_gate: parking_lot::RwLock<()>,
}

/// A running SP: the safe Rust API. [`Mps::start`] brings it up; dropping the
/// last [`Mps`] (or calling [`Mps::shutdown`]) tears it down. Clones share it.
/// A callback that captures a clone keeps the SP alive: call `shutdown`.
#[derive(Clone)]
pub struct Mps {
    owner: Arc<Owner>,
}

/// Tears the SP down when the last `Mps` goes.
struct Owner {
    core: Arc<Core>,
}

impl Drop for Owner {
    fn drop(&mut self) {
        self.core.shutdown();
    }
}

/// Adapts the transport's upcalls to the core without a reference cycle.
pub(crate) struct Up(Weak<Core>);

/// Confirming on delivery (`link.confirm = "delivered"`): the confirmation a
/// message's sender is owed, which travels with the message until the client
/// has it (`delivered`: STATUS_SUCCESS, after the callback that received it
/// returned, or as `receive` hands it over) or it is discarded (`discarded`:
/// STATUS_PIPE_CLOSING, the status a closing session gives; never SUCCESS).
/// One dropped unsettled is discarded, so no path leaves its sender waiting
/// (a sender does not time out the messages of a peer that confirms on
/// delivery). Settled or dropped only with no session lock held: a loopback
/// receipt completes a send of the very session it was received on.
pub(crate) struct Receipt(Option<Owed>);

enum Owed {
    /// From a peer: its confirmation, on the link session it came in on (if
    /// that session is over the confirmation cannot leave, and its sender
    /// hears STATUS_CONNECTION_DISCONNECTED instead).
    Link(ConfirmLater),
    /// A loopback message (a send to this SP itself): the send to complete.
    Local(Weak<Core>, Box<Pending>),
}

impl Receipt {
    /// The client has the message: its sender gets STATUS_SUCCESS.
    fn delivered(mut self) {
        self.settle(Status::STATUS_SUCCESS);
    }

    /// The message was discarded before any client had it.
    fn discarded(mut self) {
        self.settle(Status::STATUS_PIPE_CLOSING);
    }

    fn settle(&mut self, status: Status) {
        match self.0.take() {
            None => {}
            Some(Owed::Link(c)) => {
                // False: the link session is over; its end fails the send.
                let _ = c.send(status);
            }
            Some(Owed::Local(core, p)) => match core.upgrade() {
                Some(core) => core.complete(*p, status, None, None),
                None => {
                    if let Pending::Sync(slot) = *p {
                        slot.complete(status);
                    }
                }
            },
        }
    }
}

impl Drop for Receipt {
    fn drop(&mut self) {
        self.settle(Status::STATUS_PIPE_CLOSING);
    }
}

/// Tells the senders of `discarded` messages (taken out of a session's
/// queue, its lock let go since) that no client will have them.
fn settle_discarded(discarded: Vec<Held>) {
    for r in discarded.into_iter().filter_map(|h| h.receipt) {
        r.discarded();
    }
}

/// A message a session holds for its synchronous receive (queued, or handed
/// to a waiting receiver), with the confirmation its sender is owed when this
/// SP confirms on delivery.
pub(crate) struct Held {
    pub msg: ReceivedMessage,
    pub receipt: Option<Receipt>,
}

impl Held {
    /// The message, handed to the client now: its sender's confirmation
    /// leaves (on delivery). Called with no session lock held.
    fn hand_over(self) -> ReceivedMessage {
        if let Some(r) = self.receipt {
            r.delivered();
        }
        self.msg
    }
}

/// A message accepted into a session (its place reserved), waiting for its
/// confirmation to leave before it is dispatched (seed FIG. 8A).
pub(crate) struct Accepted {
    /// To finish a pending close should this be the last thing it waited for.
    core: Weak<Core>,
    session: Arc<Session>,
    /// `None` once dispatched.
    msg: Option<ReceivedMessage>,
    /// For synchronous receive (FIG. 8B), not the callback (FIG. 8C).
    to_queue: bool,
    /// Its place among the session's reservations for the queue (`to_queue`).
    ticket: u64,
    /// Confirming on delivery: what its sender is owed (dropped with the
    /// message if it is never dispatched, after the session's lock is let go).
    receipt: Option<Receipt>,
}

impl Drop for Accepted {
    fn drop(&mut self) {
        // Never dispatched (its confirmation could not leave): the
        // reservation ends here and the message is discarded.
        if let Some(m) = &self.msg {
            let mut st = self.session.st.lock();
            st.unreserve(self.to_queue, self.ticket);
            st.held_bytes -= m.data.len() as u64;
            if let Some(core) = self.core.upgrade() {
                core.maybe_finish_close(&self.session, &mut st);
            }
            let testers = st.testers > 0;
            drop(st);
            if testers {
                self.session.settled.notify_all();
            }
        }
    }
}

impl Upcall for Up {
    type Accepted = Accepted;
    fn accept(&self, from: SpId, msg: InboundMessage<'_>) -> Result<Accepted, Status> {
        match self.0.upgrade() {
            Some(c) => c.accept(from, msg).map(|mut a| {
                a.core = self.0.clone();
                a
            }),
            None => Err(Status::STATUS_OBJECT_NAME_NOT_FOUND),
        }
    }
    fn dispatch(&self, a: Accepted) {
        if let Some(c) = self.0.upgrade() {
            c.dispatch(a)
        }
    }
    fn confirmed(&self, from: SpId, epoch: u64, entries: &mut dyn Iterator<Item = (u64, Status)>) {
        if let Some(c) = self.0.upgrade() {
            c.confirmed(from, epoch, entries)
        }
    }
    fn link_down(&self, peer: SpId, epoch: u64) {
        if let Some(c) = self.0.upgrade() {
            c.link_down(peer, epoch)
        }
    }
}

impl Mps {
    /// Starts an SP: listens, dials its peers, starts the callback threads.
    pub fn start(cfg: Config) -> Result<Mps, ConfigError> {
        let cfg = Arc::new(cfg);
        let core = Core::new(cfg.clone());
        let fail = |reason: String| ConfigError { origin: format!("SP {}", cfg.local), line: None, reason };
        core.dispatcher.start(&core, cfg.callback_threads).map_err(|e| fail(format!("cannot start callback threads: {e}")))?;
        let cmi = match Cmi::start(cfg.clone(), Arc::new(Up(Arc::downgrade(&core)))) {
            Ok(c) => c,
            Err(e) => {
                core.dispatcher.stop();
                return Err(fail(e.to_string()));
            }
        };
        let _ = core.cmi.set(cmi);
        log!(Level::Info, "SP {} started with {} peer(s)", cfg.local, cfg.peers.len());
        Ok(Mps { owner: Arc::new(Owner { core }) })
    }

    /// Starts an SP from the environment (`MPS_CONFIG`, or the embedded default).
    pub fn from_env() -> Result<Mps, ConfigError> {
        Mps::start(Config::from_env()?)
    }

    /// This SP's configuration.
    pub fn config(&self) -> &Config {
        &self.owner.core.cfg
    }

    /// This SP's id.
    pub fn local_sp(&self) -> SpId {
        self.owner.core.cfg.local
    }

    /// The other SP of this SP's storage unit, when it is configured.
    pub fn unit_partner(&self) -> Option<SpId> {
        self.owner.core.cfg.unit_partner()
    }

    /// The address this SP listens on (with the real port for `tcp:...:0`).
    pub fn listen_address(&self) -> Option<Address> {
        self.owner.core.cmi.get().and_then(|c| c.listen_address().cloned())
    }

    /// Every address this SP listens on (`listen`, then `second_listen`),
    /// with the real ports.
    pub fn listen_addresses(&self) -> Vec<Address> {
        self.owner.core.cmi.get().map(|c| c.listen_addresses().to_vec()).unwrap_or_default()
    }

    /// Opens a session (`MpsOpen`).
    pub fn open(
        &self,
        callback: Option<Callback>,
        conduit: u32,
        domain: u32,
        mailbox: &str,
        context: usize,
    ) -> Result<SessionId, Status> {
        self.owner.core.open(callback, conduit, domain, mailbox, context)
    }

    /// Closes a session (`MpsClose`).
    pub fn close(&self, s: SessionId) -> Result<CloseOutcome, Status> {
        self.owner.core.close(s)
    }

    /// Sends `buffer[..size]` and blocks until the target confirms (`MpsSynchronousSend`).
    pub fn send_sync(&self, s: SessionId, dest: SpId, buffer: &MessageBuf, size: usize, tag: u32) -> Result<(), Status> {
        self.owner.core.send_sync(s, dest, buffer, size, tag)
    }

    /// Sends `buffer[..size]` and returns at once (`MpsAsynchronousSend`). On
    /// success the buffer comes back in exactly one `Event::MessageSent`; when
    /// refused it comes back with the reason, and no event follows.
    pub fn send_async(
        &self,
        s: SessionId,
        dest: SpId,
        buffer: MessageBuf,
        size: usize,
        tag: u32,
        context: usize,
    ) -> Result<(), (Status, MessageBuf)> {
        self.owner.core.send_async(s, dest, buffer, size, tag, context)
    }

    /// Takes the oldest queued message (whose tag is `transaction`, unless it
    /// is 0), waiting as `timeout` says (`MpsSynchronousReceive`).
    pub fn receive(&self, s: SessionId, timeout: Timeout, transaction: u32) -> Result<ReceivedMessage, Status> {
        self.owner.core.receive(s, timeout, transaction)
    }

    /// A session's state at this moment.
    pub fn session_info(&self, s: SessionId) -> Result<SessionInfo, Status> {
        let s = self.owner.core.table.get(s)?;
        let st = s.st.lock();
        Ok(SessionInfo {
            queued: st.queue.len(),
            receivers: st.receivers,
            sends: st.sends,
            pending_events: st.events.len(),
            sp_pending_events: match DELIVERY_LEFT.with(|c| c.get()) {
                Some(left) if in_callback() => left,
                _ => self.owner.core.dispatcher.queued_events(),
            },
            closing: st.closing,
        })
    }

    /// Waits until the link to `sp` is up (at once for this SP itself).
    /// `Err(STATUS_TIMEOUT)` when it is not up in time, `Err(STATUS_INVALID_ADDRESS)`
    /// when `sp` is not configured.
    pub fn wait_for_peer(&self, sp: SpId, timeout: Option<Duration>) -> Result<(), Status> {
        if sp == self.owner.core.cfg.local {
            return Ok(());
        }
        let cmi = self.owner.core.cmi.get().ok_or(Status::STATUS_INVALID_HANDLE)?;
        match cmi.wait_link(sp, timeout) {
            Ok(true) => Ok(()),
            Ok(false) => Err(Status::STATUS_TIMEOUT),
            Err(NotConfigured) => Err(Status::STATUS_INVALID_ADDRESS),
        }
    }

    /// The link to `sp` at this moment (its state, protocol version,
    /// incarnations, connections, refused duplicates); `Err(STATUS_INVALID_ADDRESS)`
    /// when `sp` is not a configured peer.
    pub fn link_info(&self, sp: SpId) -> Result<crate::cmi::LinkInfo, Status> {
        let cmi = self.owner.core.cmi.get().ok_or(Status::STATUS_INVALID_HANDLE)?;
        cmi.link_info(sp).map_err(|NotConfigured| Status::STATUS_INVALID_ADDRESS)
    }
    /// Tears the SP down: links close (their unconfirmed sends fail with
    /// `STATUS_CONNECTION_DISCONNECTED`), blocked receives wake with
    /// `STATUS_CANCELLED`, queued callbacks are delivered, every library thread
    /// is joined. Refused with `STATUS_INVALID_PARAMETER` from inside a callback
    /// (it would join the thread it runs on).
    pub fn shutdown(&self) -> Result<(), Status> {
        if in_callback() {
            log!(Level::Warn, "shutdown refused: called from inside a callback");
            return Err(Status::STATUS_INVALID_PARAMETER);
        }
        self.owner.core.shutdown();
        Ok(())
    }
}

impl Core {
    /// A core with no transport and no callback threads yet (`Mps::start`
    /// adds them; the model checker drives it bare: src/mps/model.rs).
    fn new(cfg: Arc<Config>) -> Arc<Core> {
        let outstanding = cfg.peers.iter().map(|p| (p.sp, Mutex::new(FxHashMap::default()))).collect();
        Arc::new_cyclic(|me| Core {
            me: me.clone(),
            cfg,
            table: Table::default(),
            dispatcher: Dispatcher::new(),
            cmi: once_cell::sync::OnceCell::new(),
            outstanding,
            next_message_id: AtomicU64::new(1),
            stopped: AtomicBool::new(false),
            send_gate: parking_lot::RwLock::new(()),
        })
    }

    fn check_size(&self, buffer: &MessageBuf, size: usize) -> Result<(), Status> {
        if size > buffer.len() {
            log!(Level::Warn, "send refused: Size {size} is larger than the {}-byte buffer", buffer.len());
            return Err(Status::STATUS_INVALID_USER_BUFFER);
        }
        if size > self.cfg.max_message_size as usize {
            log!(Level::Warn, "send refused: {size} bytes is over max_message_size {}", self.cfg.max_message_size);
            return Err(Status::STATUS_INVALID_BUFFER_SIZE);
        }
        Ok(())
    }

    fn open(&self, callback: Option<Callback>, conduit: u32, domain: u32, mailbox: &str, context: usize) -> Result<SessionId, Status> {
        if self.stopped.load(Ordering::Acquire) {
            return Err(Status::STATUS_INVALID_HANDLE);
        }
        if !self.cfg.conduits.contains(&conduit) {
            log!(Level::Warn, "MpsOpen refused: conduit {conduit} is not configured on SP {}", self.cfg.local);
            return Err(Status::STATUS_INVALID_PARAMETER);
        }
        let chars = mailbox.chars().count();
        if chars == 0 || chars > MAX_MAILBOX_NAME || mailbox.contains('\0') {
            log!(Level::Warn, "MpsOpen refused: a mailbox name has 1 to {MAX_MAILBOX_NAME} characters (this one has {chars})");
            return Err(Status::STATUS_INVALID_PARAMETER);
        }
        let key = Key { conduit, domain };
        let s = self
            .table
            .insert(key.clone(), mailbox.to_string(), |id| Session {
                id,
                key,
                name: mailbox.to_string(),
                context,
                callback,
                st: Mutex::new(Default::default()),
                settled: crate::sync::Condvar::new(),
            })
            .inspect_err(|st| {
                log!(Level::Warn, "MpsOpen refused: conduit {conduit} domain {domain:#x} mailbox {mailbox:?}: {st}")
            })?;
        log!(Level::Debug, "session {:#x} opened: conduit {conduit} mailbox {mailbox:?}", s.id.0);
        Ok(s.id)
    }

    fn close(&self, id: SessionId) -> Result<CloseOutcome, Status> {
        let s = self.table.get(id)?;
        let mut st = s.st.lock();
        if st.closing {
            return Err(Status::STATUS_PIPE_CLOSING);
        }
        st.closing = true;
        for w in st.waiters.drain(..) {
            w.complete(Err(Status::STATUS_CANCELLED));
        }
        if st.testers > 0 {
            s.settled.notify_all();
        }
        // Confirming on delivery, the queued messages are discarded now, not
        // when the close completes: no receive can take them any more, and
        // their senders (a loopback send of this very session among them,
        // which keeps the close pending) must hear so.
        let discarded = if self.cfg.confirm == ConfirmPoint::Delivered { self.discard_queue(&s, &mut st) } else { Vec::new() };
        let outcome = if st.idle() {
            self.finish_close(&s, &mut st, false);
            CloseOutcome::Closed
        } else {
            log!(Level::Debug, "session {:#x} close pending: {} send(s), {} receiver(s), {} event(s)", id.0, st.sends, st.receivers, st.events.len());
            CloseOutcome::Pending
        };
        drop(st);
        settle_discarded(discarded);
        Ok(outcome)
    }

    /// Takes the session's queued messages out to be discarded (each with its
    /// receipt, to be settled once the lock is let go), saying so in the log.
    fn discard_queue(&self, s: &Session, st: &mut session::State) -> Vec<Held> {
        if st.queue.is_empty() {
            return Vec::new();
        }
        log!(
            Level::Warn,
            "session {:#x} ({:?}) closed with {} queued message(s) not received; they are discarded",
            s.id.0,
            s.name,
            st.queue.len()
        );
        let out: Vec<Held> = st.queue.drain(..).collect();
        st.held_bytes -= out.iter().map(|h| h.msg.data.len() as u64).sum::<u64>();
        out
    }

    pub(crate) fn maybe_finish_close_pub(&self, s: &Arc<Session>, st: &mut session::State) {
        self.maybe_finish_close(s, st)
    }

    /// Completes a pending close once nothing is outstanding (SPEC 4).
    fn maybe_finish_close(&self, s: &Arc<Session>, st: &mut session::State) {
        if st.closing && !st.closed && st.idle() {
            self.finish_close(s, st, s.callback.is_some());
        }
    }

    fn finish_close(&self, s: &Arc<Session>, st: &mut session::State, notify: bool) {
        st.closed = true;
        // Confirming on delivery, `close` discarded the queue and nothing is
        // queued while closing: no receipt is dropped under the lock here.
        debug_assert!(st.queue.iter().all(|h| h.receipt.is_none()), "a queued message owed a confirmation at close");
        // Confirmed to their senders, queued in the session, and closed
        // before the client received them: its choice, said out loud.
        drop(self.discard_queue(s, st));
        self.table.remove(s);
        log!(Level::Debug, "session {:#x} closed", s.id.0);
        if notify {
            self.queue_event(st, Event::CloseCompleted { session: s.id, status: Status::STATUS_SUCCESS }, None);
            self.schedule(s, st, None);
        }
    }

    /// Queues an event for the session's callback (counted for
    /// `sp_pending_events`); the caller schedules the session.
    fn queue_event(&self, st: &mut session::State, ev: Event, delivery: Option<&Arc<Delivery>>) {
        self.queue_event_owing(st, ev, delivery, None);
    }

    /// `queue_event`, for a received message whose sender is owed `receipt`
    /// once its callback has returned (confirming on delivery).
    fn queue_event_owing(&self, st: &mut session::State, ev: Event, delivery: Option<&Arc<Delivery>>, receipt: Option<Receipt>) {
        self.dispatcher.count_event();
        st.events.push_back(Queued { ev, delivery: delivery.cloned(), receipt });
    }

    /// Puts a session that has events on the dispatcher's run queue, unless
    /// it is there; with `defer`, into that list instead, for the caller to
    /// hand to the dispatcher together with others (`confirmed`).
    fn schedule(&self, s: &Arc<Session>, st: &mut session::State, defer: Option<&mut Vec<Arc<Session>>>) {
        if !st.scheduled {
            st.scheduled = true;
            match defer {
                Some(v) => v.push(s.clone()),
                None => self.dispatcher.push(s.clone()),
            }
        }
    }

    /// A session's send has finished (its call returned, or its callback ran).
    fn send_done(&self, s: &Arc<Session>, was_async: bool) {
        let mut st = s.st.lock();
        st.sends -= 1;
        if was_async {
            st.async_sends -= 1;
        }
        self.maybe_finish_close(s, &mut st);
    }

    /// Sends one message on its way: locally, or onto the destination's link.
    /// `Ok(())`: the pending completion will run exactly once.
    // The arguments are one send's parts, each used once on the hot path; a
    // struct to carry them would be built and torn down per message.
    #[allow(clippy::too_many_arguments)]
    /// `buffer`: the bytes of a synchronous send; an asynchronous one's are
    /// the buffer in its `pending`, which then holds the send's only clone,
    /// so that a C buffer's completion never waits for this call to return
    /// (`registry::give_back` waits until every clone is gone).
    fn transmit(
        &self,
        s: &Arc<Session>,
        dest: SpId,
        buffer: Option<&MessageBuf>,
        size: usize,
        tag: u32,
        sync: bool,
        pending: Pending,
    ) -> Result<Option<Arc<Conn>>, (Status, Pending)> {
        let buffer = match (&pending, buffer) {
            (Pending::Async { buffer, .. }, _) | (Pending::Sync(_), Some(buffer)) => buffer,
            (Pending::Sync(_), None) => unreachable!("a synchronous send passes its buffer"),
        };
        if dest == self.cfg.local {
            // Loopback: the local MPS is the target; it confirms, then dispatches.
            let verdict = self.accept(
                dest,
                InboundMessage {
                    conduit: s.key.conduit,
                    domain: s.key.domain,
                    tag,
                    sync,
                    name: &s.name,
                    payload: buffer.as_slice()[..size].to_vec(),
                    confirm_later: None,
                },
            );
            match verdict {
                // Confirmed on delivery: the send completes when the client
                // has the message (its receipt), like one from a peer.
                Ok(mut a) if self.cfg.confirm == ConfirmPoint::Delivered => {
                    a.receipt = Some(Receipt(Some(Owed::Local(self.me.clone(), Box::new(pending)))));
                    self.dispatch(a);
                }
                Ok(a) => {
                    self.complete(pending, Status::STATUS_SUCCESS, None, None);
                    self.dispatch(a);
                }
                Err(st) => self.complete(pending, st, None, None),
            }
            return Ok(None);
        }
        let Some(cmi) = self.cmi.get() else {
            return Err((Status::STATUS_HOST_UNREACHABLE, pending));
        };
        let conn = match cmi.link(dest) {
            Err(NotConfigured) => {
                log!(Level::Warn, "send refused: SP {dest} is not a configured destination");
                return Err((Status::STATUS_INVALID_ADDRESS, pending));
            }
            Ok(None) => {
                log!(Level::Warn, "send refused: the link to SP {dest} is down");
                return Err((Status::STATUS_HOST_UNREACHABLE, pending));
            }
            Ok(Some(c)) => c,
        };
        if size > conn.peer_max_message as usize {
            log!(Level::Warn, "send refused: {size} bytes is over SP {dest}'s max_message_size {}", conn.peer_max_message);
            return Err((Status::STATUS_INVALID_BUFFER_SIZE, pending));
        }
        let payload = buffer.payload();
        let id = self.next_message_id.fetch_add(1, Ordering::Relaxed);
        let table = &self.outstanding[&dest];
        table.lock().insert(id, Outstanding { epoch: conn.epoch, pending });
        let head = frame::MessageHead {
            id,
            conduit: s.key.conduit,
            domain: s.key.domain,
            tag,
            mode: if sync { frame::MODE_SYNC } else { frame::MODE_ASYNC },
        };
        match conn.send_message(&head, s.name.as_bytes(), payload, size, !sync) {
            Ok(()) => Ok(Some(conn)),
            Err(LinkDown) => match table.lock().remove(&id) {
                // Whoever removes the entry reports it: here, as refused at call time.
                Some(o) => {
                    log!(Level::Warn, "send refused: the link to SP {dest} went down");
                    Err((Status::STATUS_HOST_UNREACHABLE, o.pending))
                }
                // The link's failure already reported it (CONNECTION_DISCONNECTED).
                None => Ok(None),
            },
        }
    }

    /// A send is finished with `status`; an asynchronous one's session is
    /// scheduled (`defer`: see `schedule`), its event part of `delivery`.
    fn complete(&self, p: Pending, status: Status, defer: Option<&mut Vec<Arc<Session>>>, delivery: Option<&Arc<Delivery>>) {
        match p {
            Pending::Sync(slot) => slot.complete(status),
            Pending::Async { session, buffer, tag, context } => {
                let mut st = session.st.lock();
                self.queue_event(&mut st, Event::MessageSent { session: session.id, context, status, tag, buffer }, delivery);
                self.schedule(&session, &mut st, defer);
            }
        }
    }

    fn send_sync(&self, id: SessionId, dest: SpId, buffer: &MessageBuf, size: usize, tag: u32) -> Result<(), Status> {
        let s = self.table.get(id)?;
        self.check_size(buffer, size)?;
        let gate = self.send_gate.read();
        self.refuse_if_stopped()?;
        {
            let mut st = s.st.lock();
            if st.closing {
                return Err(Status::STATUS_PIPE_CLOSING);
            }
            st.sends += 1;
        }
        let slot = SyncSlot::new();
        let sent = self.transmit(&s, dest, Some(buffer), size, tag, true, Pending::Sync(slot.clone()));
        // Not held while waiting: the shutdown ends the wait (the link closes).
        drop(gate);
        let r = match sent {
            Ok(Some(conn)) => {
                // Read the confirmation ourselves if no one else is reading.
                let cmi = self.cmi.get().expect("a remote send had a link");
                // Only this link's bytes complete the slot (its confirmation,
                // or the link's end): no interrupt needed while reading.
                cmi.wait_on_link(
                    &conn,
                    &|| slot.is_done(),
                    &|| {
                        slot.wait();
                    },
                    true,
                );
                slot.wait()
            }
            Ok(None) => slot.wait(),
            Err((st, _)) => st,
        };
        self.send_done(&s, false);
        if r == Status::STATUS_SUCCESS {
            Ok(())
        } else {
            Err(r)
        }
    }

    fn send_async(
        &self,
        id: SessionId,
        dest: SpId,
        buffer: MessageBuf,
        size: usize,
        tag: u32,
        context: usize,
    ) -> Result<(), (Status, MessageBuf)> {
        let s = match self.table.get(id) {
            Ok(s) => s,
            Err(e) => return Err((e, buffer)),
        };
        if s.callback.is_none() {
            log!(Level::Warn, "asynchronous send refused: session {:#x} has no callback to report completion to", id.0);
            return Err((Status::STATUS_INVALID_PARAMETER, buffer));
        }
        if let Err(e) = self.check_size(&buffer, size) {
            return Err((e, buffer));
        }
        // Until the completion is queued or in the outstanding table.
        let _gate = self.send_gate.read();
        if let Err(e) = self.refuse_if_stopped() {
            return Err((e, buffer));
        }
        {
            let mut st = s.st.lock();
            if st.closing {
                return Err((Status::STATUS_PIPE_CLOSING, buffer));
            }
            if st.async_sends >= self.cfg.async_sends_per_session as usize {
                log!(Level::Warn, "asynchronous send refused: session {:#x} has {} sends outstanding (async_sends_per_session)", id.0, st.async_sends);
                return Err((Status::STATUS_INSUFFICIENT_RESOURCES, buffer));
            }
            st.sends += 1;
            st.async_sends += 1;
        }
        let pending = Pending::Async { session: s.clone(), buffer, tag, context };
        match self.transmit(&s, dest, None, size, tag, false, pending) {
            Ok(_) => Ok(()),
            Err((status, pending)) => {
                self.send_done(&s, true);
                match pending {
                    Pending::Async { buffer, .. } => Err((status, buffer)),
                    Pending::Sync(_) => unreachable!("transmit gives back the pending it was given"),
                }
            }
        }
    }

    /// `STATUS_PIPE_CLOSING` once `shutdown` has begun (called under `send_gate`).
    fn refuse_if_stopped(&self) -> Result<(), Status> {
        if self.stopped.load(Ordering::Acquire) {
            log!(Level::Warn, "send refused: SP {} is shutting down", self.cfg.local);
            return Err(Status::STATUS_PIPE_CLOSING);
        }
        Ok(())
    }

    fn receive(&self, id: SessionId, timeout: Timeout, transaction: u32) -> Result<ReceivedMessage, Status> {
        let s = self.table.get(id)?;
        let mut st = s.st.lock();
        if st.closing {
            return Err(Status::STATUS_PIPE_CLOSING);
        }
        let horizon = st.next_queue_ticket();
        loop {
            if let Some(pos) = st.queue.iter().position(|h| transaction == 0 || h.msg.tag == transaction) {
                let h = st.queue.remove(pos).expect("position is in range");
                st.held_bytes -= h.msg.data.len() as u64;
                drop(st);
                return Ok(h.hand_over());
            }
            // A message already confirmed to its sender may be about to be
            // queued (confirm, then dispatch: FIG. 8A); a test must not miss
            // it. So a test waits for the messages accepted before it began
            // (the link threads' next few instructions: at most the dispatch
            // of one read's messages), and looks again at each one settled;
            // never for those accepted since, or two busy links could keep it
            // waiting for as long as they stream (issue 8, item 16(b)).
            if timeout != Timeout::Test || st.closing || !st.unsettled_before(horizon) {
                break;
            }
            st.testers += 1;
            s.settled.wait(&mut st);
            st.testers -= 1;
        }
        let deadline = match timeout {
            Timeout::Test => return Err(Status::STATUS_TIMEOUT),
            Timeout::Forever => None,
            Timeout::Seconds(n) => Some(Instant::now() + Duration::from_secs(n as u64)),
        };
        let w = Waiter::new(transaction);
        st.waiters.push_back(w.clone());
        st.receivers += 1;
        let last_sender = st.last_sender;
        drop(st);
        // Waiting for as long as it takes, on a session whose messages come
        // from one peer: read that link ourselves when no one else does, so
        // the message wakes us directly (see Cmi::wait_on_link).
        let conn = match (timeout, last_sender) {
            (Timeout::Forever, Some(peer)) if peer != self.cfg.local => {
                self.cmi.get().and_then(|c| c.link(peer).ok().flatten())
            }
            _ => None,
        };
        if let (Some(conn), Some(cmi)) = (conn, self.cmi.get()) {
            w.lead(&conn, || {
                cmi.wait_on_link(&conn, &|| w.is_done(), &|| w.wait_done(), false);
            });
        }
        let got = w.wait(deadline);
        let mut st = s.st.lock();
        let r = match got {
            Some(r) => r,
            None => match st.waiters.iter().position(|x| Arc::ptr_eq(x, &w)) {
                Some(pos) => {
                    st.waiters.remove(pos);
                    Err(Status::STATUS_TIMEOUT)
                }
                // A message (or the close) reached us as the time ran out.
                None => w.take().unwrap_or(Err(Status::STATUS_TIMEOUT)),
            },
        };
        st.receivers -= 1;
        self.maybe_finish_close(&s, &mut st);
        drop(st);
        r.map(Held::hand_over)
    }

    /// A message for a session of this SP (seed FIG. 8A): decides its
    /// confirmation and reserves its place in the session.
    fn accept(&self, from: SpId, m: InboundMessage<'_>) -> Result<Accepted, Status> {
        let key = Key { conduit: m.conduit, domain: m.domain };
        let Some(s) = self.table.lookup(&key, m.name) else {
            log!(Level::Debug, "message from SP {from} for mailbox {:?} (conduit {}) rejected: not open", m.name, m.conduit);
            return Err(Status::STATUS_OBJECT_NAME_NOT_FOUND);
        };
        let to_queue = m.sync || s.callback.is_none();
        let ticket = {
            let mut st = s.st.lock();
            if st.closed {
                return Err(Status::STATUS_OBJECT_NAME_NOT_FOUND);
            }
            if st.closing {
                return Err(Status::STATUS_PIPE_CLOSING);
            }
            let held = if to_queue { st.queue.len() } else { st.received_events } + st.reserved;
            if held >= self.cfg.session_queue_depth as usize {
                log!(Level::Warn, "message from SP {from} for {:?} rejected: the session holds {held} messages (session_queue_depth)", s.name);
                return Err(Status::STATUS_INSUFFICIENT_RESOURCES);
            }
            let bytes = m.payload.len() as u64;
            if st.held_bytes + bytes > self.cfg.session_queue_bytes {
                log!(
                    Level::Warn,
                    "message from SP {from} for {:?} rejected: the session holds {} bytes (session_queue_bytes)",
                    s.name,
                    st.held_bytes
                );
                return Err(Status::STATUS_INSUFFICIENT_RESOURCES);
            }
            st.held_bytes += bytes;
            st.reserve(to_queue)
        };
        let receipt = m.confirm_later.map(|c| Receipt(Some(Owed::Link(c))));
        let msg = ReceivedMessage { data: m.payload, sender: from, tag: m.tag, session: s.id, context: s.context };
        Ok(Accepted { core: Weak::new(), session: s, msg: Some(msg), to_queue, ticket, receipt })
    }

    /// Delivers an accepted message whose confirmation has left: to a blocked
    /// receiver or the queue (FIG. 8B), or to the callback (FIG. 8C).
    ///
    /// Confirming on delivery, its receipt goes with it (to the waiter, the
    /// queue or the callback's event); a message discarded here instead
    /// (its session closed, or closing and bound for the queue, which no
    /// receive takes from any more) has its receipt discarded.
    fn dispatch(&self, mut a: Accepted) {
        let Some(msg) = a.msg.take() else { return };
        let receipt = a.receipt.take();
        let s = &a.session;
        let mut st = s.st.lock();
        st.unreserve(a.to_queue, a.ticket);
        if a.to_queue && st.testers > 0 {
            s.settled.notify_all();
        }
        if st.closed || (a.to_queue && st.closing && receipt.is_some()) {
            // Closed in between: discarded, like a message queued at close.
            st.held_bytes -= msg.data.len() as u64;
            self.maybe_finish_close(s, &mut st);
            drop(st);
            if let Some(r) = receipt {
                r.discarded();
            }
            return;
        }
        st.last_sender = Some(msg.sender);
        if a.to_queue {
            if let Some(pos) = st.waiters.iter().position(|w| w.wants(msg.tag)) {
                let w = st.waiters.remove(pos).expect("position is in range");
                st.held_bytes -= msg.data.len() as u64;
                w.complete(Ok(Held { msg, receipt }));
                return;
            }
            st.queue.push_back(Held { msg, receipt });
            // A close that waited for this message's dispatch completes now
            // (and discards the queue, as any close does).
            self.maybe_finish_close(s, &mut st);
        } else {
            st.received_events += 1;
            self.queue_event_owing(&mut st, Event::MessageReceived(msg), None, receipt);
            self.schedule(s, &mut st, None);
        }
    }

    /// One CONFIRM frame's worth of confirmations: the sends leave the
    /// outstanding table under one lock, then complete; the sessions that got
    /// events are handed to the dispatcher together at the end, so a batch of
    /// completions costs one wake-up of a callback thread, not one each (and
    /// the reader is not preempted by that thread halfway through the batch).
    fn confirmed(&self, from: SpId, epoch: u64, entries: &mut dyn Iterator<Item = (u64, Status)>) {
        let Some(table) = self.outstanding.get(&from) else { return };
        // Reused per reading thread: no allocation per frame once warm.
        let mut b = BATCH.with(|b| std::mem::take(&mut *b.borrow_mut()));
        let mut unknown = 0usize;
        {
            let mut t = table.lock();
            for (id, status) in entries {
                match t.get(&id) {
                    // Only the connection a message went out on confirms it
                    // (the link checks this too); a message of an earlier
                    // connection fails with that connection (link_down).
                    Some(o) if o.epoch == epoch => {
                        let o = t.remove(&id).expect("present");
                        b.done.push((o.pending, status));
                    }
                    _ => unknown += 1,
                }
            }
        }
        if unknown > 0 {
            log!(Level::Debug, "{unknown} confirmation(s) of unknown messages from SP {from} ignored");
        }
        // One delivery: the callbacks can tell the last of this frame's completions.
        let delivery = async_delivery(b.done.iter().map(|(p, _)| p));
        for (p, status) in b.done.drain(..) {
            self.complete(p, status, Some(&mut b.wake), delivery.as_ref());
        }
        self.dispatcher.push_all(&mut b.wake);
        BATCH.with(|c| *c.borrow_mut() = b);
    }

    fn link_down(&self, peer: SpId, epoch: u64) {
        let Some(table) = self.outstanding.get(&peer) else { return };
        let mut lost: Vec<(u64, Outstanding)> = {
            let mut t = table.lock();
            let ids: Vec<u64> = t.iter().filter(|(_, o)| o.epoch == epoch).map(|(id, _)| *id).collect();
            ids.into_iter().filter_map(|id| t.remove(&id).map(|o| (id, o))).collect()
        };
        if !lost.is_empty() {
            log!(Level::Warn, "{} message(s) to SP {peer} failed: link lost before confirmation", lost.len());
        }
        // In send order, so each session hears of its failures in order.
        lost.sort_by_key(|(id, _)| *id);
        let delivery = async_delivery(lost.iter().map(|(_, o)| &o.pending));
        for (_, o) in lost {
            self.complete(o.pending, Status::STATUS_CONNECTION_DISCONNECTED, None, delivery.as_ref());
        }
    }

    /// Runs one event's callback on a dispatcher thread, then its bookkeeping.
    /// The bookkeeping comes first: once the client sees an event, the
    /// library is done with it, so a client that closes the session after
    /// seeing its last completion gets STATUS_SUCCESS, not a race with the
    /// library's accounting. (A CloseCompleted this makes due still comes
    /// after this callback: the session's events are run in order.)
    ///
    /// Confirming on delivery, a received message's sender gets its
    /// STATUS_SUCCESS once the callback has returned: also when it panicked
    /// (the message was handed over; what the client made of it is the
    /// client's, and the library keeps no copy to hand over again).
    pub(crate) fn run_event(&self, s: &Arc<Session>, ev: Event, delivery_left: usize, receipt: Option<Receipt>) {
        match &ev {
            Event::MessageSent { .. } => self.send_done(s, true),
            Event::MessageReceived(m) => {
                let mut st = s.st.lock();
                st.received_events -= 1;
                st.held_bytes -= m.data.len() as u64;
            }
            Event::CloseCompleted { .. } => {}
        }
        if let Some(cb) = &s.callback {
            IN_CALLBACK.with(|c| c.set(true));
            DELIVERY_LEFT.with(|c| c.set(Some(delivery_left)));
            let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| cb(ev)));
            DELIVERY_LEFT.with(|c| c.set(None));
            IN_CALLBACK.with(|c| c.set(false));
            if r.is_err() {
                log!(Level::Error, "a callback of session {:#x} panicked; the event is dropped", s.id.0);
            }
            if let Some(r) = receipt {
                r.delivered();
            }
        }
    }

    fn shutdown(&self) {
        if self.stopped.swap(true, Ordering::AcqRel) {
            return;
        }
        // Sends in progress finish queueing their completions (they never
        // block while they hold the gate); later ones see `stopped`. So no
        // completion is queued after the callback threads stop below.
        drop(self.send_gate.write());
        log!(Level::Info, "SP {} shutting down", self.cfg.local);
        if let Some(cmi) = self.cmi.get() {
            cmi.shutdown();
        }
        for s in self.table.all() {
            let mut st = s.st.lock();
            st.closing = true;
            for w in st.waiters.drain(..) {
                w.complete(Err(Status::STATUS_CANCELLED));
            }
            if st.testers > 0 {
                s.settled.notify_all();
            }
            // Confirming on delivery, queued messages are discarded before
            // the callback threads stop: a loopback send's completion is
            // still delivered. (A peer's sender hears of it from the link's
            // end: the links are closed already.)
            if self.cfg.confirm == ConfirmPoint::Delivered {
                let discarded = self.discard_queue(&s, &mut st);
                drop(st);
                settle_discarded(discarded);
            }
        }
        // Delivers what is queued (failed sends' callbacks above all), then joins.
        self.dispatcher.stop();
        let mut undelivered = 0;
        for s in self.table.all() {
            let mut st = s.st.lock();
            st.closed = true;
            let queue = std::mem::take(&mut st.queue);
            undelivered += st.events.len();
            self.dispatcher.discount_events(st.events.len());
            let events = std::mem::take(&mut st.events);
            self.table.remove(&s);
            // Dropped (their receipts with them) with the lock let go.
            drop(st);
            drop((queue, events));
        }
        if undelivered > 0 {
            // Not expected: every source of events has stopped before the
            // callback threads did. Said out loud rather than lost silently.
            log!(Level::Error, "SP {} shut down with {undelivered} callback(s) queued too late to be delivered", self.cfg.local);
        }
        // The teardown's own lines reach stderr or the client's routine
        // before the process (often) exits; bounded, and never from the log's
        // own thread (log::flush returns at once there).
        crate::log::flush(Duration::from_millis(500));
    }
}
