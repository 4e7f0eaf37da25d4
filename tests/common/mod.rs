#![allow(dead_code)]
//! Shared helpers for the Rust integration tests: unique addresses and SP pairs.

use mps::{Callback, Config, Event, MessageBuf, Mps, ReceivedMessage, SessionId, SpId, Status, Timeout};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::time::Duration;

static NEXT: AtomicU32 = AtomicU32::new(0);

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
