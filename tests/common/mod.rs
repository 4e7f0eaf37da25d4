#![allow(dead_code)]
//! Shared helpers for the Rust integration tests: unique addresses and SP pairs.

pub mod proxy;

use mps::{Callback, Config, Event, MessageBuf, Mps, ReceivedMessage, SessionId, SpId, Status, Timeout};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::time::Duration;

static NEXT: AtomicU32 = AtomicU32::new(0);

/// A NUL-terminated UTF-16 string for the C API's `PWCHAR` arguments.
pub fn wide(s: &str) -> Vec<mps::ffi::WCHAR> {
    s.chars().map(|c| c as mps::ffi::WCHAR).chain([0]).collect()
}

/// A name no other test in this process uses.
pub fn unique(prefix: &str) -> String {
    format!("{prefix}-{}-{}", std::process::id(), NEXT.fetch_add(1, Ordering::Relaxed))
}

/// Configuration text for `me` with one peer `other`.
pub fn config(me: &str, listen: &str, other: &str, other_addr: &str, extra: &str) -> Config {
    config_hb(me, listen, other, other_addr, extra, 50)
}

/// The same, with a heartbeat interval of `hb_ms` (the dead-peer timeout 10x
/// it, and at least 2 s).
pub fn config_hb(me: &str, listen: &str, other: &str, other_addr: &str, extra: &str, hb_ms: u64) -> Config {
    let dead = (hb_ms * 10).max(2000);
    let text = format!(
        "sp = \"{me}\"\nlisten = \"{listen}\"\n{extra}\n[[peer]]\nsp = \"{other}\"\naddress = \"{other_addr}\"\n\
         [heartbeat]\ninterval_ms = {hb_ms}\ndead_peer_timeout_ms = {dead}\n[reconnect]\ninitial_backoff_ms = 5\nmax_backoff_ms = 100\n"
    );
    Config::from_toml(&text, "test").expect("test configuration is valid")
}

/// Two in-process SPs whose links wake by themselves only every `hb_ms`:
/// for tests that something else wakes a reader sooner.
pub fn inproc_pair_hb(hb_ms: u64) -> (Mps, Mps) {
    let a = unique("a");
    let b = unique("b");
    let ma = Mps::start(config_hb("0.A", &format!("inproc:{a}"), "0.B", &format!("inproc:{b}"), "", hb_ms)).unwrap();
    let mb = Mps::start(config_hb("0.B", &format!("inproc:{b}"), "0.A", &format!("inproc:{a}"), "", hb_ms)).unwrap();
    ma.wait_for_peer(SpId::b(0), Some(Duration::from_secs(30))).expect("link up");
    mb.wait_for_peer(SpId::a(0), Some(Duration::from_secs(30))).expect("link up");
    (ma, mb)
}

/// Two SPs (0.A and 0.B) of one process linked in-process.
pub fn inproc_pair(limits: &str) -> (Mps, Mps) {
    let a = unique("a");
    let b = unique("b");
    let ma = Mps::start(config("0.A", &format!("inproc:{a}"), "0.B", &format!("inproc:{b}"), limits)).unwrap();
    let mb = Mps::start(config("0.B", &format!("inproc:{b}"), "0.A", &format!("inproc:{a}"), limits)).unwrap();
    ma.wait_for_peer(SpId::b(0), Some(Duration::from_secs(30))).expect("link up");
    mb.wait_for_peer(SpId::a(0), Some(Duration::from_secs(30))).expect("link up");
    (ma, mb)
}

/// A temporary directory removed on drop. Mode 0700 whatever the umask, as
/// the directory of a listening socket must be (closed to group and others:
/// libmps refuses to listen in any other).
pub struct TempDir(pub std::path::PathBuf);
impl TempDir {
    pub fn new() -> TempDir {
        use std::os::unix::fs::DirBuilderExt;
        let d = std::env::temp_dir().join(unique("mps-test"));
        std::fs::DirBuilder::new().recursive(true).mode(0o700).create(&d).unwrap();
        TempDir(d)
    }
}
impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A callback that forwards every event to a channel.
pub fn channel_callback() -> (Callback, mpsc::Receiver<Event>) {
    let (tx, rx) = mpsc::channel();
    let tx = Mutex::new(tx);
    (
        Arc::new(move |ev| {
            let _ = tx.lock().unwrap().send(ev);
        }),
        rx,
    )
}

/// Waits for the next event (failing the test after a generous bound).
pub fn next(rx: &mpsc::Receiver<Event>) -> Event {
    rx.recv_timeout(Duration::from_secs(30)).expect("an event within 30 s")
}

/// Opens `name` on both SPs of a pair and sends one message from `ma`'s
/// session to `mb`'s, received there, so that `mb`'s session knows which
/// link to read. Returns the two sessions.
pub fn linked_sessions(ma: &Mps, mb: &Mps, name: &str) -> (SessionId, SessionId) {
    let sa = ma.open(None, 0, 0, name, 0).unwrap();
    let sb = mb.open(None, 0, 0, name, 0).unwrap();
    ma.send_sync(sa, mb.local_sp(), &MessageBuf::from_slice(b"first").unwrap(), 5, 1).unwrap();
    assert_eq!(mb.receive(sb, Timeout::Forever, 0).unwrap().data, b"first");
    (sa, sb)
}

/// A thread blocked (or about to block) in `receive(s, Forever)`; returns
/// once the thread has started.
pub fn receive_in_thread(m: &Mps, s: SessionId) -> std::thread::JoinHandle<Result<ReceivedMessage, Status>> {
    let (started_tx, started) = mpsc::channel();
    let m = m.clone();
    let t = std::thread::spawn(move || {
        started_tx.send(()).unwrap();
        m.receive(s, Timeout::Forever, 0)
    });
    started.recv().unwrap();
    t
}

/// A peer played by the test over a raw Unix-domain socket, speaking the wire
/// protocol itself (docs/PROTOCOL.md): for defects only a misbehaving peer shows.
pub struct RawPeer {
    pub s: std::os::unix::net::UnixStream,
    pub me: SpId,
}

impl RawPeer {
    /// Answers the HELLO of an SP that dialed `listener`, as SP `me`.
    pub fn accept(listener: &std::os::unix::net::UnixListener, me: SpId) -> RawPeer {
        use std::io::{Read, Write};
        let (mut s, _) = listener.accept().unwrap();
        s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
        let mut hello = [0u8; 40];
        s.read_exact(&mut hello).unwrap();
        let h = mps::cmi::frame::Hello::decode(&hello[8..]).unwrap();
        // A raw peer speaks version 1 (no sequence numbers, no RESUME).
        s.write_all(&mps::cmi::frame::Hello { sp: me, version_min: 1, version_max: 1, ..h }.encode()).unwrap();
        RawPeer { s, me }
    }

    /// Dials an SP at `path` and says HELLO as SP `me`; reads its HELLO.
    pub fn dial(path: &std::path::Path, me: SpId) -> RawPeer {
        use std::io::{Read, Write};
        let mut s = std::os::unix::net::UnixStream::connect(path).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
        let hello = mps::cmi::frame::Hello {
            version_min: 1,
            version_max: 1,
            sp: me,
            max_message: 1 << 20,
            heartbeat_ms: 50,
            dead_timeout_ms: 2000,
        };
        s.write_all(&hello.encode()).unwrap();
        let mut theirs = [0u8; 40];
        s.read_exact(&mut theirs).unwrap();
        mps::cmi::frame::Hello::decode(&theirs[8..]).unwrap();
        RawPeer { s, me }
    }

    /// The next frame: (kind byte, body). Fails the test after 30 s.
    pub fn read_frame(&mut self) -> (u8, Vec<u8>) {
        use std::io::Read;
        let mut p = [0u8; 8];
        self.s.read_exact(&mut p).expect("a frame within 30 s");
        let len = u32::from_le_bytes(p[..4].try_into().unwrap()) as usize;
        let mut body = vec![0u8; len];
        self.s.read_exact(&mut body).unwrap();
        (p[4], body)
    }

    /// The next MESSAGE frame's id, skipping heartbeats.
    pub fn read_message_id(&mut self) -> u64 {
        loop {
            let (kind, body) = self.read_frame();
            match kind {
                4 => continue,
                2 => return u64::from_le_bytes(body[..8].try_into().unwrap()),
                k => panic!("expected a MESSAGE, got kind {k}"),
            }
        }
    }

    /// Writes a CONFIRM frame with these entries.
    pub fn confirm(&mut self, entries: &[(u64, Status)]) -> std::io::Result<()> {
        use std::io::Write;
        let mut f = Vec::new();
        mps::cmi::frame::encode_confirms(&mut f, entries);
        self.s.write_all(&f)
    }

    /// A whole MESSAGE frame for `mailbox` on conduit 0, domain 0.
    pub fn message_frame(id: u64, mailbox: &str, payload: &[u8]) -> Vec<u8> {
        let h = mps::cmi::frame::MessageHead { id, conduit: 0, domain: 0, tag: 0, mode: mps::cmi::frame::MODE_ASYNC };
        let mut f = vec![0u8; mps::cmi::frame::MAX_MESSAGE_HEAD];
        let n = mps::cmi::frame::encode_message_head(&mut f, &h, mailbox.as_bytes(), payload.len() as u32);
        f.truncate(n);
        f.extend_from_slice(payload);
        f
    }
}

/// SP `me` with one peer `peer` at the Unix socket `peer_path`, listening on
/// `listen_path` (or not at all); `extra` is appended to the file.
pub fn sp_with_peer_at(me: &str, listen_path: Option<&std::path::Path>, peer: &str, peer_path: &std::path::Path, extra: &str) -> Mps {
    let listen = listen_path.map(|p| format!("listen = \"unix:{}\"\n", p.display())).unwrap_or_default();
    let text = format!("sp = \"{me}\"\n{listen}[[peer]]\nsp = \"{peer}\"\naddress = \"unix:{}\"\n{extra}", peer_path.display());
    Mps::start(Config::from_toml(&text, "test").expect("test configuration is valid")).unwrap()
}

/// SP 0.A (which dials) whose peer 0.B is a Unix listener, in a new
/// directory, that the test plays itself (`RawPeer::accept`); `extra` is
/// appended to 0.A's configuration.
pub fn sp_a_with_listener(extra: &str) -> (TempDir, std::os::unix::net::UnixListener, Mps) {
    let dir = TempDir::new();
    let pb = dir.0.join("b.sock");
    let listener = std::os::unix::net::UnixListener::bind(&pb).unwrap();
    let ma = sp_with_peer_at("0.A", None, "0.B", &pb, extra);
    (dir, listener, ma)
}

/// Runs `f` on a thread and fails the test if it has not returned within `limit`.
pub fn within<T: Send + 'static>(limit: Duration, what: &str, f: impl FnOnce() -> T + Send + 'static) -> T {
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(f());
    });
    rx.recv_timeout(limit).unwrap_or_else(|_| panic!("{what}: still not done after {limit:?} (hung)"))
}

/// Waits until `cond()` holds, failing the test (naming `what`) after 30 s.
pub fn wait_until(what: &str, cond: impl Fn() -> bool) {
    let t0 = std::time::Instant::now();
    while !cond() {
        assert!(t0.elapsed() < Duration::from_secs(30), "{what}: not within 30 s");
        std::thread::yield_now();
    }
}

/// Waits until `n` threads are inside `receive` on session `s` (registered
/// as waiters: a close from now on finds them).
pub fn wait_for_receivers(m: &Mps, s: SessionId, n: usize) {
    wait_until(&format!("{n} receiver(s) registered on the session"), || m.session_info(s).map(|i| i.receivers) == Ok(n));
}

/// The kernel's id of the calling thread (for `wait_until_polling`).
pub fn current_tid() -> u32 {
    // "/proc/thread-self" links to "<pid>/task/<tid>".
    let p = std::fs::read_link("/proc/thread-self").expect("/proc/thread-self");
    p.file_name().and_then(|f| f.to_str()).and_then(|f| f.parse().ok()).expect("a thread id")
}

/// The system call thread `tid` of this process is blocked in, with its
/// first two arguments (`/proc/self/task/<tid>/syscall`); `None` while it runs.
pub fn blocked_syscall(tid: u32) -> Option<(i64, u64, u64)> {
    let s = std::fs::read_to_string(format!("/proc/self/task/{tid}/syscall")).ok()?;
    let mut f = s.split_whitespace();
    let nr: i64 = f.next()?.parse().ok()?;
    let arg = |a: Option<&str>| a.and_then(|a| u64::from_str_radix(a.trim_start_matches("0x"), 16).ok());
    Some((nr, arg(f.next())?, arg(f.next())?))
}

fn is_poll(nr: i64) -> bool {
    #[cfg(any(target_arch = "x86_64", target_arch = "x86"))]
    if nr == libc::SYS_poll {
        return true;
    }
    nr == libc::SYS_ppoll
}

/// Waits until thread `tid` is blocked in `poll` on `nfds` descriptors:
/// that is a link's reader waiting for the socket's next bytes (2: the
/// socket and the interrupt, an interruptible reader such as a receive; 1:
/// the socket alone, a synchronous send's read). A thread that waits for
/// the read role, or for another reader to complete it, waits on a futex
/// instead, so this proves the thread reads the link itself. Unix-domain
/// and TCP links only (an in-process link's reader waits on a futex too).
pub fn wait_until_polling(tid: u32, nfds: u64) {
    wait_until(&format!("thread {tid} blocked reading a link (poll on {nfds} descriptor(s))"), || {
        matches!(blocked_syscall(tid), Some((nr, _, n)) if is_poll(nr) && n == nfds)
    });
}

/// Like `receive_in_thread`, and also returns the thread's kernel id.
pub fn receive_in_thread_tid(m: &Mps, s: SessionId) -> (std::thread::JoinHandle<Result<ReceivedMessage, Status>>, u32) {
    let (started_tx, started) = mpsc::channel();
    let m = m.clone();
    let t = std::thread::spawn(move || {
        started_tx.send(current_tid()).unwrap();
        m.receive(s, Timeout::Forever, 0)
    });
    let tid = started.recv().unwrap();
    (t, tid)
}

/// Two SPs (0.A and 0.B) linked over Unix-domain sockets in `dir`, heartbeats
/// every `hb_ms` (for tests that need a real socket under the link).
pub fn unix_pair_hb(dir: &TempDir, hb_ms: u64) -> (Mps, Mps) {
    let (ua, ub) = (format!("unix:{}", dir.0.join("a.sock").display()), format!("unix:{}", dir.0.join("b.sock").display()));
    let mb = Mps::start(config_hb("0.B", &ub, "0.A", &ua, "", hb_ms)).unwrap();
    let ma = Mps::start(config_hb("0.A", &ua, "0.B", &ub, "", hb_ms)).unwrap();
    ma.wait_for_peer(SpId::b(0), Some(Duration::from_secs(30))).expect("link up");
    mb.wait_for_peer(SpId::a(0), Some(Duration::from_secs(30))).expect("link up");
    (ma, mb)
}
