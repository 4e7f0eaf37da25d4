//! The main job: two SPs of one storage unit, as two processes, on the embedded
//! default (nothing configured by hand), exchanging messages both ways.
//!
//! ```text
//! cargo run --release --example two_sps            # starts 0.B and 0.A, prints a report
//! MPS_SP=0.B cargo run --release --example two_sps -- target   # one SP by hand
//! MPS_SP=0.A cargo run --release --example two_sps -- client
//! ```
//!
//! The client (0.A) sends synchronous messages (timing each until its
//! confirmation), then asynchronous ones with a window of 64, counting the
//! completion callbacks; the target (0.B) checks every message's order and
//! content, then sends synchronous messages back. Both print what they did.

use hdrhistogram::Histogram;
use mps::{Callback, Event, MessageBuf, Mps, SessionId, SpId, Status, Timeout};
use std::process::{Command, ExitCode, Stdio};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

const CONDUIT: u32 = 0;
const DOMAIN: u32 = u32::from_le_bytes(*b"DEMO");
const MAILBOX: &str = "Mirror";
/// SequenceTags above this are control messages.
const HELLO: u32 = 0xFFFF_0001;
const END: u32 = 0xFFFF_0002;
const N: u32 = 10_000;
const WINDOW: usize = 64;

fn payload(i: u32, size: usize) -> Vec<u8> {
    (0..size).map(|k| (k as u32).wrapping_mul(131).wrapping_add(i) as u8).collect()
}

fn size_of_message(i: u32) -> usize {
    64 + (i as usize * 7919) % 4033
}

fn check(i: u32, data: &[u8]) -> bool {
    data.len() == size_of_message(i)
        && data.iter().enumerate().all(|(k, b)| *b == (k as u32).wrapping_mul(131).wrapping_add(i) as u8)
}

fn fail(what: &str, st: Status) -> ! {
    eprintln!("{what}: {st}");
    std::process::exit(1)
}

/// Counts events from the session's callback so the main thread can wait on them.
#[derive(Default)]
struct Counters {
    sent_ok: u32,
    sent_failed: u32,
    received: u32,
    received_bad: u32,
}

fn open(m: &Mps) -> (SessionId, Arc<(Mutex<Counters>, Condvar)>) {
    let counters = Arc::new((Mutex::new(Counters::default()), Condvar::new()));
    let c = counters.clone();
    let m2 = m.clone(); // the SP is shut down explicitly at the end (main)
    let cb: Callback = Arc::new(move |ev| {
        let (lock, cv) = &*c;
        // Wake the waiting thread once per delivery: at its last event
        // (sp_pending_events == 0 in a callback: the last completion of one
        // confirmation frame, say), not at every completion, which on a busy
        // CPU would let it preempt this thread and refill one window slot at
        // a time.
        let session = match &ev {
            Event::MessageSent { session, .. } | Event::CloseCompleted { session, .. } => *session,
            Event::MessageReceived(r) => r.session,
        };
        let last = m2.session_info(session).map(|i| i.sp_pending_events == 0).unwrap_or(true);
        let mut n = lock.lock().unwrap();
        match ev {
            Event::MessageSent { status, .. } if status == Status::STATUS_SUCCESS => n.sent_ok += 1,
            Event::MessageSent { .. } => n.sent_failed += 1,
            Event::MessageReceived(r) => {
                // Asynchronous messages carry their index in the tag.
                if !check(r.tag, &r.data) || r.tag != n.received {
                    n.received_bad += 1;
                }
                n.received += 1;
            }
            Event::CloseCompleted { .. } => {}
        }
        drop(n);
        if last {
            cv.notify_all();
        }
    });
    let s = m.open(Some(cb), CONDUIT, DOMAIN, MAILBOX, 0).unwrap_or_else(|e| fail("open", e));
    (s, counters)
}

/// Both SPs open their mailbox, then say hello. A hello that finds no mailbox
/// means the other SP has not opened yet; it will, and its hello will then
/// find ours, so we wait for it. Two failed hellos cannot happen.
fn rendezvous(m: &Mps, s: SessionId, peer: SpId) {
    m.wait_for_peer(peer, Some(Duration::from_secs(60))).unwrap_or_else(|e| fail("waiting for the peer's link", e));
    match m.send_sync(s, peer, &MessageBuf::new(0).unwrap(), 0, HELLO) {
        Ok(()) => {}
        Err(Status::STATUS_OBJECT_NAME_NOT_FOUND) => {
            m.receive(s, Timeout::Seconds(60), HELLO).unwrap_or_else(|e| fail("waiting for the peer's hello", e));
        }
        Err(e) => fail("hello", e),
    }
}

fn summary(h: &Histogram<u64>) -> String {
    let us = |v: u64| v as f64 / 1000.0;
    format!(
        "p50 {:.1} µs, p90 {:.1}, p99 {:.1}, p99.9 {:.1}, max {:.1}",
        us(h.value_at_quantile(0.5)),
        us(h.value_at_quantile(0.9)),
        us(h.value_at_quantile(0.99)),
        us(h.value_at_quantile(0.999)),
        us(h.max())
    )
}

fn client(m: Mps) -> Result<(), String> {
    let me = m.local_sp();
    let peer = m.unit_partner().ok_or("this SP's unit has no second SP")?;
    let (s, counters) = open(&m);
    rendezvous(&m, s, peer);
    println!("SP {me} (client) linked to SP {peer}");

    // Synchronous: each call returns once the target has confirmed.
    let mut lat = Histogram::<u64>::new(3).unwrap();
    let mut bytes = 0usize;
    let t0 = Instant::now();
    for i in 0..N {
        let size = size_of_message(i);
        let buf = MessageBuf::from_slice(&payload(i, size)).unwrap();
        let t = Instant::now();
        m.send_sync(s, peer, &buf, size, i).map_err(|e| format!("synchronous send {i}: {e}"))?;
        lat.record(t.elapsed().as_nanos() as u64).unwrap();
        bytes += size;
    }
    let el = t0.elapsed();
    println!(
        "  sync  {me} -> {peer}: {N} messages ({} KiB, 64-4096 B), {N} confirmed, {:.0} msg/s; latency {}",
        bytes / 1024,
        N as f64 / el.as_secs_f64(),
        summary(&lat)
    );

    // Asynchronous: at most WINDOW unconfirmed, completions counted in the callback.
    let t0 = Instant::now();
    let (lock, cv) = &*counters;
    for i in 0..N {
        {
            let mut n = lock.lock().unwrap();
            while (i - n.sent_ok - n.sent_failed) as usize >= WINDOW {
                n = cv.wait(n).unwrap();
            }
        }
        let size = size_of_message(i);
        let buf = MessageBuf::from_slice(&payload(i, size)).unwrap();
        m.send_async(s, peer, buf, size, i, i as usize).map_err(|(e, _)| format!("asynchronous send {i}: {e}"))?;
    }
    let n = {
        let mut n = lock.lock().unwrap();
        while n.sent_ok + n.sent_failed < N {
            n = cv.wait(n).unwrap();
        }
        (n.sent_ok, n.sent_failed)
    };
    let el = t0.elapsed();
    println!(
        "  async {me} -> {peer}: {N} messages (window {WINDOW}), {} confirmed and {} failed through the callback, {:.0} msg/s",
        n.0,
        n.1,
        N as f64 / el.as_secs_f64()
    );
    m.send_sync(s, peer, &MessageBuf::new(0).unwrap(), 0, END).map_err(|e| format!("end: {e}"))?;

    // The target's turn: synchronous messages back to us, checked in order.
    let mut good = 0u32;
    let mut i = 0u32;
    while i < N {
        let r = m.receive(s, Timeout::Seconds(60), 0).map_err(|e| format!("receive {i}: {e}"))?;
        if r.tag == HELLO {
            continue; // the target's hello, when both hellos found their mailbox
        }
        if r.tag == i && check(i, &r.data) && r.sender == peer {
            good += 1;
        }
        i += 1;
    }
    println!("  sync  {peer} -> {me}: {N} received, {good} in order with the right content");
    if n != (N, 0) || good != N {
        return Err("some messages failed".into());
    }
    m.close(s).map_err(|e| e.to_string())?;
    Ok(())
}

fn target(m: Mps) -> Result<(), String> {
    let me = m.local_sp();
    let peer = m.unit_partner().ok_or("this SP's unit has no second SP")?;
    let (s, counters) = open(&m);
    rendezvous(&m, s, peer);
    println!("SP {me} (target) linked to SP {peer}");

    // The client's synchronous messages, then END (after its asynchronous ones).
    let mut good = 0u32;
    let mut i = 0u32;
    loop {
        let r = m.receive(s, Timeout::Seconds(60), 0).map_err(|e| format!("receive: {e}"))?;
        match r.tag {
            END => break,
            HELLO => continue,
            tag => {
                if tag == i && check(i, &r.data) {
                    good += 1;
                }
                i += 1;
            }
        }
    }
    println!("  sync  {peer} -> {me}: {i} received, {good} in order with the right content");
    // Every asynchronous message was confirmed before END was sent, so each is
    // queued for our callback; wait until the callback has seen them all.
    let (lock, cv) = &*counters;
    let (received, bad) = {
        let mut n = lock.lock().unwrap();
        let deadline = Instant::now() + Duration::from_secs(60);
        while n.received < N && Instant::now() < deadline {
            n = cv.wait_timeout(n, deadline.saturating_duration_since(Instant::now())).unwrap().0;
        }
        (n.received, n.received_bad)
    };
    println!("  async {peer} -> {me}: {received} received through the callback, {} in order with the right content", received - bad);

    let mut lat = Histogram::<u64>::new(3).unwrap();
    for i in 0..N {
        let size = size_of_message(i);
        let buf = MessageBuf::from_slice(&payload(i, size)).unwrap();
        let t = Instant::now();
        m.send_sync(s, peer, &buf, size, i).map_err(|e| format!("synchronous send {i}: {e}"))?;
        lat.record(t.elapsed().as_nanos() as u64).unwrap();
    }
    println!("  sync  {me} -> {peer}: {N} messages, {N} confirmed; latency {}", summary(&lat));
    if good != N || i != N || received != N || bad != 0 {
        return Err("some messages were missing or wrong".into());
    }
    Ok(())
}

/// Starts both SPs as child processes in a private runtime directory.
fn orchestrate() -> ExitCode {
    let exe = std::env::current_exe().expect("own path");
    let dir = std::env::temp_dir().join(format!("mps-two-sps-{}", std::process::id()));
    let spawn = |role: &str, sp: &str| {
        Command::new(&exe)
            .arg(role)
            .env("MPS_SP", sp)
            .env("MPS_RUNTIME_DIR", &dir)
            .env_remove("MPS_CONFIG")
            // The SP that finishes first closes its link; the other would warn.
            .env("MPS_LOG", std::env::var("MPS_LOG").unwrap_or_else(|_| "error".into()))
            .stdout(Stdio::piped())
            .spawn()
            .expect("start an SP process")
    };
    println!("Starting SP 0.B (target) and SP 0.A (client) as two processes; sockets in {}", dir.display());
    let t0 = Instant::now();
    let target = spawn("target", "0.B");
    let client = spawn("client", "0.A");
    let c = client.wait_with_output().expect("client ran");
    let t = target.wait_with_output().expect("target ran");
    let _ = std::fs::remove_dir_all(&dir);
    print!("{}", String::from_utf8_lossy(&c.stdout));
    print!("{}", String::from_utf8_lossy(&t.stdout));
    if c.status.success() && t.status.success() {
        println!(
            "OK: {} messages 0.A -> 0.B and {N} messages 0.B -> 0.A, every one confirmed and checked, in {:.2} s",
            2 * N,
            t0.elapsed().as_secs_f64()
        );
        ExitCode::SUCCESS
    } else {
        println!("FAILED: client {}, target {}", c.status, t.status);
        ExitCode::FAILURE
    }
}

fn main() -> ExitCode {
    let role = std::env::args().nth(1);
    let run = |f: fn(Mps) -> Result<(), String>| {
        let m = match Mps::from_env() {
            Ok(m) => m,
            Err(e) => {
                eprintln!("configuration: {e}");
                return ExitCode::FAILURE;
            }
        };
        let r = f(m.clone());
        let _ = m.shutdown();
        match r {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("{e}");
                ExitCode::FAILURE
            }
        }
    };
    match role.as_deref() {
        None => orchestrate(),
        Some("client") => run(client),
        Some("target") => run(target),
        Some(other) => {
            eprintln!("usage: two_sps [client|target]  (not {other:?})");
            ExitCode::FAILURE
        }
    }
}
