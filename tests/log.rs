//! The library's log (issue 8, defect 11): logging never blocks a link or a
//! caller, the client's routine runs with no library lock held, repeated
//! lines are rate-limited, and stderr lines carry a timestamp, pid and thread.
//!
//! The log's routine and level are process-wide, and a regression here is a
//! hang: so every scenario runs in a child process (this test binary run
//! again with `MPS_LOG_TEST_CHILD` naming the scenario), and the parent has
//! the watchdog. A child that hangs is killed and its test fails with what it
//! printed.

mod common;

use mps::ffi::*;
use mps::log::{self, Level};
use std::ffi::CStr;
use std::io::Read;
use std::os::raw::c_char;
use std::process::{Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicI32, AtomicU32, AtomicUsize, Ordering};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

const CHILD_ENV: &str = "MPS_LOG_TEST_CHILD";
/// The parent's bound on one child (a slow shared machine included).
const CHILD_LIMIT: Duration = Duration::from_secs(60);
/// A child's bound on the step it watches.
const STEP_LIMIT: Duration = Duration::from_secs(30);

fn is_child(name: &str) -> bool {
    std::env::var(CHILD_ENV).as_deref() == Ok(name)
}

struct ChildRun {
    status: ExitStatus,
    pid: u32,
    stdout: String,
    stderr: String,
}

/// Runs scenario `name` (the test of that name) in a child process. With
/// `read_stderr` false the child's stderr is a pipe nobody reads (kept open
/// until the child has exited). Fails the test if the child is not done
/// within CHILD_LIMIT.
fn run_child(name: &str, read_stderr: bool) -> ChildRun {
    let exe = std::env::current_exe().expect("test binary path");
    let mut child = Command::new(exe)
        .args([name, "--exact", "--nocapture", "--test-threads=1"])
        .env(CHILD_ENV, name)
        .env_remove("MPS_LOG")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn the child");
    let pid = child.id();
    let (tx, rx) = mpsc::channel::<(bool, String)>();
    let mut out = child.stdout.take().unwrap();
    let t = tx.clone();
    std::thread::spawn(move || {
        let mut s = String::new();
        let _ = out.read_to_string(&mut s);
        let _ = t.send((false, s));
    });
    // Held, unread, until the child has exited.
    let mut unread = None;
    let mut err = child.stderr.take().unwrap();
    if read_stderr {
        std::thread::spawn(move || {
            let mut b = Vec::new();
            let _ = err.read_to_end(&mut b);
            let _ = tx.send((true, String::from_utf8_lossy(&b).into_owned()));
        });
    } else {
        unread = Some(err);
        drop(tx);
    }
    // The child's stdout (and stderr, when read) reach end of file when it exits.
    let deadline = Instant::now() + CHILD_LIMIT;
    let (mut stdout, mut stderr) = (None, None);
    while stdout.is_none() || (read_stderr && stderr.is_none()) {
        let left = deadline.saturating_duration_since(Instant::now());
        match rx.recv_timeout(left) {
            Ok((true, s)) => stderr = Some(s),
            Ok((false, s)) => stdout = Some(s),
            Err(_) => {
                let _ = child.kill();
                let _ = child.wait();
                panic!(
                    "{name}: the child process did not finish within {CHILD_LIMIT:?} (a hang); it was killed.\n\
                     stdout so far: {}",
                    stdout.unwrap_or_default()
                );
            }
        }
    }
    let status = child.wait().expect("wait for the child");
    drop(unread);
    ChildRun { status, pid, stdout: stdout.unwrap_or_default(), stderr: stderr.unwrap_or_default() }
}

fn expect_success(name: &str, r: &ChildRun) {
    assert!(r.status.success(), "{name}: the child failed ({}).\nstdout:\n{}\nstderr:\n{}", r.status, r.stdout, tail(&r.stderr, 40));
}

fn tail(s: &str, lines: usize) -> String {
    let v: Vec<&str> = s.lines().collect();
    v[v.len().saturating_sub(lines)..].join("\n")
}

/// Runs `f` on a thread and fails with `what` if it has not returned within STEP_LIMIT.
fn within<T: Send + 'static>(what: &str, f: impl FnOnce() -> T + Send + 'static) -> T {
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(f());
    });
    match rx.recv_timeout(STEP_LIMIT) {
        Ok(v) => v,
        Err(_) => panic!("HANG: {what} did not return within {STEP_LIMIT:?}"),
    }
}

/// The lines a Rust sink received, and a way to block it.
#[derive(Clone, Default)]
struct Collected(Arc<Mutex<Vec<(Level, String)>>>);
impl Collected {
    fn lines(&self) -> Vec<(Level, String)> {
        self.0.lock().unwrap().clone()
    }
}

/// The number before `marker` in `line` ("123 similar lines suppressed ...").
fn count_before(line: &str, marker: &str) -> Option<u64> {
    let at = line.find(marker)?;
    line[..at].split_whitespace().last()?.parse().ok()
}
const SUPPRESSED: &str = " similar lines suppressed in the last ";
const DROPPED: &str = " log lines dropped (the log could not keep up)";

// ---------------------------------------------------------------------------
// (a) A routine that calls the API from inside itself.

static HANDLE: AtomicUsize = AtomicUsize::new(0);
static CALLS: AtomicU32 = AtomicU32::new(0);
static SET_ROUTINE: AtomicI32 = AtomicI32::new(-1);
static SET_LEVEL: AtomicI32 = AtomicI32::new(-1);
static QUERY: AtomicI32 = AtomicI32::new(-1);
static QUEUED: AtomicU32 = AtomicU32::new(u32::MAX);
static SEEN_REJECT: AtomicU32 = AtomicU32::new(0);

unsafe extern "C" fn reentrant_routine(level: ULONG, line: *const c_char, ctx: PVOID) {
    CALLS.fetch_add(1, Ordering::SeqCst);
    let text = CStr::from_ptr(line).to_string_lossy();
    SET_LEVEL.store(MpsSetLogLevel(MPS_LOG_WARN), Ordering::SeqCst);
    SET_ROUTINE.store(MpsSetLogRoutine(Some(reentrant_routine), ctx), Ordering::SeqCst);
    let h = HANDLE.load(Ordering::SeqCst);
    if h != 0 && text.contains("session_queue_depth") {
        let mut info = MPS_SESSION_INFO::default();
        QUERY.store(MpsQuerySession(h as MPS_HANDLE, &mut info), Ordering::SeqCst);
        QUEUED.store(info.QueuedMessages, Ordering::SeqCst);
        SEEN_REJECT.fetch_add(1, Ordering::SeqCst);
    }
    let _ = level;
}

#[test]
fn a_routine_that_calls_the_api_from_inside_itself_does_not_deadlock() {
    const NAME: &str = "a_routine_that_calls_the_api_from_inside_itself_does_not_deadlock";
    if !is_child(NAME) {
        let r = run_child(NAME, true);
        expect_success(NAME, &r);
        return;
    }
    // A one-message session queue: the second send to it is refused with a
    // warning logged while the library holds the session's lock, and the
    // routine then asks MpsQuerySession about that very session.
    let dir = std::env::temp_dir().join(format!("mps-log-a-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let cfg = dir.join("mps.toml");
    std::fs::write(
        &cfg,
        format!(
            "sp = \"0.A\"\nlisten = \"unix:{d}/a.sock\"\n[[peer]]\nsp = \"0.B\"\naddress = \"unix:{d}/b.sock\"\n\
             [limits]\nsession_queue_depth = 1\n",
            d = dir.display()
        ),
    )
    .unwrap();
    let path = std::ffi::CString::new(cfg.to_str().unwrap()).unwrap();
    unsafe {
        assert_eq!(MpsSetLogLevel(MPS_LOG_WARN), 0);
        assert_eq!(MpsSetLogRoutine(Some(reentrant_routine), std::ptr::null_mut()), 0);
        assert_eq!(MpsInitialize(path.as_ptr()), 0, "MpsInitialize");
    }
    let st = within("the sends whose refusal is logged (with the routine calling back into the API)", || unsafe {
        let mut name: Vec<WCHAR> = "Full".chars().map(|c| c as WCHAR).chain([0]).collect();
        let mut h: MPS_HANDLE = std::ptr::null_mut();
        assert_eq!(MpsOpen(None, 0, 0, name.as_mut_ptr(), std::ptr::null_mut(), &mut h), 0);
        HANDLE.store(h as usize, Ordering::SeqCst);
        let mut local = CMI_SP_ID { StorageUnit: 0, Sp: 0 };
        let mut peer = local;
        assert_eq!(MpsGetSpId(&mut local, &mut peer), 0);
        let mut buf: PVOID = std::ptr::null_mut();
        assert_eq!(MpsAllocateMessage(8, &mut buf), 0);
        let mut info = MPS_SEND_MESSAGE_INFO { ContextHandle: std::ptr::null_mut(), Destination: local, Ptr: buf, Size: 8, SequenceTag: 0 };
        let first = MpsSynchronousSend(h, &mut info);
        let second = MpsSynchronousSend(h, &mut info);
        // Also a refusal logged with no lock held.
        let mut bad = MPS_SEND_MESSAGE_INFO { Size: 1 << 30, ..info };
        let third = MpsSynchronousSend(h, &mut bad);
        (first, second, third)
    });
    assert_eq!(st.0, 0, "the first send is queued");
    assert_eq!(st.1, mps::Status::STATUS_INSUFFICIENT_RESOURCES.0, "the second is refused: the queue holds one");
    assert_ne!(st.2, 0, "an oversized send is refused");
    assert!(within("log::flush", || log::flush(Duration::from_secs(20))), "the log was flushed");
    assert!(CALLS.load(Ordering::SeqCst) >= 2, "the routine was called");
    assert_eq!(SEEN_REJECT.load(Ordering::SeqCst), 1, "the routine saw the refusal");
    assert_eq!(SET_LEVEL.load(Ordering::SeqCst), 0, "MpsSetLogLevel from the routine");
    assert_eq!(SET_ROUTINE.load(Ordering::SeqCst), 0, "MpsSetLogRoutine from the routine");
    assert_eq!(QUERY.load(Ordering::SeqCst), 0, "MpsQuerySession from the routine");
    assert_eq!(QUEUED.load(Ordering::SeqCst), 1, "the session holds its one message");
    assert_eq!(within("MpsShutdown", MpsShutdown_), 0);
    assert_eq!(MpsSetLogRoutine(None, std::ptr::null_mut()), 0);
    let _ = std::fs::remove_dir_all(&dir);
}

#[allow(non_snake_case)]
fn MpsShutdown_() -> NTSTATUS {
    MpsShutdown()
}

// ---------------------------------------------------------------------------
// (b) A routine that blocks: nobody who logs waits for it.

#[test]
fn a_blocked_routine_blocks_no_caller_and_the_dropped_lines_are_counted() {
    const NAME: &str = "a_blocked_routine_blocks_no_caller_and_the_dropped_lines_are_counted";
    if !is_child(NAME) {
        let r = run_child(NAME, true);
        expect_success(NAME, &r);
        return;
    }
    const THREADS: usize = 4;
    const PER_THREAD: usize = 25_000;
    log::set_threshold(Level::Warn as u32);
    let got = Collected::default();
    let (entered_tx, entered_rx) = mpsc::channel::<()>();
    let (release_tx, release_rx) = mpsc::channel::<()>();
    let gate = Mutex::new((Some(entered_tx), Some(release_rx)));
    let g = got.clone();
    log::set_sink(Some(Box::new(move |level, line| {
        // The first call blocks until the test releases it.
        let (entered, release) = {
            let mut s = gate.lock().unwrap();
            (s.0.take(), s.1.take())
        };
        if let (Some(e), Some(r)) = (entered, release) {
            let _ = e.send(());
            let _ = r.recv();
        }
        g.0.lock().unwrap().push((level, line.to_string()));
    })));
    within("the first warning", || mps::mps_log!(Level::Warn, "first line"));
    entered_rx.recv_timeout(STEP_LIMIT).expect("the routine was called for the first line");
    // The routine is now blocked: 100,000 warnings from several threads.
    within("100,000 warnings from 4 threads while the routine is blocked", || {
        let threads: Vec<_> = (0..THREADS)
            .map(|t| {
                std::thread::spawn(move || {
                    for i in 0..PER_THREAD {
                        log::write(Level::Warn, format_args!("line {t}.{i}"));
                    }
                })
            })
            .collect();
        for t in threads {
            t.join().unwrap();
        }
    });
    release_tx.send(()).unwrap();
    assert!(within("log::flush", || log::flush(Duration::from_secs(20))), "the log was flushed");
    let lines = got.lines();
    let written = lines.iter().filter(|(_, l)| l.starts_with("line ")).count() as u64;
    let dropped: u64 = lines.iter().filter_map(|(_, l)| count_before(l, DROPPED)).sum();
    assert!(dropped > 0, "lines were dropped and that was reported; got {} lines", lines.len());
    assert_eq!(written + dropped, (THREADS * PER_THREAD) as u64, "every line is either written or counted as dropped");
    log::set_sink(None);
}

// ---------------------------------------------------------------------------
// (c) One call site repeating: the first lines, then a count per interval.

#[test]
fn a_repeated_line_is_rate_limited_and_the_counts_add_up() {
    const NAME: &str = "a_repeated_line_is_rate_limited_and_the_counts_add_up";
    if !is_child(NAME) {
        let r = run_child(NAME, true);
        expect_success(NAME, &r);
        return;
    }
    const EMITTED: u64 = 100_000;
    log::set_threshold(Level::Warn as u32);
    let got = Collected::default();
    let g = got.clone();
    log::set_sink(Some(Box::new(move |level, line| g.0.lock().unwrap().push((level, line.to_string())))));
    let start = Instant::now();
    within("100,000 identical warnings", || {
        for i in 0..EMITTED {
            mps::mps_log!(Level::Warn, "refused message {}", i);
        }
    });
    let elapsed = start.elapsed();
    assert!(within("log::flush", || log::flush(Duration::from_secs(20))), "the log was flushed");
    let lines = got.lines();
    let written = lines.iter().filter(|(_, l)| l.starts_with("refused message ")).count() as u64;
    let suppressed: u64 = lines.iter().filter_map(|(_, l)| count_before(l, SUPPRESSED)).sum();
    let dropped: u64 = lines.iter().filter_map(|(_, l)| count_before(l, DROPPED)).sum();
    // The loop spans at most elapsed/interval + 2 intervals.
    let intervals = (elapsed.as_secs_f64() / log::RATE_INTERVAL.as_secs_f64()).floor() as u64 + 2;
    let allowed = intervals * log::RATE_LIMIT as u64;
    assert!(written <= allowed, "{written} lines written from one call site in {elapsed:?}; at most {allowed} allowed");
    assert!(suppressed > 0, "a summary reported the suppressed lines");
    assert_eq!(written + suppressed + dropped, EMITTED, "written {written} + suppressed {suppressed} + dropped {dropped}");
    let summaries = lines.iter().filter(|(_, l)| l.contains(SUPPRESSED)).count() as u64;
    assert!(summaries <= intervals + 1, "{summaries} summary lines: about one per interval");
    log::set_sink(None);
}

// ---------------------------------------------------------------------------
// (d) stderr: the line format, and a stderr nobody reads.

#[test]
fn stderr_lines_carry_a_timestamp_the_pid_and_the_thread() {
    const NAME: &str = "stderr_lines_carry_a_timestamp_the_pid_and_the_thread";
    if is_child(NAME) {
        log::set_threshold(Level::Warn as u32);
        std::thread::Builder::new()
            .name("mps-test-7.B".into())
            .spawn(|| mps::mps_log!(Level::Warn, "the line to find {}", 42))
            .unwrap()
            .join()
            .unwrap();
        assert!(log::flush(Duration::from_secs(20)));
        return;
    }
    let before = SystemTime::now().duration_since(UNIX_EPOCH).unwrap();
    let r = run_child(NAME, true);
    let after = SystemTime::now().duration_since(UNIX_EPOCH).unwrap();
    expect_success(NAME, &r);
    let line = r
        .stderr
        .lines()
        .find(|l| l.ends_with("the line to find 42"))
        .unwrap_or_else(|| panic!("the line is on stderr: {}", r.stderr));
    // 2026-12-02T08:15:03.123Z libmps[4242] mps-test-7.B warn: the line to find 42
    let f: Vec<&str> = line.splitn(5, ' ').collect();
    assert_eq!(f.len(), 5, "five fields: {line:?}");
    let ms = parse_timestamp(f[0]).unwrap_or_else(|| panic!("an ISO-8601 UTC timestamp with milliseconds: {line:?}"));
    assert!(ms + 1 >= before.as_millis() as u64 && ms <= after.as_millis() as u64, "the time {} is when the child ran: {line:?}", f[0]);
    assert_eq!(f[1], format!("libmps[{}]", r.pid), "the pid: {line:?}");
    assert_eq!(f[2], "mps-test-7.B", "the thread's name: {line:?}");
    assert_eq!(f[3], "warn:", "the level: {line:?}");
}

/// Milliseconds since the epoch of `YYYY-MM-DDTHH:MM:SS.mmmZ`.
fn parse_timestamp(s: &str) -> Option<u64> {
    let b = s.as_bytes();
    if b.len() != 24 || b[4] != b'-' || b[7] != b'-' || b[10] != b'T' || b[13] != b':' || b[16] != b':' || b[19] != b'.' || b[23] != b'Z' {
        return None;
    }
    let n = |r: std::ops::Range<usize>| s.get(r)?.parse::<u64>().ok();
    let (y, mo, d, h, mi, se, ms) = (n(0..4)?, n(5..7)?, n(8..10)?, n(11..13)?, n(14..16)?, n(17..19)?, n(20..23)?);
    if !(1..=12).contains(&mo) || !(1..=31).contains(&d) || h > 23 || mi > 59 || se > 60 {
        return None;
    }
    // Days from the civil date (H. Hinnant's algorithm), checked independently of the library's.
    let (y, m) = if mo <= 2 { (y as i64 - 1, mo + 9) } else { (y as i64, mo - 3) };
    let era = y.div_euclid(400);
    let yoe = (y - era * 400) as u64;
    let doy = (153 * m + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe as i64 - 719_468;
    Some(((days as u64 * 86_400 + h * 3600 + mi * 60 + se) * 1000) + ms)
}

#[test]
fn a_stderr_nobody_reads_does_not_stop_the_process() {
    const NAME: &str = "a_stderr_nobody_reads_does_not_stop_the_process";
    if is_child(NAME) {
        log::set_threshold(Level::Warn as u32);
        for i in 0..100_000u32 {
            log::write(Level::Warn, format_args!("warning number {i} to a stderr nobody reads"));
            mps::mps_log!(Level::Warn, "and a repeated one {}", i);
        }
        println!("child: all 100,000 warnings emitted");
        return;
    }
    let r = run_child(NAME, false);
    expect_success(NAME, &r);
    assert!(r.stdout.contains("child: all 100,000 warnings emitted"), "stdout: {}", r.stdout);
}

// ---------------------------------------------------------------------------
// The log thread outlives a routine that panics; a new routine gets the lines
// logged after the change.

#[test]
fn a_panicking_routine_does_not_stop_the_log_and_a_new_routine_takes_the_next_lines() {
    const NAME: &str = "a_panicking_routine_does_not_stop_the_log_and_a_new_routine_takes_the_next_lines";
    if !is_child(NAME) {
        let r = run_child(NAME, true);
        expect_success(NAME, &r);
        assert!(r.stderr.contains("the log routine panicked"), "the panic was reported: {}", tail(&r.stderr, 20));
        return;
    }
    log::set_threshold(Level::Warn as u32);
    let first = Collected::default();
    let f = first.clone();
    log::set_sink(Some(Box::new(move |level, line| {
        if line == "panic now" {
            panic!("a client's routine panicked");
        }
        f.0.lock().unwrap().push((level, line.to_string()));
    })));
    log::write(Level::Warn, format_args!("panic now"));
    log::write(Level::Warn, format_args!("after the panic"));
    assert!(within("log::flush", || log::flush(Duration::from_secs(20))));
    assert_eq!(first.lines(), vec![(Level::Warn, "after the panic".to_string())], "the line after the panic was written");
    let second = Collected::default();
    let s = second.clone();
    assert!(log::set_sink(Some(Box::new(move |level, line| s.0.lock().unwrap().push((level, line.to_string()))))));
    log::write(Level::Error, format_args!("to the second routine"));
    assert!(within("log::flush", || log::flush(Duration::from_secs(20))));
    assert_eq!(first.lines().len(), 1, "the first routine got nothing after the change");
    assert_eq!(second.lines(), vec![(Level::Error, "to the second routine".to_string())]);
    log::set_sink(None);
}

// ---------------------------------------------------------------------------
// The summary of suppressed lines comes by itself, about an interval later.

#[test]
fn the_summary_of_suppressed_lines_comes_without_a_flush() {
    const NAME: &str = "the_summary_of_suppressed_lines_comes_without_a_flush";
    if !is_child(NAME) {
        let r = run_child(NAME, true);
        expect_success(NAME, &r);
        return;
    }
    log::set_threshold(Level::Warn as u32);
    let (tx, rx) = mpsc::channel::<String>();
    let tx = Mutex::new(tx);
    log::set_sink(Some(Box::new(move |_, line| {
        let _ = tx.lock().unwrap().send(line.to_string());
    })));
    let extra = 25u64;
    for i in 0..log::RATE_LIMIT as u64 + extra {
        mps::mps_log!(Level::Warn, "one site {}", i);
    }
    // The lines admitted, then (at the latest two intervals on) the summary.
    let mut written = 0u64;
    let mut suppressed = 0u64;
    while written + suppressed < log::RATE_LIMIT as u64 + extra {
        let line = rx.recv_timeout(STEP_LIMIT).unwrap_or_else(|_| panic!("HANG: no summary ({written} written, {suppressed} suppressed)"));
        match count_before(&line, SUPPRESSED) {
            Some(n) => suppressed += n,
            None => written += 1,
        }
    }
    assert!(written <= 2 * log::RATE_LIMIT as u64, "{written}");
    assert!(suppressed > 0);
    log::set_sink(None);
}

// ---------------------------------------------------------------------------
// A peer that cannot be reached: a warning when that starts, detail for the
// repeats, and a line when it is reached again.

#[test]
fn an_unreachable_peer_is_a_warning_once_and_its_return_is_reported() {
    const NAME: &str = "an_unreachable_peer_is_a_warning_once_and_its_return_is_reported";
    if !is_child(NAME) {
        let r = run_child(NAME, true);
        expect_success(NAME, &r);
        return;
    }
    log::set_threshold(Level::Debug as u32);
    let (tx, rx) = mpsc::channel::<(Level, String)>();
    let tx = Mutex::new(tx);
    log::set_sink(Some(Box::new(move |level, line| {
        let _ = tx.lock().unwrap().send((level, line.to_string()));
    })));
    let next = |what: &str, pred: &dyn Fn(&(Level, String)) -> bool, seen: &mut Vec<(Level, String)>| {
        let deadline = Instant::now() + STEP_LIMIT;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let l = rx.recv_timeout(left).unwrap_or_else(|_| panic!("HANG: no line {what} within {STEP_LIMIT:?}; lines so far: {seen:#?}"));
            let hit = pred(&l);
            seen.push(l);
            if hit {
                break;
            }
        }
    };
    let a = common::unique("a");
    let b = common::unique("b");
    // 0.A dials 0.B, which is not there yet.
    let ma = mps::Mps::start(common::config("0.A", &format!("inproc:{a}"), "0.B", &format!("inproc:{b}"), "")).unwrap();
    let mut seen = Vec::new();
    next("saying SP 0.B is unreachable", &|l| l.1.contains("SP 0.B unreachable"), &mut seen);
    // A repeat, at debug level.
    next("repeating the failure", &|l| l.1.starts_with("SP 0.B: cannot connect"), &mut seen);
    let mb = mps::Mps::start(common::config("0.B", &format!("inproc:{b}"), "0.A", &format!("inproc:{a}"), "")).unwrap();
    next("saying SP 0.B is reachable again", &|l| l.1.contains("SP 0.B reachable again"), &mut seen);
    let first = seen.iter().filter(|l| l.1.contains("SP 0.B unreachable")).collect::<Vec<_>>();
    assert_eq!(first.len(), 1, "one warning for the change of state: {seen:#?}");
    assert_eq!(first[0].0, Level::Warn, "{seen:#?}");
    for l in seen.iter().filter(|l| l.1.starts_with("SP 0.B: cannot connect")) {
        assert_eq!(l.0, Level::Debug, "a repeat is detail: {l:?}");
    }
    let back = seen.iter().find(|l| l.1.contains("SP 0.B reachable again")).unwrap();
    assert_eq!(back.0, Level::Info, "{back:?}");
    ma.shutdown().unwrap();
    mb.shutdown().unwrap();
    log::set_sink(None);
}
