//! Order across reconnections (issue 8, items 4 and 8; SPEC 4): per
//! (sending session, destination) messages are delivered in the order they
//! were sent, and per session completions are reported in send order,
//! failures included, also when a peer's connection is replaced by a new
//! one while the old is still being read.
//!
//! The peer 0.A is played by the test over raw Unix-domain sockets: it
//! dials the SP under test, X = 0.B, again and again, each new connection
//! arriving while the previous one is still open (X replaces it).

mod common;
use common::*;
use mps::cmi::frame;
use mps::{Event, MessageBuf, Mps, SpId, Status, Timeout};
use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{mpsc, Arc, Mutex};
use std::time::{Duration, Instant};

const F: SpId = SpId::a(0);
const ROUNDS: u32 = 300;

/// X (0.B), listening in `dir`; its peer 0.A dials it (the lower id dials).
fn sp_x(dir: &TempDir) -> (Mps, std::path::PathBuf) {
    let px = dir.0.join("x.sock");
    let x = sp_with_peer_at("0.B", Some(&px), "0.A", &dir.0.join("never-dialed.sock"), "[heartbeat]\ninterval_ms = 1000\ndead_peer_timeout_ms = 5000\n");
    (x, px)
}

/// The HELLO 0.A sends.
fn hello() -> Vec<u8> {
    frame::Hello { version_min: 1, version_max: 1, sp: F, max_message: 1 << 20, heartbeat_ms: 1000, dead_timeout_ms: 5000 }.encode().to_vec()
}

/// Dials X and writes HELLO followed by `then` in one write, without waiting
/// for X's HELLO (X keeps what follows a HELLO: PROTOCOL.md 3).
fn dial_with(px: &std::path::Path, then: &[u8]) -> UnixStream {
    let mut s = UnixStream::connect(px).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    let mut out = hello();
    out.extend_from_slice(then);
    s.write_all(&out).unwrap();
    s
}

/// Item 4: a storm of replaced connections, each carrying a burst of
/// messages for one session of X; a new connection is made (and its first
/// burst written) as soon as the previous burst is written, while X's
/// reader of the old connection is still at work. The test never sends a
/// message twice and numbers them in sending order, so whatever X delivers
/// must arrive in increasing order (X may drop a tail of an old
/// connection's burst whose confirmation could not leave: that one was not
/// confirmed). Before the fix, the old connection's reader could still be
/// dispatching what it had confirmed while the new one already delivered.
#[test]
fn messages_from_replaced_connections_are_delivered_in_sending_order() {
    let dir = TempDir::new();
    let (x, px) = sp_x(&dir);
    let r = x.open(None, 0, 0, "Rx", 0).unwrap();
    let received = Arc::new(Mutex::new(Vec::<u32>::new()));
    let done = Arc::new(AtomicBool::new(false));
    let (x2, rec, d) = (x.clone(), received.clone(), done.clone());
    let receiver = std::thread::spawn(move || {
        while !d.load(Ordering::Acquire) {
            match x2.receive(r, Timeout::Seconds(1), 0) {
                Ok(m) => rec.lock().unwrap().push(m.tag),
                Err(Status::STATUS_TIMEOUT) => {}
                Err(e) => panic!("receive: {e:?}"),
            }
        }
    });
    let burst = 40u32;
    let mut tag = 0u32;
    let mut id = 1u64;
    let mut conns: Vec<UnixStream> = Vec::new();
    let t0 = Instant::now();
    for _ in 0..ROUNDS {
        let mut bytes = Vec::new();
        for _ in 0..burst {
            let h = frame::MessageHead { id, conduit: 0, domain: 0, tag, mode: frame::MODE_ASYNC };
            let mut head = [0u8; frame::MAX_MESSAGE_HEAD];
            let n = frame::encode_message_head(&mut head, &h, b"Rx", 4);
            bytes.extend_from_slice(&head[..n]);
            bytes.extend_from_slice(&tag.to_le_bytes());
            id += 1;
            tag += 1;
        }
        let mut c = dial_with(&px, &bytes);
        // X's HELLO: X took the connection (and is replacing the previous).
        let mut theirs = [0u8; 40];
        c.read_exact(&mut theirs).unwrap();
        conns.push(c);
        // Keep the last two open: the previous one is being replaced.
        if conns.len() > 2 {
            conns.remove(0);
        }
        assert!(t0.elapsed() < Duration::from_secs(120), "the storm took over 120 s");
    }
    // The last connection stays: everything on it is delivered. Wait until
    // its last message is there (bounded), then stop the receiver.
    let last = tag - 1;
    wait_until("the last message delivered", || received.lock().unwrap().last() == Some(&last));
    done.store(true, Ordering::Release);
    receiver.join().unwrap();
    drop(conns);
    x.shutdown().unwrap();
    let got = received.lock().unwrap();
    let out_of_order: Vec<(u32, u32)> = got.windows(2).filter(|w| w[1] <= w[0]).map(|w| (w[0], w[1])).collect();
    assert!(
        out_of_order.is_empty(),
        "{} of {} delivered messages came after a later one (first pairs: {:?})",
        out_of_order.len(),
        got.len(),
        &out_of_order[..out_of_order.len().min(5)]
    );
}

/// Item 8: X sends asynchronously to 0.A all the time; 0.A confirms what it
/// reads on its newest connection and replaces the connection every few
/// messages, leaving those in flight on the old one unconfirmed (they fail
/// with STATUS_CONNECTION_DISCONNECTED). Completions are reported in send
/// order, failures included. Before the fix the new connection was
/// published before the old connection's sends were failed, so a send on
/// the new one could complete before an earlier one's failure.
#[test]
fn completions_across_replaced_connections_come_in_send_order() {
    let dir = TempDir::new();
    let (x, px) = sp_x(&dir);
    let order = Arc::new(Mutex::new(Vec::<(u32, Status)>::new()));
    let o = order.clone();
    let s = x
        .open(
            Some(Arc::new(move |ev| {
                if let Event::MessageSent { tag, status, .. } = ev {
                    o.lock().unwrap().push((tag, status));
                }
            })),
            0,
            0,
            "Tx",
            0,
        )
        .unwrap();
    let stop = Arc::new(AtomicBool::new(false));
    let (x2, st) = (x.clone(), stop.clone());
    let (sent_tx, sent_rx) = mpsc::channel::<u32>();
    let sender = std::thread::spawn(move || {
        let mut tag = 0u32;
        while !st.load(Ordering::Acquire) {
            // Refused at the call while no link is up (that is not a
            // completion); otherwise one completion each.
            if x2.send_async(s, F, MessageBuf::new(8).unwrap(), 8, tag, 0).is_ok() {
                let _ = sent_tx.send(tag);
                tag += 1;
            } else {
                std::thread::yield_now();
            }
        }
    });
    let t0 = Instant::now();
    let mut old: Option<UnixStream> = None;
    for _ in 0..ROUNDS {
        let mut c = dial_with(&px, &[]);
        let mut theirs = [0u8; 40];
        c.read_exact(&mut theirs).unwrap();
        // Confirm the first few messages on this connection at once.
        for _ in 0..4 {
            let mut prefix = [0u8; frame::PREFIX_LEN];
            if c.read_exact(&mut prefix).is_err() {
                break;
            }
            let p = frame::parse_prefix(&prefix, 1 << 20).unwrap();
            let mut body = vec![0u8; p.body_len as usize];
            c.read_exact(&mut body).unwrap();
            if p.kind == frame::Kind::Message {
                let (h, _) = frame::decode_message_fixed(&body, p.body_len).unwrap();
                let mut f = Vec::new();
                frame::encode_confirms(&mut f, &[(h.id, Status::STATUS_SUCCESS)]);
                let _ = c.write_all(&f);
            }
        }
        // The old one goes when the new one has been used (X replaced it).
        old = Some(c);
        assert!(t0.elapsed() < Duration::from_secs(120), "the storm took over 120 s");
    }
    stop.store(true, Ordering::Release);
    sender.join().unwrap();
    let sent: Vec<u32> = sent_rx.try_iter().collect();
    // Every send completes: the last connection's in-flight ones fail when
    // it closes.
    drop(old);
    wait_until("every send completed", || order.lock().unwrap().len() == sent.len());
    x.shutdown().unwrap();
    let got = order.lock().unwrap();
    let out_of_order: Vec<(u32, Status, u32, Status)> =
        got.windows(2).filter(|w| w[1].0 <= w[0].0).map(|w| (w[0].0, w[0].1, w[1].0, w[1].1)).collect();
    assert!(
        out_of_order.is_empty(),
        "{} of {} completions came after a later send's (first: {:?})",
        out_of_order.len(),
        got.len(),
        &out_of_order[..out_of_order.len().min(5)]
    );
    assert!(got.iter().any(|c| c.1 == Status::STATUS_SUCCESS) && got.iter().any(|c| c.1 == Status::STATUS_CONNECTION_DISCONNECTED));
}
