//! Issue 8.11, last part: "A full session must not hold back the others on
//! its link." A session whose queue is full refuses every message sent to it
//! (STATUS_INSUFFICIENT_RESOURCES), and each refusal used to be a warning
//! line written under the library's locks on the link's thread: a peer
//! streaming to that session slowed another session on the same link from
//! about 17,000 to 33 synchronous messages per second.
//!
//! Self-contained (public API only), in its own process. A guard, not a
//! proof: run on the code before the asynchronous, rate-limited log (the
//! parent of 5bdd60c) it passed too, in 1.4-5.5 s (its 295,261 warning
//! lines went to a file in 1.4 s; the field's slowdown needed a slower
//! stderr). The log's own tests (tests/log.rs) are the regression tests of
//! 8.11; this one keeps the end-to-end promise under a 60 s watchdog.

use mps::{Config, Event, MessageBuf, Mps, SpId, Status, Timeout};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{mpsc, Arc};
use std::time::Duration;

fn config(me: &str, listen: &str, other: &str, other_addr: &str, extra: &str) -> Config {
    let text = format!(
        "sp = \"{me}\"\nlisten = \"{listen}\"\n{extra}\n[[peer]]\nsp = \"{other}\"\naddress = \"{other_addr}\"\n\
         [heartbeat]\ninterval_ms = 100\ndead_peer_timeout_ms = 5000\n"
    );
    Config::from_toml(&text, "test").expect("test configuration is valid")
}

/// 0.A's session "Full" streams asynchronous messages to its namesake on
/// 0.B, which never receives (its queue holds 4), so nearly every one is
/// refused, while 0.A's session "Other" makes 2,000 synchronous round trips
/// to its namesake on 0.B over the same link. They must all complete within the watchdog (60 s: at the
/// 33 per second measured before, 2,000 would take a minute; unhindered
/// they take well under a second). Each refusal still reaches the flooding
/// sender as its completion's status.
#[test]
fn a_full_session_does_not_hold_back_another_session_on_its_link() {
    let dir = std::env::temp_dir().join(format!("mps-full-session-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o700)).unwrap();
    }
    let (ua, ub) = (format!("unix:{}", dir.join("a.sock").display()), format!("unix:{}", dir.join("b.sock").display()));
    let mb = Mps::start(config("0.B", &ub, "0.A", &ua, "[limits]\nsession_queue_depth = 4\n")).unwrap();
    let ma = Mps::start(config("0.A", &ua, "0.B", &ub, "[limits]\nsession_queue_depth = 4\n")).unwrap();
    let (a, b) = (SpId::a(0), SpId::b(0));
    ma.wait_for_peer(b, Some(Duration::from_secs(30))).unwrap();
    let _full = mb.open(None, 0, 0, "Full", 0).unwrap();
    let other_b = mb.open(None, 0, 0, "Other", 0).unwrap();
    // The flood: a window of asynchronous sends kept full, each refused.
    let refused = Arc::new(AtomicU64::new(0));
    let (done_tx, done_rx) = mpsc::sync_channel::<()>(1 << 16);
    let r = refused.clone();
    let flood_a = ma
        .open(
            Some(Arc::new(move |ev| {
                if let Event::MessageSent { status, .. } = ev {
                    if status == Status::STATUS_INSUFFICIENT_RESOURCES {
                        r.fetch_add(1, Ordering::Relaxed);
                    }
                    let _ = done_tx.try_send(());
                }
            })),
            0,
            0,
            "Full",
            0,
        )
        .unwrap();
    let stop = Arc::new(AtomicBool::new(false));
    let (m, st) = (ma.clone(), stop.clone());
    let flooder = std::thread::spawn(move || {
        let mut in_flight = 0u32;
        while !st.load(Ordering::Acquire) {
            while done_rx.try_recv().is_ok() {
                in_flight -= 1;
            }
            if in_flight < 256 && m.send_async(flood_a, b, MessageBuf::new(16).unwrap(), 16, 0, 0).is_ok() {
                in_flight += 1;
            } else {
                let _ = done_rx.recv_timeout(Duration::from_millis(10)).map(|()| in_flight -= 1);
            }
        }
    });
    // Wait until the flood is being refused, then the round trips.
    let t0 = std::time::Instant::now();
    while refused.load(Ordering::Relaxed) < 1000 {
        assert!(t0.elapsed() < Duration::from_secs(30), "the flood was not refused within 30 s");
        std::thread::yield_now();
    }
    let other_a = ma.open(None, 0, 0, "Other", 0).unwrap();
    let (m, mb2) = (ma.clone(), mb.clone());
    let (tx, rx) = mpsc::channel();
    let pinger = std::thread::spawn(move || {
        let buf = MessageBuf::new(8).unwrap();
        for i in 0..2000u32 {
            m.send_sync(other_a, b, &buf, 8, i).expect("a synchronous send to the other session");
            let got = mb2.receive(other_b, Timeout::Seconds(30), 0).expect("the other session receives");
            assert_eq!(got.tag, i);
        }
        let _ = tx.send(());
    });
    let finished = rx.recv_timeout(Duration::from_secs(60));
    let refusals = refused.load(Ordering::Relaxed);
    stop.store(true, Ordering::Release);
    flooder.join().unwrap();
    assert!(
        finished.is_ok(),
        "2,000 round trips to another session did not complete within 60 s while a full session refused the flood \
         ({refusals} refusals so far): the full session holds the link back"
    );
    pinger.join().unwrap();
    let _ = a;
    ma.shutdown().unwrap();
    mb.shutdown().unwrap();
    let _ = std::fs::remove_dir_all(&dir);
}
