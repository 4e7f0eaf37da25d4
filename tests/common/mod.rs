#![allow(dead_code)]
//! Shared helpers for the Rust integration tests: unique addresses and SP pairs.

use mps::{Callback, Config, Event, Mps, SpId};
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
    let text = format!(
        "sp = \"{me}\"\nlisten = \"{listen}\"\n{extra}\n[[peer]]\nsp = \"{other}\"\naddress = \"{other_addr}\"\n\
         [heartbeat]\ninterval_ms = 50\ndead_peer_timeout_ms = 2000\n[reconnect]\ninitial_backoff_ms = 5\nmax_backoff_ms = 100\n"
    );
    Config::from_toml(&text, "test").expect("test configuration is valid")
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

/// A temporary directory removed on drop.
pub struct TempDir(pub std::path::PathBuf);
impl TempDir {
    pub fn new() -> TempDir {
        let d = std::env::temp_dir().join(unique("mps-test"));
        std::fs::create_dir_all(&d).unwrap();
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
