//! A test receive (`Timeout::Test`, the C API's `Timeout` 0) while two links
//! keep delivering to the session (issue 8, item 16(b)). It may wait for the
//! messages that were already confirmed to their senders when it began (so a
//! message confirmed before the call is never missed: tests/links.rs), but
//! never for the ones that arrive after: it returns within a bound however
//! busy the links are.

mod common;

use common::unique;
use mps::{Config, MessageBuf, Mps, SpId, Status, Timeout};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// What one test receive may take, on a loaded two-core machine. The wait it
/// may make is for the messages the link threads accepted before the call:
/// at most one read's worth per link (docs/DESIGN.md, "Test receive").
const BOUND: Duration = Duration::from_millis(500);

fn sp(me: &str, listen: &str, peers: &[(&str, &str)]) -> Mps {
    let mut text = format!("sp = \"{me}\"\nlisten = \"inproc:{listen}\"\n[limits]\nsession_queue_depth = 1000000\nsession_queue_bytes = 1073741824\n");
    for (sp, addr) in peers {
        text.push_str(&format!("[[peer]]\nsp = \"{sp}\"\naddress = \"inproc:{addr}\"\n"));
    }
    text.push_str("[heartbeat]\ninterval_ms = 50\ndead_peer_timeout_ms = 1000\n");
    Mps::start(Config::from_toml(&text, "test").unwrap()).unwrap()
}

#[test]
fn a_test_receive_returns_within_a_bound_while_two_links_stream_into_the_session() {
    let (c, b, d) = (unique("sink"), unique("b"), unique("d"));
    // The sink, 0.A, is linked to two SPs that both stream into its session.
    let sink = sp("0.A", &c, &[("0.B", &b), ("1.A", &d)]);
    let pb = sp("0.B", &b, &[("0.A", &c)]);
    let pd = sp("1.A", &d, &[("0.A", &c)]);
    for (m, peer) in [(&sink, SpId::b(0)), (&sink, SpId::a(1)), (&pb, SpId::a(0)), (&pd, SpId::a(0))] {
        m.wait_for_peer(peer, Some(Duration::from_secs(30))).unwrap();
    }
    let s = sink.open(None, 0, 0, "Stream", 0).unwrap();
    let stop = Arc::new(AtomicBool::new(false));
    let sent = Arc::new(AtomicU64::new(0));
    // Each peer streams asynchronous sends with tag 1, up to 1024 in flight,
    // so that each link's reads bring many messages at once: accepted (and
    // reserved) together, dispatched one by one after their confirmation.
    let mut senders = Vec::new();
    for m in [&pb, &pd] {
        let window = Arc::new((std::sync::Mutex::new(0u32), std::sync::Condvar::new()));
        let w = window.clone();
        let cb: mps::Callback = Arc::new(move |ev| {
            // (Refused ones too: the links end as the test stops.)
            if let mps::Event::MessageSent { .. } = ev {
                *w.0.lock().unwrap() -= 1;
                w.1.notify_one();
            }
        });
        let ss = m.open(Some(cb), 0, 0, "Stream", 0).unwrap();
        let (m, stop, sent) = (m.clone(), stop.clone(), sent.clone());
        senders.push(std::thread::spawn(move || {
            while !stop.load(Ordering::Relaxed) {
                {
                    let mut n = window.0.lock().unwrap();
                    while *n >= 1024 {
                        n = window.1.wait_timeout(n, Duration::from_secs(30)).unwrap().0;
                    }
                    *n += 1;
                }
                let buf = MessageBuf::from_slice(&[7u8; 64]).unwrap();
                match m.send_async(ss, SpId::a(0), buf, 64, 1, 0) {
                    Ok(()) => {
                        sent.fetch_add(1, Ordering::Relaxed);
                    }
                    Err((e, _)) => panic!("send refused: {e}"),
                }
            }
        }));
    }
    // A drainer takes what arrives, so the queue never fills.
    let drainer = {
        let (sink, stop) = (sink.clone(), stop.clone());
        std::thread::spawn(move || {
            let mut n = 0u64;
            while !stop.load(Ordering::Relaxed) {
                if sink.receive(s, Timeout::Seconds(1), 1).is_ok() {
                    n += 1;
                }
            }
            n
        })
    };
    // Wait until the stream runs.
    let t0 = Instant::now();
    while sent.load(Ordering::Relaxed) < 1000 {
        assert!(t0.elapsed() < Duration::from_secs(30), "the stream never started");
        std::thread::yield_now();
    }
    // Test receives for a tag that never comes: each must find nothing and
    // return STATUS_TIMEOUT at once, whatever the links do meanwhile. Each
    // runs under a watchdog, so a receive that blocks fails the test rather
    // than hanging it.
    let mut worst = Duration::ZERO;
    let mut calls = 0u32;
    let run = Instant::now();
    let mut failure = None;
    while run.elapsed() < Duration::from_secs(3) {
        let (tx, rx) = std::sync::mpsc::channel();
        let sink2 = sink.clone();
        let t = Instant::now();
        std::thread::spawn(move || {
            let _ = tx.send(sink2.receive(s, Timeout::Test, 999));
        });
        match rx.recv_timeout(Duration::from_secs(20)) {
            Ok(r) => {
                assert_eq!(r.unwrap_err(), Status::STATUS_TIMEOUT);
                let took = t.elapsed();
                worst = worst.max(took);
                calls += 1;
                if took > BOUND {
                    failure = Some(format!("a test receive took {took:?} (call {calls}), over the {BOUND:?} bound"));
                    break;
                }
            }
            Err(_) => {
                failure = Some(format!("a test receive had not returned after 20 s (call {})", calls + 1));
                break;
            }
        }
    }
    stop.store(true, Ordering::Relaxed);
    for t in senders {
        t.join().unwrap();
    }
    let drained = drainer.join().unwrap();
    eprintln!("{calls} test receives, the slowest {worst:?}; {} messages streamed, {drained} drained", sent.load(Ordering::Relaxed));
    if let Some(f) = failure {
        panic!("{f}");
    }
    assert!(calls > 10, "too few test receives ran ({calls})");
}
