//! One link to one peer SP: its outbound queue, its writer, and its reader.
//!
//! Writes: a sender appends its frame to the link's queue and, unless a
//! backlog is already being drained, writes it at once with a non-blocking
//! `sendmsg` (no thread hand-off on the common path). What does not fit is
//! left for the link's writer thread (`Conn::writer_loop`), which waits for
//! the socket to drain. A write from the queue happens under its lock, and
//! the writer's own writes use shares of the payloads, so when the link dies
//! and the queue is cleared, nothing is freed under a write.
//!
//! Reads: one thread at a time reads a link (`read_stint`): its own thread,
//! or an API thread waiting on it (a synchronous send's confirmation, a
//! receive), which takes the read role over (`Cmi::wait_on_link`). The reader
//! hands messages up (the MPS layer queues them and says what to confirm),
//! and sends the confirmations of all the messages one read brought in as one
//! `CONFIRM` frame. Under `Cmi` readers keep no clocks: the SP's watch thread
//! (`Conn::watch`) sends the heartbeats when the link is idle and ends a
//! link whose peer is silent, makes no progress, or does not read.

use super::frame::{self, Hello, Kind, MessageHead, MAX_MESSAGE_HEAD, PREFIX_LEN};
use super::stream::{Stream, MAX_IOV};
use super::{InboundMessage, Upcall};
use crate::log::{log, Level};
use crate::sp_id::SpId;
use crate::status::Status;
use crate::sync;
use parking_lot::{Condvar, Mutex};
use std::collections::VecDeque;
use std::io::{self, IoSlice};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

#[cfg(all(test, loom))]
mod model;

/// A payload lent to the link until its frame is written or dropped.
pub type Payload = Arc<crate::mps::MessageBytes>;

/// One frame waiting in the outbound queue.
pub(crate) struct OutFrame {
    head: [u8; MAX_MESSAGE_HEAD],
    head_len: u16,
    payload: Option<(Payload, usize)>,
    extra: Vec<u8>,
}

impl OutFrame {
    fn small(bytes: &[u8]) -> OutFrame {
        let mut head = [0u8; MAX_MESSAGE_HEAD];
        head[..bytes.len()].copy_from_slice(bytes);
        OutFrame { head, head_len: bytes.len() as u16, payload: None, extra: Vec::new() }
    }
    fn parts(&self) -> [&[u8]; 3] {
        [
            &self.head[..self.head_len as usize],
            self.payload.as_ref().map(|(p, n)| &p[..*n]).unwrap_or(&[]),
            &self.extra,
        ]
    }
    fn len(&self) -> usize {
        self.parts().iter().map(|p| p.len()).sum()
    }
}

struct OutQueue {
    frames: VecDeque<OutFrame>,
    /// Bytes of `frames[0]` already written.
    head_written: usize,
    /// The writer thread owns flushing until the queue is empty again.
    backlog: bool,
    /// The link is dead: nothing more is queued or written.
    dead: bool,
    /// MESSAGE frames queued or written whose confirmation has not been read,
    /// in the order they were queued (which is the order on the wire, and so
    /// the order the peer confirms them in): (message id, milliseconds since
    /// `clock_base` when it was queued). The front's age is how long the peer
    /// has made no progress (`Conn::watch`).
    unacked: VecDeque<(u64, u64)>,
    /// Bytes of CONFIRM frames queued and not yet wholly written: what a peer
    /// that does not read makes this SP hold. Bounded by back-pressure
    /// (`CONFIRM_BACKLOG_HIGH`).
    confirm_bytes: usize,
}

/// A link's reader stops reading while this many bytes of confirmations wait
/// to be written to the peer (it does not read them), and reads again once
/// they are down to `CONFIRM_BACKLOG_LOW`. One read's confirmations can come
/// on top (a 64 KiB read holds at most 1,985 messages: 24 KiB of entries), so
/// a peer can make a link hold at most about 1.05 MiB of confirmations; a
/// queue that stays stuck for the dead-peer timeout ends the link.
pub(crate) const CONFIRM_BACKLOG_HIGH: usize = 1 << 20;
/// See `CONFIRM_BACKLOG_HIGH`.
pub(crate) const CONFIRM_BACKLOG_LOW: usize = 256 << 10;

impl OutQueue {
    /// `written` more bytes of the queue's front went out: drops the frames
    /// now wholly written (and their payloads). True when the confirmation
    /// backlog went down to `CONFIRM_BACKLOG_LOW` (a paused reader may go on).
    fn consume(&mut self, mut written: usize) -> bool {
        let before = self.confirm_bytes;
        while written > 0 {
            let left = self.frames[0].len() - self.head_written;
            if written >= left {
                written -= left;
                if let Some(f) = self.frames.pop_front() {
                    self.confirm_bytes -= f.extra.len();
                }
                self.head_written = 0;
            } else {
                self.head_written += written;
                written = 0;
            }
        }
        before > CONFIRM_BACKLOG_LOW && self.confirm_bytes <= CONFIRM_BACKLOG_LOW
    }
}

/// The writer thread's batches end at the first frame boundary past this.
const BATCH_BYTES: usize = 64 * 1024;

/// What the writer thread writes with the queue unlocked: copies of the
/// frames' heads and confirmations (small) and shares of their payloads
/// (never copied).
#[derive(Default)]
struct Snapshot {
    small: Vec<u8>,
    /// (payload, start, end) or, with `None`, a range of `small`.
    parts: Vec<(Option<Payload>, usize, usize)>,
}

impl Snapshot {
    /// Takes up to `MAX_IOV` parts from the front of `q`, past what is written.
    fn take(&mut self, q: &OutQueue) {
        self.small.clear();
        self.parts.clear();
        let mut skip = q.head_written;
        'frames: for f in q.frames.iter() {
            for (i, part) in f.parts().into_iter().enumerate() {
                if skip >= part.len() {
                    skip -= part.len();
                    continue;
                }
                match (i, &f.payload) {
                    (1, Some((p, _))) => self.parts.push((Some(p.clone()), skip, part.len())),
                    _ => {
                        let at = self.small.len();
                        self.small.extend_from_slice(&part[skip..]);
                        self.parts.push((None, at, self.small.len()));
                    }
                }
                skip = 0;
                if self.parts.len() == MAX_IOV {
                    break 'frames;
                }
            }
            // End a batch at a frame boundary once it is big enough to
            // fill the socket: a write that went on into the next frame
            // would keep the finished one queued (its payload shared) until
            // the whole write returns, long after the peer confirmed it.
            if self.bytes() >= BATCH_BYTES {
                break;
            }
        }
    }

    fn bytes(&self) -> usize {
        self.parts.iter().map(|(_, a, b)| b - a).sum()
    }

    fn iov(&self) -> Vec<IoSlice<'_>> {
        self.parts
            .iter()
            .map(|(p, a, b)| match p {
                Some(p) => IoSlice::new(&p[*a..*b]),
                None => IoSlice::new(&self.small[*a..*b]),
            })
            .collect()
    }
}

/// Returned by sends on a link that has died.
#[derive(Debug)]
pub(crate) struct LinkDown;

/// A live link to one peer (one connection, one epoch).
pub struct Conn {
    pub(crate) peer: SpId,
    /// Distinguishes this connection from earlier and later ones to the same peer.
    pub(crate) epoch: u64,
    /// The largest message the peer accepts (from its HELLO).
    pub(crate) peer_max_message: u32,
    stream: Box<dyn Stream>,
    out: Mutex<OutQueue>,
    writer_wake: Condvar,
    /// Monotonic milliseconds (since `clock_base`) of the last write.
    last_tx_ms: AtomicU64,
    /// Monotonic milliseconds (since `clock_base`) of the last byte read.
    last_rx_ms: AtomicU64,
    clock_base: Instant,
    dead_reason: Mutex<Option<String>>,
    /// Signalled when the writer empties the queue (for `drain`).
    drained: Condvar,
    /// Signalled when the confirmation backlog is down to
    /// `CONFIRM_BACKLOG_LOW`, when the link dies, and on `interrupt`: wakes a
    /// reader paused by back-pressure.
    room: Condvar,
    /// The reader must stop (`kill`). A failed write alone does not stop it:
    /// it goes on reading what the peer sent before the failure (its
    /// confirmations above all) until end-of-stream.
    killed: AtomicBool,
    /// What the reader keeps between stints: whoever holds the read role
    /// holds this lock while reading the stream.
    pub(crate) rx: Mutex<RxCtx>,
    /// Who reads, and who waits to.
    pub(crate) read_role: ReadRole,
    /// Test hook: the next CONFIRM frame a library thread reads on this
    /// link panics before it is handled (`read_one_frame`).
    #[cfg(test)]
    pub(crate) panic_at_next_confirm: AtomicBool,
    #[cfg(test)]
    pub(crate) panic_at_next_confirm_on_api_thread: AtomicBool,
}

/// Who holds a link's read role.
#[derive(Clone, Copy, PartialEq, Eq, Default, Debug)]
pub(crate) enum Holder {
    /// Nobody reads the link at the moment.
    #[default]
    Nobody,
    /// The link's own thread.
    LinkThread,
    /// An API thread waiting on the link (a synchronous send or receive).
    ApiThread,
}

/// The state of a link's read role. Every change is made under its lock,
/// so a hand-over is never missed and nobody spins.
#[derive(Default)]
pub(crate) struct Role {
    pub holder: Holder,
    /// API threads waiting for the link's thread to hand the role over
    /// (mirrored in `ReadRole::wanting`, which the link's thread reads unlocked).
    pub wanting: usize,
    /// API threads waiting for an event on this link while another reads.
    pub bystanders: usize,
    /// An API thread that was reading saw the link end, for this reason.
    pub ended: Option<EndReason>,
}

/// A link's read role: who reads the stream (the link's own thread, or an
/// API thread waiting on the link), and who waits to. Every decision about
/// it (take, ask for a hand-over, hand over, take back, give up) is made in
/// the two methods below, which `Cmi` calls with the reading itself
/// (`read_stint`) as a closure: the model checker drives these same methods
/// with a stand-in for the stream (src/cmi/model.rs).
#[derive(Default)]
///
/// Its locks come from `crate::sync` (loom's under the model checker); the
/// rest of the link keeps parking_lot's.
pub(crate) struct ReadRole {
    state: sync::Mutex<Role>,
    /// Wakes the link's own thread when it should take the role back, and
    /// an API thread waiting for the link's thread to hand it over.
    cv: sync::Condvar,
    /// API threads trying to take the role (the link's thread yields to them).
    wanting: sync::AtomicUsize,
}

/// Why the link's own thread stopped reading for good.
pub(crate) enum LinkThreadEnd {
    /// The link ended (seen by whoever read it), for this reason.
    Ended(EndReason),
    /// `stopping()` said so.
    Stopping,
}

impl ReadRole {
    /// The link's own thread: reads (`read(until)`, one stint) whenever no
    /// API thread does (seed FIG. 8A processing, confirmations, heartbeats),
    /// hands the role to an API thread that asks for it (`until()` turns true
    /// at the stint's next frame boundary), and takes it back when nobody
    /// reads: at once when an API thread stops reading while others still
    /// wait on the link or with frames buffered, and otherwise after
    /// `unattended` at the latest, so that unsolicited frames are never left
    /// unread for long.
    pub(crate) fn run_link_thread(
        &self,
        stopping: &dyn Fn() -> bool,
        unattended: Duration,
        read: &mut dyn FnMut(&dyn Fn() -> bool) -> Stint,
    ) -> LinkThreadEnd {
        loop {
            {
                let mut role = self.state.lock();
                loop {
                    if let Some(reason) = role.ended.take() {
                        return LinkThreadEnd::Ended(reason);
                    }
                    if stopping() {
                        return LinkThreadEnd::Stopping;
                    }
                    if role.holder == Holder::Nobody && role.wanting == 0 {
                        role.holder = Holder::LinkThread;
                        break;
                    }
                    let _ = self.cv.wait_for(&mut role, unattended);
                }
            }
            let stint = read(&|| self.wanting.load(Ordering::Acquire) > 0);
            {
                let mut role = self.state.lock();
                role.holder = Holder::Nobody;
                // An API thread may be waiting for the hand-over.
                self.cv.notify_all();
            }
            if let Stint::Ended(reason) = stint {
                return LinkThreadEnd::Ended(reason);
            }
        }
    }

    /// A reader (`by`) that panicked in its stint lets the role go (8.15): the
    /// caller has killed the link; `ended` (from an API thread) tells the
    /// link's thread why, so that it tears the link down; a waiting thread
    /// takes the role and sees the link ended.
    pub(crate) fn abandon(&self, by: Holder, ended: Option<EndReason>) {
        let mut role = self.state.lock();
        if role.holder == by {
            role.holder = Holder::Nobody;
        }
        if let Some(reason) = ended {
            role.ended = Some(reason);
        }
        self.cv.notify_all();
    }

    /// An API thread waits for `done()` on a link (its synchronous send's
    /// confirmation, or a message for its receive): it reads the link itself
    /// when it can (`read()`: one stint until `done()`, which says whether
    /// bytes are left buffered after it), so that the reply wakes it directly
    /// instead of waking the link's thread, which would then wake it (one
    /// context switch each way saved: what a blocking ping-pong costs, seed
    /// FIG. 5 and 7). When the link's thread reads, it asks it to hand over
    /// (`interrupt()` ends its wait for bytes); when another API thread
    /// reads, it blocks in `block()` until that one completes it.
    pub(crate) fn wait_on_link(&self, done: &dyn Fn() -> bool, block: &dyn Fn(), interrupt: &dyn Fn(), read: impl FnOnce() -> (Stint, bool)) {
        let mut role = self.state.lock();
        let mut asked = false;
        loop {
            if done() {
                if asked && role.holder == Holder::Nobody {
                    // The link's thread yielded to us, and we no longer
                    // need the role (it read what we waited for): it may
                    // take it back at once, not after UNATTENDED.
                    self.cv.notify_all();
                }
                return;
            }
            match role.holder {
                Holder::Nobody => {
                    role.holder = Holder::ApiThread;
                    break;
                }
                Holder::LinkThread => {
                    // Ask the link's thread to hand over; it does so at its
                    // next frame boundary (every one, buffered or not:
                    // read_stint) and signals the condition variable.
                    // Bounded by one frame's reading: a frame's bytes arrive
                    // within the dead-peer timeout or the link ends.
                    asked = true;
                    role.wanting += 1;
                    self.wanting.fetch_add(1, Ordering::AcqRel);
                    interrupt();
                    while role.holder == Holder::LinkThread {
                        self.cv.wait(&mut role);
                    }
                    role.wanting -= 1;
                    self.wanting.fetch_sub(1, Ordering::AcqRel);
                }
                Holder::ApiThread => {
                    role.bystanders += 1;
                    drop(role);
                    if !done() {
                        block();
                    }
                    self.state.lock().bystanders -= 1;
                    return;
                }
            }
        }
        drop(role);
        let (stint, buffered) = read();
        let mut role = self.state.lock();
        role.holder = Holder::Nobody;
        if let Stint::Ended(reason) = stint {
            // The link's thread tears the link down (and fails what was in
            // flight, ours included).
            role.ended = Some(reason);
            self.cv.notify_all();
        } else if role.bystanders > 0 || role.wanting > 0 || buffered {
            // Others wait for frames on this link, or frames that came in
            // behind ours are already read: someone must read on now.
            self.cv.notify_all();
        }
        drop(role);
        if !done() {
            block();
        }
    }
}

impl Conn {
    pub(crate) fn new(peer: SpId, epoch: u64, hello: &Hello, stream: Box<dyn Stream>, leftover: &[u8]) -> Conn {
        Conn {
            peer,
            epoch,
            peer_max_message: hello.max_message,
            stream,
            out: Mutex::new(OutQueue {
                frames: VecDeque::new(),
                head_written: 0,
                backlog: false,
                dead: false,
                unacked: VecDeque::new(),
                confirm_bytes: 0,
            }),
            writer_wake: Condvar::new(),
            last_tx_ms: AtomicU64::new(0),
            last_rx_ms: AtomicU64::new(0),
            clock_base: Instant::now(),
            dead_reason: Mutex::new(None),
            drained: Condvar::new(),
            room: Condvar::new(),
            killed: AtomicBool::new(false),
            rx: Mutex::new(RxCtx::new(leftover)),
            read_role: ReadRole::default(),
            #[cfg(test)]
            panic_at_next_confirm: AtomicBool::new(false),
            #[cfg(test)]
            panic_at_next_confirm_on_api_thread: AtomicBool::new(false),
        }
    }

    fn now_ms(&self) -> u64 {
        self.clock_base.elapsed().as_millis() as u64
    }

    /// Queues a `MESSAGE` frame and writes it now if the socket takes it.
    /// `Err(LinkDown)`: the link is dead and the frame was not queued.
    ///
    /// With `coalesce` (asynchronous sends), the frame is not written at once
    /// while messages sent before it are still unconfirmed: the confirmation
    /// of those is certain to come (the peer never holds one back), and the
    /// link thread writes everything queued, in one call, as soon as it has
    /// read it. A burst of asynchronous sends so costs one system call, not
    /// one each, and waits at most one round trip. Synchronous sends always
    /// write at once (and take any coalesced frames with them, in order).
    pub(crate) fn send_message(
        &self,
        h: &MessageHead,
        name: &[u8],
        payload: Payload,
        len: usize,
        coalesce: bool,
    ) -> Result<(), LinkDown> {
        let mut f = OutFrame { head: [0u8; MAX_MESSAGE_HEAD], head_len: 0, payload: None, extra: Vec::new() };
        f.head_len = frame::encode_message_head(&mut f.head, h, name, len as u32) as u16;
        if len > 0 {
            f.payload = Some((payload, len));
        }
        let mut q = self.out.lock();
        if q.dead {
            return Err(LinkDown);
        }
        // Decided under the queue lock, like the removals in
        // `take_confirmations`: a deferred frame always has a confirmation
        // still to come that will flush it.
        let defer = coalesce && !q.unacked.is_empty();
        let now = self.now_ms();
        q.unacked.push_back((h.id, now));
        q.frames.push_back(f);
        if !defer && !q.backlog {
            self.flush_or_hand_off(&mut q);
        }
        Ok(())
    }

    /// Writes what the socket takes now; the writer thread gets the rest.
    fn flush_or_hand_off(&self, q: &mut OutQueue) {
        match self.flush_locked(q) {
            Ok(true) => {}
            Ok(false) => {
                q.backlog = true;
                self.writer_wake.notify_one();
            }
            Err(e) => self.die_locked(q, format!("write failed: {e}")),
        }
    }

    /// A CONFIRM frame arrived: checks it against what was sent on this
    /// connection and takes its messages off the unconfirmed list. The peer
    /// confirms every message, in the order it received them (PROTOCOL.md
    /// 5): an entry that is not the oldest unconfirmed message (never sent
    /// here, already confirmed, sent on another connection) or whose status
    /// is not one the protocol allows is a broken peer, and ends the link.
    /// What was coalesced behind the confirmed messages goes out now, under
    /// the same lock.
    fn take_confirmations(&self, entries: impl Iterator<Item = (u64, Status)>) -> Result<(), String> {
        let mut q = self.out.lock();
        for (id, status) in entries {
            if !frame::confirm_status_allowed(status) {
                return Err(format!("malformed frame: CONFIRM of message {id} with {status:?}, which no receiver sends"));
            }
            match q.unacked.front() {
                Some(&(oldest, _)) if oldest == id => {
                    q.unacked.pop_front();
                }
                Some(&(oldest, _)) => {
                    return Err(format!(
                        "malformed frame: CONFIRM of message {id}, but the oldest unconfirmed message on this connection is {oldest}"
                    ))
                }
                None => {
                    return Err(format!("malformed frame: CONFIRM of message {id}, but no message on this connection awaits one"))
                }
            }
        }
        if !q.dead && !q.backlog && !q.frames.is_empty() {
            self.flush_or_hand_off(&mut q);
        }
        Ok(())
    }

    fn send_confirms(&self, entries: &[(u64, Status)]) -> Result<(), LinkDown> {
        let mut extra = Vec::with_capacity(entries.len() * 12 + 16);
        for chunk in entries.chunks(frame::MAX_CONFIRMS_PER_FRAME) {
            frame::encode_confirms(&mut extra, chunk);
        }
        self.enqueue(OutFrame { head: [0u8; MAX_MESSAGE_HEAD], head_len: 0, payload: None, extra })
    }

    /// Back-pressure: waits while the confirmations this link owes the peer
    /// and cannot write (it does not read them) are over
    /// `CONFIRM_BACKLOG_HIGH`, until they are down to `CONFIRM_BACKLOG_LOW`,
    /// the link dies, the reader is interrupted (`interrupt`: shutdown, or an
    /// API thread that wants the read role) or `until()` says stop. Reading no
    /// more meanwhile is what bounds them. True: read on; false: the wait
    /// ended for one of the other reasons.
    fn wait_for_room(&self, until: &dyn Fn() -> bool, stop: &AtomicBool) -> bool {
        let mut q = self.out.lock();
        if q.confirm_bytes < CONFIRM_BACKLOG_HIGH {
            return true;
        }
        log!(
            Level::Warn,
            "SP {} does not read its confirmations ({} bytes of them queued): reading from it is paused",
            self.peer,
            q.confirm_bytes
        );
        while q.confirm_bytes > CONFIRM_BACKLOG_LOW && !q.dead {
            if until() || stop.load(Ordering::Acquire) || self.killed.load(Ordering::Acquire) {
                return false;
            }
            self.room.wait(&mut q);
        }
        true
    }

    fn send_heartbeat(&self) -> Result<(), LinkDown> {
        self.enqueue(OutFrame::small(&frame::heartbeat()))
    }

    /// Bytes arrived from the peer.
    fn heard(&self) {
        self.last_rx_ms.store(self.now_ms(), Ordering::Relaxed);
    }

    /// The clocks of a link, looked at by the SP's watch thread (at least
    /// twice per heartbeat interval), so that no reader has to wake up for
    /// them: a heartbeat when nothing was written for an interval, and the end
    /// of the link when nothing was read for the dead-peer timeout.
    ///
    /// Liveness is judged by progress as well as by bytes: a peer that
    /// heartbeats but never confirms, or never reads what this end writes,
    /// is as dead as a silent one. Three rules, each bounded by the
    /// dead-peer timeout:
    /// - nothing read for the timeout (silence);
    /// - the oldest unconfirmed message queued longer ago than the timeout
    ///   (so every send completes within the timeout plus one watch period);
    /// - frames queued and no byte of them written for the timeout (the peer
    ///   does not read: its queue of confirmations and messages is stuck).
    pub(crate) fn watch(&self, p: &LinkParams) {
        let now = self.now_ms();
        let dead_ms = p.dead_timeout.as_millis() as u64;
        let silent = now.saturating_sub(self.last_rx_ms.load(Ordering::Relaxed));
        if silent >= dead_ms {
            self.kill(&format!("no frame from the peer for {silent} ms: declared dead"));
            return;
        }
        let idle = now.saturating_sub(self.last_tx_ms.load(Ordering::Relaxed));
        let (oldest, queued) = {
            let q = self.out.lock();
            (q.unacked.front().copied(), !q.frames.is_empty())
        };
        if let Some((id, at)) = oldest {
            let age = now.saturating_sub(at);
            if age >= dead_ms {
                self.kill(&format!("message {id} unconfirmed for {age} ms: the peer makes no progress, declared dead"));
                return;
            }
        }
        if queued && idle >= dead_ms {
            self.kill(&format!("nothing written for {idle} ms with frames queued: the peer does not read, declared dead"));
            return;
        }
        if !queued && idle >= p.heartbeat.as_millis() as u64 {
            // Only on an empty queue: frames already queued carry the same
            // news, and one that cannot be written must not grow the queue.
            // After a failed write there is nothing to send with; the link
            // ends at the peer's end-of-stream or the dead-peer timeout.
            let _ = self.send_heartbeat();
        }
    }

    fn enqueue(&self, f: OutFrame) -> Result<(), LinkDown> {
        let mut q = self.out.lock();
        if q.dead {
            return Err(LinkDown);
        }
        // Confirmations are what back-pressure bounds (`wait_for_room`).
        q.confirm_bytes += f.extra.len();
        q.frames.push_back(f);
        if !q.backlog {
            self.flush_or_hand_off(&mut q);
        }
        Ok(())
    }

    /// Writes queued frames until the queue is empty (`Ok(true)`) or the
    /// socket is full (`Ok(false)`).
    fn flush_locked(&self, q: &mut OutQueue) -> io::Result<bool> {
        while !q.frames.is_empty() {
            let mut iov: [IoSlice<'_>; MAX_IOV] = [IoSlice::new(&[]); MAX_IOV];
            let mut n = 0;
            let mut skip = q.head_written;
            'frames: for f in q.frames.iter() {
                for part in f.parts() {
                    if skip >= part.len() {
                        skip -= part.len();
                        continue;
                    }
                    iov[n] = IoSlice::new(&part[skip..]);
                    skip = 0;
                    n += 1;
                    if n == MAX_IOV {
                        break 'frames;
                    }
                }
            }
            let written = match self.stream.write_nonblocking(&iov[..n]) {
                Ok(w) => w,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(false),
                Err(e) => return Err(e),
            };
            self.last_tx_ms.store(self.now_ms(), Ordering::Relaxed);
            if q.consume(written) {
                self.room.notify_all();
            }
        }
        Ok(true)
    }

    /// The writing side is finished (a write failed, or the link is being
    /// killed): nothing more is queued or written, queued payloads are
    /// released, and the peer reads end-of-stream.
    fn die_locked(&self, q: &mut OutQueue, reason: String) {
        if q.dead {
            return;
        }
        q.dead = true;
        q.frames.clear();
        q.head_written = 0;
        q.confirm_bytes = 0;
        self.dead_reason.lock().get_or_insert(reason);
        self.stream.shutdown_write();
        self.writer_wake.notify_all();
        self.drained.notify_all();
        self.room.notify_all();
    }

    /// Ends the link: nothing more is written, queued payloads are released,
    /// and the reader returns. Idempotent.
    pub(crate) fn kill(&self, reason: &str) {
        let mut q = self.out.lock();
        // Killed before the write side shuts: a peer that closes at our
        // end-of-stream must not make the reader log "the peer closed the
        // link" instead of this reason (Reader::ended looks at `killed`).
        self.killed.store(true, Ordering::Release);
        self.die_locked(&mut q, reason.to_string());
        self.stream.shutdown();
        self.stream.interrupt();
    }

    /// A panic while `by` held the read role (a bug: crate::unwind): it is
    /// logged, the link killed, what was read and not handled dropped (the
    /// frame that panicked among it), and the role handed back; an API
    /// thread also records the end for the link's thread. Returns the end
    /// reason.
    pub(crate) fn end_after_panic(&self, payload: &(dyn std::any::Any + Send), by: Holder) -> EndReason {
        let reason = crate::unwind::report(payload, &format!("the link to SP {} ends", self.peer));
        self.kill(&reason);
        self.rx.lock().discard();
        self.read_role.abandon(by, (by == Holder::ApiThread).then(|| reason.clone()));
        reason
    }

    /// Wakes the reader so that it looks at the stop flag now (also one
    /// paused by back-pressure).
    pub(crate) fn interrupt(&self) {
        self.stream.interrupt();
        let _q = self.out.lock();
        self.room.notify_all();
    }

    /// Waits (at most until `deadline`) until everything queued has been written.
    fn drain(&self, deadline: Instant) {
        let mut q = self.out.lock();
        while !q.frames.is_empty() && !q.dead {
            if self.drained.wait_until(&mut q, deadline).timed_out() {
                break;
            }
        }
    }

    /// An orderly close, bounded by `limit`: what is queued (the confirmations
    /// owed above all) is written, then the peer reads end-of-stream after it;
    /// what the peer still sends is read and discarded until it closes too, so
    /// that closing never resets the connection under data the peer has not
    /// read yet.
    ///
    /// It reads only with the read role (the `rx` lock): an API thread that
    /// is reading the link (a synchronous send waiting for its confirmation)
    /// finishes its stint first, so no two threads ever read the socket and
    /// a confirmation that arrives meanwhile reaches its sender. If the role
    /// does not come free within `limit`, nothing is read here: the caller
    /// kills the link, which ends that reader's wait too.
    pub(crate) fn close_gracefully(&self, limit: Duration) {
        let deadline = Instant::now() + limit;
        self.drain(deadline);
        {
            let mut q = self.out.lock();
            self.die_locked(&mut q, "closed in order".into());
        }
        let Some(_role) = self.rx.try_lock_until(deadline) else {
            return;
        };
        let mut scratch = [0u8; 4096];
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() || self.killed.load(Ordering::Acquire) {
                break;
            }
            match self.stream.read_timeout(&mut scratch, left) {
                Ok(Some(n)) if n > 0 => {}
                _ => break,
            }
        }
    }

    /// True while messages can be sent on the link.
    pub(crate) fn is_up(&self) -> bool {
        !self.out.lock().dead && !self.killed.load(Ordering::Acquire)
    }

    /// The writer thread: drains a backlog the senders could not write
    /// without blocking. While `backlog` is set it alone writes, so it writes
    /// with the queue unlocked: senders keep queueing (never waiting for the
    /// socket), and it waits for room inside one blocking `sendmsg` per batch,
    /// as a plain blocking socket would, instead of a `poll` and a short write
    /// per socket buffer's worth. What it writes from are copies of the small
    /// parts and shares of the payloads, so a link that dies meanwhile may
    /// drop its queue: nothing is freed under the write.
    ///
    /// A panic in it (a bug) ends the link, as a failed write does: the
    /// reader then returns and the link's sends fail (crate::unwind).
    pub(crate) fn writer_loop(&self, poll_interval: Duration) {
        if let Err(p) = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| self.write_backlogs(poll_interval))) {
            let reason = crate::unwind::report(&*p, &format!("the link to SP {} ends", self.peer));
            self.kill(&reason);
        }
    }

    fn write_backlogs(&self, poll_interval: Duration) {
        let mut snap = Snapshot::default();
        loop {
            {
                let mut q = self.out.lock();
                while !q.backlog && !q.dead {
                    self.writer_wake.wait(&mut q);
                }
                if q.dead {
                    return;
                }
                if q.frames.is_empty() {
                    q.backlog = false;
                    self.drained.notify_all();
                    continue;
                }
                snap.take(&q);
            }
            let r = self.stream.write_blocking(&snap.iov(), poll_interval);
            // Let go of the payloads now: a client may get its buffer back
            // (and write to it) as soon as its message is confirmed.
            snap.parts.clear();
            let mut q = self.out.lock();
            if q.dead {
                return;
            }
            match r {
                Ok(n) => {
                    self.last_tx_ms.store(self.now_ms(), Ordering::Relaxed);
                    if q.consume(n) {
                        self.room.notify_all();
                    }
                    if q.frames.is_empty() {
                        q.backlog = false;
                        self.drained.notify_all();
                    }
                }
                // No room within `poll_interval`: look at `dead`, and go on.
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                Err(e) => {
                    self.die_locked(&mut q, format!("write failed: {e}"));
                    return;
                }
            }
        }
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
}

impl LinkParams {
    pub(crate) fn hello(&self) -> Hello {
        Hello {
            version_min: frame::VERSION_MIN,
            version_max: frame::VERSION_MAX,
            sp: self.local,
            max_message: self.max_message,
            heartbeat_ms: self.heartbeat.as_millis() as u32,
            dead_timeout_ms: self.dead_timeout.as_millis() as u32,
        }
    }
}

/// Size of a link's read buffer; larger message bodies are read straight into
/// their own allocation.
const READ_BUF: usize = 64 * 1024;

/// Bytes read from the stream and not yet parsed.
struct ReadBuf {
    buf: Box<[u8]>,
    start: usize,
    end: usize,
}

impl ReadBuf {
    fn new() -> ReadBuf {
        ReadBuf { buf: vec![0u8; READ_BUF].into_boxed_slice(), start: 0, end: 0 }
    }
    fn available(&self) -> &[u8] {
        &self.buf[self.start..self.end]
    }
    fn consume(&mut self, n: usize) {
        self.start += n;
        if self.start == self.end {
            self.start = 0;
            self.end = 0;
        }
    }
    /// Moves unparsed bytes to the front so that `want` bytes fit.
    fn make_room(&mut self, want: usize) {
        if self.buf.len() - self.start < want {
            self.buf.copy_within(self.start..self.end, 0);
            self.end -= self.start;
            self.start = 0;
        }
    }
}

/// Why a link ended, for the log.
pub(crate) type EndReason = String;

/// Reads for one link; whenever a wait ends without bytes (after
/// `read_wait`, or an interrupt) it looks at the stop flag and the link's
/// clocks (`Conn::watch`).
struct Reader<'a> {
    conn: &'a Conn,
    params: LinkParams,
    stream: &'a dyn Stream,
    stop: &'a AtomicBool,
    /// Only the stream's bytes can end this reader's wait (see `read_stint`).
    uninterruptible: bool,
}

impl Reader<'_> {
    /// Reads at least one byte into `dst`.
    fn read_some(&mut self, dst: &mut [u8]) -> Result<usize, EndReason> {
        loop {
            self.tick()?;
            match self.stream.read_timeout(dst, self.params.read_wait) {
                Ok(Some(0)) => return Err(self.ended("the peer closed the link".into())),
                Ok(Some(n)) => {
                    self.conn.heard();
                    return Ok(n);
                }
                Ok(None) => {}
                Err(e) => return Err(self.ended(format!("read failed: {e}"))),
            }
        }
    }

    /// Why the stream ended: the kill's reason when the link was killed
    /// (its socket shut down under the reader: a dead peer, shutdown), else
    /// what the read saw.
    fn ended(&self, seen: EndReason) -> EndReason {
        if self.conn.killed.load(Ordering::Acquire) {
            if let Some(r) = self.conn.dead_reason.lock().clone() {
                return r;
            }
        }
        seen
    }

    fn tick(&mut self) -> Result<(), EndReason> {
        if self.stop.load(Ordering::Acquire) {
            return Err("this SP is shutting down".into());
        }
        // Under Cmi the watch thread keeps the clocks (read_wait is MAX);
        // a reader without one (the unit tests) looks at them itself.
        if self.params.read_wait != Duration::MAX {
            self.conn.watch(&self.params);
        }
        if self.conn.killed.load(Ordering::Acquire) {
            return Err(self.conn.dead_reason.lock().clone().unwrap_or_else(|| "link closed".into()));
        }
        Ok(())
    }

    /// At a frame boundary with nothing buffered (the caller has just asked
    /// `until()`): reads at least one byte into `rb`, or gives up the read
    /// role (`Ok(false)`) when `until()` says so after a wait that ended
    /// without data (an interrupt, or `read_wait`).
    fn read_at_boundary(&mut self, rb: &mut ReadBuf, until: &dyn Fn() -> bool) -> Result<bool, EndReason> {
        loop {
            self.tick()?;
            rb.make_room(PREFIX_LEN);
            let end = rb.end;
            let got = if self.uninterruptible && self.params.read_wait == Duration::MAX {
                self.stream.read_uninterruptible(&mut rb.buf[end..])
            } else {
                self.stream.read_timeout(&mut rb.buf[end..], self.params.read_wait)
            };
            match got {
                Ok(Some(0)) => return Err(self.ended("the peer closed the link".into())),
                Ok(Some(n)) => {
                    self.conn.heard();
                    rb.end += n;
                    return Ok(true);
                }
                Ok(None) => {
                    if until() {
                        return Ok(false);
                    }
                }
                Err(e) => return Err(self.ended(format!("read failed: {e}"))),
            }
        }
    }

    /// Makes `n` bytes available in `rb` (n <= READ_BUF).
    fn fill(&mut self, rb: &mut ReadBuf, n: usize) -> Result<(), EndReason> {
        rb.make_room(n);
        while rb.end - rb.start < n {
            let end = rb.end;
            let got = self.read_some(&mut rb.buf[end..])?;
            rb.end += got;
        }
        Ok(())
    }

    /// Fills `dst` completely, first from `rb`, then from the stream.
    fn read_payload(&mut self, rb: &mut ReadBuf, dst: &mut Vec<u8>, len: usize) -> Result<(), EndReason> {
        let have = rb.available().len().min(len);
        dst.extend_from_slice(&rb.available()[..have]);
        rb.consume(have);
        while dst.len() < len {
            self.tick()?;
            let want = len - dst.len();
            match self.stream.read_rest_append(dst, want, self.params.heartbeat) {
                Ok(Some(0)) => return Err(self.ended("the peer closed the link".into())),
                Ok(Some(_)) => self.conn.heard(),
                Ok(None) => {}
                Err(e) => return Err(self.ended(format!("read failed: {e}"))),
            }
        }
        Ok(())
    }
}

/// Confirmations owed for the messages read so far, and the accepted
/// messages waiting for their confirmation to leave.
struct Owed<A> {
    confirms: Vec<(u64, Status)>,
    accepted: Vec<A>,
}

impl<A> Owed<A> {
    /// Sends the confirmations, then dispatches the accepted messages (seed
    /// FIG. 8A). If the link can no longer write, the accepted messages are
    /// dropped: their senders hear STATUS_CONNECTION_DISCONNECTED, and the
    /// target never saw them.
    fn settle<U: Upcall<Accepted = A>>(&mut self, conn: &Conn, up: &U) {
        if self.confirms.is_empty() {
            return;
        }
        let sent = conn.send_confirms(&self.confirms);
        self.confirms.clear();
        match sent {
            Ok(()) => {
                for a in self.accepted.drain(..) {
                    up.dispatch(a);
                }
            }
            Err(LinkDown) => self.accepted.clear(),
        }
    }
}

/// What the reader of a link keeps between stints: whoever holds it (the
/// link's own thread, or an API thread waiting on the link) is the one
/// thread reading the stream.
pub(crate) struct RxCtx {
    rb: ReadBuf,
}

impl RxCtx {
    /// True when bytes of the stream are buffered here, not yet parsed.
    pub(crate) fn has_buffered(&self) -> bool {
        !self.rb.available().is_empty()
    }

    pub(crate) fn new(leftover: &[u8]) -> RxCtx {
        let mut rb = ReadBuf::new();
        rb.buf[..leftover.len()].copy_from_slice(leftover);
        rb.end = leftover.len();
        RxCtx { rb }
    }

    /// Drops the bytes read and not yet handled: after a reader panicked
    /// halfway through them, nobody may handle them again (the link is
    /// killed; the next reader sees that at its first wait).
    pub(crate) fn discard(&mut self) {
        self.rb.start = 0;
        self.rb.end = 0;
    }
}

/// How a stint of reading ended.
pub(crate) enum Stint {
    /// `until()` said so, at a frame boundary; the link goes on.
    Yielded,
    /// The link ended, for this reason.
    Ended(EndReason),
}

/// Reads frames until `until()` says stop or the link ends. `until()` is
/// asked at every frame boundary (also between frames that one read brought
/// in: issue 8.16(a)), again whenever a wait for more bytes ends without any
/// (an interrupt, or `read_wait` passed), and while the reader is paused by
/// back-pressure (`Conn::wait_for_room`); never inside a frame. Confirmations owed are
/// always sent before it returns. An `uninterruptible` reader (one whose wait
/// only the link's own bytes can end: a synchronous send's confirmation)
/// waits on the socket alone, not on the interrupt too; a kill (dead peer,
/// shutdown of the link) still ends its wait, and `stop` is seen at the
/// peer's next frame (its heartbeats, at the latest).
pub(crate) fn read_stint<U: Upcall>(
    conn: &Conn,
    ctx: &mut RxCtx,
    params: LinkParams,
    up: &U,
    stop: &AtomicBool,
    until: &dyn Fn() -> bool,
    uninterruptible: bool,
) -> Stint {
    let mut r = Reader { conn, params, stream: conn.stream.as_ref(), stop, uninterruptible };
    let mut owed = Owed { confirms: Vec::new(), accepted: Vec::new() };
    let end = loop {
        // At every frame boundary, also with frames still buffered: a
        // stream of small frames may never leave the buffer empty at one
        // (issue 8.16(a)), and a thread waiting for the read role, or a
        // reader whose wait is over, must not wait for that. What is
        // buffered stays in `ctx` for the next holder of the role.
        if until() {
            break Stint::Yielded;
        }
        if ctx.rb.available().is_empty() {
            match r.read_at_boundary(&mut ctx.rb, until) {
                Ok(true) => {}
                Ok(false) => break Stint::Yielded,
                Err(reason) => break Stint::Ended(reason),
            }
        }
        if let Err(reason) = read_one_frame(&mut r, &mut ctx.rb, up, &mut owed) {
            break Stint::Ended(reason);
        }
        // Confirm everything this read brought in with one frame, before
        // blocking for more (never holding a confirmation back to wait).
        if !next_frame_buffered(&ctx.rb) {
            owed.settle(conn, up);
            // Back-pressure, once per read's worth of confirmations (every
            // read passes here, also those made inside a frame): a peer that
            // does not read them is not read either.
            if !conn.wait_for_room(until, stop) && until() {
                break Stint::Yielded;
            }
        }
    };
    owed.settle(conn, up);
    end
}

/// Reads frames until the link ends (or `stop` is set); returns why it ended.
/// The simple form, for a link with no other reader (tests).
#[cfg(test)]
pub(crate) fn run_reader<U: Upcall>(
    conn: &Conn,
    params: LinkParams,
    up: &U,
    leftover: Vec<u8>,
    stop: &AtomicBool,
) -> EndReason {
    let mut ctx = RxCtx::new(&leftover);
    loop {
        if let Stint::Ended(reason) = read_stint(conn, &mut ctx, params, up, stop, &|| false, false) {
            return reason;
        }
    }
}

/// True when the next frame is already wholly in the read buffer.
fn next_frame_buffered(rb: &ReadBuf) -> bool {
    let a = rb.available();
    if a.len() < PREFIX_LEN {
        return false;
    }
    let body = u32::from_le_bytes([a[0], a[1], a[2], a[3]]) as usize;
    a.len() - PREFIX_LEN >= body
}

fn read_one_frame<U: Upcall>(
    r: &mut Reader<'_>,
    rb: &mut ReadBuf,
    up: &U,
    owed: &mut Owed<U::Accepted>,
) -> Result<(), EndReason> {
    r.fill(rb, PREFIX_LEN)?;
    let prefix: [u8; PREFIX_LEN] = rb.available()[..PREFIX_LEN].try_into().expect("8 bytes");
    let p = frame::parse_prefix(&prefix, r.params.max_message).map_err(|e| format!("malformed frame: {e}"))?;
    let body_len = p.body_len as usize;
    match p.kind {
        Kind::Heartbeat => rb.consume(PREFIX_LEN),
        Kind::Hello => return Err("malformed frame: a second HELLO".into()),
        Kind::Confirm => {
            // The test hook fires on the library's own threads ("mps-..."),
            // not on an API thread that happens to hold the read role.
            #[cfg(test)]
            if std::thread::current().name().is_some_and(|n| n.starts_with("mps-")) && r.conn.panic_at_next_confirm.swap(false, Ordering::AcqRel) {
                panic!("injected fault: a panic while handling a CONFIRM from SP {}", r.conn.peer);
            }
            // Its twin for an API thread holding the read role.
            #[cfg(test)]
            if !std::thread::current().name().is_some_and(|n| n.starts_with("mps-"))
                && r.conn.panic_at_next_confirm_on_api_thread.swap(false, Ordering::AcqRel)
            {
                panic!("injected fault: a panic on an API thread while handling a CONFIRM from SP {}", r.conn.peer);
            }
            r.fill(rb, PREFIX_LEN + body_len)?;
            let body = &rb.available()[PREFIX_LEN..PREFIX_LEN + body_len];
            {
                let entries = frame::decode_confirms(body).map_err(|e| format!("malformed frame: {e}"))?;
                r.conn.take_confirmations(entries.clone())?;
                let mut entries = entries;
                up.confirmed(r.conn.peer, r.conn.epoch, &mut entries);
            }
            rb.consume(PREFIX_LEN + body_len);
        }
        Kind::Message => {
            r.fill(rb, PREFIX_LEN + frame::MESSAGE_FIXED)?;
            let (head, name_len) = frame::decode_message_fixed(&rb.available()[PREFIX_LEN..], p.body_len)
                .map_err(|e| format!("malformed frame: {e}"))?;
            let head_len = PREFIX_LEN + frame::MESSAGE_FIXED + name_len;
            r.fill(rb, head_len)?;
            let payload_len = body_len - frame::MESSAGE_FIXED - name_len;
            if payload_len > r.params.max_message as usize {
                return Err(format!(
                    "malformed frame: a {payload_len}-byte message is over this SP's max_message_size {}",
                    r.params.max_message
                ));
            }
            // Copied out of the transport buffer before it waits on a session
            // queue (SPEC 5), so a slow receiver never holds the link.
            let mut payload: Vec<u8> = Vec::new();
            if payload.try_reserve_exact(payload_len.max(1)).is_err() {
                return Err(format!("out of memory for a {payload_len}-byte message"));
            }
            // The name is copied to the stack (at most 256 bytes), not to a
            // heap String per message: the read buffer is reused below.
            let mut name_buf = [0u8; frame::MAX_NAME_BYTES];
            name_buf[..name_len].copy_from_slice(&rb.available()[PREFIX_LEN + frame::MESSAGE_FIXED..head_len]);
            let name = std::str::from_utf8(&name_buf[..name_len])
                .map_err(|_| "malformed frame: a mailbox name that is not UTF-8".to_string())?;
            rb.consume(head_len);
            r.read_payload(rb, &mut payload, payload_len)?;
            let verdict = up.accept(
                r.conn.peer,
                InboundMessage {
                    conduit: head.conduit,
                    domain: head.domain,
                    tag: head.tag,
                    sync: head.mode == frame::MODE_SYNC,
                    name,
                    payload,
                },
            );
            match verdict {
                Ok(a) => {
                    owed.confirms.push((head.id, Status::STATUS_SUCCESS));
                    owed.accepted.push(a);
                }
                Err(st) => owed.confirms.push((head.id, st)),
            }
            if owed.confirms.len() >= frame::MAX_CONFIRMS_PER_FRAME {
                owed.settle(r.conn, up);
            }
        }
    }
    Ok(())
}

/// What a handshake established: the peer's HELLO, the agreed version and
/// the bytes that arrived after the HELLO (the link's first frames).
pub(crate) type Greeting = (Hello, u16, Vec<u8>);

/// A HELLO frame, prefix included.
const HELLO_FRAME: usize = PREFIX_LEN + frame::HELLO_LEN;

/// Room in the handshake's read buffer past the peer's HELLO: what a read
/// may bring in after it (kept, and parsed as the link's first frames).
const HANDSHAKE_SLACK: usize = 512;

/// The handshake of one connection as a state machine, fed by whoever does
/// its I/O: `handshake` below (blocking, on the dialing side) and the
/// listener's poller (`cmi::acceptor`, non-blocking, up to
/// `acceptor::MAX_PENDING` connections in one poll set). One implementation
/// of the checks, so both ends, and the fuzz target, run the same code:
///
/// 1. our HELLO is written whole (`Step::Write`, then `wrote`);
/// 2. then the peer's is read (`Step::Read`, then `read`): once 8 bytes are
///    in, the prefix must be a HELLO's; once 40 are, it is decoded and a
///    version agreed. What the last read brought in after it is the
///    leftover. Neither end waits for the other to go first.
pub(crate) struct Handshake {
    out: [u8; HELLO_FRAME],
    sent: usize,
    buf: [u8; HELLO_FRAME + HANDSHAKE_SLACK],
    got: usize,
    mine: Hello,
    max_message: u32,
}

/// What a handshake needs done next.
pub(crate) enum Step<'a> {
    /// Write (some of) these bytes, then report how many with `wrote`.
    Write(&'a [u8]),
    /// Read into this buffer, then report how many bytes with `read`.
    Read(&'a mut [u8]),
}

impl Handshake {
    pub(crate) fn new(params: &LinkParams) -> Handshake {
        let mine = params.hello();
        Handshake { out: mine.encode(), sent: 0, buf: [0u8; HELLO_FRAME + HANDSHAKE_SLACK], got: 0, mine, max_message: params.max_message }
    }

    pub(crate) fn step(&mut self) -> Step<'_> {
        if self.sent < self.out.len() {
            Step::Write(&self.out[self.sent..])
        } else {
            Step::Read(&mut self.buf[self.got..])
        }
    }

    /// `n` bytes of the `Step::Write` slice were written.
    pub(crate) fn wrote(&mut self, n: usize) {
        self.sent = (self.sent + n).min(self.out.len());
    }

    /// `n` bytes were read into the `Step::Read` buffer (0: the peer closed).
    /// `Ok(None)`: more is needed; `Err`: the handshake failed, for this
    /// reason (the connection is to be closed).
    pub(crate) fn read(&mut self, n: usize) -> Result<Option<Greeting>, String> {
        if n == 0 {
            return Err("the peer closed the connection during the handshake".into());
        }
        self.got = (self.got + n).min(self.buf.len());
        if self.got >= PREFIX_LEN {
            let prefix: [u8; PREFIX_LEN] = self.buf[..PREFIX_LEN].try_into().expect("8 bytes");
            let p = frame::parse_prefix(&prefix, self.max_message).map_err(|e| format!("handshake: {e}"))?;
            if p.kind != Kind::Hello {
                return Err(format!("handshake: the first frame is {:?}, not HELLO", p.kind));
            }
        }
        if self.got < HELLO_FRAME {
            return Ok(None);
        }
        let theirs = Hello::decode(&self.buf[PREFIX_LEN..HELLO_FRAME]).map_err(|e| format!("handshake: {e}"))?;
        let mine = &self.mine;
        let version = mine.agree(&theirs).ok_or_else(|| {
            format!(
                "handshake: no common protocol version (ours {}..{}, the peer's {}..{})",
                mine.version_min, mine.version_max, theirs.version_min, theirs.version_max
            )
        })?;
        Ok(Some((theirs, version, self.buf[HELLO_FRAME..self.got].to_vec())))
    }

    /// Why the handshake failed if its time ran out now.
    pub(crate) fn timed_out(&self) -> String {
        if self.sent < self.out.len() {
            "handshake timed out while sending HELLO".into()
        } else {
            "handshake timed out waiting for the peer's HELLO".into()
        }
    }
}

/// Exchanges HELLOs on a fresh stream (`Handshake`), blocking, within the
/// dead-peer timeout. Returns the peer's HELLO, the agreed version and any
/// bytes that arrived after it.
/// How long a blocking handshake waits before it looks at the stop flag again.
const HANDSHAKE_STOP_CHECK: Duration = Duration::from_millis(50);

pub(crate) fn handshake(stream: &dyn Stream, params: &LinkParams, stop: &AtomicBool) -> Result<Greeting, String> {
    let mut hs = Handshake::new(params);
    let deadline = Instant::now() + params.dead_timeout;
    loop {
        // The stream is nobody else's yet, so shutdown cannot interrupt its
        // waits: they are cut into slices of STOP_CHECK, after each of which
        // the stop flag is looked at (shutdown waits at most that long).
        if stop.load(Ordering::Acquire) {
            return Err("handshake: this SP is shutting down".into());
        }
        let left = deadline.saturating_duration_since(Instant::now()).min(HANDSHAKE_STOP_CHECK);
        let at_deadline = Instant::now() >= deadline;
        match hs.step() {
            Step::Write(bytes) => match stream.write_nonblocking(&[IoSlice::new(bytes)]) {
                Ok(n) => hs.wrote(n),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    if at_deadline {
                        return Err(hs.timed_out());
                    }
                    match stream.wait_writable(left) {
                        Ok(()) => {}
                        Err(e) if e.kind() == io::ErrorKind::WouldBlock || e.kind() == io::ErrorKind::TimedOut => {}
                        Err(e) => return Err(format!("handshake: {e}")),
                    }
                }
                Err(e) => return Err(format!("handshake: sending HELLO failed: {e}")),
            },
            Step::Read(buf) => {
                if at_deadline {
                    return Err(hs.timed_out());
                }
                match stream.read_timeout(buf, left) {
                    Ok(Some(n)) => {
                        if let Some(greeting) = hs.read(n)? {
                            return Ok(greeting);
                        }
                    }
                    Ok(None) => {}
                    Err(e) => return Err(format!("handshake: read failed: {e}")),
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::stream::InprocStream;
    use super::*;

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
        LinkParams { local: SpId::a(0), max_message: 1 << 20, heartbeat: Duration::from_millis(50), dead_timeout: Duration::from_millis(2000), read_wait: Duration::from_millis(50) }
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
        let conn = Conn::new(SpId::a(0), 1, &params().hello(), Box::new(b), &[]);
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
        let writer = std::thread::Builder::new().name("mps-write-test".into()).spawn(move || w.writer_loop(Duration::from_millis(10))).unwrap();
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
        let conn = Conn::new(SpId::a(0), 1, &params().hello(), Box::new(b), &[]);
        let (up, _c) = recorder();
        let p = LinkParams { dead_timeout: Duration::from_millis(200), ..params() };
        let t0 = Instant::now();
        let why = run_reader(&conn, p, &up, vec![], &NO_STOP);
        assert!(why.contains("declared dead"), "{why}");
        assert!(t0.elapsed() >= Duration::from_millis(200));
    }
}
