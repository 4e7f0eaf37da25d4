//! A link's transmit side: the outbound queue of one link session, what
//! senders and the reader put in it, the writes (at once from the sender, or
//! by the connection's writer thread), and on version 2 the frames kept
//! until the peer acknowledges them (what a resume sends again).
//!
//! Writes: a sender appends its frame to the queue and, unless a backlog is
//! already being drained, writes it at once with a non-blocking `sendmsg`
//! (no thread hand-off on the common path). What does not fit is left for
//! the connection's writer thread (`Conn::writer_loop`), which waits for the
//! socket to drain. A write from the queue happens under its lock, and the
//! writer's own writes use shares of the payloads, so when a connection dies
//! and the queue is cleared or put back, nothing is freed under a write.

use super::{Conn, LinkDown, Payload, State, Wire};
use crate::cmi::frame::{self, MessageHead, MAX_MESSAGE_HEAD};
use crate::cmi::stream::MAX_IOV;
use crate::log::{log, Level};
use crate::status::Status;
use std::collections::VecDeque;
use std::io::{self, IoSlice};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// One frame waiting in the outbound queue, or (version 2) written and
/// waiting for the peer's acknowledgement.
pub(crate) struct OutFrame {
    head: [u8; MAX_MESSAGE_HEAD],
    head_len: u16,
    payload: Option<(Payload, usize)>,
    extra: Vec<u8>,
    /// Its sequence number (version 2); 0 for a frame that is not numbered
    /// (a heartbeat, a handshake answer, every frame of version 1).
    seq: u64,
    /// A CONFIRM frame: its bytes count towards `OutQueue::confirm_bytes`.
    confirm: bool,
}

impl OutFrame {
    pub(super) fn small(bytes: &[u8]) -> OutFrame {
        let mut head = [0u8; MAX_MESSAGE_HEAD];
        head[..bytes.len()].copy_from_slice(bytes);
        OutFrame { head, head_len: bytes.len() as u16, payload: None, extra: Vec::new(), seq: 0, confirm: false }
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
    fn confirm_len(&self) -> usize {
        if self.confirm {
            self.extra.len()
        } else {
            0
        }
    }
}

pub(crate) struct OutQueue {
    /// The frames of the session in the order they go out: first `written`
    /// frames written whole and kept (version 2: numbered frames not yet
    /// acknowledged, what a resume sends again, with any unnumbered frame
    /// written between them), then the frames still to write. A frame stays
    /// where it is from being queued until it is let go: written frames are
    /// not moved to a queue of their own (a frame is some 370 bytes, and a
    /// move in and out per message was measurable in W2).
    pub(super) frames: VecDeque<OutFrame>,
    /// How many frames at the front are written whole (see `frames`). The
    /// front one of them, if any, is a numbered frame not yet acknowledged
    /// (`release_front` keeps it so).
    pub(super) written: usize,
    /// Bytes of `frames[written]` (the first frame still to write) already
    /// written.
    pub(super) head_written: usize,
    /// The writer thread owns flushing until nothing is left to write.
    pub(super) backlog: bool,
    /// Version 2: the sequence number the next numbered frame gets (from 1).
    pub(super) next_seq: u64,
    /// Version 2: the peer's highest acknowledgement (every frame up to it
    /// has been received and handled by the peer).
    pub(super) acked: u64,
    /// Milliseconds (since the session's clock base) since which the peer
    /// owes an acknowledgement of the oldest written frame (`Conn::watch`).
    pub(super) ack_wait_since: u64,
    /// Version 2: the highest acknowledgement this side has queued (an
    /// acknowledgement is owed when more has been received: `Conn::watch`).
    pub(super) ack_sent: u64,
    /// MESSAGE frames queued or written whose confirmation has not been read,
    /// in the order they were queued (which is the order on the wire, and so
    /// the order the peer confirms them in): (message id, milliseconds since
    /// the clock base when it was queued, or last sent again). The front's
    /// age is how long the peer has made no progress (`Conn::watch`).
    pub(super) unacked: VecDeque<(u64, u64)>,
    /// Bytes of CONFIRM frames queued and not yet wholly written (version 2:
    /// not yet acknowledged): what a peer that does not read makes this SP
    /// hold. Bounded by back-pressure (`CONFIRM_BACKLOG_HIGH`).
    pub(super) confirm_bytes: usize,
    /// The connection being served, if any; written to while `writable`.
    pub(super) wire: Option<Arc<Wire>>,
    /// The attached connection may be written (version 1 stops writing at a
    /// failed write but goes on reading the connection to its end).
    pub(super) writable: bool,
    /// The session's state (`super::State`); changed only by the transition
    /// methods in link.rs.
    pub(super) state: State,
}

/// A link's reader stops reading while this many bytes of confirmations wait
/// to be written to the peer (it does not read them), and reads again once
/// they are down to `CONFIRM_BACKLOG_LOW`. One read's confirmations can come
/// on top (a 64 KiB read holds at most 1,985 messages: 24 KiB of entries), so
/// a peer can make a link hold at most about 1.05 MiB of confirmations; a
/// queue that stays stuck for the dead-peer timeout ends the connection.
pub(crate) const CONFIRM_BACKLOG_HIGH: usize = 1 << 20;
/// See `CONFIRM_BACKLOG_HIGH`.
pub(crate) const CONFIRM_BACKLOG_LOW: usize = 256 << 10;

impl OutQueue {
    pub(super) fn new(now_ms: u64) -> OutQueue {
        OutQueue {
            frames: VecDeque::new(),
            written: 0,
            head_written: 0,
            backlog: false,
            next_seq: 1,
            acked: 0,
            ack_wait_since: 0,
            ack_sent: 0,
            unacked: VecDeque::new(),
            confirm_bytes: 0,
            wire: None,
            writable: false,
            state: State::Resuming { since_ms: now_ms },
        }
    }

    /// The attached connection, if this queue may write to it now.
    pub(super) fn writer(&self) -> Option<&Arc<Wire>> {
        self.wire.as_ref().filter(|_| self.writable)
    }

    /// Frames are left to write (`frames` past `written`).
    pub(super) fn pending(&self) -> bool {
        self.frames.len() > self.written
    }

    /// Version 2: written frames wait for an acknowledgement (the oldest of
    /// them since `ack_wait_since`).
    pub(super) fn awaiting_ack(&self) -> bool {
        self.written > 0
    }

    /// The frames still to write, in order.
    fn to_write(&self) -> impl Iterator<Item = &OutFrame> {
        self.frames.range(self.written..)
    }

    /// Lets go of the written frames at the front that need not be kept: an
    /// unnumbered one (a heartbeat, a handshake answer, every frame of
    /// version 1) or one the peer has acknowledged. Afterwards the front
    /// written frame, if any, is numbered and not acknowledged.
    fn release_front(&mut self) {
        let mut n = 0;
        for f in self.frames.range(..self.written) {
            if f.seq != 0 && f.seq > self.acked {
                break;
            }
            self.confirm_bytes -= f.confirm_len();
            n += 1;
        }
        if n > 0 {
            // Dropped where they lie (`pop_front` would move each out first).
            self.frames.drain(..n);
            self.written -= n;
        }
    }

    /// `n` more bytes of the frames to write went out: frames now wholly
    /// written join the written ones (version 2: numbered ones are kept,
    /// with their payloads, until acknowledged; the others are let go). True
    /// when the confirmation backlog went down to `CONFIRM_BACKLOG_LOW` (a
    /// paused reader may go on).
    fn consume(&mut self, mut n: usize, now_ms: u64) -> bool {
        let before = self.confirm_bytes;
        while n > 0 {
            let left = self.frames[self.written].len() - self.head_written;
            if n >= left {
                n -= left;
                let none_waited = self.written == 0;
                self.written += 1;
                self.head_written = 0;
                self.release_front();
                if none_waited && self.awaiting_ack() {
                    self.ack_wait_since = now_ms;
                }
            } else {
                self.head_written += n;
                n = 0;
            }
        }
        before > CONFIRM_BACKLOG_LOW && self.confirm_bytes <= CONFIRM_BACKLOG_LOW
    }

    /// Version 2: a connection ended; what it did not get acknowledged goes
    /// back to be written again, whole, in sequence order, for the next one.
    /// Frames that are not numbered belonged to that connection alone.
    pub(super) fn put_back(&mut self) {
        self.frames.retain(|f| f.seq != 0);
        self.confirm_bytes = self.frames.iter().map(|f| f.confirm_len()).sum();
        self.written = 0;
        self.head_written = 0;
        self.backlog = false;
    }

    /// Version 2: the peer has received everything up to `self.acked` (an
    /// acknowledgement): those written frames are let go. Frames still to
    /// write are left alone (the writer may be writing them with the queue
    /// unlocked); `consume` lets them go once written.
    pub(super) fn drop_received(&mut self) {
        self.release_front();
    }

    /// Version 2, attaching a connection to resume on (no writer runs, the
    /// queue was put back): the frames the peer says it has received leave
    /// the front of the queue.
    pub(super) fn trim_for_resume(&mut self, received: u64) {
        debug_assert!(self.written == 0 && self.head_written == 0);
        while self.frames.front().is_some_and(|f| f.seq != 0 && f.seq <= received) {
            let f = self.frames.pop_front().expect("front");
            self.confirm_bytes -= f.confirm_len();
        }
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
        'frames: for f in q.to_write() {
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

impl Conn {
    /// The version-2 link header for a frame queued now: its sequence number
    /// (taken from `q`) and this side's acknowledgement; `None` on version 1.
    fn number(&self, q: &mut OutQueue) -> Option<(u64, u64)> {
        if self.version < frame::VERSION_RESUME {
            return None;
        }
        let seq = q.next_seq;
        q.next_seq += 1;
        let ack = self.rx_last.load(Ordering::Acquire);
        q.ack_sent = q.ack_sent.max(ack);
        Some((seq, ack))
    }

    /// Queues a `MESSAGE` frame and writes it now if the socket takes it.
    /// `Err(LinkDown)`: the link session is over and the frame was not
    /// queued. While the session resumes (version 2) the frame waits in the
    /// queue for the next connection.
    ///
    /// With `coalesce` (asynchronous sends), the frame is not written at once
    /// while messages sent before it are still unconfirmed: the confirmation
    /// of those is certain to come (the peer never holds one back), and the
    /// link thread writes everything queued, in one call, as soon as it has
    /// read it. A burst of asynchronous sends so costs one system call, not
    /// one each, and waits at most one round trip. Synchronous sends always
    /// write at once (and take any coalesced frames with them, in order).
    pub(crate) fn send_message(&self, h: &MessageHead, name: &[u8], payload: Payload, len: usize, coalesce: bool) -> Result<(), LinkDown> {
        let mut f = OutFrame { head: [0u8; MAX_MESSAGE_HEAD], head_len: 0, payload: None, extra: Vec::new(), seq: 0, confirm: false };
        let v2 = self.version >= frame::VERSION_RESUME;
        f.head_len = frame::encode_message_head_v(&mut f.head, h, name, len as u32, v2.then_some((0, 0))) as u16;
        if len > 0 {
            f.payload = Some((payload, len));
        }
        let mut q = self.out.lock();
        if matches!(q.state, State::Ended(_)) {
            return Err(LinkDown);
        }
        if let Some((seq, ack)) = self.number(&mut q) {
            frame::put_link_header(&mut f.head[frame::PREFIX_LEN..], seq, ack);
            f.seq = seq;
        }
        // Decided under the queue lock, like the removals in
        // `take_confirmations`: a deferred frame always has a confirmation
        // still to come that will flush it.
        // Not toward a peer that confirms on delivery: its confirmations
        // wait for its clients, and a frame held back for one would wait
        // with them (behind a message nobody receives: until the watch finds
        // frames queued and nothing written for the dead-peer timeout, and
        // ends the connection), while the peer's other sessions wait for it.
        let defer = coalesce && !q.unacked.is_empty() && !self.peer_confirms_on_delivery;
        let now = self.now_ms();
        q.unacked.push_back((h.id, now));
        q.frames.push_back(f);
        if !defer && !q.backlog {
            self.flush_or_hand_off(&mut q);
        }
        Ok(())
    }

    /// Writes what the socket takes now; the writer thread gets the rest.
    pub(super) fn flush_or_hand_off(&self, q: &mut OutQueue) {
        let Some(wire) = q.writer().cloned() else { return };
        match self.flush_locked(q, &wire) {
            Ok(true) => {}
            Ok(false) => {
                q.backlog = true;
                self.writer_wake.notify_one();
            }
            Err(e) => self.write_failed(q, &wire, format!("write failed: {e}")),
        }
    }

    /// A CONFIRM frame arrived: checks it against what was sent in this link
    /// session and takes its messages off the unconfirmed list. The peer
    /// confirms every message, in the order it received them (PROTOCOL.md
    /// 5): an entry that is not the oldest unconfirmed message (never sent
    /// here, already confirmed, sent in another link session) or whose status
    /// is not one the protocol allows is a broken peer, and ends the link.
    /// What was coalesced behind the confirmed messages goes out now, under
    /// the same lock.
    ///
    /// Version 2: `ack`, the frame's acknowledgement, is taken first, under
    /// the same lock (`take_ack`), so a CONFIRM costs one lock round.
    pub(super) fn take_confirmations(&self, ack: Option<u64>, entries: impl Iterator<Item = (u64, Status)>) -> Result<(), String> {
        let mut q = self.out.lock();
        if let Some(ack) = ack {
            self.ack_locked(&mut q, ack)?;
        }
        for (id, status) in entries {
            if !frame::confirm_status_allowed(status) {
                return Err(format!("malformed frame: CONFIRM of message {id} with {status:?}, which no receiver sends"));
            }
            match q.unacked.front() {
                Some(&(oldest, _)) if oldest == id => {
                    q.unacked.pop_front();
                }
                // A peer that confirms on delivery confirms in the order its
                // clients take the messages: any unconfirmed one, once.
                Some(_) if self.peer_confirms_on_delivery && q.unacked.iter().any(|m| m.0 == id) => {
                    let at = q.unacked.iter().position(|m| m.0 == id).expect("present");
                    q.unacked.remove(at);
                }
                Some(&(oldest, _)) => {
                    return Err(format!(
                        "malformed frame: CONFIRM of message {id}, but the oldest unconfirmed message on this connection is {oldest}"
                    ))
                }
                None => return Err(format!("malformed frame: CONFIRM of message {id}, but no message on this connection awaits one")),
            }
        }
        if !q.backlog && q.pending() {
            self.flush_or_hand_off(&mut q);
        }
        Ok(())
    }

    /// Version 2: the peer acknowledged every frame up to `ack`. Frames kept
    /// for a resume are let go (their payloads with them: this comes before
    /// the confirmations of the same frame are handed up, so a client that
    /// gets its buffer back finds no share of it left here). An
    /// acknowledgement of a frame never sent is a broken peer.
    pub(super) fn take_ack(&self, ack: u64) -> Result<(), String> {
        // Most frames bring no news (the same acknowledgement as the one
        // before): no lock for them.
        if ack <= self.acked_hint.load(Ordering::Acquire) {
            return Ok(());
        }
        let mut q = self.out.lock();
        self.ack_locked(&mut q, ack)
    }

    /// `take_ack` with the queue locked.
    fn ack_locked(&self, q: &mut OutQueue, ack: u64) -> Result<(), String> {
        if ack <= q.acked {
            return Ok(());
        }
        if ack >= q.next_seq {
            return Err(format!("malformed frame: acknowledgement of frame {ack}, but the last frame sent is {}", q.next_seq - 1));
        }
        q.acked = ack;
        self.acked_hint.store(ack, Ordering::Release);
        let before = q.confirm_bytes;
        q.drop_received();
        q.ack_wait_since = self.now_ms();
        if before > super::CONFIRM_BACKLOG_LOW && q.confirm_bytes <= super::CONFIRM_BACKLOG_LOW {
            self.room.notify_all();
        }
        Ok(())
    }

    pub(super) fn send_confirms(&self, entries: &[(u64, Status)]) -> Result<(), LinkDown> {
        let mut q = self.out.lock();
        if matches!(q.state, State::Ended(_)) {
            return Err(LinkDown);
        }
        for chunk in entries.chunks(frame::MAX_CONFIRMS_PER_FRAME) {
            let link = self.number(&mut q);
            let mut extra = Vec::with_capacity(chunk.len() * frame::CONFIRM_ENTRY + 32);
            frame::encode_confirms_v(&mut extra, chunk, link);
            q.confirm_bytes += extra.len();
            let mut f = OutFrame { head: [0u8; MAX_MESSAGE_HEAD], head_len: 0, payload: None, extra, seq: 0, confirm: true };
            f.seq = link.map_or(0, |(seq, _)| seq);
            q.frames.push_back(f);
        }
        if !q.backlog {
            self.flush_or_hand_off(&mut q);
        }
        Ok(())
    }

    /// Back-pressure: waits while the confirmations this link owes the peer
    /// and cannot write (it does not read them) are over
    /// `CONFIRM_BACKLOG_HIGH`, until they are down to `CONFIRM_BACKLOG_LOW`,
    /// the connection `wire` ends, the reader is interrupted (`interrupt`:
    /// shutdown, or an API thread that wants the read role) or `until()` says
    /// stop. Reading no more meanwhile is what bounds them. True: read on;
    /// false: the wait ended for one of the other reasons.
    pub(super) fn wait_for_room(&self, wire: &Arc<Wire>, until: &dyn Fn() -> bool, stop: &AtomicBool) -> bool {
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
        while q.confirm_bytes > CONFIRM_BACKLOG_LOW && !matches!(q.state, State::Ended(_)) {
            if until() || stop.load(Ordering::Acquire) || wire.killed.load(Ordering::Acquire) {
                return false;
            }
            if !q.wire.as_ref().is_some_and(|w| Arc::ptr_eq(w, wire)) {
                return false;
            }
            self.room.wait(&mut q);
        }
        true
    }

    /// A heartbeat (version 2: with this side's acknowledgement) on the
    /// attached connection; none while there is none.
    pub(super) fn send_heartbeat(&self) -> Result<(), LinkDown> {
        let mut q = self.out.lock();
        if matches!(q.state, State::Ended(_)) {
            return Err(LinkDown);
        }
        if q.writer().is_none() {
            return Ok(());
        }
        let f = if self.version >= frame::VERSION_RESUME {
            let ack = self.rx_last.load(Ordering::Acquire);
            q.ack_sent = q.ack_sent.max(ack);
            OutFrame::small(&frame::heartbeat_v2(ack))
        } else {
            OutFrame::small(&frame::heartbeat())
        };
        q.frames.push_back(f);
        if !q.backlog {
            self.flush_or_hand_off(&mut q);
        }
        Ok(())
    }

    /// Writes queued frames to `wire` until the queue is empty (`Ok(true)`)
    /// or the socket is full (`Ok(false)`).
    fn flush_locked(&self, q: &mut OutQueue, wire: &Wire) -> io::Result<bool> {
        while q.pending() {
            let mut iov: [IoSlice<'_>; MAX_IOV] = [IoSlice::new(&[]); MAX_IOV];
            let mut n = 0;
            let mut skip = q.head_written;
            'frames: for f in q.to_write() {
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
            let written = match wire.stream.write_nonblocking(&iov[..n]) {
                Ok(w) => w,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(false),
                Err(e) => return Err(e),
            };
            let now = self.now_ms();
            wire.last_tx_ms.store(now, Ordering::Relaxed);
            if q.consume(written, now) {
                self.room.notify_all();
            }
        }
        Ok(true)
    }

    /// Waits (at most until `deadline`) until everything queued has been written.
    pub(super) fn drain(&self, deadline: Instant) {
        let mut q = self.out.lock();
        while q.pending() && q.writer().is_some() {
            if self.drained.wait_until(&mut q, deadline).timed_out() {
                break;
            }
        }
    }

    /// The writer thread of connection `wire`: drains a backlog the senders
    /// could not write without blocking. While `backlog` is set it alone
    /// writes, so it writes with the queue unlocked: senders keep queueing
    /// (never waiting for the socket), and it waits for room inside one
    /// blocking `sendmsg` per batch, as a plain blocking socket would,
    /// instead of a `poll` and a short write per socket buffer's worth. What
    /// it writes from are copies of the small parts and shares of the
    /// payloads, so a connection that dies meanwhile may have its queue
    /// dropped or put back: nothing is freed under the write. It ends when
    /// `wire` is no longer the session's writable connection.
    ///
    /// A panic in it (a bug) ends the connection, as a failed write does:
    /// the reader then returns (crate::unwind).
    pub(crate) fn writer_loop(&self, wire: &Arc<Wire>, poll_interval: Duration) {
        if let Err(p) = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| self.write_backlogs(wire, poll_interval))) {
            let reason = crate::unwind::report(&*p, &format!("the link to SP {} ends", self.peer));
            self.kill_wire(wire, &reason);
        }
    }

    fn write_backlogs(&self, wire: &Arc<Wire>, poll_interval: Duration) {
        let mine = |q: &OutQueue| q.writer().is_some_and(|w| Arc::ptr_eq(w, wire));
        let mut snap = Snapshot::default();
        loop {
            {
                let mut q = self.out.lock();
                while !q.backlog && mine(&q) {
                    self.writer_wake.wait(&mut q);
                }
                if !mine(&q) {
                    return;
                }
                if !q.pending() {
                    q.backlog = false;
                    self.drained.notify_all();
                    continue;
                }
                snap.take(&q);
            }
            let r = wire.stream.write_blocking(&snap.iov(), poll_interval);
            // Let go of the payloads now: a client may get its buffer back
            // (and write to it) as soon as its message is confirmed.
            snap.parts.clear();
            let mut q = self.out.lock();
            if !mine(&q) {
                return;
            }
            match r {
                Ok(n) => {
                    let now = self.now_ms();
                    wire.last_tx_ms.store(now, Ordering::Relaxed);
                    if q.consume(n, now) {
                        self.room.notify_all();
                    }
                    if !q.pending() {
                        q.backlog = false;
                        self.drained.notify_all();
                    }
                }
                // No room within `poll_interval`: look again, and go on.
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                Err(e) => {
                    self.write_failed(&mut q, wire, format!("write failed: {e}"));
                    return;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn numbered(seq: u64, bytes: usize) -> OutFrame {
        let mut f = OutFrame::small(&vec![seq as u8; bytes]);
        f.seq = seq;
        f
    }

    fn confirm(seq: u64, bytes: usize) -> OutFrame {
        let mut f = OutFrame::small(&[]);
        f.extra = vec![0xC0; bytes];
        f.seq = seq;
        f.confirm = true;
        f
    }

    fn seqs(q: &OutQueue) -> Vec<u64> {
        q.frames.iter().map(|f| f.seq).collect()
    }

    /// Written frames stay in place until acknowledged; unnumbered ones go
    /// as soon as nothing numbered is written before them; a put-back keeps
    /// the numbered frames in order, written or not; confirmation bytes are
    /// counted until the frame that carries them is let go.
    #[test]
    fn written_frames_are_kept_in_place_until_acknowledged() {
        let mut q = OutQueue::new(0);
        q.frames.push_back(OutFrame::small(&[1, 2, 3])); // a RESUME answer, unnumbered
        q.frames.push_back(numbered(1, 10));
        q.frames.push_back(OutFrame::small(&[9; 4])); // a heartbeat
        q.frames.push_back(confirm(2, 24));
        q.frames.push_back(numbered(3, 10));
        q.confirm_bytes = 24;

        // The unnumbered front goes at once; frame 1 is kept and starts the
        // acknowledgement clock; half of the heartbeat is written.
        assert!(!q.consume(3 + 10 + 2, 7));
        assert_eq!(seqs(&q), [1, 0, 2, 3]);
        assert_eq!((q.written, q.head_written, q.ack_wait_since), (1, 2, 7));
        assert!(q.pending() && q.awaiting_ack());
        // The rest of the heartbeat and the CONFIRM: kept behind frame 1.
        q.consume(2 + 24, 9);
        assert_eq!((q.written, q.head_written, q.ack_wait_since), (3, 0, 7));
        assert_eq!(q.to_write().map(|f| f.seq).collect::<Vec<_>>(), [3]);
        assert_eq!(q.confirm_bytes, 24);

        // Frame 1 acknowledged: it and the heartbeat after it go; the
        // CONFIRM (2) is the front written frame now.
        q.acked = 1;
        q.drop_received();
        assert_eq!(seqs(&q), [2, 3]);
        assert_eq!(q.written, 1);
        assert_eq!(q.confirm_bytes, 24);

        // The connection is lost: 2 (written) and 3 (not) are written again.
        q.put_back();
        assert_eq!(seqs(&q), [2, 3]);
        assert_eq!((q.written, q.head_written, q.confirm_bytes), (0, 0, 24));
        // The peer says it has 2: only 3 is left, and no confirmation bytes.
        q.trim_for_resume(2);
        assert_eq!(seqs(&q), [3]);
        assert_eq!(q.confirm_bytes, 0);

        // Written whole and already acknowledged meanwhile (the writer wrote
        // it with the queue unlocked): let go at once.
        q.acked = 3;
        q.consume(10, 20);
        assert!(q.frames.is_empty() && !q.awaiting_ack() && !q.pending());
    }

    /// Version 1: nothing is numbered, so nothing written is kept, and a
    /// confirmation backlog that drains to the low mark says so.
    #[test]
    fn unnumbered_frames_leave_the_queue_once_written() {
        let mut q = OutQueue::new(0);
        let big = CONFIRM_BACKLOG_HIGH;
        q.frames.push_back(confirm(0, big));
        q.frames.push_back(OutFrame::small(&[5; 8]));
        q.confirm_bytes = big;
        assert!(!q.consume(big - CONFIRM_BACKLOG_LOW - 1, 1), "still above the low mark");
        assert!(q.consume(CONFIRM_BACKLOG_LOW + 1, 1), "the backlog drained to the low mark");
        assert_eq!((q.written, q.confirm_bytes), (0, 0));
        q.consume(8, 1);
        assert!(q.frames.is_empty() && !q.awaiting_ack());
    }
}
