//! MpsShutdown while a callback keeps calling the C API: the callback gets
//! STATUS_PIPE_CLOSING, and nothing deadlocks (the teardown joins the thread
//! the callback runs on, so the callback must never wait on the teardown).
//! Its own test binary: it uses the process's one C-API instance.

use mps::ffi::*;
use mps::Status;
use std::sync::atomic::{AtomicI32, Ordering};

static LAST: AtomicI32 = AtomicI32::new(0);

unsafe extern "C" fn callback(event: MPS_EVENT, data: PVOID) -> NTSTATUS {
    if event == MPS_EVENT::MpsEventMessageReceived {
        MpsReleaseReceivedMessage(data);
        let mut name: Vec<WCHAR> = "Other".chars().map(|c| c as WCHAR).chain([0]).collect();
        // Keep calling into the API until the shutdown is visible.
        loop {
            let mut h: MPS_HANDLE = std::ptr::null_mut();
            let st = MpsOpen(None, 0, 0, name.as_mut_ptr(), std::ptr::null_mut(), &mut h);
            if st == Status::STATUS_SUCCESS.0 {
                MpsClose(h);
                continue;
            }
            LAST.store(st, Ordering::SeqCst);
            break;
        }
    }
    Status::STATUS_SUCCESS.0
}

#[test]
fn shutdown_while_a_callback_calls_the_api_does_not_deadlock() {
    let dir = std::env::temp_dir().join(format!("mps-ffi-shutdown-{}", std::process::id()));
    std::env::set_var("MPS_RUNTIME_DIR", &dir);
    std::env::set_var("MPS_LOG", "off");
    unsafe {
        assert_eq!(MpsInitialize(std::ptr::null()), 0);
        let mut name: Vec<WCHAR> = "Spin".chars().map(|c| c as WCHAR).chain([0]).collect();
        let mut h: MPS_HANDLE = std::ptr::null_mut();
        assert_eq!(MpsOpen(Some(callback), 0, 0, name.as_mut_ptr(), std::ptr::null_mut(), &mut h), 0);
        let mut buf: PVOID = std::ptr::null_mut();
        assert_eq!(MpsAllocateMessage(1, &mut buf), 0);
        let mut local = CMI_SP_ID { StorageUnit: 0, Sp: 0 };
        let mut peer = local;
        assert_eq!(MpsGetSpId(&mut local, &mut peer), 0);
        let mut info = MPS_SEND_MESSAGE_INFO { ContextHandle: std::ptr::null_mut(), Destination: local, Ptr: buf, Size: 1, SequenceTag: 0 };
        assert_eq!(MpsAsynchronousSend(h, &mut info), Status::STATUS_PENDING.0);
        // The callback is now looping in MpsOpen/MpsClose (or about to).
        assert_eq!(MpsShutdown(), 0);
        assert_eq!(LAST.load(Ordering::SeqCst), Status::STATUS_PIPE_CLOSING.0);
        MpsFreeMessage(buf);
    }
    let _ = std::fs::remove_dir_all(&dir);
}
