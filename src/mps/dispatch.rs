//! Runs client callbacks on library threads (SPEC 5): never inside the
//! client's own call, serialized per session and in event order, with no
//! library lock held. A session with events is on the run queue at most once;
//! a worker takes it, runs a batch of its events, and requeues it if more came.

use super::session::Session;
use super::Core;
use crate::sync::{AtomicUsize, Condvar, Mutex};
use std::collections::VecDeque;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::thread::JoinHandle;

/// Events one worker runs for a session before letting others have a turn.
const BATCH: usize = 64;

/// Events the library delivers together, possibly to many sessions: the
/// completions one CONFIRM frame brings, or the failures one link's end
/// brings. Counts those not yet started, so that a callback can tell that it
/// runs the last of them (`SessionInfo::sp_pending_events`).
pub(crate) struct Delivery(AtomicUsize);

impl Delivery {
    /// A delivery of `n` events (all counted before the first is queued, so a
    /// worker that starts one early never sees the others as absent).
    pub fn new(n: usize) -> Arc<Delivery> {
        Arc::new(Delivery(AtomicUsize::new(n)))
    }
}

/// An event waiting for its session's callback.
pub(crate) struct Queued {
    pub ev: super::Event,
    /// The delivery it came in; `None`: a delivery of its own.
    pub delivery: Option<Arc<Delivery>>,
    /// A received message's confirmation, owed once the callback has
    /// returned (confirming on delivery: `Core::run_event`).
    pub receipt: Option<super::Receipt>,
}

struct RunQueue {
    sessions: VecDeque<Arc<Session>>,
    stop: bool,
    /// Workers blocked (or about to block) on `cv` for want of sessions.
    idle: usize,
}

pub(crate) struct Dispatcher {
    /// Events queued on sessions and not yet taken by a worker (all sessions).
    queued: AtomicUsize,
    q: Mutex<RunQueue>,
    cv: Condvar,
    threads: Mutex<Vec<JoinHandle<()>>>,
    /// Test hook: the next worker to take a session panics before it runs
    /// any of its events.
    #[cfg(test)]
    pub(crate) panic_at_next_batch: std::sync::atomic::AtomicBool,
}

impl Dispatcher {
    pub fn new() -> Dispatcher {
        Dispatcher {
            queued: AtomicUsize::new(0),
            q: Mutex::new(RunQueue { sessions: VecDeque::new(), stop: false, idle: 0 }),
            cv: Condvar::new(),
            threads: Mutex::new(Vec::new()),
            #[cfg(test)]
            panic_at_next_batch: std::sync::atomic::AtomicBool::new(false),
        }
    }

    pub fn start(&self, core: &Arc<Core>, n: usize) -> std::io::Result<()> {
        let mut t = self.threads.lock();
        for i in 0..n {
            let c = core.clone();
            t.push(std::thread::Builder::new().name(format!("mps-callback-{i}")).spawn(move || worker(&c))?);
        }
        Ok(())
    }

    /// An event is being queued on a session (under its lock).
    pub fn count_event(&self) {
        self.queued.fetch_add(1, Ordering::Relaxed);
    }

    /// `n` queued events are dropped unrun (shutdown).
    pub fn discount_events(&self, n: usize) {
        self.queued.fetch_sub(n, Ordering::Relaxed);
    }

    /// Events queued on all sessions, not yet taken by a worker.
    pub fn queued_events(&self) -> usize {
        self.queued.load(Ordering::Relaxed)
    }

    /// Puts a session with new events on the run queue (the caller set its
    /// `scheduled` flag under the session's lock).
    pub fn push(&self, s: Arc<Session>) {
        self.enqueue(std::iter::once(s));
    }

    /// Puts several sessions on the run queue at once (emptying `v`).
    pub fn push_all(&self, v: &mut Vec<Arc<Session>>) {
        if !v.is_empty() {
            self.enqueue(v.drain(..));
        }
    }

    /// Queues sessions and wakes one idle worker per session, as far as there
    /// are idle workers.
    ///
    /// The count of idle workers is taken under the queue's lock. Waking
    /// "until `notify_one` finds no waiter" instead would, on a shared CPU,
    /// wake the same worker over and over: woken, it preempts this thread,
    /// drains the queue and waits again before the next `notify_one`, which
    /// then finds it waiting. Measured: 10 wake-ups of callback threads per
    /// 33-completion CONFIRM frame spread over 33 sessions (docs/PERFORMANCE.md).
    fn enqueue(&self, sessions: impl Iterator<Item = Arc<Session>>) {
        let wake = {
            let mut q = self.q.lock();
            let before = q.sessions.len();
            q.sessions.extend(sessions);
            (q.sessions.len() - before).min(q.idle)
        };
        for _ in 0..wake {
            if !self.cv.notify_one() {
                break;
            }
        }
    }

    /// Lets the workers finish what is queued, then joins them (all but the
    /// calling thread, should a callback be tearing the SP down).
    pub fn stop(&self) {
        self.q.lock().stop = true;
        self.cv.notify_all();
        let me = std::thread::current().id();
        for h in std::mem::take(&mut *self.threads.lock()) {
            if h.thread().id() != me {
                let _ = h.join();
            }
        }
    }
}

/// A callback thread. A panic in the library's code on it (a bug: a client
/// callback's own panic is caught where it runs, `Core::run_event`) is caught
/// per session: it is logged, the session is handed back (to the run queue
/// while it has events, so none is stranded), and the thread goes on; a
/// panic outside a session's turn starts the loop again (crate::unwind).
pub(super) fn worker(core: &Arc<Core>) {
    crate::unwind::restarting(|| worker_loop(core), || !core.dispatcher.q.lock().stop);
}

fn worker_loop(core: &Arc<Core>) {
    loop {
        let s = {
            let mut q = core.dispatcher.q.lock();
            loop {
                if let Some(s) = q.sessions.pop_front() {
                    break s;
                }
                if q.stop {
                    return;
                }
                q.idle += 1;
                core.dispatcher.cv.wait(&mut q);
                q.idle -= 1;
            }
        };
        if let Err(p) = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| run_turn(core, &s))) {
            crate::unwind::report(&*p, &format!("the event being run for session {:#x}, if any, is lost; its other events are run", s.id.0));
            hand_back(core, &s);
        }
    }
}

/// One turn of a session taken off the run queue: a batch of its events.
fn run_turn(core: &Arc<Core>, s: &Arc<Session>) {
    #[cfg(test)]
    if core.dispatcher.panic_at_next_batch.swap(false, Ordering::AcqRel) {
        panic!("injected fault: a panic in a callback thread before it runs session {:#x}'s events", s.id.0);
    }
    let mut ran = 0;
    let mut st = s.st.lock();
    loop {
        match st.events.pop_front() {
            Some(q) if ran < BATCH => {
                core.dispatcher.queued.fetch_sub(1, Ordering::Relaxed);
                // What is left of its delivery once this one has started.
                let left = q.delivery.map_or(0, |d| d.0.fetch_sub(1, Ordering::AcqRel) - 1);
                // Counted as running until it returns: a close meanwhile
                // is pending (its CloseCompleted comes after this callback).
                st.running = true;
                drop(st);
                core.run_event(s, q.ev, left, q.receipt);
                ran += 1;
                st = s.st.lock();
                st.running = false;
            }
            Some(ev) => {
                // Fairness: back of the queue, still scheduled.
                st.events.push_front(ev);
                drop(st);
                core.dispatcher.push(s.clone());
                return;
            }
            None => {
                st.scheduled = false;
                // The last event may have been what a pending close waited for.
                core.maybe_finish_close_pub(s, &mut st);
                return;
            }
        }
    }
}

/// After a panic in `run_turn`: the session is no longer running a
/// callback, and goes back to the run queue if it has events left (it is
/// still `scheduled`, so nobody else queued it), or is left unscheduled.
fn hand_back(core: &Arc<Core>, s: &Arc<Session>) {
    let mut st = s.st.lock();
    st.running = false;
    if !st.scheduled {
        // The turn had ended (`scheduled` cleared): someone else may own it now.
        return;
    }
    if st.events.is_empty() {
        st.scheduled = false;
        core.maybe_finish_close_pub(s, &mut st);
    } else {
        drop(st);
        core.dispatcher.push(s.clone());
    }
}
