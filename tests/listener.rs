//! The listener and the dialer against sockets in every state: shutdown
//! returns whatever state the sockets are in (a listening socket file
//! unlinked, a peer whose accept queue is full), and connections that never
//! say HELLO neither exhaust an SP's threads and descriptors nor keep its
//! configured peer out (docs/PROTOCOL.md 7.1 and 7.2).
//!
//! The tests of this file run one at a time (`serial()`): they count the
//! threads and descriptors of the whole process.

mod common;
use common::*;
use mps::{MessageBuf, Mps, SpId, Timeout};
use std::io::Read;
use std::net::{TcpListener, TcpStream};
use std::os::fd::AsRawFd;
use std::os::unix::net::{UnixListener, UnixStream};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::mpsc;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

const A: SpId = SpId::a(0);
const B: SpId = SpId::b(0);

/// How long a test waits for shutdown before it calls it hung.
const SHUTDOWN_WATCHDOG: Duration = Duration::from_secs(10);

static SERIAL: Mutex<()> = Mutex::new(());

fn serial() -> MutexGuard<'static, ()> {
    SERIAL.lock().unwrap_or_else(|e| e.into_inner())
}

/// Shuts `m` down on another thread; returns how long it took, or fails the
/// test if it has not returned within `SHUTDOWN_WATCHDOG` (the thread is
/// left behind, hung, and the test binary still ends).
fn shutdown_within_watchdog(m: Mps, what: &str) -> Duration {
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let t0 = Instant::now();
        let _ = m.shutdown();
        let _ = tx.send(t0.elapsed());
    });
    match rx.recv_timeout(SHUTDOWN_WATCHDOG) {
        Ok(d) => d,
        Err(_) => panic!("shutdown did not return within {SHUTDOWN_WATCHDOG:?} ({what})"),
    }
}

/// Polls `cond` until it holds or `deadline` passes; returns whether it held.
fn wait_for(deadline: Duration, mut cond: impl FnMut() -> bool) -> bool {
    let end = Instant::now() + deadline;
    loop {
        if cond() {
            return true;
        }
        if Instant::now() >= end {
            return false;
        }
        std::thread::yield_now();
        std::thread::sleep(Duration::from_millis(1));
    }
}

/// Threads of this process (`Threads:` in /proc/self/status).
fn threads() -> usize {
    let s = std::fs::read_to_string("/proc/self/status").unwrap();
    s.lines().find_map(|l| l.strip_prefix("Threads:")).unwrap().trim().parse().unwrap()
}

/// Open descriptors of this process.
fn fds() -> usize {
    std::fs::read_dir("/proc/self/fd").unwrap().count()
}

/// The system call the thread named `name` of this process is blocked in
/// (`/proc/self/task/*/syscall`), if it is blocked in one.
fn blocked_in(name: &str) -> Option<i64> {
    for t in std::fs::read_dir("/proc/self/task").ok()?.flatten() {
        let comm = std::fs::read_to_string(t.path().join("comm")).unwrap_or_default();
        if comm.trim_end() == name {
            let sc = std::fs::read_to_string(t.path().join("syscall")).unwrap_or_default();
            return sc.split_whitespace().next().and_then(|n| n.parse().ok());
        }
    }
    None
}

/// Waits until the dial thread `name` is blocked in one of `calls` (its
/// first connection attempt has begun, or is over and it waits to retry).
fn wait_dialing(name: &str, calls: &[libc::c_long]) {
    let seen = wait_for(Duration::from_secs(10), || blocked_in(name).is_some_and(|n| calls.contains(&(n as libc::c_long))));
    assert!(seen, "the dial thread {name} never blocked in one of the system calls {calls:?}");
}

/// Raises this process's descriptor limit to at least `n` (up to the hard
/// limit): the flood tests hold thousands of sockets.
fn allow_descriptors(n: u64) {
    let mut l = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
    // SAFETY: getrlimit writes one rlimit into the live local `l`.
    assert_eq!(unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut l) }, 0);
    if l.rlim_cur >= n as libc::rlim_t {
        return;
    }
    l.rlim_cur = (n as libc::rlim_t).min(l.rlim_max);
    // SAFETY: setrlimit reads one rlimit from the live local `l`.
    assert_eq!(unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &l) }, 0);
    assert!(l.rlim_cur >= n as libc::rlim_t, "this test needs {n} descriptors; the hard limit is {}", l.rlim_max);
}

/// Sets the accept backlog of a listening socket to `n` (listen(2) again).
fn set_backlog(l: &impl AsRawFd, n: i32) {
    // SAFETY: listen on a listening socket this test owns; no memory passed.
    assert_eq!(unsafe { libc::listen(l.as_raw_fd(), n) }, 0);
}

/// True when a non-blocking connect to the Unix socket at `path` fails with
/// EAGAIN: its accept queue is full (a blocking connect would wait).
fn unix_accept_queue_full(path: &std::path::Path) -> bool {
    use std::os::unix::ffi::OsStrExt;
    // SAFETY: socket(2) takes no memory; the result is checked.
    let fd = unsafe { libc::socket(libc::AF_UNIX, libc::SOCK_STREAM | libc::SOCK_NONBLOCK | libc::SOCK_CLOEXEC, 0) };
    assert!(fd >= 0);
    // SAFETY: a zeroed sockaddr_un is valid (AF_UNSPEC, empty path).
    let mut sa: libc::sockaddr_un = unsafe { std::mem::zeroed() };
    sa.sun_family = libc::AF_UNIX as libc::sa_family_t;
    let p = path.as_os_str().as_bytes();
    assert!(p.len() < sa.sun_path.len());
    for (d, s) in sa.sun_path.iter_mut().zip(p) {
        *d = *s as libc::c_char;
    }
    // SAFETY: `sa` is a live sockaddr_un whose size is passed; `fd` is ours.
    let r = unsafe { libc::connect(fd, (&sa as *const libc::sockaddr_un).cast(), std::mem::size_of::<libc::sockaddr_un>() as libc::socklen_t) };
    let e = std::io::Error::last_os_error();
    // SAFETY: closes the socket created above, once.
    unsafe { libc::close(fd) };
    r != 0 && e.raw_os_error() == Some(libc::EAGAIN)
}

// --- defect 6: shutdown whatever the sockets' state --------------------------

#[test]
fn shutdown_returns_after_the_listening_socket_file_is_unlinked() {
    let _s = serial();
    let dir = TempDir::new();
    let path = dir.0.join("b.sock");
    let m = Mps::start(config("0.B", &format!("unix:{}", path.display()), "0.A", "unix:/nonexistent/a.sock", "")).unwrap();
    std::fs::remove_file(&path).unwrap();
    let took = shutdown_within_watchdog(m, "listening socket file unlinked");
    assert!(took < Duration::from_secs(2), "shutdown took {took:?}");
}

#[test]
fn shutdown_returns_while_dialing_a_unix_peer_whose_accept_queue_is_full() {
    let _s = serial();
    let dir = TempDir::new();
    let peer = dir.0.join("full.sock");
    // A "peer" that never accepts, with a backlog of 0: one connection fills it.
    let l = UnixListener::bind(&peer).unwrap();
    set_backlog(&l, 0);
    let _filler = UnixStream::connect(&peer).unwrap();
    assert!(unix_accept_queue_full(&peer), "the peer's accept queue should be full");
    // SP 0.A dials 0.B (the lower id dials); a dead-peer timeout of 30 s, so
    // a wait bounded only by it would show.
    let me = dir.0.join("a.sock");
    let m = Mps::start(config_hb("0.A", &format!("unix:{}", me.display()), "0.B", &format!("unix:{}", peer.display()), "", 3000)).unwrap();
    // Blocked in connect(2) (a blocking connect waits for room in the queue),
    // or waiting to retry after a failed attempt.
    wait_dialing("mps-dial-0.B", &[libc::SYS_connect, libc::SYS_futex]);
    let took = shutdown_within_watchdog(m, "dialing a Unix peer whose accept queue is full");
    assert!(took < Duration::from_secs(2), "shutdown took {took:?}");
    drop(l);
}

/// The connect succeeded (into the "peer"'s accept queue) and the dialer
/// waits for the peer's HELLO, which never comes: the handshake's wait is
/// bounded by the dead-peer timeout (30 s here), and shutdown must not wait
/// for it (issue 8.6: bounded whatever the sockets' state).
#[test]
fn shutdown_returns_while_a_dialed_peer_never_answers_the_hello() {
    let _s = serial();
    let dir = TempDir::new();
    let peer = dir.0.join("mute.sock");
    // A "peer" that never accepts: the connection waits in its queue, and
    // nothing is ever read from it or written to it.
    let l = UnixListener::bind(&peer).unwrap();
    let me = dir.0.join("a.sock");
    let m = Mps::start(config_hb("0.A", &format!("unix:{}", me.display()), "0.B", &format!("unix:{}", peer.display()), "", 3000)).unwrap();
    // Blocked in the handshake's poll for the peer's HELLO.
    wait_dialing("mps-dial-0.B", &[libc::SYS_poll, libc::SYS_ppoll]);
    let took = shutdown_within_watchdog(m, "dialing a peer that never answers the HELLO");
    assert!(took < Duration::from_secs(2), "shutdown took {took:?}");
    drop(l);
}

#[test]
fn shutdown_returns_while_dialing_a_tcp_peer_whose_accept_queue_is_full() {
    let _s = serial();
    // A TCP "peer" that never accepts, backlog 0: one connection fills the
    // queue, and the kernel then drops further SYNs, so a connect waits for
    // its own timeout (it does not block forever as a Unix connect does).
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    set_backlog(&l, 0);
    let addr = l.local_addr().unwrap();
    let _filler = TcpStream::connect(addr).unwrap();
    let probe = TcpStream::connect_timeout(&addr, Duration::from_millis(300));
    assert!(probe.is_err(), "the peer's accept queue should be full (a connect got in)");
    let m = Mps::start(config_hb("0.A", "tcp:127.0.0.1:0", "0.B", &format!("tcp:{addr}"), "", 3000)).unwrap();
    wait_dialing("mps-dial-0.B", &[libc::SYS_connect, libc::SYS_poll, libc::SYS_ppoll, libc::SYS_futex]);
    let took = shutdown_within_watchdog(m, "dialing a TCP peer whose accept queue is full");
    assert!(took < Duration::from_secs(2), "shutdown took {took:?} (the dead-peer timeout is 30 s)");
    drop(l);
}

// --- defect 9: connections that never say HELLO -----------------------------

/// The SP's side of a thousand silent connections: how many more threads and
/// descriptors (beyond the test's own ends) an SP may use for them. The
/// listener holds at most 64 connections awaiting a HELLO, one descriptor
/// each, with no thread (docs/DESIGN.md, Incoming connections): 64, and 8
/// for slack. The threads: the log's own (started by the first refusal
/// logged) and slack.
const SILENT: usize = 1000;
const MAX_EXTRA_THREADS: usize = 4;
const MAX_EXTRA_FDS: usize = 64 + 8;
/// Strangers the flood thread has connected before the configured peer dials.
const STRANGERS_BEFORE_DIAL: usize = 200;

/// A connection the test opens and never speaks on.
trait Silent: Read + Send + 'static {
    fn set_read_timeout(&self, d: Option<Duration>) -> std::io::Result<()>;
}
impl Silent for UnixStream {
    fn set_read_timeout(&self, d: Option<Duration>) -> std::io::Result<()> {
        UnixStream::set_read_timeout(self, d)
    }
}
impl Silent for TcpStream {
    fn set_read_timeout(&self, d: Option<Duration>) -> std::io::Result<()> {
        TcpStream::set_read_timeout(self, d)
    }
}

/// Opens `n` connections with `connect` and waits until the SP has accepted
/// each one: it has sent its 40-byte HELLO on it (whether it then keeps the
/// connection waiting for ours or closes it).
fn open_silent<S: Silent>(n: usize, connect: &dyn Fn() -> S) -> Vec<S> {
    let mut conns: Vec<S> = (0..n).map(|_| connect()).collect();
    for (i, c) in conns.iter_mut().enumerate() {
        c.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
        let mut hello = [0u8; 40];
        let mut got = 0;
        while got < hello.len() {
            match c.read(&mut hello[got..]) {
                Ok(0) | Err(_) => break,
                Ok(k) => got += k,
            }
        }
        assert_eq!(got, 40, "silent connection {i}: the SP's HELLO within 30 s");
    }
    conns
}

/// 100 synchronous messages each way between `ma` and `mb`.
fn messages_flow(ma: &Mps, mb: &Mps, round: u32) {
    let name = format!("Flow{round}");
    let sa = ma.open(None, 0, 0, &name, 0).unwrap();
    let sb = mb.open(None, 0, 0, &name, 0).unwrap();
    for i in 0..100u32 {
        ma.send_sync(sa, B, &MessageBuf::from_slice(&i.to_le_bytes()).unwrap(), 4, i).unwrap();
        assert_eq!(mb.receive(sb, Timeout::Test, 0).unwrap().data, i.to_le_bytes());
        mb.send_sync(sb, A, &MessageBuf::from_slice(&i.to_le_bytes()).unwrap(), 4, i).unwrap();
        assert_eq!(ma.receive(sa, Timeout::Test, 0).unwrap().data, i.to_le_bytes());
    }
    ma.close(sa).unwrap();
    mb.close(sb).unwrap();
}

fn check_bounded(what: &str, t0: usize, f0: usize, test_own_fds: usize) {
    let (t, f) = (threads(), fds());
    let sp_fds = f.saturating_sub(f0 + test_own_fds);
    let extra_threads = t.saturating_sub(t0);
    assert!(
        extra_threads <= MAX_EXTRA_THREADS && sp_fds <= MAX_EXTRA_FDS,
        "{what}: {extra_threads} more threads than before (at most {MAX_EXTRA_THREADS}), \
         and the SPs hold {sp_fds} more descriptors (at most {MAX_EXTRA_FDS})"
    );
}

/// The flood scenario over one transport: SP 0.B listens at `b_listen`; a
/// thousand silent connections are opened to it and held; then SP 0.A
/// starts and must link to it and exchange messages while a thread keeps
/// opening more silent connections; then everything silent is closed and
/// the descriptors must come back.
fn silent_flood<S: Silent>(b_listen: &str, a_listen: &str, a_addr_for_b: &str, connect: impl Fn(&str) -> S + Send + Sync + 'static) {
    allow_descriptors(8192);
    // A dead-peer timeout of 10 s: a connection awaiting its HELLO for as
    // long as that would still be held when the counts are taken.
    let mb = Mps::start(config_hb("0.B", b_listen, "0.A", a_addr_for_b, "", 1000)).unwrap();
    let b_addr = mb.listen_address().unwrap().to_string();
    let (t0, f0) = (threads(), fds());

    let connect = Arc::new(connect);
    let c = connect.clone();
    let addr = b_addr.clone();
    let silent = open_silent(SILENT, &move || c(&addr));
    check_bounded("a thousand silent connections held", t0, f0, SILENT);

    // The configured peer dials while strangers keep connecting: a thread
    // holds up to 300 more silent connections, replacing its oldest.
    let stop = Arc::new(AtomicBool::new(false));
    let opened = Arc::new(AtomicUsize::new(0));
    let (st, c, addr, n) = (stop.clone(), connect.clone(), b_addr.clone(), opened.clone());
    let flood = std::thread::spawn(move || {
        let mut ring = std::collections::VecDeque::new();
        while !st.load(Ordering::Relaxed) {
            ring.push_back(c(&addr));
            n.fetch_add(1, Ordering::Relaxed);
            if ring.len() > 300 {
                ring.pop_front();
            }
        }
    });
    // The flood is under way before the peer dials: enough strangers that
    // the SP's set of connections awaiting a HELLO (64) is full and its
    // oldest are being evicted.
    let flooding = wait_for(Duration::from_secs(30), || opened.load(Ordering::Relaxed) >= STRANGERS_BEFORE_DIAL);
    assert!(flooding, "the flood thread opened only {} connections in 30 s", opened.load(Ordering::Relaxed));
    let ma = Mps::start(config_hb("0.A", a_listen, "0.B", &b_addr, "", 1000)).unwrap();
    let linked = ma.wait_for_peer(B, Some(Duration::from_secs(30)));
    let during = flood.is_finished();
    stop.store(true, Ordering::Relaxed);
    flood.join().unwrap();
    let opened = opened.load(Ordering::Relaxed);
    assert!(linked.is_ok(), "the configured peer could not link while strangers flooded ({opened} opened): {linked:?}");
    assert!(!during, "the flood thread ended before the link was up");
    mb.wait_for_peer(A, Some(Duration::from_secs(30))).unwrap();

    // A's own threads and descriptors count now: measure them after the
    // flood thread's connections are gone, with the first thousand held.
    messages_flow(&ma, &mb, 1);
    let more = open_silent(SILENT / 2, &|| connect(&b_addr));
    messages_flow(&ma, &mb, 2);
    let (t1, f1) = (threads(), fds());
    assert!(t1 <= t0 + MAX_EXTRA_THREADS + 16, "{} more threads than before with SP 0.A running", t1 - t0);

    drop(silent);
    drop(more);
    // Back to what both SPs hold for themselves and their link (a handful).
    let released = wait_for(Duration::from_secs(30), || fds() <= f0 + 32);
    assert!(released, "descriptors not released: {} open, {f0} before the flood and SP 0.A, {f1} with the silent connections held", fds());
    messages_flow(&ma, &mb, 3);
    shutdown_within_watchdog(ma, "SP 0.A after the flood");
    shutdown_within_watchdog(mb, "SP 0.B after the flood");
}

#[test]
fn a_thousand_silent_unix_connections_neither_exhaust_the_sp_nor_keep_its_peer_out() {
    let _s = serial();
    let dir = TempDir::new();
    let (pa, pb) = (dir.0.join("a.sock"), dir.0.join("b.sock"));
    silent_flood(&format!("unix:{}", pb.display()), &format!("unix:{}", pa.display()), &format!("unix:{}", pa.display()), |addr| {
        UnixStream::connect(addr.strip_prefix("unix:").unwrap()).unwrap()
    });
}

#[test]
fn a_thousand_silent_tcp_connections_neither_exhaust_the_sp_nor_keep_its_peer_out() {
    let _s = serial();
    silent_flood("tcp:127.0.0.1:0", "tcp:127.0.0.1:0", "tcp:127.0.0.1:9", |addr| TcpStream::connect(addr.strip_prefix("tcp:").unwrap()).unwrap());
}

// --- the listener's limits on connections awaiting a HELLO -------------------
//
// docs/DESIGN.md, Incoming connections: at most 64 pending (the oldest is
// evicted), each for min(1 s, dead_peer_timeout), all closed at shutdown,
// and accepting backs off when descriptors run out.

/// What the listener allows connections awaiting a HELLO (src/cmi/acceptor.rs).
const MAX_PENDING: usize = 64;
const HANDSHAKE_LIMIT: Duration = Duration::from_secs(1);

/// SP 0.B alone, listening on a Unix socket in `dir`, with the given
/// heartbeat and dead-peer timeout; its peer 0.A (lower id: 0.B never dials
/// it) is never there.
fn lone_listener(dir: &TempDir, hb_ms: u64, dead_ms: u64) -> (Mps, std::path::PathBuf) {
    let path = dir.0.join("b.sock");
    let text = format!(
        "sp = \"0.B\"\nlisten = \"unix:{}\"\n[[peer]]\nsp = \"0.A\"\naddress = \"unix:/nonexistent/a.sock\"\n\
         [heartbeat]\ninterval_ms = {hb_ms}\ndead_peer_timeout_ms = {dead_ms}\n",
        path.display()
    );
    (Mps::start(mps::Config::from_toml(&text, "test").unwrap()).unwrap(), path)
}

/// Connects to `path` and reads the SP's 40-byte HELLO: the SP has accepted
/// the connection and holds it awaiting ours.
fn silent_unix(path: &std::path::Path) -> UnixStream {
    let mut c = UnixStream::connect(path).unwrap();
    c.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let mut hello = [0u8; 40];
    c.read_exact(&mut hello).expect("the SP's HELLO");
    c
}

/// True when the SP has closed `c` (its HELLO already read): end-of-stream
/// is there now, without waiting.
fn closed_now(mut c: &UnixStream) -> bool {
    c.set_nonblocking(true).unwrap();
    let r = c.read(&mut [0u8; 1]);
    c.set_nonblocking(false).unwrap();
    match r {
        Ok(0) => true,
        Ok(n) => panic!("the SP sent {n} more bytes after its HELLO to a silent connection"),
        Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => false,
        Err(e) => panic!("reading a silent connection: {e}"),
    }
}

/// Waits (until `deadline`) for the SP to close `c`; returns when it saw it.
fn wait_closed(c: &mut UnixStream, deadline: Instant) -> Option<Instant> {
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return None;
        }
        c.set_read_timeout(Some(left)).unwrap();
        match c.read(&mut [0u8; 64]) {
            Ok(0) => return Some(Instant::now()),
            Ok(n) => panic!("the SP sent {n} more bytes after its HELLO to a silent connection"),
            Err(e) if matches!(e.kind(), std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut) => {}
            Err(_) => return Some(Instant::now()),
        }
    }
}

/// Runs `attempt` until it is conclusive (`Some`): one whose checks all
/// fell within the handshake limit of its first connection, so that no
/// connection could have been closed by its deadline instead. A machine too
/// slow for that five times in a row fails the test.
fn within_the_limit(what: &str, attempt: impl Fn() -> Option<()>) {
    for _ in 0..5 {
        if attempt().is_some() {
            return;
        }
    }
    panic!("{what}: five attempts in a row took longer than the {HANDSHAKE_LIMIT:?} handshake limit");
}

#[test]
fn the_oldest_connection_awaiting_a_hello_is_evicted_when_64_are() {
    let _s = serial();
    let dir = TempDir::new();
    // A dead-peer timeout of 3 s: the handshake limit is 1 s.
    let (m, path) = lone_listener(&dir, 100, 3000);
    within_the_limit("eviction", || {
        let t0 = Instant::now();
        let mut conns: Vec<UnixStream> = (0..MAX_PENDING).map(|_| silent_unix(&path)).collect();
        // 64 held: none is closed.
        let none_closed = conns.iter().all(|c| !closed_now(c));
        // One more: the oldest makes room, and only the oldest.
        conns.push(silent_unix(&path));
        let oldest = wait_closed(&mut conns[0], t0 + HANDSHAKE_LIMIT);
        let others_open = conns[1..].iter().filter(|c| !closed_now(c)).count();
        if t0.elapsed() >= HANDSHAKE_LIMIT {
            return None;
        }
        assert!(none_closed, "the SP closed one of {MAX_PENDING} connections awaiting a HELLO, its limit");
        assert!(oldest.is_some(), "the oldest of {} connections awaiting a HELLO was not closed", MAX_PENDING + 1);
        assert_eq!(others_open, MAX_PENDING, "connections other than the oldest were closed");
        Some(())
    });
    shutdown_within_watchdog(m, "after the eviction test");
}

#[test]
fn a_connection_awaiting_its_hello_is_closed_after_1_s_or_the_dead_peer_timeout_if_shorter() {
    let _s = serial();
    for (hb_ms, dead_ms) in [(50u64, 300u64), (100, 3000)] {
        let dir = TempDir::new();
        let (m, path) = lone_listener(&dir, hb_ms, dead_ms);
        let limit = HANDSHAKE_LIMIT.min(Duration::from_millis(dead_ms));
        let t0 = Instant::now();
        let mut c = silent_unix(&path);
        let at = wait_closed(&mut c, t0 + Duration::from_secs(10)).expect("a silent connection was never closed");
        let took = at - t0;
        // Not before its limit; and before the next larger one it could be
        // mistaken for (1 s for the 300 ms limit, the 3 s dead-peer timeout
        // for the 1 s one).
        let next = if limit < HANDSHAKE_LIMIT { HANDSHAKE_LIMIT } else { Duration::from_millis(dead_ms) };
        assert!(took >= limit && took < next, "dead-peer timeout {dead_ms} ms: a silent connection was closed after {took:?} (limit {limit:?})");
        shutdown_within_watchdog(m, "after the handshake-limit test");
    }
}

#[test]
fn shutdown_closes_every_connection_awaiting_its_hello() {
    let _s = serial();
    within_the_limit("shutdown", || {
        let dir = TempDir::new();
        let (m, path) = lone_listener(&dir, 100, 3000);
        let t0 = Instant::now();
        let conns: Vec<UnixStream> = (0..10).map(|_| silent_unix(&path)).collect();
        let took = shutdown_within_watchdog(m, "with connections awaiting a HELLO");
        // Closed by the time shutdown returned: end-of-stream is there.
        let open = conns.iter().filter(|c| !closed_now(c)).count();
        if t0.elapsed() >= HANDSHAKE_LIMIT {
            return None;
        }
        assert!(took < Duration::from_secs(2), "shutdown took {took:?}");
        assert_eq!(open, 0, "{open} of 10 connections awaiting a HELLO were still open after shutdown returned");
        Some(())
    });
}

/// This process's soft descriptor limit, lowered for a test and put back on drop.
struct LoweredNofile {
    saved: libc::rlimit,
    fillers: Vec<std::os::fd::OwnedFd>,
}

impl LoweredNofile {
    /// Lowers the soft limit to just past the highest descriptor open now,
    /// and fills every free number below it: the next descriptor any thread
    /// of this process asks for fails with EMFILE.
    fn exhaust() -> LoweredNofile {
        use std::os::fd::FromRawFd;
        let mut saved = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
        // SAFETY: getrlimit writes one rlimit into the live local `saved`.
        assert_eq!(unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut saved) }, 0);
        let highest = std::fs::read_dir("/proc/self/fd")
            .unwrap()
            .flatten()
            .filter_map(|e| e.file_name().to_str().and_then(|n| n.parse::<u64>().ok()))
            .max()
            .unwrap();
        // Room for the read_dir above (its descriptor is closed now) and for
        // the fillers below.
        let low = libc::rlimit { rlim_cur: highest + 2, rlim_max: saved.rlim_max };
        // SAFETY: setrlimit reads one rlimit from the live local `low`.
        assert_eq!(unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &low) }, 0);
        let mut fillers = Vec::new();
        loop {
            // SAFETY: dup of stdin's descriptor number creates a new one or
            // fails; no memory is passed.
            let fd = unsafe { libc::fcntl(0, libc::F_DUPFD_CLOEXEC, 0) };
            if fd < 0 {
                break;
            }
            // SAFETY: `fd` is a fresh descriptor that nothing else owns.
            fillers.push(unsafe { std::os::fd::OwnedFd::from_raw_fd(fd) });
        }
        LoweredNofile { saved, fillers }
    }
}

impl Drop for LoweredNofile {
    fn drop(&mut self) {
        self.fillers.clear();
        // SAFETY: setrlimit reads one rlimit from the live `self.saved`.
        unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &self.saved) };
    }
}

/// The CPU-time counter of this process's thread `name`: its stat file,
/// opened now, so that reading it later needs no new descriptor.
struct CpuTicks(std::fs::File);

impl CpuTicks {
    /// Waits for the thread to have its name (a new thread names itself
    /// once it runs).
    fn of(name: &str) -> CpuTicks {
        let mut found = None;
        let named = wait_for(Duration::from_secs(10), || {
            for t in std::fs::read_dir("/proc/self/task").unwrap().flatten() {
                let comm = std::fs::read_to_string(t.path().join("comm")).unwrap_or_default();
                if comm.trim_end() == name {
                    found = Some(std::fs::File::open(t.path().join("stat")).unwrap());
                    return true;
                }
            }
            false
        });
        assert!(named, "no thread {name} within 10 s");
        CpuTicks(found.unwrap())
    }

    /// User + system time so far, in clock ticks.
    fn now(&self) -> u64 {
        use std::os::unix::fs::FileExt;
        let mut buf = [0u8; 1024];
        let n = self.0.read_at(&mut buf, 0).unwrap();
        let stat = std::str::from_utf8(&buf[..n]).unwrap();
        // Past the ")" that ends the name: state is field 3, utime 14, stime 15.
        let f: Vec<&str> = stat[stat.rfind(')').unwrap() + 2..].split_whitespace().collect();
        f[11].parse::<u64>().unwrap() + f[12].parse::<u64>().unwrap()
    }
}

#[test]
fn accepting_backs_off_instead_of_spinning_when_descriptors_run_out() {
    let _s = serial();
    let dir = TempDir::new();
    let (m, path) = lone_listener(&dir, 100, 3000);
    // Sockets made while descriptors are there; connected once they are
    // not. (No connection is open before: the SP closing one would free a
    // descriptor for its next accept.)
    let waiting: Vec<std::os::fd::OwnedFd> = (0..4)
        .map(|_| {
            use std::os::fd::FromRawFd;
            // SAFETY: socket takes no pointers; the result is checked below.
            let fd = unsafe { libc::socket(libc::AF_UNIX, libc::SOCK_STREAM | libc::SOCK_CLOEXEC, 0) };
            assert!(fd >= 0);
            // SAFETY: a fresh descriptor that nothing else owns.
            unsafe { std::os::fd::OwnedFd::from_raw_fd(fd) }
        })
        .collect();
    let listener_cpu = CpuTicks::of("mps-listen-0.B");
    let (ticks, conns) = {
        let _lowered = LoweredNofile::exhaust();
        // connect(2) needs no new descriptor; the SP's accept(2) does.
        let conns: Vec<UnixStream> = waiting.into_iter().map(|fd| connect_fd(fd, &path)).collect();
        let before = listener_cpu.now();
        let t0 = Instant::now();
        // Two seconds of EMFILE: the listener stays readable throughout.
        while t0.elapsed() < Duration::from_secs(2) {
            std::thread::sleep(Duration::from_millis(50));
        }
        (listener_cpu.now() - before, conns)
    };
    // A thread spinning on accept would have used most of those 200 ticks.
    assert!(ticks < 10, "the listener used {ticks} clock ticks of CPU in 2 s of EMFILE: it spins instead of backing off");
    // Descriptors back: the waiting connections are accepted and greeted.
    for (i, mut c) in conns.into_iter().enumerate() {
        c.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        let mut hello = [0u8; 40];
        c.read_exact(&mut hello).unwrap_or_else(|e| panic!("connection {i} made during EMFILE was never greeted: {e}"));
    }
    let took = shutdown_within_watchdog(m, "after EMFILE");
    assert!(took < Duration::from_secs(2), "shutdown took {took:?}");
}

/// Connects the unconnected Unix socket `fd` to `path` (no new descriptor).
fn connect_fd(fd: std::os::fd::OwnedFd, path: &std::path::Path) -> UnixStream {
    use std::os::unix::ffi::OsStrExt;
    // SAFETY: a zeroed sockaddr_un is valid (AF_UNSPEC, empty path).
    let mut sa: libc::sockaddr_un = unsafe { std::mem::zeroed() };
    sa.sun_family = libc::AF_UNIX as libc::sa_family_t;
    let p = path.as_os_str().as_bytes();
    assert!(p.len() < sa.sun_path.len());
    for (d, s) in sa.sun_path.iter_mut().zip(p) {
        *d = *s as libc::c_char;
    }
    // SAFETY: `sa` is a live sockaddr_un whose size is passed; `fd` is ours.
    let r = unsafe { libc::connect(fd.as_raw_fd(), (&sa as *const libc::sockaddr_un).cast(), std::mem::size_of::<libc::sockaddr_un>() as libc::socklen_t) };
    assert_eq!(r, 0, "connect: {}", std::io::Error::last_os_error());
    UnixStream::from(fd)
}
