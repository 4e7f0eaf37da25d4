//! A fault-injecting proxy for tests: it stands between the SP that dials
//! and the SP that listens, on a Unix-domain path or a TCP port, forwards
//! every connection's bytes both ways, and breaks them on command.
//!
//! Each accepted connection dials the real target and gets four threads:
//! one reader and one writer per direction, with a queue between them (at
//! most `QUEUE_BYTES`; past it the reader stops reading and the kernel's
//! buffers fill, so a held direction backs up as a stalled network would,
//! and nothing is ever dropped). The writer is where faults act:
//!
//! - `reset()`: every current connection is cut both ways at once. TCP: the
//!   socket's `SO_LINGER` is set to 0 and it is disconnected (`connect` to
//!   `AF_UNSPEC`, the kernel's abortive close), so both peers get an RST
//!   (`ECONNRESET`), not an end of stream; the descriptor stays open until
//!   the proxy's threads let go of it, so no thread can touch a reused one.
//!   Unix: `shutdown` both ways (peers read an end of stream and get
//!   `EPIPE` writing). New connections are accepted as before.
//! - `blackhole(d)`: for `d` no byte is forwarded on any connection; bytes
//!   are held, not dropped, and forwarded afterwards in order. A connection
//!   accepted meanwhile is not dialed through until the blackhole ends (the
//!   target never saw it); if its client gives up first (closes or resets),
//!   it is never dialed at all, so a stale handshake cannot reach the
//!   target long after the client abandoned it.
//! - `delay(d)`: every chunk read from now on is forwarded `d` after it was
//!   read (latency, not a cap on throughput: later chunks are read meanwhile).
//! - `cut_mid_frame()`: the next chunk of at least 2 bytes, in either
//!   direction, is forwarded only in part, an odd number of bytes that does
//!   not end at a frame boundary of the libmps wire format (each writer
//!   follows the 8-byte frame prefixes it forwards, PROTOCOL.md 2), and then
//!   every connection is reset as by `reset()`.
//!
//! Nothing inside sleeps to synchronize: threads wait on condition
//! variables, and the only timed waits are the fault's own durations.
//! Dropping the proxy stops accepting, cuts every connection and joins every
//! thread it started.

use std::collections::VecDeque;
use std::io::{self, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::os::unix::io::AsRawFd;
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// Bytes a direction's queue holds before its reader stops reading.
const QUEUE_BYTES: usize = 1 << 20;
/// Bytes one read takes from a socket.
const CHUNK: usize = 64 << 10;

/// Where the proxy forwards to.
#[derive(Clone, Debug)]
enum Target {
    Unix(PathBuf),
    Tcp(SocketAddr),
}

/// One end of a forwarded connection.
enum Sock {
    Unix(UnixStream),
    Tcp(TcpStream),
}

impl Sock {
    fn read(&self, buf: &mut [u8]) -> io::Result<usize> {
        match self {
            Sock::Unix(s) => (&*s).read(buf),
            Sock::Tcp(s) => (&*s).read(buf),
        }
    }

    fn write_all(&self, buf: &[u8]) -> io::Result<()> {
        match self {
            Sock::Unix(s) => (&*s).write_all(buf),
            Sock::Tcp(s) => (&*s).write_all(buf),
        }
    }

    /// Passes an end of stream on: no more bytes this way.
    fn half_close(&self) {
        let _ = match self {
            Sock::Unix(s) => s.shutdown(Shutdown::Write),
            Sock::Tcp(s) => s.shutdown(Shutdown::Write),
        };
    }

    /// Cuts the connection at once, both ways (see the module comment):
    /// every thread blocked on it returns.
    fn cut(&self) {
        match self {
            Sock::Unix(s) => {
                let _ = s.shutdown(Shutdown::Both);
            }
            Sock::Tcp(s) => abort_tcp(s),
        }
    }
}

/// Resets a TCP connection: `SO_LINGER` 0, then an abortive disconnect,
/// which sends the RST now and wakes every thread blocked on the socket.
fn abort_tcp(s: &TcpStream) {
    let fd = s.as_raw_fd();
    let linger = libc::linger { l_onoff: 1, l_linger: 0 };
    // SAFETY: `fd` is the open socket `s` owns for the whole call; the value
    // points to a live `linger` and the length passed is its size.
    let r = unsafe {
        libc::setsockopt(
            fd,
            libc::SOL_SOCKET,
            libc::SO_LINGER,
            &linger as *const libc::linger as *const libc::c_void,
            std::mem::size_of::<libc::linger>() as libc::socklen_t,
        )
    };
    // Refused only on a socket the kernel already closed: the disconnect
    // below then finds nothing to reset either.
    let _ = r;
    // SAFETY: an all-zero sockaddr is a valid value of that plain C struct;
    // only its family is read for AF_UNSPEC.
    let mut unspec: libc::sockaddr = unsafe { std::mem::zeroed() };
    unspec.sa_family = libc::AF_UNSPEC as libc::sa_family_t;
    // SAFETY: `fd` is the open socket `s` owns; the address points to a live
    // sockaddr and the length passed is its size. Connecting a TCP socket to
    // AF_UNSPEC dissolves its connection (the kernel's tcp_disconnect: an
    // RST to the peer); the descriptor itself stays open and owned by `s`.
    let r = unsafe { libc::connect(fd, &unspec, std::mem::size_of::<libc::sockaddr>() as libc::socklen_t) };
    if r != 0 {
        // Already gone (the peer reset it first): at least wake our own
        // threads; the close on drop with SO_LINGER 0 resets what is left.
        let _ = s.shutdown(Shutdown::Both);
    }
}

/// What a reader found at the end of its direction.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum End {
    /// An orderly end of stream: passed on after the bytes before it.
    Eof,
    /// A reset or error: the whole connection is cut.
    Error,
}

struct Chunk {
    data: Vec<u8>,
    /// When it may be forwarded (read time plus the delay then in force).
    due: Instant,
}

#[derive(Default)]
struct QueueState {
    chunks: VecDeque<Chunk>,
    bytes: usize,
    end: Option<End>,
}

/// One direction's queue, from its reader to its writer.
#[derive(Default)]
struct Pipe {
    q: Mutex<QueueState>,
    cv: Condvar,
}

/// One accepted connection.
struct Conn {
    id: u64,
    client: Sock,
    /// The connection to the target, once dialed.
    target: Mutex<Option<Arc<Sock>>>,
    /// Cut (by a fault, an error, or the proxy's drop): every thread leaves.
    dead: AtomicBool,
    /// Directions that have ended; at 2 the connection is done.
    ended: AtomicUsize,
    /// Client to target.
    up: Pipe,
    /// Target to client.
    down: Pipe,
}

impl Conn {
    /// Cuts both ends and wakes every thread of the connection.
    fn kill(&self) {
        {
            let t = lock(&self.target);
            self.dead.store(true, Ordering::SeqCst);
            self.client.cut();
            if let Some(t) = &*t {
                t.cut();
            }
        }
        for p in [&self.up, &self.down] {
            // Taken so that a thread between its check of `dead` and its
            // wait cannot miss the wake-up.
            drop(lock(&p.q));
            p.cv.notify_all();
        }
    }

    fn is_dead(&self) -> bool {
        self.dead.load(Ordering::SeqCst)
    }
}

/// The faults in force.
struct Control {
    blackhole_until: Option<Instant>,
    delay: Duration,
    cut_armed: bool,
}

struct Shared {
    target: Target,
    ctl: Mutex<Control>,
    /// Connections being forwarded.
    conns: Mutex<Vec<Arc<Conn>>>,
    /// Every thread started for a connection, joined on drop (and reaped
    /// as they finish).
    threads: Mutex<Vec<JoinHandle<()>>>,
    stop: AtomicBool,
    next_id: AtomicU64,
    accepted: AtomicUsize,
    resets: AtomicUsize,
    cuts: AtomicUsize,
    /// Bytes forwarded, both ways.
    forwarded: AtomicUsize,
    /// When each reset (including those after a cut) was done.
    reset_times: Mutex<Vec<Instant>>,
    /// Each cut mid-frame, in words.
    cut_log: Mutex<Vec<String>>,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // A panicking proxy thread must not hide the test's own failure.
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl Shared {
    fn spawn(self: &Arc<Self>, name: &str, f: impl FnOnce() + Send + 'static) {
        let h = std::thread::Builder::new().name(name.into()).spawn(f).expect("a proxy thread");
        lock(&self.threads).push(h);
    }

    /// Cuts every current connection.
    /// Counted before anything is cut, so that whoever sees the cut sees the count.
    fn reset_all(&self, counted: bool) {
        if counted {
            lock(&self.reset_times).push(Instant::now());
            self.resets.fetch_add(1, Ordering::SeqCst);
        }
        let conns = std::mem::take(&mut *lock(&self.conns));
        for c in &conns {
            c.kill();
        }
    }

    fn forget(&self, c: &Conn) {
        lock(&self.conns).retain(|x| x.id != c.id);
    }

    /// Waits until a chunk due at `due` may go out (its delay over, no
    /// blackhole); false if the connection was cut meanwhile.
    fn wait_forwardable(&self, c: &Conn, pipe: &Pipe, due: Instant) -> bool {
        loop {
            if c.is_dead() {
                return false;
            }
            let now = Instant::now();
            let hole = lock(&self.ctl).blackhole_until.unwrap_or(now);
            let until = due.max(hole);
            if until <= now {
                return true;
            }
            let q = lock(&pipe.q);
            if c.is_dead() {
                return false;
            }
            // The fault's own duration: a timed wait, woken early by a cut.
            let _ = pipe.cv.wait_timeout(q, until - now);
        }
    }

    /// Takes the armed cut, if any.
    fn take_cut(&self) -> bool {
        std::mem::take(&mut lock(&self.ctl).cut_armed)
    }

    fn accept_loop(self: &Arc<Self>, listener: &Listener) {
        let mut n = 0u64;
        loop {
            let s = listener.accept();
            if self.stop.load(Ordering::SeqCst) {
                return;
            }
            let Ok(client) = s else { continue };
            if let Sock::Tcp(t) = &client {
                let _ = t.set_nodelay(true);
            }
            self.accepted.fetch_add(1, Ordering::SeqCst);
            n += 1;
            if n.is_multiple_of(16) {
                self.reap();
            }
            let c = Arc::new(Conn {
                id: self.next_id.fetch_add(1, Ordering::SeqCst),
                client,
                target: Mutex::new(None),
                dead: AtomicBool::new(false),
                ended: AtomicUsize::new(0),
                up: Pipe::default(),
                down: Pipe::default(),
            });
            lock(&self.conns).push(c.clone());
            let (me, c1) = (self.clone(), c.clone());
            self.spawn("proxy-up-read", move || me.read_loop(&c1, true));
            let me = self.clone();
            self.spawn("proxy-up-write", move || me.connect_and_forward(&c));
        }
    }

    /// Joins the threads that have finished.
    fn reap(&self) {
        let done: Vec<JoinHandle<()>> = {
            let mut t = lock(&self.threads);
            let (done, running) = std::mem::take(&mut *t).into_iter().partition(|h| h.is_finished());
            *t = running;
            done
        };
        for h in done {
            let _ = h.join();
        }
    }

    /// A direction's reader: from its source socket into its queue.
    fn read_loop(&self, c: &Conn, up: bool) {
        let (pipe, src) = if up {
            (&c.up, None)
        } else {
            (&c.down, lock(&c.target).clone())
        };
        let src: &Sock = match &src {
            Some(t) => t,
            None => &c.client,
        };
        let mut buf = vec![0u8; CHUNK];
        loop {
            let (n, end) = match src.read(&mut buf) {
                Ok(0) => (0, Some(End::Eof)),
                Ok(n) => (n, None),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(_) => (0, Some(End::Error)),
            };
            let due = Instant::now() + lock(&self.ctl).delay;
            let mut q = lock(&pipe.q);
            if let Some(end) = end {
                q.end = Some(end);
                drop(q);
                pipe.cv.notify_all();
                if end == End::Error && !c.is_dead() {
                    // The peer reset its side: so is the other one.
                    c.kill();
                    self.forget(c);
                }
                return;
            }
            while q.bytes >= QUEUE_BYTES && !c.is_dead() {
                q = pipe.cv.wait(q).unwrap_or_else(|e| e.into_inner());
            }
            if c.is_dead() {
                return;
            }
            q.bytes += n;
            q.chunks.push_back(Chunk { data: buf[..n].to_vec(), due });
            drop(q);
            pipe.cv.notify_all();
        }
    }

    /// The client-to-target writer: waits for forwarding to be allowed,
    /// dials the target, starts the other direction, then forwards.
    fn connect_and_forward(self: &Arc<Self>, c: &Arc<Conn>) {
        let held = lock(&self.ctl).blackhole_until.is_some_and(|t| t > Instant::now());
        if !self.wait_forwardable(c, &c.up, Instant::now()) {
            return;
        }
        if held && lock(&c.up.q).end.is_some() {
            // The client gave up before the connection was ever forwarded:
            // the target never hears of it.
            c.kill();
            self.forget(c);
            return;
        }
        let dialed = match &self.target {
            Target::Unix(p) => UnixStream::connect(p).map(Sock::Unix),
            Target::Tcp(a) => TcpStream::connect(a).map(|s| {
                let _ = s.set_nodelay(true);
                Sock::Tcp(s)
            }),
        };
        let Ok(t) = dialed else {
            c.kill();
            self.forget(c);
            return;
        };
        let t = Arc::new(t);
        {
            let mut slot = lock(&c.target);
            if c.is_dead() {
                t.cut();
                return;
            }
            *slot = Some(t.clone());
        }
        let (me, c1) = (self.clone(), c.clone());
        self.spawn("proxy-down-read", move || me.read_loop(&c1, false));
        let (me, c2) = (self.clone(), c.clone());
        self.spawn("proxy-down-write", move || me.write_loop(&c2, false));
        self.write_loop(c, true);
    }

    /// A direction's writer: from its queue to its destination socket.
    fn write_loop(&self, c: &Conn, up: bool) {
        let (pipe, dst) = if up {
            (&c.up, lock(&c.target).clone())
        } else {
            (&c.down, None)
        };
        let dst: &Sock = match &dst {
            Some(t) => t,
            None => &c.client,
        };
        let mut frames = Frames::default();
        loop {
            let chunk = {
                let mut q = lock(&pipe.q);
                loop {
                    if c.is_dead() {
                        return;
                    }
                    if let Some(ch) = q.chunks.pop_front() {
                        q.bytes -= ch.data.len();
                        break ch;
                    }
                    if let Some(end) = q.end {
                        drop(q);
                        if end == End::Eof {
                            dst.half_close();
                            if c.ended.fetch_add(1, Ordering::SeqCst) + 1 == 2 {
                                self.forget(c);
                            }
                        }
                        return;
                    }
                    q = pipe.cv.wait(q).unwrap_or_else(|e| e.into_inner());
                }
            };
            pipe.cv.notify_all();
            if !self.wait_forwardable(c, pipe, chunk.due) {
                return;
            }
            let data = &chunk.data;
            if data.len() >= 2 && self.take_cut() {
                match frames.cut_point(data) {
                    Some(k) => {
                        let _ = dst.write_all(&data[..k]);
                        let mut f = frames;
                        f.advance(&data[..k]);
                        let way = if up { "client to target" } else { "target to client" };
                        lock(&self.cut_log).push(format!("{way}: {k} of a {}-byte chunk forwarded, ending after {}", data.len(), f.describe()));
                        // Counted first, like the reset.
                        self.cuts.fetch_add(1, Ordering::SeqCst);
                        self.reset_all(true);
                        return;
                    }
                    // Too short to cut inside a frame here: the next one.
                    None => lock(&self.ctl).cut_armed = true,
                }
            }
            frames.advance(data);
            if dst.write_all(data).is_err() {
                c.kill();
                self.forget(c);
                return;
            }
            self.forwarded.fetch_add(data.len(), Ordering::SeqCst);
        }
    }
}

/// Follows the frames of a forwarded stream (8-byte prefix whose first four
/// bytes are the body's length, little-endian: PROTOCOL.md 2), to know where
/// they begin.
#[derive(Clone, Copy, Default)]
struct Frames {
    head: [u8; 8],
    head_len: usize,
    /// The body's length of the frame being forwarded, once its prefix is.
    body_len: u64,
    body_left: u64,
}

impl Frames {
    fn advance(&mut self, mut d: &[u8]) {
        while !d.is_empty() {
            if self.body_left > 0 {
                let n = (self.body_left as usize).min(d.len());
                self.body_left -= n as u64;
                d = &d[n..];
                continue;
            }
            let n = (8 - self.head_len).min(d.len());
            self.head[self.head_len..self.head_len + n].copy_from_slice(&d[..n]);
            self.head_len += n;
            d = &d[n..];
            if self.head_len == 8 {
                self.body_len = u64::from(u32::from_le_bytes(self.head[..4].try_into().unwrap()));
                self.body_left = self.body_len;
                self.head_len = 0;
            }
        }
    }

    fn at_boundary(&self) -> bool {
        self.head_len == 0 && self.body_left == 0
    }

    /// Where in its frame the stream is (not at a boundary), in words.
    fn describe(&self) -> String {
        if self.head_len > 0 {
            return format!("{} of a frame prefix's 8 bytes", self.head_len);
        }
        let kind = match self.head[4] {
            1 => "HELLO".to_string(),
            2 => "MESSAGE".to_string(),
            3 => "CONFIRM".to_string(),
            4 => "HEARTBEAT".to_string(),
            k => format!("kind-{k}"),
        };
        let len = 8 + self.body_len;
        format!("{} of a {len}-byte {kind} frame's bytes", len - self.body_left)
    }

    /// An odd count of `data`'s bytes, near its middle, after which the
    /// stream is not at a frame boundary.
    fn cut_point(&self, data: &[u8]) -> Option<usize> {
        let mid = (data.len() / 2) | 1;
        let mut candidates: Vec<usize> = (1..data.len()).filter(|k| k % 2 == 1).collect();
        candidates.sort_by_key(|&k| k.abs_diff(mid));
        candidates.into_iter().find(|&k| {
            let mut f = *self;
            f.advance(&data[..k]);
            !f.at_boundary()
        })
    }
}

enum Listener {
    Unix(UnixListener),
    Tcp(TcpListener),
}

impl Listener {
    fn accept(&self) -> io::Result<Sock> {
        match self {
            Listener::Unix(l) => l.accept().map(|(s, _)| Sock::Unix(s)),
            Listener::Tcp(l) => l.accept().map(|(s, _)| Sock::Tcp(s)),
        }
    }

    /// Makes a blocked (and every later) `accept` fail at once (Linux:
    /// `EINVAL` on a listening socket that was shut down).
    fn shut(&self) {
        let fd = match self {
            Listener::Unix(l) => l.as_raw_fd(),
            Listener::Tcp(l) => l.as_raw_fd(),
        };
        // SAFETY: `fd` is the listening socket `self` owns, open for the
        // whole call (the proxy holds the listener until its acceptor is
        // joined); shutdown changes the socket's state, not the descriptor.
        unsafe { libc::shutdown(fd, libc::SHUT_RDWR) };
    }
}

/// The proxy (see the module comment).
pub struct Proxy {
    shared: Arc<Shared>,
    listener: Arc<Listener>,
    acceptor: Option<JoinHandle<()>>,
    /// Where it listens: a Unix path, or a TCP address with the real port.
    listen: ListenAt,
}

#[derive(Clone, Debug)]
enum ListenAt {
    Unix(PathBuf),
    Tcp(SocketAddr),
}

impl Proxy {
    /// Listens on the Unix-domain path `listen` and forwards to `target`.
    pub fn unix(listen: &Path, target: &Path) -> Proxy {
        let l = UnixListener::bind(listen).expect("the proxy's Unix path");
        Proxy::start(Listener::Unix(l), ListenAt::Unix(listen.to_path_buf()), Target::Unix(target.to_path_buf()))
    }

    /// Listens on a free TCP port of 127.0.0.1 and forwards to `target`.
    pub fn tcp(target: SocketAddr) -> Proxy {
        let l = TcpListener::bind("127.0.0.1:0").expect("a TCP port for the proxy");
        let at = l.local_addr().unwrap();
        Proxy::start(Listener::Tcp(l), ListenAt::Tcp(at), Target::Tcp(target))
    }

    fn start(l: Listener, listen: ListenAt, target: Target) -> Proxy {
        let shared = Arc::new(Shared {
            target,
            ctl: Mutex::new(Control { blackhole_until: None, delay: Duration::ZERO, cut_armed: false }),
            conns: Mutex::new(Vec::new()),
            threads: Mutex::new(Vec::new()),
            stop: AtomicBool::new(false),
            next_id: AtomicU64::new(0),
            accepted: AtomicUsize::new(0),
            resets: AtomicUsize::new(0),
            cuts: AtomicUsize::new(0),
            forwarded: AtomicUsize::new(0),
            reset_times: Mutex::new(Vec::new()),
            cut_log: Mutex::new(Vec::new()),
        });
        let (s, listener) = (shared.clone(), Arc::new(l));
        let l = listener.clone();
        let acceptor = std::thread::Builder::new().name("proxy-accept".into()).spawn(move || s.accept_loop(&l)).unwrap();
        Proxy { shared, listener, acceptor: Some(acceptor), listen }
    }

    /// The proxy's address as a libmps configuration writes it
    /// (`unix:/path` or `tcp:127.0.0.1:port`).
    pub fn address(&self) -> String {
        match &self.listen {
            ListenAt::Unix(p) => format!("unix:{}", p.display()),
            ListenAt::Tcp(a) => format!("tcp:{a}"),
        }
    }

    /// The TCP port it listens on (`None` on a Unix path).
    pub fn port(&self) -> Option<u16> {
        match &self.listen {
            ListenAt::Unix(_) => None,
            ListenAt::Tcp(a) => Some(a.port()),
        }
    }

    /// Cuts every current connection both ways (see the module comment).
    pub fn reset(&self) {
        self.shared.reset_all(true);
    }

    /// For `d` from now, forwards nothing; bytes are held, not dropped.
    pub fn blackhole(&self, d: Duration) {
        lock(&self.shared.ctl).blackhole_until = Some(Instant::now() + d);
    }

    /// Forwards every chunk read from now on `d` after it was read.
    pub fn delay(&self, d: Duration) {
        lock(&self.shared.ctl).delay = d;
    }

    /// Forwards the next chunk of 2 bytes or more (either direction) only in
    /// part, ending inside a frame, then resets every connection.
    pub fn cut_mid_frame(&self) {
        lock(&self.shared.ctl).cut_armed = true;
    }

    /// Connections accepted so far.
    pub fn accepted(&self) -> usize {
        self.shared.accepted.load(Ordering::SeqCst)
    }

    /// Resets done so far (by `reset`, and after each cut).
    pub fn resets(&self) -> usize {
        self.shared.resets.load(Ordering::SeqCst)
    }

    /// Cuts mid-frame done so far.
    pub fn cuts(&self) -> usize {
        self.shared.cuts.load(Ordering::SeqCst)
    }

    /// Each cut mid-frame so far: the direction, and where in which frame
    /// the forwarded part ended.
    pub fn cut_log(&self) -> Vec<String> {
        lock(&self.shared.cut_log).clone()
    }

    /// When each reset was done, in order.
    pub fn reset_times(&self) -> Vec<Instant> {
        lock(&self.shared.reset_times).clone()
    }

    /// Bytes forwarded so far, both ways, all connections.
    pub fn forwarded(&self) -> usize {
        self.shared.forwarded.load(Ordering::SeqCst)
    }

    /// Connections being forwarded now.
    pub fn live(&self) -> usize {
        lock(&self.shared.conns).len()
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.shared.stop.store(true, Ordering::SeqCst);
        self.listener.shut();
        if let Some(a) = self.acceptor.take() {
            let _ = a.join();
        }
        // No connection is accepted any more: cut every one still
        // forwarded (the others have ended), then join every thread; one may
        // start another before it ends, so until none is left.
        self.shared.reset_all(false);
        loop {
            let next = lock(&self.shared.threads).pop();
            let Some(h) = next else { break };
            let _ = h.join();
        }
        if let ListenAt::Unix(p) = &self.listen {
            let _ = std::fs::remove_file(p);
        }
    }
}
