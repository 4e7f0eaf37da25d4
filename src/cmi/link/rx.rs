//! A link's receive side: reading one connection's frames (by whoever holds
//! its read role), handing messages up (the MPS layer queues them and says
//! what to confirm), and sending the confirmations of all the messages one
//! read brought in as one `CONFIRM` frame. On version 2 every numbered frame
//! is checked against the last one received: a duplicate (sent again by a
//! resume) is dropped by its number, a gap ends the connection.

use super::{Conn, EndReason, LinkDown, LinkParams, Stint, Wire};
use crate::cmi::frame::{self, Kind, PREFIX_LEN};
use crate::cmi::stream::Stream;
use crate::cmi::{InboundMessage, Upcall};
use crate::log::{log, Level};
use crate::status::Status;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

/// The start of the end reason of a connection whose peer ended the link
/// session (`BYE`): the session ends with it (`cmi::ends_session`).
pub(crate) const PEER_ENDED: &str = "the peer ended the link session";

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

/// A message's `STATUS_SUCCESS` confirmation, not sent when the message is
/// accepted (`link.confirm = "delivered"`): the upper layer sends it, on the
/// link session the message came in on, once its client has the message, or
/// another status if the message is discarded instead. Dropped unsent, it
/// sends nothing: whoever drops one must have confirmed it or know that the
/// session is over (its sender then hears `STATUS_CONNECTION_DISCONNECTED`).
pub(crate) struct ConfirmLater {
    conn: Arc<Conn>,
    id: u64,
}

impl ConfirmLater {
    /// Queues the confirmation (one CONFIRM frame, written now if the socket
    /// takes it). False when the link session is over: it cannot leave.
    pub(crate) fn send(self, status: Status) -> bool {
        self.conn.send_confirms(&[(self.id, status)]).is_ok()
    }
}

impl std::fmt::Debug for ConfirmLater {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "ConfirmLater {{ peer: {}, epoch: {}, id: {} }}", self.conn.peer, self.conn.epoch, self.id)
    }
}

/// Reads for one connection; whenever a wait ends without bytes (after
/// `read_wait`, or an interrupt) it looks at the stop flag and the link's
/// clocks (`Conn::watch`).
struct Reader<'a> {
    conn: &'a Arc<Conn>,
    wire: &'a Wire,
    params: LinkParams,
    stream: &'a dyn Stream,
    stop: &'a AtomicBool,
    /// Only the stream's bytes can end this reader's wait (see `read_stint`).
    uninterruptible: bool,
    /// This SP confirms on delivery on this link (`link.confirm =
    /// "delivered"` and version 2): an accepted message's SUCCESS is the
    /// upper layer's to send (`ConfirmLater`), not this reader's.
    on_delivery: bool,
}

impl Reader<'_> {
    /// Reads at least one byte into `dst`.
    fn read_some(&mut self, dst: &mut [u8]) -> Result<usize, EndReason> {
        loop {
            self.tick()?;
            match self.stream.read_timeout(dst, self.params.read_wait) {
                Ok(Some(0)) => return Err(self.ended("the peer closed the link".into())),
                Ok(Some(n)) => {
                    self.heard();
                    return Ok(n);
                }
                Ok(None) => {}
                Err(e) => return Err(self.ended(format!("read failed: {e}"))),
            }
        }
    }

    fn heard(&self) {
        self.wire.last_rx_ms.store(self.conn.now_ms(), Ordering::Relaxed);
    }

    /// Why the stream ended: the kill's reason when the connection was
    /// killed (its socket shut down under the reader: a dead peer, shutdown),
    /// else what the read saw.
    fn ended(&self, seen: EndReason) -> EndReason {
        if self.wire.killed.load(Ordering::Acquire) {
            if let Some(r) = self.wire.reason() {
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
            let _ = self.conn.watch(&self.params, Duration::MAX);
        }
        if self.wire.killed.load(Ordering::Acquire) {
            return Err(self.wire.reason().unwrap_or_else(|| "link closed".into()));
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
                    self.heard();
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
                Ok(Some(_)) => self.heard(),
                Ok(None) => {}
                Err(e) => return Err(self.ended(format!("read failed: {e}"))),
            }
        }
        Ok(())
    }

    /// Version 2: a numbered frame `seq` arrived. `Ok(true)`: it is the next
    /// one, to be handled; `Ok(false)`: a duplicate (sent again by a resume
    /// of a frame handled before), to be dropped; a gap is an error.
    fn in_sequence(&self, seq: u64) -> Result<bool, EndReason> {
        let last = self.conn.rx_last.load(Ordering::Acquire);
        if seq <= last {
            return Ok(false);
        }
        if seq != last + 1 {
            return Err(format!("malformed frame: frame {seq} after frame {last} (a gap)"));
        }
        Ok(true)
    }

    /// Version 2: frame `seq` has been handled.
    fn handled(&self, seq: u64) {
        self.conn.rx_last.store(seq, Ordering::Release);
    }
}

/// Confirmations owed for the messages read so far, and the accepted
/// messages waiting for their confirmation to leave.
struct Owed<A> {
    confirms: Vec<(u64, Status)>,
    accepted: Vec<A>,
}

impl<A> Owed<A> {
    /// Queues the confirmations, then dispatches the accepted messages (seed
    /// FIG. 8A). If the link session is over, the accepted messages are
    /// dropped: their senders hear STATUS_CONNECTION_DISCONNECTED, and the
    /// target never saw them. (Version 2: while the session resumes the
    /// confirmations wait in its queue for the next connection.)
    ///
    /// Confirming on delivery, only the rejections are here: the accepted
    /// messages are dispatched with their `ConfirmLater` (or dropped, if the
    /// session is over, as above).
    fn settle<U: Upcall<Accepted = A>>(&mut self, conn: &Conn, up: &U) {
        if self.confirms.is_empty() {
            // Confirming on acceptance an accepted message always has its
            // confirmation here: nothing is owed, nothing waits.
            if self.accepted.is_empty() {
                return;
            }
            if conn.is_ended() {
                self.accepted.clear();
            } else {
                for a in self.accepted.drain(..) {
                    up.dispatch(a);
                }
            }
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

/// What the reader of a connection keeps between stints: whoever holds it
/// (the link's own thread, or an API thread waiting on the link) is the one
/// thread reading the stream.
pub(crate) struct RxCtx {
    rb: ReadBuf,
    /// The warning that this connection (version 1) confirms on acceptance
    /// although the SP confirms on delivery has been logged.
    warned_v1: bool,
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
        RxCtx { rb, warned_v1: false }
    }

    /// Drops the bytes read and not yet handled: after a reader panicked
    /// halfway through them, nobody may handle them again (the connection is
    /// killed; the next reader sees that at its first wait).
    pub(crate) fn discard(&mut self) {
        self.rb.start = 0;
        self.rb.end = 0;
    }
}

/// Reads frames of connection `wire` until `until()` says stop or the
/// connection ends. `until()` is asked at every frame boundary (also between
/// frames that one read brought in: issue 8.16(a)), again whenever a wait for
/// more bytes ends without any (an interrupt, or `read_wait` passed), and
/// while the reader is paused by back-pressure (`Conn::wait_for_room`); never
/// inside a frame. Confirmations owed are always queued before it returns.
/// An `uninterruptible` reader (one whose wait only the link's own bytes can
/// end: a synchronous send's confirmation) waits on the socket alone, not on
/// the interrupt too; a kill (dead peer, shutdown of the link) still ends its
/// wait, and `stop` is seen at the peer's next frame (its heartbeats, at the
/// latest).
#[allow(clippy::too_many_arguments)]
pub(crate) fn read_stint<U: Upcall>(
    conn: &Arc<Conn>,
    wire: &Arc<Wire>,
    ctx: &mut RxCtx,
    params: LinkParams,
    up: &U,
    stop: &AtomicBool,
    until: &dyn Fn() -> bool,
    uninterruptible: bool,
) -> Stint {
    let on_delivery = params.confirm_on_delivery && conn.version >= frame::VERSION_RESUME;
    if params.confirm_on_delivery && !on_delivery && !ctx.warned_v1 {
        // Version 1 has no RESUME to tell the peer, whose sender would take
        // confirmations out of order for a broken peer: confirm on acceptance.
        // A version-1 session has this one connection: once per link.
        ctx.warned_v1 = true;
        log!(
            Level::Warn,
            "link to SP {} speaks protocol version {}: this SP confirms its messages on acceptance on it, not on delivery (link.confirm = \"delivered\" needs version 2)",
            conn.peer,
            conn.version
        );
    }
    let mut r = Reader { conn, wire, params, stream: wire.stream.as_ref(), stop, uninterruptible, on_delivery };
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
            if !conn.wait_for_room(wire, until, stop) && until() {
                break Stint::Yielded;
            }
        }
    };
    owed.settle(conn, up);
    end
}

/// Reads frames until the connection ends (or `stop` is set); returns why
/// it ended. The simple form, for a link with no other reader (tests).
#[cfg(test)]
pub(crate) fn run_reader<U: Upcall>(conn: &Arc<Conn>, params: LinkParams, up: &U, leftover: Vec<u8>, stop: &AtomicBool) -> EndReason {
    let Some(wire) = conn.wire() else { return "no connection".into() };
    let mut ctx = RxCtx::new(&leftover);
    loop {
        if let Stint::Ended(reason) = read_stint(conn, &wire, &mut ctx, params, up, stop, &|| false, false) {
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

fn read_one_frame<U: Upcall>(r: &mut Reader<'_>, rb: &mut ReadBuf, up: &U, owed: &mut Owed<U::Accepted>) -> Result<(), EndReason> {
    r.fill(rb, PREFIX_LEN)?;
    let prefix: [u8; PREFIX_LEN] = rb.available()[..PREFIX_LEN].try_into().expect("8 bytes");
    let version = r.conn.version;
    let p = frame::parse_prefix_v(&prefix, r.params.max_message, version).map_err(|e| format!("malformed frame: {e}"))?;
    let body_len = p.body_len as usize;
    // The version-2 link header's length (0 on version 1).
    let hdr = if version >= frame::VERSION_RESUME { frame::LINK_HDR } else { 0 };
    match p.kind {
        Kind::Heartbeat => {
            r.fill(rb, PREFIX_LEN + body_len)?;
            if body_len == frame::HEARTBEAT2_LEN {
                let ack = u64::from_le_bytes(rb.available()[PREFIX_LEN..PREFIX_LEN + 8].try_into().expect("8 bytes"));
                r.conn.take_ack(ack)?;
            }
            rb.consume(PREFIX_LEN + body_len);
        }
        Kind::Hello => return Err("malformed frame: a second HELLO".into()),
        Kind::Resume | Kind::Refuse => return Err(format!("malformed frame: a {:?} after the handshake", p.kind)),
        // Everything the peer owed came before it (an orderly close).
        Kind::Bye => return Err(format!("{PEER_ENDED}: SP {} shut down", r.conn.peer)),
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
            let (mut fresh, mut seq, mut ack) = (true, 0, None);
            if hdr > 0 {
                let (s, a) = frame::decode_link_header(body);
                let next = r.in_sequence(s);
                if !matches!(next, Ok(true)) {
                    // Not handled: only its acknowledgement counts (taken
                    // first, as for a fresh one, below).
                    r.conn.take_ack(a)?;
                }
                fresh = next?;
                (seq, ack) = (s, Some(a));
            }
            if fresh {
                let entries = frame::decode_confirms(&body[hdr..]).map_err(|e| format!("malformed frame: {e}"))?;
                r.conn.take_confirmations(ack, entries.clone())?;
                let mut entries = entries;
                up.confirmed(r.conn.peer, r.conn.epoch, &mut entries);
                if hdr > 0 {
                    r.handled(seq);
                }
            }
            rb.consume(PREFIX_LEN + body_len);
        }
        Kind::Message => {
            r.fill(rb, PREFIX_LEN + hdr + frame::MESSAGE_FIXED)?;
            let mut fresh = true;
            let mut seq = 0;
            if hdr > 0 {
                let (s, ack) = frame::decode_link_header(&rb.available()[PREFIX_LEN..]);
                r.conn.take_ack(ack)?;
                fresh = r.in_sequence(s)?;
                seq = s;
            }
            let (head, name_len) = frame::decode_message_fixed(&rb.available()[PREFIX_LEN + hdr..], p.body_len - hdr as u32)
                .map_err(|e| format!("malformed frame: {e}"))?;
            let head_len = PREFIX_LEN + hdr + frame::MESSAGE_FIXED + name_len;
            r.fill(rb, head_len)?;
            let payload_len = body_len - hdr - frame::MESSAGE_FIXED - name_len;
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
            name_buf[..name_len].copy_from_slice(&rb.available()[PREFIX_LEN + hdr + frame::MESSAGE_FIXED..head_len]);
            let name = std::str::from_utf8(&name_buf[..name_len])
                .map_err(|_| "malformed frame: a mailbox name that is not UTF-8".to_string())?;
            rb.consume(head_len);
            r.read_payload(rb, &mut payload, payload_len)?;
            if !fresh {
                // Handled before the connection it first came on broke: its
                // confirmation is in this session's queue already.
                return Ok(());
            }
            let verdict = up.accept(
                r.conn.peer,
                InboundMessage {
                    conduit: head.conduit,
                    domain: head.domain,
                    tag: head.tag,
                    sync: head.mode == frame::MODE_SYNC,
                    name,
                    payload,
                    // Not made at all when confirming on acceptance: no
                    // reference count touched per message on that path.
                    confirm_later: r.on_delivery.then(|| ConfirmLater { conn: r.conn.clone(), id: head.id }),
                },
            );
            match verdict {
                Ok(a) => {
                    if !r.on_delivery {
                        owed.confirms.push((head.id, Status::STATUS_SUCCESS));
                    }
                    owed.accepted.push(a);
                }
                Err(st) => owed.confirms.push((head.id, st)),
            }
            if hdr > 0 {
                r.handled(seq);
            }
            if owed.confirms.len() >= frame::MAX_CONFIRMS_PER_FRAME || owed.accepted.len() >= frame::MAX_CONFIRMS_PER_FRAME {
                owed.settle(r.conn, up);
            }
        }
    }
    Ok(())
}
