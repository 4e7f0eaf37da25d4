//! Issue 9: how long a sender waits to hear that its peer is gone. A link
//! session that loses its connection resumes; its messages in flight fail
//! only when the peer comes back as a new incarnation (at once, when the new
//! connection is made) or stays away for `link.resume_timeout_ms`. Both are
//! measured here against the configured timings and printed; the bounds
//! asserted are the documented ones (PROTOCOL.md 10.5) with room for a
//! loaded machine.

mod common;

use common::proxy::Proxy;
use common::*;
use mps::{Mps, SpId, Status, Timeout};
use std::sync::mpsc;
use std::time::{Duration, Instant};

const A: SpId = SpId::a(0);
const B: SpId = SpId::b(0);
const RESUME_MS: u64 = 1500;
const DEAD_MS: u64 = 2000;

/// 0.A dials 0.B through a proxy (so that the test can make 0.B vanish
/// without the goodbye an orderly shutdown sends): returns both SPs and the proxy.
fn pair(dir: &TempDir) -> (Mps, Mps, Proxy) {
    let (ua, ub) = (format!("unix:{}", dir.0.join("a.sock").display()), format!("unix:{}", dir.0.join("b.sock").display()));
    let mb = Mps::start(config_hb("0.B", &ub, "0.A", &ua, &extra(), 100)).unwrap();
    let proxy = Proxy::unix(&dir.0.join("proxy.sock"), &dir.0.join("b.sock"));
    let ma = Mps::start(config_hb("0.A", &ua, "0.B", &proxy.address(), &extra(), 100)).unwrap();
    ma.wait_for_peer(B, Some(Duration::from_secs(30))).expect("link up");
    mb.wait_for_peer(A, Some(Duration::from_secs(30))).expect("link up");
    (ma, mb, proxy)
}

fn extra() -> String {
    format!("[link]\nresume_timeout_ms = {RESUME_MS}\n")
}

/// 0.B vanishes for 0.A as a crashed or unplugged SP does: its connection
/// is reset and nothing answers at its address any more (the proxy goes,
/// its socket file with it).
fn vanish(proxy: Proxy, dir: &TempDir) {
    drop(proxy);
    let _ = std::fs::remove_file(dir.0.join("proxy.sock"));
}

/// Sends `n` asynchronous messages from `ma` on a new session while the
/// link is down, and returns the channel of their completions.
fn send_while_down(ma: &Mps, n: u32) -> mpsc::Receiver<mps::Event> {
    let (cb, rx) = channel_callback();
    let s = ma.open(Some(cb), 0, 0, &unique("death"), 0).unwrap();
    for i in 0..n {
        let b = mps::MessageBuf::from_slice(&i.to_le_bytes()).unwrap();
        ma.send_async(s, B, b, 4, 1, i as usize).map_err(|(st, _)| st).expect("a resuming link queues the send");
    }
    rx
}

/// The completions of `n` sends, all with `STATUS_CONNECTION_DISCONNECTED`,
/// in order; returns when the first came.
fn all_disconnected(rx: &mpsc::Receiver<mps::Event>, n: u32) -> Instant {
    let mut first = None;
    for i in 0..n {
        match rx.recv_timeout(Duration::from_secs(30)).expect("a completion within 30 s") {
            mps::Event::MessageSent { status, context, .. } => {
                assert_eq!(status, Status::STATUS_CONNECTION_DISCONNECTED, "send {context}");
                assert_eq!(context as u32, i, "failures out of send order");
                first.get_or_insert_with(Instant::now);
            }
            other => panic!("unexpected {other:?}"),
        }
    }
    first.unwrap()
}

#[test]
fn a_peer_that_stays_away_fails_the_messages_in_flight_after_the_resume_timeout() {
    let dir = TempDir::new();
    let (ma, mb, proxy) = pair(&dir);
    let t0 = Instant::now();
    vanish(proxy, &dir);
    // A's connection ends at B's close: A resumes, queues, and waits.
    wait_until("A's link is resuming", || ma.link_info(B).unwrap().state == "resuming");
    let rx = send_while_down(&ma, 10);
    let first = all_disconnected(&rx, 10);
    let waited = first - t0;
    println!("peer gone, not back: first failure {} ms after its death (link.resume_timeout_ms = {RESUME_MS}, dead_peer_timeout_ms = {DEAD_MS})", waited.as_millis());
    assert!(waited >= Duration::from_millis(RESUME_MS), "failed before the tolerance passed: {waited:?}");
    assert!(waited < Duration::from_millis(RESUME_MS + DEAD_MS + 3000), "failed too late: {waited:?}");
    assert_eq!(ma.link_info(B).unwrap().state, "down");
    mb.shutdown().unwrap();
}

/// An orderly shutdown says goodbye (BYE, version 2): its peer ends the
/// link session at once, failing what it had in flight, instead of waiting
/// for it to come back for the resume tolerance.
#[test]
fn a_peer_that_shuts_down_ends_the_link_at_once() {
    let dir = TempDir::new();
    let (ma, mb, _proxy) = pair(&dir);
    let t0 = Instant::now();
    within(Duration::from_secs(30), "B's shutdown", move || mb.shutdown().unwrap());
    wait_until("A's link is down", || ma.link_info(B).unwrap().state == "down");
    let waited = t0.elapsed();
    println!("peer shut down in order: A's link down {} ms after", waited.as_millis());
    assert!(waited < Duration::from_millis(RESUME_MS), "A waited for the resume tolerance: {waited:?}");
    let s = ma.open(None, 0, 0, "Bye", 0).unwrap();
    assert_eq!(ma.send_sync(s, B, &mps::MessageBuf::from_slice(b"x").unwrap(), 1, 1), Err(Status::STATUS_HOST_UNREACHABLE));
}

#[test]
fn a_peer_that_restarts_fails_the_messages_in_flight_when_it_is_back() {
    let dir = TempDir::new();
    let (ma, mb, proxy) = pair(&dir);
    let first_incarnation = ma.link_info(B).unwrap().peer_incarnation;
    vanish(proxy, &dir);
    wait_until("A's link is resuming", || ma.link_info(B).unwrap().state == "resuming");
    // B dies (its goodbye reaches nobody) and starts again: a new
    // incarnation, well within A's tolerance.
    within(Duration::from_secs(30), "B's shutdown", move || mb.shutdown().unwrap());
    let rx = send_while_down(&ma, 10);
    let t0 = Instant::now();
    let (ua, ub) = (format!("unix:{}", dir.0.join("a.sock").display()), format!("unix:{}", dir.0.join("b.sock").display()));
    let mb = Mps::start(config_hb("0.B", &ub, "0.A", &ua, &extra(), 100)).unwrap();
    let _proxy = Proxy::unix(&dir.0.join("proxy.sock"), &dir.0.join("b.sock"));
    let first = all_disconnected(&rx, 10);
    let waited = first - t0;
    println!("peer restarted: first failure {} ms after it started again (reconnect backoff 5..100 ms)", waited.as_millis());
    assert!(waited < Duration::from_millis(RESUME_MS), "the restart was not noticed before the tolerance: {waited:?}");
    wait_until("A's link is up again", || ma.link_info(B).unwrap().state == "up");
    let info = ma.link_info(B).unwrap();
    assert_ne!(info.peer_incarnation, first_incarnation, "the same incarnation after a restart");
    // The new session carries messages again.
    let s = mb.open(None, 0, 0, "After", 0).unwrap();
    let sa = ma.open(None, 0, 0, "After", 0).unwrap();
    ma.send_sync(sa, B, &mps::MessageBuf::from_slice(b"again").unwrap(), 5, 2).unwrap();
    assert_eq!(mb.receive(s, Timeout::Seconds(10), 0).unwrap().data, b"again");
    mb.shutdown().unwrap();
}
