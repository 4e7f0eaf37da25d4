//! Issue 9's rolling upgrade: an SP of this tree still links with an SP of
//! the version-1 release (the commit in compat/V1_COMMIT) and then behaves as
//! before, whichever of the two dials.
//!
//! `scripts/build-v1-peer --current` builds the version-1 library from git
//! and links compat/peer.c (an echo peer, C, using only the API that
//! include/mps.h had in version 1) against it, and the same peer against this
//! tree's library. Each scenario runs one peer as a child process for one SP
//! of unit 0 and this tree's library in the test process for the other:
//! 1,000 synchronous sends of varied sizes whose echoes come back (sent by the
//! peer synchronously) and are checked byte for byte, then 100 asynchronous
//! sends, each confirmed and echoed. Both sides' logs must say which protocol
//! version the link agreed: with the version-1 peer, the newest both speak
//! (version 1); with the peer of this tree, this tree's newest
//! (`frame::VERSION_MAX`), so the test keeps meaning something once version 2
//! exists. Over Unix-domain sockets and TCP, with this tree as 0.A (the lower
//! id dials) and as 0.B.
//!
//! The log's routine is process-wide: one scenario runs at a time, and each
//! reads the lines logged since it started.

mod common;

use common::{channel_callback, TempDir};
use mps::cmi::frame;
use mps::log::{self, Level};
use mps::{Config, Event, MessageBuf, Mps, SpId, Status, Timeout};
use std::collections::HashMap;
use std::io::{BufRead, BufReader, Read};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// The bound on one wait: a line from the peer, an event, the peer's exit.
const WAIT: Duration = Duration::from_secs(30);
/// The bound on one whole scenario.
const SCENARIO_LIMIT: Duration = Duration::from_secs(300);
/// The bound on the build (a fresh clone downloads the crates and builds two
/// libraries: about 2 minutes on 2 cores).
const BUILD_LIMIT_S: u32 = 1800;
/// Synchronous round trips per scenario.
const SYNC_SENDS: u32 = 1000;
/// Asynchronous sends per scenario, after the synchronous ones.
const ASYNC_SENDS: u32 = 100;
/// Sizes the messages cycle through (a 1 MiB one every 250th message).
const SIZES: [usize; 8] = [0, 1, 7, 64, 1000, 4096, 65_539, 300];

fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

// ---------------------------------------------------------------------------
// The build.

/// The two builds of the peer.
struct Peers {
    v1: PathBuf,
    current: PathBuf,
    /// The newest protocol version the version-1 tree speaks, from its source.
    v1_version_max: u16,
}

/// Whether `cmd --version` runs.
fn tool_runs(cmd: &std::ffi::OsStr) -> bool {
    Command::new(cmd).arg("--version").stdout(Stdio::null()).stderr(Stdio::null()).status().is_ok_and(|s| s.success())
}

/// Runs scripts/build-v1-peer once for this test binary. `None` when a tool it
/// needs is missing (outside CI only: there, that fails the test).
fn peers() -> Option<&'static Peers> {
    static BUILT: OnceLock<Result<Option<Peers>, String>> = OnceLock::new();
    match BUILT.get_or_init(build) {
        Ok(p) => p.as_ref(),
        Err(e) => panic!("{e}"),
    }
}

fn build() -> Result<Option<Peers>, String> {
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| env!("CARGO").into());
    let cc = std::env::var_os("CC").unwrap_or_else(|| "cc".into());
    let missing: Vec<String> = [("cargo", &cargo), ("git", &"git".into()), ("a C compiler", &cc)]
        .iter()
        .filter(|(_, c)| !tool_runs(c))
        .map(|(what, c)| format!("{what} ({})", c.to_string_lossy()))
        .collect();
    if !missing.is_empty() {
        let msg = format!("the mixed-version tests need {}, which cannot be run here", missing.join(", "));
        if std::env::var_os("CI").is_some() {
            return Err(format!("{msg} (and CI is set: not skipped)"));
        }
        eprintln!("\n*** SKIPPED: {msg}: NOTHING WAS TESTED ***\n");
        return Ok(None);
    }
    let t0 = Instant::now();
    // timeout(1) signals its whole process group: cargo and rustc included.
    let out = Command::new("timeout")
        .args(["-k", "10", &BUILD_LIMIT_S.to_string(), "bash"])
        .arg(root().join("scripts/build-v1-peer"))
        .arg("--current")
        .env("CARGO", &cargo)
        .current_dir(root())
        .stdin(Stdio::null())
        .output()
        .map_err(|e| format!("cannot run scripts/build-v1-peer: {e}"))?;
    // The script's own lines on stdout, cargo's and the compiler's on stderr.
    let (said, cargo_said) = (String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    if !out.status.success() {
        return Err(format!("scripts/build-v1-peer --current failed ({}):\n{said}{}", out.status, tail(&cargo_said, 60)));
    }
    eprintln!("scripts/build-v1-peer --current: {:.1} s\n{}", t0.elapsed().as_secs_f64(), said.trim_end());
    let compat = root().join("target/compat");
    let frame_rs = compat.join("v1/src/src/cmi/frame.rs");
    let src = std::fs::read_to_string(&frame_rs).map_err(|e| format!("{}: {e}", frame_rs.display()))?;
    let v1_version_max = src
        .lines()
        .find_map(|l| l.trim().strip_prefix("pub const VERSION_MAX: u16 = ")?.strip_suffix(';')?.parse().ok())
        .ok_or_else(|| format!("{}: no `pub const VERSION_MAX: u16 = N;`", frame_rs.display()))?;
    Ok(Some(Peers { v1: compat.join("v1/mps-compat-peer"), current: compat.join("current/mps-compat-peer"), v1_version_max }))
}

fn tail(s: &str, lines: usize) -> String {
    let v: Vec<&str> = s.lines().collect();
    v[v.len().saturating_sub(lines)..].join("\n")
}

// ---------------------------------------------------------------------------
// The library's log in this process.

fn log_lines() -> &'static Mutex<Vec<String>> {
    static LINES: OnceLock<Mutex<Vec<String>>> = OnceLock::new();
    LINES.get_or_init(|| {
        log::set_threshold(Level::Info as u32);
        log::set_sink(Some(Box::new(|level, line| {
            log_lines().lock().unwrap_or_else(|e| e.into_inner()).push(format!("{level:?}: {line}"));
        })));
        Mutex::new(Vec::new())
    })
}

/// One scenario at a time: the log is process-wide, and its rate limit (10
/// lines a second from one call site) must not swallow a link's line.
fn serial() -> MutexGuard<'static, ()> {
    static SERIAL: Mutex<()> = Mutex::new(());
    SERIAL.lock().unwrap_or_else(|e| e.into_inner())
}

/// Lines logged in this process from index `from` on.
fn lines_since(from: usize) -> Vec<String> {
    log_lines().lock().unwrap_or_else(|e| e.into_inner())[from..].to_vec()
}

/// The protocol version in a "link to SP X up (protocol version N, ..." line.
fn agreed_version(line: &str, sp: SpId) -> Option<u16> {
    let at = line.find(&format!("link to SP {sp} up (protocol version "))?;
    let rest = &line[at..];
    let rest = &rest[rest.find("version ")? + "version ".len()..];
    rest[..rest.find(|c: char| !c.is_ascii_digit())?].parse().ok()
}

// ---------------------------------------------------------------------------
// The peer process.

/// A running peer: killed and waited for on drop, its output readers joined.
struct PeerProcess {
    child: Child,
    name: String,
    lines: Receiver<String>,
    /// Every stdout line so far.
    stdout: Arc<Mutex<Vec<String>>>,
    stderr: Arc<Mutex<String>>,
    readers: Vec<JoinHandle<()>>,
}

impl PeerProcess {
    fn spawn(bin: &Path, name: &str, config: &Path, count: u32) -> PeerProcess {
        let mut child = Command::new(bin)
            .arg(count.to_string())
            .arg("echo")
            .env("MPS_CONFIG", config)
            .env_remove("MPS_LOG")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {}: {e}", bin.display()));
        let (tx, lines) = mpsc::channel();
        let stdout = Arc::new(Mutex::new(Vec::new()));
        let stderr = Arc::new(Mutex::new(String::new()));
        let out = child.stdout.take().unwrap();
        let all = stdout.clone();
        let r1 = std::thread::spawn(move || {
            for line in BufReader::new(out).lines() {
                let Ok(line) = line else { break };
                all.lock().unwrap().push(line.clone());
                let _ = tx.send(line);
            }
        });
        let mut err = child.stderr.take().unwrap();
        let e = stderr.clone();
        let r2 = std::thread::spawn(move || {
            let mut b = Vec::new();
            let _ = err.read_to_end(&mut b);
            e.lock().unwrap().push_str(&String::from_utf8_lossy(&b));
        });
        PeerProcess { child, name: name.to_string(), lines, stdout, stderr, readers: vec![r1, r2] }
    }

    /// What the peer printed so far, for a failure's message.
    fn transcript(&self) -> String {
        format!(
            "--- {} stdout:\n{}\n--- {} stderr:\n{}",
            self.name,
            self.stdout.lock().unwrap().join("\n"),
            self.name,
            self.stderr.lock().unwrap()
        )
    }

    /// The value `f` gives for the first stdout line, printed so far or to
    /// come, for which it gives one; fails the test after WAIT or at the
    /// peer's end of output. Lines from the log thread and the main thread
    /// interleave, so no order between them is assumed.
    fn expect<T>(&self, what: &str, f: impl Fn(&str) -> Option<T>) -> T {
        let deadline = Instant::now() + WAIT;
        loop {
            // The reader thread records a line before it sends it.
            if let Some(v) = self.stdout.lock().unwrap().iter().find_map(|l| f(l)) {
                return v;
            }
            match self.lines.recv_timeout(deadline.saturating_duration_since(Instant::now())) {
                Ok(_) => {}
                Err(RecvTimeoutError::Timeout) => panic!("{}: no line {what} within {WAIT:?}\n{}", self.name, self.transcript()),
                Err(RecvTimeoutError::Disconnected) => {
                    if let Some(v) = self.stdout.lock().unwrap().iter().find_map(|l| f(l)) {
                        return v;
                    }
                    panic!("{}: its output ended with no line {what}\n{}", self.name, self.transcript())
                }
            }
        }
    }

    /// Waits (at most WAIT) for the peer to exit by itself.
    fn wait_exit(&mut self) -> ExitStatus {
        let deadline = Instant::now() + WAIT;
        loop {
            if let Some(s) = self.child.try_wait().expect("try_wait") {
                return s;
            }
            assert!(Instant::now() < deadline, "{}: still running {WAIT:?} after its last echo\n{}", self.name, self.transcript());
            // A bounded poll of the exit status.
            std::thread::sleep(Duration::from_millis(5));
        }
    }
}

impl Drop for PeerProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        for r in self.readers.drain(..) {
            let _ = r.join();
        }
    }
}

// ---------------------------------------------------------------------------
// A scenario.

#[derive(Clone, Copy, Debug)]
enum Which {
    /// The peer built against the version-1 library.
    V1,
    /// The peer built against this tree's library.
    Current,
}

#[derive(Clone, Copy, Debug, PartialEq)]
enum Transport {
    Unix,
    Tcp,
}

#[derive(Clone, Copy, Debug, PartialEq)]
enum Role {
    /// This tree's library is 0.A and dials; the peer is 0.B and listens.
    CurrentDials,
    /// The peer is 0.A and dials; this tree's library is 0.B and listens.
    PeerDials,
}

/// Fast redials: the dialer may try before the listener is up.
const RECONNECT: &str = "[reconnect]\ninitial_backoff_ms = 5\nmax_backoff_ms = 100\n";

fn payload(seed: u32, i: u32) -> Vec<u8> {
    let size = if i % 250 == 249 { 1 << 20 } else { SIZES[i as usize % SIZES.len()] };
    (0..size).map(|j| (j as u32).wrapping_mul(31).wrapping_add(i.wrapping_mul(7)).wrapping_add(seed) as u8).collect()
}

fn run(which: Which, transport: Transport, role: Role) {
    let Some(peers) = peers() else { return };
    let (bin, expected, peer_max) = match which {
        Which::V1 => {
            // The recorded commit must be a version-1 release, and this tree
            // must still speak version 1 (the rolling upgrade).
            assert_eq!(peers.v1_version_max, 1, "compat/V1_COMMIT must name a version-1 tree");
            assert!(
                frame::VERSION_MIN <= peers.v1_version_max,
                "this tree no longer speaks version 1 (VERSION_MIN {}): a version-1 SP cannot link",
                frame::VERSION_MIN
            );
            (peers.v1.clone(), frame::VERSION_MAX.min(peers.v1_version_max), peers.v1_version_max)
        }
        Which::Current => (peers.current.clone(), frame::VERSION_MAX, frame::VERSION_MAX),
    };
    let _one_at_a_time = serial();
    let from = log_lines().lock().unwrap_or_else(|e| e.into_inner()).len();
    let what = format!("{which:?} peer, {transport:?}, {role:?}");
    let label = what.clone();
    // The scenario's own panic, not within's "hung", when it fails.
    let r = common::within(SCENARIO_LIMIT, &label, move || {
        std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| scenario(&bin, which, transport, role, expected, peer_max, from, &what)))
    });
    if let Err(p) = r {
        std::panic::resume_unwind(p);
    }
    assert!(log::flush(WAIT), "the log did not flush");
}

#[allow(clippy::too_many_arguments)]
fn scenario(bin: &Path, which: Which, transport: Transport, role: Role, expected: u16, peer_max: u16, from: usize, what: &str) {
    let dir = TempDir::new();
    let (me, them) = match role {
        Role::CurrentDials => (SpId::a(0), SpId::b(0)),
        Role::PeerDials => (SpId::b(0), SpId::a(0)),
    };
    let sock = |sp: SpId| format!("unix:{}", dir.0.join(format!("{sp}.sock")).display());
    // An address that is never dialed: the higher id does not dial the lower.
    let unused = |sp: SpId| match transport {
        Transport::Unix => sock(sp),
        Transport::Tcp => "tcp:127.0.0.1:1".to_string(),
    };
    let listen_any = || match transport {
        Transport::Unix => sock(SpId::b(0)),
        Transport::Tcp => "tcp:127.0.0.1:0".to_string(),
    };
    let peer_toml = dir.0.join("peer.toml");
    let count = SYNC_SENDS + ASYNC_SENDS;
    let name = format!("{which:?} peer as SP {them}");

    let (mps, peer) = match role {
        Role::CurrentDials => {
            let text = format!("sp = \"{them}\"\nlisten = \"{}\"\n[[peer]]\nsp = \"{me}\"\naddress = \"{}\"\n{RECONNECT}", listen_any(), unused(me));
            std::fs::write(&peer_toml, text).unwrap();
            let peer = PeerProcess::spawn(bin, &name, &peer_toml, count);
            // Its session is open, and the address it listens on (for TCP, with its port).
            peer.expect("'peer: ready'", |l| l.starts_with("peer: ready ").then_some(()));
            let address = peer.expect("'log: info SP 0.B listening on ADDRESS'", |l| {
                Some(l.strip_prefix("log: info ")?.split_once(" listening on ")?.1.trim().to_string())
            });
            let text = format!("sp = \"{me}\"\n[[peer]]\nsp = \"{them}\"\naddress = \"{address}\"\n{RECONNECT}");
            (Mps::start(Config::from_toml(&text, "test").unwrap()).expect("this SP starts"), peer)
        }
        Role::PeerDials => {
            let text = format!("sp = \"{me}\"\nlisten = \"{}\"\n[[peer]]\nsp = \"{them}\"\naddress = \"{}\"\n{RECONNECT}", listen_any(), unused(them));
            let mps = Mps::start(Config::from_toml(&text, "test").unwrap()).expect("this SP starts");
            // With the real port for tcp:...:0.
            let address = mps.listen_address().expect("listening").to_string();
            let text = format!("sp = \"{them}\"\n[[peer]]\nsp = \"{me}\"\naddress = \"{address}\"\n{RECONNECT}");
            std::fs::write(&peer_toml, text).unwrap();
            let peer = PeerProcess::spawn(bin, &name, &peer_toml, count);
            peer.expect("'peer: ready'", |l| l.starts_with("peer: ready ").then_some(()));
            (mps, peer)
        }
    };
    let (cb, events) = channel_callback();
    let session = mps.open(Some(cb), 0, 0, "echo", 7).unwrap();
    mps.wait_for_peer(them, Some(WAIT)).unwrap_or_else(|s| panic!("{what}: link not up: {s:?}\n{}", peer.transcript()));

    // Which version each side says the link agreed.
    let t0 = Instant::now();
    let ours = loop {
        if let Some((line, v)) = lines_since(from).iter().find_map(|l| Some((l.clone(), agreed_version(l, them)?))) {
            break (line, v);
        }
        assert!(t0.elapsed() < WAIT, "{what}: this SP logged no 'link to SP {them} up' line; it logged:\n{}", lines_since(from).join("\n"));
        std::thread::yield_now();
    };
    let theirs = peer.expect(&format!("'log: info link to SP {me} up (protocol version N'"), |l| {
        Some((l.to_string(), agreed_version(l.strip_prefix("log: ")?, me)?))
    });
    let summary = peer.expect("'peer: link up version=N'", |l| l.strip_prefix("peer: link up version=")?.parse::<u16>().ok());
    println!("{what}: this SP {me} logged   \"{}\"", ours.0);
    println!("{what}: the peer SP {them} logged \"{}\"", theirs.0);
    assert_eq!(ours.1, expected, "{what}: this SP (speaks {}..{}) agreed version {}, expected {expected}", frame::VERSION_MIN, frame::VERSION_MAX, ours.1);
    assert_eq!(theirs.1, expected, "{what}: the peer (speaks up to {peer_max}) agreed version {}, expected {expected}", theirs.1);
    assert_eq!(summary, theirs.1, "the peer's summary line disagrees with its log line");

    let seed = (which as u32) * 4 + (transport as u32) * 2 + role as u32;
    // The peer echoes synchronously, so every echo is queued for `receive`
    // (a synchronous message is, whatever the session's callback); the
    // callback sees only the asynchronous sends' completions.
    let echo = |tag: u32| -> Vec<u8> {
        let m = mps
            .receive(session, Timeout::Seconds(WAIT.as_secs() as u32), tag)
            .unwrap_or_else(|s| panic!("{what}: no echo with tag {tag}: {s:?}\n{}", peer.transcript()));
        assert_eq!((m.tag, m.sender, m.session, m.context), (tag, them, session, 7), "{what}: the echo's envelope");
        m.data
    };

    // Synchronous sends, each echoed before the next.
    let mut bytes = 0;
    for i in 0..SYNC_SENDS {
        let data = payload(seed, i);
        let buf = MessageBuf::from_slice(&data).unwrap();
        mps.send_sync(session, them, &buf, data.len(), i + 1)
            .unwrap_or_else(|s| panic!("{what}: synchronous send {i} failed: {s:?}\n{}", peer.transcript()));
        let back = echo(i + 1);
        assert!(back == data, "{what}: the echo of message {i} ({} bytes) differs: {} bytes back", data.len(), back.len());
        bytes += data.len();
    }

    // Asynchronous sends, all at once; each is confirmed and echoed.
    let mut sent = HashMap::new();
    for i in SYNC_SENDS..count {
        let data = payload(seed, i);
        let buf = MessageBuf::from_slice(&data).unwrap();
        mps.send_async(session, them, buf, data.len(), i + 1, i as usize)
            .unwrap_or_else(|(s, _)| panic!("{what}: asynchronous send {i} refused: {s:?}"));
        bytes += data.len();
        sent.insert(i + 1, data);
    }
    for _ in 0..ASYNC_SENDS {
        match events.recv_timeout(WAIT) {
            Ok(Event::MessageSent { status, tag, context, buffer, .. }) => {
                assert_eq!(status, Status::STATUS_SUCCESS, "{what}: asynchronous send {tag} failed\n{}", peer.transcript());
                assert_eq!(context as u32 + 1, tag);
                assert!(buffer.as_slice() == &sent[&tag][..], "{what}: send {tag} came back with another buffer");
            }
            Ok(e) => panic!("{what}: unexpected {e:?}"),
            Err(_) => panic!("{what}: an asynchronous send had no completion within {WAIT:?}\n{}", peer.transcript()),
        }
    }
    // In any order (the test does not depend on it), each exactly once.
    for _ in 0..ASYNC_SENDS {
        let m = mps
            .receive(session, Timeout::Seconds(WAIT.as_secs() as u32), 0)
            .unwrap_or_else(|s| panic!("{what}: an asynchronous message's echo missing: {s:?}\n{}", peer.transcript()));
        assert_eq!(m.sender, them);
        let data = sent.remove(&m.tag).unwrap_or_else(|| panic!("{what}: an echo with tag {} not sent, or echoed twice", m.tag));
        assert!(m.data == data, "{what}: the echo of asynchronous message {} differs", m.tag);
    }
    assert!(events.try_recv().is_err(), "{what}: an event more than the sends' completions");

    // The peer says what it did, and ends cleanly.
    let (n, b) = peer.expect("'peer: echoed N messages, B bytes'", |l| {
        let rest = l.strip_prefix("peer: echoed ")?;
        let (n, rest) = rest.split_once(" messages, ")?;
        Some((n.parse::<u32>().ok()?, rest.strip_suffix(" bytes")?.parse::<usize>().ok()?))
    });
    assert_eq!((n, b), (count, bytes), "{what}: the peer's count of what it echoed");
    peer.expect("'peer: done'", |l| (l == "peer: done").then_some(()));
    let mut peer = peer;
    let status = peer.wait_exit();
    assert!(status.success(), "{what}: the peer exited with {status}\n{}", peer.transcript());
    println!("{what}: {count} messages ({bytes} bytes) echoed; the peer exited 0");

    mps.close(session).unwrap();
    mps.shutdown().unwrap();
}

// ---------------------------------------------------------------------------
// The scenarios.

#[test]
fn v1_peer_listens_over_unix_this_sp_dials() {
    run(Which::V1, Transport::Unix, Role::CurrentDials);
}

#[test]
fn v1_peer_dials_over_unix_this_sp_listens() {
    run(Which::V1, Transport::Unix, Role::PeerDials);
}

#[test]
fn v1_peer_listens_over_tcp_this_sp_dials() {
    run(Which::V1, Transport::Tcp, Role::CurrentDials);
}

#[test]
fn v1_peer_dials_over_tcp_this_sp_listens() {
    run(Which::V1, Transport::Tcp, Role::PeerDials);
}

#[test]
fn current_peer_listens_over_unix_this_sp_dials() {
    run(Which::Current, Transport::Unix, Role::CurrentDials);
}

#[test]
fn current_peer_dials_over_unix_this_sp_listens() {
    run(Which::Current, Transport::Unix, Role::PeerDials);
}

#[test]
fn current_peer_listens_over_tcp_this_sp_dials() {
    run(Which::Current, Transport::Tcp, Role::CurrentDials);
}

#[test]
fn current_peer_dials_over_tcp_this_sp_listens() {
    run(Which::Current, Transport::Tcp, Role::PeerDials);
}
