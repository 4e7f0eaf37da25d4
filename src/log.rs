//! The library's log (SPEC section 3: every failure leaves a readable reason).
//! Warnings and errors go to stderr by default; `MPS_LOG` sets the level; a
//! client may route lines to its own logger (`MpsSetLogRoutine`).
//!
//! Logging never blocks the thread that logs (a link thread, a callback
//! thread, a client's API call) and never calls out while a library lock is
//! held. A line is formatted on the calling thread and pushed onto a bounded
//! lock-free queue ([`QUEUE_LINES`] lines); a full queue drops the line and
//! counts it. The log's own thread, `mps-log` (started at the first line,
//! detached, never joined), writes the lines to stderr or passes them to the
//! client's routine, with no lock held, and reports the dropped count as soon
//! as it can.
//!
//! Each call site of [`mps_log!`](crate::mps_log) writes at most
//! [`RATE_LIMIT`] lines per [`RATE_INTERVAL`]; the rest are counted without
//! being formatted, and the log thread writes one summary line per interval
//! in which some were suppressed.

use crossbeam_queue::ArrayQueue;
use once_cell::sync::{Lazy, OnceCell};
use parking_lot::{Condvar, Mutex};
use std::fmt::{self, Write as _};
use std::io::Write as _;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::{fence, AtomicBool, AtomicU32, AtomicU64, AtomicU8, Ordering};
use std::sync::Arc;
use std::thread::Thread;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

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
    fn from_u8(v: u8) -> Level {
        match v {
            1 => Level::Error,
            2 => Level::Warn,
            3 => Level::Info,
            4 => Level::Debug,
            _ => Level::Trace,
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

/// A log sink supplied by the embedding program: called once per line, on the
/// log's own thread (`mps-log`), one line at a time, with no library lock held.
pub type Sink = Box<dyn Fn(Level, &str) + Send + Sync>;

/// Lines the queue holds between the threads that log and the log's thread:
/// with lines of at most [`MAX_LINE`] bytes, at most 16 MiB (typically a few
/// hundred KiB). A line logged while it is full is dropped and counted.
pub const QUEUE_LINES: usize = 4096;
/// Longest message kept, in bytes; a longer one is cut (at a character
/// boundary) and ends with `...`.
pub const MAX_LINE: usize = 4096;
/// Lines at most written from one call site per [`RATE_INTERVAL`].
pub const RATE_LIMIT: u32 = 10;
/// The rate limit's interval.
pub const RATE_INTERVAL: Duration = Duration::from_secs(1);
/// How long [`set_sink`] waits for a call of the previous sink in progress
/// on the log's thread to return.
pub const SINK_CHANGE_WAIT: Duration = Duration::from_secs(1);

const UNSET: u32 = u32::MAX;
static THRESHOLD: AtomicU32 = AtomicU32::new(UNSET);

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

/// True when a line at `level` would be written (to skip formatting otherwise).
pub fn enabled(level: Level) -> bool {
    (level as u32) <= threshold()
}

// ---------------------------------------------------------------------------
// The sink.

struct SinkSlot {
    /// Bumped by every `set_sink`.
    generation: u64,
    sink: Option<Arc<Sink>>,
}
static SINK: Mutex<SinkSlot> = Mutex::new(SinkSlot { generation: 0, sink: None });

/// The generation of the sink the log thread is calling right now, if any.
static IN_CALL: Mutex<Option<u64>> = Mutex::new(None);
static CALL_DONE: Condvar = Condvar::new();

/// Routes log lines to `sink`, or back to stderr with `None`. Lines written
/// from now on go to the new destination (lines still queued included).
///
/// When the log thread is inside a call of the previous sink, waits for that
/// call to return, at most [`SINK_CHANGE_WAIT`], so that the previous sink is
/// not running once this returns; false if it still is. From inside the sink
/// itself (on the log thread) returns at once.
pub fn set_sink(sink: Option<Sink>) -> bool {
    let (generation, old) = {
        let mut slot = SINK.lock();
        slot.generation += 1;
        (slot.generation, std::mem::replace(&mut slot.sink, sink.map(Arc::new)))
    };
    // Dropped here, with no lock held (it may be a client closure).
    drop(old);
    if IS_LOG_THREAD.with(|t| t.get()) {
        return true;
    }
    let deadline = Instant::now() + SINK_CHANGE_WAIT;
    let mut call = IN_CALL.lock();
    while matches!(*call, Some(g) if g < generation) {
        if CALL_DONE.wait_until(&mut call, deadline).timed_out() {
            return !matches!(*call, Some(g) if g < generation);
        }
    }
    true
}

// ---------------------------------------------------------------------------
// Rate limiting per call site.

/// One call site of [`mps_log!`](crate::mps_log): its rate limit's state.
/// Each expansion of the macro has its own `static Site`; the check is a few
/// atomic operations on it, with no lock and no allocation.
#[doc(hidden)]
pub struct Site {
    /// Interval number (high 48 bits) and lines admitted in it (low 16 bits).
    window: AtomicU64,
    /// Lines suppressed since the last summary.
    suppressed: AtomicU64,
    /// In [`SITES`] (the log thread reports its suppressed lines).
    registered: AtomicBool,
    /// Level of the last suppressed line.
    level: AtomicU8,
    file: &'static str,
    line: u32,
    template: &'static str,
}

const COUNT_BITS: u32 = 16;
const COUNT_MASK: u64 = (1 << COUNT_BITS) - 1;

/// Call sites that have suppressed a line: registered once each, at their
/// first suppressed line (the only time a site takes this lock).
static SITES: Mutex<Vec<&'static Site>> = Mutex::new(Vec::new());
static EPOCH: Lazy<Instant> = Lazy::new(Instant::now);

fn interval_now() -> u64 {
    let ms = EPOCH.elapsed().as_millis() as u64;
    ms / RATE_INTERVAL.as_millis() as u64
}

impl Site {
    #[doc(hidden)]
    pub const fn new(file: &'static str, line: u32, template: &'static str) -> Site {
        Site {
            window: AtomicU64::new(0),
            suppressed: AtomicU64::new(0),
            registered: AtomicBool::new(false),
            level: AtomicU8::new(Level::Warn as u8),
            file,
            line,
            template,
        }
    }

    /// True when a line from this site may be written now; otherwise counts
    /// it as suppressed (its summary comes from the log thread).
    #[doc(hidden)]
    pub fn admit(&'static self, level: Level) -> bool {
        // Interval numbers start at 1 so that the initial 0 is never current.
        let now = interval_now() + 1;
        let mut cur = self.window.load(Ordering::Relaxed);
        loop {
            let next = if cur >> COUNT_BITS != now {
                (now << COUNT_BITS) | 1
            } else if (cur & COUNT_MASK) < RATE_LIMIT as u64 {
                cur + 1
            } else {
                break;
            };
            match self.window.compare_exchange_weak(cur, next, Ordering::Relaxed, Ordering::Relaxed) {
                Ok(_) => return true,
                Err(seen) => cur = seen,
            }
        }
        self.level.store(level as u8, Ordering::Relaxed);
        if self.suppressed.fetch_add(1, Ordering::Relaxed) == 0 {
            if !self.registered.swap(true, Ordering::AcqRel) {
                SITES.lock().push(self);
            }
            // The first suppressed line since the last summary: the log
            // thread schedules the next summary.
            SUMMARY_DUE.store(true, Ordering::Release);
            ensure_writer();
            wake_writer();
        }
        false
    }
}

// ---------------------------------------------------------------------------
// The queue and the log thread.

enum Entry {
    /// A line: `text` is the logging thread's name, then the message from `msg_at`.
    Line { level: Level, time: SystemTime, text: String, msg_at: usize },
    /// A flush: everything queued before it has been written once it is seen.
    Flush(u64),
}

static QUEUE: Lazy<ArrayQueue<Entry>> = Lazy::new(|| ArrayQueue::new(QUEUE_LINES));
static DROPPED: AtomicU64 = AtomicU64::new(0);
/// Some site suppressed its first line since the last summaries.
static SUMMARY_DUE: AtomicBool = AtomicBool::new(false);
/// The log thread is parked, or about to park (whoever clears it unparks it).
static SLEEPING: AtomicBool = AtomicBool::new(false);
/// The log thread, set by itself when it starts.
static WRITER: OnceCell<Thread> = OnceCell::new();
/// 0: not started, 1: being started, 2: started.
static WRITER_STATE: AtomicU8 = AtomicU8::new(0);

thread_local! {
    static IS_LOG_THREAD: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

/// Flushes: the last ticket handed out, and the last one the log thread saw.
static FLUSH_TICKET: AtomicU64 = AtomicU64::new(0);
static FLUSHED: Mutex<u64> = Mutex::new(0);
static FLUSH_WAITERS: AtomicU32 = AtomicU32::new(0);
static FLUSH_CV: Condvar = Condvar::new();

/// Starts the log thread unless it runs. A failed start (no threads left) is
/// tried again at the next line; the lines wait in the queue meanwhile.
fn ensure_writer() {
    if WRITER_STATE.load(Ordering::Acquire) == 2 {
        return;
    }
    if WRITER_STATE.compare_exchange(0, 1, Ordering::AcqRel, Ordering::Acquire).is_err() {
        return;
    }
    // Detached: the handle is dropped, nothing ever joins the thread, and a
    // process exit does not wait for it.
    match std::thread::Builder::new().name("mps-log".into()).spawn(writer_main) {
        Ok(_) => WRITER_STATE.store(2, Ordering::Release),
        Err(_) => WRITER_STATE.store(0, Ordering::Release),
    }
}

fn wake_writer() {
    // Pairs with the fence in the log thread between its setting SLEEPING
    // and its last look at the queue: either it sees our entry or we see it
    // asleep.
    fence(Ordering::SeqCst);
    if SLEEPING.load(Ordering::Relaxed) && SLEEPING.swap(false, Ordering::AcqRel) {
        if let Some(t) = WRITER.get() {
            t.unpark();
        }
    }
}

fn push(e: Entry) -> Result<(), Entry> {
    ensure_writer();
    let r = QUEUE.push(e);
    if r.is_ok() {
        wake_writer();
    }
    r
}

/// Writes into a String, keeping at most `room` bytes.
struct Capped<'a> {
    s: &'a mut String,
    room: usize,
    cut: bool,
}
impl fmt::Write for Capped<'_> {
    fn write_str(&mut self, t: &str) -> fmt::Result {
        if self.cut {
            return Ok(());
        }
        if t.len() <= self.room {
            self.s.push_str(t);
            self.room -= t.len();
        } else {
            let mut end = self.room;
            while !t.is_char_boundary(end) {
                end -= 1;
            }
            self.s.push_str(&t[..end]);
            self.room = 0;
            self.cut = true;
        }
        Ok(())
    }
}

fn thread_label(out: &mut String) {
    let t = std::thread::current();
    match t.name() {
        Some(n) => out.push_str(n),
        None => {
            // "ThreadId(7)" -> "thread-7"
            let id = format!("{:?}", t.id());
            let digits: String = id.chars().filter(char::is_ascii_digit).collect();
            out.push_str("thread-");
            out.push_str(&digits);
        }
    }
}

fn make_line(level: Level, args: fmt::Arguments<'_>) -> Entry {
    let mut text = String::with_capacity(96);
    thread_label(&mut text);
    let msg_at = text.len();
    let mut c = Capped { s: &mut text, room: MAX_LINE, cut: false };
    let _ = c.write_fmt(args);
    if c.cut {
        text.push_str("...");
    }
    // One line is one line: a control character (a newline from a peer's
    // text, say) would let a message forge the lines after it.
    if text[msg_at..].bytes().any(|b| b.is_ascii_control() && b != b'\t') {
        let clean: String = text[msg_at..].chars().map(|ch| if ch.is_ascii_control() && ch != '\t' { ' ' } else { ch }).collect();
        text.truncate(msg_at);
        text.push_str(&clean);
    }
    Entry::Line { level, time: SystemTime::now(), text, msg_at }
}

/// Writes one line, not rate-limited (the [`mps_log!`](crate::mps_log) macro
/// checks its call site's limit first). Never blocks: a line that finds the
/// queue full is dropped and counted.
#[doc(hidden)]
pub fn write(level: Level, args: fmt::Arguments<'_>) {
    if !enabled(level) {
        return;
    }
    if QUEUE.is_full() {
        DROPPED.fetch_add(1, Ordering::Relaxed);
        ensure_writer();
        wake_writer();
        return;
    }
    if push(make_line(level, args)).is_err() {
        DROPPED.fetch_add(1, Ordering::Relaxed);
    }
}

/// Waits until every line logged before the call has been written (and the
/// lines suppressed so far and the dropped count reported), at most
/// `timeout`; false if that did not happen in time. From the log thread (a
/// sink that flushes) returns false at once.
pub fn flush(timeout: Duration) -> bool {
    if IS_LOG_THREAD.with(|t| t.get()) {
        return false;
    }
    let deadline = Instant::now() + timeout;
    let ticket = FLUSH_TICKET.fetch_add(1, Ordering::AcqRel) + 1;
    FLUSH_WAITERS.fetch_add(1, Ordering::AcqRel);
    let done = (|| {
        let mut marker = Entry::Flush(ticket);
        loop {
            match push(marker) {
                Ok(()) => break,
                Err(m) => marker = m,
            }
            if Instant::now() >= deadline {
                return false;
            }
            // Full: wait for the log thread to take some lines (it notifies
            // under FLUSHED after taking one while a flush waits).
            let mut f = FLUSHED.lock();
            if QUEUE.is_full() {
                let _ = FLUSH_CV.wait_until(&mut f, deadline);
            }
        }
        let mut f = FLUSHED.lock();
        while *f < ticket {
            if FLUSH_CV.wait_until(&mut f, deadline).timed_out() {
                return *f >= ticket;
            }
        }
        true
    })();
    FLUSH_WAITERS.fetch_sub(1, Ordering::AcqRel);
    done
}

fn writer_main() {
    IS_LOG_THREAD.with(|t| t.set(true));
    let _ = WRITER.set(std::thread::current());
    // Nothing here should panic, but if something does the log goes on.
    loop {
        if let Err(p) = catch_unwind(AssertUnwindSafe(writer_loop)) {
            // Straight to stderr: this thread is the one that writes the log.
            let line = format!("libmps error: thread mps-log panicked: {}; it goes on, and lines may be lost\n", crate::unwind::message(&*p));
            let _ = std::io::stderr().write_all(line.as_bytes());
        }
    }
}

struct Writer {
    buf: String,
    /// When the next summaries are due, while some site suppresses lines.
    next_summary: Option<Instant>,
    last_summary: Instant,
}

fn writer_loop() {
    let mut w = Writer { buf: String::with_capacity(256), next_summary: None, last_summary: Instant::now() };
    loop {
        let mut flushed = None;
        let mut took = false;
        loop {
            w.report_dropped();
            match QUEUE.pop() {
                Some(Entry::Line { level, time, text, msg_at }) => {
                    took = true;
                    w.emit(level, time, &text[..msg_at], &text[msg_at..]);
                }
                Some(Entry::Flush(t)) => {
                    took = true;
                    w.summaries();
                    w.report_dropped();
                    flushed = Some(flushed.map_or(t, |f: u64| f.max(t)));
                }
                None => break,
            }
            if took && FLUSH_WAITERS.load(Ordering::Acquire) > 0 {
                break;
            }
        }
        if took && FLUSH_WAITERS.load(Ordering::Acquire) > 0 {
            let mut f = FLUSHED.lock();
            if let Some(t) = flushed {
                *f = (*f).max(t);
            }
            FLUSH_CV.notify_all();
            continue;
        }
        if SUMMARY_DUE.swap(false, Ordering::AcqRel) && w.next_summary.is_none() {
            w.last_summary = Instant::now();
            w.next_summary = Some(w.last_summary + RATE_INTERVAL);
        }
        if let Some(at) = w.next_summary {
            if Instant::now() >= at {
                let any = w.summaries();
                w.next_summary = if any { Some(Instant::now() + RATE_INTERVAL) } else { None };
                continue;
            }
        }
        // Nothing to write: sleep until a line comes or a summary is due.
        SLEEPING.store(true, Ordering::Relaxed);
        fence(Ordering::SeqCst);
        if !QUEUE.is_empty() || DROPPED.load(Ordering::Relaxed) > 0 || SUMMARY_DUE.load(Ordering::Acquire) {
            SLEEPING.store(false, Ordering::Relaxed);
            continue;
        }
        match w.next_summary {
            Some(at) => std::thread::park_timeout(at.saturating_duration_since(Instant::now())),
            None => std::thread::park(),
        }
        SLEEPING.store(false, Ordering::Relaxed);
    }
}

impl Writer {
    fn report_dropped(&mut self) {
        if DROPPED.load(Ordering::Relaxed) == 0 {
            return;
        }
        let n = DROPPED.swap(0, Ordering::AcqRel);
        if n > 0 && threshold() > 0 {
            let msg = format!("{n} log lines dropped (the log could not keep up)");
            self.emit(Level::Warn, SystemTime::now(), "mps-log", &msg);
        }
    }

    /// Writes a summary for every site that suppressed lines since the last
    /// ones; true if there was any.
    fn summaries(&mut self) -> bool {
        let now = Instant::now();
        let secs = now.duration_since(self.last_summary).as_secs_f64();
        self.last_summary = now;
        let due: Vec<(&'static Site, u64)> = SITES
            .lock()
            .iter()
            .filter_map(|s| match s.suppressed.swap(0, Ordering::AcqRel) {
                0 => None,
                n => Some((*s, n)),
            })
            .collect();
        for (s, n) in &due {
            let level = Level::from_u8(s.level.load(Ordering::Relaxed));
            let msg = if s.template.is_empty() {
                format!("{n} similar lines suppressed in the last {secs:.1} s ({}:{})", s.file, s.line)
            } else {
                format!("{n} similar lines suppressed in the last {secs:.1} s ({}:{} \"{}\")", s.file, s.line, s.template)
            };
            self.emit(level, SystemTime::now(), "mps-log", &msg);
        }
        !due.is_empty()
    }

    /// One line to the client's sink (called with no lock held) or stderr.
    fn emit(&mut self, level: Level, time: SystemTime, thread: &str, msg: &str) {
        let (generation, sink) = {
            let slot = SINK.lock();
            (slot.generation, slot.sink.clone())
        };
        match sink {
            Some(f) => {
                *IN_CALL.lock() = Some(generation);
                let r = catch_unwind(AssertUnwindSafe(|| f(level, msg)));
                drop(f);
                *IN_CALL.lock() = None;
                CALL_DONE.notify_all();
                if r.is_err() {
                    let _ = std::io::stderr().write_all(b"libmps error: the log routine panicked; its line is lost\n");
                }
            }
            None => {
                self.buf.clear();
                timestamp(&mut self.buf, time);
                let _ = writeln!(self.buf, " libmps[{}] {thread} {}: {msg}", std::process::id(), level.label());
                // Blocks this thread only, when nobody reads stderr.
                let _ = std::io::stderr().write_all(self.buf.as_bytes());
            }
        }
    }
}

/// `time` as ISO-8601 UTC with milliseconds: `2026-12-02T08:15:03.123Z`.
fn timestamp(out: &mut String, time: SystemTime) {
    let d = time.duration_since(UNIX_EPOCH).unwrap_or_default();
    let secs = d.as_secs();
    let (y, m, day) = civil_from_days((secs / 86_400) as i64);
    let s = secs % 86_400;
    let _ = write!(out, "{y:04}-{m:02}-{day:02}T{:02}:{:02}:{:02}.{:03}Z", s / 3600, s / 60 % 60, s % 60, d.subsec_millis());
}

/// The proleptic Gregorian date of a day count from 1970-01-01 (H. Hinnant's
/// `civil_from_days`).
fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let y = yoe + era * 400 + i64::from(m <= 2);
    (y, m, d)
}

/// `mps_log!(Level::Warn, "...", args)`: one line to the library's log, at
/// most [`RATE_LIMIT`] a [`RATE_INTERVAL`] from one call site (decided before
/// the line is formatted).
#[macro_export]
#[doc(hidden)]
macro_rules! mps_log {
    ($lvl:expr, $($arg:tt)+) => {{
        static SITE: $crate::log::Site = $crate::log::Site::new(file!(), line!(), $crate::__mps_log_template!($($arg)+));
        let lvl: $crate::log::Level = $lvl;
        if $crate::log::enabled(lvl) && SITE.admit(lvl) {
            $crate::log::write(lvl, format_args!($($arg)+))
        }
    }};
}
pub(crate) use mps_log as log;

/// The format string of a `mps_log!` call, for its summary line.
#[macro_export]
#[doc(hidden)]
macro_rules! __mps_log_template {
    ($fmt:expr $(, $($rest:tt)*)?) => {
        $fmt
    };
}

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

    #[test]
    fn timestamps_are_utc_iso_8601_with_milliseconds() {
        let at = |secs: u64, ms: u64| {
            let mut s = String::new();
            timestamp(&mut s, UNIX_EPOCH + Duration::from_millis(secs * 1000 + ms));
            s
        };
        assert_eq!(at(0, 0), "1970-01-01T00:00:00.000Z");
        assert_eq!(at(951_782_400, 5), "2000-02-29T00:00:00.005Z");
        assert_eq!(at(1_798_791_303, 123), "2027-01-01T08:15:03.123Z");
        assert_eq!(at(1_709_251_199, 999), "2024-02-29T23:59:59.999Z");
        assert_eq!(at(4_102_444_800, 0), "2100-01-01T00:00:00.000Z");
    }

    #[test]
    fn a_site_admits_its_limit_per_interval_then_counts() {
        static S: Site = Site::new("here", 1, "x");
        // Far from an interval's end, so that the loop stays in one interval
        // (it takes microseconds; the interval is a second).
        let start = interval_now();
        let mut admitted = 0;
        for _ in 0..1000 {
            if S.admit(Level::Debug) {
                admitted += 1;
            }
        }
        if interval_now() == start {
            assert_eq!(admitted, RATE_LIMIT);
            assert_eq!(S.suppressed.load(Ordering::Relaxed), 1000 - RATE_LIMIT as u64);
        } else {
            assert!(admitted <= 2 * RATE_LIMIT);
            assert_eq!(S.suppressed.load(Ordering::Relaxed), 1000 - admitted as u64);
        }
        assert!(SITES.lock().iter().any(|s| std::ptr::eq(*s, &S)), "registered for its summary");
    }

    #[test]
    fn long_lines_are_cut_and_control_characters_replaced() {
        let long = "é".repeat(MAX_LINE);
        match make_line(Level::Warn, format_args!("{long}")) {
            Entry::Line { text, msg_at, .. } => {
                let msg = &text[msg_at..];
                assert!(msg.len() <= MAX_LINE + 3 && msg.ends_with("..."), "{}", msg.len());
            }
            Entry::Flush(_) => unreachable!(),
        }
        match make_line(Level::Warn, format_args!("a\nb\rc\td")) {
            Entry::Line { text, msg_at, .. } => assert_eq!(&text[msg_at..], "a b c\td"),
            Entry::Flush(_) => unreachable!(),
        }
    }
}
