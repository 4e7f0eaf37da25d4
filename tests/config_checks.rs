//! The directory of a listening Unix-domain socket, and the socket file itself
//! (issue 8, item 12; SPEC 7: "the socket directory must belong to the SP's
//! user and be closed to others"), and `wait_for_peer` with the largest
//! timeout (item 15).
//!
//! The tests run as root: a directory "planted by another user" is a temporary
//! directory chowned to uid 65534.

mod common;

use common::{unique, TempDir};
use mps::{Config, Mps, SpId};
use std::os::unix::fs::{FileTypeExt, MetadataExt, PermissionsExt};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{mpsc, Arc};
use std::time::Duration;

const WATCHDOG: Duration = Duration::from_secs(30);

/// One SP, no peers, listening on the Unix socket `path`.
fn solo(path: &Path) -> Config {
    Config::from_toml(&format!("sp = \"0.A\"\nlisten = \"unix:{}\"\n", path.display()), "test").unwrap()
}

/// Starts `cfg`, which must be refused; returns the reason.
fn refused(cfg: Config) -> String {
    match Mps::start(cfg) {
        Ok(m) => {
            m.shutdown().unwrap();
            panic!("the SP started");
        }
        Err(e) => e.to_string(),
    }
}

fn chmod(p: &Path, mode: u32) {
    std::fs::set_permissions(p, std::fs::Permissions::from_mode(mode)).unwrap();
}

/// Runs `m.shutdown()` on a thread; fails the test if it does not return.
fn shutdown_within_watchdog(m: Mps) {
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(m.shutdown());
    });
    rx.recv_timeout(WATCHDOG).expect("shutdown returned").unwrap();
}

#[test]
fn a_directory_writable_by_group_or_others_is_refused() {
    for mode in [0o777, 0o1777, 0o770, 0o702] {
        let dir = TempDir::new();
        chmod(&dir.0, mode);
        let sock = dir.0.join("a.sock");
        let why = refused(solo(&sock));
        assert!(why.contains("writable"), "mode {mode:o}: {why}");
        assert!(!sock.exists(), "mode {mode:o}: a socket was created");
        // The embedded default goes through the same check.
        let why = refused(Config::embedded_default(SpId::a(0), &dir.0).unwrap());
        assert!(why.contains("writable"), "embedded default, mode {mode:o}: {why}");
    }
}

#[test]
fn a_directory_owned_by_another_user_is_refused() {
    let dir = TempDir::new();
    let planted = dir.0.join("planted");
    std::fs::create_dir(&planted).unwrap();
    chmod(&planted, 0o700);
    let owner = match std::os::unix::fs::chown(&planted, Some(65534), Some(65534)) {
        Ok(()) => 65534,
        // Not root: "/" is root's, so it is another user's directory too.
        Err(_) => {
            assert_ne!(std::fs::metadata(&dir.0).unwrap().uid(), 0);
            let _ = std::fs::remove_dir(&planted);
            std::fs::create_dir(&planted).unwrap();
            0
        }
    };
    let sock = if owner == 65534 { planted.join("a.sock") } else { PathBuf::from(format!("/{}.sock", unique("mps"))) };
    let why = refused(solo(&sock));
    assert!(why.contains("owned by"), "{why}");
    assert!(!sock.exists());
}

#[test]
fn a_symlinked_directory_is_refused() {
    let dir = TempDir::new();
    let real = dir.0.join("real");
    std::fs::create_dir(&real).unwrap();
    chmod(&real, 0o700);
    let link = dir.0.join("link");
    std::os::unix::fs::symlink(&real, &link).unwrap();
    let why = refused(solo(&link.join("a.sock")));
    assert!(why.contains("symbolic link"), "{why}");
    assert_eq!(std::fs::read_dir(&real).unwrap().count(), 0, "something was created through the link");
}

#[test]
fn a_missing_directory_is_created_0700_and_the_socket_0600() {
    let dir = TempDir::new();
    let sub = dir.0.join("x").join("y");
    let sock = sub.join("a.sock");
    let m = Mps::start(solo(&sock)).unwrap();
    for d in [dir.0.join("x"), sub.clone()] {
        assert_eq!(std::fs::symlink_metadata(&d).unwrap().mode() & 0o7777, 0o700, "{}", d.display());
    }
    let md = std::fs::symlink_metadata(&sock).unwrap();
    assert!(md.file_type().is_socket());
    assert_eq!(md.mode() & 0o7777, 0o600, "the socket's mode");
    shutdown_within_watchdog(m);
    assert!(std::fs::symlink_metadata(&sock).is_err(), "shutdown removes the socket it created");
}

#[test]
fn a_stale_socket_is_replaced_and_a_live_one_refused() {
    let dir = TempDir::new();
    let sock = dir.0.join("a.sock");
    drop(UnixListener::bind(&sock).unwrap()); // a socket file nobody listens on
    let m = Mps::start(solo(&sock)).unwrap();
    assert_eq!(std::fs::symlink_metadata(&sock).unwrap().mode() & 0o7777, 0o600);
    // While it listens, a second SP on the same path is refused.
    let why = refused(solo(&sock));
    assert!(why.contains("listening"), "{why}");
    shutdown_within_watchdog(m);
}

#[test]
fn what_is_not_a_socket_at_the_socket_path_is_left_alone() {
    let dir = TempDir::new();
    // A regular file.
    let file = dir.0.join("file.sock");
    std::fs::write(&file, b"precious").unwrap();
    let why = refused(solo(&file));
    assert!(why.contains("not a socket"), "{why}");
    assert_eq!(std::fs::read(&file).unwrap(), b"precious");
    // A directory.
    let sub = dir.0.join("dir.sock");
    std::fs::create_dir(&sub).unwrap();
    let why = refused(solo(&sub));
    assert!(why.contains("not a socket"), "{why}");
    assert!(sub.is_dir());
    // A symbolic link, to a file or to a stale socket.
    let target = dir.0.join("target");
    std::fs::write(&target, b"t").unwrap();
    let stale = dir.0.join("stale");
    drop(UnixListener::bind(&stale).unwrap());
    for to in [&target, &stale] {
        let link = dir.0.join(unique("link"));
        std::os::unix::fs::symlink(to, &link).unwrap();
        let why = refused(solo(&link));
        assert!(why.contains("not a socket"), "{why}");
        assert!(std::fs::symlink_metadata(&link).unwrap().file_type().is_symlink(), "the link was removed");
        assert!(std::fs::symlink_metadata(to).is_ok(), "the link's target was removed");
    }
}

#[test]
fn shutdown_leaves_a_socket_that_replaced_ours() {
    let dir = TempDir::new();
    let sock = dir.0.join("a.sock");
    let m = Mps::start(solo(&sock)).unwrap();
    // Another program moves our socket aside and listens at its path.
    let moved = dir.0.join("moved.sock");
    std::fs::rename(&sock, &moved).unwrap();
    let replacement = UnixListener::bind(&sock).unwrap();
    let ino = std::fs::symlink_metadata(&sock).unwrap().ino();
    // A connection to the path (how the SP may wake its own listener at
    // shutdown) reaches the replacement: pass each one on to the SP's socket,
    // so that this test does not depend on how the listener is woken.
    let done = Arc::new(AtomicBool::new(false));
    let forwarder = {
        let (done, moved) = (done.clone(), moved.clone());
        std::thread::spawn(move || {
            for c in replacement.incoming() {
                if done.load(Ordering::SeqCst) {
                    break;
                }
                drop(c);
                let _ = UnixStream::connect(&moved);
            }
            replacement
        })
    };
    shutdown_within_watchdog(m);
    let md = std::fs::symlink_metadata(&sock).expect("the replacement's socket file is still there");
    assert_eq!(md.ino(), ino, "the socket file at the path is the replacement's");
    done.store(true, Ordering::SeqCst);
    UnixStream::connect(&sock).expect("the replacement still listens there");
    drop(forwarder.join().unwrap());
}

#[test]
fn wait_for_peer_with_the_largest_timeout_waits_instead_of_panicking() {
    let (a, b) = (unique("a"), unique("b"));
    let (ia, ib) = (format!("inproc:{a}"), format!("inproc:{b}"));
    let ma = Mps::start(common::config("0.A", &ia, "0.B", &ib, "")).unwrap();
    for timeout in [Duration::MAX, Duration::from_secs(u64::MAX / 2)] {
        let (tx, rx) = mpsc::channel();
        let m = ma.clone();
        std::thread::spawn(move || {
            let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| m.wait_for_peer(SpId::b(0), Some(timeout))));
            let _ = tx.send(r.map_err(|_| "wait_for_peer panicked"));
        });
        // The peer comes up after the wait began (or before: it returns at once).
        let mb = Mps::start(common::config("0.B", &ib, "0.A", &ia, "")).unwrap();
        let r = rx.recv_timeout(WATCHDOG).expect("wait_for_peer returned once the link was up");
        assert_eq!(r, Ok(Ok(())), "timeout {timeout:?}");
        mb.shutdown().unwrap();
    }
    ma.shutdown().unwrap();
}
