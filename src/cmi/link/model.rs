//! Model checks (loom) of a link's read role: the shipped `ReadRole`
//! (`run_link_thread`, `wait_on_link`) driven from loom threads, its lock,
//! condition variable and counter those of `crate::sync` under `--cfg loom`.
//! Run by `scripts/model-check`; what is checked and what is not:
//! docs/DESIGN.md, "Model checking".
//!
//! The stream is a stand-in (`Wire`), and a stint (`Wire::stint`) reads it
//! the way `read_stint` reads a socket, as far as the role can tell: it asks
//! `until()` at every frame boundary and after a wait for bytes that ended
//! without any; a read takes everything the peer has sent so far into the
//! read buffer; a wait for bytes ends on bytes, or on the interrupt (an
//! eventfd: it stays set until a read that waits for it consumes it) for an
//! interruptible reader only; a confirmation completes its sender's slot; the
//! end of the stream ends the stint. Frames, heartbeats, back-pressure and
//! the reader's clock are not modelled.
//!
//! Bounds: the models of four threads run with at most 2 preemptions (at 3
//! each explores 140,000 to 200,000 interleavings, 15 to 55 s here; each
//! fault these models were shown to find, a missing wake-up or hand-back,
//! is found at 2 as well); `MPS_MODEL_PREEMPTIONS=3` runs them deeper.

use super::*;
use std::collections::VecDeque;
use crate::sync::model::{check, Timeouts};
use loom::sync::atomic::{AtomicUsize as LoomUsize, Ordering::SeqCst};
use loom::thread;

#[derive(Clone, Copy, Debug, PartialEq)]
enum Frame {
    /// The confirmation of sender `i`'s synchronous send.
    Confirm(usize),
    /// Anything no API thread waits for (an asynchronous message, a heartbeat).
    Other,
    /// The peer closed the link.
    End,
}

#[derive(Default)]
struct WireState {
    /// Sent by the peer, not yet read from the socket.
    socket: VecDeque<Frame>,
    /// Read from the socket, not yet parsed (`RxCtx::has_buffered`).
    buffer: VecDeque<Frame>,
    /// The interrupt's eventfd is readable.
    interrupted: bool,
    /// `Conn::kill` shut the socket down: a read fails at once.
    killed: bool,
    /// Why (`Wire::kill`'s reason), when an API thread that read the end
    /// killed it.
    reason: Option<EndReason>,
}

/// A synchronous sender's slot (`SyncSlot`): `Some(true)` confirmed,
/// `Some(false)` failed with the link.
#[derive(Default)]
struct Slot {
    st: loom::sync::Mutex<Option<bool>>,
    cv: loom::sync::Condvar,
}

impl Slot {
    fn complete(&self, ok: bool) {
        let mut s = self.st.lock().unwrap();
        if s.is_none() {
            *s = Some(ok);
        }
        self.cv.notify_all();
    }
    fn is_done(&self) -> bool {
        self.st.lock().unwrap().is_some()
    }
    fn wait(&self) -> bool {
        let mut s = self.st.lock().unwrap();
        loop {
            if let Some(ok) = *s {
                return ok;
            }
            s = self.cv.wait(s).unwrap();
        }
    }
}

/// One link: its read role (the code under test) and the stand-in stream.
struct Wire {
    role: ReadRole,
    st: loom::sync::Mutex<WireState>,
    cv: loom::sync::Condvar,
    slots: Vec<Slot>,
    /// Threads inside a stint right now.
    readers: LoomUsize,
    /// `Other` frames read, by anyone.
    others: LoomUsize,
}

impl Wire {
    fn new(senders: usize) -> Arc<Wire> {
        Arc::new(Wire {
            role: ReadRole::default(),
            st: Default::default(),
            cv: Default::default(),
            slots: (0..senders).map(|_| Slot::default()).collect(),
            readers: LoomUsize::new(0),
            others: LoomUsize::new(0),
        })
    }

    /// The peer sends `frames` (one write: they reach the socket together).
    fn peer_sends(&self, frames: &[Frame]) {
        self.st.lock().unwrap().socket.extend(frames.iter().copied());
        self.cv.notify_all();
    }

    /// `Conn::kill_wire` by an API thread that read the end: the reason is
    /// recorded and the socket shut down.
    fn end(&self, reason: EndReason) {
        let mut st = self.st.lock().unwrap();
        st.reason.get_or_insert(reason);
        st.killed = true;
        drop(st);
        self.cv.notify_all();
    }

    /// `Wire::ended`.
    fn ended(&self) -> Option<EndReason> {
        let st = self.st.lock().unwrap();
        st.killed.then(|| st.reason.clone().unwrap_or_else(|| "killed".into()))
    }

    /// `Conn::interrupt`.
    fn interrupt(&self) {
        self.st.lock().unwrap().interrupted = true;
        self.cv.notify_all();
    }

    fn buffered(&self) -> bool {
        !self.st.lock().unwrap().buffer.is_empty()
    }

    /// One stint of reading (see the module's comment).
    fn stint(&self, until: &dyn Fn() -> bool, interruptible: bool) -> Stint {
        assert_eq!(self.readers.fetch_add(1, SeqCst), 0, "two threads read the link at once");
        let end = 'stint: loop {
            if until() {
                break Stint::Yielded;
            }
            let mut w = self.st.lock().unwrap();
            // At a boundary with nothing buffered: wait for bytes (read_at_boundary).
            while w.buffer.is_empty() {
                if w.killed {
                    break 'stint Stint::Ended("killed".into());
                }
                if !w.socket.is_empty() {
                    let got: Vec<Frame> = w.socket.drain(..).collect();
                    w.buffer.extend(got);
                } else if interruptible && w.interrupted {
                    w.interrupted = false;
                    drop(w);
                    if until() {
                        break 'stint Stint::Yielded;
                    }
                    w = self.st.lock().unwrap();
                } else {
                    w = self.cv.wait(w).unwrap();
                }
            }
            let f = w.buffer.pop_front().expect("buffered");
            drop(w);
            match f {
                Frame::Confirm(i) => self.slots[i].complete(true),
                Frame::Other => {
                    self.others.fetch_add(1, SeqCst);
                }
                Frame::End => break Stint::Ended("the peer closed the link".into()),
            }
        };
        self.readers.fetch_sub(1, SeqCst);
        end
    }

    /// The link's own thread (`Shared::link_thread_reads`, then what
    /// `serve` does after it: `Conn::kill`, which ends any read of the
    /// socket, and the link-down, which fails what is still in flight).
    fn link_thread(self: &Arc<Self>) -> thread::JoinHandle<()> {
        let w = self.clone();
        thread::spawn(move || {
            let end = w.role.run_link_thread(&|| false, &|| w.ended(), Duration::from_millis(2), &mut |until| w.stint(until, true));
            assert!(matches!(end, LinkThreadEnd::Ended(_)), "the link thread stops only when the link ends");
            w.st.lock().unwrap().killed = true;
            w.cv.notify_all();
            for s in &w.slots {
                s.complete(false);
            }
        })
    }

    /// A synchronous sender `i` waiting for its confirmation (`send_sync`:
    /// `Shared::wait_on_link`, uninterruptible, then the slot's wait).
    fn sender(self: &Arc<Self>, i: usize) -> thread::JoinHandle<bool> {
        let w = self.clone();
        thread::spawn(move || {
            let done = || w.slots[i].is_done();
            w.role.wait_on_link(
                &done,
                &|| {
                    w.slots[i].wait();
                },
                &|| w.interrupt(),
                &|reason| w.end(reason),
                || {
                    let stint = w.stint(&done, false);
                    (stint, w.buffered())
                },
            );
            w.slots[i].wait()
        })
    }

    /// A thread in a synchronous receive with no timeout (`Core::receive`:
    /// `Waiter::lead` around `Shared::wait_on_link`, interruptible), waiting
    /// for slot `i`; returns what completed it.
    fn receiver(self: &Arc<Self>, i: usize, leading: &Arc<loom::sync::atomic::AtomicBool>) -> thread::JoinHandle<bool> {
        let (w, leading) = (self.clone(), leading.clone());
        thread::spawn(move || {
            let done = || w.slots[i].is_done();
            leading.store(true, SeqCst);
            w.role.wait_on_link(
                &done,
                &|| {
                    w.slots[i].wait();
                },
                &|| w.interrupt(),
                &|reason| w.end(reason),
                || {
                    let stint = w.stint(&done, true);
                    (stint, w.buffered())
                },
            );
            leading.store(false, SeqCst);
            w.slots[i].wait()
        })
    }

    /// Nobody holds, wants or waits for the role once everyone is gone.
    fn assert_role_at_rest(&self) {
        let r = self.role.state.lock();
        assert_eq!((r.holder, r.bystanders), (Holder::Nobody, 0), "the role is free and nobody waits for it");
        assert_eq!(self.role.wanting.load(SeqCst), 0, "nobody wants the role");
        let st = self.st.lock().unwrap();
        assert!(st.socket.is_empty() && st.buffer.is_empty(), "every frame was read (the end of the stream last)");
    }
}

/// Path 2 (issue 8): two synchronous senders and the link's own thread
/// share the read role while the confirmations arrive one write at a time,
/// the end of the stream with the last: at most one thread reads at once,
/// each sender returns confirmed (no lost wakeup: every wait here is
/// untimed, the link thread's UNATTENDED one too), and the link's thread
/// takes the role back to read the end. The link thread's timer never
/// fires here: a take-back it would need is a deadlock loom reports.
#[test]
fn model_two_senders_and_the_link_thread_share_the_read_role() {
    check("two_senders_and_the_link_thread_share_the_read_role", Timeouts::Never, 2, || {
        let w = Wire::new(2);
        let l = w.link_thread();
        let (a, b) = (w.sender(0), w.sender(1));
        w.peer_sends(&[Frame::Confirm(0)]);
        w.peer_sends(&[Frame::Confirm(1), Frame::End]);
        assert!(a.join().unwrap() && b.join().unwrap(), "both sends confirmed before the link ended");
        l.join().unwrap();
        w.assert_role_at_rest();
    });
}

/// Path 2, issue 8.16(a): one sender whose confirmation the link's thread
/// may read while it is being asked to hand over, frames the sender does
/// not wait for around it: the sender returns, and the link's thread takes
/// the role back at once (the sender found done after asking wakes it, and
/// a reader that stops with frames buffered wakes it), never waiting for
/// its timer.
#[test]
fn model_the_link_thread_takes_the_role_back_at_once() {
    check("the_link_thread_takes_the_role_back_at_once", Timeouts::Never, 3, || {
        let w = Wire::new(1);
        let l = w.link_thread();
        let a = w.sender(0);
        w.peer_sends(&[Frame::Other, Frame::Confirm(0), Frame::Other, Frame::End]);
        assert!(a.join().unwrap(), "the send is confirmed");
        l.join().unwrap();
        assert_eq!(w.others.load(SeqCst), 2, "every frame was read once");
        w.assert_role_at_rest();
    });
}

/// Path 2, with the link thread's timer firing: frames arrive one write
/// at a time, some after every sender has returned, so that only the
/// link thread's UNATTENDED take-back reads them (the design's bound on
/// an unread frame). Nothing is read twice or by two threads at once,
/// and the link's thread reads the end.
#[test]
fn model_frames_after_the_senders_are_read_by_the_link_thread() {
    check("frames_after_the_senders_are_read_by_the_link_thread", Timeouts::AtOnce, 2, || {
        let w = Wire::new(2);
        let l = w.link_thread();
        let (a, b) = (w.sender(0), w.sender(1));
        w.peer_sends(&[Frame::Confirm(0)]);
        w.peer_sends(&[Frame::Confirm(1)]);
        assert!(a.join().unwrap() && b.join().unwrap(), "both sends confirmed");
        w.peer_sends(&[Frame::Other]);
        w.peer_sends(&[Frame::End]);
        l.join().unwrap();
        assert_eq!(w.others.load(SeqCst), 1);
        w.assert_role_at_rest();
    });
}

/// Path 2: a receiver that may be reading the link on its own behalf is
/// completed from elsewhere (its session closed: STATUS_CANCELLED, or a
/// message that came over another link), as `Waiter::complete` does it: the
/// slot, then an interrupt if the receiver leads a read. It stops reading
/// and returns, and a synchronous sender on the same link still gets its
/// confirmation.
#[test]
fn model_a_receiver_completed_from_elsewhere_stops_reading() {
    check("a_receiver_completed_from_elsewhere_stops_reading", Timeouts::Never, 2, || {
        let w = Wire::new(2);
        let leading = Arc::new(loom::sync::atomic::AtomicBool::new(false));
        let l = w.link_thread();
        let r = w.receiver(0, &leading);
        let a = w.sender(1);
        // Waiter::complete: the result, then the interrupt if it leads a read.
        w.slots[0].complete(false);
        if leading.load(SeqCst) {
            w.interrupt();
        }
        w.peer_sends(&[Frame::Confirm(1), Frame::End]);
        assert!(!r.join().unwrap(), "the receiver returns with what completed it");
        assert!(a.join().unwrap(), "the send is confirmed");
        l.join().unwrap();
        w.assert_role_at_rest();
    });
}

/// Path 2: the link ends before a sender's confirmation came: whoever reads
/// the end of the stream (the sender itself, or the link's thread), the
/// link's thread learns of it at once (from the connection's end the reader recorded, without
/// its timer), tears the link down and fails the send, which returns.
#[test]
fn model_the_end_of_the_link_fails_a_waiting_sender() {
    check("the_end_of_the_link_fails_a_waiting_sender", Timeouts::Never, 2, || {
        let w = Wire::new(2);
        let l = w.link_thread();
        let (a, b) = (w.sender(0), w.sender(1));
        w.peer_sends(&[Frame::Confirm(1), Frame::Other, Frame::End]);
        assert!(!a.join().unwrap(), "the send the link ended under failed");
        assert!(b.join().unwrap(), "the one confirmed before the end did not");
        l.join().unwrap();
        w.assert_role_at_rest();
    });
}
