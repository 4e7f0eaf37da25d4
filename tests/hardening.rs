//! Regression tests for the defects of issue 8 ("hardening the core") that live
//! in the session layer and the links: each one failed on the code before its
//! fix. Every wait has a deadline, so a regression fails instead of hanging.

mod common;
use common::*;
use mps::{CloseOutcome, Event, MessageBuf, Mps, SpId, Status};
use std::collections::HashSet;
use std::sync::mpsc;
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

const A: SpId = SpId::a(0);
const B: SpId = SpId::b(0);

fn solo() -> Mps {
    let name = unique("solo");
    let cfg = mps::Config::from_toml(&format!("sp = \"0.A\"\nlisten = \"inproc:{name}\"\n"), "test").unwrap();
    Mps::start(cfg).unwrap()
}

/// 8.2: `close` from another thread while a callback of the session runs must
/// be pending, and `CloseCompleted` must come after that callback returned.
#[test]
fn close_while_a_callback_runs_is_pending_and_completes_after_it() {
    let (entered_tx, entered) = mpsc::channel::<()>();
    let (release_tx, release) = mpsc::channel::<()>();
    let (order_tx, order) = mpsc::channel::<&'static str>();
    let (entered_tx, release, order_tx) = (Mutex::new(entered_tx), Mutex::new(release), Mutex::new(order_tx));
    let cb: mps::Callback = Arc::new(move |ev| match ev {
        Event::MessageSent { .. } => {
            entered_tx.lock().unwrap().send(()).unwrap();
            // Blocks until the test has called close from its own thread.
            let _ = release.lock().unwrap().recv_timeout(Duration::from_secs(30));
            order_tx.lock().unwrap().send("callback returned").unwrap();
        }
        Event::CloseCompleted { .. } => order_tx.lock().unwrap().send("close completed").unwrap(),
        Event::MessageReceived(_) => {}
    });
    // A send to another SP whose session has no callback: the sender's only
    // callback event is the send's completion, which blocks above.
    let (m, mb) = inproc_pair("");
    let s = m.open(Some(cb), 0, 0, "Busy", 0).unwrap();
    let _sink = mb.open(None, 0, 0, "Busy", 0).unwrap();
    m.send_async(s, B, MessageBuf::from_slice(b"x").unwrap(), 1, 1, 0).unwrap();
    entered.recv_timeout(Duration::from_secs(30)).expect("the callback started");
    let outcome = m.close(s).unwrap();
    release_tx.send(()).unwrap();
    assert_eq!(outcome, CloseOutcome::Pending, "a callback of the session is running: the close must be pending");
    assert_eq!(order.recv_timeout(Duration::from_secs(30)).unwrap(), "callback returned");
    assert_eq!(order.recv_timeout(Duration::from_secs(30)).unwrap(), "close completed");
    m.shutdown().unwrap();
}

/// 8.2: closing from inside the callback still works: pending, and exactly
/// one CloseCompleted after the callback returns.
#[test]
fn close_from_inside_the_callback_completes_once_after_it() {
    let m = solo();
    let (tx, rx) = mpsc::channel::<String>();
    let tx = Mutex::new(tx);
    let m2 = m.clone();
    let cb: mps::Callback = Arc::new(move |ev| match ev {
        Event::MessageSent { session, .. } => {
            let r = m2.close(session);
            tx.lock().unwrap().send(format!("closed inside: {r:?}")).unwrap();
        }
        Event::CloseCompleted { .. } => tx.lock().unwrap().send("close completed".into()).unwrap(),
        Event::MessageReceived(_) => {}
    });
    let s = m.open(Some(cb), 0, 0, "SelfClose", 0).unwrap();
    m.send_async(s, A, MessageBuf::from_slice(b"x").unwrap(), 1, 1, 0).unwrap();
    assert_eq!(rx.recv_timeout(Duration::from_secs(30)).unwrap(), "closed inside: Ok(Pending)");
    assert_eq!(rx.recv_timeout(Duration::from_secs(30)).unwrap(), "close completed");
    // Nothing else arrives: the shutdown below delivers whatever is queued.
    m.shutdown().unwrap();
    assert!(rx.try_recv().is_err(), "exactly one CloseCompleted");
}

/// The sender side of a stream: asynchronous sends with a window, recording
/// which sequence numbers were confirmed STATUS_SUCCESS.
struct Stream {
    window: Mutex<(usize, Vec<u32>)>,
    cv: Condvar,
}

impl Stream {
    fn new() -> Arc<Stream> {
        Arc::new(Stream { window: Mutex::new((0, Vec::new())), cv: Condvar::new() })
    }
    fn callback(self: &Arc<Self>) -> mps::Callback {
        let me = self.clone();
        Arc::new(move |ev| {
            if let Event::MessageSent { status, tag, .. } = ev {
                let mut w = me.window.lock().unwrap();
                w.0 -= 1;
                if status == Status::STATUS_SUCCESS {
                    w.1.push(tag);
                }
                me.cv.notify_all();
            }
        })
    }
    /// Waits until fewer than `n` sends are in flight (30 s at most).
    fn wait_below(&self, n: usize) {
        let deadline = Instant::now() + Duration::from_secs(30);
        let mut w = self.window.lock().unwrap();
        while w.0 >= n {
            let left = deadline.checked_duration_since(Instant::now()).expect("sends complete within 30 s");
            w = self.cv.wait_timeout(w, left).unwrap().0;
        }
    }
}

/// 8.3: a message confirmed STATUS_SUCCESS always reaches the session, even
/// when the receiver closes its session in the window between the
/// confirmation and the dispatch (the reader confirms a whole read's messages,
/// then dispatches them one by one; a close from the callback of the first one
/// lands in the middle of that) and then reopens it.
#[test]
fn a_confirmed_message_reaches_a_session_that_closes_and_reopens() {
    let (ma, mb) = inproc_pair("");
    let stream = Stream::new();
    let sa = ma.open(Some(stream.callback()), 0, 0, "Flap", 0).unwrap();
    // What the receiver's callbacks saw, in order.
    enum Seen {
        Message(u32),
        ClosedNow,
        Pending,
        CloseCompleted,
    }
    let (tx, rx) = mpsc::channel::<Seen>();
    let tx = Mutex::new(tx);
    let closing = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let receiver_cb: mps::Callback = {
        let (mb, closing) = (mb.clone(), closing.clone());
        Arc::new(move |ev| match ev {
            Event::MessageReceived(r) => {
                let tx = tx.lock().unwrap();
                tx.send(Seen::Message(u32::from_le_bytes(r.data[..4].try_into().unwrap()))).unwrap();
                // Close at the first message of each incarnation.
                if !closing.swap(true, std::sync::atomic::Ordering::Relaxed) {
                    match mb.close(r.session) {
                        Ok(CloseOutcome::Closed) => tx.send(Seen::ClosedNow).unwrap(),
                        Ok(CloseOutcome::Pending) => tx.send(Seen::Pending).unwrap(),
                        Err(e) => panic!("close from the callback: {e:?}"),
                    }
                }
            }
            Event::CloseCompleted { .. } => tx.lock().unwrap().send(Seen::CloseCompleted).unwrap(),
            Event::MessageSent { .. } => {}
        })
    };
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let sender = {
        let (ma, stream, stop) = (ma.clone(), stream.clone(), stop.clone());
        std::thread::spawn(move || {
            let mut seq = 0u32;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                stream.wait_below(64);
                stream.window.lock().unwrap().0 += 1;
                let mut buf = MessageBuf::new(64).unwrap();
                buf.as_mut_slice()[..4].copy_from_slice(&seq.to_le_bytes());
                if let Err((st, _)) = ma.send_async(sa, B, buf, 64, seq, 0) {
                    stream.window.lock().unwrap().0 -= 1;
                    panic!("send {seq} refused: {st:?}");
                }
                seq += 1;
            }
            stream.wait_below(1);
            seq
        })
    };
    let mut delivered = HashSet::new();
    let mut cycles = 0;
    let deadline = Instant::now() + Duration::from_secs(60);
    // Each cycle: open; the callback closes at the first message; wait until
    // that close is complete (closed at once, or its CloseCompleted); reopen.
    while cycles < 400 && Instant::now() < deadline {
        closing.store(false, std::sync::atomic::Ordering::Relaxed);
        mb.open(Some(receiver_cb.clone()), 0, 0, "Flap", 0).unwrap();
        loop {
            match rx.recv_timeout(Duration::from_secs(30)).expect("messages keep coming, and closes complete") {
                Seen::Message(seq) => {
                    delivered.insert(seq);
                }
                Seen::ClosedNow | Seen::CloseCompleted => break,
                Seen::Pending => {}
            }
        }
        cycles += 1;
    }
    // The stream's tail: open once more (no closing), stop the sender, and
    // take every message that reaches this last incarnation.
    closing.store(true, std::sync::atomic::Ordering::Relaxed);
    let sb = mb.open(Some(receiver_cb.clone()), 0, 0, "Flap", 0).unwrap();
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let sent = sender.join().unwrap();
    if mb.close(sb).unwrap() == CloseOutcome::Pending {
        loop {
            match rx.recv_timeout(Duration::from_secs(30)).expect("the last close completes") {
                Seen::Message(seq) => {
                    delivered.insert(seq);
                }
                Seen::CloseCompleted => break,
                _ => {}
            }
        }
    }
    while let Ok(seen) = rx.try_recv() {
        if let Seen::Message(seq) = seen {
            delivered.insert(seq);
        }
    }
    let confirmed = stream.window.lock().unwrap().1.clone();
    let lost: Vec<u32> = confirmed.iter().copied().filter(|s| !delivered.contains(s)).collect();
    assert!(cycles >= 50, "only {cycles} close/reopen cycles ran");
    assert!(confirmed.len() > 100, "only {} of {sent} messages confirmed", confirmed.len());
    assert!(
        lost.is_empty(),
        "{} of {} messages confirmed STATUS_SUCCESS never reached the session over {cycles} closes (first: {:?})",
        lost.len(),
        confirmed.len(),
        &lost[..lost.len().min(10)]
    );
}

/// SP 0.A (which dials) linked to a 0.B the test plays over a raw Unix
/// socket; `extra` is appended to 0.A's configuration.
fn sp_a_with_raw_b(extra: &str) -> (TempDir, Mps, RawPeer) {
    let (dir, listener, ma) = sp_a_with_listener(extra);
    let fake = RawPeer::accept(&listener, B);
    ma.wait_for_peer(B, Some(Duration::from_secs(30))).unwrap();
    (dir, ma, fake)
}

const HB: &str = "[heartbeat]\ninterval_ms = 20\ndead_peer_timeout_ms = 400\n[reconnect]\ninitial_backoff_ms = 5\nmax_backoff_ms = 50\n";

/// 8.10: a confirmation's status is checked against what the protocol
/// allows; STATUS_PENDING or a made-up value must not become the result of
/// a synchronous send. (The link ends: the peer broke the protocol.)
#[test]
fn a_confirmation_with_a_status_outside_the_protocol_is_not_taken_as_final() {
    for bad in [Status::STATUS_PENDING, Status(0x1234_5678), Status::STATUS_TIMEOUT, Status::STATUS_INVALID_HANDLE] {
        let (_dir, ma, mut fake) = sp_a_with_raw_b(HB);
        let s = ma.open(None, 0, 0, "Odd", 0).unwrap();
        let m2 = ma.clone();
        let sender = std::thread::spawn(move || m2.send_sync(s, B, &MessageBuf::new(1).unwrap(), 1, 0));
        let id = fake.read_message_id();
        fake.confirm(&[(id, bad)]).unwrap();
        let r = within(Duration::from_secs(30), "the synchronous send", move || sender.join().unwrap());
        assert_eq!(r, Err(Status::STATUS_CONNECTION_DISCONNECTED), "a confirmation with {bad:?}");
    }
}

/// 8.10: a confirmation is matched to the connection its message went out
/// on: a new connection from the same peer cannot confirm what was sent on
/// the one it replaced (that message fails with CONNECTION_DISCONNECTED).
#[test]
fn a_new_connection_cannot_confirm_a_message_sent_on_the_one_it_replaced() {
    for round in 0..10 {
        let dir = TempDir::new();
        let pb = dir.0.join("b.sock");
        let mb = sp_with_peer_at("0.B", Some(&pb), "0.A", &dir.0.join("a.sock"), HB);
        let mut old = RawPeer::dial(&pb, A);
        mb.wait_for_peer(A, Some(Duration::from_secs(30))).unwrap();
        let (cb, events) = channel_callback();
        let s = mb.open(Some(cb), 0, 0, "Moved", 0).unwrap();
        mb.send_async(s, A, MessageBuf::new(1).unwrap(), 1, 7, 0).unwrap();
        let id = old.read_message_id();
        // The peer comes back on a new connection and confirms the message
        // that went out on the old one.
        let mut new = RawPeer::dial(&pb, A);
        let _ = new.confirm(&[(id, Status::STATUS_SUCCESS)]);
        match next(&events) {
            Event::MessageSent { status, tag, .. } => {
                assert_eq!((status, tag), (Status::STATUS_CONNECTION_DISCONNECTED, 7), "round {round}")
            }
            e => panic!("unexpected {e:?}"),
        }
        drop(old);
    }
}

/// 8.5: a peer that keeps sending heartbeats but never confirms makes no
/// progress: the oldest unconfirmed message older than the dead-peer timeout
/// ends the link, so the synchronous send returns instead of hanging.
#[test]
fn a_peer_that_heartbeats_but_never_confirms_cannot_hang_a_send() {
    let (_dir, ma, mut fake) = sp_a_with_raw_b(HB);
    // Heartbeats every 10 ms, for as long as the link lives.
    let mut beat = fake.s.try_clone().unwrap();
    let beater = std::thread::spawn(move || {
        use std::io::Write;
        let hb = mps::cmi::frame::heartbeat();
        let t0 = Instant::now();
        while t0.elapsed() < Duration::from_secs(60) && beat.write_all(&hb).is_ok() {
            std::thread::sleep(Duration::from_millis(10)); // the load's pace, not a synchronization
        }
    });
    let s = ma.open(None, 0, 0, "Stuck", 0).unwrap();
    let m2 = ma.clone();
    let t0 = Instant::now();
    let r = within(Duration::from_secs(20), "a synchronous send to a peer that never confirms", move || {
        m2.send_sync(s, B, &MessageBuf::new(1).unwrap(), 1, 0)
    });
    assert_eq!(r, Err(Status::STATUS_CONNECTION_DISCONNECTED));
    assert!(t0.elapsed() >= Duration::from_millis(350), "failed before the dead-peer timeout: {:?}", t0.elapsed());
    let _ = fake.read_message_id();
    drop(fake);
    ma.shutdown().unwrap();
    beater.join().unwrap();
}

/// 8.1: a peer that streams MESSAGE frames and never reads its socket must not
/// make the SP queue confirmations without bound: the SP stops reading it
/// (back-pressure), and ends the link once its queue has stayed stuck past the
/// dead-peer timeout.
#[test]
fn a_peer_that_never_reads_its_confirmations_is_throttled_then_dropped() {
    let (_dir, ma, mut fake) = sp_a_with_raw_b("[heartbeat]\ninterval_ms = 50\ndead_peer_timeout_ms = 3000\n");
    // 50,000 frames per write; the SP answers each read with a CONFIRM that
    // the fake never reads.
    let mut batch = Vec::new();
    for i in 0..50_000u64 {
        batch.extend_from_slice(&RawPeer::message_frame(i, "Nobody", b""));
    }
    fake.s.set_write_timeout(Some(Duration::from_millis(200))).unwrap();
    let mut sent_batches = 0u64;
    let stalled = loop {
        use std::io::Write;
        match fake.s.write_all(&batch) {
            Ok(()) => sent_batches += 1,
            Err(e) if matches!(e.kind(), std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut) => break true,
            Err(e) => panic!("the link ended before the SP stopped reading: {e}"),
        }
        // 4 million unread confirmations (48 MB of CONFIRM frames queued) is
        // far past any bound: the SP never pushed back.
        if sent_batches >= 80 {
            break false;
        }
    };
    assert!(stalled, "the SP read {} messages whose confirmations were never read, and kept reading", sent_batches * 50_000);
    // Then, the queue stuck past the dead-peer timeout, the SP ends the link.
    let t0 = Instant::now();
    while ma.wait_for_peer(B, Some(Duration::ZERO)).is_ok() {
        assert!(t0.elapsed() < Duration::from_secs(20), "the link to a peer that never reads was not dropped");
        std::thread::sleep(Duration::from_millis(10)); // polling a condition with a deadline
    }
}
