//! The library's log (SPEC section 3: every failure leaves a readable reason).
//! Warnings and errors go to stderr by default; `MPS_LOG` sets the level; a
//! client may route lines to its own logger (`MpsSetLogRoutine`).

use parking_lot::RwLock;
use std::fmt;
use std::io::Write;
use std::sync::atomic::{AtomicU32, Ordering};

/// Severity of a log line; the numbers are the C API's `MPS_LOG_*` values.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
#[repr(u32)]
pub enum Level {
    /// Something failed: a link lost, a bad frame, a bad configuration.
    Error = 1,
    /// A refused call or a recoverable problem.
    Warn = 2,
    /// Links up and down, sessions opened and closed.
    Info = 3,
    /// Per-operation detail.
    Debug = 4,
    /// Per-frame detail.
    Trace = 5,
}

impl Level {
    fn label(self) -> &'static str {
        match self {
            Level::Error => "error",
            Level::Warn => "warn",
            Level::Info => "info",
            Level::Debug => "debug",
            Level::Trace => "trace",
        }
    }
    /// Parses a level name as accepted in `MPS_LOG` (`off`, `error`, ... `trace`, or 0-5).
    pub fn parse_threshold(s: &str) -> Option<u32> {
        Some(match s.trim().to_ascii_lowercase().as_str() {
            "off" | "none" | "0" => 0,
            "error" | "1" => 1,
            "warn" | "warning" | "2" => 2,
            "info" | "3" => 3,
            "debug" | "4" => 4,
            "trace" | "5" => 5,
            _ => return None,
        })
    }
}

/// A log sink supplied by the embedding program: called once per line, from any thread.
pub type Sink = Box<dyn Fn(Level, &str) + Send + Sync>;

const UNSET: u32 = u32::MAX;
static THRESHOLD: AtomicU32 = AtomicU32::new(UNSET);
static SINK: RwLock<Option<Sink>> = RwLock::new(None);

fn threshold() -> u32 {
    let t = THRESHOLD.load(Ordering::Relaxed);
    if t != UNSET {
        return t;
    }
    let from_env = std::env::var("MPS_LOG")
        .ok()
        .and_then(|v| Level::parse_threshold(&v))
        .unwrap_or(Level::Warn as u32);
    // Another thread may have set an explicit level meanwhile: keep theirs.
    let _ = THRESHOLD.compare_exchange(UNSET, from_env, Ordering::Relaxed, Ordering::Relaxed);
    THRESHOLD.load(Ordering::Relaxed)
}

/// Sets the level explicitly (0 = off .. 5 = trace), overriding `MPS_LOG`.
pub fn set_threshold(level: u32) {
    THRESHOLD.store(level.min(5), Ordering::Relaxed);
}

/// Routes log lines to `sink`, or back to stderr with `None`.
pub fn set_sink(sink: Option<Sink>) {
    *SINK.write() = sink;
}

/// True when a line at `level` would be written (to skip formatting otherwise).
pub fn enabled(level: Level) -> bool {
    (level as u32) <= threshold()
}

#[doc(hidden)]
pub fn write(level: Level, args: fmt::Arguments<'_>) {
    if !enabled(level) {
        return;
    }
    let line = args.to_string();
    let sink = SINK.read();
    match sink.as_ref() {
        Some(f) => f(level, &line),
        None => {
            let _ = writeln!(std::io::stderr().lock(), "libmps {}: {}", level.label(), line);
        }
    }
}

/// Lines at most written from one call site per [`RATE_INTERVAL`].
pub const RATE_LIMIT: u32 = 10;
/// The rate limit's interval.
pub const RATE_INTERVAL: std::time::Duration = std::time::Duration::from_secs(1);

/// Waits until the lines logged so far have been written; false after `timeout`.
/// (Lines are written inline today, so there is nothing to wait for.)
pub fn flush(_timeout: std::time::Duration) -> bool {
    true
}

/// `mps_log!(Level::Warn, "...", args)`: one line to the library's log.
#[macro_export]
#[doc(hidden)]
macro_rules! mps_log {
    ($lvl:expr, $($arg:tt)*) => {
        if $crate::log::enabled($lvl) {
            $crate::log::write($lvl, format_args!($($arg)*))
        }
    };
}
pub(crate) use mps_log as log;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_levels() {
        assert_eq!(Level::parse_threshold("WARN"), Some(2));
        assert_eq!(Level::parse_threshold("off"), Some(0));
        assert_eq!(Level::parse_threshold("5"), Some(5));
        assert_eq!(Level::parse_threshold("loud"), None);
    }
}
