//! One link to one peer SP: a link session and the connections that carry
//! it (docs/DESIGN.md, "The link's states").
//!
//! A link session (`Conn`) is what the MPS layer sends on: its outbound
//! queue, its sequence numbers and acknowledgements (version 2), its
//! unconfirmed messages. A connection (`Wire`) is one byte stream under it:
//! its reader, its writer thread, its clocks. On version 1 the two are one:
//! the session ends with its connection, and its in-flight messages fail. On
//! version 2 a session outlives its connections: when one breaks, the
//! session resumes on the next connection to the same peer incarnation,
//! sending again what the peer had not acknowledged; it ends only when the
//! peer restarts, or stays away longer than `link.resume_timeout_ms`.
//!
//! The modules, along the seams: `tx` (the queue and the writes), `rx` (the
//! reader), `role` (who reads a connection), `handshake` (HELLO and RESUME).
//! Every change of a session's state goes through `Conn::transition`.

mod handshake;
mod role;
mod rx;
mod tx;

#[cfg(all(test, loom))]
mod model;

pub(crate) use handshake::{handshake, read_answer, write_whole, Answer, Greeting, Handshake, Step};
pub(crate) use role::{Holder, LinkThreadEnd, ReadRole, Stint};
#[cfg(test)]
pub(crate) use rx::run_reader;
pub(crate) use rx::{read_stint, ConfirmLater, RxCtx, PEER_ENDED};
pub(crate) use tx::CONFIRM_BACKLOG_LOW;

use super::frame::{self, Hello};
use super::stream::Stream;
use crate::sp_id::SpId;
use parking_lot::{Condvar, Mutex};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tx::{OutFrame, OutQueue};

/// A payload lent to the link until its frame is acknowledged or dropped.
pub type Payload = Arc<crate::mps::MessageBytes>;

/// Returned by sends on a link session that is over.
#[derive(Debug)]
pub(crate) struct LinkDown;

/// Why a connection or a link session ended, for the log.
pub(crate) type EndReason = String;

/// The state of a link session. Before a session exists, its peer's entry
/// is connecting (the dialer) or waiting to be dialed, and each new
/// connection is handshaking (`handshake`, `cmi::acceptor`); a session is
/// made when a connection's handshake says so, and then:
///
/// ```text
///   (new) --attach--> Up --connection lost (v2)--> Resuming --attach--> Up
///                      |                              |
///                      +--end------> Ended <----end---+  (peer restarted,
///                        (v1: connection lost;            resume_timeout_ms,
///                         shutdown, broken peer)          shutdown)
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum State {
    /// A connection is attached and carries the session.
    Up,
    /// No connection (a new session, or version 2 after a connection was
    /// lost, since `since_ms` on the session's clock): frames are kept,
    /// and new ones queued, for the next connection.
    Resuming { since_ms: u64 },
    /// Over, for this reason (recorded once): nothing more is queued; the
    /// in-flight messages fail (`Cmi` calls `link_down` once).
    Ended(EndReason),
}

/// What moves a session from one state to another (`Conn::transition`).
enum Event {
    /// A connection was attached.
    Attached(Arc<Wire>),
    /// The attached connection was lost (version 2: the session resumes).
    Lost(EndReason),
    /// The session ends.
    End(EndReason),
}

/// An atomic counter alone on its cache line (64 bytes): written by one
/// thread and read by another without dragging neighbouring fields along.
#[derive(Default)]
#[repr(align(64))]
struct Padded(AtomicU64);

impl std::ops::Deref for Padded {
    type Target = AtomicU64;
    fn deref(&self) -> &AtomicU64 {
        &self.0
    }
}

/// One connection under a link session.
pub(crate) struct Wire {
    stream: Box<dyn Stream>,
    /// Monotonic milliseconds (the session's clock) of the last write.
    last_tx_ms: AtomicU64,
    /// Monotonic milliseconds (the session's clock) of the last byte read.
    last_rx_ms: AtomicU64,
    /// The connection's reader must stop (`kill`). A failed write alone does
    /// not stop it on version 1: it goes on reading what the peer sent
    /// before the failure (its confirmations above all) until end-of-stream.
    killed: AtomicBool,
    /// Why the connection was killed (the first reason stays).
    reason: Mutex<Option<EndReason>>,
    /// What the reader keeps between stints: whoever holds the read role
    /// holds this lock while reading the stream.
    pub(crate) rx: Mutex<RxCtx>,
    /// Who reads, and who waits to.
    pub(crate) read_role: ReadRole,
}

impl Wire {
    fn new(stream: Box<dyn Stream>, leftover: &[u8], now_ms: u64) -> Wire {
        Wire {
            stream,
            last_tx_ms: AtomicU64::new(now_ms),
            last_rx_ms: AtomicU64::new(now_ms),
            killed: AtomicBool::new(false),
            reason: Mutex::new(None),
            rx: Mutex::new(RxCtx::new(leftover)),
            read_role: ReadRole::default(),
        }
    }

    /// Ends the connection both ways: its reader and writer return.
    fn kill(&self, reason: &str) {
        self.reason.lock().get_or_insert_with(|| reason.to_string());
        // Killed before the stream shuts: a peer that closes at our
        // end-of-stream must not make the reader log "the peer closed the
        // link" instead of this reason (Reader::ended looks at `killed`).
        self.killed.store(true, Ordering::Release);
        self.stream.shutdown();
        self.stream.interrupt();
    }

    pub(crate) fn reason(&self) -> Option<EndReason> {
        self.reason.lock().clone()
    }

    /// Why the connection ended, once it was killed (`None` while it lives).
    pub(crate) fn ended(&self) -> Option<EndReason> {
        if self.killed.load(Ordering::Acquire) {
            self.reason()
        } else {
            None
        }
    }

    /// Wakes a reader blocked on this connection.
    pub(crate) fn interrupt(&self) {
        self.stream.interrupt();
    }
}

/// A link session to one peer (one epoch; version 2: one pair of
/// incarnations, across any number of connections).
pub struct Conn {
    pub(crate) peer: SpId,
    /// Distinguishes this session from earlier and later ones to the same peer.
    pub(crate) epoch: u64,
    /// The largest message the peer accepts (from its HELLO).
    pub(crate) peer_max_message: u32,
    /// The protocol version agreed.
    pub(crate) version: u16,
    /// The peer's incarnation (version 2; 0 on version 1).
    pub(crate) peer_incarnation: u64,
    /// The peer confirms on delivery (its RESUME said so): its confirmations
    /// may come in any order and as late as its clients take the messages.
    pub(crate) peer_confirms_on_delivery: bool,
    out: Mutex<OutQueue>,
    writer_wake: Condvar,
    /// Signalled when the writer empties the queue (for `drain`).
    drained: Condvar,
    /// Signalled when the confirmation backlog is down to
    /// `CONFIRM_BACKLOG_LOW`, when a connection ends, and on `interrupt`:
    /// wakes a reader paused by back-pressure.
    room: Condvar,
    /// Version 2: the last sequence number received and handled from the
    /// peer. Written by the reader at every numbered frame, read by senders:
    /// on a cache line of its own, away from the queue's lock.
    rx_last: Padded,
    /// Version 2: `OutQueue::acked`, readable without the lock (`take_ack`).
    acked_hint: Padded,
    /// `Cmi` has reported the session's end upward (`link_down`), once.
    reported: AtomicBool,
    /// Connections this session has had (the first, and each resume).
    connections: AtomicU64,
    clock_base: Instant,
    /// Test hook: the next CONFIRM frame a library thread reads on this
    /// link panics before it is handled (`read_one_frame`).
    #[cfg(test)]
    pub(crate) panic_at_next_confirm: AtomicBool,
    #[cfg(test)]
    pub(crate) panic_at_next_confirm_on_api_thread: AtomicBool,
}

/// What the watch of a session found that its owner must act on.
pub(crate) enum Watched {
    /// Nothing.
    Nothing,
    /// The session has been resuming longer than the tolerance: it has been
    /// ended, for this reason, and its end is to be reported.
    Ended(EndReason),
}

impl Conn {
    /// A link session with no connection yet (`attach` gives it one).
    pub(crate) fn session(peer: SpId, epoch: u64, version: u16, peer_max_message: u32, peer_incarnation: u64, peer_confirms_on_delivery: bool) -> Conn {
        Conn {
            peer,
            epoch,
            peer_max_message,
            version,
            peer_incarnation,
            peer_confirms_on_delivery,
            out: Mutex::new(OutQueue::new(0)),
            writer_wake: Condvar::new(),
            drained: Condvar::new(),
            room: Condvar::new(),
            rx_last: Padded::default(),
            acked_hint: Padded::default(),
            reported: AtomicBool::new(false),
            connections: AtomicU64::new(0),
            clock_base: Instant::now(),
            #[cfg(test)]
            panic_at_next_confirm: AtomicBool::new(false),
            #[cfg(test)]
            panic_at_next_confirm_on_api_thread: AtomicBool::new(false),
        }
    }

    /// A version-1 session on `stream`, attached (tests and fuzz targets).
    pub(crate) fn new(peer: SpId, epoch: u64, hello: &Hello, stream: Box<dyn Stream>, leftover: &[u8]) -> Conn {
        let c = Conn::session(peer, epoch, 1, hello.max_message, 0, false);
        c.attach(stream, leftover, None, None).expect("a new session takes its first connection");
        c
    }

    pub(super) fn now_ms(&self) -> u64 {
        self.clock_base.elapsed().as_millis() as u64
    }

    /// The one place a session's state changes: every transition, its side
    /// effects, and the end reason, recorded once. False when the event does
    /// not apply in the current state (it is then ignored).
    fn transition(&self, q: &mut OutQueue, ev: Event) -> bool {
        let now = self.now_ms();
        match (&q.state, ev) {
            (State::Resuming { .. }, Event::Attached(wire)) => {
                q.wire = Some(wire);
                q.writable = true;
                q.backlog = false;
                q.head_written = 0;
                // The clocks of progress start again with the connection.
                for m in q.unacked.iter_mut() {
                    m.1 = now;
                }
                q.ack_wait_since = now;
                q.state = State::Up;
            }
            (State::Up, Event::Lost(reason)) if self.version >= frame::VERSION_RESUME => {
                if let Some(w) = q.wire.take() {
                    w.kill(&reason);
                }
                q.writable = false;
                q.put_back();
                q.state = State::Resuming { since_ms: now };
            }
            (State::Up, Event::Lost(reason)) => return self.transition(q, Event::End(reason)),
            (State::Ended(_), _) => return false,
            (_, Event::End(reason)) => {
                q.frames.clear();
                q.written = 0;
                q.head_written = 0;
                q.confirm_bytes = 0;
                q.backlog = false;
                if q.writable {
                    // The peer reads end-of-stream after what was written;
                    // the reader goes on to the end of the connection.
                    if let Some(w) = &q.wire {
                        w.stream.shutdown_write();
                    }
                }
                q.writable = false;
                q.state = State::Ended(reason);
            }
            _ => return false,
        }
        self.writer_wake.notify_all();
        self.drained.notify_all();
        self.room.notify_all();
        true
    }

    /// Gives the session a connection (`stream`, with the bytes read after
    /// its handshake): a new session's first, or (version 2) the one it
    /// resumes on, after the peer said it has received every frame up to
    /// `received`. `first`: a frame to write before anything queued (the
    /// accepting side's RESUME). Err when the session can no longer take
    /// one (it ended meanwhile, or the peer claims frames that make a resume
    /// impossible): the caller closes the connection.
    pub(crate) fn attach(&self, stream: Box<dyn Stream>, leftover: &[u8], received: Option<u64>, first: Option<&[u8]>) -> Result<Arc<Wire>, String> {
        let mut q = self.out.lock();
        if let State::Ended(r) = &q.state {
            return Err(format!("the link session ended meanwhile ({r})"));
        }
        if let Some(received) = received {
            if received >= q.next_seq {
                return Err(format!("the peer claims frame {received}, but the last frame sent is {}", q.next_seq - 1));
            }
            if received < q.acked {
                return Err(format!("the peer claims only frame {received}, but acknowledged {} before", q.acked));
            }
            q.acked = received;
            self.acked_hint.store(received, Ordering::Release);
            q.trim_for_resume(received);
        }
        if let Some(f) = first {
            q.frames.push_front(OutFrame::small(f));
        }
        let wire = Arc::new(Wire::new(stream, leftover, self.now_ms()));
        if !self.transition(&mut q, Event::Attached(wire.clone())) {
            return Err("the link session already has a connection".into());
        }
        self.connections.fetch_add(1, Ordering::Relaxed);
        if q.pending() {
            self.flush_or_hand_off(&mut q);
        }
        Ok(wire)
    }

    /// How many connections this session has had (1 + the resumes).
    pub(crate) fn connections(&self) -> u64 {
        self.connections.load(Ordering::Relaxed)
    }

    /// The connection attached now, if any.
    pub(crate) fn wire(&self) -> Option<Arc<Wire>> {
        self.out.lock().wire.clone()
    }

    /// The session's state now.
    pub(crate) fn state(&self) -> State {
        self.out.lock().state.clone()
    }

    /// True once the session has ended (no copy of its reason).
    pub(crate) fn is_ended(&self) -> bool {
        matches!(self.out.lock().state, State::Ended(_))
    }

    /// Version 2: the last sequence number received and handled from the peer.
    pub(crate) fn received(&self) -> u64 {
        self.rx_last.load(Ordering::Acquire)
    }

    /// A write on `wire` failed: version 2 loses the connection (the session
    /// resumes on the next); version 1 ends the session, and its reader goes
    /// on to the end of the connection.
    fn write_failed(&self, q: &mut OutQueue, wire: &Arc<Wire>, reason: String) {
        if !q.wire.as_ref().is_some_and(|w| Arc::ptr_eq(w, wire)) {
            return;
        }
        if self.version >= frame::VERSION_RESUME {
            self.transition(q, Event::Lost(reason));
        } else {
            self.transition(q, Event::End(reason));
        }
    }

    /// Ends connection `wire` (if it is still the attached one): it is
    /// killed, and the session loses it (version 2: resumes; version 1: ends).
    pub(crate) fn kill_wire(&self, wire: &Arc<Wire>, reason: &str) {
        wire.kill(reason);
        let mut q = self.out.lock();
        if q.wire.as_ref().is_some_and(|w| Arc::ptr_eq(w, wire)) {
            self.transition(&mut q, Event::Lost(reason.to_string()));
        }
    }

    /// Ends the attached connection, if any (a dead peer, a replacement):
    /// version 2 resumes on the next, version 1 ends the session. Idempotent.
    pub(crate) fn kill(&self, reason: &str) {
        let wire = self.wire();
        if let Some(w) = wire {
            self.kill_wire(&w, reason);
        }
    }

    /// Ends the session (shutdown, a broken peer, the peer restarted, the
    /// resume tolerance passed): nothing more is queued, queued payloads are
    /// released, the attached connection is killed. True the first time.
    pub(crate) fn end(&self, reason: &str) -> bool {
        let mut q = self.out.lock();
        let wire = q.wire.clone();
        let ended = self.transition(&mut q, Event::End(reason.to_string()));
        drop(q);
        if let Some(w) = wire {
            w.kill(reason);
        }
        ended
    }

    /// The connection `wire`'s service is over (its reader returned, its
    /// writer was joined): it leaves the session, which resumes (version 2,
    /// `lost` true) or ends. Returns the session's state after it.
    pub(crate) fn release(&self, wire: &Arc<Wire>, reason: &str) -> State {
        wire.kill(reason);
        let mut q = self.out.lock();
        if q.wire.as_ref().is_some_and(|w| Arc::ptr_eq(w, wire)) {
            self.transition(&mut q, Event::Lost(reason.to_string()));
            if q.wire.as_ref().is_some_and(|w| Arc::ptr_eq(w, wire)) {
                // Version 1 (ended, read to its end): the connection goes too.
                q.wire = None;
            }
        }
        q.state.clone()
    }

    /// True the first time it is called: the caller reports the session's end.
    pub(crate) fn take_report(&self) -> bool {
        !self.reported.swap(true, Ordering::AcqRel)
    }

    /// A panic while `by` held the read role of `wire` (a bug:
    /// crate::unwind): it is logged, the connection killed, what was read
    /// and not handled dropped (the frame that panicked among it), and the
    /// role handed back; an API thread also records the end for the link's
    /// thread. The session ends: a frame that panicked once would panic again
    /// if it were sent again by a resume. Returns the end reason.
    pub(crate) fn end_after_panic(&self, wire: &Arc<Wire>, payload: &(dyn std::any::Any + Send), by: Holder) -> EndReason {
        let reason = crate::unwind::report(payload, &format!("the link to SP {} ends", self.peer));
        self.end(&reason);
        wire.kill(&reason);
        wire.rx.lock().discard();
        wire.read_role.abandon(by);
        reason
    }

    /// Wakes the reader of the attached connection so that it looks at the
    /// stop flag now (also one paused by back-pressure).
    pub(crate) fn interrupt(&self) {
        let q = self.out.lock();
        if let Some(w) = &q.wire {
            w.interrupt();
        }
        self.room.notify_all();
    }

    /// True while the session has a connection and messages go out at once.
    pub(crate) fn is_up(&self) -> bool {
        self.out.lock().state == State::Up
    }

    /// An orderly close of the attached connection `wire`, bounded by
    /// `limit`: what is queued (the confirmations owed above all) is
    /// written, the session ends, then the peer reads end-of-stream after
    /// it; what the peer still sends is read and discarded until it closes
    /// too, so that closing never resets the connection under data the peer
    /// has not read yet.
    ///
    /// It reads only with the read role (the `rx` lock): an API thread that
    /// is reading the link (a synchronous send waiting for its confirmation)
    /// finishes its stint first, so no two threads ever read the socket and
    /// a confirmation that arrives meanwhile reaches its sender. If the role
    /// does not come free within `limit`, nothing is read here: the caller
    /// kills the connection, which ends that reader's wait too.
    ///
    /// Version 2: a `BYE` goes last, so that the peer ends the session at
    /// once (its messages to this SP still unconfirmed fail now, not after
    /// its resume tolerance).
    pub(crate) fn close_gracefully(&self, wire: &Arc<Wire>, limit: Duration) {
        let deadline = Instant::now() + limit;
        if self.version >= frame::VERSION_RESUME {
            let mut q = self.out.lock();
            if q.writer().is_some_and(|w| Arc::ptr_eq(w, wire)) {
                q.frames.push_back(OutFrame::small(&frame::bye(frame::BYE_SHUTDOWN)));
                if !q.backlog {
                    self.flush_or_hand_off(&mut q);
                }
            }
        }
        self.drain(deadline);
        {
            let mut q = self.out.lock();
            self.transition(&mut q, Event::End("closed in order".into()));
        }
        let Some(_role) = wire.rx.try_lock_until(deadline) else {
            return;
        };
        let mut scratch = [0u8; 4096];
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() || wire.killed.load(Ordering::Acquire) {
                break;
            }
            match wire.stream.read_timeout(&mut scratch, left) {
                Ok(Some(n)) if n > 0 => {}
                _ => break,
            }
        }
    }

    /// The clocks of a session, looked at by the SP's watch thread (at least
    /// twice per heartbeat interval), so that no reader has to wake up for
    /// them: a heartbeat when nothing was written for an interval (version
    /// 2: also when an acknowledgement is owed), the end of the connection
    /// when nothing was read for the dead-peer timeout, and (version 2) the
    /// end of the session when it has been resuming for `resume_timeout`.
    ///
    /// Liveness is judged by progress as well as by bytes: a peer that
    /// heartbeats but never confirms, or never reads what this end writes,
    /// is as dead as a silent one. Four rules, each bounded by the
    /// dead-peer timeout, each ending the connection:
    /// - nothing read for the timeout (silence);
    /// - the oldest unconfirmed message queued (or sent again) longer ago
    ///   than the timeout (so every send completes within the timeout plus
    ///   one watch period, or its connection is lost);
    /// - version 2: the oldest frame written and not acknowledged waiting
    ///   longer than the timeout;
    /// - frames queued and no byte of them written for the timeout (the peer
    ///   does not read: its queue of confirmations and messages is stuck).
    pub(crate) fn watch(&self, p: &LinkParams, resume_timeout: Duration) -> Watched {
        let now = self.now_ms();
        let dead_ms = p.dead_timeout.as_millis() as u64;
        let (wire, oldest, queued, ack_wait, ack_sent) = {
            let q = self.out.lock();
            if let State::Resuming { since_ms } = q.state {
                let away = now.saturating_sub(since_ms);
                if q.wire.is_none() && away as u128 >= resume_timeout.as_millis() {
                    drop(q);
                    let reason = format!("no connection for {away} ms (link.resume_timeout_ms): the link session ends");
                    return if self.end(&reason) { Watched::Ended(reason) } else { Watched::Nothing };
                }
            }
            let Some(w) = q.wire.clone() else { return Watched::Nothing };
            let ack_wait = q.awaiting_ack().then(|| now.saturating_sub(q.ack_wait_since));
            (w, q.unacked.front().copied(), q.pending(), ack_wait, q.ack_sent)
        };
        let silent = now.saturating_sub(wire.last_rx_ms.load(Ordering::Relaxed));
        if silent >= dead_ms {
            self.kill_wire(&wire, &format!("no frame from the peer for {silent} ms: declared dead"));
            return Watched::Nothing;
        }
        let idle = now.saturating_sub(wire.last_tx_ms.load(Ordering::Relaxed));
        // A peer that confirms on delivery takes as long as its clients do:
        // its progress is judged by its acknowledgements (the next rule).
        if let Some((id, at)) = oldest.filter(|_| !self.peer_confirms_on_delivery) {
            let age = now.saturating_sub(at);
            if age >= dead_ms {
                self.kill_wire(&wire, &format!("message {id} unconfirmed for {age} ms: the peer makes no progress, declared dead"));
                return Watched::Nothing;
            }
        }
        if let Some(waited) = ack_wait {
            if waited >= dead_ms {
                self.kill_wire(&wire, &format!("no acknowledgement for {waited} ms: the peer makes no progress, declared dead"));
                return Watched::Nothing;
            }
        }
        if queued && idle >= dead_ms {
            self.kill_wire(&wire, &format!("nothing written for {idle} ms with frames queued: the peer does not read, declared dead"));
            return Watched::Nothing;
        }
        let ack_owed = self.rx_last.load(Ordering::Acquire) > ack_sent;
        if !queued && (idle >= p.heartbeat.as_millis() as u64 || ack_owed) {
            // Only on an empty queue: frames already queued carry the same
            // news, and one that cannot be written must not grow the queue.
            // After a failed write there is nothing to send with; the link
            // ends at the peer's end-of-stream or the dead-peer timeout.
            let _ = self.send_heartbeat();
        }
        Watched::Nothing
    }
}

/// Limits and timings a link runs with.
#[derive(Clone, Copy)]
pub(crate) struct LinkParams {
    pub local: SpId,
    pub max_message: u32,
    pub heartbeat: Duration,
    pub dead_timeout: Duration,
    /// How long a reader waits for bytes before it looks at the clocks
    /// itself. `Duration::MAX` (under `Cmi`): never; the SP's watch thread
    /// sends the heartbeats and declares silent peers dead (`Conn::watch`),
    /// and a reader blocks with no timer to arm and cancel per wait.
    pub read_wait: Duration,
    /// The newest protocol version this SP offers (`frame::VERSION_MAX`;
    /// lower in tests that play an older SP).
    pub version_max: u16,
    /// This SP confirms messages on delivery (`link.confirm = "delivered"`),
    /// said in its RESUME (version 2 only).
    pub confirm_on_delivery: bool,
}

impl LinkParams {
    pub(crate) fn hello(&self) -> Hello {
        Hello {
            version_min: frame::VERSION_MIN,
            version_max: self.version_max,
            sp: self.local,
            max_message: self.max_message,
            heartbeat_ms: self.heartbeat.as_millis() as u32,
            dead_timeout_ms: self.dead_timeout.as_millis() as u32,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::stream::InprocStream;
    use super::*;
    use crate::cmi::frame::MessageHead;
    use crate::cmi::{InboundMessage, Upcall};
    use crate::status::Status;
    use std::io::{self, IoSlice};

    type Delivered = (String, Vec<u8>, u32, bool);
    struct Recorder {
        delivered: Mutex<std::sync::mpsc::Sender<Delivered>>,
        confirmed: Mutex<std::sync::mpsc::Sender<(u64, Status)>>,
    }
    #[allow(clippy::type_complexity)]
    fn recorder2() -> (Recorder, std::sync::mpsc::Receiver<(u64, Status)>, std::sync::mpsc::Receiver<Delivered>) {
        let (tx, rx) = std::sync::mpsc::channel();
        let (dtx, drx) = std::sync::mpsc::channel();
        (Recorder { delivered: Mutex::new(dtx), confirmed: Mutex::new(tx) }, rx, drx)
    }
    fn recorder() -> (Recorder, std::sync::mpsc::Receiver<(u64, Status)>) {
        let (r, c, _d) = recorder2();
        (r, c)
    }
    impl Upcall for Recorder {
        type Accepted = (String, Vec<u8>, u32, bool);
        fn accept(&self, _from: SpId, m: InboundMessage<'_>) -> Result<Self::Accepted, Status> {
            Ok((m.name.to_string(), m.payload, m.tag, m.sync))
        }
        fn dispatch(&self, a: Self::Accepted) {
            let _ = self.delivered.lock().send(a);
        }
        fn confirmed(&self, _from: SpId, _epoch: u64, entries: &mut dyn Iterator<Item = (u64, Status)>) {
            for (id, st) in entries {
                let _ = self.confirmed.lock().send((id, st));
            }
        }
        fn link_down(&self, _peer: SpId, _epoch: u64) {}
    }

    static NO_STOP: AtomicBool = AtomicBool::new(false);

    fn params() -> LinkParams {
        LinkParams { local: SpId::a(0), max_message: 1 << 20, heartbeat: Duration::from_millis(50), dead_timeout: Duration::from_millis(2000), read_wait: Duration::from_millis(50), version_max: frame::VERSION_MAX, confirm_on_delivery: false }
    }

    #[test]
    fn a_message_is_delivered_whole_and_confirmed() {
        let (a, b) = InprocStream::pair();
        let hello = params().hello();
        let sender = Arc::new(Conn::new(SpId::b(0), 1, &hello, Box::new(a), &[]));
        let receiver = Arc::new(Conn::new(SpId::a(0), 1, &hello, Box::new(b), &[]));
        let (rec, confirmations, deliveries) = recorder2();
        let up = Arc::new(rec);
        let (rcv, up2) = (receiver.clone(), up.clone());
        let t = std::thread::spawn(move || run_reader(&rcv, params(), up2.as_ref(), vec![], &NO_STOP));
        let big: Payload = Arc::new((0..200_000u32).map(|i| i as u8).collect());
        let h = MessageHead { id: 5, conduit: 1, domain: 2, tag: 3, mode: frame::MODE_SYNC };
        sender.send_message(&h, b"Mirror", big.clone(), big.len(), false).unwrap();
        // The sender side reads the confirmation.
        let (snd, up3) = (sender.clone(), up.clone());
        let t2 = std::thread::spawn(move || run_reader(&snd, params(), up3.as_ref(), vec![], &NO_STOP));
        let c = confirmations.recv_timeout(Duration::from_secs(30)).expect("no confirmation");
        assert_eq!(c, (5, Status::STATUS_SUCCESS));
        // Dispatched after its confirmation left (FIG. 8A): wait for it.
        let d = deliveries.recv_timeout(Duration::from_secs(30)).expect("no delivery");
        assert_eq!(d.0, "Mirror");
        assert_eq!(&d.1, big.as_ref());
        assert_eq!((d.2, d.3), (3, true));
        sender.kill("test over");
        receiver.kill("test over");
        // The receiver's reader may see the sender's end close before its own kill.
        let why = t.join().unwrap();
        assert!(why == "test over" || why == "the peer closed the link", "{why}");
        assert_eq!(t2.join().unwrap(), "test over", "the sender's reader ends with its kill's reason");
    }

    #[test]
    fn a_garbage_frame_ends_the_link_with_a_reason() {
        let (a, b) = InprocStream::pair();
        let conn = Arc::new(Conn::new(SpId::a(0), 1, &params().hello(), Box::new(b), &[]));
        a.write_nonblocking(&[IoSlice::new(&[0xff; 16])]).unwrap();
        let (up, _c) = recorder();
        let why = run_reader(&conn, params(), &up, vec![], &NO_STOP);
        assert!(why.contains("malformed"), "{why}");
    }

    /// A stream whose socket never has room, and whose blocking write panics
    /// (a bug in the writer's path).
    struct PanickyWriter;
    impl Stream for PanickyWriter {
        fn read_timeout(&self, _buf: &mut [u8], _timeout: Duration) -> io::Result<Option<usize>> {
            Ok(None)
        }
        fn write_nonblocking(&self, _bufs: &[IoSlice<'_>]) -> io::Result<usize> {
            Err(io::ErrorKind::WouldBlock.into())
        }
        fn write_blocking(&self, _bufs: &[IoSlice<'_>], _timeout: Duration) -> io::Result<usize> {
            panic!("injected fault: a panic in the writer's write");
        }
        fn wait_writable(&self, _timeout: Duration) -> io::Result<()> {
            Ok(())
        }
        fn shutdown(&self) {}
        fn shutdown_write(&self) {}
        fn interrupt(&self) {}
    }

    /// 8.15: a panic on a link's writer thread ends the link at once (its
    /// reader returns, its sends fail through link_down), instead of leaving
    /// a link that looks up with a backlog nobody writes.
    #[test]
    fn a_panic_on_the_writer_thread_ends_the_link() {
        let conn = Arc::new(Conn::new(SpId::a(0), 1, &params().hello(), Box::new(PanickyWriter), &[]));
        let w = conn.clone();
        let writer = std::thread::Builder::new().name("mps-write-test".into()).spawn(move || {
            let wire = w.wire().expect("attached");
            w.writer_loop(&wire, Duration::from_millis(10))
        }).unwrap();
        let h = MessageHead { id: 1, conduit: 0, domain: 0, tag: 0, mode: frame::MODE_SYNC };
        conn.send_message(&h, b"m", Arc::new(crate::mps::MessageBytes::from(vec![0u8; 8])), 8, false).unwrap();
        let t0 = Instant::now();
        while !writer.is_finished() {
            assert!(t0.elapsed() < Duration::from_secs(10), "the writer thread neither wrote nor returned");
            std::thread::yield_now();
        }
        assert!(writer.join().is_ok(), "the writer's panic was not caught");
        assert!(!conn.is_up(), "the link still looks up after its writer panicked");
        assert!(conn.send_message(&h, b"m", Arc::new(crate::mps::MessageBytes::from(Vec::new())), 0, false).is_err(), "a send was queued on a link nobody writes");
        let (up, _c) = recorder();
        let why = run_reader(&conn, params(), &up, vec![], &NO_STOP);
        assert!(why.contains("panicked") && why.contains("mps-write-test"), "{why}");
    }

    #[test]
    fn a_silent_peer_is_declared_dead() {
        let (_a, b) = InprocStream::pair();
        let conn = Arc::new(Conn::new(SpId::a(0), 1, &params().hello(), Box::new(b), &[]));
        let (up, _c) = recorder();
        let p = LinkParams { dead_timeout: Duration::from_millis(200), ..params() };
        let t0 = Instant::now();
        let why = run_reader(&conn, p, &up, vec![], &NO_STOP);
        assert!(why.contains("declared dead"), "{why}");
        assert!(t0.elapsed() >= Duration::from_millis(200));
    }
}
