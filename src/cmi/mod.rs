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
pub(crate) use link::{Conn, LinkDown};

use crate::config::{Address, Config};
use crate::log::{log, Level};
use crate::sp_id::SpId;
use crate::status::Status;
use link::{Holder, LinkParams};
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

/// The destination is not a configured peer.
#[derive(Debug, PartialEq, Eq)]
pub struct NotConfigured;

struct PeerEntry {
    sp: SpId,
    address: Address,
    /// This SP dials that peer (it has the lower id).
    dials: bool,
    conn: Mutex<Option<Arc<Conn>>>,
    changed: Condvar,
    /// Who serves this peer's links, one at a time (see `Shared::serve`).
    serving: Mutex<Serving>,
    /// Signalled when a link's service has ended (`Serving::active` fell).
    served: Condvar,
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
    listener_addr: Option<Address>,
    listener_wake: Mutex<Option<Box<dyn Fn() + Send>>>,
    /// Removed at shutdown, if it is still the file this SP's bind created.
    socket_file: Option<SocketFile>,
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
    fn link_thread_reads_caught(&self, conn: &Arc<Conn>) -> link::EndReason {
        std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| self.link_thread_reads(conn)))
            .unwrap_or_else(|p| conn.end_after_panic(&*p, Holder::LinkThread))
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

    /// Runs an established link until it ends.
    fn serve(
        self: &Arc<Self>,
        entry: &PeerEntry,
        stream: Box<dyn Stream>,
        hello: frame::Hello,
        version: u16,
        leftover: Vec<u8>,
        arrival: Option<u64>,
    ) {
        let Some(_service) = self.take_for_service(entry, arrival) else {
            stream.shutdown();
            return;
        };
        let epoch = self.epoch.fetch_add(1, Ordering::Relaxed) + 1;
        let sndbuf = stream.send_buffer().map(|n| format!(", send buffer {n} bytes")).unwrap_or_default();
        let conn = Arc::new(Conn::new(entry.sp, epoch, &hello, stream, &leftover));
        {
            let mut cur = entry.conn.lock();
            // What it replaces is over (take_for_service).
            *cur = Some(conn.clone());
            if self.stopping() {
                conn.kill("shutting down");
            }
            entry.changed.notify_all();
        }
        log!(Level::Info, "link to SP {} up (protocol version {version}, epoch {epoch}{sndbuf})", entry.sp);
        let w = conn.clone();
        let interval = self.params.heartbeat;
        let writer = std::thread::Builder::new()
            .name(format!("mps-write-{}", entry.sp))
            .spawn(move || w.writer_loop(interval));
        let reason = match &writer {
            Ok(_) => self.link_thread_reads_caught(&conn),
            Err(e) => format!("cannot start the link's writer thread: {e}"),
        };
        if self.stopping() {
            // An orderly close: the confirmations already queued leave, then
            // the peer reads end-of-stream after them (bounded by the dead-peer timeout).
            conn.close_gracefully(self.params.dead_timeout);
        }
        conn.kill(&reason);
        if let Ok(h) = writer {
            let _ = h.join();
        }
        {
            let mut cur = entry.conn.lock();
            if cur.as_ref().is_some_and(|c| Arc::ptr_eq(c, &conn)) {
                *cur = None;
            }
            entry.changed.notify_all();
        }
        if self.stopping() {
            log!(Level::Info, "link to SP {} closed: {reason}", entry.sp);
        } else {
            log!(Level::Warn, "link to SP {} lost: {reason}", entry.sp);
        }
        self.up.link_down(entry.sp, epoch);
    }

    /// The link's own thread: reads whenever no API thread does, hands the
    /// read role over and takes it back (`ReadRole::run_link_thread`).
    fn link_thread_reads(&self, conn: &Arc<Conn>) -> link::EndReason {
        let end = conn.read_role.run_link_thread(&|| self.stopping(), UNATTENDED, &mut |until| {
            let mut ctx = conn.rx.lock();
            link::read_stint(conn, &mut ctx, self.params, self.up.as_ref(), &self.stop, until, false)
        });
        match end {
            link::LinkThreadEnd::Ended(reason) => reason,
            link::LinkThreadEnd::Stopping => "this SP is shutting down".into(),
        }
    }

    /// An API thread waits for `done()` on a link, reading it itself when it
    /// can (`ReadRole::wait_on_link`); `block()` waits for `done()` otherwise.
    fn wait_on_link(&self, conn: &Arc<Conn>, done: &dyn Fn() -> bool, block: &dyn Fn(), uninterruptible: bool) {
        conn.read_role.wait_on_link(done, block, &|| conn.interrupt(), || {
            let read = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                let mut ctx = conn.rx.lock();
                let stint = link::read_stint(conn, &mut ctx, self.params, self.up.as_ref(), &self.stop, done, uninterruptible);
                (stint, ctx.has_buffered())
            }));
            match read {
                Ok(r) => r,
                Err(p) => {
                    // A bug while this API thread read the link (8.15): the link
                    // ends (its sends fail through link_down, the link's thread
                    // tears it down), the role is free again, and the panic goes
                    // on to the caller (the C boundary turns it into a status).
                    conn.end_after_panic(&*p, Holder::ApiThread);
                    std::panic::resume_unwind(p);
                }
            }
        });
    }

    fn dial_loop(self: &Arc<Self>, idx: usize) {
        let entry = &self.peers[idx];
        let mut backoff = self.cfg.reconnect_initial_backoff;
        let mut failures: u64 = 0;
        while !self.stopping() {
            let attempt = dial(&entry.address, self.params.dead_timeout, self.cfg.socket_send_buffer, &self.stop_signal)
                .map_err(|e| format!("cannot connect to {}: {e}", entry.address))
                .and_then(|s| link::handshake(s.as_ref(), &self.params, &self.stop).map(|h| (s, h)));
            match attempt {
                Ok((s, (hello, _, _))) if hello.sp != entry.sp => {
                    s.shutdown();
                    log!(Level::Error, "{} answered as SP {}, not the configured SP {}", entry.address, hello.sp, entry.sp);
                }
                Ok((s, (hello, version, leftover))) => {
                    if failures > 0 {
                        log!(Level::Info, "SP {} reachable again at {} after {failures} failed attempt(s)", entry.sp, entry.address);
                    }
                    failures = 0;
                    backoff = self.cfg.reconnect_initial_backoff;
                    self.serve(entry, s, hello, version, leftover, None);
                    continue;
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
        };
        let peers = cfg
            .peers
            .iter()
            .map(|p| PeerEntry {
                sp: p.sp,
                address: p.address.clone(),
                dials: cfg.local < p.sp,
                conn: Mutex::new(None),
                changed: Condvar::new(),
                serving: Mutex::new(Serving::default()),
                served: Condvar::new(),
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
            arrivals: AtomicU64::new(0),
            threads: Mutex::new(Vec::new()),
            stop_signal: stream::Waker::new()?,
        });
        let mut cmi = Cmi { shared: shared.clone(), listener_addr: None, listener_wake: Mutex::new(None), socket_file: None };
        if let Some(addr) = &cfg.listen {
            let (listener, actual, socket_file) =
                bind(addr).map_err(|e| io::Error::new(e.kind(), format!("cannot listen on {addr}: {e}")))?;
            cmi.socket_file = socket_file;
            log!(Level::Info, "SP {} listening on {actual}", cfg.local);
            let wake = listener.waker();
            *cmi.listener_wake.lock() = Some(wake);
            cmi.listener_addr = Some(actual);
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
                        c.watch(&sh.params);
                    }
                }
            }
        })?;
        for (i, p) in shared.peers.iter().enumerate() {
            if p.dials {
                let sh = shared.clone();
                shared.spawn_restarting(format!("mps-dial-{}", p.sp), move || sh.dial_loop(i))?;
            }
        }
        Ok(cmi)
    }

    /// The address this SP actually listens on (with the real port for `tcp:...:0`).
    pub fn listen_address(&self) -> Option<&Address> {
        self.listener_addr.as_ref()
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
        if let Some(wake) = self.listener_wake.lock().take() {
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
        if let Some(f) = &self.socket_file {
            f.remove_if_ours();
        }
    }
}

impl<U: Upcall> Drop for Cmi<U> {
    fn drop(&mut self) {
        self.shutdown();
    }
}
