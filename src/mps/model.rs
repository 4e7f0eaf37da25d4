//! Model checks (loom) of the session close against event completion and
//! callbacks: the shipped `Core` (close, maybe_finish_close, finish_close,
//! accept, dispatch, Accepted's drop, run_event, the dispatcher's worker)
//! driven from loom threads, its locks those of `crate::sync` under
//! `--cfg loom`. Run by `scripts/model-check`; what is checked and what is not:
//! docs/DESIGN.md, "Model checking".
//!
//! The transport is left out (no `Cmi`): a message arrives through the same
//! `Upcall` adapter a link thread calls (`accept`, then `dispatch` once the
//! confirmation left, or the `Accepted` dropped when it could not), and a send
//! goes to the session itself over the loopback path (`transmit` to the local
//! SP), which confirms and dispatches on the sender's thread.

use super::*;
use crate::cmi::Upcall;
use crate::sync::model::{check, Timeouts};
use loom::thread;
use std::path::Path;

/// What a model's callback saw, in the order it saw it (the order of the
/// recorder's lock, which the model's other threads share).
#[derive(Clone, Debug, PartialEq)]
enum Seen {
    /// A callback began, for this event.
    Enter(Kind),
    /// That callback returned.
    Exit,
    /// A client thread is about to call `close`.
    CloseBegin,
    /// Its `close` returned this.
    CloseEnd(Result<CloseOutcome, Status>),
    /// A callback called `close` on its own session and got this.
    CloseInCallback(Result<CloseOutcome, Status>),
}

#[derive(Clone, Copy, Debug, PartialEq)]
enum Kind {
    Sent(Status),
    Received,
    CloseCompleted,
}

fn kind(ev: &Event) -> Kind {
    match ev {
        Event::MessageSent { status, .. } => Kind::Sent(*status),
        Event::MessageReceived(_) => Kind::Received,
        Event::CloseCompleted { .. } => Kind::CloseCompleted,
    }
}

/// The model's own record (loom-visible, so its lock takes part in the search).
#[derive(Default)]
struct Recorder {
    seen: loom::sync::Mutex<Vec<Seen>>,
    cv: loom::sync::Condvar,
}

impl Recorder {
    fn push(&self, s: Seen) {
        self.seen.lock().unwrap().push(s);
        self.cv.notify_all();
    }
    /// Waits until `f` holds of what was seen (a missing event is a deadlock
    /// loom reports, with the interleaving that lost it).
    fn wait_until(&self, f: impl Fn(&[Seen]) -> bool) -> Vec<Seen> {
        let mut g = self.seen.lock().unwrap();
        while !f(&g) {
            g = self.cv.wait(g).unwrap();
        }
        g.clone()
    }
}

const MAILBOX: &str = "m";
const PEER: SpId = SpId::b(1);

/// A bare core (no transport, no threads) with nothing logged.
fn core() -> Arc<Core> {
    crate::log::set_threshold(0);
    let cfg = Config::embedded_default(SpId::a(1), Path::new("/nonexistent/mps-model")).expect("the embedded default");
    Core::new(Arc::new(cfg))
}

/// A session whose callback records every event; `inside` runs inside each
/// callback (with the core, to call the API from there).
fn open_recorded(
    core: &Arc<Core>,
    rec: &Arc<Recorder>,
    inside: impl Fn(&Core, SessionId, Kind, &Recorder) + Send + Sync + 'static,
) -> SessionId {
    let (r, weak) = (rec.clone(), Arc::downgrade(core));
    let cb: Callback = Arc::new(move |ev: Event| {
        let k = kind(&ev);
        let id = match &ev {
            Event::MessageSent { session, .. } | Event::CloseCompleted { session, .. } => Some(*session),
            Event::MessageReceived(m) => Some(m.session),
        };
        r.push(Seen::Enter(k));
        if let (Some(c), Some(id)) = (weak.upgrade(), id) {
            inside(&c, id, k, &r);
        }
        r.push(Seen::Exit);
    });
    core.open(Some(cb), 0, 7, MAILBOX, 0).expect("open")
}

/// A message for the session as a link thread hands it up.
fn inbound(sync: bool) -> InboundMessage<'static> {
    InboundMessage { conduit: 0, domain: 7, tag: 5, sync, name: MAILBOX, payload: vec![1, 2, 3], confirm_later: None }
}

/// One callback thread, as `Dispatcher::start` runs it.
fn start_worker(core: &Arc<Core>) -> thread::JoinHandle<()> {
    let c = core.clone();
    thread::spawn(move || dispatch::worker(&c))
}

fn stop_worker(core: &Arc<Core>, w: thread::JoinHandle<()>) {
    core.dispatcher.stop();
    w.join().unwrap();
}

/// Nothing is left over once a session closed: no send, receiver, event,
/// reservation or byte accounted to it, and its handle is stale.
fn assert_closed_clean(core: &Core, s: &Session) {
    let st = s.st.lock();
    assert!(st.closed, "the close completed");
    assert_eq!((st.sends, st.async_sends, st.receivers), (0, 0, 0), "no send or receiver left");
    assert_eq!((st.reserved, st.queue_tickets.len()), (0, 0), "no reservation left");
    assert!(st.events.is_empty() && !st.running && !st.scheduled, "no event, callback or run-queue entry left");
    assert!(st.waiters.is_empty() && st.queue.is_empty(), "no waiter or queued message left");
    assert_eq!(st.held_bytes, 0, "every byte held for the client was given back");
    assert!(core.table.get(s.id).is_err(), "the handle is stale");
}

/// The properties of one run of a callback session (SPEC 4, 5): callbacks
/// are serialized; an accepted asynchronous send gets exactly one
/// MessageSent; a message confirmed SUCCESS is delivered; CloseCompleted
/// comes exactly once, only for a pending close, after every other callback
/// returned; a close during a callback is pending; a close that said Closed
/// saw no callback run after it. `arrived`: a message from a link was
/// accepted (confirmed SUCCESS to its sender).
fn assert_callback_run(seen: &[Seen], sent: bool, arrived: bool) {
    let mut running: Option<Kind> = None;
    let mut enters = Vec::new();
    for s in seen {
        match s {
            Seen::Enter(k) => {
                assert!(running.is_none(), "a callback began while another ran: {seen:?}");
                running = Some(*k);
                enters.push(*k);
            }
            Seen::Exit => assert!(running.take().is_some(), "{seen:?}"),
            _ => {}
        }
    }
    assert!(running.is_none(), "every callback returned: {seen:?}");
    let count = |f: &dyn Fn(&Kind) -> bool| enters.iter().filter(|k| f(k)).count();
    assert_eq!(count(&|k| matches!(k, Kind::Sent(_))), sent as usize, "one MessageSent per accepted send: {seen:?}");
    let confirmed = enters.contains(&Kind::Sent(Status::STATUS_SUCCESS)) as usize + arrived as usize;
    assert_eq!(count(&|k| *k == Kind::Received), confirmed, "a confirmed message is delivered, once: {seen:?}");
    let closes: Vec<_> = seen
        .iter()
        .filter_map(|s| match s {
            Seen::CloseEnd(r) | Seen::CloseInCallback(r) => Some(*r),
            _ => None,
        })
        .collect();
    let pending = closes.iter().filter(|r| **r == Ok(CloseOutcome::Pending)).count();
    assert!(pending <= 1, "one close at most succeeds: {seen:?}");
    assert_eq!(count(&|k| *k == Kind::CloseCompleted), pending, "CloseCompleted once per pending close: {seen:?}");
    if pending == 1 {
        assert_eq!(enters.last(), Some(&Kind::CloseCompleted), "CloseCompleted is the last callback: {seen:?}");
    }
    // A close called while a callback ran (it began before the call and
    // returned after it) is pending; after a close that said Closed, no callback.
    let pos = |x: &Seen| seen.iter().position(|s| s == x);
    if let (Some(b), Some(e)) = (pos(&Seen::CloseBegin), seen.iter().position(|s| matches!(s, Seen::CloseEnd(_)))) {
        let outcome = match &seen[e] {
            Seen::CloseEnd(r) => *r,
            _ => unreachable!(),
        };
        let mut open_at = None;
        for (i, s) in seen.iter().enumerate() {
            match s {
                Seen::Enter(_) => open_at = Some(i),
                Seen::Exit => {
                    if open_at.is_some_and(|o| o < b) && i > e {
                        assert_eq!(outcome, Ok(CloseOutcome::Pending), "a close during a callback is pending: {seen:?}");
                    }
                    open_at = None;
                }
                _ => {}
            }
        }
        if outcome == Ok(CloseOutcome::Closed) {
            let enter_after = seen[e..].iter().any(|s| matches!(s, Seen::Enter(_)));
            let exit_after = seen[e..].iter().any(|s| matches!(s, Seen::Exit));
            assert!(!enter_after && !exit_after, "no callback runs across or after a close that said Closed: {seen:?}");
        }
    }
}

/// Waits for what a run must deliver: the MessageSent of an accepted send,
/// the MessageReceived of a message it confirmed, the CloseCompleted of a
/// pending close.
fn all_delivered(seen: &[Seen], sent: bool) -> bool {
    let entered = |k: Kind| seen.contains(&Seen::Enter(k));
    let sent_seen = seen.iter().any(|s| matches!(s, Seen::Enter(Kind::Sent(_))));
    let pending = seen
        .iter()
        .any(|s| matches!(s, Seen::CloseEnd(Ok(CloseOutcome::Pending)) | Seen::CloseInCallback(Ok(CloseOutcome::Pending))));
    let enters = seen.iter().filter(|s| matches!(s, Seen::Enter(_))).count();
    let last_returned = enters == seen.iter().filter(|s| **s == Seen::Exit).count();
    (!sent || sent_seen)
        && (!entered(Kind::Sent(Status::STATUS_SUCCESS)) || entered(Kind::Received))
        && (!pending || entered(Kind::CloseCompleted))
        && last_returned
}

/// Path 1 (issue 8): a client closes the session while its asynchronous send
/// (to itself, over the loopback path) completes and the callback thread runs
/// the events that makes.
#[test]
fn model_close_races_an_asynchronous_send_and_its_callbacks() {
    check("close_races_an_asynchronous_send_and_its_callbacks", Timeouts::Never, 3, || {
        let core = core();
        let rec = Arc::new(Recorder::default());
        let id = open_recorded(&core, &rec, |_, _, _, _| {});
        let s = core.table.get(id).unwrap();
        let w = start_worker(&core);
        let c = core.clone();
        let sender = thread::spawn(move || {
            let buf = MessageBuf::from_slice(b"abc").unwrap();
            c.send_async(id, c.cfg.local, buf, 3, 9, 0).is_ok()
        });
        let (c, r) = (core.clone(), rec.clone());
        let closer = thread::spawn(move || {
            r.push(Seen::CloseBegin);
            let out = c.close(id);
            r.push(Seen::CloseEnd(out));
        });
        let sent = sender.join().unwrap();
        closer.join().unwrap();
        let seen = rec.wait_until(|s| all_delivered(s, sent));
        stop_worker(&core, w);
        assert_callback_run(&seen, sent, false);
        assert_closed_clean(&core, &s);
    });
}

/// Path 1: a callback closes its own session (SPEC 5: a callback may call
/// MpsClose): from the send's MessageSent, while the message the send
/// delivered may still be being dispatched, and from the MessageReceived,
/// the last event, when only the running callback keeps the session open.
/// Either close is pending, and its CloseCompleted follows every other callback.
fn close_from_inside(on: fn(Kind) -> bool) {
    let core = core();
    let rec = Arc::new(Recorder::default());
    let id = open_recorded(&core, &rec, move |c, id, k, r| {
        if on(k) {
            r.push(Seen::CloseInCallback(c.close(id)))
        }
    });
    let s = core.table.get(id).unwrap();
    let w = start_worker(&core);
    let c = core.clone();
    let sender = thread::spawn(move || {
        let buf = MessageBuf::from_slice(b"abc").unwrap();
        c.send_async(id, c.cfg.local, buf, 3, 9, 0).is_ok()
    });
    let sent = sender.join().unwrap();
    assert!(sent, "nothing refuses this send");
    let seen = rec.wait_until(|s| all_delivered(s, sent));
    stop_worker(&core, w);
    assert!(seen.contains(&Seen::CloseInCallback(Ok(CloseOutcome::Pending))), "a close inside a callback is pending: {seen:?}");
    assert_callback_run(&seen, sent, false);
    assert_closed_clean(&core, &s);
}

#[test]
fn model_close_from_inside_a_message_sent_callback() {
    check("close_from_inside_a_message_sent_callback", Timeouts::Never, 3, || close_from_inside(|k| matches!(k, Kind::Sent(_))));
}

#[test]
fn model_close_from_inside_the_last_callback() {
    check("close_from_inside_the_last_callback", Timeouts::Never, 3, || close_from_inside(|k| k == Kind::Received));
}

/// Path 1: a message arrives from a link (accepted, its confirmation sent,
/// dispatched) for a callback session while the client closes it: a message
/// confirmed SUCCESS is delivered before CloseCompleted, never dropped by the
/// close.
#[test]
fn model_close_races_an_arriving_message_for_the_callback() {
    check("close_races_an_arriving_message_for_the_callback", Timeouts::Never, 3, || {
        let core = core();
        let rec = Arc::new(Recorder::default());
        let id = open_recorded(&core, &rec, |_, _, _, _| {});
        let s = core.table.get(id).unwrap();
        let w = start_worker(&core);
        let up = Arc::new(Up(Arc::downgrade(&core)));
        let link = thread::spawn(move || match up.accept(PEER, inbound(false)) {
            Ok(a) => {
                up.dispatch(a);
                true
            }
            Err(_) => false,
        });
        let (c, r) = (core.clone(), rec.clone());
        let closer = thread::spawn(move || {
            r.push(Seen::CloseBegin);
            let out = c.close(id);
            r.push(Seen::CloseEnd(out));
        });
        let confirmed = link.join().unwrap();
        closer.join().unwrap();
        let seen = rec.wait_until(|s| all_delivered(s, false) && (!confirmed || s.contains(&Seen::Enter(Kind::Received))));
        stop_worker(&core, w);
        assert_callback_run(&seen, false, confirmed);
        assert_closed_clean(&core, &s);
    });
}

/// Path 1: a receiver blocked in a synchronous receive, a message arriving
/// for it and a close, all at once: the receiver always returns (no lost
/// wakeup), with the message or STATUS_CANCELLED (or the close's refusal when
/// it came first), and a message goes to one receiver at most.
#[test]
fn model_close_races_a_blocked_receiver_and_an_arriving_message() {
    check("close_races_a_blocked_receiver_and_an_arriving_message", Timeouts::Never, 3, || {
        let core = core();
        let id = core.open(None, 0, 7, MAILBOX, 0).unwrap();
        let s = core.table.get(id).unwrap();
        let c = core.clone();
        let receiver = thread::spawn(move || c.receive(id, Timeout::Forever, 0));
        let up = Arc::new(Up(Arc::downgrade(&core)));
        let link = thread::spawn(move || match up.accept(PEER, inbound(true)) {
            Ok(a) => {
                up.dispatch(a);
                true
            }
            Err(_) => false,
        });
        let c = core.clone();
        let closer = thread::spawn(move || c.close(id));
        let got = receiver.join().unwrap();
        let confirmed = link.join().unwrap();
        let closed = closer.join().unwrap();
        match &got {
            Ok(m) => {
                assert!(confirmed, "only an accepted message is received");
                assert_eq!((m.tag, m.data.as_slice(), m.sender), (5, &[1u8, 2, 3][..], PEER));
            }
            Err(Status::STATUS_CANCELLED) => {
                assert_eq!(closed, Ok(CloseOutcome::Pending), "a close that cancels a waiting receiver is pending");
            }
            Err(Status::STATUS_PIPE_CLOSING) | Err(Status::STATUS_INVALID_HANDLE) => {}
            Err(e) => panic!("receive returned {e:?}"),
        }
        assert!(closed.is_ok(), "the only close succeeds: {closed:?}");
        assert_closed_clean(&core, &s);
    });
}

/// Path 1: a message whose confirmation has left (the sender may already
/// know it arrived) is found by a test receive (Timeout 0) that starts after
/// that, even though its dispatch is still in progress (the `settled` wait);
/// and a message whose confirmation could not leave (its `Accepted` dropped)
/// lets a concurrent test receive and a pending close finish.
#[test]
fn model_test_receive_after_the_confirmation_finds_the_message() {
    check("test_receive_after_the_confirmation_finds_the_message", Timeouts::Never, 3, || {
        let core = core();
        let id = core.open(None, 0, 7, MAILBOX, 0).unwrap();
        let wire = Arc::new((loom::sync::Mutex::new(false), loom::sync::Condvar::new()));
        let up = Arc::new(Up(Arc::downgrade(&core)));
        let w2 = wire.clone();
        let link = thread::spawn(move || {
            let a = up.accept(PEER, inbound(true)).expect("accepted");
            // The link sends the confirmation, then dispatches (seed FIG. 8A).
            *w2.0.lock().unwrap() = true;
            w2.1.notify_all();
            up.dispatch(a);
        });
        let c = core.clone();
        let tester = thread::spawn(move || {
            let mut confirmed = wire.0.lock().unwrap();
            while !*confirmed {
                confirmed = wire.1.wait(confirmed).unwrap();
            }
            drop(confirmed);
            c.receive(id, Timeout::Test, 0)
        });
        link.join().unwrap();
        let got = tester.join().unwrap();
        assert!(got.is_ok_and(|m| m.tag == 5), "a test receive after the confirmation finds the message");
    });
}

#[test]
fn model_a_dropped_acceptance_releases_test_receive_and_close() {
    check("a_dropped_acceptance_releases_test_receive_and_close", Timeouts::Never, 3, || {
        let core = core();
        let id = core.open(None, 0, 7, MAILBOX, 0).unwrap();
        let s = core.table.get(id).unwrap();
        let up = Arc::new(Up(Arc::downgrade(&core)));
        // The confirmation could not be handed to the link: dropped undispatched.
        let link = thread::spawn(move || up.accept(PEER, inbound(true)).is_ok());
        let c = core.clone();
        let tester = thread::spawn(move || c.receive(id, Timeout::Test, 0));
        let c = core.clone();
        let closer = thread::spawn(move || c.close(id));
        link.join().unwrap();
        let got = tester.join().unwrap();
        let closed = closer.join().unwrap();
        assert!(
            matches!(got, Err(Status::STATUS_TIMEOUT) | Err(Status::STATUS_PIPE_CLOSING) | Err(Status::STATUS_INVALID_HANDLE)),
            "{got:?}"
        );
        assert!(closed.is_ok(), "{closed:?}");
        assert_closed_clean(&core, &s);
    });
}

/// Path 1, with timed waits that run out: a receiver whose time runs out as
/// the message reaches it returns it, or leaves it queued: never loses it.
#[test]
fn model_a_receive_timing_out_as_the_message_arrives_loses_nothing() {
    check("a_receive_timing_out_as_the_message_arrives_loses_nothing", Timeouts::AtOnce, 3, || {
        let core = core();
        let id = core.open(None, 0, 7, MAILBOX, 0).unwrap();
        let s = core.table.get(id).unwrap();
        let c = core.clone();
        let receiver = thread::spawn(move || c.receive(id, Timeout::Seconds(1), 0));
        let up = Arc::new(Up(Arc::downgrade(&core)));
        let link = thread::spawn(move || {
            let a = up.accept(PEER, inbound(true)).expect("accepted");
            up.dispatch(a);
        });
        let got = receiver.join().unwrap();
        link.join().unwrap();
        let st = s.st.lock();
        match got {
            Ok(m) => assert!(m.tag == 5 && st.queue.is_empty(), "received once"),
            Err(Status::STATUS_TIMEOUT) => assert_eq!(st.queue.len(), 1, "a receive that timed out left the message queued"),
            Err(e) => panic!("receive returned {e:?}"),
        }
        assert!(st.waiters.is_empty() && st.receivers == 0, "the receiver is gone");
        assert_eq!(st.held_bytes, 3 * st.queue.len() as u64);
    });
}

/// Path 1 with two callback threads: the session's events still run one at
/// a time and in order (a session is on the run queue once: `scheduled`), and
/// the close's CloseCompleted still comes last. The closer is the last
/// callback, so that nothing but the running callback keeps the session open.
/// Five threads: bound 2 (42 s and 514,014 interleavings at 3, against 2 s here).
#[test]
fn model_two_callback_threads_serialize_one_session() {
    check("two_callback_threads_serialize_one_session", Timeouts::Never, 2, || {
        let core = core();
        let rec = Arc::new(Recorder::default());
        let id = open_recorded(&core, &rec, |c, id, k, r| {
            if k == Kind::Received {
                r.push(Seen::CloseInCallback(c.close(id)))
            }
        });
        let s = core.table.get(id).unwrap();
        let (w1, w2) = (start_worker(&core), start_worker(&core));
        let c = core.clone();
        let sender = thread::spawn(move || {
            let buf = MessageBuf::from_slice(b"abc").unwrap();
            c.send_async(id, c.cfg.local, buf, 3, 9, 0).is_ok()
        });
        let sent = sender.join().unwrap();
        let seen = rec.wait_until(|s| all_delivered(s, sent));
        core.dispatcher.stop();
        w1.join().unwrap();
        w2.join().unwrap();
        let order: Vec<Kind> = seen.iter().filter_map(|s| if let Seen::Enter(k) = s { Some(*k) } else { None }).collect();
        assert_eq!(order, [Kind::Sent(Status::STATUS_SUCCESS), Kind::Received, Kind::CloseCompleted], "in event order: {seen:?}");
        assert_callback_run(&seen, sent, false);
        assert_closed_clean(&core, &s);
    });
}
