//! A panic on a library thread (issue 8.15): it must not strand a send (one
//! that then completes zero times), a link or a session. The faults are
//! injected by test hooks (`Conn::panic_at_next_confirm`,
//! `Dispatcher::panic_at_next_batch`) into two real SPs linked over
//! Unix-domain sockets; every wait has a deadline, so a stranded send fails
//! the test instead of hanging it.

use super::*;
use std::sync::mpsc;

pub(super) const A: SpId = SpId { unit: 0, sp: 0 };
pub(super) const B: SpId = SpId { unit: 0, sp: 1 };
/// How long something that must happen may take: a watchdog, generous
/// because the machine is shared (CI runs valgrind beside these tests).
pub(super) const WAIT: Duration = Duration::from_secs(30);

/// A private socket directory, removed on drop.
pub(super) struct Dir(std::path::PathBuf);

impl Dir {
    fn new(what: &str) -> Dir {
        use std::os::unix::fs::DirBuilderExt;
        static N: AtomicU64 = AtomicU64::new(0);
        let d = std::env::temp_dir().join(format!("mps-{what}-{}-{}", std::process::id(), N.fetch_add(1, Ordering::Relaxed)));
        std::fs::DirBuilder::new().recursive(true).mode(0o700).create(&d).unwrap();
        Dir(d)
    }
}

impl Drop for Dir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// SPs 0.A and 0.B over Unix-domain sockets in a new directory (0.A dials),
/// `extra_a` appended to 0.A's configuration; both links up, the log recorded.
pub(super) fn unix_pair(what: &str, extra_a: &str) -> (Dir, Mps, Mps) {
    unix_pair_with(what, extra_a, "")
}

/// `unix_pair`, with `extra_b` appended to 0.B's configuration too.
pub(super) fn unix_pair_with(what: &str, extra_a: &str, extra_b: &str) -> (Dir, Mps, Mps) {
    record_log();
    let dir = Dir::new(what);
    let addr = |n: &str| format!("unix:{}", dir.0.join(n).display());
    let text = |me: &str, mine: &str, peer: &str, theirs: &str, extra: &str| {
        format!(
            "sp = \"{me}\"\nlisten = \"{}\"\n{extra}\n[[peer]]\nsp = \"{peer}\"\naddress = \"{}\"\n\
             [heartbeat]\ninterval_ms = 50\ndead_peer_timeout_ms = 2000\n[reconnect]\ninitial_backoff_ms = 5\nmax_backoff_ms = 50\n",
            addr(mine),
            addr(theirs)
        )
    };
    let mb = Mps::start(Config::from_toml(&text("0.B", "b.sock", "0.A", "a.sock", extra_b), "B").unwrap()).unwrap();
    let ma = Mps::start(Config::from_toml(&text("0.A", "a.sock", "0.B", "b.sock", extra_a), "A").unwrap()).unwrap();
    ma.wait_for_peer(B, Some(WAIT)).expect("A's link to B");
    mb.wait_for_peer(A, Some(WAIT)).expect("B's link to A");
    (dir, ma, mb)
}

pub(super) fn channel_callback() -> (Callback, mpsc::Receiver<Event>) {
    let (tx, rx) = mpsc::channel();
    let tx = Mutex::new(tx);
    (Arc::new(move |ev| drop(tx.lock().send(ev))), rx)
}

/// Runs `f` on a thread; fails the test if it has not returned within WAIT.
pub(super) fn within<T: Send + 'static>(what: &str, f: impl FnOnce() -> T + Send + 'static) -> T {
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || drop(tx.send(f())));
    rx.recv_timeout(WAIT).unwrap_or_else(|_| panic!("{what}: still not done after {WAIT:?} (hung)"))
}

/// Waits until `cond()` holds, failing the test after WAIT.
pub(super) fn wait_until(what: &str, cond: impl Fn() -> bool) {
    let t0 = Instant::now();
    while !cond() {
        assert!(t0.elapsed() < WAIT, "{what}: not within {WAIT:?}");
        std::thread::yield_now();
    }
}

/// The library's log, recorded (no other unit test of this crate sets a
/// sink; lines still go nowhere else while these tests run).
static LINES: Mutex<Vec<String>> = parking_lot::const_mutex(Vec::new());
static LINES_CV: parking_lot::Condvar = parking_lot::Condvar::new();

fn record_log() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        crate::log::set_sink(Some(Box::new(|level, line| {
            LINES.lock().push(format!("{level:?}: {line}"));
            LINES_CV.notify_all();
        })));
    });
}

/// Waits (up to WAIT) for a logged line that contains every one of `needles`.
pub(super) fn expect_log(needles: &[&str]) -> String {
    let deadline = Instant::now() + WAIT;
    let mut lines = LINES.lock();
    loop {
        if let Some(l) = lines.iter().find(|l| needles.iter().all(|n| l.contains(n))) {
            return l.clone();
        }
        if LINES_CV.wait_until(&mut lines, deadline).timed_out() {
            panic!("no log line with all of {needles:?} within {WAIT:?}; the last lines:\n{}", lines[lines.len().saturating_sub(20)..].join("\n"));
        }
    }
}

/// The link thread of 0.A panics while it handles a CONFIRM from 0.B, of an
/// asynchronous send then in flight. That send must complete, once, with
/// STATUS_CONNECTION_DISCONNECTED; a synchronous send made after the panic
/// must return (not wait for a read role nobody will hand over); the panic
/// is logged with the thread's name and message; and the link comes back, so
/// that messages flow again.
#[test]
fn a_panic_on_a_link_thread_ends_the_link_and_strands_no_send() {
    let (_dir, ma, mb) = unix_pair("panic-link", "");
    let (cb, events) = channel_callback();
    let sa = ma.open(Some(cb), 0, 0, "PanicLink", 0).unwrap();
    let sb = mb.open(None, 0, 0, "PanicLink", 0).unwrap();
    ma.send_sync(sa, B, &MessageBuf::from_slice(b"warm").unwrap(), 4, 1).unwrap();
    assert_eq!(mb.receive(sb, Timeout::Seconds(10), 1).unwrap().data, b"warm");

    let conn = ma.owner.core.cmi.get().unwrap().link(B).unwrap().expect("A's link to B is up");
    conn.panic_at_next_confirm.store(true, Ordering::Release);
    // Nobody on A waits on the link: its own thread reads B's CONFIRM of
    // this send (the only one in flight) and panics before handling it.
    ma.send_async(sa, B, MessageBuf::from_slice(b"in flight").unwrap(), 9, 2, 0).unwrap();
    wait_until("the injected panic fired", || !conn.panic_at_next_confirm.load(Ordering::Acquire));

    let (m, buf) = (ma.clone(), MessageBuf::from_slice(b"after").unwrap());
    let after = within("a synchronous send after the link thread panicked", move || m.send_sync(sa, B, &buf, 5, 3));
    assert!(
        matches!(after, Ok(()) | Err(Status::STATUS_CONNECTION_DISCONNECTED) | Err(Status::STATUS_HOST_UNREACHABLE)),
        "the send after the panic: {after:?}"
    );
    match events.recv_timeout(WAIT) {
        Ok(Event::MessageSent { status, tag, .. }) => {
            assert_eq!((tag, status), (2, Status::STATUS_CONNECTION_DISCONNECTED), "the send in flight at the panic")
        }
        Ok(e) => panic!("unexpected {e:?}"),
        Err(_) => panic!("the send in flight when the link thread panicked never completed (stranded)"),
    }
    expect_log(&["Error", "mps-dial-0.B panicked", "injected fault: a panic while handling a CONFIRM from SP 0.B"]);
    // The link session ended with the panic as its reason (not the log's
    // "link ... lost" line: that call site is shared by every link of this
    // test process, and rate-limited).
    match conn.state() {
        crate::cmi::link::State::Ended(why) => assert!(why.contains("panicked"), "the session ended for another reason: {why}"),
        other => panic!("the link session after the panic: {other:?}"),
    }

    // The link comes back by itself, and carries messages again.
    ma.wait_for_peer(B, Some(WAIT)).expect("A's link to B back after the panic");
    let (m, buf) = (ma.clone(), MessageBuf::from_slice(b"again").unwrap());
    within("a synchronous send on the new link", move || m.send_sync(sa, B, &buf, 5, 4)).expect("a send on the new link");
    assert_eq!(mb.receive(sb, Timeout::Seconds(10), 4).unwrap().data, b"again");
    assert!(events.try_recv().is_err(), "a send completed twice");
    assert_eq!(ma.session_info(sa).unwrap().sends, 0);
}

/// An API thread panics while it reads the link itself (a synchronous send
/// waiting for its confirmation holds the read role, and the fault fires as
/// it handles the CONFIRM). The panic reaches that caller (the C boundary
/// makes it a status); the read role must not stay with the dead stint: the
/// link ends, a later send returns instead of waiting for a hand-over nobody
/// makes, and the link comes back and carries messages.
#[test]
fn a_panic_on_an_api_thread_reading_the_link_frees_the_read_role() {
    let (_dir, ma, mb) = unix_pair("panic-api", "");
    let sa = ma.open(None, 0, 0, "PanicApi", 0).unwrap();
    let sb = mb.open(None, 0, 0, "PanicApi", 0).unwrap();
    ma.send_sync(sa, B, &MessageBuf::from_slice(b"warm").unwrap(), 4, 1).unwrap();
    assert_eq!(mb.receive(sb, Timeout::Seconds(10), 1).unwrap().data, b"warm");
    let conn = ma.owner.core.cmi.get().unwrap().link(B).unwrap().expect("A's link to B is up");
    conn.panic_at_next_confirm_on_api_thread.store(true, Ordering::Release);
    // Sent from an unnamed thread, which reads the link itself when the
    // link's thread hands the role over in time (nothing else is in
    // flight); when the link's thread read the confirmation first (a slow
    // run, TSan), the fault is still armed and the next send tries again.
    let mut first = None;
    for attempt in 0..1000u32 {
        let m = ma.clone();
        match std::thread::spawn(move || m.send_sync(sa, B, &MessageBuf::from_slice(b"boom").unwrap(), 4, 2)).join() {
            Err(p) => {
                first = Some(p);
                break;
            }
            Ok(r) => {
                assert_eq!(r, Ok(()), "send {attempt} before the fault fired");
                assert_eq!(mb.receive(sb, Timeout::Seconds(10), 2).unwrap().data, b"boom");
            }
        }
    }
    let first = first.expect("the injected panic reached the caller within 1000 sends");
    assert!(crate::unwind::message(&*first).contains("injected fault"), "{}", crate::unwind::message(&*first));
    assert!(!conn.panic_at_next_confirm_on_api_thread.load(Ordering::Acquire), "the panic fired on the API thread");
    expect_log(&["Error", "panicked", "injected fault: a panic on an API thread"]);
    // The link comes back by itself, and carries messages again.
    ma.wait_for_peer(B, Some(WAIT)).expect("A's link to B back after the panic");
    let (m, buf) = (ma.clone(), MessageBuf::from_slice(b"again").unwrap());
    within("a synchronous send after the API thread's panic", move || m.send_sync(sa, B, &buf, 5, 3)).expect("a send on the new link");
    assert_eq!(mb.receive(sb, Timeout::Seconds(10), 3).unwrap().data, b"again");
}

/// A callback thread panics (in the library's code, not a callback: those
/// are caught where they run) as it takes a session's events, and it is the
/// SP's only callback thread. The session's events must still be delivered,
/// in order, and the panic logged with the thread's name and message.
#[test]
fn a_panic_on_a_callback_thread_strands_no_session() {
    let (_dir, ma, mb) = unix_pair("panic-worker", "[callbacks]\nthreads = 1\n");
    let (cb, events) = channel_callback();
    let sa = ma.open(Some(cb), 0, 0, "PanicWorker", 0).unwrap();
    // Asynchronous messages: those go to the callback (synchronous ones to receive).
    let (cb_b, sent) = channel_callback();
    let sb = mb.open(Some(cb_b), 0, 0, "PanicWorker", 0).unwrap();
    ma.owner.core.dispatcher.panic_at_next_batch.store(true, Ordering::Release);
    for (tag, text) in [(1, &b"one"[..]), (2, b"two")] {
        mb.send_async(sb, A, MessageBuf::from_slice(text).unwrap(), text.len(), tag, 0).unwrap();
    }
    for (tag, text) in [(1, &b"one"[..]), (2, b"two")] {
        match events.recv_timeout(WAIT) {
            Ok(Event::MessageReceived(m)) => assert_eq!((m.tag, m.data.as_slice()), (tag, text)),
            Ok(e) => panic!("unexpected {e:?}"),
            Err(_) => panic!("message {tag} never reached the callback: the session was stranded by the callback thread's panic"),
        }
    }
    for tag in [1, 2] {
        match sent.recv_timeout(WAIT) {
            Ok(Event::MessageSent { status, tag: t, .. }) => assert_eq!((t, status), (tag, Status::STATUS_SUCCESS)),
            other => panic!("B's send {tag}: {other:?}"),
        }
    }
    assert!(!ma.owner.core.dispatcher.panic_at_next_batch.load(Ordering::Acquire), "the injected panic never fired");
    expect_log(&["Error", "mps-callback-0 panicked", "injected fault: a panic in a callback thread"]);
    // The one callback thread still runs another session's callbacks.
    let (cb2, events2) = channel_callback();
    let sa2 = ma.open(Some(cb2), 0, 0, "PanicWorker2", 0).unwrap();
    let (cb_b2, _sent2) = channel_callback();
    let sb2 = mb.open(Some(cb_b2), 0, 0, "PanicWorker2", 0).unwrap();
    mb.send_async(sb2, A, MessageBuf::from_slice(b"three").unwrap(), 5, 3, 0).unwrap();
    match events2.recv_timeout(WAIT) {
        Ok(Event::MessageReceived(m)) => assert_eq!(m.data, b"three"),
        other => panic!("the second session's callback: {other:?}"),
    }
    // Both sessions close: nothing of theirs is left outstanding (a close
    // is pending only while the callback that delivered the last message
    // has not returned yet).
    for (s, ev) in [(sa2, &events2), (sa, &events)] {
        if ma.close(s).unwrap() == CloseOutcome::Pending {
            match ev.recv_timeout(WAIT) {
                Ok(Event::CloseCompleted { session, .. }) => assert_eq!(session, s),
                other => panic!("a pending close never completed: {other:?}"),
            }
        }
    }
}
