//! `SpPendingCallbacks` (`SessionInfo::sp_pending_events`) read from a
//! callback (issue 8, item 15): it tells the callback whether more of the
//! batch its event came in are still to run, so that a client wakes the thread
//! waiting on them once per batch (README, Diagnostics). It must reach 0 at
//! the end of every batch, however backlogged another session is: the README's
//! pattern of waking the waiter at 0 must never sleep forever.

mod common;

use common::*;
use mps::{Event, MessageBuf, SpId, Status};
use std::sync::{mpsc, Arc, Condvar, Mutex};
use std::time::Duration;

#[test]
fn sp_pending_callbacks_reaches_0_at_the_end_of_each_batch_while_another_session_is_backlogged() {
    let dir = TempDir::new();
    let path = dir.0.join("peer.sock");
    let listener = std::os::unix::net::UnixListener::bind(&path).unwrap();
    // SP 0.A dials its peer 0.B, played by the test.
    let m = sp_with_peer_at("0.A", None, "0.B", &path, "[heartbeat]\ninterval_ms = 1000\ndead_peer_timeout_ms = 60000\n");
    let mut peer = RawPeer::accept(&listener, SpId::b(0));
    m.wait_for_peer(SpId::b(0), Some(Duration::from_secs(30))).unwrap();

    // A backlogged session: its first callback blocks until the end of the
    // test, with five more events queued behind it (its three loopback
    // messages' arrivals and completions).
    let gate = Arc::new((Mutex::new(false), Condvar::new()));
    let g = gate.clone();
    let backlog_cb: mps::Callback = Arc::new(move |_ev| {
        let mut open = g.0.lock().unwrap();
        while !*open {
            open = g.1.wait(open).unwrap();
        }
    });
    let backlog = m.open(Some(backlog_cb), 0, 0, "Backlog", 0).unwrap();
    for tag in 0..3 {
        m.send_async(backlog, m.local_sp(), MessageBuf::new(1).unwrap(), 1, tag, 0).unwrap();
    }
    wait_until("five events queued behind the blocked callback", || m.session_info(backlog).unwrap().pending_events == 5);

    // The sending session: each of its callbacks reports what it reads.
    let (tx, rx) = mpsc::channel::<(Status, usize)>();
    let tx = Mutex::new(tx);
    let m2 = m.clone();
    let sender_cb: mps::Callback = Arc::new(move |ev| {
        if let Event::MessageSent { session, status, .. } = ev {
            let left = m2.session_info(session).unwrap().sp_pending_events;
            tx.lock().unwrap().send((status, left)).unwrap();
        }
    });
    let a = m.open(Some(sender_cb), 0, 0, "Batch", 0).unwrap();
    // Four asynchronous sends: the first is written at once, the other three
    // wait for its confirmation (they coalesce) and then leave together.
    for tag in 0..4 {
        m.send_async(a, SpId::b(0), MessageBuf::from_slice(b"x").unwrap(), 1, tag, 0).unwrap();
    }
    let first = peer.read_message_id();
    peer.confirm(&[(first, Status::STATUS_SUCCESS)]).unwrap();
    let rest: Vec<u64> = (0..3).map(|_| peer.read_message_id()).collect();
    // One CONFIRM frame for the three: one batch of three completions.
    peer.confirm(&rest.iter().map(|id| (*id, Status::STATUS_SUCCESS)).collect::<Vec<_>>()).unwrap();
    let seen: Vec<(Status, usize)> = (0..4).map(|_| rx.recv_timeout(Duration::from_secs(30)).expect("a completion")).collect();
    assert!(seen.iter().all(|(s, _)| *s == Status::STATUS_SUCCESS), "{seen:?}");
    let left: Vec<usize> = seen.iter().map(|(_, n)| *n).collect();
    // Outside a callback, the figure is every event not yet started on the SP:
    // the backlog's five (a diagnostic; it can stay up as long as the backlog).
    let outside = m.session_info(a).unwrap().sp_pending_events;
    *gate.0.lock().unwrap() = true;
    gate.1.notify_all();
    assert_eq!(
        left,
        vec![0, 2, 1, 0],
        "from a callback: what is left of its batch (a batch of one, then one of three), whatever the backlog of the other session"
    );
    assert_eq!(outside, 5, "from outside a callback: the events not yet started on the whole SP");
    // The peer goes first, listener and all, so that neither the SP's orderly
    // close nor a redial into the listener's backlog waits for it.
    drop(listener);
    drop(peer);
    m.shutdown().unwrap();
}
