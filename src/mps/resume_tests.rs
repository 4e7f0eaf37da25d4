//! Issue 9: a link session outlives its connections. Two real SPs over
//! Unix-domain sockets stream numbered messages, synchronous and
//! asynchronous, while the test cuts the connection under them (from either
//! side, through the link's own kill: what a dead-peer verdict or a reset
//! does). Every message must be confirmed with STATUS_SUCCESS and delivered
//! exactly once, in order; nothing is failed.

use super::panic_tests::{channel_callback, unix_pair, wait_until, within, A, B};
use super::*;
use std::sync::atomic::AtomicUsize;

/// Streams `total` asynchronous messages (window 64) and `sync_total`
/// synchronous ones from A to B, cutting the connection every `cut_every`
/// asynchronous completions from side `cut_side` (true: A's end, false: B's);
/// returns the number of cuts made.
fn stream_with_cuts(what: &str, total: u32, sync_total: u32, cut_every: u32, cut_at_a: bool) -> usize {
    let (_dir, ma, mb) = unix_pair(what, "");
    let (cb, events) = channel_callback();
    let sa = ma.open(Some(cb), 0, 0, "Stream", 0).unwrap();
    let sa_sync = ma.open(None, 0, 0, "SyncStream", 0).unwrap();
    // B: async messages through a callback, recorded in arrival order.
    let got = Arc::new(Mutex::new(Vec::<u32>::new()));
    let g = got.clone();
    let cb_b: Callback = Arc::new(move |ev| {
        if let Event::MessageReceived(m) = ev {
            g.lock().push(u32::from_le_bytes(m.data[..4].try_into().unwrap()));
        }
    });
    let _sb = mb.open(Some(cb_b), 0, 0, "Stream", 0).unwrap();
    let sb_sync = mb.open(None, 0, 0, "SyncStream", 0).unwrap();

    // The synchronous stream, on its own thread; B receives it on another.
    let (ma2, mb2) = (ma.clone(), mb.clone());
    let sync_sender = std::thread::spawn(move || {
        for i in 0..sync_total {
            let buf = MessageBuf::from_slice(&i.to_le_bytes()).unwrap();
            ma2.send_sync(sa_sync, B, &buf, 4, 1).unwrap_or_else(|st| panic!("sync message {i} failed with {st:?}"));
        }
    });
    let sync_receiver = std::thread::spawn(move || {
        for i in 0..sync_total {
            let m = mb2.receive(sb_sync, Timeout::Seconds(30), 0).unwrap_or_else(|st| panic!("sync message {i} not received: {st:?}"));
            assert_eq!(u32::from_le_bytes(m.data[..4].try_into().unwrap()), i, "sync messages out of order");
        }
    });

    let cuts = Arc::new(AtomicUsize::new(0));
    let session = ma.owner.core.cmi.get().unwrap().link(B).unwrap().expect("A's link session to B");
    let (mut sent, mut done) = (0u32, 0u32);
    while done < total {
        while sent < total && sent - done < 64 {
            let buf = MessageBuf::from_slice(&sent.to_le_bytes()).unwrap();
            ma.send_async(sa, B, buf, 4, 2, sent as usize).map_err(|(st, _)| st).unwrap_or_else(|st| panic!("async send {sent} refused: {st:?}"));
            sent += 1;
        }
        match events.recv_timeout(Duration::from_secs(30)).expect("an async completion within 30 s") {
            Event::MessageSent { context, status, .. } => {
                assert_eq!(status, Status::STATUS_SUCCESS, "async message {context} completed with {status:?}");
                assert_eq!(context as u32, done, "async completions out of order");
                done += 1;
                if done.is_multiple_of(cut_every) {
                    let side = if cut_at_a { &ma } else { &mb };
                    let peer = if cut_at_a { B } else { A };
                    if let Ok(Some(conn)) = side.owner.core.cmi.get().unwrap().link(peer) {
                        if conn.is_up() {
                            conn.kill("test: the connection is cut");
                            cuts.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                }
            }
            other => panic!("unexpected event {other:?}"),
        }
    }
    within("the sync stream", move || sync_sender.join()).unwrap();
    within("the sync receiver", move || sync_receiver.join()).unwrap();
    wait_until("every async message delivered", || got.lock().len() >= total as usize);
    let got = got.lock();
    assert_eq!(got.len(), total as usize, "messages delivered twice");
    for (i, n) in got.iter().enumerate() {
        assert_eq!(*n, i as u32, "async message delivered out of order or twice");
    }
    let cuts = cuts.load(Ordering::Relaxed);
    // The same link session throughout, on a new connection after each cut.
    let now = ma.owner.core.cmi.get().unwrap().link(B).unwrap().expect("A's link session to B");
    assert!(Arc::ptr_eq(&session, &now), "the link session was replaced: its messages could have failed");
    // (The last cut may come with the last completion: its reconnection after it.)
    wait_until("a new connection after every cut", || session.connections() > cuts as u64);
    cuts
}

#[test]
fn a_stream_loses_nothing_when_its_connection_is_cut_from_either_side() {
    let cuts = stream_with_cuts("resume-a", 20_000, 2_000, 1_000, true) + stream_with_cuts("resume-b", 20_000, 2_000, 1_000, false);
    assert!(cuts >= 30, "only {cuts} cuts were made");
}
