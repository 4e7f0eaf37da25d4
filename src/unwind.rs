//! Panics on the library's own threads (issue 8.15). A panic there is a bug,
//! but it must not strand what the thread was responsible for: a link whose
//! reader died would keep its read role and its unconfirmed sends forever,
//! a dead callback thread would leave its session scheduled and never run.
//! So every thread the library starts runs its body under `catch_unwind`:
//! the panic is logged at error level with the thread's name and the panic's
//! message, and then
//! - a link's reader or writer ends the link (`Conn::kill`), so its in-flight
//!   sends fail with `STATUS_CONNECTION_DISCONNECTED` through the ordinary
//!   `link_down`, and the link is dialed again as after any loss;
//! - the dial, watch and callback threads start their loop again
//!   (`restarting`), and a callback thread first hands back the session it
//!   was running (`dispatch::worker`);
//! - the listener and a connection's handshake thread log and end (`caught`).
//!
//! A client callback's own panic is caught where it runs (`Core::run_event`),
//! and a panic in an API call where it enters from C (`ffi::guard`).

use crate::log::{log, Level};
use std::any::Any;
use std::panic::{catch_unwind, AssertUnwindSafe};

/// The message a panic was raised with (`panic!("...")`'s text).
pub(crate) fn message(payload: &(dyn Any + Send)) -> &str {
    if let Some(s) = payload.downcast_ref::<&'static str>() {
        s
    } else if let Some(s) = payload.downcast_ref::<String>() {
        s
    } else {
        "(a panic without a message)"
    }
}

/// Logs at error level that the calling thread panicked, and what follows
/// (`then`); returns "thread <name> panicked: <message>", for a link's end
/// reason.
pub(crate) fn report(payload: &(dyn Any + Send), then: &str) -> String {
    let what = format!("thread {} panicked: {}", std::thread::current().name().unwrap_or("(unnamed)"), message(payload));
    log!(Level::Error, "{what}; {then} (a bug in libmps: please report it with this line)");
    what
}

/// Runs `f`; a panic is caught and logged, with `then` saying what follows.
pub(crate) fn caught(then: &str, f: impl FnOnce()) {
    if let Err(p) = catch_unwind(AssertUnwindSafe(f)) {
        report(&*p, then);
    }
}

/// Runs `f` until it returns; after a panic (logged) it runs `f` again, as
/// long as `again()` says so (it may wait first, so that a panic that
/// recurs does not spin).
pub(crate) fn restarting(f: impl Fn(), again: impl Fn() -> bool) {
    loop {
        match catch_unwind(AssertUnwindSafe(&f)) {
            Ok(()) => return,
            Err(p) => {
                report(&*p, "the thread starts its work again");
                if !again() {
                    return;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicU32, Ordering};

    #[test]
    fn the_message_of_a_panic() {
        let p = catch_unwind(|| panic!("plain")).unwrap_err();
        assert_eq!(message(&*p), "plain");
        let p = catch_unwind(|| panic!("formatted {}", 7)).unwrap_err();
        assert_eq!(message(&*p), "formatted 7");
        let p = catch_unwind(|| std::panic::panic_any(7u8)).unwrap_err();
        assert_eq!(message(&*p), "(a panic without a message)");
    }

    #[test]
    fn a_restarting_body_runs_again_after_a_panic_until_it_returns() {
        let runs = AtomicU32::new(0);
        restarting(
            || {
                if runs.fetch_add(1, Ordering::Relaxed) < 2 {
                    panic!("injected fault: run {}", runs.load(Ordering::Relaxed));
                }
            },
            || true,
        );
        assert_eq!(runs.load(Ordering::Relaxed), 3, "two panics, then a run that returned");
    }

    #[test]
    fn a_restarting_body_stops_when_told_after_a_panic() {
        let runs = AtomicU32::new(0);
        restarting(
            || {
                runs.fetch_add(1, Ordering::Relaxed);
                panic!("injected fault: always");
            },
            || false,
        );
        assert_eq!(runs.load(Ordering::Relaxed), 1);
    }
}
