//! The read role of a link during shutdown (issue 8.7): one thread reads a
//! link's socket at a time, also while the link closes in order.

mod common;
use common::*;
use mps::{MessageBuf, SpId, Status};
use std::io::Read;
use std::time::Duration;

/// The kernel id of this process's thread named `name` (`None` while it
/// does not exist). The SP ids used here are unique to this file, so the
/// name is too.
fn thread_named(name: &str) -> Option<u32> {
    std::fs::read_dir("/proc/self/task").ok()?.flatten().find_map(|t| {
        let comm = std::fs::read_to_string(t.path().join("comm")).ok()?;
        (comm.trim_end() == name).then(|| t.file_name().to_str()?.parse().ok()).flatten()
    })
}

/// Issue 8.7: at shutdown the link closes in order (`Conn::close_gracefully`:
/// what is queued leaves, then what the peer still sends is read and
/// discarded until it closes, bounded by the dead-peer timeout). A
/// synchronous sender that holds the link's read role may be reading the
/// same socket at that moment. The closing thread used to read beside it:
/// it could take the sender's confirmation and throw it away, or, woken by
/// the shutdown's interrupt, end the link at once under the reader. Here
/// the peer confirms the sender's message only after it has seen this SP's
/// end-of-stream (the orderly close has begun): the closing thread now
/// takes the read role before it reads, so the confirmation reaches the
/// sender, every time, and the link ends after it. Repeated, since which
/// of two readers gets the bytes was the kernel's choice.
#[test]
fn the_orderly_close_at_shutdown_does_not_read_under_a_synchronous_sender() {
    for round in 0..12 {
        let dir = TempDir::new();
        let pb = dir.0.join("b.sock");
        let listener = std::os::unix::net::UnixListener::bind(&pb).unwrap();
        let ma = sp_with_peer_at("9.A", None, "9.B", &pb, "[heartbeat]\ninterval_ms = 1000\ndead_peer_timeout_ms = 5000\n");
        let mut peer = RawPeer::accept(&listener, SpId::b(9));
        ma.wait_for_peer(SpId::b(9), Some(Duration::from_secs(30))).unwrap();
        let s = ma.open(None, 0, 0, "Sync", 0).unwrap();
        let ma2 = ma.clone();
        let (tid_tx, tid_rx) = std::sync::mpsc::channel();
        let sender = std::thread::spawn(move || {
            tid_tx.send(current_tid()).unwrap();
            ma2.send_sync(s, SpId::b(9), &MessageBuf::new(8).unwrap(), 8, 7)
        });
        let id = peer.read_message_id();
        // The sender reads the link itself, on the socket alone.
        wait_until_polling(tid_rx.recv().unwrap(), 1);
        let ma3 = ma.clone();
        let closer = std::thread::spawn(move || ma3.shutdown());
        // This SP's end-of-stream: the orderly close has begun.
        let mut sink = [0u8; 64];
        loop {
            match peer.s.read(&mut sink) {
                Ok(0) => break,
                Ok(_) => {}
                Err(e) => panic!("round {round}: no end-of-stream from the closing SP: {e}"),
            }
        }
        // The closing thread (the link's: 9.A dials 9.B) has gone on past
        // it: it waits in a system call (for the read role, or on the
        // socket beside the sender), or it has already ended the link.
        let dialer = "mps-dial-9.B";
        wait_until(&format!("{dialer} blocked or gone"), || thread_named(dialer).is_none_or(|t| blocked_syscall(t).is_some()));
        // (A write error here means the SP has already closed the link: the
        // assertion below then reports what the sender got.)
        let _ = peer.confirm(&[(id, Status::STATUS_SUCCESS)]);
        let r = within(Duration::from_secs(20), "the synchronous send", move || sender.join().unwrap());
        drop(peer);
        within(Duration::from_secs(20), "shutdown", move || closer.join().unwrap()).unwrap();
        assert_eq!(r, Ok(()), "round {round}: the peer confirmed the message before it closed the link");
    }
}
