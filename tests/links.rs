//! Two SPs over real links (in-process, Unix-domain, TCP): confirmed exchange,
//! failure of in-flight messages when a link is lost, reconnection, heartbeats,
//! and hostile bytes from the wire.

mod common;
use common::*;
use mps::{Event, MessageBuf, Mps, SpId, Status, Timeout};
use std::io::{Read, Write};
use std::time::Duration;

const A: SpId = SpId::a(0);
const B: SpId = SpId::b(0);

/// Synchronous and asynchronous traffic both ways, order and content checked.
fn exchange(ma: &Mps, mb: &Mps, n: u32) {
    let (cb, events) = channel_callback();
    let sa = ma.open(Some(cb), 0, 7, "Mirror", 0).unwrap();
    let sb = mb.open(None, 0, 7, "Mirror", 0).unwrap();
    for i in 0..n {
        let size = (i as usize * 7919) % 5000;
        let mut buf = MessageBuf::new(size).unwrap();
        for (k, b) in buf.as_mut_slice().iter_mut().enumerate() {
            *b = (k as u32 ^ i) as u8;
        }
        ma.send_sync(sa, B, &buf, size, i).unwrap();
        let r = mb.receive(sb, Timeout::Test, 0).expect("confirmed means queued at the target");
        assert_eq!((r.tag, r.sender, r.data.len()), (i, A, size));
        assert!(r.data.iter().enumerate().all(|(k, b)| *b == (k as u32 ^ i) as u8));
    }
    for i in 0..n {
        ma.send_async(sa, B, MessageBuf::from_slice(&i.to_le_bytes()).unwrap(), 4, i, 0).unwrap();
    }
    for i in 0..n {
        match next(&events) {
            Event::MessageSent { status, tag, .. } => assert_eq!((status, tag), (Status::STATUS_SUCCESS, i)),
            e => panic!("unexpected {e:?}"),
        }
        let r = mb.receive(sb, Timeout::Seconds(30), 0).unwrap();
        assert_eq!(r.data, i.to_le_bytes(), "asynchronous messages arrive in order");
    }
    // And back: B to A. A synchronous message is queued for synchronous
    // receive even on a session with a callback (seed FIG. 8B).
    mb.send_sync(sb, A, &MessageBuf::from_slice(b"back").unwrap(), 4, 1).unwrap();
    let r = ma.receive(sa, Timeout::Test, 1).unwrap();
    assert_eq!((r.data.as_slice(), r.sender), (&b"back"[..], B));
    assert!(events.try_recv().is_err(), "nothing went to the callback");
    // A mailbox nobody opened at the destination.
    let lonely = ma.open(None, 0, 7, "Lonely", 0).unwrap();
    assert_eq!(ma.send_sync(lonely, B, &MessageBuf::new(1).unwrap(), 1, 0), Err(Status::STATUS_OBJECT_NAME_NOT_FOUND));
}

#[test]
fn inproc_link_exchanges_both_ways() {
    let (ma, mb) = inproc_pair("");
    exchange(&ma, &mb, 300);
}

#[test]
fn unix_link_exchanges_both_ways() {
    let dir = TempDir::new();
    let (pa, pb) = (dir.0.join("a.sock"), dir.0.join("b.sock"));
    let (ua, ub) = (format!("unix:{}", pa.display()), format!("unix:{}", pb.display()));
    let mb = Mps::start(config("0.B", &ub, "0.A", &ua, "")).unwrap();
    let ma = Mps::start(config("0.A", &ua, "0.B", &ub, "")).unwrap();
    ma.wait_for_peer(B, Some(Duration::from_secs(30))).unwrap();
    mb.wait_for_peer(A, Some(Duration::from_secs(30))).unwrap();
    exchange(&ma, &mb, 300);
}

#[test]
fn tcp_link_exchanges_both_ways() {
    let mb = Mps::start(config("0.B", "tcp:127.0.0.1:0", "0.A", "tcp:127.0.0.1:9", "")).unwrap();
    let b_addr = mb.listen_address().unwrap().to_string();
    let ma = Mps::start(config("0.A", "tcp:127.0.0.1:0", "0.B", &b_addr, "")).unwrap();
    ma.wait_for_peer(B, Some(Duration::from_secs(30))).unwrap();
    exchange(&ma, &mb, 300);
}

#[test]
fn large_messages_cross_whole() {
    let (ma, mb) = inproc_pair("[limits]\nmax_message_size = 4194304\n");
    let sa = ma.open(None, 0, 0, "Big", 0).unwrap();
    let sb = mb.open(None, 0, 0, "Big", 0).unwrap();
    let mut buf = MessageBuf::new(3 << 20).unwrap();
    for (k, b) in buf.as_mut_slice().iter_mut().enumerate() {
        *b = (k * 31 % 251) as u8;
    }
    ma.send_sync(sa, B, &buf, buf.len(), 0).unwrap();
    let r = mb.receive(sb, Timeout::Test, 0).unwrap();
    assert_eq!(r.data, buf.as_slice());
}

#[test]
fn a_lost_link_fails_in_flight_messages_once_and_comes_back() {
    let dir = TempDir::new();
    let (ua, ub) = (format!("unix:{}", dir.0.join("a.sock").display()), format!("unix:{}", dir.0.join("b.sock").display()));
    let cfg_b = config("0.B", &ub, "0.A", &ua, "");
    let mb = Mps::start(cfg_b.clone()).unwrap();
    let ma = Mps::start(config("0.A", &ua, "0.B", &ub, "")).unwrap();
    ma.wait_for_peer(B, Some(Duration::from_secs(30))).unwrap();
    let (cb, events) = channel_callback();
    let sa = ma.open(Some(cb), 0, 0, "Lose", 0).unwrap();
    // B's session has no receiver draining it: messages queue there until B dies.
    mb.open(None, 0, 0, "Lose", 0).unwrap();
    let n = 200u32;
    let mut accepted = 0u32;
    for i in 0..n {
        match ma.send_async(sa, B, MessageBuf::from_slice(&i.to_le_bytes()).unwrap(), 4, i, 0) {
            Ok(()) => accepted += 1,
            Err((st, _)) => assert_eq!(st, Status::STATUS_HOST_UNREACHABLE),
        }
        if i == n / 2 {
            mb.shutdown().unwrap();
        }
    }
    let mut seen = vec![false; n as usize];
    for _ in 0..accepted {
        match next(&events) {
            Event::MessageSent { status, tag, .. } => {
                assert!(
                    status == Status::STATUS_SUCCESS || status == Status::STATUS_CONNECTION_DISCONNECTED,
                    "unexpected final status {status}"
                );
                assert!(!seen[tag as usize], "message {tag} reported twice");
                seen[tag as usize] = true;
            }
            e => panic!("unexpected {e:?}"),
        }
    }
    // The peer comes back; the same session, never reopened, talks again.
    let mb = Mps::start(cfg_b).unwrap();
    let sb = mb.open(None, 0, 0, "Lose", 0).unwrap();
    ma.wait_for_peer(B, Some(Duration::from_secs(30))).unwrap();
    ma.send_sync(sa, B, &MessageBuf::from_slice(b"again").unwrap(), 5, 1).unwrap();
    assert_eq!(mb.receive(sb, Timeout::Test, 0).unwrap().data, b"again");
    // No extra completions: the session's events come in order, so a
    // completion reported twice would come before this marker's.
    ma.send_async(sa, B, MessageBuf::from_slice(b"marker").unwrap(), 6, 1_000_000, 0).unwrap();
    match next(&events) {
        Event::MessageSent { status, tag, .. } => {
            assert_eq!((tag, status), (1_000_000, Status::STATUS_SUCCESS), "an extra completion came before the marker's")
        }
        e => panic!("unexpected {e:?}"),
    }
    assert_eq!(mb.receive(sb, Timeout::Test, 0).unwrap().data, b"marker");
}

/// Reads `s` to its end: the SP closed its side (a reset counts too, when
/// the SP closed with bytes of ours unread). Fails the test after 30 s.
fn read_until_closed(s: &mut std::os::unix::net::UnixStream) {
    s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    let mut sink = Vec::new();
    match s.read_to_end(&mut sink) {
        Ok(_) => {}
        Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => {}
        Err(e) => panic!("the SP did not close the link within 30 s: {e}"),
    }
}

#[test]
fn a_silent_peer_is_declared_dead_and_in_flight_sends_fail() {
    let (_dir, listener, ma) = sp_a_with_listener("[heartbeat]\ninterval_ms = 20\ndead_peer_timeout_ms = 300\n");
    let _silent = RawPeer::accept(&listener, B).s;
    ma.wait_for_peer(B, Some(Duration::from_secs(30))).unwrap();
    let s = ma.open(None, 0, 0, "Silent", 0).unwrap();
    let t0 = std::time::Instant::now();
    // The fake never confirms: the send ends when the peer is declared dead.
    assert_eq!(ma.send_sync(s, B, &MessageBuf::new(1).unwrap(), 1, 0), Err(Status::STATUS_CONNECTION_DISCONNECTED));
    assert!(t0.elapsed() >= Duration::from_millis(250), "declared dead too early: {:?}", t0.elapsed());
}

#[test]
fn hostile_frames_end_the_link_without_harm_and_it_redials() {
    let (_dir, listener, ma) =
        sp_a_with_listener("[limits]\nmax_message_size = 16\n[reconnect]\ninitial_backoff_ms = 5\nmax_backoff_ms = 50\n");
    // A message one byte over max_message_size (16): name "x", 17-byte payload.
    let mut over = vec![42u8, 0, 0, 0, 2, 0, 0, 0];
    over.extend_from_slice(&[1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1, 0, 0, 0, b'x']);
    over.extend_from_slice(&[0u8; 17]);
    let hostile: [&[u8]; 5] = [
        &over,
        // A 4 GiB message: refused before any allocation.
        &[0xF0, 0xFF, 0xFF, 0xFF, 2, 0, 0, 0],
        // An unknown frame kind.
        &[0, 0, 0, 0, 99, 0, 0, 0],
        // A second HELLO.
        &[32, 0, 0, 0, 1, 0, 0, 0],
        // A message whose mailbox name runs past its body.
        &[30, 0, 0, 0, 2, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 200, 0, 0, 0, 0, 0, 0, 0, 0, 0],
    ];
    for bytes in hostile {
        let mut s = RawPeer::accept(&listener, B).s;
        s.write_all(bytes).unwrap();
        // The link ends: the SP closes its end, and we read EOF.
        read_until_closed(&mut s);
    }
    // Still alive, and still redialing: one more good handshake.
    let _ok = RawPeer::accept(&listener, B).s;
    ma.wait_for_peer(B, Some(Duration::from_secs(30))).unwrap();
}

#[test]
fn a_stranger_answering_with_the_wrong_id_is_refused() {
    let (_dir, listener, ma) = sp_a_with_listener("");
    let mut s = RawPeer::accept(&listener, SpId::a(5)).s;
    read_until_closed(&mut s);
    assert_eq!(ma.wait_for_peer(B, Some(Duration::from_millis(0))), Err(Status::STATUS_TIMEOUT));
}

#[test]
fn a_target_that_shuts_down_right_after_receiving_has_still_confirmed() {
    // Seed FIG. 8A: the target confirms, then dispatches. A receiver that acts
    // on a message at once (here: shuts its SP down while the rest of a burst
    // is still being read) cannot make the sender believe that message failed.
    for round in 0..20 {
        let dir = TempDir::new();
        let (ua, ub) = (format!("unix:{}", dir.0.join("a.sock").display()), format!("unix:{}", dir.0.join("b.sock").display()));
        let mb = Mps::start(config("0.B", &ub, "0.A", &ua, "")).unwrap();
        let ma = Mps::start(config("0.A", &ua, "0.B", &ub, "")).unwrap();
        ma.wait_for_peer(B, Some(Duration::from_secs(30))).unwrap();
        let (cb, events) = channel_callback();
        let sa = ma.open(Some(cb), 0, 0, "Exit", 0).unwrap();
        let sb = mb.open(None, 0, 0, "Exit", 0).unwrap();
        let target = std::thread::spawn(move || {
            let r = mb.receive(sb, Timeout::Forever, 1);
            mb.shutdown().unwrap();
            r.map(|m| m.data)
        });
        let mut accepted = 0;
        for tag in 1..=300u32 {
            if ma.send_async(sa, B, MessageBuf::from_slice(&tag.to_le_bytes()).unwrap(), 4, tag, 0).is_ok() {
                accepted += 1;
            }
        }
        assert_eq!(target.join().unwrap().unwrap(), 1u32.to_le_bytes());
        let mut first = None;
        for _ in 0..accepted {
            if let Event::MessageSent { tag: 1, status, .. } = next(&events) {
                first = Some(status);
            }
        }
        assert_eq!(first, Some(Status::STATUS_SUCCESS), "round {round}: the target took message 1, so its sender must hear success");
    }
}

/// A receive waiting forever on a session that heard from a peer reads that
/// peer's link itself; closing the session from another thread must still wake
/// it at once (its read is interrupted), with STATUS_CANCELLED.
#[test]
fn close_wakes_a_receiver_that_is_reading_the_link_itself() {
    // Heartbeats every 60 s: only the interrupt can wake the reader sooner.
    // A Unix link, so that the reader is seen blocked in poll on the socket.
    let dir = TempDir::new();
    let (ma, mb) = unix_pair_hb(&dir, 60_000);
    let (sa, sb) = linked_sessions(&ma, &mb, "Lead");
    let (receiver, tid) = receive_in_thread_tid(&mb, sb);
    // The receiver reads the link itself: blocked in poll on the socket and
    // the interrupt, not waiting for the read role or its message.
    wait_until_polling(tid, 2);
    let t0 = std::time::Instant::now();
    assert_eq!(mb.close(sb), Ok(mps::CloseOutcome::Pending), "the receiver is inside receive");
    assert_eq!(receiver.join().unwrap().unwrap_err(), Status::STATUS_CANCELLED);
    // Not the 60 s a poll that nobody interrupted would sleep.
    assert!(t0.elapsed() < Duration::from_secs(30), "the reader was not woken: {:?}", t0.elapsed());
    // The link still works for everyone else.
    let sb2 = mb.open(None, 0, 0, "Lead", 0).unwrap();
    ma.send_sync(sa, B, &MessageBuf::from_slice(b"again").unwrap(), 5, 2).unwrap();
    assert_eq!(mb.receive(sb2, Timeout::Forever, 0).unwrap().data, b"again");
}

/// Synchronous senders on several threads share one link: whoever reads it
/// completes the others; every send is confirmed, none waits for a timeout.
#[test]
fn many_threads_send_synchronously_on_one_link() {
    let (ma, mb) = inproc_pair("");
    let sb: Vec<_> = (0..6).map(|k| mb.open(None, 0, 0, &format!("fan{k}"), 0).unwrap()).collect();
    let senders: Vec<_> = (0..6)
        .map(|k| {
            let ma = ma.clone();
            std::thread::spawn(move || {
                let s = ma.open(None, 0, 0, &format!("fan{k}"), 0).unwrap();
                for i in 0..500u32 {
                    ma.send_sync(s, B, &MessageBuf::from_slice(&i.to_le_bytes()).unwrap(), 4, i).unwrap();
                }
            })
        })
        .collect();
    let receivers: Vec<_> = sb
        .into_iter()
        .map(|s| {
            let mb = mb.clone();
            std::thread::spawn(move || {
                for i in 0..500u32 {
                    let r = mb.receive(s, Timeout::Forever, 0).unwrap();
                    assert_eq!(r.data, i.to_le_bytes(), "in order per session");
                }
            })
        })
        .collect();
    for t in senders.into_iter().chain(receivers) {
        t.join().unwrap();
    }
    ma.shutdown().unwrap();
    mb.shutdown().unwrap();
}

/// Shutting an SP down while one of its threads reads a link inside a
/// receive: the receive ends with STATUS_CANCELLED and the shutdown returns.
#[test]
fn shutdown_ends_a_receive_that_is_reading_the_link() {
    let dir = TempDir::new();
    let (ma, mb) = unix_pair_hb(&dir, 60_000);
    let (_sa, sb) = linked_sessions(&ma, &mb, "Down");
    let (receiver, tid) = receive_in_thread_tid(&mb, sb);
    wait_until_polling(tid, 2);
    let t0 = std::time::Instant::now();
    mb.shutdown().unwrap();
    let r = receiver.join().unwrap();
    assert!(t0.elapsed() < Duration::from_secs(30), "shutdown waited for a poll to time out: {:?}", t0.elapsed());
    assert_eq!(r.unwrap_err(), Status::STATUS_CANCELLED, "woken as a blocked receiver");
}

/// A burst far larger than the socket buffer: the senders' non-blocking
/// writes stop short, the link's writer thread takes the backlog and writes
/// it in blocking batches with the queue unlocked while more is queued.
/// Every message arrives whole, in order, and completes exactly once.
#[test]
fn a_backlog_of_large_asynchronous_messages_arrives_whole_and_in_order() {
    let dir = TempDir::new();
    let (ua, ub) = (format!("unix:{}", dir.0.join("a.sock").display()), format!("unix:{}", dir.0.join("b.sock").display()));
    let limits = "[limits]\nmax_message_size = 1048576\n";
    let mb = Mps::start(config("0.B", &ub, "0.A", &ua, limits)).unwrap();
    let ma = Mps::start(config("0.A", &ua, "0.B", &ub, limits)).unwrap();
    ma.wait_for_peer(B, Some(Duration::from_secs(30))).unwrap();
    let (cb, events) = channel_callback();
    let sa = ma.open(Some(cb), 0, 0, "Backlog", 0).unwrap();
    let sb = mb.open(None, 0, 0, "Backlog", 0).unwrap();
    let n = 48u32;
    let content = |i: u32, k: usize| (k as u32).wrapping_mul(2654435761).wrapping_add(i) as u8;
    for i in 0..n {
        let size = (1 << 20) - (i as usize * 4099);
        let mut buf = MessageBuf::new(size).unwrap();
        for (k, b) in buf.as_mut_slice().iter_mut().enumerate() {
            *b = content(i, k);
        }
        ma.send_async(sa, B, buf, size, i, 0).unwrap();
    }
    for i in 0..n {
        let r = mb.receive(sb, Timeout::Seconds(30), 0).unwrap();
        assert_eq!((r.tag, r.data.len()), (i, (1 << 20) - (i as usize * 4099)), "in order, whole");
        assert!(r.data.iter().enumerate().all(|(k, b)| *b == content(i, k)), "message {i} intact");
    }
    for i in 0..n {
        match next(&events) {
            Event::MessageSent { status, tag, .. } => assert_eq!((status, tag), (Status::STATUS_SUCCESS, i)),
            e => panic!("unexpected {e:?}"),
        }
    }
    assert!(events.try_recv().is_err(), "one completion each");
}

/// A peer that answers HELLO and then neither reads nor sends: the writer
/// thread blocks in a full socket. The dead-peer timeout still ends the link,
/// the blocked write returns, every send fails exactly once, and shutdown
/// does not hang on the writer. (The dead-peer timeout is 2 s, not less:
/// the sixteen 1 MiB sends must all be queued before the link ends, which
/// at 400 ms a loaded machine once missed.)
#[test]
fn a_peer_that_stops_reading_cannot_wedge_the_writer() {
    let (_dir, listener, ma) = sp_a_with_listener("[heartbeat]\ninterval_ms = 100\ndead_peer_timeout_ms = 2000\n[limits]\nmax_message_size = 1048576\n");
    let _deaf = RawPeer::accept(&listener, B).s;
    ma.wait_for_peer(B, Some(Duration::from_secs(30))).unwrap();
    let (cb, events) = channel_callback();
    let s = ma.open(Some(cb), 0, 0, "Deaf", 0).unwrap();
    let n = 16u32;
    for i in 0..n {
        ma.send_async(s, B, MessageBuf::new(1 << 20).unwrap(), 1 << 20, i, 0).unwrap();
    }
    let mut seen = vec![false; n as usize];
    for _ in 0..n {
        match next(&events) {
            Event::MessageSent { status, tag, .. } => {
                assert_eq!(status, Status::STATUS_CONNECTION_DISCONNECTED);
                assert!(!std::mem::replace(&mut seen[tag as usize], true), "message {tag} reported twice");
            }
            e => panic!("unexpected {e:?}"),
        }
    }
    ma.shutdown().unwrap();
}

/// A synchronous send waits on the socket alone (no interrupt) for its
/// confirmation. Shutdown must still end it: here the peer is alive (it sends
/// heartbeats) but never confirms, nor closes its end, so the orderly close
/// takes its bound (the dead-peer timeout, 1 s) and then the send fails.
#[test]
fn shutdown_ends_a_synchronous_send_that_is_reading_the_link() {
    let (_dir, listener, ma) = sp_a_with_listener("[heartbeat]\ninterval_ms = 20\ndead_peer_timeout_ms = 1000\n");
    let peer = RawPeer::accept(&listener, B).s;
    ma.wait_for_peer(B, Some(Duration::from_secs(30))).unwrap();
    // The fake peer's heartbeats, until A closes the link.
    let mut hb = peer.try_clone().unwrap();
    let beater = std::thread::spawn(move || {
        while hb.write_all(&mps::cmi::frame::heartbeat()).is_ok() {
            std::thread::sleep(Duration::from_millis(10));
        }
    });
    let s = ma.open(None, 0, 0, "Never", 0).unwrap();
    let ma2 = ma.clone();
    let (tid_tx, tid_rx) = std::sync::mpsc::channel();
    let sender = std::thread::spawn(move || {
        tid_tx.send(current_tid()).unwrap();
        ma2.send_sync(s, B, &MessageBuf::new(1).unwrap(), 1, 0)
    });
    // The sender reads the link itself, on the socket alone (between the
    // peer's heartbeats, which wake it).
    wait_until_polling(tid_rx.recv().unwrap(), 1);
    assert_eq!(ma.session_info(s).unwrap().sends, 1);
    ma.shutdown().unwrap();
    let r = sender.join().unwrap();
    assert_eq!(r, Err(Status::STATUS_CONNECTION_DISCONNECTED), "in flight when the link closed");
    // A closed the link: the peer's writes fail and the beater stops.
    drop(peer);
    beater.join().unwrap();
}

/// The completions of one CONFIRM frame, spread over many sessions, go to the
/// callback threads together: every one runs exactly once per send, and a
/// callback that blocks holds up only its own session (another callback
/// thread is woken for the rest).
#[test]
fn completions_spread_over_many_sessions_all_run_once_past_a_blocked_callback() {
    use std::collections::HashSet;
    use std::sync::{mpsc, Arc, Condvar, Mutex};
    const N: usize = 64;
    const ROUNDS: u32 = 40;
    let (ma, mb) = inproc_pair("[callbacks]\nthreads = 3\n");
    let gate = Arc::new((Mutex::new(false), Condvar::new()));
    let (tx, rx) = mpsc::channel::<(usize, u32)>();
    let mut sa = Vec::new();
    let mut sb = Vec::new();
    for k in 0..N {
        let (tx, gate) = (Mutex::new(tx.clone()), gate.clone());
        let cb: mps::Callback = Arc::new(move |ev| {
            if let Event::MessageSent { status, tag, .. } = ev {
                assert_eq!(status, Status::STATUS_SUCCESS);
                if k == 0 && tag == 0 {
                    let mut open = gate.0.lock().unwrap();
                    while !*open {
                        open = gate.1.wait(open).unwrap();
                    }
                }
                tx.lock().unwrap().send((k, tag)).unwrap();
            }
        });
        let name = format!("Spread{k}");
        sa.push(ma.open(Some(cb), 0, 0, &name, 0).unwrap());
        sb.push(mb.open(None, 0, 0, &name, 0).unwrap());
    }
    let wait = Duration::from_secs(30);
    // Session 1 first: its message leaves at once, and the others queue
    // behind it and leave in one write once it is confirmed, so their
    // confirmations come back together, session 0's (the one that blocks)
    // at the head of them.
    let order: Vec<usize> = [1, 0].into_iter().chain(2..N).collect();
    for round in 0..ROUNDS {
        for &k in &order {
            ma.send_async(sa[k], B, MessageBuf::from_slice(&round.to_le_bytes()).unwrap(), 4, round, 0).unwrap();
        }
        let mut seen = HashSet::new();
        if round == 0 {
            // Session 0's first callback is blocked: the other 63 still run.
            for _ in 1..N {
                let (k, tag) = rx.recv_timeout(wait).expect("the other sessions' callbacks run");
                assert!(k != 0 && tag == 0 && seen.insert(k), "({k}, {tag}) twice or out of round");
            }
            *gate.0.lock().unwrap() = true;
            gate.1.notify_all();
        }
        while seen.len() < N {
            let (k, tag) = rx.recv_timeout(wait).expect("every completion within 30 s");
            assert!(tag == round && seen.insert(k), "({k}, {tag}) twice or out of round {round}");
        }
    }
    assert!(rx.try_recv().is_err(), "no completion ran twice");
    for (k, &s) in sb.iter().enumerate() {
        for round in 0..ROUNDS {
            let r = mb.receive(s, Timeout::Test, 0).unwrap_or_else(|e| panic!("session {k} round {round}: {e}"));
            assert_eq!((r.tag, r.data.as_slice()), (round, &round.to_le_bytes()[..]), "session {k}: in order");
        }
    }
}

/// Keeps `m`'s session `s` (which has the callback whose events are
/// `events`) sending `size`-byte asynchronous messages to `dest` until
/// `stop`, refilling its window as completions come back. Returns how many
/// were sent.
fn flood(
    m: Mps,
    s: mps::SessionId,
    dest: SpId,
    size: usize,
    events: std::sync::mpsc::Receiver<Event>,
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
) -> u64 {
    use std::sync::atomic::Ordering;
    let mut sent = 0u64;
    let check = |e: Event| match e {
        Event::MessageSent { status, .. } => {
            assert!(matches!(status, Status::STATUS_SUCCESS | Status::STATUS_INSUFFICIENT_RESOURCES), "flood: {status}")
        }
        e => panic!("flood: unexpected {e:?}"),
    };
    while !stop.load(Ordering::Relaxed) {
        match m.send_async(s, dest, MessageBuf::new(size).unwrap(), size, sent as u32, 0) {
            Ok(()) => sent += 1,
            // The window (async_sends_per_session) is full: one completion first.
            Err((Status::STATUS_INSUFFICIENT_RESOURCES, _)) => {
                if let Ok(e) = events.recv_timeout(Duration::from_secs(30)) {
                    check(e)
                }
            }
            Err((st, _)) => panic!("flood: send refused with {st}"),
        }
        while let Ok(e) = events.try_recv() {
            check(e);
        }
    }
    sent
}

/// Nearest-rank percentile of sorted `v`.
fn pct(v: &[Duration], p: f64) -> Duration {
    v[((v.len() as f64 * p).ceil() as usize).clamp(1, v.len()) - 1]
}

/// `n` synchronous sends from 0.A to 0.B on session "Sync" (B's thread
/// receives them), while B floods A's session "Flood" with 1 KiB
/// asynchronous messages of `flood_size` bytes (if any). Returns each send's duration,
/// sorted, and how many flood messages B sent meanwhile. A send that
/// takes longer than `bound` fails the test (the watchdog), with the
/// flood stopped first so the test ends.
fn sync_sends_under_flood(ma: &Mps, mb: &Mps, n: usize, flood_size: Option<usize>, bound: Duration) -> (Vec<Duration>, u64) {
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::Arc;
    // Fresh names each call: a previous call's sessions may still be closing.
    let (sync_name, flood_name) = (unique("Sync"), unique("Flood"));
    let sync_a = ma.open(None, 0, 0, &sync_name, 0).unwrap();
    let sync_b = mb.open(None, 0, 0, &sync_name, 0).unwrap();
    // A's flood session drops what it gets; B's reports its completions.
    let got = Arc::new(std::sync::atomic::AtomicU64::new(0));
    let g = got.clone();
    let flood_a = ma.open(Some(Arc::new(move |_| {
        g.fetch_add(1, Ordering::Relaxed);
    })), 0, 0, &flood_name, 0)
    .unwrap();
    let (cb, flood_events) = channel_callback();
    let flood_b = mb.open(Some(cb), 0, 0, &flood_name, 0).unwrap();
    let stop = Arc::new(AtomicBool::new(false));
    let flooder = flood_size.map(|size| {
        let (mb, stop) = (mb.clone(), stop.clone());
        std::thread::spawn(move || flood(mb, flood_b, A, size, flood_events, stop))
    });
    if flood_size.is_some() {
        // The flood runs before the first measured send.
        wait_until("the flood reaches A", || got.load(Ordering::Relaxed) > 0);
    }
    let drain = {
        let mb = mb.clone();
        std::thread::spawn(move || {
            for _ in 0..n {
                mb.receive(sync_b, Timeout::Seconds(60), 0).expect("every synchronous message arrives");
            }
        })
    };
    let (tx, rx) = std::sync::mpsc::channel();
    let sender = {
        let ma = ma.clone();
        std::thread::spawn(move || {
            let buf = MessageBuf::new(64).unwrap();
            for i in 0..n {
                let t0 = std::time::Instant::now();
                let r = ma.send_sync(sync_a, B, &buf, 64, i as u32);
                tx.send((t0.elapsed(), r)).unwrap();
            }
        })
    };
    let mut times = Vec::with_capacity(n);
    for i in 0..n {
        match rx.recv_timeout(bound) {
            Ok((d, r)) => {
                assert_eq!(r, Ok(()), "synchronous send {i}");
                times.push(d);
            }
            Err(_) => {
                stop.store(true, Ordering::Relaxed);
                let flooded = flooder.map(|t| t.join().unwrap()).unwrap_or(0);
                let late = rx.recv_timeout(Duration::from_secs(60));
                panic!(
                    "synchronous send {i} still waiting after {bound:?} under the flood ({flooded} flood messages sent); \
                     once the flood stopped it returned: {late:?}"
                );
            }
        }
    }
    stop.store(true, Ordering::Relaxed);
    let flooded = flooder.map(|t| t.join().unwrap()).unwrap_or(0);
    sender.join().unwrap();
    drain.join().unwrap();
    for s in [sync_a, flood_a] {
        let _ = ma.close(s);
    }
    for s in [sync_b, flood_b] {
        let _ = mb.close(s);
    }
    times.sort();
    (times, flooded)
}

fn report(label: &str, t: &[Duration], flooded: u64) {
    eprintln!(
        "{label}: {} sync sends: p50 {:?} p99 {:?} max {:?} (flood messages sent meanwhile: {flooded})",
        t.len(),
        pct(t, 0.50),
        pct(t, 0.99),
        t[t.len() - 1]
    );
}

/// Issue 8.16(a), a measurement (run with `--ignored --nocapture`): the
/// latency of synchronous sends from A to B while B floods A with 1 KiB
/// asynchronous messages on another session, against the same without
/// the flood, over an in-process and a Unix-domain link.
#[test]
#[ignore = "issue 8.16(a): a measurement that prints percentiles, not a pass/fail test"]
fn probe_sync_send_latency_under_an_inbound_flood() {
    let n = 500;
    let bound = Duration::from_secs(60);
    let dir = TempDir::new();
    // The same with B's window of asynchronous sends at 64 instead of 4,096:
    // what B's sends queue ahead of its confirmations is then bounded by it.
    let small = "[limits]\nasync_sends_per_session = 64\n";
    for (kind, (ma, mb)) in [("inproc", inproc_pair("")), ("inproc, window 64", inproc_pair(small)), ("unix", unix_pair_hb(&dir, 50))] {
        for (label, flood) in [("no flood", None), ("B floods A, 1 KiB", Some(1024)), ("B floods A, 0 bytes", Some(0))] {
            let (t, f) = sync_sends_under_flood(&ma, &mb, n, flood, bound);
            report(&format!("{kind}, {label}"), &t, f);
        }
    }
}

/// Issue 8.16(a): a synchronous send whose link's own thread is reading
/// asks it for the read role, and waits for the hand-over
/// (`Cmi::wait_on_link`) without looking at its own confirmation again; the
/// link's thread hands over only at a frame boundary with nothing left in
/// its read buffer (`read_at_boundary`, the only place `until()` is asked).
/// A payload's tail is read with an exact-length read, which leaves the
/// buffer empty at that frame's end; but a stream of frames without payload
/// (zero-length messages: 37-byte frames) whose reads end inside a frame's
/// head never leaves it empty. Here a fake 0.B streams zero-length
/// asynchronous MESSAGE frames in writes that each end 4 bytes into a frame,
/// and confirms A's synchronous messages in that stream: the send's
/// confirmation is read (by the link's thread, which completes the send's
/// slot), but the sender, waiting on `role_cv` for the hand-over, never
/// looks. Each send has a 5 s watchdog.
#[test]
fn a_synchronous_send_completes_under_a_flood_that_never_pauses_at_a_frame_boundary() {
    use mps::cmi::frame;
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::{mpsc, Arc};
    const PAYLOAD: usize = 0;
    let (_dir, listener, ma) = sp_a_with_listener("[heartbeat]\ninterval_ms = 50\ndead_peer_timeout_ms = 2000\n");
    let peer = RawPeer::accept(&listener, B).s;
    ma.wait_for_peer(B, Some(Duration::from_secs(30))).unwrap();
    let flood_a = ma.open(Some(Arc::new(|_| {})), 0, 0, "Flood", 0).unwrap();
    let sync_a = ma.open(None, 0, 0, "Sync", 0).unwrap();
    let stop = Arc::new(AtomicBool::new(false));
    // The fake's reader: A's frames; a synchronous MESSAGE is to be confirmed.
    let (confirm_tx, confirm_rx) = mpsc::channel::<u64>();
    let mut rd = peer.try_clone().unwrap();
    let reader = std::thread::spawn(move || {
        let mut prefix = [0u8; frame::PREFIX_LEN];
        while rd.read_exact(&mut prefix).is_ok() {
            let p = frame::parse_prefix(&prefix, 1 << 20).expect("A sends well-formed frames");
            let mut body = vec![0u8; p.body_len as usize];
            if rd.read_exact(&mut body).is_err() {
                break;
            }
            if p.kind == frame::Kind::Message {
                let (head, _) = frame::decode_message_fixed(&body, p.body_len).unwrap();
                if head.mode == frame::MODE_SYNC {
                    let _ = confirm_tx.send(head.id);
                }
            }
        }
    });
    // The fake's writer: flood frames, each write 10 bytes short of a boundary.
    let mut wr = peer.try_clone().unwrap();
    let st = stop.clone();
    let writer = std::thread::spawn(move || {
        let payload = vec![7u8; PAYLOAD];
        let mut head = [0u8; frame::MAX_MESSAGE_HEAD];
        let mut tail: Vec<u8> = Vec::new();
        let mut id = 1u64 << 40;
        let mut frames = 0u64;
        let frame_len = frame::PREFIX_LEN + frame::MESSAGE_FIXED + b"Flood".len() + payload.len();
        while !st.load(Ordering::Relaxed) {
            let mut out = std::mem::take(&mut tail);
            for sync_id in confirm_rx.try_iter() {
                frame::encode_confirms(&mut out, &[(sync_id, Status::STATUS_SUCCESS)]);
            }
            for _ in 0..8 {
                let h = frame::MessageHead { id, conduit: 0, domain: 0, tag: 0, mode: frame::MODE_ASYNC };
                let n = frame::encode_message_head(&mut head, &h, b"Flood", payload.len() as u32);
                out.extend_from_slice(&head[..n]);
                out.extend_from_slice(&payload);
                id += 1;
                frames += 1;
            }
            // Cut inside the last frame's head: the reader then needs more
            // bytes before it is at a boundary again.
            tail = out.split_off(out.len() - (frame_len - 4));
            if wr.write_all(&out).is_err() {
                break;
            }
        }
        frames
    });
    let (tx, rx) = mpsc::channel();
    let ma2 = ma.clone();
    let sender = std::thread::spawn(move || {
        let buf = MessageBuf::new(64).unwrap();
        for i in 0..200u32 {
            let t0 = std::time::Instant::now();
            let r = ma2.send_sync(sync_a, B, &buf, 64, i);
            if tx.send((t0.elapsed(), r)).is_err() {
                return;
            }
        }
    });
    let mut failure = None;
    for i in 0..200 {
        match rx.recv_timeout(Duration::from_secs(5)) {
            Ok((_, r)) => assert_eq!(r, Ok(()), "synchronous send {i}"),
            Err(_) => {
                failure = Some(i);
                break;
            }
        }
    }
    stop.store(true, Ordering::Relaxed);
    let frames = writer.join().unwrap();
    let late = failure.map(|_| rx.recv_timeout(Duration::from_secs(30)));
    ma.shutdown().unwrap();
    drop(peer);
    let _ = reader.join();
    let _ = sender.join();
    let _ = flood_a;
    if let Some(i) = failure {
        // Ok(Ok(..)) here: the confirmation had been read (a lost link
        // fails the send instead), the sender only never got to see it.
        panic!(
            "synchronous send {i} did not return within 5 s while the peer streamed {frames} frames; \
             once the stream stopped (and the silent link ended) it returned {late:?}"
        );
    }
}
