//! The listener's thread for a socket listener (Unix or TCP): it accepts
//! connections and runs their handshakes itself, all of them in one poll
//! set, non-blocking. A connection gets a thread (`Shared::serve`, as a
//! link's thread) only once a valid HELLO from a configured peer has been
//! read on it; until then it costs one descriptor and one `Pending` entry
//! (under 1 KiB), and there are at most `MAX_PENDING` of them.
//!
//! The limits (docs/DESIGN.md "Incoming connections", PROTOCOL.md 7.2):
//! - at most `MAX_PENDING` connections awaiting their HELLO; a new one past
//!   that evicts (closes) the oldest;
//! - each has `HANDSHAKE_LIMIT` (at most the dead-peer timeout) from its
//!   accept to finish the handshake, or it is closed;
//! - `accept` failing for want of descriptors or memory (or for any reason
//!   other than a connection that went away before it was accepted) pauses
//!   accepting for `ACCEPT_BACKOFF` instead of spinning on a listener that
//!   stays readable; the pending handshakes go on meanwhile, and the stop
//!   signal ends the pause;
//! - every line logged here is rate-limited by its call site (`log!`).
//!
//! Strangers never starve a configured peer: a connection whose bytes are
//! already there is handled within its accept (a dialer writes its HELLO as
//! soon as it is connected), every connection that becomes readable is
//! handled before more are accepted, at most `ACCEPT_BATCH` are accepted
//! between two polls (so a connection sees at least `MAX_PENDING /
//! ACCEPT_BATCH` polls before newer ones could evict it), and a HELLO is
//! handed to its link the moment it is read.

use super::link::{Greeting, Handshake, Step};
use super::stream;
use super::transport::{Accepted, Listener};
use super::{Shared, Upcall};
use crate::log::{log, Level};
use std::collections::VecDeque;
use std::io;
use std::os::fd::{AsRawFd, RawFd};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Connections awaiting their HELLO at most; past it the oldest is closed.
pub(crate) const MAX_PENDING: usize = 64;
/// The longest an accepted connection may take to complete its handshake
/// (at most the dead-peer timeout, when that is shorter).
pub(crate) const HANDSHAKE_LIMIT: Duration = Duration::from_secs(1);
/// How long accepting pauses after `accept` failed (descriptors or memory
/// exhausted: the listener stays readable, so retrying at once would spin).
pub(crate) const ACCEPT_BACKOFF: Duration = Duration::from_millis(100);
/// Connections accepted at most between two polls of the pending ones.
const ACCEPT_BATCH: usize = MAX_PENDING / 4;

/// A connection awaiting its handshake.
struct Pending {
    sock: Accepted,
    hs: Handshake,
    accepted_at: Instant,
    /// What it waits for: `POLLOUT` (our HELLO not yet all written) or `POLLIN`.
    waits: libc::c_short,
}

/// Where a handshake stands after it was driven as far as it goes now.
enum Drive {
    Wait(libc::c_short),
    Done(Greeting),
    Failed(String),
}

/// Drives `p`'s handshake until it needs the socket to be ready again, or ends.
fn drive(p: &mut Pending) -> Drive {
    loop {
        match p.hs.step() {
            Step::Write(bytes) => match stream::send_now(&p.sock, bytes) {
                Ok(Some(n)) => p.hs.wrote(n),
                Ok(None) => return Drive::Wait(libc::POLLOUT),
                Err(e) => return Drive::Failed(format!("handshake: sending HELLO failed: {e}")),
            },
            Step::Read(buf) => match stream::recv_now(&p.sock, buf) {
                Ok(Some(n)) => match p.hs.read(n) {
                    Ok(None) => {}
                    Ok(Some(greeting)) => return Drive::Done(greeting),
                    Err(e) => return Drive::Failed(e),
                },
                Ok(None) => return Drive::Wait(libc::POLLIN),
                Err(e) => return Drive::Failed(format!("handshake: read failed: {e}")),
            },
        }
    }
}

/// `accept` failed for want of descriptors or memory.
fn out_of_resources(e: &io::Error) -> bool {
    matches!(e.raw_os_error(), Some(libc::EMFILE) | Some(libc::ENFILE) | Some(libc::ENOBUFS) | Some(libc::ENOMEM))
}

/// The listener's loop over `listener` (whose descriptor, non-blocking, is
/// `lfd`), until the stop signal. Every connection still pending is closed
/// when it returns.
pub(super) fn run<U: Upcall>(sh: &Arc<Shared<U>>, listener: &Listener, lfd: RawFd) {
    let limit = HANDSHAKE_LIMIT.min(sh.params.dead_timeout);
    // In accept order, so the oldest (first to time out, first to evict) is in front.
    let mut pending: VecDeque<Pending> = VecDeque::with_capacity(MAX_PENDING);
    let mut pfds: Vec<libc::pollfd> = Vec::with_capacity(MAX_PENDING + 2);
    let mut paused_until: Option<Instant> = None;
    loop {
        let now = Instant::now();
        while pending.front().is_some_and(|p| now >= p.accepted_at + limit) {
            if let Some(p) = pending.pop_front() {
                log!(Level::Warn, "refused an incoming connection: {} ({} ms)", p.hs.timed_out(), limit.as_millis());
            }
        }
        if paused_until.is_some_and(|t| now >= t) {
            paused_until = None;
        }
        let next_deadline = pending.front().map(|p| p.accepted_at + limit);
        let wake_at = match (next_deadline, paused_until) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
        pfds.clear();
        pfds.push(sh.stop_signal.pollfd());
        // A negative descriptor is ignored by poll: not accepting while paused.
        pfds.push(libc::pollfd { fd: if paused_until.is_none() { lfd } else { -1 }, events: libc::POLLIN, revents: 0 });
        pfds.extend(pending.iter().map(|p| libc::pollfd { fd: p.sock.as_raw_fd(), events: p.waits, revents: 0 }));
        if let Err(e) = stream::poll(&mut pfds, wake_at.map(|t| t.saturating_duration_since(now))) {
            log!(Level::Error, "the listener's poll failed: {e}");
            if !sh.pause(ACCEPT_BACKOFF) {
                break;
            }
            continue;
        }
        if pfds[0].revents != 0 || sh.stopping() {
            break;
        }
        // First the connections that can go on: a HELLO is handled as soon
        // as it is read. From the back, so that removals keep the indices.
        for i in (0..pending.len()).rev() {
            if pfds[i + 2].revents == 0 {
                continue;
            }
            match drive(&mut pending[i]) {
                Drive::Wait(ev) => pending[i].waits = ev,
                Drive::Done(greeting) => {
                    if let Some(p) = pending.remove(i) {
                        hand_off(sh, p.sock, greeting);
                    }
                }
                Drive::Failed(e) => {
                    pending.remove(i);
                    log!(Level::Warn, "refused an incoming connection: {e}");
                }
            }
        }
        if pfds[1].revents == 0 {
            continue;
        }
        // Then new connections, a batch at most.
        for _ in 0..ACCEPT_BATCH {
            match listener.accept_socket() {
                Ok(sock) => {
                    let mut p = Pending { sock, hs: Handshake::new(&sh.params), accepted_at: Instant::now(), waits: 0 };
                    match drive(&mut p) {
                        Drive::Wait(ev) => {
                            p.waits = ev;
                            if pending.len() == MAX_PENDING {
                                if let Some(old) = pending.pop_front() {
                                    log!(
                                        Level::Warn,
                                        "closed the oldest of {MAX_PENDING} incoming connections awaiting a HELLO (accepted {} ms ago) to make room for a new one",
                                        old.accepted_at.elapsed().as_millis()
                                    );
                                }
                            }
                            pending.push_back(p);
                        }
                        Drive::Done(greeting) => hand_off(sh, p.sock, greeting),
                        Drive::Failed(e) => log!(Level::Warn, "refused an incoming connection: {e}"),
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                // A connection reset before it was accepted, or a signal.
                Err(e) if matches!(e.kind(), io::ErrorKind::ConnectionAborted | io::ErrorKind::Interrupted) => {}
                Err(e) => {
                    let why = if out_of_resources(&e) { " (out of descriptors or memory)" } else { "" };
                    log!(Level::Error, "accept failed: {e}{why}; accepting again in {} ms", ACCEPT_BACKOFF.as_millis());
                    paused_until = Some(Instant::now() + ACCEPT_BACKOFF);
                    break;
                }
            }
        }
    }
    // Shutdown: every connection still pending is closed here.
    drop(pending);
}

/// A HELLO was read on an accepted connection: if it is from a configured
/// peer that dials this SP, its link starts on a thread of its own.
fn hand_off<U: Upcall>(sh: &Arc<Shared<U>>, sock: Accepted, (hello, version, leftover): Greeting) {
    let Some(idx) = sh.incoming_peer(&hello) else {
        return;
    };
    let stream = match sock.into_stream(sh.cfg.socket_send_buffer) {
        Ok(s) => s,
        Err(e) => {
            log!(Level::Error, "cannot start the link with SP {}: {e}", hello.sp);
            return;
        }
    };
    // In the order HELLOs complete here: the newest is served (take_for_service).
    let arrival = sh.next_arrival();
    let sh2 = sh.clone();
    if let Err(e) = sh.spawn("mps-link".into(), move || {
        sh2.serve(&sh2.peers[idx], stream, hello, version, leftover, Some(arrival));
    }) {
        log!(Level::Error, "cannot start a link thread: {e}");
    }
}
