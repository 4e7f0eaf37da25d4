//! `MpsAsynchronousSend` racing `MpsShutdown` (issue 8, item 16(c)): every
//! send that was accepted (`STATUS_PENDING`) gets exactly one
//! `MpsEventMessageSent` before `MpsShutdown` returns, so every buffer lent
//! comes back (`MpsFreeMessage` succeeds, never `STATUS_DEVICE_BUSY`), and a
//! send that was refused gets none. Loopback sends (to this SP itself) and
//! sends over an in-process link to a peer SP, from more threads than CPUs,
//! while the main thread shuts the SP down, many times over. The race is a
//! window of a few instructions in each send, so the tests are probabilistic:
//! the unfixed library lost a loopback completion in each of three runs tried
//! (in rounds 35, 48 and 306); the runs with a peer, whose shutdown first
//! spends milliseconds closing the link, rarely hit it.
//!
//! Its own test binary: it uses the process's one C-API instance.

mod common;

use common::{unique, wide, TempDir};
use mps::ffi::*;
use mps::{Config, Mps, Status};
use std::sync::atomic::{AtomicU32, AtomicUsize, Ordering};
use std::sync::{Arc, Barrier};
use std::time::{Duration, Instant};

/// Enough buffers that a sender mostly finds one free (a send, not a
/// `STATUS_DEVICE_BUSY` refusal).
const BUFFERS: usize = 512;
const SIZE: u32 = 16;
/// Sending threads: more than the CPUs, so that some are preempted in the
/// middle of a send while the shutdown runs.
const SENDERS: usize = 16;
/// Rounds of the loopback race, and of the one with a peer (slower: each
/// shutdown closes a link in order).
const LOOPBACK_ITERATIONS: usize = 600;
const PEER_ITERATIONS: usize = 100;
const WATCHDOG: Duration = Duration::from_secs(30);

/// Per buffer (the send's ContextHandle is its index): completions reported.
static COMPLETED: [AtomicU32; BUFFERS] = [const { AtomicU32::new(0) }; BUFFERS];

unsafe extern "C" fn callback(event: MPS_EVENT, data: PVOID) -> NTSTATUS {
    match event {
        MPS_EVENT::MpsEventMessageSent => {
            let d = &*(data as *const MPS_SEND_EVENT_DATA);
            let i = d.ContextHandle as usize;
            COMPLETED[i].fetch_add(1, Ordering::SeqCst);
        }
        MPS_EVENT::MpsEventMessageReceived => {
            MpsReleaseReceivedMessage(data);
        }
        MPS_EVENT::MpsEventCloseCompleted => {}
    }
    Status::STATUS_SUCCESS.0
}

/// Runs `f` on a thread; fails the test if it has not returned within `WATCHDOG`.
fn within<T: Send + 'static>(what: &str, f: impl FnOnce() -> T + Send + 'static) -> T {
    common::within(WATCHDOG, what, f)
}

/// One test at a time: they share the process's C-API instance and `COMPLETED`.
static SERIAL: std::sync::Mutex<()> = std::sync::Mutex::new(());

/// Runs `iterations` rounds of: start the C API's SP from `cfg` (a file),
/// open a session, let `SENDERS` threads send asynchronously (buffer `i` to
/// `dests[i / SENDERS % dests.len()]`), shut down after a varying amount of
/// traffic, and check every accepted send's one completion. Then every buffer
/// must free. Stops at the first round that loses a completion.
fn race(cfg: &std::path::Path, dests: &[CMI_SP_ID], wait_for: Option<CMI_SP_ID>, iterations: usize) {
    let cpath = std::ffi::CString::new(cfg.to_str().unwrap()).unwrap();
    let mut bufs: Vec<usize> = Vec::new();
    for _ in 0..BUFFERS {
        let mut p: PVOID = std::ptr::null_mut();
        assert_eq!(unsafe { MpsAllocateMessage(SIZE, &mut p) }, 0);
        bufs.push(p as usize);
    }
    let dests: Arc<Vec<CMI_SP_ID>> = Arc::new(dests.to_vec());
    let mut accepted_total = 0u64;
    let mut failures: Vec<String> = Vec::new();
    let t0 = Instant::now();
    for iter in 0..iterations {
        assert_eq!(unsafe { MpsInitialize(cpath.as_ptr()) }, 0, "iteration {iter}: MpsInitialize");
        let mut name = wide("Race");
        let mut h: MPS_HANDLE = std::ptr::null_mut();
        assert_eq!(unsafe { MpsOpen(Some(callback), 0, 0, name.as_mut_ptr(), std::ptr::null_mut(), &mut h) }, 0);
        if let Some(peer) = wait_for {
            assert_eq!(unsafe { MpsWaitForPeer(&peer, 30_000) }, 0, "iteration {iter}: link to the peer");
        }
        let before: Vec<u32> = COMPLETED.iter().map(|c| c.load(Ordering::SeqCst)).collect();
        let accepted: Arc<Vec<AtomicU32>> = Arc::new((0..BUFFERS).map(|_| AtomicU32::new(0)).collect());
        let total = Arc::new(AtomicUsize::new(0));
        let go = Arc::new(Barrier::new(SENDERS + 1));
        let h_addr = h as usize;
        let senders: Vec<_> = (0..SENDERS)
            .map(|t| {
                let (accepted, total, go, bufs, dests) = (accepted.clone(), total.clone(), go.clone(), bufs.clone(), dests.clone());
                std::thread::spawn(move || {
                    go.wait();
                    // Each thread owns every SENDERS-th buffer; a buffer is sent
                    // again once it has come back (STATUS_DEVICE_BUSY until then).
                    loop {
                        for i in (t..BUFFERS).step_by(SENDERS) {
                            let mut info = MPS_SEND_MESSAGE_INFO {
                                ContextHandle: i as PVOID,
                                Destination: dests[(i / SENDERS) % dests.len()],
                                Ptr: bufs[i] as PVOID,
                                Size: SIZE,
                                SequenceTag: 7,
                            };
                            let st = unsafe { MpsAsynchronousSend(h_addr as MPS_HANDLE, &mut info) };
                            if st == Status::STATUS_PENDING.0 {
                                accepted[i].fetch_add(1, Ordering::SeqCst);
                                total.fetch_add(1, Ordering::SeqCst);
                            } else if st == Status::STATUS_PIPE_CLOSING.0 || st == Status::STATUS_INVALID_HANDLE.0 {
                                // The shutdown is visible: this sender is done.
                                return;
                            }
                            // Anything else (DEVICE_BUSY: still lent; HOST_UNREACHABLE:
                            // the link went down first; INSUFFICIENT_RESOURCES) is a
                            // refusal: no callback follows, try again.
                        }
                    }
                })
            })
            .collect();
        go.wait();
        // Shut down after a varying amount of traffic (0 to 1000 sends).
        let want = (iter * 37) % 1000;
        while total.load(Ordering::SeqCst) < want {
            assert!(t0.elapsed() < Duration::from_secs(300), "iteration {iter}: senders stuck");
            std::thread::yield_now();
        }
        let st = within("MpsShutdown", || MpsShutdown());
        assert_eq!(st, 0, "iteration {iter}: MpsShutdown");
        within("the senders", move || {
            for s in senders {
                s.join().unwrap();
            }
        });
        // MpsShutdown has returned: every accepted send must have had its one callback.
        for i in 0..BUFFERS {
            let got = COMPLETED[i].load(Ordering::SeqCst) - before[i];
            let want = accepted[i].load(Ordering::SeqCst);
            if got != want {
                failures.push(format!("iteration {iter}: buffer {i}: {want} send(s) accepted, {got} completion(s) reported"));
            }
            accepted_total += want as u64;
        }
        if !failures.is_empty() {
            break;
        }
    }
    // Every buffer is the client's again: freeing it succeeds.
    for (i, p) in bufs.iter().enumerate() {
        let st = MpsFreeMessage(*p as PVOID);
        if st != 0 {
            failures.push(format!("buffer {i}: MpsFreeMessage after MpsShutdown returned {:#x} (still lent)", st as u32));
        }
    }
    assert!(failures.is_empty(), "{} problem(s) after {accepted_total} accepted sends:\n{}", failures.len(), failures.join("\n"));
    assert!(accepted_total > 0, "no send was ever accepted: the race was not run");
}

/// Loopback only (the reported case): with no link to close, the shutdown
/// reaches the sessions microseconds after it starts, which is when a send
/// still on its way through the library could queue its completion too late.
#[test]
fn every_loopback_send_accepted_while_shutdown_races_it_completes_once_and_its_buffer_comes_back() {
    let _g = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    std::env::set_var("MPS_LOG", "off");
    let dir = TempDir::new();
    let cfg = dir.0.join("solo.toml");
    std::fs::write(&cfg, format!("sp = \"0.A\"\nlisten = \"inproc:{}\"\n", unique("race-solo"))).unwrap();
    race(&cfg, &[CMI_SP_ID { StorageUnit: 0, Sp: CMI_SP_A }], None, LOOPBACK_ITERATIONS);
}

/// Loopback and over an in-process link to a peer SP, half the buffers each.
#[test]
fn every_send_to_self_or_a_peer_accepted_while_shutdown_races_it_completes_once() {
    let _g = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    std::env::set_var("MPS_LOG", "off");
    let dir = TempDir::new();
    let (a, b) = (unique("race-a"), unique("race-b"));
    let timing = "[heartbeat]\ninterval_ms = 20\ndead_peer_timeout_ms = 60\n[reconnect]\ninitial_backoff_ms = 1\nmax_backoff_ms = 5\n";
    // The peer: a Rust SP in this process that swallows what it receives.
    let peer_cfg = format!("sp = \"0.B\"\nlisten = \"inproc:{b}\"\n[[peer]]\nsp = \"0.A\"\naddress = \"inproc:{a}\"\n{timing}");
    let peer = Mps::start(Config::from_toml(&peer_cfg, "peer").unwrap()).unwrap();
    let sink: mps::Callback = Arc::new(|_ev| {});
    peer.open(Some(sink), 0, 0, "Race", 0).unwrap();
    // This SP (the C API's), 0.A: it dials 0.B.
    let cfg = dir.0.join("a.toml");
    std::fs::write(&cfg, format!("sp = \"0.A\"\nlisten = \"inproc:{a}\"\n[[peer]]\nsp = \"0.B\"\naddress = \"inproc:{b}\"\n{timing}")).unwrap();
    let remote = CMI_SP_ID { StorageUnit: 0, Sp: CMI_SP_B };
    race(&cfg, &[CMI_SP_ID { StorageUnit: 0, Sp: CMI_SP_A }, remote], Some(remote), PEER_ITERATIONS);
    peer.shutdown().unwrap();
}
