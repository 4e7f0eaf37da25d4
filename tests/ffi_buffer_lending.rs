//! A C client's message buffer (issue 8, item 14): the client writes through
//! the pointer `MpsAllocateMessage` gave it, except while the buffer is lent
//! to a send; the library reads it only while it is lent, and hands it back
//! (`MpsEventMessageSent`, or `MpsSynchronousSend` returning) only once no
//! part of the library refers to it any more.
//!
//! What these tests can show: that what the client writes through its pointer
//! is what the next send carries (loopback and over a link), and that the
//! library never hands a buffer back while the link is still writing it out:
//! a peer that confirms a message before it has read it (it knows the id from
//! the frame's first bytes) used to get the client's later writes in the rest
//! of that message. What they cannot show: the Rust-level soundness of the
//! storage (no `&[u8]` alive while C writes, a pointer with write provenance),
//! which only a tool such as Miri could check; the argument is in
//! src/ffi/registry.rs.
//!
//! Its own test binary: it uses the process's one C-API instance.

mod common;

use common::{wide, RawPeer, TempDir};
use mps::ffi::*;
use mps::{SpId, Status};
use std::io::{Read, Write};
use std::sync::mpsc;
use std::sync::Mutex;
use std::time::{Duration, Instant};

static SERIAL: Mutex<()> = Mutex::new(());

/// Sizes and fill bytes the callback uses.
const BIG: usize = 4 << 20;
const BEFORE: u8 = 0xAA;
const AFTER: u8 = 0xBB;

/// Where the callback reports each completion (status, and the time the client
/// wrote its new bytes into the buffer it got back).
static DONE: Mutex<Option<mpsc::Sender<(NTSTATUS, Instant)>>> = Mutex::new(None);

unsafe extern "C" fn callback(event: MPS_EVENT, data: PVOID) -> NTSTATUS {
    match event {
        MPS_EVENT::MpsEventMessageSent => {
            let d = &*(data as *const MPS_SEND_EVENT_DATA);
            // The buffer is the client's again: it reuses it at once, as a
            // storage driver would for its next request.
            std::ptr::write_bytes(d.Ptr as *mut u8, AFTER, d.ContextHandle as usize);
            let at = Instant::now();
            if let Some(tx) = DONE.lock().unwrap().as_ref() {
                let _ = tx.send((d.TransmissionStatus, at));
            }
        }
        MPS_EVENT::MpsEventMessageReceived => {
            MpsReleaseReceivedMessage(data);
        }
        MPS_EVENT::MpsEventCloseCompleted => {}
    }
    Status::STATUS_SUCCESS.0
}

/// The C API's SP, shut down however the test ends (so that a failed test
/// does not fail the next one's MpsInitialize).
struct Running;
impl Drop for Running {
    fn drop(&mut self) {
        *DONE.lock().unwrap_or_else(|e| e.into_inner()) = None;
        MpsShutdown();
    }
}

/// Starts the C API's SP as 0.A from a file in `dir` whose peer 0.B is the
/// test, listening at `peer`; returns the peer, connected.
fn start_with_raw_peer(dir: &TempDir) -> (Running, RawPeer) {
    let peer_path = dir.0.join("peer.sock");
    let listener = std::os::unix::net::UnixListener::bind(&peer_path).unwrap();
    let cfg = dir.0.join("a.toml");
    std::fs::write(
        &cfg,
        format!(
            "sp = \"0.A\"\n[[peer]]\nsp = \"0.B\"\naddress = \"unix:{}\"\n[limits]\nmax_message_size = {BIG}\n\
             [heartbeat]\ninterval_ms = 1000\ndead_peer_timeout_ms = 60000\n",
            peer_path.display()
        ),
    )
    .unwrap();
    let c = std::ffi::CString::new(cfg.to_str().unwrap()).unwrap();
    assert_eq!(unsafe { MpsInitialize(c.as_ptr()) }, 0);
    let running = Running;
    let peer = RawPeer::accept(&listener, SpId::b(0));
    let b = CMI_SP_ID { StorageUnit: 0, Sp: CMI_SP_B };
    assert_eq!(unsafe { MpsWaitForPeer(&b, 30_000) }, 0);
    (running, peer)
}

fn open(name: &str) -> MPS_HANDLE {
    let mut n = wide(name);
    let mut h: MPS_HANDLE = std::ptr::null_mut();
    assert_eq!(unsafe { MpsOpen(Some(callback), 0, 0, n.as_mut_ptr(), std::ptr::null_mut(), &mut h) }, 0);
    h
}

/// Reads one MESSAGE frame's header up to its payload, skipping heartbeats:
/// (id, payload length).
fn read_message_head(s: &mut std::os::unix::net::UnixStream) -> (u64, usize) {
    loop {
        let mut p = [0u8; 8];
        s.read_exact(&mut p).unwrap();
        let len = u32::from_le_bytes(p[..4].try_into().unwrap()) as usize;
        if p[4] != 2 {
            let mut skip = vec![0u8; len];
            s.read_exact(&mut skip).unwrap();
            continue;
        }
        let mut fixed = [0u8; 24];
        s.read_exact(&mut fixed).unwrap();
        let name_len = u16::from_le_bytes(fixed[20..22].try_into().unwrap()) as usize;
        let mut name = vec![0u8; name_len];
        s.read_exact(&mut name).unwrap();
        return (u64::from_le_bytes(fixed[..8].try_into().unwrap()), len - 24 - name_len);
    }
}

/// A peer confirms a 4 MiB message as soon as it has read the frame's first
/// bytes, before the rest has left the SP. The client hears of the
/// confirmation and writes new bytes into its buffer: none of them may reach
/// the wire. Unfixed, the callback came while the link's writer still had the
/// rest of the buffer to write, and the peer read the client's new bytes.
#[test]
fn a_buffer_comes_back_only_once_the_link_has_finished_writing_it() {
    let _g = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    std::env::set_var("MPS_LOG", "off");
    let dir = TempDir::new();
    let (_running, mut peer) = start_with_raw_peer(&dir);
    let (tx, done) = mpsc::channel();
    *DONE.lock().unwrap() = Some(tx);
    let h = open("Lend");
    let mut p: PVOID = std::ptr::null_mut();
    assert_eq!(unsafe { MpsAllocateMessage(BIG as ULONG, &mut p) }, 0);
    unsafe { std::ptr::write_bytes(p as *mut u8, BEFORE, BIG) };
    let mut info = MPS_SEND_MESSAGE_INFO {
        ContextHandle: BIG as PVOID,
        Destination: CMI_SP_ID { StorageUnit: 0, Sp: CMI_SP_B },
        Ptr: p,
        Size: BIG as ULONG,
        SequenceTag: 1,
    };
    assert_eq!(unsafe { MpsAsynchronousSend(h, &mut info) }, Status::STATUS_PENDING.0);
    let (id, len) = read_message_head(&mut peer.s);
    assert_eq!(len, BIG);
    // Confirmed with 4 MiB still to read: far more than the socket holds, so
    // the SP's writer is in the middle of writing the buffer.
    peer.confirm(&[(id, Status::STATUS_SUCCESS)]).unwrap();
    // The unfixed library calls back at once; give it the time to, so that
    // its failure is certain. (The fixed one cannot call back before the rest
    // is read, so this wait runs out; nothing is concluded from it.)
    let early = done.recv_timeout(Duration::from_secs(1)).ok();
    let mut payload = vec![0u8; len];
    peer.s.read_exact(&mut payload).unwrap();
    let read_at = Instant::now();
    let changed = payload.iter().filter(|b| **b != BEFORE).count();
    let (status, written_at) = early.unwrap_or_else(|| done.recv_timeout(Duration::from_secs(30)).expect("the completion"));
    assert_eq!(status, Status::STATUS_SUCCESS.0);
    assert_eq!(
        changed, 0,
        "{changed} of the {len} bytes the peer read were written by the client after the library handed the buffer back"
    );
    assert!(written_at >= read_at || early.is_none(), "the buffer came back before the link had finished writing it");
    assert_eq!(MpsFreeMessage(p), 0, "the buffer is the client's again");
}

/// What the client writes through its pointer between sends is what the next
/// send carries: over a link (asynchronous and synchronous) and to itself.
#[test]
fn what_the_client_writes_through_its_pointer_is_what_the_next_send_carries() {
    let _g = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    std::env::set_var("MPS_LOG", "off");
    let dir = TempDir::new();
    let (_running, mut peer) = start_with_raw_peer(&dir);
    let (tx, done) = mpsc::channel();
    *DONE.lock().unwrap() = Some(tx);
    let h = open("Rewrite");
    let mut p: PVOID = std::ptr::null_mut();
    const N: usize = 4096;
    assert_eq!(unsafe { MpsAllocateMessage(N as ULONG, &mut p) }, 0);
    let remote = CMI_SP_ID { StorageUnit: 0, Sp: CMI_SP_B };
    for round in 0u8..4 {
        let fill = 0x10 + round;
        unsafe { std::ptr::write_bytes(p as *mut u8, fill, N) };
        // ContextHandle 0: the callback writes nothing back.
        let mut info = MPS_SEND_MESSAGE_INFO { ContextHandle: std::ptr::null_mut(), Destination: remote, Ptr: p, Size: N as ULONG, SequenceTag: 1 };
        let sync = round % 2 == 1;
        let reader = if sync {
            // The confirmation comes from the peer, which reads on its own thread.
            let mut s = peer.s.try_clone().unwrap();
            Some(std::thread::spawn(move || {
                let (id, len) = read_message_head(&mut s);
                let mut payload = vec![0u8; len];
                s.read_exact(&mut payload).unwrap();
                let mut f = Vec::new();
                mps::cmi::frame::encode_confirms(&mut f, &[(id, Status::STATUS_SUCCESS)]);
                s.write_all(&f).unwrap();
                payload
            }))
        } else {
            None
        };
        let payload = if let Some(r) = reader {
            assert_eq!(unsafe { MpsSynchronousSend(h, &mut info) }, 0);
            r.join().unwrap()
        } else {
            assert_eq!(unsafe { MpsAsynchronousSend(h, &mut info) }, Status::STATUS_PENDING.0);
            let (id, len) = read_message_head(&mut peer.s);
            let mut payload = vec![0u8; len];
            peer.s.read_exact(&mut payload).unwrap();
            peer.confirm(&[(id, Status::STATUS_SUCCESS)]).unwrap();
            assert_eq!(done.recv_timeout(Duration::from_secs(30)).expect("the completion").0, 0);
            payload
        };
        assert!(payload.len() == N && payload.iter().all(|b| *b == fill), "round {round}: the peer did not get the bytes the client wrote");
    }
    // To itself: the session receives what was written.
    let mut local = CMI_SP_ID { StorageUnit: 0, Sp: 0 };
    let mut partner = local;
    assert_eq!(unsafe { MpsGetSpId(&mut local, &mut partner) }, 0);
    let mut n = wide("Self");
    let mut hs: MPS_HANDLE = std::ptr::null_mut();
    assert_eq!(unsafe { MpsOpen(None, 0, 0, n.as_mut_ptr(), std::ptr::null_mut(), &mut hs) }, 0);
    for fill in [0x51u8, 0x52] {
        unsafe { std::ptr::write_bytes(p as *mut u8, fill, N) };
        let mut info = MPS_SEND_MESSAGE_INFO { ContextHandle: std::ptr::null_mut(), Destination: local, Ptr: p, Size: N as ULONG, SequenceTag: 2 };
        assert_eq!(unsafe { MpsSynchronousSend(hs, &mut info) }, 0);
        let mut r: PMPS_RECEIVED_EVENT_DATA = std::ptr::null_mut();
        assert_eq!(unsafe { MpsSynchronousReceive(hs, 0, 0, &mut r) }, 0);
        let got = unsafe { std::slice::from_raw_parts((*r).Ptr as *const u8, (*r).Size as usize) };
        assert!(got.len() == N && got.iter().all(|b| *b == fill), "loopback: the session did not get the bytes the client wrote");
        assert_eq!(MpsReleaseReceivedMessage(r.cast()), 0);
    }
    assert_eq!(MpsFreeMessage(p), 0);
}
