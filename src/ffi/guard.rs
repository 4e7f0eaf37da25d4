//! The C boundary's shared helpers: the panic guard, NULL checks, and the
//! process's one SP instance that the C API talks to.

use crate::config::Config;
use crate::log::{log, Level};
use crate::mps::Mps;
use crate::status::Status;
use parking_lot::{Condvar, Mutex, RwLock};

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

/// Where the process's one SP is in its life (SPEC 6; README "Configuration").
enum Life {
    /// No SP yet and no `MpsShutdown`: the first call initializes from the
    /// environment (SPEC 6).
    Unstarted,
    /// Running.
    Running(Mps),
    /// `MpsShutdown` is tearing it down: calls meanwhile (from callbacks still
    /// running, or other threads) get `STATUS_PIPE_CLOSING` instead of
    /// waiting on the teardown that may be waiting on them; a second
    /// `MpsShutdown` waits for the teardown to finish.
    Stopping,
    /// `MpsShutdown` has finished: only `MpsInitialize` starts an SP again, so
    /// that a late call from a stray thread never brings a storage SP back on
    /// the network.
    Stopped,
}

static LIFE: RwLock<Life> = RwLock::new(Life::Unstarted);
/// Serializes the changes of `LIFE` (and the wait for `Stopped`).
static INIT: Mutex<()> = Mutex::new(());
/// Signalled (under `INIT`) when a teardown has finished.
static STOPPED: Condvar = Condvar::new();

/// What a routine that found no live SP is answered.
#[derive(Clone, Copy)]
pub(crate) enum Need {
    /// It takes no handle (`MpsOpen`, `MpsGetSpId`, `MpsWaitForPeer`,
    /// `MpsQuerySession`): `STATUS_DEVICE_NOT_READY`.
    Sp,
    /// It acts on a handle, stale anyway once the SP is gone:
    /// `STATUS_INVALID_HANDLE`.
    Handle,
}

fn closing(routine: &str) -> Status {
    log!(Level::Warn, "{routine} refused: MpsShutdown is in progress");
    Status::STATUS_PIPE_CLOSING
}

fn not_running(routine: &str, need: Need) -> Status {
    log!(Level::Warn, "{routine} refused: the SP was shut down by MpsShutdown and is not running; call MpsInitialize to start it again");
    match need {
        Need::Sp => Status::STATUS_DEVICE_NOT_READY,
        Need::Handle => Status::STATUS_INVALID_HANDLE,
    }
}

/// The process's SP for `routine`; initialized from the environment on the
/// first call of a process that has not called `MpsShutdown` (SPEC 6).
pub(crate) fn instance(routine: &str, need: Need) -> Result<Mps, Status> {
    match &*LIFE.read() {
        Life::Running(m) => return Ok(m.clone()),
        Life::Stopping => return Err(closing(routine)),
        Life::Stopped => return Err(not_running(routine, need)),
        Life::Unstarted => {}
    }
    let _once = INIT.lock();
    match &*LIFE.read() {
        Life::Running(m) => return Ok(m.clone()),
        Life::Stopping => return Err(closing(routine)),
        Life::Stopped => return Err(not_running(routine, need)),
        Life::Unstarted => {}
    }
    let m = Mps::from_env().map_err(|e| {
        log!(Level::Error, "cannot initialize from the environment: {e}");
        Status::STATUS_DEVICE_CONFIGURATION_ERROR
    })?;
    *LIFE.write() = Life::Running(m.clone());
    Ok(m)
}

/// Explicit initialization (`MpsInitialize`). A refused one changes nothing:
/// before any `MpsShutdown` the first call still initializes from the
/// environment, after one the SP stays down.
pub(crate) fn initialize(cfg: Result<Config, crate::config::ConfigError>) -> Result<(), Status> {
    let _once = INIT.lock();
    match &*LIFE.read() {
        Life::Stopping => return Err(closing("MpsInitialize")),
        Life::Running(_) => {
            log!(Level::Warn, "MpsInitialize refused: an SP is already running in this process (MpsShutdown first)");
            return Err(Status::STATUS_OBJECT_NAME_COLLISION);
        }
        Life::Unstarted | Life::Stopped => {}
    }
    let cfg = cfg.map_err(|e| {
        log!(Level::Error, "configuration refused: {e}");
        Status::STATUS_DEVICE_CONFIGURATION_ERROR
    })?;
    let m = Mps::start(cfg).map_err(|e| {
        log!(Level::Error, "cannot start: {e}");
        Status::STATUS_DEVICE_CONFIGURATION_ERROR
    })?;
    *LIFE.write() = Life::Running(m);
    Ok(())
}

/// Marks the teardown finished and wakes the `MpsShutdown`s waiting for it,
/// on return and on unwind alike (a caught panic must not strand them).
struct Finished;

impl Drop for Finished {
    fn drop(&mut self) {
        let _once = INIT.lock();
        *LIFE.write() = Life::Stopped;
        STOPPED.notify_all();
    }
}

/// Explicit teardown (`MpsShutdown`). One concurrent with another waits until
/// that one's teardown has finished (bounded as the teardown is), then
/// succeeds; with no SP it succeeds at once. Either way, afterwards only
/// `MpsInitialize` starts an SP.
pub(crate) fn shutdown() -> Result<(), Status> {
    if crate::mps::in_callback() {
        log!(Level::Warn, "MpsShutdown refused: called from inside a callback");
        return Err(Status::STATUS_INVALID_PARAMETER);
    }
    let mut said = false;
    let mut once = INIT.lock();
    let m = loop {
        let mut life = LIFE.write();
        match std::mem::replace(&mut *life, Life::Stopping) {
            Life::Running(m) => break m,
            Life::Unstarted | Life::Stopped => {
                *life = Life::Stopped;
                return Ok(());
            }
            Life::Stopping if !said => {
                // Logged with no lock held (a log routine may call the API).
                drop(life);
                drop(once);
                log!(Level::Info, "MpsShutdown: another MpsShutdown is tearing the SP down; waiting for it to finish");
                said = true;
                once = INIT.lock();
            }
            Life::Stopping => {
                drop(life);
                STOPPED.wait(&mut once);
            }
        }
    };
    drop(once);
    // Not under INIT: a callback still running may call the API, and the
    // teardown joins the thread it runs on.
    let _finished = Finished;
    m.shutdown()
}
