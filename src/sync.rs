//! The locks, condition variables and atomics of the concurrency core (session
//! state, the dispatcher, a link's read role), behind one facade so that the
//! model checker runs the shipped code (docs/DESIGN.md, "Model checking").
//!
//! A normal build re-exports `parking_lot` and `std::sync::atomic`: no wrapper,
//! no cost. A build with `--cfg loom` (`scripts/model-check`) gets thin
//! wrappers over `loom::sync` with the same API the code uses (`lock()`
//! without a `Result`, `wait(&mut guard)`, `wait_for`, `wait_until`,
//! `notify_one`, `notify_all`), so that loom sees, and permutes, every
//! acquisition, wait and notification.
//!
//! Timed waits under loom: loom has no clock (its `wait_timeout` never times
//! out). The model chooses per test what a timed wait does ([`model::set_timeouts`]):
//! never time out (the default: a waiter that would only wake by its timeout
//! is then a deadlock loom reports, which is how a lost wakeup shows), or time
//! out at once after letting the other threads run (which explores the paths
//! taken when the time runs out, e.g. a message that reaches a receiver just
//! as its timeout expires).

#[cfg(not(loom))]
pub(crate) use parking_lot::{Condvar, Mutex, RwLock};
#[cfg(not(loom))]
pub(crate) use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize};

#[cfg(loom)]
pub(crate) use loom::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize};
#[cfg(loom)]
pub(crate) use self::model::{Condvar, Mutex, RwLock};

/// The identity of the calling thread (loom's threads all run on one OS thread,
/// so `std::thread::current().id()` would not tell them apart).
#[cfg(not(loom))]
pub(crate) fn current_thread() -> std::thread::ThreadId {
    std::thread::current().id()
}
#[cfg(loom)]
pub(crate) fn current_thread() -> loom::thread::ThreadId {
    loom::thread::current().id()
}

/// The thread id type [`current_thread`] returns.
#[cfg(not(loom))]
pub(crate) type ThreadId = std::thread::ThreadId;
#[cfg(loom)]
pub(crate) type ThreadId = loom::thread::ThreadId;

#[cfg(loom)]
pub(crate) mod model {
    //! The loom side of the facade.
    use std::ops::{Deref, DerefMut};
    use std::cell::Cell;
    use std::time::{Duration, Instant};

    /// What a timed wait does under the model (see the module's comment).
    #[cfg(test)]
    #[derive(Clone, Copy, PartialEq, Eq, Debug)]
    pub(crate) enum Timeouts {
        /// A timed wait waits for a notification, like an untimed one.
        Never,
        /// A timed wait lets the other threads run, then reports a timeout.
        AtOnce,
    }

    // Per test thread: a model's threads are coroutines on the thread that
    // called `loom::model`, and tests run on threads of their own.
    std::thread_local! {
        static AT_ONCE: Cell<bool> = const { Cell::new(false) };
    }

    /// Sets what timed waits do in the models this thread runs next.
    #[cfg(test)]
    pub(crate) fn set_timeouts(t: Timeouts) {
        AT_ONCE.with(|c| c.set(t == Timeouts::AtOnce));
    }

    fn timeouts_at_once() -> bool {
        AT_ONCE.with(|c| c.get())
    }

    /// `parking_lot::Mutex` over `loom::sync::Mutex`.
    #[derive(Default, Debug)]
    pub(crate) struct Mutex<T>(loom::sync::Mutex<T>);

    /// Its guard; the inner guard is taken out while a condition variable waits.
    pub(crate) struct MutexGuard<'a, T> {
        mx: &'a loom::sync::Mutex<T>,
        g: Option<loom::sync::MutexGuard<'a, T>>,
    }

    impl<T> Mutex<T> {
        pub(crate) fn new(v: T) -> Mutex<T> {
            Mutex(loom::sync::Mutex::new(v))
        }
        pub(crate) fn lock(&self) -> MutexGuard<'_, T> {
            MutexGuard { mx: &self.0, g: Some(self.0.lock().expect("a model thread panicked holding a lock")) }
        }
    }

    impl<T> Deref for MutexGuard<'_, T> {
        type Target = T;
        fn deref(&self) -> &T {
            self.g.as_ref().expect("guard present outside a wait")
        }
    }
    impl<T> DerefMut for MutexGuard<'_, T> {
        fn deref_mut(&mut self) -> &mut T {
            self.g.as_mut().expect("guard present outside a wait")
        }
    }

    /// `parking_lot::WaitTimeoutResult`.
    pub(crate) struct WaitTimeoutResult(bool);
    impl WaitTimeoutResult {
        pub(crate) fn timed_out(&self) -> bool {
            self.0
        }
    }

    /// `parking_lot::Condvar` over `loom::sync::Condvar`.
    #[derive(Default, Debug)]
    pub(crate) struct Condvar(loom::sync::Condvar);

    impl Condvar {
        pub(crate) fn new() -> Condvar {
            Condvar(loom::sync::Condvar::new())
        }
        pub(crate) fn wait<T>(&self, g: &mut MutexGuard<'_, T>) {
            let inner = g.g.take().expect("guard present");
            g.g = Some(self.0.wait(inner).expect("a model thread panicked holding a lock"));
        }
        fn timed<T>(&self, g: &mut MutexGuard<'_, T>) -> WaitTimeoutResult {
            if timeouts_at_once() {
                // The time runs out: the lock is let go, others run, it is taken again.
                drop(g.g.take());
                loom::thread::yield_now();
                g.g = Some(g.mx.lock().expect("a model thread panicked holding a lock"));
                WaitTimeoutResult(true)
            } else {
                self.wait(g);
                WaitTimeoutResult(false)
            }
        }
        pub(crate) fn wait_for<T>(&self, g: &mut MutexGuard<'_, T>, _d: Duration) -> WaitTimeoutResult {
            self.timed(g)
        }
        pub(crate) fn wait_until<T>(&self, g: &mut MutexGuard<'_, T>, _t: Instant) -> WaitTimeoutResult {
            self.timed(g)
        }
        /// Always `true`: loom does not say whether a thread was woken, and a
        /// caller that stops notifying on `false` (the dispatcher) then wakes
        /// at least as many threads as it would with parking_lot.
        pub(crate) fn notify_one(&self) -> bool {
            self.0.notify_one();
            true
        }
        pub(crate) fn notify_all(&self) -> usize {
            self.0.notify_all();
            0
        }
    }

    /// `parking_lot::RwLock` over `loom::sync::RwLock`.
    #[derive(Default, Debug)]
    pub(crate) struct RwLock<T>(loom::sync::RwLock<T>);

    impl<T> RwLock<T> {
        pub(crate) fn read(&self) -> loom::sync::RwLockReadGuard<'_, T> {
            self.0.read().expect("a model thread panicked holding a lock")
        }
        pub(crate) fn write(&self) -> loom::sync::RwLockWriteGuard<'_, T> {
            self.0.write().expect("a model thread panicked holding a lock")
        }
    }

    /// Runs `f` under loom, every interleaving with at most `bound` preemptions
    /// (MPS_MODEL_PREEMPTIONS overrides it for every model), and says how many it
    /// explored (scripts/model-check shows them).
    #[cfg(test)]
    pub(crate) fn check(name: &str, timeouts: Timeouts, bound: usize, f: impl Fn() + Sync + Send + 'static) {
        let bound = std::env::var("MPS_MODEL_PREEMPTIONS").ok().and_then(|v| v.parse().ok()).unwrap_or(bound);
        set_timeouts(timeouts);
        let mut b = loom::model::Builder::new();
        b.preemption_bound = Some(bound);
        let runs = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let r = runs.clone();
        let started = std::time::Instant::now();
        b.check(move || {
            r.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            f()
        });
        let n = runs.load(std::sync::atomic::Ordering::Relaxed);
        eprintln!("model {name}: {n} interleavings, preemption bound {bound}, {:.1} s", started.elapsed().as_secs_f64());
        assert!(n > 1, "a model that explores one interleaving checks no concurrency");
    }
}
