//! Session semantics on one SP (loopback: sending to the local SP's own id
//! delivers to the same-named mailbox, SPEC 6), through the safe Rust API.

mod common;
use common::*;
use mps::{CloseOutcome, Event, MessageBuf, Mps, SpId, Status, Timeout};
use std::time::{Duration, Instant};

fn solo() -> Mps {
    let name = unique("solo");
    let cfg = mps::Config::from_toml(&format!("sp = \"3.A\"\nlisten = \"inproc:{name}\"\n"), "test").unwrap();
    Mps::start(cfg).unwrap()
}

const ME: SpId = SpId::a(3);

#[test]
fn synchronous_loopback_delivers_content_tag_and_sender() {
    let m = solo();
    let s = m.open(None, 0, 0x4142_4344, "Mirror", 77).unwrap();
    let buf = MessageBuf::from_slice(b"hello world").unwrap();
    m.send_sync(s, ME, &buf, 5, 42).unwrap();
    let r = m.receive(s, Timeout::Test, 0).unwrap();
    assert_eq!(r.data, b"hello");
    assert_eq!((r.sender, r.tag, r.session, r.context), (ME, 42, s, 77));
}

#[test]
fn zero_length_messages_travel() {
    let m = solo();
    let s = m.open(None, 1, 0, "Zero", 0).unwrap();
    m.send_sync(s, ME, &MessageBuf::new(0).unwrap(), 0, 1).unwrap();
    assert!(m.receive(s, Timeout::Test, 0).unwrap().data.is_empty());
}

#[test]
fn names_collide_within_a_conduit_and_domain_only() {
    let m = solo();
    let a = m.open(None, 0, 1, "Same", 0).unwrap();
    assert_eq!(m.open(None, 0, 1, "Same", 0), Err(Status::STATUS_OBJECT_NAME_COLLISION));
    m.open(None, 1, 1, "Same", 0).unwrap();
    m.open(None, 0, 2, "Same", 0).unwrap();
    assert_eq!(m.close(a), Ok(CloseOutcome::Closed));
    m.open(None, 0, 1, "Same", 0).expect("the name is free after close");
}

#[test]
fn bad_names_and_conduits_are_refused() {
    let m = solo();
    assert_eq!(m.open(None, 0, 0, "", 0), Err(Status::STATUS_INVALID_PARAMETER));
    assert_eq!(m.open(None, 0, 0, &"x".repeat(65), 0), Err(Status::STATUS_INVALID_PARAMETER));
    m.open(None, 0, 0, &"é".repeat(64), 0).expect("64 characters is the bound, whatever their bytes");
    assert_eq!(m.open(None, 32, 0, "NoSuchConduit", 0), Err(Status::STATUS_INVALID_PARAMETER));
}

#[test]
fn stale_and_forged_handles_are_refused() {
    let m = solo();
    let s = m.open(None, 0, 0, "Stale", 0).unwrap();
    m.close(s).unwrap();
    let buf = MessageBuf::new(1).unwrap();
    assert_eq!(m.send_sync(s, ME, &buf, 1, 0), Err(Status::STATUS_INVALID_HANDLE));
    assert_eq!(m.close(s), Err(Status::STATUS_INVALID_HANDLE));
    for forged in [0u64, 1, u64::MAX, s.0 ^ 1, s.0 + (1 << 24)] {
        assert_eq!(m.receive(mps::SessionId(forged), Timeout::Test, 0).unwrap_err(), Status::STATUS_INVALID_HANDLE);
    }
    let reopened = m.open(None, 0, 0, "Stale", 0).unwrap();
    assert_ne!(reopened, s, "a reused slot gets a new handle");
}

#[test]
fn selective_receive_takes_by_transaction_id() {
    let m = solo();
    let s = m.open(None, 0, 0, "Select", 0).unwrap();
    for tag in [1u32, 2, 3] {
        m.send_sync(s, ME, &MessageBuf::from_slice(&[tag as u8]).unwrap(), 1, tag).unwrap();
    }
    assert_eq!(m.receive(s, Timeout::Test, 3).unwrap().data, [3]);
    assert_eq!(m.receive(s, Timeout::Test, 9).unwrap_err(), Status::STATUS_TIMEOUT);
    assert_eq!(m.receive(s, Timeout::Test, 1).unwrap().data, [1]);
    assert_eq!(m.receive(s, Timeout::Test, 0).unwrap().data, [2]);
}

#[test]
fn a_timed_receive_times_out_after_its_seconds() {
    let m = solo();
    let s = m.open(None, 0, 0, "Wait", 0).unwrap();
    let t0 = Instant::now();
    assert_eq!(m.receive(s, Timeout::Seconds(1), 0).unwrap_err(), Status::STATUS_TIMEOUT);
    assert!(t0.elapsed() >= Duration::from_millis(990), "{:?}", t0.elapsed());
}

#[test]
fn a_blocked_receive_is_woken_by_a_message_from_another_thread() {
    let m = solo();
    let s = m.open(None, 0, 0, "Wake", 0).unwrap();
    let receiver = receive_in_thread(&m, s);
    // Waiting already (registered as a waiter) when the message is sent: the
    // message goes to it, not to the queue.
    wait_for_receivers(&m, s, 1);
    m.send_sync(s, ME, &MessageBuf::from_slice(b"x").unwrap(), 1, 5).unwrap();
    assert_eq!(receiver.join().unwrap().unwrap().data, b"x");
    assert_eq!(m.session_info(s).unwrap().queued, 0);
}

#[test]
fn close_cancels_blocked_receivers_and_is_pending_until_they_leave() {
    let m = solo();
    let (cb, events) = channel_callback();
    let s = m.open(Some(cb), 0, 0, "Cancel", 0).unwrap();
    let receiver = receive_in_thread(&m, s);
    // Registered as a waiter (under the session's lock, with the count that
    // session_info reports): the close finds it, so it must be pending.
    wait_for_receivers(&m, s, 1);
    assert_eq!(m.close(s), Ok(CloseOutcome::Pending), "a receiver is inside receive");
    assert_eq!(receiver.join().unwrap().unwrap_err(), Status::STATUS_CANCELLED);
    // The close completes once the receiver has left, with one event.
    match next(&events) {
        Event::CloseCompleted { session, status } => assert_eq!((session, status), (s, Status::STATUS_SUCCESS)),
        e => panic!("unexpected {e:?}"),
    }
    assert_eq!(m.session_info(s).unwrap_err(), Status::STATUS_INVALID_HANDLE, "closed");
    assert!(events.try_recv().is_err(), "exactly one close event");
}

#[test]
fn asynchronous_sends_complete_once_each_in_order_and_arrive_in_order() {
    let m = solo();
    let (cb, events) = channel_callback();
    let s = m.open(Some(cb), 0, 0, "Async", 9).unwrap();
    for i in 0..500u32 {
        let buf = MessageBuf::from_slice(&i.to_le_bytes()).unwrap();
        m.send_async(s, ME, buf, 4, i, i as usize).unwrap();
    }
    let (mut sent, mut received) = (0u32, 0u32);
    while sent < 500 || received < 500 {
        match next(&events) {
            Event::MessageSent { status, tag, context, buffer, session } => {
                assert_eq!((status, tag, context, session), (Status::STATUS_SUCCESS, sent, sent as usize, s));
                assert_eq!(buffer.as_slice(), sent.to_le_bytes());
                sent += 1;
            }
            Event::MessageReceived(r) => {
                assert_eq!(r.data, received.to_le_bytes());
                assert_eq!((r.tag, r.context), (received, 9));
                received += 1;
            }
            e => panic!("unexpected {e:?}"),
        }
    }
}

/// A session opened without a callback cannot send asynchronously (nothing
/// could report the completion), but it does receive asynchronous messages:
/// they are queued for `receive` (SPEC 4). The receiving session must be
/// another than the sending one, so this test needs two SPs (a loopback send
/// goes to the sender's own session): 0.A's "NoCb" has a callback and sends,
/// 0.B's "NoCb" has none and receives.
#[test]
fn a_session_without_callback_cannot_send_async_but_receives_async_messages() {
    let (ma, mb) = inproc_pair("");
    let (cb, events) = channel_callback();
    let sender = ma.open(Some(cb), 0, 0, "NoCb", 0).unwrap();
    let receiver = mb.open(None, 0, 0, "NoCb", 5).unwrap();
    let (st, buf) = mb.send_async(receiver, ma.local_sp(), MessageBuf::from_slice(b"r").unwrap(), 1, 0, 0).unwrap_err();
    assert_eq!((st, buf.as_slice()), (Status::STATUS_INVALID_PARAMETER, &b"r"[..]), "refused, the buffer handed back");
    ma.send_async(sender, mb.local_sp(), MessageBuf::from_slice(b"q").unwrap(), 1, 8, 0).unwrap();
    match next(&events) {
        Event::MessageSent { status, tag, .. } => assert_eq!((status, tag), (Status::STATUS_SUCCESS, 8)),
        e => panic!("unexpected {e:?}"),
    }
    // Confirmed means accepted into the session: a test receive finds it.
    let r = mb.receive(receiver, Timeout::Test, 0).expect("queued for receive");
    assert_eq!((r.data.as_slice(), r.tag, r.sender, r.session, r.context), (&b"q"[..], 8, ma.local_sp(), receiver, 5));
    assert_eq!(mb.session_info(receiver).unwrap().queued, 0);
    assert!(events.try_recv().is_err(), "the sender's callback got its completion only");
}

#[test]
fn sizes_are_checked_against_the_buffer_and_the_limit() {
    let name = unique("limits");
    let cfg = mps::Config::from_toml(&format!("sp = \"3.A\"\nlisten = \"inproc:{name}\"\n[limits]\nmax_message_size = 100\n"), "t").unwrap();
    let m = Mps::start(cfg).unwrap();
    let s = m.open(None, 0, 0, "Size", 0).unwrap();
    let buf = MessageBuf::new(200).unwrap();
    assert_eq!(m.send_sync(s, ME, &buf, 201, 0), Err(Status::STATUS_INVALID_USER_BUFFER));
    assert_eq!(m.send_sync(s, ME, &buf, 101, 0), Err(Status::STATUS_INVALID_BUFFER_SIZE));
    m.send_sync(s, ME, &buf, 100, 0).unwrap();
}

#[test]
fn a_full_queue_rejects_back_to_the_sender() {
    let name = unique("full");
    let cfg = mps::Config::from_toml(&format!("sp = \"3.A\"\nlisten = \"inproc:{name}\"\n[limits]\nsession_queue_depth = 2\n"), "t").unwrap();
    let m = Mps::start(cfg).unwrap();
    let s = m.open(None, 0, 0, "Full", 0).unwrap();
    let buf = MessageBuf::new(1).unwrap();
    m.send_sync(s, ME, &buf, 1, 0).unwrap();
    m.send_sync(s, ME, &buf, 1, 0).unwrap();
    assert_eq!(m.send_sync(s, ME, &buf, 1, 0), Err(Status::STATUS_INSUFFICIENT_RESOURCES));
    m.receive(s, Timeout::Test, 0).unwrap();
    m.send_sync(s, ME, &buf, 1, 0).expect("room again after a receive");
}

#[test]
fn unconfigured_destinations_are_invalid_addresses() {
    let m = solo();
    let s = m.open(None, 0, 0, "Addr", 0).unwrap();
    let buf = MessageBuf::new(1).unwrap();
    assert_eq!(m.send_sync(s, SpId::b(3), &buf, 1, 0), Err(Status::STATUS_INVALID_ADDRESS));
    assert_eq!(m.send_sync(s, SpId { unit: 3, sp: 7 }, &buf, 1, 0), Err(Status::STATUS_INVALID_ADDRESS));
}

#[test]
fn a_callback_may_send_synchronously_and_close_its_own_session() {
    let m = solo();
    let sink = m.open(None, 0, 0, "CbSink", 0).unwrap();
    let (tx, done) = std::sync::mpsc::channel();
    let tx = std::sync::Mutex::new(tx);
    let m2 = m.clone();
    let cb: mps::Callback = std::sync::Arc::new(move |ev| {
        if let Event::MessageReceived(r) = ev {
            // Reply synchronously on another session, then close our own.
            let _ = sink;
            let reply = MessageBuf::from_slice(&r.data).unwrap();
            let sent = m2.send_sync(r.session, ME, &reply, reply.len(), 99);
            let closed = m2.close(r.session);
            tx.lock().unwrap().send((sent, closed)).unwrap();
        }
    });
    let s = m.open(Some(cb), 0, 0, "CbSelf", 0).unwrap();
    m.send_async(s, ME, MessageBuf::from_slice(b"ping").unwrap(), 4, 1, 0).unwrap();
    let (sent, closed) = done.recv_timeout(Duration::from_secs(30)).expect("the callback ran without deadlock");
    assert_eq!(sent, Ok(()));
    assert!(closed.is_ok(), "{closed:?}");
    m.shutdown().unwrap();
}

#[test]
fn shutdown_invalidates_handles_and_joins() {
    let m = solo();
    let s = m.open(None, 0, 0, "Down", 0).unwrap();
    m.shutdown().unwrap();
    assert_eq!(m.receive(s, Timeout::Test, 0).unwrap_err(), Status::STATUS_INVALID_HANDLE);
    assert_eq!(m.open(None, 0, 0, "Down", 0), Err(Status::STATUS_INVALID_HANDLE));
}

#[test]
fn a_queue_full_of_bytes_rejects_back_to_the_sender() {
    let name = unique("bytes");
    let cfg = mps::Config::from_toml(&format!("sp = \"3.A\"\nlisten = \"inproc:{name}\"\n[limits]\nmax_message_size = 1024\nsession_queue_bytes = 1024\n"), "t").unwrap();
    let m = Mps::start(cfg).unwrap();
    let s = m.open(None, 0, 0, "Bytes", 0).unwrap();
    let buf = MessageBuf::new(600).unwrap();
    m.send_sync(s, ME, &buf, 600, 0).unwrap();
    assert_eq!(m.send_sync(s, ME, &buf, 600, 0), Err(Status::STATUS_INSUFFICIENT_RESOURCES));
    m.send_sync(s, ME, &buf, 424, 0).expect("exactly at the bound fits");
    m.receive(s, Timeout::Test, 0).unwrap();
    m.send_sync(s, ME, &buf, 600, 0).expect("room again after a receive");
}

#[test]
fn session_info_reports_queued_messages_receivers_and_closing() {
    let m = solo();
    let s = m.open(None, 0, 0, "Info", 0).unwrap();
    assert_eq!(m.session_info(s).unwrap(), mps::SessionInfo::default());
    m.send_sync(s, ME, &MessageBuf::new(1).unwrap(), 1, 0).unwrap();
    assert_eq!(m.session_info(s).unwrap().queued, 1);
    m.receive(s, Timeout::Test, 0).unwrap();
    let receiver = receive_in_thread(&m, s);
    // The receiver registers before it blocks; the report says so exactly.
    wait_for_receivers(&m, s, 1);
    assert_eq!(m.close(s), Ok(CloseOutcome::Pending));
    assert_eq!(receiver.join().unwrap().unwrap_err(), Status::STATUS_CANCELLED);
    assert_eq!(m.session_info(s).unwrap_err(), Status::STATUS_INVALID_HANDLE);
}

/// `sp_pending_events` read outside a callback counts the events queued for
/// every session's callback and not yet started; read from a callback, what
/// is left of the delivery its event came in: a loopback send's completion
/// and its arrival are each a delivery of their own, so every callback here
/// sees 0 (tests/sp_pending_callbacks.rs has deliveries of several).
#[test]
fn sp_pending_events_counts_all_queued_outside_a_callback_and_the_delivery_left_inside() {
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::{Arc, Condvar, Mutex};
    let m = solo();
    // The first event holds its worker until the test has seen the rest
    // queued; then every callback reports what is queued behind it.
    let gate = Arc::new((Mutex::new(false), Condvar::new()));
    let first = Arc::new(AtomicBool::new(true));
    let (tx, rx) = std::sync::mpsc::channel::<usize>();
    let tx = Mutex::new(tx);
    let (g, f, m2) = (gate.clone(), first.clone(), m.clone());
    let cb: mps::Callback = Arc::new(move |ev| {
        let s = match &ev {
            mps::Event::MessageSent { session, .. } => *session,
            mps::Event::MessageReceived(r) => r.session,
            mps::Event::CloseCompleted { session, .. } => *session,
        };
        if f.swap(false, Ordering::AcqRel) {
            let mut open = g.0.lock().unwrap();
            while !*open {
                open = g.1.wait(open).unwrap();
            }
        }
        tx.lock().unwrap().send(m2.session_info(s).unwrap().sp_pending_events).unwrap();
    });
    // Sent to this SP's own session: each message makes two events on it,
    // its arrival and its send's completion.
    let a = m.open(Some(cb), 0, 0, "PendA", 0).unwrap();
    for tag in 0..3 {
        m.send_async(a, ME, MessageBuf::new(1).unwrap(), 1, tag, 0).unwrap();
    }
    let t0 = std::time::Instant::now();
    while m.session_info(a).unwrap().pending_events != 5 {
        assert!(t0.elapsed() < std::time::Duration::from_secs(30), "the six events never queued");
        std::thread::yield_now();
    }
    assert_eq!(m.session_info(a).unwrap().sp_pending_events, 5, "five queued behind the one running");
    *gate.0.lock().unwrap() = true;
    gate.1.notify_all();
    let seen: Vec<usize> = (0..6).map(|_| rx.recv_timeout(std::time::Duration::from_secs(30)).unwrap()).collect();
    assert_eq!(seen, vec![0; 6], "each callback is the last of its own delivery");
    assert_eq!(m.session_info(a).unwrap().sp_pending_events, 0);
}
