//! The C boundary's shared helpers: the panic guard, NULL checks, and the
//! process's one SP instance that the C API talks to.

use crate::config::Config;
use crate::log::{log, Level};
use crate::mps::Mps;
use crate::status::Status;
use parking_lot::{Mutex, RwLock};
use std::sync::atomic::{AtomicBool, Ordering};

/// Runs an extern function's body; a panic becomes `STATUS_INTERNAL_ERROR`
/// (with a log line) instead of unwinding into C (SPEC: no panic crosses the boundary).
macro_rules! guard {
    ($name:literal, $body:block) => {{
        match std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| -> $crate::ffi::types::NTSTATUS { $body })) {
            Ok(s) => s,
            Err(_) => {
                $crate::log::log!($crate::log::Level::Error, concat!($name, ": internal error (a panic was caught); see the message above"));
                $crate::status::Status::STATUS_INTERNAL_ERROR.0
            }
        }
    }};
}
pub(crate) use guard;

/// Early return with `STATUS_INVALID_PARAMETER` when a pointer argument is NULL,
/// naming the routine and the parameter in the log.
macro_rules! require_non_null {
    ($routine:literal, $p:ident) => {
        if $p.is_null() {
            $crate::log::log!($crate::log::Level::Warn, concat!($routine, ": ", stringify!($p), " is NULL"));
            return $crate::status::Status::STATUS_INVALID_PARAMETER.0;
        }
    };
}
pub(crate) use require_non_null;

/// Turns a Rust `Result` into the routine's NTSTATUS.
pub(crate) fn status_of(r: Result<(), Status>) -> i32 {
    match r {
        Ok(()) => Status::STATUS_SUCCESS.0,
        Err(s) => s.0,
    }
}

static GLOBAL: RwLock<Option<Mps>> = RwLock::new(None);
static INIT: Mutex<()> = Mutex::new(());
/// `MpsShutdown` is tearing the SP down: calls meanwhile (from callbacks still
/// running, or other threads) get `STATUS_PIPE_CLOSING` instead of starting a
/// new SP, or waiting on the teardown that is waiting on them.
static SHUTTING_DOWN: AtomicBool = AtomicBool::new(false);

fn closing() -> Status {
    log!(Level::Warn, "refused: MpsShutdown is in progress");
    Status::STATUS_PIPE_CLOSING
}

/// The process's SP, initialized from the environment on first use (SPEC 6).
pub(crate) fn instance() -> Result<Mps, Status> {
    if let Some(m) = GLOBAL.read().as_ref() {
        return Ok(m.clone());
    }
    if SHUTTING_DOWN.load(Ordering::Acquire) {
        return Err(closing());
    }
    let _once = INIT.lock();
    if let Some(m) = GLOBAL.read().as_ref() {
        return Ok(m.clone());
    }
    if SHUTTING_DOWN.load(Ordering::Acquire) {
        return Err(closing());
    }
    let m = Mps::from_env().map_err(|e| {
        log!(Level::Error, "cannot initialize from the environment: {e}");
        Status::STATUS_DEVICE_CONFIGURATION_ERROR
    })?;
    *GLOBAL.write() = Some(m.clone());
    Ok(m)
}

/// Explicit initialization (`MpsInitialize`).
pub(crate) fn initialize(cfg: Result<Config, crate::config::ConfigError>) -> Result<(), Status> {
    let _once = INIT.lock();
    if SHUTTING_DOWN.load(Ordering::Acquire) {
        return Err(closing());
    }
    if GLOBAL.read().is_some() {
        log!(Level::Warn, "MpsInitialize refused: an SP is already running in this process (MpsShutdown first)");
        return Err(Status::STATUS_OBJECT_NAME_COLLISION);
    }
    let cfg = cfg.map_err(|e| {
        log!(Level::Error, "configuration refused: {e}");
        Status::STATUS_DEVICE_CONFIGURATION_ERROR
    })?;
    let m = Mps::start(cfg).map_err(|e| {
        log!(Level::Error, "cannot start: {e}");
        Status::STATUS_DEVICE_CONFIGURATION_ERROR
    })?;
    *GLOBAL.write() = Some(m);
    Ok(())
}

/// Explicit teardown (`MpsShutdown`).
pub(crate) fn shutdown() -> Result<(), Status> {
    if crate::mps::in_callback() {
        log!(Level::Warn, "MpsShutdown refused: called from inside a callback");
        return Err(Status::STATUS_INVALID_PARAMETER);
    }
    let m = {
        let _once = INIT.lock();
        let m = GLOBAL.write().take();
        if m.is_some() {
            SHUTTING_DOWN.store(true, Ordering::Release);
        }
        m
    };
    // Not under INIT: a callback still running may call the API, and the
    // teardown joins the thread it runs on.
    match m {
        Some(m) => {
            let r = m.shutdown();
            SHUTTING_DOWN.store(false, Ordering::Release);
            r
        }
        None => Ok(()),
    }
}
