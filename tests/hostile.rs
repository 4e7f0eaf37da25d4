//! Hostile peers: raw bytes to a live SP over Unix-domain sockets and TCP
//! (issue 8, "hostile-input machinery"; SPEC 5 and 7: input from the wire is
//! untrusted, a stranger never disturbs a live link, no peer makes memory
//! grow beyond documented bounds).
//!
//! The topology of every test, built by `Rig::new` in this process:
//!
//! ```text
//!   R = u.B  (a real SP, Mps)  ──dials──▶  X = (u+1).A  (the SP under test)
//!   H = u.A  (a configured peer: the test plays it over raw sockets) ──▶ X
//!   strangers (an unconfigured id, or no HELLO at all)              ──▶ X
//! ```
//!
//! X has two configured peers, both lower ids than X, so both dial X's one
//! listening address (the one the strangers hit too). Links are not
//! authenticated yet (issue 10), so H is whatever says "u.A" in its HELLO; a
//! HELLO claiming to be R (an impostor) is issue 10's business, not tested
//! here. Each rig takes fresh unit numbers, so the log lines of one test
//! (which name the SPs) cannot be mistaken for another's.
//!
//! Every attack runs over both transports (`mod <attack> { fn unix, fn tcp }`)
//! and asserts:
//! - X ends what must end (the hostile connection: it reads end-of-stream),
//!   and logs a reason: at least one line containing the reason, waited for
//!   with a deadline (the log may be asynchronous and rate-limited);
//! - X keeps serving its configured peers: synchronous round trips X <-> R
//!   succeed between the steps of the attack, while it runs, and after it;
//!   R's link is never lost; and a fresh, well-behaved H is served afterwards
//!   (a message X sends to H is confirmed);
//! - X's threads and memory stay bounded: the process's thread count
//!   (/proc/self/status Threads) stays within THREAD_SLACK of the baseline
//!   taken before the attack, and its resident memory (VmRSS) within the
//!   bound each test states.
//!
//! Threads and memory are process-wide, and libtest runs the tests of one
//! binary in parallel: every test takes `SERIAL` first. Every test runs under
//! a watchdog (`run`): a test that does not finish in its time ends the whole
//! binary with a message instead of hanging it.
//!
//! Set `HOSTILE_LOG=1` to echo the library's log to stderr.

mod common;
use common::TempDir;
use mps::cmi::frame::{self, Hello, Kind, MessageHead, MAX_MESSAGE_HEAD, PREFIX_LEN};
use mps::{Address, Config, Event, MessageBuf, Mps, SessionId, SpId, Status, Timeout};
use std::collections::VecDeque;
use std::io::{self, Read, Write};
use std::net::{Shutdown, TcpStream};
use std::os::unix::net::UnixStream;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::sync::mpsc;
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread;
use std::time::{Duration, Instant};

// --- the numbers every test states ----------------------------------------------

/// X's heartbeat interval (R's too, and the one H keeps when it behaves).
const HB_MS: u64 = 100;
/// X's dead-peer timeout, which also bounds its handshakes.
const DEAD_MS: u64 = 3000;
/// X's max_message_size: the oversized-frame test claims more than this.
const MAX_MESSAGE: u32 = 64 << 20;
/// X's session_queue_depth: the flood test fills the mailbox it floods.
const QUEUE_DEPTH: u32 = 1024;
/// Threads the process may have above its baseline while an attack runs and
/// after it: H's link (its reader and writer), a handshake or two in
/// progress, a thread of the test's own. Not one per hostile connection.
const THREAD_SLACK: usize = 8;
/// Resident memory the process may gain over its baseline in an attack that
/// claims no memory (a few KiB of frames, log lines kept by the test).
const RSS_SLACK: u64 = 32 << 20;
/// How long a condition that must come about (a connection closed by X, a
/// log line, a link up) may take. Generous: the machine is shared.
const WAIT: Duration = Duration::from_secs(15);
/// The watchdog of an ordinary test.
const WATCHDOG: Duration = Duration::from_secs(90);
/// The watchdog of the two long tests (a 20 s flood, a thousand connections).
const WATCHDOG_LONG: Duration = Duration::from_secs(180);

// --- serialization and the watchdog ----------------------------------------------------------

static SERIAL: Mutex<()> = Mutex::new(());

fn serial() -> MutexGuard<'static, ()> {
    SERIAL.lock().unwrap_or_else(|e| e.into_inner())
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Transport {
    Unix,
    Tcp,
}

/// Runs one attack over one transport, alone in the process, under a
/// watchdog: a test still running after `limit` ends the test binary (exit
/// status 101) with a message, since a stuck test holds `SERIAL` and the
/// process-wide measurements of every later test would be meaningless.
fn run(name: &'static str, t: Transport, limit: Duration, attack: fn(Transport)) {
    let _alone = serial();
    install_log();
    let (done_tx, done) = mpsc::channel::<()>();
    let body = thread::Builder::new()
        .name(format!("{name}-{t:?}"))
        .spawn(move || {
            let _done = done_tx; // dropped when the attack returns or panics
            attack(t)
        })
        .unwrap();
    match done.recv_timeout(limit) {
        Err(mpsc::RecvTimeoutError::Timeout) => {
            eprintln!("WATCHDOG: {name} over {t:?} did not finish within {limit:?}; usage now {:?}", usage());
            eprintln!("the last log lines:\n{}", recent_log(40));
            std::process::exit(101);
        }
        _ => {
            if let Err(panic) = body.join() {
                std::panic::resume_unwind(panic);
            }
        }
    }
}

/// One test per transport for `attack`: `<attack>::unix` and `<attack>::tcp`.
macro_rules! over_unix_and_tcp {
    ($(#[$attr:meta])* $attack:ident, $limit:expr) => {
        mod $attack {
            $(#[$attr])*
            #[test]
            fn unix() {
                super::run(stringify!($attack), super::Transport::Unix, $limit, super::$attack)
            }
            $(#[$attr])*
            #[test]
            fn tcp() {
                super::run(stringify!($attack), super::Transport::Tcp, $limit, super::$attack)
            }
        }
    };
}

// --- the log, recorded ---------------------------------------------------------------

/// Lines kept (the oldest are dropped past it: a flood of warnings must not
/// grow the test's own memory).
const BOOK_LINES: usize = 20_000;

struct Book {
    lines: VecDeque<(u64, String)>,
    next: u64,
}

static BOOK: Mutex<Book> = Mutex::new(Book { lines: VecDeque::new(), next: 0 });
static BOOK_CV: Condvar = Condvar::new();

fn book() -> MutexGuard<'static, Book> {
    BOOK.lock().unwrap_or_else(|e| e.into_inner())
}

/// One recording sink for the whole binary, at debug level (every line the
/// library writes is in the book, should a failure need it).
fn install_log() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        let echo = std::env::var_os("HOSTILE_LOG").is_some();
        mps::log::set_threshold(mps::log::Level::Debug as u32);
        mps::log::set_sink(Some(Box::new(move |level, line| {
            if echo {
                eprintln!("libmps {level:?}: {line}");
            }
            let mut b = book();
            let seq = b.next;
            b.next += 1;
            if b.lines.len() == BOOK_LINES {
                b.lines.pop_front();
            }
            b.lines.push_back((seq, format!("{level:?}: {line}")));
            drop(b);
            BOOK_CV.notify_all();
        })));
    });
}

/// The sequence number the next line will get.
fn log_mark() -> u64 {
    book().next
}

fn recent_log(n: usize) -> String {
    let b = book();
    let skip = b.lines.len().saturating_sub(n);
    b.lines.iter().skip(skip).map(|(_, l)| format!("  {l}\n")).collect()
}

/// The first line logged since `since` that contains one of `needles`.
fn find_log(since: u64, needles: &[&str]) -> Option<String> {
    book()
        .lines
        .iter()
        .filter(|(seq, _)| *seq >= since)
        .find(|(_, l)| needles.iter().any(|n| l.contains(n)))
        .map(|(_, l)| l.clone())
}

/// A rate-limit summary (src/log.rs: "N similar lines suppressed ... (file:line
/// \"template\")") for lines of the same kind as `needle`: its template shares
/// the needle's first three words ("link to SP"). Tests run attacks back to
/// back, so a line a test waits for may be one the per-site limit (10 a
/// second) counted instead of writing; it was still logged, as a count.
fn suppressed_kind_of(line: &str, needle: &str) -> bool {
    let kind: Vec<&str> = needle.split_whitespace().take(3).collect();
    line.contains("similar lines suppressed") && line.contains(&format!("\"{}", kind.join(" ")))
}

/// Waits (up to WAIT) for a line logged since `since` that contains one of
/// `needles`; fails the test with the recent log otherwise.
fn expect_log(since: u64, needles: &[&str]) -> String {
    let deadline = Instant::now() + WAIT;
    let mut b = book();
    loop {
        if let Some((_, l)) = b.lines.iter().filter(|(seq, _)| *seq >= since).find(|(_, l)| {
            needles.iter().any(|n| l.contains(n) || suppressed_kind_of(l, n))
        }) {
            return l.clone();
        }
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            drop(b);
            panic!("no log line containing any of {needles:?} within {WAIT:?}; the last lines:\n{}", recent_log(30));
        }
        b = BOOK_CV.wait_timeout(b, left).unwrap_or_else(|e| e.into_inner()).0;
    }
}

// --- the process's threads, memory and descriptors ------------------------------------------

#[derive(Clone, Copy, Debug, Default)]
struct Usage {
    threads: usize,
    rss_kib: u64,
    fds: usize,
}

fn status_field(status: &str, field: &str) -> u64 {
    status
        .lines()
        .find_map(|l| l.strip_prefix(field))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("no {field} in /proc/self/status"))
}

fn usage() -> Usage {
    let s = std::fs::read_to_string("/proc/self/status").expect("/proc/self/status");
    Usage {
        threads: status_field(&s, "Threads:") as usize,
        rss_kib: status_field(&s, "VmRSS:"),
        fds: std::fs::read_dir("/proc/self/fd").map(|d| d.count()).unwrap_or(0),
    }
}

/// Returns the heap's free memory to the kernel, so that a baseline taken
/// after an earlier test freed a lot (a flood's queue) is the process's real
/// size, and that earlier test's free pages cannot hide this one's growth.
fn trim_heap() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: malloc_trim takes no pointers; it only releases free heap pages.
    unsafe {
        libc::malloc_trim(0);
    }
}

impl Usage {
    fn max(self, o: Usage) -> Usage {
        Usage { threads: self.threads.max(o.threads), rss_kib: self.rss_kib.max(o.rss_kib), fds: self.fds.max(o.fds) }
    }
    fn rss_over(&self, base: &Usage) -> u64 {
        self.rss_kib.saturating_sub(base.rss_kib) * 1024
    }
}

fn mib(bytes: u64) -> f64 {
    bytes as f64 / (1 << 20) as f64
}

/// Waits (up to WAIT) until the process is back within `threads` threads and
/// `rss` bytes over `base`; fails with the figures otherwise.
fn expect_back_within(base: &Usage, threads: usize, rss: u64, what: &str) {
    let deadline = Instant::now() + WAIT;
    loop {
        let u = usage();
        if u.threads <= base.threads + threads && u.rss_over(base) <= rss {
            return;
        }
        if Instant::now() >= deadline {
            panic!(
                "{what}: {} threads (baseline {}, allowed +{threads}) and {:.1} MiB more resident memory (allowed {:.1}) after {WAIT:?}",
                u.threads,
                base.threads,
                mib(u.rss_over(base)),
                mib(rss)
            );
        }
        thread::yield_now();
    }
}

// --- raw connections ------------------------------------------------------------------

/// One raw connection to X, either transport.
enum Wire {
    Unix(UnixStream),
    Tcp(TcpStream),
}

impl Wire {
    fn connect(addr: &Address) -> io::Result<Wire> {
        match addr {
            Address::Unix(p) => UnixStream::connect(p).map(Wire::Unix),
            Address::Tcp(a) => {
                let s = TcpStream::connect(a.as_str())?;
                s.set_nodelay(true)?;
                Ok(Wire::Tcp(s))
            }
            Address::Inproc(_) => unreachable!("the rigs listen on sockets"),
        }
    }
    fn try_clone(&self) -> Wire {
        match self {
            Wire::Unix(s) => Wire::Unix(s.try_clone().unwrap()),
            Wire::Tcp(s) => Wire::Tcp(s.try_clone().unwrap()),
        }
    }
    fn set_read_timeout(&self, d: Duration) {
        match self {
            Wire::Unix(s) => s.set_read_timeout(Some(d)).unwrap(),
            Wire::Tcp(s) => s.set_read_timeout(Some(d)).unwrap(),
        }
    }
    fn set_write_timeout(&self, d: Duration) {
        match self {
            Wire::Unix(s) => s.set_write_timeout(Some(d)).unwrap(),
            Wire::Tcp(s) => s.set_write_timeout(Some(d)).unwrap(),
        }
    }
    /// Half-closes: X reads end-of-stream after what was written.
    fn shutdown_write(&self) {
        let _ = match self {
            Wire::Unix(s) => s.shutdown(Shutdown::Write),
            Wire::Tcp(s) => s.shutdown(Shutdown::Write),
        };
    }

    /// Waits (up to WAIT) until X closes the connection, discarding what it
    /// sends meanwhile (its HELLO, heartbeats). Fails the test if it does not.
    fn expect_closed(&mut self, what: &str) {
        let deadline = Instant::now() + WAIT;
        let mut scratch = [0u8; 4096];
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                panic!("{what}: X did not close the connection within {WAIT:?}");
            }
            self.set_read_timeout(left);
            match self.read(&mut scratch) {
                Ok(0) => return,
                Ok(_) => {}
                Err(e) if matches!(e.kind(), io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut | io::ErrorKind::Interrupted) => {}
                // A reset (TCP, when X closed with our bytes unread): closed too.
                Err(_) => return,
            }
        }
    }
}

impl Read for Wire {
    fn read(&mut self, b: &mut [u8]) -> io::Result<usize> {
        match self {
            Wire::Unix(s) => s.read(b),
            Wire::Tcp(s) => s.read(b),
        }
    }
}

impl Write for Wire {
    fn write(&mut self, b: &[u8]) -> io::Result<usize> {
        match self {
            Wire::Unix(s) => s.write(b),
            Wire::Tcp(s) => s.write(b),
        }
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// Writes what the socket takes; errors are ignored: X may already have
/// closed the connection halfway through a hostile burst, which is the point.
fn write_hostile(w: &mut Wire, bytes: &[u8]) {
    let _ = w.write_all(bytes);
}

// --- frames, built with the library's own encoder ---------------------------------------

fn hello_frame(sp: SpId) -> [u8; PREFIX_LEN + frame::HELLO_LEN] {
    Hello { version_min: 1, version_max: 1, sp, max_message: 1 << 20, heartbeat_ms: HB_MS as u32, dead_timeout_ms: DEAD_MS as u32 }
        .encode()
}

/// A whole MESSAGE frame for mailbox `name` (conduit 0, domain 0).
fn message_frame(id: u64, name: &[u8], payload: &[u8], mode: u8) -> Vec<u8> {
    let mut head = [0u8; MAX_MESSAGE_HEAD];
    let h = MessageHead { id, conduit: 0, domain: 0, tag: id as u32, mode };
    let n = frame::encode_message_head(&mut head, &h, name, payload.len() as u32);
    let mut f = head[..n].to_vec();
    f.extend_from_slice(payload);
    f
}

fn confirm_frame(entries: &[(u64, Status)]) -> Vec<u8> {
    let mut f = Vec::new();
    for chunk in entries.chunks(frame::MAX_CONFIRMS_PER_FRAME) {
        frame::encode_confirms(&mut f, chunk);
    }
    f
}

fn prefix(body_len: u32, kind: u8, flags: u8, reserved: u16) -> Vec<u8> {
    let mut p = body_len.to_le_bytes().to_vec();
    p.push(kind);
    p.push(flags);
    p.extend_from_slice(&reserved.to_le_bytes());
    p
}

/// Deterministic garbage (xorshift64*).
fn garbage(seed: u64, n: usize) -> Vec<u8> {
    let mut x = seed | 1;
    (0..n)
        .map(|_| {
            x ^= x >> 12;
            x ^= x << 25;
            x ^= x >> 27;
            (x.wrapping_mul(0x2545_F491_4F6C_DD1D) >> 56) as u8
        })
        .collect()
}

/// A MESSAGE that X sent to H.
struct Sent {
    id: u64,
    name: String,
    payload: Vec<u8>,
}

/// The test playing H, X's configured peer u.A, after a good handshake.
struct Hostile {
    /// The reading half.
    rd: Wire,
    /// The writing half, shared with the keep-alive thread.
    wr: Arc<Mutex<Wire>>,
    beat: Option<(Arc<AtomicBool>, thread::JoinHandle<()>)>,
}

impl Hostile {
    fn send(&self, bytes: &[u8]) {
        write_hostile(&mut self.wr.lock().unwrap(), bytes);
    }

    /// Sends heartbeats every HB_MS from now on, as a live peer does (each
    /// frame whole, under the writing half's lock), so that X does not
    /// declare H dead while a test takes its time.
    fn keep_alive(&mut self) {
        let stop = Arc::new(AtomicBool::new(false));
        let (wr, stop2) = (self.wr.clone(), stop.clone());
        let t = thread::spawn(move || {
            while !stop2.load(Ordering::Acquire) {
                if wr.lock().unwrap().write_all(&frame::heartbeat()).is_err() {
                    return;
                }
                // The pace of a peer's heartbeats (a load, not a synchronization).
                thread::sleep(Duration::from_millis(HB_MS));
            }
        });
        self.beat = Some((stop, t));
    }

    /// Reads X's frames until a MESSAGE arrives (heartbeats are skipped).
    fn next_message(&mut self) -> Sent {
        let deadline = Instant::now() + WAIT;
        loop {
            assert!(Instant::now() < deadline, "X sent H no MESSAGE within {WAIT:?}");
            self.rd.set_read_timeout(WAIT);
            let mut p = [0u8; PREFIX_LEN];
            self.rd.read_exact(&mut p).expect("a frame from X");
            let body_len = u32::from_le_bytes([p[0], p[1], p[2], p[3]]) as usize;
            assert!(body_len <= 1 << 20, "X sent a {body_len}-byte frame to a peer that accepts 1 MiB");
            let mut body = vec![0u8; body_len];
            self.rd.read_exact(&mut body).expect("a frame body from X");
            match Kind::from_u8(p[4]) {
                Some(Kind::Heartbeat) | Some(Kind::Confirm) => continue,
                Some(Kind::Message) => {
                    let (h, name_len) = frame::decode_message_fixed(&body, body_len as u32).expect("X's MESSAGE is well formed");
                    let name = String::from_utf8(body[frame::MESSAGE_FIXED..frame::MESSAGE_FIXED + name_len].to_vec()).unwrap();
                    let payload = body[frame::MESSAGE_FIXED + name_len..].to_vec();
                    return Sent { id: h.id, name, payload };
                }
                k => panic!("X sent H an unexpected frame {k:?}"),
            }
        }
    }

    fn expect_closed(mut self, what: &str) {
        self.stop_beat();
        self.rd.expect_closed(what);
    }

    fn stop_beat(&mut self) {
        if let Some((stop, t)) = self.beat.take() {
            stop.store(true, Ordering::Release);
            let _ = t.join();
        }
    }
}

impl Drop for Hostile {
    fn drop(&mut self) {
        self.stop_beat();
    }
}

// --- the rig --------------------------------------------------------------------

/// Unit numbers: each rig takes two (u.A, u.B and (u+1).A), so every test's
/// SP ids, and so its log lines, are its own.
static NEXT_UNIT: AtomicU32 = AtomicU32::new(10);

struct Rig {
    dir: TempDir,
    x: Mps,
    r: Mps,
    r_cfg: Config,
    x_id: SpId,
    h_id: SpId,
    r_id: SpId,
    /// X's listening address (with the real port for TCP).
    x_addr: Address,
    /// X's session for the traffic with R, and R's.
    xs: SessionId,
    rs: SessionId,
    /// X's "Sink" mailbox (no callback, never read): where hostile messages go.
    sink: SessionId,
    /// X's "Probe" mailbox: X sends from it to H, to see that H is served.
    probe: SessionId,
    tag: AtomicU32,
    /// Log lines before this are not this test's.
    mark: u64,
    /// Log lines about R's link before this are expected (R restarted).
    r_mark: u64,
    /// Usage before the attack.
    base: Usage,
}

impl Rig {
    fn new(t: Transport) -> Rig {
        let u = NEXT_UNIT.fetch_add(2, Ordering::Relaxed);
        let (h_id, r_id, x_id) = (SpId::a(u), SpId::b(u), SpId::a(u + 1));
        let dir = TempDir::new();
        let sock = |n: &str| format!("unix:{}", dir.0.join(n).display());
        let (listen, h_addr, r_addr) = match t {
            Transport::Unix => (sock("x.sock"), sock("h.sock"), sock("r.sock")),
            // X dials neither (both have lower ids): their addresses are never used.
            Transport::Tcp => ("tcp:127.0.0.1:0".to_string(), "tcp:127.0.0.1:9".to_string(), "tcp:127.0.0.1:11".to_string()),
        };
        let common = format!(
            "[limits]\nmax_message_size = {MAX_MESSAGE}\nsession_queue_depth = {QUEUE_DEPTH}\n\
             [heartbeat]\ninterval_ms = {HB_MS}\ndead_peer_timeout_ms = {DEAD_MS}\n\
             [reconnect]\ninitial_backoff_ms = 5\nmax_backoff_ms = 100\n"
        );
        let x_text = format!(
            "sp = \"{x_id}\"\nlisten = \"{listen}\"\n{common}\
             [[peer]]\nsp = \"{h_id}\"\naddress = \"{h_addr}\"\n[[peer]]\nsp = \"{r_id}\"\naddress = \"{r_addr}\"\n"
        );
        let x = Mps::start(Config::from_toml(&x_text, "X").unwrap()).expect("X starts");
        let x_addr = x.listen_address().expect("X listens");
        let r_text = format!("sp = \"{r_id}\"\n{common}[[peer]]\nsp = \"{x_id}\"\naddress = \"{x_addr}\"\n");
        let r_cfg = Config::from_toml(&r_text, "R").unwrap();
        let r = Mps::start(r_cfg.clone()).expect("R starts");
        r.wait_for_peer(x_id, Some(WAIT)).expect("R's link to X");
        x.wait_for_peer(r_id, Some(WAIT)).expect("X's link to R");
        let xs = x.open(None, 0, 0, "Real", 0).unwrap();
        let rs = r.open(None, 0, 0, "Real", 0).unwrap();
        let sink = x.open(None, 0, 0, "Sink", 0).unwrap();
        let probe = x.open(None, 0, 0, "Probe", 0).unwrap();
        let mut rig = Rig {
            dir,
            x,
            r,
            r_cfg,
            x_id,
            h_id,
            r_id,
            x_addr,
            xs,
            rs,
            sink,
            probe,
            tag: AtomicU32::new(1),
            mark: 0,
            r_mark: 0,
            base: Usage::default(),
        };
        rig.flow(5);
        rig.mark = log_mark();
        rig.r_mark = rig.mark;
        trim_heap();
        rig.base = usage();
        rig
    }

    /// `n` synchronous round trips X -> R and R -> X, each checked: the
    /// configured peer is served. Fails the test on the first failure.
    fn flow(&self, n: u32) {
        for _ in 0..n {
            let tag = self.tag.fetch_add(1, Ordering::Relaxed);
            let out = MessageBuf::from_slice(&tag.to_le_bytes()).unwrap();
            self.x.send_sync(self.xs, self.r_id, &out, 4, tag).unwrap_or_else(|st| panic!("X -> R failed: {st}"));
            let m = self.r.receive(self.rs, Timeout::Seconds(15), tag).unwrap_or_else(|st| panic!("R's receive failed: {st}"));
            assert_eq!((m.data.as_slice(), m.sender), (&tag.to_le_bytes()[..], self.x_id));
            self.r.send_sync(self.rs, self.x_id, &out, 4, tag).unwrap_or_else(|st| panic!("R -> X failed: {st}"));
            let m = self.x.receive(self.xs, Timeout::Seconds(15), tag).unwrap_or_else(|st| panic!("X's receive failed: {st}"));
            assert_eq!((m.data.as_slice(), m.sender), (&tag.to_le_bytes()[..], self.r_id));
        }
    }

    /// A raw connection to X's listener.
    fn connect(&self) -> Wire {
        Wire::connect(&self.x_addr).expect("connect to X")
    }

    /// A raw connection that has said `hello`; X's HELLO is read and checked.
    fn connect_saying(&self, hello: &[u8]) -> Wire {
        let mut w = self.connect();
        w.write_all(hello).unwrap();
        w.set_read_timeout(WAIT);
        let mut theirs = [0u8; PREFIX_LEN + frame::HELLO_LEN];
        w.read_exact(&mut theirs).expect("X's HELLO");
        assert_eq!(Hello::decode(&theirs[PREFIX_LEN..]).unwrap().sp, self.x_id);
        w
    }

    /// H, after a good handshake, with its link up at X.
    fn hostile(&self) -> Hostile {
        self.hostile_with(&[])
    }

    /// `hostile()`, sending heartbeats from now on (`keep_alive`).
    fn live_hostile(&self) -> Hostile {
        let mut h = self.hostile();
        h.keep_alive();
        h
    }

    /// H, whose first bytes after its HELLO (in the same write) are `then`.
    fn hostile_with(&self, then: &[u8]) -> Hostile {
        let mut first = hello_frame(self.h_id).to_vec();
        first.extend_from_slice(then);
        let rd = self.connect_saying(&first);
        if then.is_empty() {
            self.x.wait_for_peer(self.h_id, Some(WAIT)).expect("X's link to H is up");
        }
        let wr = Arc::new(Mutex::new(rd.try_clone()));
        Hostile { rd, wr, beat: None }
    }

    /// X sends a synchronous message from "Probe" to H; H confirms it with
    /// STATUS_SUCCESS; the send returns it.
    fn probe_round_trip(&self, h: &mut Hostile) {
        let (sender, m) = self.probe_in_flight(h);
        h.send(&confirm_frame(&[(m.id, Status::STATUS_SUCCESS)]));
        assert_eq!(sender.join().unwrap(), Ok(()), "X's send to H, confirmed by H");
    }

    /// X sends a synchronous message from "Probe" to H, and H has read it:
    /// the send is in flight (its thread returns the send's result), and its
    /// confirmation is H's to give.
    fn probe_in_flight(&self, h: &mut Hostile) -> (thread::JoinHandle<Result<(), Status>>, Sent) {
        let (x, probe, h_id) = (self.x.clone(), self.probe, self.h_id);
        let sender = thread::spawn(move || x.send_sync(probe, h_id, &MessageBuf::from_slice(b"probe").unwrap(), 5, 9));
        let m = h.next_message();
        assert_eq!((m.name.as_str(), m.payload.as_slice()), ("Probe", &b"probe"[..]));
        (sender, m)
    }

    /// Shuts R down and starts it again (same configuration): X must take
    /// its new connection (within WAIT) whatever the attack is doing.
    fn restart_r(&mut self) {
        let before = log_mark();
        self.r.shutdown().unwrap();
        // X notices that the old connection ended before it is replaced.
        expect_log(before, &[&format!("link to SP {} ", self.r_id)]);
        self.r = Mps::start(self.r_cfg.clone()).expect("R starts again");
        let t0 = Instant::now();
        self.r.wait_for_peer(self.x_id, Some(WAIT)).expect("R's new link to X while X is under attack");
        self.x.wait_for_peer(self.r_id, Some(WAIT)).expect("X's new link to R while X is under attack");
        eprintln!("  R restarted: its link to X was up again after {:?}", t0.elapsed());
        self.rs = self.r.open(None, 0, 0, "Real", 0).unwrap();
        self.r_mark = log_mark();
    }

    /// The end of every test: the configured peers are still served (R: round
    /// trips; H: a fresh, well-behaved connection gets X's message), R's
    /// link was never lost, and threads and memory are back within bounds.
    fn finish(self) {
        self.flow(20);
        let mut h = self.hostile();
        self.probe_round_trip(&mut h);
        drop(h);
        self.flow(5);
        if let Some(l) = find_log(self.r_mark, &[&format!("link to SP {} lost", self.r_id)]) {
            panic!("the attack disturbed the real peer's link: {l}");
        }
        expect_back_within(&self.base, THREAD_SLACK, RSS_SLACK, "after the attack");
    }
}

impl Drop for Rig {
    fn drop(&mut self) {
        let _ = self.r.shutdown();
        let _ = self.x.shutdown();
        let _ = &self.dir;
    }
}

// --- the attacks -----------------------------------------------------------------------

/// Garbage where the HELLO should be: each connection is refused with a
/// logged reason, and nothing else changes.
fn garbage_instead_of_hello(t: Transport) {
    let rig = Rig::new(t);
    let mut cases: Vec<(&str, Vec<u8>)> = vec![
        ("random bytes", garbage(1, 300)),
        ("random bytes", garbage(2, 7)),
        ("an HTTP request", b"GET / HTTP/1.1\r\nHost: x\r\n\r\n".to_vec()),
        ("a TLS ClientHello's first bytes", vec![0x16, 0x03, 0x01, 0x02, 0x00, 0x01, 0x00, 0x01, 0xfc, 0x03, 0x03]),
        ("zeros", vec![0u8; 64]),
        ("ones", vec![0xffu8; 64]),
        ("a HEARTBEAT first", frame::heartbeat().to_vec()),
        ("a CONFIRM first", confirm_frame(&[(1, Status::STATUS_SUCCESS)])),
        ("a MESSAGE first", message_frame(1, b"Sink", b"x", frame::MODE_SYNC)),
    ];
    for seed in 3..8 {
        cases.push(("random bytes", garbage(seed, 40)));
    }
    for (what, bytes) in &cases {
        let mut w = rig.connect();
        write_hostile(&mut w, bytes);
        w.expect_closed(what);
        rig.flow(2);
    }
    expect_log(rig.mark, &["refused an incoming connection"]);
    rig.finish();
}
over_unix_and_tcp!(garbage_instead_of_hello, super::WATCHDOG);

/// HELLOs that are well framed but wrong, from strangers and from nobody in
/// particular: each is refused with a reason; a stranger that completes a
/// handshake under an unconfigured id is refused and disturbs nothing.
fn bad_hellos(t: Transport) {
    let rig = Rig::new(t);
    let stranger = SpId::a(rig.x_id.unit + 1000);
    let good = Hello { version_min: 1, version_max: 1, sp: rig.h_id, max_message: 1 << 20, heartbeat_ms: 100, dead_timeout_ms: 3000 };
    let mut bad_magic = good.encode();
    bad_magic[PREFIX_LEN..PREFIX_LEN + 4].copy_from_slice(b"MPSX");
    let mut long = good.encode().to_vec();
    long[0] = 33;
    long.push(0);
    let mut flagged = good.encode();
    flagged[5] = 0x80;
    let cases: Vec<(&str, Vec<u8>)> = vec![
        ("a stranger's id", Hello { sp: stranger, ..good }.encode().to_vec()),
        ("X's own id", Hello { sp: rig.x_id, ..good }.encode().to_vec()),
        ("side 7", Hello { sp: SpId { unit: rig.h_id.unit, sp: 7 }, ..good }.encode().to_vec()),
        ("an empty version range", Hello { version_min: 2, version_max: 1, ..good }.encode().to_vec()),
        ("no common version", Hello { version_min: 50, version_max: 60, ..good }.encode().to_vec()),
        ("version 0..0", Hello { version_min: 0, version_max: 0, ..good }.encode().to_vec()),
        ("the wrong magic", bad_magic.to_vec()),
        ("a 33-byte HELLO", long),
        ("a HELLO with flags", flagged.to_vec()),
        ("a 4 GiB HELLO", prefix(u32::MAX, 1, 0, 0)),
    ];
    for (what, bytes) in &cases {
        let mut w = rig.connect();
        write_hostile(&mut w, bytes);
        w.expect_closed(what);
        rig.flow(2);
    }
    expect_log(rig.mark, &[&format!("refused a connection from SP {stranger}")]);
    expect_log(rig.mark, &["refused an incoming connection"]);
    // X's link to H was never up: nobody but H's own HELLO makes it.
    assert!(find_log(rig.mark, &[&format!("link to SP {} up", rig.h_id)]).is_none(), "a bad HELLO brought H's link up");
    rig.finish();
}
over_unix_and_tcp!(bad_hellos, super::WATCHDOG);

/// A good HELLO as H, then garbage: in a later write, in the same write as the
/// HELLO (parsed from the handshake's leftover bytes), or a megabyte of it.
fn garbage_after_hello(t: Transport) {
    let rig = Rig::new(t);
    for seed in 0..6u64 {
        let h = rig.hostile();
        h.send(&garbage(100 + seed, 64));
        h.expect_closed("garbage after HELLO");
        rig.flow(2);
    }
    for seed in 0..3u64 {
        let h = rig.hostile_with(&garbage(200 + seed, 64));
        h.expect_closed("HELLO and garbage in one write");
        rig.flow(2);
    }
    // A megabyte: X ends the link at the first bad prefix, while the rest is
    // still arriving (the writes may then fail: X has closed).
    let h = rig.hostile();
    let wr = h.wr.clone();
    let writer = thread::spawn(move || write_hostile(&mut wr.lock().unwrap(), &garbage(300, 1 << 20)));
    h.expect_closed("a megabyte of garbage");
    writer.join().unwrap();
    expect_log(rig.mark, &[&format!("link to SP {} lost: malformed frame", rig.h_id)]);
    rig.finish();
}
over_unix_and_tcp!(garbage_after_hello, super::WATCHDOG);

/// Frames cut short, then the connection closes: a HELLO cut, a prefix cut,
/// a MESSAGE cut in its fixed part, its name or its payload, a CONFIRM cut.
/// X sees the end of the stream mid-frame, ends the link, and delivers none
/// of the cut messages.
fn truncated_frames(t: Transport) {
    let rig = Rig::new(t);
    let msg = message_frame(7, b"Sink", &garbage(400, 1000), frame::MODE_ASYNC);
    let conf = confirm_frame(&[(1, Status::STATUS_SUCCESS), (2, Status::STATUS_SUCCESS), (3, Status::STATUS_SUCCESS)]);
    let hello = hello_frame(rig.h_id);
    let hb = frame::heartbeat();
    for cut in [1, 7, 8, 20, 39] {
        let mut w = rig.connect();
        write_hostile(&mut w, &hello[..cut]);
        w.shutdown_write();
        w.expect_closed("a HELLO cut short");
    }
    let cuts: Vec<(&str, &[u8])> = vec![
        ("a prefix", &msg[..5]),
        ("a MESSAGE's fixed part", &msg[..PREFIX_LEN + 10]),
        ("a MESSAGE's name", &msg[..PREFIX_LEN + frame::MESSAGE_FIXED + 2]),
        ("a MESSAGE's payload", &msg[..msg.len() - 500]),
        ("a MESSAGE's last byte", &msg[..msg.len() - 1]),
        ("a CONFIRM", &conf[..conf.len() - 7]),
        ("a HEARTBEAT", &hb[..3]),
    ];
    for (what, bytes) in &cuts {
        let h = rig.hostile();
        h.send(bytes);
        h.rd.shutdown_write();
        h.expect_closed(what);
        rig.flow(2);
    }
    assert_eq!(rig.x.session_info(rig.sink).unwrap().queued, 0, "a message cut short was delivered");
    expect_log(rig.mark, &[&format!("link to SP {} lost: the peer closed the link", rig.h_id)]);
    expect_log(rig.mark, &["refused an incoming connection"]);
    rig.finish();
}
over_unix_and_tcp!(truncated_frames, super::WATCHDOG);

/// Frames cut short, then silence with the connection left open: a HELLO
/// half sent (the handshake's bound ends it) and a MESSAGE half sent after a
/// good HELLO (the dead-peer timeout ends it, although X is mid-frame).
fn truncated_then_silent(t: Transport) {
    let rig = Rig::new(t);
    let t0 = Instant::now();
    let mut half_hello = rig.connect();
    write_hostile(&mut half_hello, &hello_frame(rig.h_id)[..20]);
    let h = rig.hostile();
    let msg = message_frame(8, b"Sink", &garbage(500, 4000), frame::MODE_SYNC);
    h.send(&msg[..2000]);
    // Both are ended by X's clocks; meanwhile its real peer is served.
    rig.flow(10);
    let mut h = h;
    h.rd.expect_closed("a MESSAGE half sent, then silence");
    half_hello.expect_closed("a HELLO half sent, then silence");
    let took = t0.elapsed();
    assert!(took >= Duration::from_millis(DEAD_MS * 9 / 10), "ended before the dead-peer timeout: {took:?}");
    // H stays silent, its socket open, until X has said why it ended the
    // link. (Were H to close at once on seeing X's end-of-stream, X could log
    // "the peer closed the link" instead: `Conn::kill` shuts the socket's
    // writing side before it marks the link killed, src/cmi/link.rs:394/404.)
    expect_log(rig.mark, &[&format!("link to SP {} lost: no frame from the peer", rig.h_id)]);
    expect_log(rig.mark, &["refused an incoming connection: handshake timed out"]);
    drop(h);
    assert_eq!(rig.x.session_info(rig.sink).unwrap().queued, 0, "a message cut short was delivered");
    rig.finish();
}
over_unix_and_tcp!(truncated_then_silent, super::WATCHDOG);

/// Frames that claim more than X accepts: each ends the link after its
/// prefix (or, for a MESSAGE whose name shows the payload is over
/// max_message_size, after its 24-byte fixed part and name), before any
/// allocation of the claimed size. The process's peak resident memory
/// (VmHWM, reset first where the kernel allows) must not grow by even a
/// quarter of the smallest claim (64 MiB).
fn oversized_frames(t: Transport) {
    let rig = Rig::new(t);
    let peak_reset = std::fs::write("/proc/self/clear_refs", "5").is_ok();
    let over = MAX_MESSAGE + 1;
    // A MESSAGE whose length passes the prefix check (it allows for a
    // 256-byte name) but whose 1-byte name leaves a payload over the limit.
    let mut name_slack = message_frame(9, b"S", &[], frame::MODE_ASYNC);
    let slack_len = (frame::MESSAGE_FIXED + 1) as u32 + MAX_MESSAGE + 200;
    name_slack[..4].copy_from_slice(&slack_len.to_le_bytes());
    let cases: Vec<(&str, Vec<u8>)> = vec![
        ("a 4 GiB MESSAGE", prefix(u32::MAX, 2, 0, 0)),
        ("a MESSAGE one byte over", prefix((frame::MESSAGE_FIXED + frame::MAX_NAME_BYTES) as u32 + over, 2, 0, 0)),
        ("a MESSAGE over by its name's slack", name_slack),
        ("a 2 GiB CONFIRM", prefix(1 << 31, 3, 0, 0)),
        ("a CONFIRM of 4097 entries", prefix((4 + 12 * 4097) as u32, 3, 0, 0)),
        ("a HEARTBEAT with a body", prefix(1 << 30, 4, 0, 0)),
        ("a 4 GiB second HELLO", prefix(u32::MAX, 1, 0, 0)),
    ];
    for (what, bytes) in &cases {
        let h = rig.hostile();
        h.send(bytes);
        h.expect_closed(what);
        rig.flow(2);
    }
    // Before the handshake too.
    let mut w = rig.connect();
    write_hostile(&mut w, &prefix(u32::MAX, 1, 0, 0));
    w.expect_closed("a 4 GiB HELLO");
    let s = std::fs::read_to_string("/proc/self/status").unwrap();
    let peak_kib = if peak_reset { status_field(&s, "VmHWM:") } else { status_field(&s, "VmRSS:") };
    let grew = peak_kib.saturating_sub(rig.base.rss_kib) * 1024;
    eprintln!("  oversized frames: peak resident memory {:.1} MiB over the baseline (peak reset: {peak_reset})", mib(grew));
    assert!(grew < (MAX_MESSAGE / 4) as u64, "resident memory grew {:.1} MiB: a claimed size was allocated", mib(grew));
    expect_log(rig.mark, &[&format!("link to SP {} lost: malformed frame", rig.h_id)]);
    expect_log(rig.mark, &["refused an incoming connection"]);
    rig.finish();
}
over_unix_and_tcp!(oversized_frames, super::WATCHDOG);

/// Unknown frame kinds, non-zero flags and reserved bits, and MESSAGEs with
/// impossible fields: each ends H's link with a reason, and delivers nothing.
fn malformed_fields(t: Transport) {
    let rig = Rig::new(t);
    let mut cases: Vec<(String, Vec<u8>)> = Vec::new();
    for kind in [0u8, 5, 6, 99, 128, 255] {
        cases.push((format!("kind {kind}"), prefix(0, kind, 0, 0)));
        let mut with_body = prefix(16, kind, 0, 0);
        with_body.extend_from_slice(&[0u8; 16]);
        cases.push((format!("kind {kind} with a body"), with_body));
    }
    for (flags, reserved) in [(1u8, 0u16), (0x80, 0), (0, 1), (0, 0x8000)] {
        cases.push((format!("a HEARTBEAT with flags {flags:#x} reserved {reserved:#x}"), prefix(0, 4, flags, reserved)));
        let mut m = message_frame(10, b"Sink", b"x", frame::MODE_SYNC);
        m[5] = flags;
        m[6..8].copy_from_slice(&reserved.to_le_bytes());
        cases.push((format!("a MESSAGE with flags {flags:#x} reserved {reserved:#x}"), m));
    }
    let fixed = PREFIX_LEN; // the body's offset in a frame
    let mut m = message_frame(11, b"Sink", b"x", frame::MODE_SYNC);
    m[fixed + 22] = 2;
    cases.push(("a MESSAGE of mode 2".into(), m));
    let mut m = message_frame(12, b"Sink", b"x", frame::MODE_SYNC);
    m[fixed + 23] = 1;
    cases.push(("a MESSAGE with its reserved byte set".into(), m));
    let mut m = message_frame(13, b"Sink", b"xxxxx", frame::MODE_SYNC);
    m[fixed + 20..fixed + 22].copy_from_slice(&0u16.to_le_bytes());
    cases.push(("a MESSAGE with an empty name".into(), m));
    let mut m = message_frame(14, b"Sink", &[0u8; 400], frame::MODE_SYNC);
    m[fixed + 20..fixed + 22].copy_from_slice(&300u16.to_le_bytes());
    cases.push(("a MESSAGE with a 300-byte name".into(), m));
    let mut m = message_frame(15, b"Sink", b"", frame::MODE_SYNC);
    m[fixed + 20..fixed + 22].copy_from_slice(&200u16.to_le_bytes());
    cases.push(("a MESSAGE whose name runs past its body".into(), m));
    cases.push(("a MESSAGE whose name is not UTF-8".into(), message_frame(16, &[0xff, 0xfe, 0x80], b"x", frame::MODE_SYNC)));
    cases.push(("a MESSAGE with no room for its fixed part".into(), {
        let mut p = prefix(frame::MESSAGE_FIXED as u32, 2, 0, 0);
        p.extend_from_slice(&[0u8; frame::MESSAGE_FIXED]);
        p
    }));
    let mut c = confirm_frame(&[(1, Status::STATUS_SUCCESS)]);
    c[PREFIX_LEN..PREFIX_LEN + 4].copy_from_slice(&5u32.to_le_bytes());
    cases.push(("a CONFIRM whose count is not its length".into(), c));
    let mut c = confirm_frame(&[(1, Status::STATUS_SUCCESS)]);
    c[PREFIX_LEN..PREFIX_LEN + 4].copy_from_slice(&u32::MAX.to_le_bytes());
    cases.push(("a CONFIRM claiming 4 billion entries".into(), c));
    cases.push(("a CONFIRM of 15 bytes".into(), {
        let mut p = prefix(15, 3, 0, 0);
        p.extend_from_slice(&[0u8; 15]);
        p
    }));
    cases.push(("a CONFIRM of 0 entries".into(), {
        let mut p = prefix(4, 3, 0, 0);
        p.extend_from_slice(&[0u8; 4]);
        p
    }));
    for (what, bytes) in &cases {
        let h = rig.hostile();
        h.send(bytes);
        h.expect_closed(what);
        rig.flow(1);
    }
    assert_eq!(rig.x.session_info(rig.sink).unwrap().queued, 0, "a malformed MESSAGE was delivered");
    expect_log(rig.mark, &[&format!("link to SP {} lost: malformed frame", rig.h_id)]);
    rig.finish();
}
over_unix_and_tcp!(malformed_fields, super::WATCHDOG);

/// A second HELLO on a live link, as H again or claiming to be R: it ends
/// H's link, and R's link is untouched.
fn second_hello(t: Transport) {
    let rig = Rig::new(t);
    for claimed in [rig.h_id, rig.r_id, rig.x_id, SpId::b(rig.x_id.unit + 500)] {
        let mut h = rig.hostile();
        h.keep_alive();
        rig.probe_round_trip(&mut h);
        h.send(&hello_frame(claimed));
        h.expect_closed("a second HELLO");
        rig.flow(3);
    }
    expect_log(rig.mark, &[&format!("link to SP {} lost: malformed frame", rig.h_id)]);
    rig.finish();
}
over_unix_and_tcp!(second_hello, super::WATCHDOG);

/// H sends `bytes`, a CONFIRM that breaks the rule of PROTOCOL.md 5 (each
/// entry names the oldest message of the connection still awaiting
/// confirmation, with a status a receiver sends), and X must end H's link for
/// it: X closes the connection while H keeps sending heartbeats, well before
/// the dead-peer timeout (so no clock ended it: a message in flight would
/// end the link at that timeout anyway), and logs a line with `reason`.
fn confirm_ends_link(rig: &Rig, h: &mut Hostile, bytes: &[u8], what: &str, reason: &str) {
    let since = log_mark();
    let t0 = Instant::now();
    h.send(bytes);
    h.rd.expect_closed(what);
    let took = t0.elapsed();
    assert!(took < Duration::from_millis(DEAD_MS / 2), "{what}: X closed H's connection only after {took:?}: a clock ended the link, not the CONFIRM");
    // The line, or (tests run attacks back to back, and one site logs at
    // most 10 lines a second) the count of such lines in a summary.
    let lost = format!("link to SP {} lost: malformed frame: CONFIRM of message", rig.h_id);
    let deadline = Instant::now() + WAIT;
    let mut b = book();
    while !b.lines.iter().any(|(seq, l)| *seq >= since && ((l.contains(&lost) && l.contains(reason)) || suppressed_kind_of(l, &lost))) {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            drop(b);
            panic!("{what}: no log line with {lost:?} and {reason:?} within {WAIT:?}; the last lines:\n{}", recent_log(30));
        }
        b = BOOK_CV.wait_timeout(b, left).unwrap_or_else(|e| e.into_inner()).0;
    }
}

/// A CONFIRM frame's entries, made from the id of a message in flight.
type FromId = fn(u64) -> Vec<(u64, Status)>;
/// A CONFIRM frame's entries, made from the ids of messages confirmed.
type FromIds = fn(&[u64]) -> Vec<(u64, Status)>;

const NOTHING_AWAITS: &str = "but no message on this connection awaits one";
const NOT_THE_OLDEST: &str = "but the oldest unconfirmed message on this connection is";
const BAD_STATUS: &str = "which no receiver sends";

/// CONFIRMs for ids X never sent to H, or with a status no receiver sends:
/// each ends H's link (with its reason in the log) before it completes
/// anything, and a send X had in flight to H fails with
/// STATUS_CONNECTION_DISCONNECTED, never with the status H made up. Among
/// the ids, those X is using at that moment for its messages to R (H learns
/// where X's id counter is from a message X sends it): they must not
/// complete R's messages, which keep flowing.
fn confirms_for_ids_never_sent(t: Transport) {
    let rig = Rig::new(t);
    // Nothing in flight on H's connection: any confirmation is one too many.
    let mut nothing_sent: Vec<(String, Vec<u8>)> = [0, 1, 1 << 32, u64::MAX]
        .iter()
        .map(|&id| (format!("a CONFIRM of id {id}, nothing in flight"), confirm_frame(&[(id, Status::STATUS_SUCCESS)])))
        .collect();
    let full: Vec<(u64, Status)> = (1_000_000..1_004_096).map(|id| (id, Status::STATUS_OBJECT_NAME_NOT_FOUND)).collect();
    nothing_sent.push(("a full frame of 4096 ids, nothing in flight".into(), confirm_frame(&full)));
    for (what, bytes) in &nothing_sent {
        let mut h = rig.live_hostile();
        confirm_ends_link(&rig, &mut h, bytes, what, NOTHING_AWAITS);
        rig.flow(2);
    }

    // A message in flight to H, and a CONFIRM of another id: the ids X uses
    // for R right after it, an id far off, or the right id behind a wrong one
    // in the same frame.
    let wrong: [(&str, FromId); 4] = [
        ("the next id (X's next message to R)", |id| vec![(id + 1, Status::STATUS_SUCCESS)]),
        ("the ids X uses for R next", |id| (id + 1..id + 100).map(|i| (i, Status::STATUS_OBJECT_NAME_NOT_FOUND)).collect()),
        ("an id far off", |id| vec![(id ^ (1 << 40), Status::STATUS_SUCCESS)]),
        ("the right id behind a wrong one", |id| vec![(id + 7, Status::STATUS_SUCCESS), (id, Status::STATUS_SUCCESS)]),
    ];
    for (what, entries) in wrong {
        let mut h = rig.live_hostile();
        let (sender, m) = rig.probe_in_flight(&mut h);
        confirm_ends_link(&rig, &mut h, &confirm_frame(&entries(m.id)), what, NOT_THE_OLDEST);
        assert_eq!(sender.join().unwrap(), Err(Status::STATUS_CONNECTION_DISCONNECTED), "X's send to H when H confirmed {what}");
        // R's messages, whose ids H guessed, are untouched.
        rig.flow(3);
    }

    // The right id, with a status the protocol does not allow.
    for bad in [Status::STATUS_PENDING, Status(0x1234_5678), Status::STATUS_CONNECTION_DISCONNECTED, Status::STATUS_TIMEOUT] {
        let mut h = rig.live_hostile();
        let (sender, m) = rig.probe_in_flight(&mut h);
        confirm_ends_link(&rig, &mut h, &confirm_frame(&[(m.id, bad)]), &format!("a CONFIRM with {bad:?}"), BAD_STATUS);
        assert_eq!(sender.join().unwrap(), Err(Status::STATUS_CONNECTION_DISCONNECTED), "X's send to H, confirmed with {bad:?}");
        rig.flow(2);
    }
    assert_eq!(rig.x.session_info(rig.probe).unwrap().sends, 0);
    rig.finish();
}
over_unix_and_tcp!(confirms_for_ids_never_sent, super::WATCHDOG);

/// CONFIRMs repeated for ids already confirmed: in a later frame, within one
/// frame, or on the connection that replaced the one the message went out
/// on. Each ends H's link with a reason; each send completes exactly once
/// (a send confirmed twice in one frame fails with
/// STATUS_CONNECTION_DISCONNECTED: the frame is refused whole, before it
/// completes anything).
fn confirms_repeated(t: Transport) {
    let rig = Rig::new(t);
    let (cb, events) = common::channel_callback();
    let s = rig.x.open(Some(cb), 0, 0, "Twice", 0).unwrap();
    let sent = |h: &mut Hostile, tag: u32| -> Sent {
        rig.x.send_async(s, rig.h_id, MessageBuf::from_slice(&tag.to_le_bytes()).unwrap(), 4, tag, 0).unwrap();
        let m = h.next_message();
        assert_eq!(m.name, "Twice");
        m
    };
    let completed = |tag: u32, status: Status| match common::next(&events) {
        Event::MessageSent { status: got, tag: t, .. } => assert_eq!((t, got), (tag, status), "the completion of send {tag}"),
        e => panic!("unexpected {e:?}"),
    };
    // A fresh H, and one send confirmed on it.
    let confirmed_once = |tag: u32| -> (Hostile, Sent) {
        let mut h = rig.live_hostile();
        let m = sent(&mut h, tag);
        h.send(&confirm_frame(&[(m.id, Status::STATUS_SUCCESS)]));
        completed(tag, Status::STATUS_SUCCESS);
        (h, m)
    };
    const N: u32 = 10;

    // Confirmed, then confirmed again in a later frame: with another status,
    // with the same, or all of them at once.
    let again: [(&str, FromIds); 3] = [
        ("the first again, failed", |ids| vec![(ids[0], Status::STATUS_OBJECT_NAME_NOT_FOUND)]),
        ("the last again, the same", |ids| vec![(ids[ids.len() - 1], Status::STATUS_SUCCESS)]),
        ("all of them again", |ids| ids.iter().map(|&id| (id, Status::STATUS_INSUFFICIENT_RESOURCES)).collect()),
    ];
    for (what, repeat) in again {
        let mut h = rig.live_hostile();
        let mut ids = Vec::new();
        for tag in 0..N {
            let m = sent(&mut h, tag);
            h.send(&confirm_frame(&[(m.id, Status::STATUS_SUCCESS)]));
            ids.push(m.id);
        }
        for tag in 0..N {
            completed(tag, Status::STATUS_SUCCESS);
        }
        confirm_ends_link(&rig, &mut h, &confirm_frame(&repeat(&ids)), what, NOTHING_AWAITS);
        rig.flow(2);
    }

    // Confirmed twice within one frame, success first: the frame is refused
    // whole; the send fails, once. Asynchronous, then synchronous.
    let mut h = rig.live_hostile();
    let m = sent(&mut h, 50);
    let twice = confirm_frame(&[(m.id, Status::STATUS_SUCCESS), (m.id, Status::STATUS_OBJECT_NAME_NOT_FOUND)]);
    confirm_ends_link(&rig, &mut h, &twice, "an asynchronous send confirmed twice in one frame", NOTHING_AWAITS);
    completed(50, Status::STATUS_CONNECTION_DISCONNECTED);
    let mut h = rig.live_hostile();
    let (sender, m) = rig.probe_in_flight(&mut h);
    let thrice = confirm_frame(&[(m.id, Status::STATUS_SUCCESS), (m.id, Status::STATUS_PIPE_CLOSING), (m.id, Status::STATUS_SUCCESS)]);
    confirm_ends_link(&rig, &mut h, &thrice, "a synchronous send confirmed three times in one frame", NOTHING_AWAITS);
    assert_eq!(sender.join().unwrap(), Err(Status::STATUS_CONNECTION_DISCONNECTED), "a synchronous send confirmed three times in one frame");
    rig.flow(2);

    // Confirmed on one connection, then again on the one that replaced it.
    let (old, m) = confirmed_once(60);
    drop(old);
    let mut new = rig.live_hostile();
    confirm_ends_link(&rig, &mut new, &confirm_frame(&[(m.id, Status::STATUS_SUCCESS)]), "a CONFIRM of what the replaced connection carried", NOTHING_AWAITS);
    drop(new);
    rig.flow(2);

    // Every send completed exactly once: a marker on a well-behaved
    // connection is the next (and last) completion.
    drop(confirmed_once(99));
    assert!(events.try_recv().is_err(), "a send completed twice");
    assert_eq!(rig.x.session_info(s).unwrap().sends, 0);
    rig.finish();
}
over_unix_and_tcp!(confirms_repeated, super::WATCHDOG);

/// How long the flood lasts at most.
const FLOOD_FOR: Duration = Duration::from_secs(20);
/// The flood stops (and the test fails) once resident memory has grown this much.
const FLOOD_CAP: u64 = 512 << 20;
/// What the process may gain in resident memory over the whole flood: X's
/// bounded outbound queue for H, its "Sink" session (QUEUE_DEPTH empty
/// messages), the test's log book. Without a bound on the outbound queue,
/// the CONFIRMs X owes grow without end (defect 1: 2 GB in 30 s).
const FLOOD_RSS_BOUND: u64 = 64 << 20;

/// H streams MESSAGE frames (empty, asynchronous, for X's open "Sink"
/// mailbox) and never reads its socket, so X's CONFIRMs pile up. X's memory
/// must stay bounded (back-pressure: it stops reading H), its real peer must
/// be served throughout, and X must end H's link with a reason once H has not
/// drained its confirmations for long (H keeps sending heartbeats after the
/// flood: it is alive, just not reading).
fn flood_of_unread_confirms(t: Transport) {
    let rig = Rig::new(t);
    let h = rig.hostile();
    let base = rig.base;
    let wr = h.wr.clone();
    wr.lock().unwrap().set_write_timeout(Duration::from_millis(100));
    let stop_flood = Arc::new(AtomicBool::new(false));
    let stop_all = Arc::new(AtomicBool::new(false));
    let frames = Arc::new(AtomicU64::new(0));
    let closed_by_x = Arc::new(AtomicBool::new(false));
    let (sf, sa, fr, cx) = (stop_flood.clone(), stop_all.clone(), frames.clone(), closed_by_x.clone());
    let flooder = thread::spawn(move || {
        let mut w = wr.lock().unwrap();
        let mut id = 1u64;
        let mut head = [0u8; MAX_MESSAGE_HEAD];
        // Writes `f` whole (a frame cut by a write timeout is finished, never
        // abandoned), giving up when told to stop or when X has closed.
        let put = |w: &mut Wire, f: &[u8], stop: &AtomicBool| -> bool {
            let mut rest = f;
            while !rest.is_empty() {
                match w.write(rest) {
                    Ok(n) => rest = &rest[n..],
                    Err(e) if matches!(e.kind(), io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut | io::ErrorKind::Interrupted) => {
                        if stop.load(Ordering::Acquire) && rest.len() == f.len() {
                            return true;
                        }
                    }
                    Err(_) => {
                        cx.store(true, Ordering::Release);
                        return false;
                    }
                }
            }
            true
        };
        // One frame per write, as the defect was measured.
        while !sf.load(Ordering::Acquire) {
            let h = MessageHead { id, conduit: 0, domain: 0, tag: 0, mode: frame::MODE_ASYNC };
            let n = frame::encode_message_head(&mut head, &h, b"Sink", 0);
            if !put(&mut w, &head[..n], &sf) {
                return;
            }
            id += 1;
            fr.fetch_add(1, Ordering::Relaxed);
        }
        // Alive, not reading: heartbeats at the configured pace.
        while !sa.load(Ordering::Acquire) {
            if !put(&mut w, &frame::heartbeat(), &sa) {
                return;
            }
            thread::sleep(Duration::from_millis(HB_MS));
        }
    });
    let t0 = Instant::now();
    let mut peak = base;
    let mut round_trips = 0u32;
    let why_stopped = loop {
        // The real peer is served during the flood.
        rig.flow(2);
        round_trips += 2;
        peak = peak.max(usage());
        if peak.rss_over(&base) > FLOOD_CAP {
            break format!("resident memory grew past {:.0} MiB", mib(FLOOD_CAP));
        }
        if closed_by_x.load(Ordering::Acquire) {
            break "X ended H's link".to_string();
        }
        if t0.elapsed() >= FLOOD_FOR {
            break format!("{FLOOD_FOR:?} passed");
        }
    };
    stop_flood.store(true, Ordering::Release);
    let flood_time = t0.elapsed();
    let sent = frames.load(Ordering::Relaxed);
    eprintln!(
        "  flood over {t:?}: {sent} MESSAGE frames in {flood_time:.1?} ({why_stopped}); resident memory {:.1} MiB -> peak {:.1} MiB (+{:.1} MiB); threads {} -> peak {}; {round_trips} round trips X <-> R meanwhile",
        base.rss_kib as f64 / 1024.0,
        peak.rss_kib as f64 / 1024.0,
        mib(peak.rss_over(&base)),
        base.threads,
        peak.threads
    );
    let lost = format!("link to SP {} lost", rig.h_id);
    let ended = if peak.rss_over(&base) <= FLOOD_RSS_BOUND {
        // H keeps sending heartbeats but never reads: X must end the link.
        Some(expect_log(rig.mark, &[&lost]))
    } else {
        None
    };
    stop_all.store(true, Ordering::Release);
    drop(h);
    flooder.join().unwrap();
    assert!(
        peak.rss_over(&base) <= FLOOD_RSS_BOUND,
        "resident memory grew {:.1} MiB (bound {:.0} MiB) while a peer sent {sent} messages and never read their confirmations",
        mib(peak.rss_over(&base)),
        mib(FLOOD_RSS_BOUND)
    );
    eprintln!("  X ended the link: {}", ended.unwrap_or_default());
    assert!(peak.threads <= base.threads + THREAD_SLACK, "threads {} -> {}", base.threads, peak.threads);
    rig.finish();
}
over_unix_and_tcp!(
    flood_of_unread_confirms,
    super::WATCHDOG_LONG
);

/// Connections the thousand-connection test opens.
const SILENT: usize = 1000;
/// Descriptors X may hold for those connections, all together: a bounded
/// set awaiting their HELLO, not two per connection. X's listener holds at
/// most 64 of them, one descriptor each (docs/DESIGN.md, Incoming
/// connections); the peak is taken across R's restart too, whose new link
/// (a socket and an eventfd at each end, R's stop signal) counts: 16 more.
const SILENT_FD_BOUND: usize = 64 + 16;

/// Raises this process's soft limit on descriptors to `want` (at most the
/// hard limit); returns the limit in force.
fn raise_nofile(want: libc::rlim_t) -> libc::rlim_t {
    let mut lim = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
    // SAFETY: getrlimit writes one rlimit into the live, properly aligned `lim`.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) } != 0 {
        return 1024;
    }
    if lim.rlim_cur < want {
        let raised = libc::rlimit { rlim_cur: want.min(lim.rlim_max), rlim_max: lim.rlim_max };
        // SAFETY: setrlimit reads one rlimit from the live `raised`; only the
        // soft limit changes, within the hard one, for this test process.
        if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &raised) } == 0 {
            lim = raised;
        }
    }
    lim.rlim_cur
}

/// A connection that says nothing, made without blocking: a listener that
/// stops accepting (its backlog full) refuses it instead of hanging the test.
fn silent_connect(addr: &Address) -> io::Result<Wire> {
    match addr {
        Address::Tcp(a) => {
            let sa = a.parse().expect("X listens on an IP address");
            TcpStream::connect_timeout(&sa, Duration::from_millis(500)).map(Wire::Tcp)
        }
        Address::Unix(p) => {
            use std::os::fd::FromRawFd;
            use std::os::unix::ffi::OsStrExt;
            let path = p.as_os_str().as_bytes();
            let mut sun = libc::sockaddr_un { sun_family: libc::AF_UNIX as libc::sa_family_t, sun_path: [0; 108] };
            assert!(path.len() < sun.sun_path.len());
            for (d, s) in sun.sun_path.iter_mut().zip(path) {
                *d = *s as libc::c_char;
            }
            // SAFETY: socket takes no pointers; the result is checked.
            let fd = unsafe { libc::socket(libc::AF_UNIX, libc::SOCK_STREAM | libc::SOCK_NONBLOCK | libc::SOCK_CLOEXEC, 0) };
            if fd < 0 {
                return Err(io::Error::last_os_error());
            }
            // SAFETY: `fd` is a socket this function just created and owns.
            let owned = unsafe { std::os::fd::OwnedFd::from_raw_fd(fd) };
            let len = std::mem::size_of::<libc::sockaddr_un>() as libc::socklen_t;
            // SAFETY: `sun` is a live, initialized sockaddr_un of `len` bytes;
            // a non-blocking Unix connect completes or fails (EAGAIN when the
            // backlog is full) at once.
            let r = unsafe { libc::connect(fd, &sun as *const libc::sockaddr_un as *const libc::sockaddr, len) };
            if r != 0 {
                return Err(io::Error::last_os_error());
            }
            Ok(Wire::Unix(UnixStream::from(owned)))
        }
        Address::Inproc(_) => unreachable!(),
    }
}

/// A thousand connections to X's listener that never say HELLO, held open.
/// X must hold them (or refuse them) without a thread each and with a
/// bounded number of descriptors; while they are held, X serves R, and R,
/// restarted, gets its link back at once: strangers never starve a
/// configured peer. X logs why it drops them.
fn thousand_silent_connections(t: Transport) {
    let mut rig = Rig::new(t);
    let base = rig.base;
    // Ours, X's two each as of today, and room: the test must be able to
    // measure the defect without running out of descriptors itself.
    let limit = raise_nofile((base.fds + 4 * SILENT + 512) as libc::rlim_t);
    let n = SILENT.min((limit as usize).saturating_sub(base.fds + 512) / 3);
    let mut held = Vec::with_capacity(n);
    let mut refused = Vec::new();
    let mut peak = base;
    let t0 = Instant::now();
    while held.len() < n && refused.len() < 20 {
        match silent_connect(&rig.x_addr) {
            Ok(w) => held.push(w),
            Err(e) => refused.push(e.to_string()),
        }
        if held.len() % 50 == 0 {
            peak = peak.max(usage());
        }
    }
    let connect_time = t0.elapsed();
    peak = peak.max(usage());
    // While they are held, the real peer is served, and can come back.
    rig.flow(20);
    peak = peak.max(usage());
    rig.restart_r();
    peak = peak.max(usage());
    rig.flow(20);
    peak = peak.max(usage());
    let x_fds = peak.fds.saturating_sub(base.fds + held.len());
    eprintln!(
        "  {} silent connections over {t:?} in {connect_time:.1?} (descriptor limit {limit}, {} refused{}); threads {} -> peak {}; descriptors {} -> peak {} ({} of them X's); resident memory +{:.1} MiB",
        held.len(),
        refused.len(),
        refused.first().map(|e| format!(": {e}")).unwrap_or_default(),
        base.threads,
        peak.threads,
        base.fds,
        peak.fds,
        x_fds,
        mib(peak.rss_over(&base))
    );
    assert!(held.len() >= n / 2, "only {} of {n} connections were made: {refused:?}", held.len());
    assert!(
        peak.threads <= base.threads + THREAD_SLACK,
        "{} connections that never said HELLO took X from {} to {} threads",
        held.len(),
        base.threads,
        peak.threads
    );
    assert!(x_fds <= SILENT_FD_BOUND, "{} silent connections held {x_fds} of X's descriptors (bound {SILENT_FD_BOUND})", held.len());
    expect_log(rig.mark, &["HELLO", "handshake"]);
    drop(held);
    let deadline = Instant::now() + WAIT;
    while usage().fds > base.fds + 16 {
        assert!(Instant::now() < deadline, "X's descriptors did not come back: {} (baseline {})", usage().fds, base.fds);
        thread::yield_now();
    }
    rig.finish();
}
over_unix_and_tcp!(thousand_silent_connections, super::WATCHDOG_LONG);
