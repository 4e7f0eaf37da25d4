//! CMI: the transport under MPS (seed FIG. 16). One reliable, ordered link
//! from this SP to each configured peer, over Unix-domain sockets, TCP or an
//! in-process pipe, with a handshake, heartbeats and redialing.
//!
//! Who dials: of two SPs, the lower id (unit, then A before B) dials and
//! redials with backoff; the higher one accepts. A new connection from a peer
//! replaces the old one (the peer restarted), and the old link's in-flight
//! messages fail.

mod acceptor;
pub mod frame;
pub(crate) mod link;
pub(crate) mod stream;
mod transport;

pub use link::Payload;
pub(crate) use link::{ConfirmLater, Conn, LinkDown};

use crate::config::{Address, Config};
use crate::log::{log, Level};
use crate::sp_id::SpId;
use crate::status::Status;
use link::{Holder, LinkParams, State, Watched, Wire};
use parking_lot::{Condvar, Mutex};
use std::io;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};
use stream::Stream;
use transport::{bind, dial, SocketFile};

/// A message frame as it arrives, handed up to the MPS layer.
pub struct InboundMessage<'a> {
    /// Conduit of the sending session.
    pub conduit: u32,
    /// Domain of the sending session.
    pub domain: u32,
    /// The sender's SequenceTag.
    pub tag: u32,
    /// Sent with `MpsSynchronousSend`.
    pub sync: bool,
    /// Mailbox name of the sending (and so the receiving) session.
    pub name: &'a str,
    /// The message, already copied out of the transport's buffers.
    pub payload: Vec<u8>,
    /// This SP confirms on delivery on this link (`link.confirm =
    /// "delivered"`, version 2): if `accept` takes the message, the link
    /// sends no confirmation for it; the upper layer sends its SUCCESS with
    /// this once the client has it (or another status if it is discarded).
    /// `None`: the link confirms it with `accept`'s verdict (FIG. 8A).
    pub(crate) confirm_later: Option<ConfirmLater>,
}

/// What the transport reports upward. Called on link threads, with no CMI lock held.
///
/// A message is handed up in two steps (seed FIG. 8A: the target confirms,
/// then dispatches): `accept` decides its confirmation and reserves its place;
/// the link sends the confirmation (one CONFIRM frame for everything one read
/// brought in); then `dispatch` makes each accepted message visible to the
/// session's receivers or callback. A message whose confirmation could not be
/// handed to the link is dropped instead, so the sender's failure is the truth.
pub trait Upcall: Send + Sync + 'static {
    /// A message accepted by `accept`, waiting for its confirmation to leave.
    type Accepted: Send;
    /// A message arrived from `from`: accept it, or say why not (the confirmation status).
    fn accept(&self, from: SpId, msg: InboundMessage<'_>) -> Result<Self::Accepted, Status>;
    /// The accepted message's confirmation is on its way: deliver it.
    fn dispatch(&self, accepted: Self::Accepted);
    /// The peer confirmed these messages (id, status), sent on link `epoch`,
    /// in one CONFIRM frame: the batch is handed over whole so that the
    /// completions it makes are delivered with one wake-up, not one each.
    fn confirmed(&self, from: SpId, epoch: u64, entries: &mut dyn Iterator<Item = (u64, Status)>);
    /// The link `epoch` to `peer` is gone; its unconfirmed messages are lost.
    fn link_down(&self, peer: SpId, epoch: u64);
}

/// The longest a link goes unread after an API thread stops reading it and
/// before its own thread takes over (unless woken sooner). It is also how
/// often a link's thread wakes while API threads do the reading. At 500 us
/// (two links: 4,000 wake-ups a second) W1's per-run medians were 11.0,
/// 13.9 and 14.4 us in one run; at 2 ms five runs in a row gave 10.7-10.8,
/// though later ones were slow at times too (docs/PERFORMANCE.md), and S3
/// gained a fifth. The price: a frame nobody waits for (an asynchronous
/// message, a confirmation of an asynchronous send) that arrives just after
/// a synchronous caller stopped reading waits up to this long.
const UNATTENDED: Duration = Duration::from_millis(2);

/// A link at one moment, for operators and tests (`Mps::link_info`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LinkInfo {
    /// The peer.
    pub peer: SpId,
    /// "up", "resuming" (version 2: no connection, messages wait for the
    /// next one) or "down" (no link session).
    pub state: &'static str,
    /// The protocol version agreed (0 when down).
    pub version: u16,
    /// The link session's number on this SP (0 when down).
    pub epoch: u64,
    /// The peer's incarnation (version 2; 0 otherwise).
    pub peer_incarnation: u64,
    /// This SP's own incarnation.
    pub incarnation: u64,
    /// Connections the link session has had: its first, and one per resume.
    pub connections: u64,
    /// Connections refused as a second live incarnation of the peer's SP id.
    pub conflicts: u64,
}

/// The destination is not a configured peer.
#[derive(Debug, PartialEq, Eq)]
pub struct NotConfigured;

struct PeerEntry {
    sp: SpId,
    /// Its addresses: one per path (at most two, `second_address`).
    addresses: Vec<Address>,
    /// This SP dials that peer (it has the lower id).
    dials: bool,
    conn: Mutex<Option<Arc<Conn>>>,
    changed: Condvar,
    /// Who serves this peer's links, one at a time (see `Shared::serve`).
    serving: Mutex<Serving>,
    /// Signalled when a link's service has ended (`Serving::active` fell).
    served: Condvar,
    /// Connections refused as a second live incarnation of this peer's SP
    /// id (issue 9, item 6): a failover gone wrong, for the operator.
    conflicts: AtomicU64,
    /// Connections waiting as standby paths of this peer's link session
    /// (issue 9, item 3): interrupted when the session loses its connection,
    /// so that a standby takes over at once.
    standbys: Mutex<Vec<Arc<dyn Stream>>>,
    /// Held by the dialer from an offer (RESUME) to the session it
    /// establishes: one path at a time (`serve`).
    establishing: Mutex<()>,
}

/// How a connection's service ended, for the dial loop.
enum Served {
    /// It ran, or failed for a reason the next attempt may not have.
    Done,
    /// The peer refused this SP: another live process has its SP id.
    Refused,
    /// A standby connection ended without taking over: redial with backoff.
    StandbyEnded,
}

/// Whether a connection's end `reason` ends its link session too (a broken
/// or hostile peer: what it sent cannot be resumed from) rather than leaving
/// the session to resume on the next connection.
fn ends_session(reason: &str) -> bool {
    reason.starts_with("malformed frame") || reason.starts_with("out of memory") || reason.starts_with(link::PEER_ENDED)
}

/// The links of one peer being served. A new connection is served only
/// once the one it replaces is wholly done: its reader has dispatched
/// what it confirmed and its in-flight sends have been failed (link_down).
/// So per (session, peer) deliveries and completions keep their order
/// across reconnections (issue 8, items 4 and 8).
#[derive(Default)]
struct Serving {
    /// Links of this peer whose `serve` has not finished.
    active: usize,
    /// The arrival number (accept order) of the newest accepted
    /// connection taken for service: an older one that finishes its
    /// handshake later is refused, not allowed to replace a newer one.
    newest: u64,
}

/// Ends one link's service on drop (also if its thread panics).
struct ServeGuard<'a>(&'a PeerEntry);

impl Drop for ServeGuard<'_> {
    fn drop(&mut self) {
        let mut s = self.0.serving.lock();
        s.active -= 1;
        self.0.served.notify_all();
    }
}

struct Shared<U: Upcall> {
    params: LinkParams,
    cfg: Arc<Config>,
    up: Arc<U>,
    peers: Vec<PeerEntry>,
    stop: AtomicBool,
    stop_mx: Mutex<()>,
    stop_cv: Condvar,
    epoch: AtomicU64,
    /// This SP's incarnation (random, non-zero, drawn at start), sent in RESUME.
    incarnation: u64,
    /// How long a version-2 link session waits for a new connection
    /// (`link.resume_timeout_ms`) before its in-flight messages fail.
    resume_timeout: Duration,
    /// Accepted connections numbered as their handshakes complete.
    arrivals: AtomicU64,
    threads: Mutex<Vec<JoinHandle<()>>>,
    /// Signalled once by `Cmi::shutdown`: the listener's poll and every
    /// connect in progress wait on it too, so they end at once whatever
    /// the state of their sockets.
    stop_signal: stream::Waker,
}

/// The transport of one SP.
pub struct Cmi<U: Upcall> {
    shared: Arc<Shared<U>>,
    /// The addresses this SP listens on (`listen`, then `second_listen`).
    listener_addrs: Vec<Address>,
    listener_wakes: Mutex<Vec<Box<dyn Fn() + Send>>>,
    /// Removed at shutdown, if they are still the files this SP's binds created.
    socket_files: Vec<SocketFile>,
}

impl<U: Upcall> Shared<U> {
    fn stopping(&self) -> bool {
        self.stop.load(Ordering::Acquire)
    }

    fn entry(&self, sp: SpId) -> Option<&PeerEntry> {
        self.peers.iter().find(|p| p.sp == sp)
    }

    /// Starts a CMI thread (joined at shutdown). A panic in `f` is caught
    /// and logged, and the thread ends (crate::unwind).
    fn spawn(self: &Arc<Self>, name: String, f: impl FnOnce() + Send + 'static) -> io::Result<()> {
        let h = std::thread::Builder::new().name(name).spawn(move || crate::unwind::caught("the thread ends", f))?;
        let mut t = self.threads.lock();
        t.retain(|h| !h.is_finished());
        t.push(h);
        Ok(())
    }

    /// Like `spawn`, for a thread the SP cannot do without (dialing a peer,
    /// the links' clocks): after a panic `f` runs again, 100 ms later, unless
    /// the SP is stopping.
    fn spawn_restarting(self: &Arc<Self>, name: String, f: impl Fn() + Send + 'static) -> io::Result<()> {
        let sh = self.clone();
        self.spawn(name, move || crate::unwind::restarting(f, || sh.pause(Duration::from_millis(100))))
    }

    /// `link_thread_reads`, with a panic on the way (in the frame handling or
    /// an upcall: a bug) made an end of the link like any other: the link is
    /// killed, what was read and not handled is dropped (the frame that
    /// panicked among it), the read role is handed back (an API thread
    /// waiting for it takes it and sees the link ended), and `serve` tears
    /// the link down, failing its in-flight sends (`link_down`).
    fn link_thread_reads_caught(&self, conn: &Arc<Conn>, wire: &Arc<Wire>) -> link::EndReason {
        std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| self.link_thread_reads(conn, wire)))
            .unwrap_or_else(|p| conn.end_after_panic(wire, &*p, Holder::LinkThread))
    }

    /// Waits `d` or until shutdown; false when shutting down.
    fn pause(&self, d: Duration) -> bool {
        let mut g = self.stop_mx.lock();
        if self.stopping() {
            return false;
        }
        let _ = self.stop_cv.wait_for(&mut g, d);
        !self.stopping()
    }

    /// Takes a new connection of `entry`'s peer for service: ends the link
    /// it replaces and waits until that link's service is wholly over
    /// (bounded by the dead-peer timeout: killed, its reader and writer end
    /// at once). `arrival` orders accepted connections (None: dialed, one
    /// at a time). None when the connection must be refused (why is logged).
    fn take_for_service<'a>(&self, entry: &'a PeerEntry, arrival: Option<u64>) -> Option<ServeGuard<'a>> {
        let mut s = entry.serving.lock();
        if let Some(n) = arrival {
            if n < s.newest {
                log!(Level::Info, "refused a connection from SP {}: a newer one from it is already served", entry.sp);
                return None;
            }
            s.newest = n;
        }
        if let Some(old) = entry.conn.lock().as_ref() {
            old.kill("replaced by a new connection from the peer");
        }
        let deadline = Instant::now() + self.params.dead_timeout;
        loop {
            // Asked after every wake-up, before `active`: several
            // connections may wait here, and when the old link's service
            // ends only the newest of them goes on.
            if arrival.is_some_and(|n| n < s.newest) {
                log!(Level::Info, "refused a connection from SP {}: a newer one from it arrived meanwhile", entry.sp);
                return None;
            }
            if s.active == 0 {
                break;
            }
            if self.stopping() {
                return None;
            }
            if entry.served.wait_until(&mut s, deadline).timed_out() {
                log!(
                    Level::Warn,
                    "refused a connection from SP {}: the link it replaces did not end within the dead-peer timeout",
                    entry.sp
                );
                return None;
            }
        }
        s.active += 1;
        Some(ServeGuard(entry))
    }

    /// This SP's offer for a new connection to `entry`'s peer (version 2):
    /// the link session it has with that peer, if any (RESUME).
    fn resume_offer(&self, entry: &PeerEntry) -> frame::Resume {
        let cur = entry.conn.lock().clone();
        let (peer_incarnation, received) = match cur {
            Some(c) if c.version >= frame::VERSION_RESUME && !c.is_ended() => (c.peer_incarnation, c.received()),
            _ => (0, 0),
        };
        frame::Resume { incarnation: self.incarnation, peer_incarnation, received, flags: self.my_flags() }
    }

    /// The flags this SP's RESUME carries about itself.
    fn my_flags(&self) -> u32 {
        if self.params.confirm_on_delivery {
            frame::RESUME_FLAG_DELIVERED
        } else {
            0
        }
    }

    /// The session `conn` of `entry`'s peer is over: ended (if it was not
    /// yet), its end reported upward once (`link_down`: its in-flight
    /// messages fail), and it is no longer the peer's session.
    fn finish(&self, entry: &PeerEntry, conn: &Arc<Conn>, reason: &str) {
        conn.end(reason);
        {
            let mut cur = entry.conn.lock();
            if cur.as_ref().is_some_and(|c| Arc::ptr_eq(c, conn)) {
                *cur = None;
            }
            entry.changed.notify_all();
        }
        if conn.take_report() {
            if self.stopping() {
                log!(Level::Info, "link to SP {} closed: {reason}", entry.sp);
            } else {
                log!(Level::Warn, "link to SP {} lost: {reason}", entry.sp);
            }
            self.up.link_down(entry.sp, conn.epoch);
        }
    }

    /// A new link session for `entry`'s peer, replacing (and finishing) the
    /// one it has, if any.
    fn new_session(&self, entry: &PeerEntry, hello: &frame::Hello, version: u16, peer_incarnation: u64, peer_flags: u32, why_old_ends: &str) -> Arc<Conn> {
        let old = entry.conn.lock().clone();
        if let Some(old) = old {
            self.finish(entry, &old, why_old_ends);
        }
        let epoch = self.epoch.fetch_add(1, Ordering::Relaxed) + 1;
        let on_delivery = peer_flags & frame::RESUME_FLAG_DELIVERED != 0;
        Arc::new(Conn::session(entry.sp, epoch, version, hello.max_message, peer_incarnation, on_delivery))
    }

    /// Makes the link session a new connection carries, after its HELLOs
    /// (and, version 2, the RESUME frames: `theirs`, the peer's), and
    /// attaches the connection to it: a new session, or (version 2) the
    /// session it resumes. The accepting side decides and answers
    /// (`theirs` came first); the dialing side follows the answer. None when
    /// the connection is to be closed (said why in the log).
    #[allow(clippy::too_many_arguments)]
    fn establish(
        &self,
        entry: &PeerEntry,
        stream: Box<dyn Stream>,
        hello: &frame::Hello,
        version: u16,
        leftover: &[u8],
        theirs: Option<frame::Resume>,
        dialer: bool,
    ) -> Option<(Arc<Conn>, Arc<Wire>, bool)> {
        let cur = entry.conn.lock().clone();
        let (conn, received, first, resumed) = match theirs {
            None => {
                let why = format!("SP {} connected again with protocol version {version}", entry.sp);
                (self.new_session(entry, hello, version, 0, 0, &why), None, None, false)
            }
            Some(r) => {
                let same = cur.as_ref().filter(|c| {
                    c.version >= frame::VERSION_RESUME && c.peer_incarnation == r.incarnation && !c.is_ended()
                });
                let resume = if dialer { r.flags & frame::RESUME_FLAG_RESUMED != 0 } else { same.is_some() && r.peer_incarnation == self.incarnation };
                if resume {
                    let Some(c) = same.cloned() else {
                        log!(Level::Warn, "SP {} resumed a link session this SP no longer has: connection closed, the next one starts afresh", entry.sp);
                        stream.shutdown();
                        return None;
                    };
                    let answer = (!dialer).then(|| {
                        frame::Resume { incarnation: self.incarnation, peer_incarnation: r.incarnation, received: c.received(), flags: frame::RESUME_FLAG_RESUMED | self.my_flags() }.encode()
                    });
                    (c, Some(r.received), answer, true)
                } else {
                    let why = match &cur {
                        Some(c) if c.peer_incarnation != r.incarnation => format!("SP {} restarted (incarnation {:016x}, was {:016x})", entry.sp, r.incarnation, c.peer_incarnation),
                        Some(_) => format!("SP {} no longer has this link session: it starts afresh", entry.sp),
                        None => String::new(),
                    };
                    let answer = (!dialer).then(|| frame::Resume { incarnation: self.incarnation, peer_incarnation: r.incarnation, received: 0, flags: self.my_flags() }.encode());
                    (self.new_session(entry, hello, version, r.incarnation, r.flags, &why), None, answer, false)
                }
            }
        };
        let sndbuf = stream.send_buffer().map(|n| format!(", send buffer {n} bytes")).unwrap_or_default();
        let wire = match conn.attach(stream, leftover, received, first.as_ref().map(|f| &f[..])) {
            Ok(w) => w,
            Err(e) => {
                // Nothing the two sides can resume from: the session ends
                // (its in-flight messages fail); the next connection starts afresh.
                self.finish(entry, &conn, &format!("cannot resume: {e}"));
                return None;
            }
        };
        {
            let mut cur = entry.conn.lock();
            *cur = Some(conn.clone());
            if self.stopping() {
                conn.kill("shutting down");
            }
            entry.changed.notify_all();
        }
        let epoch = conn.epoch;
        if resumed {
            log!(Level::Info, "link to SP {} resumed (protocol version {version}, epoch {epoch}, {} frame(s) received from it so far{sndbuf})", entry.sp, conn.received());
        } else if version >= frame::VERSION_RESUME {
            log!(Level::Info, "link to SP {} up (protocol version {version}, epoch {epoch}, its incarnation {:016x}{sndbuf})", entry.sp, conn.peer_incarnation);
        } else {
            log!(Level::Info, "link to SP {} up (protocol version {version}, epoch {epoch}{sndbuf})", entry.sp);
        }
        Some((conn, wire, resumed))
    }

    /// Runs a connection whose HELLOs are exchanged until it ends: on
    /// version 2 first the RESUME exchange (the dialer offers, the acceptor
    /// decides: resume, start afresh, or refuse a second live incarnation of
    /// an SP id), then the link session it carries (`establish`).
    fn serve(
        self: &Arc<Self>,
        entry: &PeerEntry,
        mut stream: Box<dyn Stream>,
        hello: frame::Hello,
        version: u16,
        mut leftover: Vec<u8>,
        mut arrival: Option<u64>,
    ) -> Served {
        let dialer = arrival.is_none();
        let mut theirs = None;
        // The dialer's offers to one peer are made one at a time, each up to
        // its session being established (two paths dial at once: an offer
        // made while the other path establishes the session would name no
        // session and end it), never while a connection stands by.
        let mut establishing = dialer.then(|| entry.establishing.lock());
        if version >= frame::VERSION_RESUME {
            if dialer {
                let answer = loop {
                    let mut mine = self.resume_offer(entry);
                    // The link is up on another path: this one waits as its standby.
                    let up_elsewhere = entry.conn.lock().as_ref().is_some_and(|c| c.version >= frame::VERSION_RESUME && c.is_up());
                    if up_elsewhere && entry.addresses.len() > 1 {
                        mine.flags |= frame::RESUME_FLAG_STANDBY;
                    }
                    let answer = link::write_whole(stream.as_ref(), &mine.encode(), &self.params, &self.stop)
                        .and_then(|()| link::read_answer(stream.as_ref(), &self.params, &self.stop, &mut leftover, true));
                    match &answer {
                        Ok(link::Answer::Resume(r)) if r.flags & frame::RESUME_FLAG_STANDBY != 0 => {
                            drop(establishing.take());
                            let shared: Arc<dyn Stream> = Arc::from(stream);
                            if self.stand_by(entry, &shared, &mut leftover, true).is_none() {
                                shared.shutdown();
                                return Served::StandbyEnded;
                            }
                            // The link lost its connection: this path takes
                            // over with a RESUME like any new connection's
                            // (or stands by again if the other path was quicker).
                            stream = Box::new(shared);
                            establishing = Some(entry.establishing.lock());
                        }
                        _ => break answer,
                    }
                };
                match answer {
                    Ok(link::Answer::Resume(r)) if r.peer_incarnation != self.incarnation => {
                        log!(Level::Warn, "SP {} answered a RESUME for another incarnation of this SP: connection closed", entry.sp);
                        stream.shutdown();
                        return Served::Done;
                    }
                    Ok(link::Answer::Resume(r)) => theirs = Some(r),
                    Ok(link::Answer::Refuse(code)) => {
                        log!(
                            Level::Error,
                            "SP {} refused this SP (reason {code}): another live process with this SP's id {} is linked to it. Two processes must never run as one SP: check the failover that started this one",
                            entry.sp,
                            self.params.local
                        );
                        stream.shutdown();
                        return Served::Refused;
                    }
                    Err(e) => {
                        log!(Level::Warn, "SP {}: {e}", entry.sp);
                        stream.shutdown();
                        return Served::Done;
                    }
                }
            } else {
                let mut answer = link::read_answer(stream.as_ref(), &self.params, &self.stop, &mut leftover, false);
                while let Ok(link::Answer::Resume(r)) = &answer {
                    let cur = entry.conn.lock().clone();
                    let standby = r.flags & frame::RESUME_FLAG_STANDBY != 0
                        && cur.as_ref().is_some_and(|c| c.version >= frame::VERSION_RESUME && c.peer_incarnation == r.incarnation && c.is_up())
                        && r.peer_incarnation == self.incarnation;
                    if !standby {
                        break;
                    }
                    let ok = frame::Resume { incarnation: self.incarnation, peer_incarnation: r.incarnation, received: 0, flags: frame::RESUME_FLAG_STANDBY | self.my_flags() };
                    let shared: Arc<dyn Stream> = Arc::from(stream);
                    let promoted = link::write_whole(shared.as_ref(), &ok.encode(), &self.params, &self.stop)
                        .ok()
                        .and_then(|()| self.stand_by(entry, &shared, &mut leftover, false));
                    let Some(offer) = promoted else {
                        shared.shutdown();
                        return Served::StandbyEnded;
                    };
                    answer = Ok(link::Answer::Resume(offer));
                    stream = Box::new(shared);
                    // Served as the newest connection of this peer.
                    arrival = Some(self.next_arrival());
                }
                match answer {
                    Ok(link::Answer::Resume(r)) => {
                        let cur = entry.conn.lock().clone();
                        if let Some(c) = cur.filter(|c| c.version >= frame::VERSION_RESUME && c.peer_incarnation != r.incarnation && c.is_up()) {
                            let n = entry.conflicts.fetch_add(1, Ordering::Relaxed) + 1;
                            log!(
                                Level::Error,
                                "refused a connection from SP {}: it is a second live incarnation ({:016x}) of that SP id, while incarnation {:016x} is linked and alive; {n} such refusal(s) so far. Two processes are running as SP {}: stop one",
                                entry.sp,
                                r.incarnation,
                                c.peer_incarnation,
                                entry.sp
                            );
                            let _ = link::write_whole(stream.as_ref(), &frame::refuse(frame::REFUSE_CONFLICT), &self.params, &self.stop);
                            stream.shutdown();
                            return Served::Done;
                        }
                        theirs = Some(r);
                    }
                    Ok(link::Answer::Refuse(_)) => unreachable!("read_answer refuses a REFUSE here"),
                    Err(e) => {
                        log!(Level::Warn, "refused an incoming connection from SP {}: {e}", entry.sp);
                        stream.shutdown();
                        return Served::Done;
                    }
                }
            }
        }
        let Some(_service) = self.take_for_service(entry, arrival) else {
            stream.shutdown();
            return Served::Done;
        };
        let established = self.establish(entry, stream, &hello, version, &leftover, theirs, dialer);
        drop(establishing);
        let Some((conn, wire, _)) = established else {
            return Served::Done;
        };
        let w = conn.clone();
        let ww = wire.clone();
        let interval = self.params.heartbeat;
        let writer = std::thread::Builder::new()
            .name(format!("mps-write-{}", entry.sp))
            .spawn(move || w.writer_loop(&ww, interval));
        let reason = match &writer {
            Ok(_) => self.link_thread_reads_caught(&conn, &wire),
            Err(e) => format!("cannot start the link's writer thread: {e}"),
        };
        if self.stopping() {
            // An orderly close: the confirmations already queued leave, then
            // the peer reads end-of-stream after them (bounded by the dead-peer timeout).
            conn.close_gracefully(&wire, self.params.dead_timeout);
            conn.end(&reason);
        } else if ends_session(&reason) {
            conn.end(&reason);
        }
        conn.kill_wire(&wire, &reason);
        if let Ok(h) = writer {
            let _ = h.join();
        }
        // An API thread may still be in a stint on this connection, handling
        // frames it had read before the kill. The next connection must not be
        // attached until it is done, or both could handle the frame a resume
        // sends again; and nobody may handle what is left in its buffer.
        // Bounded: the connection is killed, so its reads fail at once.
        wire.rx.lock().discard();
        match conn.release(&wire, &reason) {
            State::Ended(why) => self.finish(entry, &conn, &why),
            _ => {
                entry.changed.notify_all();
                // A standby path takes over now, not at its next heartbeat.
                for s in entry.standbys.lock().iter() {
                    s.interrupt();
                }
                log!(
                    Level::Warn,
                    "link to SP {} interrupted: {reason}; resuming (messages in flight wait up to {} ms for a new connection)",
                    entry.sp,
                    self.resume_timeout.as_millis()
                );
            }
        }
        Served::Done
    }

    /// A connection on a second path waits as the standby of `entry`'s link
    /// session (version 2, PROTOCOL.md 10.7): heartbeats both ways keep it
    /// supervised (silent for the dead-peer timeout: it ends), and it carries
    /// nothing else until it takes over. The dialer (`dialer`) decides when:
    /// as soon as the session has no connection (the serve that lost it
    /// interrupts this wait); it returns `Some` and then offers a RESUME. The
    /// acceptor returns that RESUME when it arrives. `None`: the standby
    /// ended (shutdown, silence, a frame it may not carry).
    fn stand_by(&self, entry: &PeerEntry, stream: &Arc<dyn Stream>, leftover: &mut Vec<u8>, dialer: bool) -> Option<frame::Resume> {
        entry.standbys.lock().push(stream.clone());
        let r = self.stand_by_inner(entry, stream.as_ref(), leftover, dialer);
        entry.standbys.lock().retain(|s| !Arc::ptr_eq(s, stream));
        if let Err(why) = &r {
            log!(Level::Info, "standby path to SP {} ended: {why}", entry.sp);
        }
        r.ok()
    }

    fn stand_by_inner(&self, entry: &PeerEntry, stream: &dyn Stream, leftover: &mut Vec<u8>, dialer: bool) -> Result<frame::Resume, String> {
        let hb = self.params.heartbeat;
        let dead = self.params.dead_timeout;
        let (mut last_rx, mut last_tx) = (Instant::now(), Instant::now());
        let mut buf = [0u8; 64];
        log!(Level::Info, "second path to SP {} up, standing by", entry.sp);
        loop {
            if self.stopping() {
                return Err("this SP is shutting down".into());
            }
            if dialer && !entry.conn.lock().as_ref().is_some_and(|c| c.is_up()) {
                return Ok(frame::Resume { incarnation: self.incarnation, peer_incarnation: 0, received: 0, flags: 0 });
            }
            // Frames the peer sent: heartbeats, or (to the acceptor) the RESUME that promotes this path.
            while leftover.len() >= frame::PREFIX_LEN {
                let prefix: [u8; frame::PREFIX_LEN] = leftover[..frame::PREFIX_LEN].try_into().expect("8 bytes");
                let p = frame::parse_prefix_v(&prefix, self.params.max_message, frame::VERSION_RESUME)?;
                match p.kind {
                    frame::Kind::Heartbeat => {}
                    frame::Kind::Resume if !dialer => {
                        return match link::read_answer(stream, &self.params, &self.stop, leftover, false)? {
                            link::Answer::Resume(r) => Ok(r),
                            link::Answer::Refuse(_) => Err("a REFUSE on a standby path".into()),
                        };
                    }
                    k => return Err(format!("a {k:?} frame on a standby path")),
                }
                let n = frame::PREFIX_LEN + p.body_len as usize;
                if leftover.len() < n {
                    break;
                }
                leftover.drain(..n);
            }
            let now = Instant::now();
            if now.duration_since(last_rx) >= dead {
                return Err(format!("nothing from the peer for {} ms", dead.as_millis()));
            }
            if now.duration_since(last_tx) >= hb {
                link::write_whole(stream, &frame::heartbeat_v2(0), &self.params, &self.stop)?;
                last_tx = now;
            }
            match stream.read_timeout(&mut buf, hb / 2) {
                Ok(Some(0)) => return Err("the peer closed it".into()),
                Ok(Some(n)) => {
                    leftover.extend_from_slice(&buf[..n]);
                    last_rx = Instant::now();
                }
                Ok(None) => {}
                Err(e) => return Err(format!("read failed: {e}")),
            }
        }
    }

    /// The link's own thread: reads whenever no API thread does, hands the
    /// read role over and takes it back (`ReadRole::run_link_thread`).
    fn link_thread_reads(&self, conn: &Arc<Conn>, wire: &Arc<Wire>) -> link::EndReason {
        let end = wire.read_role.run_link_thread(&|| self.stopping(), &|| wire.ended(), UNATTENDED, &mut |until| {
            let mut ctx = wire.rx.lock();
            link::read_stint(conn, wire, &mut ctx, self.params, self.up.as_ref(), &self.stop, until, false)
        });
        match end {
            link::LinkThreadEnd::Ended(reason) => reason,
            link::LinkThreadEnd::Stopping => "this SP is shutting down".into(),
        }
    }

    /// An API thread waits for `done()` on a link, reading its connection
    /// itself when it can (`ReadRole::wait_on_link`); `block()` waits for
    /// `done()` otherwise (also while the link has no connection: resuming).
    fn wait_on_link(&self, conn: &Arc<Conn>, done: &dyn Fn() -> bool, block: &dyn Fn(), uninterruptible: bool) {
        let Some(wire) = conn.wire() else {
            if !done() {
                block();
            }
            return;
        };
        wire.read_role.wait_on_link(done, block, &|| wire.interrupt(), &|reason| conn.kill_wire(&wire, &reason), || {
            let read = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                let mut ctx = wire.rx.lock();
                let stint = link::read_stint(conn, &wire, &mut ctx, self.params, self.up.as_ref(), &self.stop, done, uninterruptible);
                (stint, ctx.has_buffered())
            }));
            match read {
                Ok(r) => r,
                Err(p) => {
                    // A bug while this API thread read the link (8.15): the link
                    // ends (its sends fail through link_down, the link's thread
                    // tears it down), the role is free again, and the panic goes
                    // on to the caller (the C boundary turns it into a status).
                    conn.end_after_panic(&wire, &*p, Holder::ApiThread);
                    std::panic::resume_unwind(p);
                }
            }
        });
    }

    fn dial_loop(self: &Arc<Self>, idx: usize, path: usize) {
        let entry = &self.peers[idx];
        let address = &entry.addresses[path];
        let mut backoff = self.cfg.reconnect_initial_backoff;
        let mut failures: u64 = 0;
        while !self.stopping() {
            let attempt = dial(address, self.params.dead_timeout, self.cfg.socket_send_buffer, &self.stop_signal)
                .map_err(|e| format!("cannot connect to {address}: {e}"))
                .and_then(|s| link::handshake(s.as_ref(), &self.params, &self.stop).map(|h| (s, h)));
            match attempt {
                Ok((s, (hello, _, _))) if hello.sp != entry.sp => {
                    s.shutdown();
                    log!(Level::Error, "{address} answered as SP {}, not the configured SP {}", hello.sp, entry.sp);
                }
                Ok((s, (hello, version, leftover))) => {
                    if failures > 0 {
                        log!(Level::Info, "SP {} reachable again at {address} after {failures} failed attempt(s)", entry.sp);
                    }
                    failures = 0;
                    backoff = self.cfg.reconnect_initial_backoff;
                    match self.serve(entry, s, hello, version, leftover, None) {
                        Served::Done => continue,
                        // Refused as a duplicate of a live SP: try again
                        // only as often as the slowest redial.
                        Served::Refused => backoff = self.cfg.reconnect_max_backoff,
                        Served::StandbyEnded => {}
                    }
                }
                Err(e) => {
                    // A change of state (at start, or after the link was up)
                    // is a warning; the repeats are detail.
                    failures += 1;
                    if failures == 1 {
                        let max = self.cfg.reconnect_max_backoff.as_millis();
                        log!(Level::Warn, "SP {} unreachable: {e}; retrying in {} ms, backing off to every {max} ms", entry.sp, backoff.as_millis());
                    } else {
                        log!(Level::Debug, "SP {}: {e}; retrying in {} ms", entry.sp, backoff.as_millis());
                    }
                }
            }
            if !self.pause(backoff) {
                break;
            }
            backoff = (backoff * 2).min(self.cfg.reconnect_max_backoff);
        }
    }

    /// An in-process connection, on a thread of its own (only this
    /// process's own SPs can reach an in-process endpoint; socket listeners
    /// run their handshakes in one poll set instead: `acceptor`).
    fn accepted(self: &Arc<Self>, s: Box<dyn Stream>) {
        let (hello, version, leftover) = match link::handshake(s.as_ref(), &self.params, &self.stop) {
            Ok(h) => h,
            Err(e) => {
                log!(Level::Warn, "refused an incoming connection: {e}");
                s.shutdown();
                return;
            }
        };
        let Some(idx) = self.incoming_peer(&hello) else {
            s.shutdown();
            return;
        };
        let arrival = self.next_arrival();
        self.serve(&self.peers[idx], s, hello, version, leftover, Some(arrival));
    }

    /// Numbers an accepted connection whose handshake has completed, in the
    /// order they complete (for `take_for_service`: the newest is served).
    fn next_arrival(&self) -> u64 {
        self.arrivals.fetch_add(1, Ordering::Relaxed) + 1
    }

    /// The configured peer (its index in `peers`) that an incoming
    /// connection whose HELLO is `hello` links to; `None`, logged, when the
    /// connection is to be refused.
    fn incoming_peer(&self, hello: &frame::Hello) -> Option<usize> {
        let Some(idx) = self.peers.iter().position(|p| p.sp == hello.sp) else {
            log!(Level::Warn, "refused a connection from SP {}: not a configured peer", hello.sp);
            return None;
        };
        if self.peers[idx].dials {
            log!(Level::Warn, "refused a connection from SP {}: this SP dials it (the lower id dials)", hello.sp);
            return None;
        }
        Some(idx)
    }
}

impl<U: Upcall> Cmi<U> {
    /// Binds the listening address and starts dialing the peers this SP dials.
    pub fn start(cfg: Arc<Config>, up: Arc<U>) -> io::Result<Cmi<U>> {
        let params = LinkParams {
            local: cfg.local,
            max_message: cfg.max_message_size,
            heartbeat: cfg.heartbeat_interval,
            dead_timeout: cfg.dead_peer_timeout,
            // The watch thread below keeps the clocks: readers wait untimed.
            read_wait: Duration::MAX,
            version_max: cfg.protocol_version_max,
            confirm_on_delivery: cfg.confirm == crate::config::ConfirmPoint::Delivered,
        };
        let peers = cfg
            .peers
            .iter()
            .map(|p| PeerEntry {
                sp: p.sp,
                addresses: std::iter::once(p.address.clone()).chain(p.second_address.clone()).collect(),
                dials: cfg.local < p.sp,
                conn: Mutex::new(None),
                changed: Condvar::new(),
                serving: Mutex::new(Serving::default()),
                served: Condvar::new(),
                conflicts: AtomicU64::new(0),
                standbys: Mutex::new(Vec::new()),
                establishing: Mutex::new(()),
            })
            .collect();
        let shared = Arc::new(Shared {
            params,
            cfg: cfg.clone(),
            up,
            peers,
            stop: AtomicBool::new(false),
            stop_mx: Mutex::new(()),
            stop_cv: Condvar::new(),
            epoch: AtomicU64::new(0),
            incarnation: new_incarnation(),
            resume_timeout: cfg.resume_timeout,
            arrivals: AtomicU64::new(0),
            threads: Mutex::new(Vec::new()),
            stop_signal: stream::Waker::new()?,
        });
        let mut cmi = Cmi { shared: shared.clone(), listener_addrs: Vec::new(), listener_wakes: Mutex::new(Vec::new()), socket_files: Vec::new() };
        for addr in cfg.listen.iter().chain(cfg.second_listen.iter()) {
            let (listener, actual, socket_file) =
                bind(addr).map_err(|e| io::Error::new(e.kind(), format!("cannot listen on {addr}: {e}")))?;
            cmi.socket_files.extend(socket_file);
            log!(Level::Info, "SP {} listening on {actual}", cfg.local);
            let wake = listener.waker();
            cmi.listener_wakes.lock().push(wake);
            cmi.listener_addrs.push(actual);
            let poll_fd = listener.poll_fd().map_err(|e| io::Error::new(e.kind(), format!("cannot listen on {addr}: {e}")))?;
            let sh = shared.clone();
            shared.spawn(format!("mps-listen-{}", cfg.local), move || match poll_fd {
                // Sockets: accepted, and their handshakes run, in one poll set.
                Some(fd) => acceptor::run(&sh, &listener, fd),
                None => loop {
                    let r = listener.accept(sh.cfg.socket_send_buffer);
                    if sh.stopping() {
                        break;
                    }
                    match r {
                        Ok(s) => {
                            let sh2 = sh.clone();
                            if let Err(e) = sh.spawn("mps-link".into(), move || sh2.accepted(s)) {
                                log!(Level::Error, "cannot start a link thread: {e}");
                            }
                        }
                        Err(e) => {
                            log!(Level::Error, "accept failed: {e}");
                            if !sh.pause(Duration::from_millis(100)) {
                                break;
                            }
                        }
                    }
                },
            })?;
        }
        // The links' clocks (Conn::watch): heartbeats out when a link is idle,
        // a silent peer declared dead; twice per heartbeat interval, so
        // heartbeats leave at most 1.5 intervals apart (the dead-peer timeout
        // is at least two).
        let sh = shared.clone();
        shared.spawn_restarting(format!("mps-watch-{}", cfg.local), move || {
            let period = (sh.params.heartbeat / 2).max(Duration::from_millis(1));
            while sh.pause(period) {
                for p in &sh.peers {
                    let c = p.conn.lock().clone();
                    if let Some(c) = c {
                        if let Watched::Ended(reason) = c.watch(&sh.params, sh.resume_timeout) {
                            sh.finish(p, &c, &reason);
                        }
                    }
                }
            }
        })?;
        for (i, p) in shared.peers.iter().enumerate() {
            if p.dials {
                for path in 0..p.addresses.len() {
                    let sh = shared.clone();
                    let name = if path == 0 { format!("mps-dial-{}", p.sp) } else { format!("mps-dial-{}-{}", p.sp, path + 1) };
                    shared.spawn_restarting(name, move || sh.dial_loop(i, path))?;
                }
            }
        }
        Ok(cmi)
    }

    /// Every address this SP listens on, with the real ports.
    pub fn listen_addresses(&self) -> &[Address] {
        &self.listener_addrs
    }

    /// The address this SP actually listens on (with the real port for `tcp:...:0`).
    pub fn listen_address(&self) -> Option<&Address> {
        self.listener_addrs.first()
    }

    /// Waits for `done()` on `conn`, reading the link itself when it can (see
    /// `Shared::wait_on_link`); `block()` waits for `done()` otherwise.
    pub(crate) fn wait_on_link(&self, conn: &Arc<Conn>, done: &dyn Fn() -> bool, block: &dyn Fn(), uninterruptible: bool) {
        self.shared.wait_on_link(conn, done, block, uninterruptible)
    }

    /// The live link to `sp`, `Ok(None)` when it is down.
    pub(crate) fn link(&self, sp: SpId) -> Result<Option<Arc<Conn>>, NotConfigured> {
        let e = self.shared.entry(sp).ok_or(NotConfigured)?;
        Ok(e.conn.lock().clone())
    }

    /// The link to `sp` at this moment.
    pub fn link_info(&self, sp: SpId) -> Result<LinkInfo, NotConfigured> {
        let e = self.shared.entry(sp).ok_or(NotConfigured)?;
        let conn = e.conn.lock().clone();
        let mut info = LinkInfo {
            peer: sp,
            state: "down",
            version: 0,
            epoch: 0,
            peer_incarnation: 0,
            incarnation: self.shared.incarnation,
            connections: 0,
            conflicts: e.conflicts.load(Ordering::Relaxed),
        };
        if let Some(c) = conn {
            info.state = match c.state() {
                State::Up => "up",
                State::Resuming { .. } => "resuming",
                State::Ended(_) => "down",
            };
            info.version = c.version;
            info.epoch = c.epoch;
            info.peer_incarnation = c.peer_incarnation;
            info.connections = c.connections();
        }
        Ok(info)
    }

    /// Waits until the link to `sp` is up; `timeout` `None` waits forever.
    /// Returns whether it is up.
    pub fn wait_link(&self, sp: SpId, timeout: Option<Duration>) -> Result<bool, NotConfigured> {
        let e = self.shared.entry(sp).ok_or(NotConfigured)?;
        // A timeout too large to add to the clock (Duration::MAX) waits forever.
        let deadline = timeout.and_then(|t| Instant::now().checked_add(t));
        let mut cur = e.conn.lock();
        loop {
            if cur.as_ref().is_some_and(|c| c.is_up()) {
                return Ok(true);
            }
            if self.shared.stopping() {
                return Ok(false);
            }
            match deadline {
                Some(d) => {
                    if e.changed.wait_until(&mut cur, d).timed_out() {
                        return Ok(cur.as_ref().is_some_and(|c| c.is_up()));
                    }
                }
                None => e.changed.wait(&mut cur),
            }
        }
    }

    /// Closes every link and listener and joins every CMI thread.
    pub fn shutdown(&self) {
        if self.shared.stop.swap(true, Ordering::AcqRel) {
            return;
        }
        {
            let _g = self.shared.stop_mx.lock();
            self.shared.stop_cv.notify_all();
        }
        self.shared.stop_signal.wake();
        for wake in std::mem::take(&mut *self.listener_wakes.lock()) {
            wake();
        }
        for p in &self.shared.peers {
            {
                // A connection waiting for the one it replaces gives up.
                let _s = p.serving.lock();
                p.served.notify_all();
            }
            let cur = p.conn.lock();
            if let Some(c) = cur.as_ref() {
                // The reader notices the stop at once, sends what it must
                // confirm, and closes the link in order (serve).
                c.interrupt();
            }
            p.changed.notify_all();
        }
        loop {
            let hs: Vec<_> = std::mem::take(&mut *self.shared.threads.lock());
            if hs.is_empty() {
                break;
            }
            for h in hs {
                let _ = h.join();
            }
        }
        // Sessions that were resuming have no thread to end them: their
        // in-flight messages fail now.
        for p in &self.shared.peers {
            let c = p.conn.lock().clone();
            if let Some(c) = c {
                self.shared.finish(p, &c, "this SP is shutting down");
            }
        }
        for f in &self.socket_files {
            f.remove_if_ours();
        }
    }
}

/// A random, non-zero incarnation number for this start of an SP (from the
/// kernel's random source; if that fails, from the clock and the process id,
/// which still differ between two starts).
fn new_incarnation() -> u64 {
    use std::io::Read;
    let mut b = [0u8; 8];
    let random = std::fs::File::open("/dev/urandom").and_then(|mut f| f.read_exact(&mut b)).is_ok();
    let mut n = u64::from_le_bytes(b);
    if !random {
        let t = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_nanos() as u64).unwrap_or(0);
        n = t ^ ((std::process::id() as u64) << 32);
    }
    n.max(1)
}

impl<U: Upcall> Drop for Cmi<U> {
    fn drop(&mut self) {
        self.shutdown();
    }
}
