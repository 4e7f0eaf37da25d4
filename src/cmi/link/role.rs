//! A connection's read role: who reads the stream (the link's own thread,
//! or an API thread waiting on the link), and who waits to. One module, one
//! entry point per kind of reader (`run_link_thread`, `wait_on_link`), and
//! `abandon` after a panic; modelled with loom in `model.rs`.

use super::EndReason;
use crate::sync;
use std::sync::atomic::Ordering;
use std::time::Duration;

/// How a stint of reading ended.
pub(crate) enum Stint {
    /// `until()` said so, at a frame boundary; the link goes on.
    Yielded,
    /// The connection ended, for this reason.
    Ended(EndReason),
}

/// Who holds a link's read role.
#[derive(Clone, Copy, PartialEq, Eq, Default, Debug)]
pub(crate) enum Holder {
    /// Nobody reads the link at the moment.
    #[default]
    Nobody,
    /// The link's own thread.
    LinkThread,
    /// An API thread waiting on the link (a synchronous send or receive).
    ApiThread,
}

/// The state of a link's read role. Every change is made under its lock,
/// so a hand-over is never missed and nobody spins.
#[derive(Default)]
pub(crate) struct Role {
    pub holder: Holder,
    /// API threads waiting for an event on this link while another reads.
    pub bystanders: usize,
}

/// A link's read role: who reads the stream (the link's own thread, or an
/// API thread waiting on the link), and who waits to. Every decision about
/// it (take, ask for a hand-over, hand over, take back, give up) is made in
/// the two methods below, which `Cmi` calls with the reading itself
/// (`read_stint`) as a closure: the model checker drives these same methods
/// with a stand-in for the stream (src/cmi/model.rs).
#[derive(Default)]
///
/// Its locks come from `crate::sync` (loom's under the model checker); the
/// rest of the link keeps parking_lot's.
pub(crate) struct ReadRole {
    pub(super) state: sync::Mutex<Role>,
    /// Wakes the link's own thread when it should take the role back, and
    /// an API thread waiting for the link's thread to hand it over.
    cv: sync::Condvar,
    /// API threads trying to take the role (the link's thread yields to
    /// them): changed only under `state`'s lock, read without it by the
    /// link's thread at every frame boundary.
    pub(super) wanting: sync::AtomicUsize,
}

/// Why the link's own thread stopped reading for good.
pub(crate) enum LinkThreadEnd {
    /// The link ended (seen by whoever read it), for this reason.
    Ended(EndReason),
    /// `stopping()` said so.
    Stopping,
}

impl ReadRole {
    /// The link's own thread: reads (`read(until)`, one stint) whenever no
    /// API thread does (seed FIG. 8A processing, confirmations, heartbeats),
    /// hands the role to an API thread that asks for it (`until()` turns true
    /// at the stint's next frame boundary), and takes it back when nobody
    /// reads: at once when an API thread stops reading while others still
    /// wait on the link or with frames buffered, and otherwise after
    /// `unattended` at the latest, so that unsolicited frames are never left
    /// unread for long.
    ///
    /// `ended()` is the connection's end as recorded on it (an API thread
    /// that read the end, or a panic, kills the connection with its reason):
    /// the link's thread then returns at once.
    pub(crate) fn run_link_thread(
        &self,
        stopping: &dyn Fn() -> bool,
        ended: &dyn Fn() -> Option<EndReason>,
        unattended: Duration,
        read: &mut dyn FnMut(&dyn Fn() -> bool) -> Stint,
    ) -> LinkThreadEnd {
        loop {
            {
                let mut role = self.state.lock();
                loop {
                    if let Some(reason) = ended() {
                        return LinkThreadEnd::Ended(reason);
                    }
                    if stopping() {
                        return LinkThreadEnd::Stopping;
                    }
                    if role.holder == Holder::Nobody && self.wanting.load(Ordering::Acquire) == 0 {
                        role.holder = Holder::LinkThread;
                        break;
                    }
                    let _ = self.cv.wait_for(&mut role, unattended);
                }
            }
            let stint = read(&|| self.wanting.load(Ordering::Acquire) > 0);
            {
                let mut role = self.state.lock();
                role.holder = Holder::Nobody;
                // An API thread may be waiting for the hand-over.
                self.cv.notify_all();
            }
            if let Stint::Ended(reason) = stint {
                return LinkThreadEnd::Ended(reason);
            }
        }
    }

    /// A reader (`by`) that panicked in its stint lets the role go (8.15):
    /// the caller has killed the connection (which the link's thread sees as
    /// its `ended()`, and tears the link down); a waiting thread takes the
    /// role and sees the connection ended.
    pub(crate) fn abandon(&self, by: Holder) {
        let mut role = self.state.lock();
        if role.holder == by {
            role.holder = Holder::Nobody;
        }
        self.cv.notify_all();
    }

    /// An API thread waits for `done()` on a link (its synchronous send's
    /// confirmation, or a message for its receive): it reads the link itself
    /// when it can (`read()`: one stint until `done()`, which says whether
    /// bytes are left buffered after it), so that the reply wakes it directly
    /// instead of waking the link's thread, which would then wake it (one
    /// context switch each way saved: what a blocking ping-pong costs, seed
    /// FIG. 5 and 7). When the link's thread reads, it asks it to hand over
    /// (`interrupt()` ends its wait for bytes); when another API thread
    /// reads, it blocks in `block()` until that one completes it. If its
    /// stint reads the end of the connection, `end(reason)` records it on the
    /// connection (kills it) before the link's thread is woken to see it.
    pub(crate) fn wait_on_link(
        &self,
        done: &dyn Fn() -> bool,
        block: &dyn Fn(),
        interrupt: &dyn Fn(),
        end: &dyn Fn(EndReason),
        read: impl FnOnce() -> (Stint, bool),
    ) {
        let mut role = self.state.lock();
        let mut asked = false;
        loop {
            if done() {
                if asked && role.holder == Holder::Nobody {
                    // The link's thread yielded to us, and we no longer
                    // need the role (it read what we waited for): it may
                    // take it back at once, not after UNATTENDED.
                    self.cv.notify_all();
                }
                return;
            }
            match role.holder {
                Holder::Nobody => {
                    role.holder = Holder::ApiThread;
                    break;
                }
                Holder::LinkThread => {
                    // Ask the link's thread to hand over; it does so at its
                    // next frame boundary (every one, buffered or not:
                    // read_stint) and signals the condition variable.
                    // Bounded by one frame's reading: a frame's bytes arrive
                    // within the dead-peer timeout or the link ends.
                    asked = true;
                    self.wanting.fetch_add(1, Ordering::AcqRel);
                    interrupt();
                    while role.holder == Holder::LinkThread {
                        self.cv.wait(&mut role);
                    }
                    self.wanting.fetch_sub(1, Ordering::AcqRel);
                }
                Holder::ApiThread => {
                    role.bystanders += 1;
                    drop(role);
                    if !done() {
                        block();
                    }
                    self.state.lock().bystanders -= 1;
                    return;
                }
            }
        }
        drop(role);
        let (stint, buffered) = read();
        let ended = matches!(stint, Stint::Ended(_));
        if let Stint::Ended(reason) = stint {
            // Recorded on the connection first: the link's thread, woken
            // below, sees it and tears the connection down.
            end(reason);
        }
        let mut role = self.state.lock();
        role.holder = Holder::Nobody;
        if ended || role.bystanders > 0 || self.wanting.load(Ordering::Acquire) > 0 || buffered {
            // Others wait for frames on this link, or frames that came in
            // behind ours are already read: someone must read on now.
            self.cv.notify_all();
        }
        drop(role);
        if !done() {
            block();
        }
    }
}
