//! Unit tests that drive the transport's upcalls (`accept`, then `dispatch`)
//! by hand, as two links' reading threads would, to put a session in states
//! a real link only passes through for a few instructions.

use super::*;
use std::sync::mpsc;

fn solo() -> Mps {
    let name = format!("unit-{}-{}", std::process::id(), NEXT.fetch_add(1, Ordering::Relaxed));
    Mps::start(Config::from_toml(&format!("sp = \"3.A\"\nlisten = \"inproc:{name}\"\n"), "test").unwrap()).unwrap()
}

static NEXT: AtomicU64 = AtomicU64::new(0);

/// The transport's view of `m`: what a link's reading thread calls.
fn upcalls(m: &Mps) -> Up {
    Up(Arc::downgrade(&m.owner.core))
}

/// A synchronous message for mailbox "T" with tag `tag` and one byte.
fn msg(tag: u32) -> InboundMessage<'static> {
    InboundMessage { conduit: 0, domain: 0, tag, sync: true, name: "T", payload: vec![tag as u8], confirm_later: None }
}

/// A peer SP the messages come from (not configured: `accept` does not care).
const LINK: SpId = SpId::b(3);

/// Runs `receive(s, Test, transaction)` on a thread; returns once that thread
/// is blocked in the kernel (a futex: the only thing it can wait on there is
/// the session's condition variable), and the channel its result comes on.
fn blocked_test_receive(m: &Mps, s: SessionId, transaction: u32) -> mpsc::Receiver<Result<ReceivedMessage, Status>> {
    let (tid_tx, tid_rx) = mpsc::channel();
    let (tx, rx) = mpsc::channel();
    let m = m.clone();
    std::thread::spawn(move || {
        let tid = std::fs::read_link("/proc/thread-self").unwrap();
        tid_tx.send(tid.file_name().unwrap().to_str().unwrap().parse::<u32>().unwrap()).unwrap();
        let _ = tx.send(m.receive(s, Timeout::Test, transaction));
    });
    let tid = tid_rx.recv().unwrap();
    let t0 = Instant::now();
    loop {
        let call = std::fs::read_to_string(format!("/proc/self/task/{tid}/syscall")).unwrap_or_default();
        if call.split_whitespace().next().and_then(|n| n.parse::<i64>().ok()) == Some(libc::SYS_futex) {
            break;
        }
        assert!(t0.elapsed() < Duration::from_secs(30), "the test receive never blocked (it returned {:?})", rx.try_recv());
        std::thread::yield_now();
    }
    rx
}

/// A test receive may wait for a message confirmed before it began (FIG. 8A:
/// confirmed, then dispatched), and finds it: the guarantee the wait is for.
#[test]
fn a_test_receive_finds_a_message_confirmed_before_it_began() {
    let m = solo();
    let s = m.open(None, 0, 0, "T", 0).unwrap();
    let up = upcalls(&m);
    let confirmed = up.accept(LINK, msg(5)).unwrap();
    let rx = blocked_test_receive(&m, s, 0);
    up.dispatch(confirmed);
    let r = rx.recv_timeout(Duration::from_secs(10)).expect("the test receive returned once the message was dispatched");
    assert_eq!(r.unwrap().tag, 5);
}

/// Item 16(b): link 2 has a message between its acceptance and its dispatch
/// while link 1 delivers one. The test receive must take link 1's message
/// then, not wait until link 2's is dispatched too: with two busy links there
/// may never be a moment when neither has one in flight.
#[test]
fn a_test_receive_takes_a_queued_message_while_another_link_has_one_in_flight() {
    let m = solo();
    let s = m.open(None, 0, 0, "T", 0).unwrap();
    let up = upcalls(&m);
    let link2 = up.accept(LINK, msg(2)).unwrap();
    let rx = blocked_test_receive(&m, s, 0);
    let link1 = up.accept(LINK, msg(1)).unwrap();
    up.dispatch(link1);
    let r = rx.recv_timeout(Duration::from_secs(10));
    up.dispatch(link2);
    let r = r.expect("the test receive returned with link 1's message while link 2's was in flight");
    assert_eq!(r.unwrap().tag, 1);
}

/// Item 16(b): a test receive waits only for the messages accepted before it
/// began; one that a link accepts while it waits does not extend the wait.
#[test]
fn a_test_receive_does_not_wait_for_messages_accepted_after_it_began() {
    let m = solo();
    let s = m.open(None, 0, 0, "T", 0).unwrap();
    let up = upcalls(&m);
    let before = up.accept(LINK, msg(2)).unwrap();
    // Tag 9 never comes: the receive can only end with STATUS_TIMEOUT.
    let rx = blocked_test_receive(&m, s, 9);
    let after = up.accept(LINK, msg(3)).unwrap();
    up.dispatch(before);
    let r = rx.recv_timeout(Duration::from_secs(10));
    up.dispatch(after);
    let r = r.expect("the test receive returned once what was accepted before it had been dispatched");
    assert_eq!(r.unwrap_err(), Status::STATUS_TIMEOUT);
}
