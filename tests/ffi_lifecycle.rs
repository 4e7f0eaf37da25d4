//! Start and stop of the process's one SP through the C API (issue 8,
//! item 13): a second MpsShutdown concurrent with a first waits until the
//! first one's teardown has finished; after MpsShutdown only MpsInitialize
//! starts an SP again (routines that need one get STATUS_DEVICE_NOT_READY, or
//! STATUS_INVALID_HANDLE for those that take a handle); the first call of a
//! process that never called MpsShutdown initializes from the environment.
//!
//! One process, one C-API instance: every test holds SERIAL, and the check of
//! a fresh process runs first, whichever test the harness starts first.

mod common;

use common::{wide, TempDir};
use mps::ffi::*;
use mps::Status;
use std::ffi::CStr;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc;
use std::sync::{Mutex, MutexGuard, OnceLock};
use std::time::Duration;

/// NT's STATUS_DEVICE_NOT_READY, spelt out so that the test states the value.
const DEVICE_NOT_READY: i32 = 0xC000_00A3_u32 as i32;
const WATCHDOG: Duration = Duration::from_secs(30);

static SERIAL: Mutex<()> = Mutex::new(());

/// Log lines the library sent to the routine, while a test collects them.
static LOG: Mutex<Vec<String>> = Mutex::new(Vec::new());
static LOG_TX: Mutex<Option<mpsc::Sender<String>>> = Mutex::new(None);

unsafe extern "C" fn log_routine(_level: ULONG, line: *const std::ffi::c_char, _ctx: PVOID) {
    let line = CStr::from_ptr(line).to_string_lossy().into_owned();
    if let Some(tx) = LOG_TX.lock().unwrap_or_else(|e| e.into_inner()).as_ref() {
        let _ = tx.send(line.clone());
    }
    LOG.lock().unwrap_or_else(|e| e.into_inner()).push(line);
}

/// Whether a line containing `part` was logged. The log is asynchronous (its
/// own thread calls the routine): flush what was logged so far first.
fn logged(part: &str) -> bool {
    mps::log::flush(std::time::Duration::from_secs(10));
    LOG.lock().unwrap().iter().any(|l| l.contains(part))
}

fn open(cb: PMPS_CALLBACK_ROUTINE, name: &str) -> (NTSTATUS, MPS_HANDLE) {
    let mut n = wide(name);
    let mut h: MPS_HANDLE = std::ptr::null_mut();
    let st = unsafe { MpsOpen(cb, 0, 0, n.as_mut_ptr(), std::ptr::null_mut(), &mut h) };
    (st, h)
}

fn status_name(s: NTSTATUS) -> String {
    unsafe { CStr::from_ptr(MpsStatusName(s)) }.to_string_lossy().into_owned()
}

/// This test's runtime directory for the embedded default, in the environment.
fn runtime_dir() -> TempDir {
    let d = TempDir::new();
    std::env::set_var("MPS_RUNTIME_DIR", &d.0);
    std::env::set_var("MPS_SP", "0.A");
    std::env::remove_var("MPS_CONFIG");
    d
}

fn socket_of(dir: &Path) -> std::path::PathBuf {
    dir.join("sp-0-A.sock")
}

/// What the first API call of this process found (see `serial`).
static FIRST_CALL: OnceLock<Result<(), String>> = OnceLock::new();

/// Takes the process's one SP for this test; the first taker first checks
/// that the first call of a fresh process initializes from the environment.
fn serial() -> MutexGuard<'static, ()> {
    let g = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    FIRST_CALL.get_or_init(|| {
        std::env::set_var("MPS_LOG", "warn");
        let dir = runtime_dir();
        std::env::set_var("MPS_SP", "3.B");
        let mut local = CMI_SP_ID { StorageUnit: 9, Sp: 9 };
        let mut peer = local;
        let st = unsafe { MpsGetSpId(&mut local, &mut peer) };
        let r = if st != 0 {
            Err(format!("the first call returned {}", status_name(st)))
        } else if (local.StorageUnit, local.Sp, peer.StorageUnit, peer.Sp) != (3, CMI_SP_B, 3, CMI_SP_A) {
            Err(format!("the first call's SP is {}.{} (peer {}.{}), not MPS_SP 3.B", local.StorageUnit, local.Sp, peer.StorageUnit, peer.Sp))
        } else if !dir.0.join("sp-3-B.sock").exists() {
            Err("no socket in MPS_RUNTIME_DIR".into())
        } else {
            Ok(())
        };
        assert_eq!(MpsShutdown(), 0);
        r
    });
    // Whatever an earlier test left running (it failed half-way) is stopped.
    assert_eq!(MpsShutdown(), 0);
    g
}

#[test]
fn the_first_call_of_a_process_initializes_from_the_environment() {
    let _g = serial();
    assert_eq!(FIRST_CALL.get().unwrap(), &Ok(()));
}

#[test]
fn after_shutdown_only_mps_initialize_starts_an_sp() {
    let _g = serial();
    let dir = runtime_dir();
    unsafe {
        assert_eq!(MpsInitialize(std::ptr::null()), 0);
        let (st, old) = open(None, "Before");
        assert_eq!(st, 0);
        let mut buf: PVOID = std::ptr::null_mut();
        assert_eq!(MpsAllocateMessage(8, &mut buf), 0);
        let mut local = CMI_SP_ID { StorageUnit: 0, Sp: 0 };
        let mut peer = local;
        assert_eq!(MpsGetSpId(&mut local, &mut peer), 0);
        let mut info = MPS_SEND_MESSAGE_INFO { ContextHandle: std::ptr::null_mut(), Destination: local, Ptr: buf, Size: 8, SequenceTag: 1 };
        assert_eq!(MpsSynchronousSend(old, &mut info), 0);
        let mut held: PMPS_RECEIVED_EVENT_DATA = std::ptr::null_mut();
        assert_eq!(MpsSynchronousReceive(old, 0, 0, &mut held), 0);

        assert_eq!(MpsShutdown(), 0);
        assert!(!socket_of(&dir.0).exists(), "the SP's socket is gone");
        assert_eq!(MpsSetLogRoutine(Some(log_routine), std::ptr::null_mut()), 0);
        LOG.lock().unwrap().clear();

        // A late call starts nothing: the SP stays down.
        let (st, _) = open(None, "Late");
        assert_eq!(st, DEVICE_NOT_READY, "MpsOpen after MpsShutdown: {}", status_name(st));
        assert!(!socket_of(&dir.0).exists(), "a late call brought the SP back on its socket");
        assert!(logged("MpsInitialize"), "the log names the fix: {:?}", LOG.lock().unwrap());
        assert_eq!(MpsGetSpId(&mut local, &mut peer), DEVICE_NOT_READY);
        assert_eq!(MpsWaitForPeer(&local, 0), DEVICE_NOT_READY);
        let mut si = std::mem::zeroed::<MPS_SESSION_INFO>();
        assert_eq!(MpsQuerySession(old, &mut si), DEVICE_NOT_READY);
        // Routines that take a handle: their handles are stale anyway.
        assert_eq!(MpsSynchronousSend(old, &mut info), Status::STATUS_INVALID_HANDLE.0);
        assert_eq!(MpsAsynchronousSend(old, &mut info), Status::STATUS_INVALID_HANDLE.0);
        let mut d: PMPS_RECEIVED_EVENT_DATA = 1 as PMPS_RECEIVED_EVENT_DATA;
        assert_eq!(MpsSynchronousReceive(old, 0, 0, &mut d), Status::STATUS_INVALID_HANDLE.0);
        assert!(d.is_null());
        assert_eq!(MpsClose(old), Status::STATUS_INVALID_HANDLE.0);
        assert!(!socket_of(&dir.0).exists(), "a late call brought the SP back on its socket");
        // Buffers and received messages need no SP.
        let mut other: PVOID = std::ptr::null_mut();
        assert_eq!(MpsAllocateMessage(4, &mut other), 0);
        assert_eq!(MpsFreeMessage(other), 0);
        assert_eq!(MpsReleaseReceivedMessage(held.cast()), 0);
        // A second MpsShutdown is harmless.
        assert_eq!(MpsShutdown(), 0);
        assert_eq!(MpsSetLogRoutine(None, std::ptr::null_mut()), 0);

        // MpsInitialize starts it again; the old handle stays dead.
        assert_eq!(MpsInitialize(std::ptr::null()), 0);
        assert!(socket_of(&dir.0).exists());
        let (st, again) = open(None, "Before");
        assert_eq!(st, 0);
        assert_eq!(MpsClose(old), Status::STATUS_INVALID_HANDLE.0);
        assert_eq!(MpsSynchronousSend(again, &mut info), 0);
        assert_eq!(MpsSynchronousReceive(again, 0, 0, &mut held), 0);
        assert_eq!(MpsReleaseReceivedMessage(held.cast()), 0);
        assert_eq!(MpsClose(again), 0);
        assert_eq!(MpsFreeMessage(buf), 0);
        assert_eq!(MpsShutdown(), 0);
    }
    assert_eq!(status_name(DEVICE_NOT_READY), "STATUS_DEVICE_NOT_READY");
}

/// The callback of `a_concurrent_shutdown_waits_for_the_first_teardown`:
/// blocks the first event until released, so the first teardown (which
/// joins the callback threads) cannot finish before then.
static IN_CALLBACK: Mutex<Option<mpsc::Sender<()>>> = Mutex::new(None);
static RELEASE: Mutex<Option<mpsc::Receiver<()>>> = Mutex::new(None);
static CALLBACK_RETURNED: AtomicBool = AtomicBool::new(false);

unsafe extern "C" fn blocking_callback(event: MPS_EVENT, data: PVOID) -> NTSTATUS {
    if event == MPS_EVENT::MpsEventMessageReceived {
        MpsReleaseReceivedMessage(data);
    }
    if let Some(tx) = IN_CALLBACK.lock().unwrap().take() {
        let _ = tx.send(());
        let rx = RELEASE.lock().unwrap().take().unwrap();
        let _ = rx.recv_timeout(WATCHDOG);
        CALLBACK_RETURNED.store(true, Ordering::SeqCst);
    }
    0
}

enum Seen {
    /// The second MpsShutdown said it waits for the first.
    Waiting,
    /// The second MpsShutdown returned: its status, whether the first
    /// teardown had finished (the callback returned, the socket removed).
    Returned(NTSTATUS, bool, bool),
}

#[test]
fn a_concurrent_shutdown_waits_for_the_first_teardown() {
    let _g = serial();
    let dir = runtime_dir();
    let sock = socket_of(&dir.0);
    let (in_tx, in_rx) = mpsc::channel();
    let (release_tx, release_rx) = mpsc::channel();
    *IN_CALLBACK.lock().unwrap() = Some(in_tx);
    *RELEASE.lock().unwrap() = Some(release_rx);
    CALLBACK_RETURNED.store(false, Ordering::SeqCst);
    let (seen_tx, seen) = mpsc::channel::<Seen>();
    unsafe {
        assert_eq!(MpsInitialize(std::ptr::null()), 0);
        let (st, h) = open(Some(blocking_callback), "Slow");
        assert_eq!(st, 0);
        let mut buf: PVOID = std::ptr::null_mut();
        assert_eq!(MpsAllocateMessage(1, &mut buf), 0);
        let mut local = CMI_SP_ID { StorageUnit: 0, Sp: 0 };
        let mut peer = local;
        assert_eq!(MpsGetSpId(&mut local, &mut peer), 0);
        let mut info = MPS_SEND_MESSAGE_INFO { ContextHandle: std::ptr::null_mut(), Destination: local, Ptr: buf, Size: 1, SequenceTag: 0 };
        assert_eq!(MpsAsynchronousSend(h, &mut info), Status::STATUS_PENDING.0);
        in_rx.recv_timeout(WATCHDOG).expect("the callback runs");

        // The first MpsShutdown: its teardown waits for the callback.
        let first = std::thread::spawn(|| MpsShutdown());
        // It has begun once calls are refused as "shutdown in progress".
        let t0 = std::time::Instant::now();
        while MpsGetSpId(&mut local, &mut peer) != Status::STATUS_PIPE_CLOSING.0 {
            assert!(t0.elapsed() < WATCHDOG, "the first MpsShutdown never began");
            std::thread::yield_now();
        }
        // The second one, and what it says it does.
        let (log_tx, log_rx) = mpsc::channel::<String>();
        *LOG_TX.lock().unwrap() = Some(log_tx);
        assert_eq!(MpsSetLogRoutine(Some(log_routine), std::ptr::null_mut()), 0);
        assert_eq!(MpsSetLogLevel(MPS_LOG_INFO), 0);
        let waiting_tx = seen_tx.clone();
        let relay = std::thread::spawn(move || {
            while let Ok(line) = log_rx.recv() {
                if line.contains("waiting for it to finish") {
                    let _ = waiting_tx.send(Seen::Waiting);
                }
            }
        });
        let sock2 = sock.clone();
        let second = std::thread::spawn(move || {
            let st = MpsShutdown();
            let _ = seen_tx.send(Seen::Returned(st, CALLBACK_RETURNED.load(Ordering::SeqCst), !sock2.exists()));
        });
        let outcome = seen.recv_timeout(WATCHDOG).expect("the second MpsShutdown returned or said it waits");
        let _ = release_tx.send(());
        let outcome = match outcome {
            Seen::Waiting => seen.recv_timeout(WATCHDOG).expect("the second MpsShutdown returned"),
            returned => returned,
        };
        // Let the first teardown finish before any assertion, so that a
        // failure here leaves the next test a process without an SP.
        assert_eq!(first.join().unwrap(), 0);
        match outcome {
            Seen::Returned(st, callback_returned, socket_removed) => {
                assert!(
                    callback_returned && socket_removed,
                    "the second MpsShutdown returned {} while the first teardown was still running \
                     (callback returned: {callback_returned}, socket removed: {socket_removed})",
                    status_name(st)
                );
                assert_eq!(st, 0, "{}", status_name(st));
            }
            Seen::Waiting => panic!("the second MpsShutdown said twice that it waits"),
        }
        second.join().unwrap();
        assert_eq!(MpsSetLogLevel(MPS_LOG_WARN), 0);
        assert_eq!(MpsSetLogRoutine(None, std::ptr::null_mut()), 0);
        *LOG_TX.lock().unwrap() = None;
        relay.join().unwrap();
        MpsFreeMessage(buf);
    }
}

#[test]
fn an_unsafe_socket_directory_is_a_configuration_error_from_c() {
    let _g = serial();
    let dir = TempDir::new();
    std::fs::set_permissions(&dir.0, std::fs::Permissions::from_mode(0o777)).unwrap();
    let cfg = dir.0.join("mps.toml");
    std::fs::write(&cfg, format!("sp = \"0.A\"\nlisten = \"unix:{}/a.sock\"\n", dir.0.display())).unwrap();
    let path = std::ffi::CString::new(cfg.to_str().unwrap()).unwrap();
    unsafe {
        assert_eq!(MpsSetLogRoutine(Some(log_routine), std::ptr::null_mut()), 0);
        LOG.lock().unwrap().clear();
        let st = MpsInitialize(path.as_ptr());
        assert_eq!(st, Status::STATUS_DEVICE_CONFIGURATION_ERROR.0, "{}", status_name(st));
        assert!(logged("writable by group or others"), "{:?}", LOG.lock().unwrap());
        assert!(!dir.0.join("a.sock").exists());
        assert_eq!(MpsSetLogRoutine(None, std::ptr::null_mut()), 0);
        // Closed to others, the same file starts.
        std::fs::set_permissions(&dir.0, std::fs::Permissions::from_mode(0o700)).unwrap();
        assert_eq!(MpsInitialize(path.as_ptr()), 0);
        assert!(dir.0.join("a.sock").exists());
        assert_eq!(MpsShutdown(), 0);
    }
}
