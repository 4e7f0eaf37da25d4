//! Issue 9, item 7: the point of confirmation. SP 0.A receives (its
//! `link.confirm` is set per test), SP 0.B sends, over Unix-domain sockets.
//!
//! How a test proves that a confirmation has *not* left yet without waiting
//! for time to pass: A sends B a marker on the same link after the message
//! is in A's session. Frames of one direction of a link are read in order, so
//! had A confirmed on acceptance, B would have read the confirmation (and
//! completed the send) before the marker; if B holds the marker and the send
//! is still outstanding, the confirmation was not sent. Each such test has
//! its control with `accepted`, where the same observation comes out the
//! other way: the check can tell the two modes apart.

use super::panic_tests::{channel_callback, expect_log, unix_pair, unix_pair_with, wait_until, within, A, B, WAIT};
use super::*;
use std::sync::mpsc;

const DELIVERED: &str = "[link]\nconfirm = \"delivered\"\n";
const ACCEPTED: &str = "[link]\nconfirm = \"accepted\"\n";

fn buf(b: &[u8]) -> MessageBuf {
    MessageBuf::from_slice(b).unwrap()
}

/// Sends of `m`'s SP to `peer` still awaiting their confirmation.
fn outstanding(m: &Mps, peer: SpId) -> usize {
    m.owner.core.outstanding[&peer].lock().len()
}

/// A sends B a marker (async, from a callback session "Marker" to B's
/// receive queue) and B takes it: B has then read everything A wrote to the
/// link before it.
fn marker_through(ma: &Mps, mb: &Mps, ma_marker: SessionId, mb_marker: SessionId) {
    ma.send_async(ma_marker, B, buf(b"marker"), 6, 9, 0).map_err(|(st, _)| st).unwrap();
    assert_eq!(mb.receive(mb_marker, Timeout::Seconds(10), 0).unwrap().data, b"marker");
}

/// B sends A a synchronous message that A's client does not receive yet;
/// returns whether the send was still awaiting its confirmation once B had
/// the marker that A sent after the message was in its session. Then A
/// receives it, and the send returns STATUS_SUCCESS.
fn sync_send_outstanding_at_marker(what: &str, extra_a: &str) -> bool {
    let (_dir, ma, mb) = unix_pair(what, extra_a);
    let ra = ma.open(None, 0, 0, "Sync", 0).unwrap();
    let sb = mb.open(None, 0, 0, "Sync", 0).unwrap();
    let (mcb, _marker_events) = channel_callback();
    let ma_marker = ma.open(Some(mcb), 0, 0, "Marker", 0).unwrap();
    let mb_marker = mb.open(None, 0, 0, "Marker", 0).unwrap();

    let (done_tx, done) = mpsc::channel();
    let m = mb.clone();
    let sender = std::thread::spawn(move || {
        let _ = done_tx.send(m.send_sync(sb, A, &buf(b"one"), 3, 1));
    });
    wait_until("the message is queued in A's session", || ma.session_info(ra).map(|i| i.queued) == Ok(1));
    marker_through(&ma, &mb, ma_marker, mb_marker);
    let still = outstanding(&mb, A) == 1;
    if still {
        assert!(done.try_recv().is_err(), "the synchronous send returned while its message was still unconfirmed");
        assert_eq!(mb.session_info(sb).unwrap().sends, 1, "the synchronous send is still in its call");
    }
    assert_eq!(ma.receive(ra, Timeout::Seconds(10), 0).unwrap().data, b"one");
    assert_eq!(done.recv_timeout(WAIT).expect("the synchronous send returned"), Ok(()));
    sender.join().unwrap();
    still
}

/// `delivered`: a synchronous send does not return before the target's
/// `receive` has handed its message over.
#[test]
fn a_sync_send_to_a_delivered_sp_returns_only_once_receive_has_the_message() {
    assert!(
        sync_send_outstanding_at_marker("dlv-sync", DELIVERED),
        "the target confirmed a message its client had not received (it was confirmed before the marker)"
    );
}

/// The control: `accepted` confirms before the message is queued (FIG. 8A).
#[test]
fn a_sync_send_to_an_accepting_sp_is_confirmed_before_receive() {
    assert!(!sync_send_outstanding_at_marker("acc-sync", ACCEPTED), "the target held back its confirmation");
}

/// Version 1 cannot say `delivered` to the peer: such a link confirms on
/// acceptance, and says so in the log.
#[test]
fn a_version_1_link_confirms_on_acceptance_with_a_warning() {
    let extra = "[link]\nconfirm = \"delivered\"\nmax_protocol_version = 1\n";
    assert!(!sync_send_outstanding_at_marker("dlv-v1", extra), "a version-1 link held back a confirmation");
    expect_log(&["Warn", "protocol version 1", "on acceptance", "link.confirm = \"delivered\" needs version 2"]);
}

/// What B's session saw first once A's callback held the message: the
/// marker A sent meanwhile (A's confirmation not sent yet) or the send's
/// completion. Then the callback is let go and the other event follows.
fn async_first_event(what: &str, extra_a: &str) -> &'static str {
    let (_dir, ma, mb) = unix_pair(what, extra_a);
    let (got_tx, got) = mpsc::channel::<Vec<u8>>();
    let (release_tx, release) = mpsc::channel::<()>();
    let (got_tx, release) = (Mutex::new(got_tx), Mutex::new(release));
    let (returned_tx, returned) = mpsc::channel::<()>();
    let returned_tx = Mutex::new(returned_tx);
    let cb_a: Callback = Arc::new(move |ev| {
        if let Event::MessageReceived(m) = ev {
            if m.data == b"one" {
                got_tx.lock().send(m.data).unwrap();
                // Held until the test lets it go (bounded: a failed test
                // never leaves a callback thread blocked for ever).
                let _ = release.lock().recv_timeout(WAIT);
                returned_tx.lock().send(()).unwrap();
            }
        }
    });
    let ra = ma.open(Some(cb_a), 0, 0, "Async", 0).unwrap();
    let (cb_b, events) = channel_callback();
    let sb = mb.open(Some(cb_b), 0, 0, "Async", 0).unwrap();

    mb.send_async(sb, A, buf(b"one"), 3, 1, 7).map_err(|(st, _)| st).unwrap();
    assert_eq!(got.recv_timeout(WAIT).expect("A's callback has the message"), b"one");
    // The marker, from A's session (whose callback is busy) to B's, with a
    // callback: its MessageReceived is one of B's session's events, in order
    // with the completion of the send.
    ma.send_async(ra, B, buf(b"marker"), 6, 2, 0).map_err(|(st, _)| st).unwrap();
    let kind = |ev: Event| match ev {
        Event::MessageReceived(m) => {
            assert_eq!(m.data, b"marker");
            "marker"
        }
        Event::MessageSent { context, status, .. } => {
            assert_eq!((context, status), (7, Status::STATUS_SUCCESS));
            "completion"
        }
        other => panic!("unexpected event {other:?}"),
    };
    let first = kind(events.recv_timeout(WAIT).expect("an event at B"));
    if first == "marker" {
        assert!(returned.try_recv().is_err(), "A's callback returned before the test let it go");
    }
    release_tx.send(()).unwrap();
    let second = kind(events.recv_timeout(WAIT).expect("the other event at B"));
    assert_ne!(first, second);
    if second == "completion" {
        // The completion came after the callback returned (it sends its
        // notice before returning; the confirmation leaves after that).
        returned.try_recv().expect("the completion came before A's callback returned");
    }
    first
}

/// `delivered`: an asynchronous send completes after the callback that
/// received its message has returned.
#[test]
fn an_async_send_to_a_delivered_sp_completes_after_the_receiving_callback_returned() {
    assert_eq!(async_first_event("dlv-async", DELIVERED), "marker");
}

/// The control: `accepted` completes it while that callback still runs.
#[test]
fn an_async_send_to_an_accepting_sp_completes_while_the_callback_runs() {
    assert_eq!(async_first_event("acc-async", ACCEPTED), "completion");
}

/// A callback that panics has had its message handed over: the send is
/// confirmed STATUS_SUCCESS (decided and documented in docs/DESIGN.md).
#[test]
fn a_message_whose_callback_panicked_is_confirmed_success() {
    let (_dir, ma, mb) = unix_pair("dlv-panic", DELIVERED);
    let cb_a: Callback = Arc::new(|ev| {
        if let Event::MessageReceived(m) = ev {
            panic!("injected fault: a client callback panics on {:?}", m.data);
        }
    });
    let _ra = ma.open(Some(cb_a), 0, 0, "Panics", 0).unwrap();
    let (cb_b, events) = channel_callback();
    let sb = mb.open(Some(cb_b), 0, 0, "Panics", 0).unwrap();
    mb.send_async(sb, A, buf(b"boom"), 4, 1, 3).map_err(|(st, _)| st).unwrap();
    match events.recv_timeout(WAIT).expect("the completion") {
        Event::MessageSent { context: 3, status, .. } => assert_eq!(status, Status::STATUS_SUCCESS),
        other => panic!("unexpected event {other:?}"),
    }
    expect_log(&["callback of session", "panicked"]);
}

/// Messages queued in a session that closes are discarded: their senders,
/// synchronous and asynchronous, hear STATUS_PIPE_CLOSING, never SUCCESS.
#[test]
fn messages_discarded_at_close_are_confirmed_pipe_closing() {
    let (_dir, ma, mb) = unix_pair("dlv-close", DELIVERED);
    let ra = ma.open(None, 0, 0, "Closes", 0).unwrap();
    let (cb_b, events) = channel_callback();
    let sb = mb.open(Some(cb_b), 0, 0, "Closes", 0).unwrap();
    // An asynchronous message to a session without a callback is queued too.
    mb.send_async(sb, A, buf(b"async"), 5, 1, 4).map_err(|(st, _)| st).unwrap();
    let m = mb.clone();
    let sender = std::thread::spawn(move || m.send_sync(sb, A, &buf(b"sync"), 4, 2));
    wait_until("both messages queued in A's session", || ma.session_info(ra).map(|i| i.queued) == Ok(2));
    assert_eq!(ma.close(ra), Ok(CloseOutcome::Closed));
    assert_eq!(within("the synchronous send", move || sender.join().unwrap()), Err(Status::STATUS_PIPE_CLOSING));
    match events.recv_timeout(WAIT).expect("the asynchronous completion") {
        Event::MessageSent { context: 4, status, .. } => assert_eq!(status, Status::STATUS_PIPE_CLOSING),
        other => panic!("unexpected event {other:?}"),
    }
    assert_eq!(outstanding(&mb, A), 0);
    expect_log(&["closed with 2 queued message(s) not received"]);
}

/// A message accepted into a session (its place reserved) that closes before
/// the message is dispatched: the close waits for it, and then it is
/// discarded with its receipt, never confirmed SUCCESS.
#[test]
fn a_message_dispatched_into_a_closing_session_is_discarded_not_confirmed() {
    let (_dir, ma, _mb) = unix_pair("dlv-closing", DELIVERED);
    let core = &ma.owner.core;
    let ra = ma.open(None, 0, 0, "Closing", 0).unwrap();
    let inbound = InboundMessage { conduit: 0, domain: 0, tag: 1, sync: true, name: "Closing", payload: vec![1], confirm_later: None };
    let mut a = core.accept(B, inbound).expect("accepted");
    let slot = SyncSlot::new();
    a.receipt = Some(Receipt(Some(Owed::Local(core.me.clone(), Box::new(Pending::Sync(slot.clone()))))));
    assert_eq!(ma.close(ra), Ok(CloseOutcome::Pending), "a reserved message keeps the close pending");
    core.dispatch(a);
    assert!(slot.is_done(), "the discarded message's sender was answered at once");
    assert_eq!(slot.wait(), Status::STATUS_PIPE_CLOSING);
    assert_eq!(ma.session_info(ra).err(), Some(Status::STATUS_INVALID_HANDLE), "the close completed");
}

/// At shutdown the links close first: a message queued and never received
/// is failed by the link's end (STATUS_CONNECTION_DISCONNECTED), not
/// confirmed.
#[test]
fn a_message_queued_at_shutdown_is_failed_by_the_links_end() {
    let (_dir, ma, mb) = unix_pair_with("dlv-shutdown", DELIVERED, "[link]\nresume_timeout_ms = 100\n");
    let ra = ma.open(None, 0, 0, "Down", 0).unwrap();
    let sb = mb.open(None, 0, 0, "Down", 0).unwrap();
    let m = mb.clone();
    let sender = std::thread::spawn(move || m.send_sync(sb, A, &buf(b"lost"), 4, 1));
    wait_until("the message is queued in A's session", || ma.session_info(ra).map(|i| i.queued) == Ok(1));
    let a = ma.clone();
    within("A's shutdown", move || a.shutdown()).unwrap();
    assert_eq!(within("the synchronous send", move || sender.join().unwrap()), Err(Status::STATUS_CONNECTION_DISCONNECTED));
}

/// One SP, sending to itself.
fn solo(extra: &str) -> Mps {
    static N: AtomicU64 = AtomicU64::new(0);
    let name = format!("dlv-solo-{}-{}", std::process::id(), N.fetch_add(1, Ordering::Relaxed));
    Mps::start(Config::from_toml(&format!("sp = \"3.A\"\nlisten = \"inproc:{name}\"\n{extra}"), "test").unwrap()).unwrap()
}

/// Loopback follows the same rule: a synchronous send to the SP itself
/// returns once `receive` has the message.
#[test]
fn a_loopback_sync_send_returns_once_receive_has_the_message() {
    let m = solo(DELIVERED);
    let me = m.local_sp();
    let s = m.open(None, 0, 0, "Self", 0).unwrap();
    let (done_tx, done) = mpsc::channel();
    let m2 = m.clone();
    let sender = std::thread::spawn(move || {
        let _ = done_tx.send(m2.send_sync(s, me, &buf(b"self"), 4, 1));
    });
    wait_until("the message is queued", || m.session_info(s).map(|i| i.queued) == Ok(1));
    {
        let sess = m.owner.core.table.get(s).unwrap();
        let st = sess.st.lock();
        assert!(st.queue[0].receipt.is_some(), "the queued message owes its sender the confirmation");
    }
    assert!(done.try_recv().is_err());
    assert_eq!(m.session_info(s).unwrap().sends, 1, "the send is still in its call");
    assert_eq!(m.receive(s, Timeout::Seconds(10), 0).unwrap().data, b"self");
    assert_eq!(done.recv_timeout(WAIT).expect("the send returned"), Ok(()));
    sender.join().unwrap();
}

/// The order of one session's events for an asynchronous send to itself.
fn loopback_async_events(extra: &str) -> Vec<&'static str> {
    let m = solo(extra);
    let me = m.local_sp();
    let (cb, events) = channel_callback();
    let s = m.open(Some(cb), 0, 0, "SelfAsync", 0).unwrap();
    m.send_async(s, me, buf(b"self"), 4, 1, 5).map_err(|(st, _)| st).unwrap();
    (0..2)
        .map(|_| match events.recv_timeout(WAIT).expect("an event") {
            Event::MessageReceived(r) if r.data == b"self" => "received",
            Event::MessageSent { context: 5, status: Status::STATUS_SUCCESS, .. } => "sent",
            other => panic!("unexpected event {other:?}"),
        })
        .collect()
}

#[test]
fn a_loopback_async_send_completes_after_its_callback_when_delivered() {
    assert_eq!(loopback_async_events(DELIVERED), ["received", "sent"]);
    assert_eq!(loopback_async_events(ACCEPTED), ["sent", "received"], "the control: confirmed on acceptance");
}

/// A loopback message discarded by a close: its send (of the closing session
/// itself, which keeps the close pending) returns STATUS_PIPE_CLOSING, and
/// then the close completes.
#[test]
fn a_loopback_message_discarded_at_close_fails_its_send_with_pipe_closing() {
    let m = solo(DELIVERED);
    let me = m.local_sp();
    let s = m.open(None, 0, 0, "SelfClose", 0).unwrap();
    let m2 = m.clone();
    let sender = std::thread::spawn(move || m2.send_sync(s, me, &buf(b"self"), 4, 1));
    wait_until("the message is queued", || m.session_info(s).map(|i| i.queued) == Ok(1));
    assert_eq!(m.close(s), Ok(CloseOutcome::Pending), "its own send is in progress");
    assert_eq!(within("the loopback send", move || sender.join().unwrap()), Err(Status::STATUS_PIPE_CLOSING));
    wait_until("the close completed", || m.session_info(s).err() == Some(Status::STATUS_INVALID_HANDLE));
}

/// At shutdown a loopback message still queued is discarded, and its send
/// (to the SP itself) returns STATUS_PIPE_CLOSING, not SUCCESS.
#[test]
fn a_loopback_message_queued_at_shutdown_fails_its_send_with_pipe_closing() {
    let m = solo(DELIVERED);
    let me = m.local_sp();
    let s = m.open(None, 0, 0, "SelfDown", 0).unwrap();
    let m2 = m.clone();
    let sync = std::thread::spawn(move || m2.send_sync(s, me, &buf(b"sync"), 4, 1));
    wait_until("the message is queued", || m.session_info(s).map(|i| i.queued) == Ok(1));
    let m3 = m.clone();
    within("the shutdown", move || m3.shutdown()).unwrap();
    assert_eq!(within("the loopback send", move || sync.join().unwrap()), Err(Status::STATUS_PIPE_CLOSING));
}
