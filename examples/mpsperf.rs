//! mpsperf: the benchmark program of libmps.
//!
//! It runs the workloads of `shared/bench/peers/WORKLOADS.md` (W1 confirmed-send
//! latency, W2 windowed confirmed throughput, W3 bandwidth) with libmps, with
//! the same counts, message format, repetitions, placement and output formats
//! as the peers' `run.sh`, so that its figures can be put next to theirs; and
//! three libmps-only scale workloads (S1 10,000 sessions, S2 memory per idle
//! session, S3 fan-in of 8 threads).
//!
//! ```text
//! cargo run --release --example mpsperf -- [--quick] [--pin same|split|both]
//!     [--workloads W1,W2,W3,S1,S2,S3] [--transports uds,tcp]
//!     [--csv PATH] [--runs PATH]
//! ```
//!
//! Counts come from the same environment variables as `run.sh` (REPS, W1_ITERS,
//! W1_WARMUP, W2_MSGS, W2_WARMUP, W2_WINDOW, W3_WINDOW, W3_64K_MSGS,
//! W3_64K_WARMUP, W3_1M_MSGS, W3_1M_WARMUP, RUN_TIMEOUT) plus S1_MSGS,
//! S1_WARMUP (default: the W2 counts), S3_ITERS, S3_WARMUP (per thread);
//! `--quick` lowers the defaults (an environment variable still wins).
//! `MPSPERF_RECV=callback` makes the W2/W3 receiver check the messages in a
//! session callback instead of a receive loop (see `receiver_main`).
//! `MPSPERF_SOCKET_SEND_BUFFER=N` writes `socket_send_buffer = N` into both
//! SPs' configuration (0: the kernel's sizing), to compare with the default.
//!
//! Output: a RESULT line per run (common.h's format, then `rep=`), or a FAIL
//! line as run.sh writes it; then the Markdown table of RESULTS.md and the CSV
//! of results.csv (median, min and max over the runs). The run lines are
//! appended to the `--runs` file; each run's stderr (both processes, library
//! log included) is appended to `logs/<case>.log` beside it.
//!
//! Processes: this program (the orchestrator) launches, for every run, a
//! sender process (SP 0.A, the same executable with the hidden role argument
//! `__sender`) in its own process group; the sender launches the receiver
//! (SP 0.B, role `__receiver`), reads `READY <address>` from the receiver's
//! stdout (the receiver prints it once it listens and its sessions are open),
//! starts its own SP, which dials the receiver (the lower SP id dials), waits
//! for the link, and runs the workload. When the sender is done it closes the
//! receiver's stdin, which is the receiver's signal to shut down. The sender
//! prints one `RESULT` line; the orchestrator appends `rep=`, collects the
//! lines, and prints the table and writes the CSV at the end. A run that
//! exceeds RUN_TIMEOUT seconds has its process group killed; the orchestrator
//! is a child subreaper, so even an orphaned receiver is reaped by it.
//!
//! Where the peers' loops have a "receive acks" step, libmps has the
//! confirmation of each message by the target MPS: `send_sync` returns with it,
//! and `send_async` reports it through the session callback
//! (`Event::MessageSent`), one event per message, which is what WORKLOADS.md
//! names as the MPS equivalent. The target MPS confirms a message when it has
//! accepted it into the session (README: "the callback's return value is not
//! a confirmation"), so the receiving application may lag behind the
//! confirmations; the session queue is configured deep enough that it never
//! makes a send fail.

use hdrhistogram::Histogram;
use mps::{Callback, Config, Event, MessageBuf, Mps, SessionId, SpId, Status, Timeout};
use std::collections::HashMap;
use std::fmt::Write as _;
use std::fs::{self, OpenOptions};
use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, ExitCode, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Barrier, Condvar, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

const PEER: &str = "mps";
const CONDUIT: u32 = 0;
const DOMAIN: u32 = u32::from_le_bytes(*b"PERF");
/// The mailbox of W1-W3 (both SPs open the same name; a send goes to the
/// same-named mailbox of the destination).
const MAILBOX: &str = "bench";
/// Sessions of S1 and S2.
const SCALE_SESSIONS: usize = 10_000;
/// Sending threads (and sessions) of S3.
const FANIN_THREADS: usize = 8;
/// The library's ceiling for `session_queue_depth` (Config refuses more, so
/// 1048576 cannot be configured). No run here has the receiving application
/// lag this far behind the confirmations.
const QUEUE_DEPTH: u32 = 1_000_000;
/// The byte bound of a session's queue: 4 GiB, more than all the bytes one
/// run sends (W3: 1 GiB plus warm-up), so it never makes a send fail either.
const QUEUE_BYTES: u64 = 4 << 30;
const SP_SENDER: SpId = SpId::a(0);
const SP_RECEIVER: SpId = SpId::b(0);
/// How long the sender waits for the link to come up.
const LINK_TIMEOUT: Duration = Duration::from_secs(60);

// ===================================================================== cases

/// One case: workload x transport x size x placement (plus the counts).
#[derive(Clone, Debug)]
struct Case {
    transport: String,
    workload: String,
    variant: String,
    size: usize,
    window: u64,
    /// Timed messages (W1: round trips). S3: per thread. S2: sessions.
    iters: u64,
    /// Untimed messages before. S3: per thread.
    warmup: u64,
    pin: String,
    /// Private directory of the Unix-domain sockets (uds only).
    dir: String,
}

impl Case {
    fn to_args(&self) -> Vec<String> {
        vec![
            format!("transport={}", self.transport),
            format!("workload={}", self.workload),
            format!("variant={}", self.variant),
            format!("size={}", self.size),
            format!("window={}", self.window),
            format!("iters={}", self.iters),
            format!("warmup={}", self.warmup),
            format!("pin={}", self.pin),
            format!("dir={}", self.dir),
        ]
    }

    fn from_args(args: &[String]) -> Result<Case, String> {
        let kv: HashMap<&str, &str> = args.iter().filter_map(|a| a.split_once('=')).collect();
        let get = |k: &str| kv.get(k).map(|v| v.to_string()).ok_or_else(|| format!("missing {k}="));
        let num = |k: &str| get(k)?.parse::<u64>().map_err(|_| format!("bad {k}="));
        Ok(Case {
            transport: get("transport")?,
            workload: get("workload")?,
            variant: get("variant")?,
            size: num("size")? as usize,
            window: num("window")?,
            iters: num("iters")?,
            warmup: num("warmup")?,
            pin: get("pin")?,
            dir: get("dir")?,
        })
    }

    /// The first fields of a RESULT or FAIL line (as common.h / run.sh print them).
    fn head(&self) -> String {
        let (iters, warmup) = match self.workload.as_str() {
            "S3" => (self.iters * FANIN_THREADS as u64, self.warmup * FANIN_THREADS as u64),
            _ => (self.iters, self.warmup),
        };
        format!(
            "peer={PEER} transport={} workload={} variant={} size={} window={} iters={iters} warmup={warmup} pin={}",
            self.transport, self.workload, self.variant, self.size, self.window, self.pin
        )
    }

    fn id(&self) -> String {
        format!("{PEER}-{}-{}-{}-{}-w{}-{}", self.transport, self.workload, self.variant, self.size, self.window, self.pin)
    }
}

// ================================================================ utilities

fn pid() -> u32 {
    std::process::id()
}

/// Pins the calling thread (at startup: the whole process, since every thread
/// created later, the library's included, inherits the mask) to one CPU.
fn pin_to_cpu(cpu: usize) -> Result<(), String> {
    // SAFETY: cpu_set_t is plain data; sched_setaffinity reads the set.
    unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        libc::CPU_ZERO(&mut set);
        libc::CPU_SET(cpu, &mut set);
        if libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set) != 0 {
            return Err(format!("sched_setaffinity(CPU {cpu}): {}", std::io::Error::last_os_error()));
        }
    }
    Ok(())
}

fn online_cpus() -> usize {
    // SAFETY: sysconf has no preconditions.
    let n = unsafe { libc::sysconf(libc::_SC_NPROCESSORS_ONLN) };
    if n > 0 { n as usize } else { 1 }
}

/// Placement (WORKLOADS.md): same = both on CPU 0; split = sender CPU 0,
/// receiver CPU 1. `role` 0 = sender, 1 = receiver.
fn apply_pin(pin: &str, role: usize) -> Result<(), String> {
    let cpu = match pin {
        "same" => 0,
        "split" => role % online_cpus(),
        other => return Err(format!("unknown pin {other:?}")),
    };
    pin_to_cpu(cpu)
}

/// The fixed pattern of WORKLOADS.md: byte[i] = (i*131 + 7) mod 256.
fn write_pattern(buf: &mut [u8]) {
    for (i, b) in buf.iter_mut().enumerate() {
        *b = (i.wrapping_mul(131).wrapping_add(7)) as u8;
    }
}

/// Bytes 0-7 and size-8..size-1 hold the sequence number, host order.
#[inline]
fn stamp(buf: &mut [u8], seq: u64) {
    let n = buf.len();
    buf[..8].copy_from_slice(&seq.to_ne_bytes());
    buf[n - 8..].copy_from_slice(&seq.to_ne_bytes());
}

/// The receiver's check: both copies equal the next expected number. Reads
/// no other payload byte.
#[inline]
fn check(msg: &[u8], size: usize, expect: u64) -> Result<(), String> {
    if msg.len() != size {
        return Err(format!("payload check failed: expected seq {expect} in {size} bytes, got {} bytes", msg.len()));
    }
    let head = u64::from_ne_bytes(msg[..8].try_into().unwrap());
    let tail = u64::from_ne_bytes(msg[size - 8..].try_into().unwrap());
    if head != expect || tail != expect {
        return Err(format!("payload check failed: expected seq {expect} got head {head} tail {tail}"));
    }
    Ok(())
}

/// A sender's message buffer with the pattern written once.
fn pattern_buf(size: usize) -> Result<MessageBuf, String> {
    let mut b = MessageBuf::new(size).map_err(|e| format!("MessageBuf::new({size}): {e}"))?;
    write_pattern(b.as_mut_slice());
    Ok(b)
}

/// Stamps a buffer; counts the (unexpected) copies `as_mut_slice` makes when
/// the library still shares the bytes, which would be an allocation.
#[inline]
fn stamp_buf(b: &mut MessageBuf, seq: u64, copies: &mut u64) {
    let before = b.as_ptr();
    let s = b.as_mut_slice();
    if s.as_ptr() != before {
        *copies += 1;
    }
    stamp(s, seq);
}

fn fatal(role: &str, msg: &str) -> ! {
    eprintln!("[pid {}] {role} FATAL: {msg}", pid());
    let _ = std::io::stderr().flush();
    std::process::exit(2)
}

/// The text of an SP's configuration.
fn config_text(c: &Case, local: SpId, listen: Option<&str>, peer: SpId, peer_addr: &str) -> String {
    let mut t = format!("sp = \"{local}\"\n");
    if let Some(l) = listen {
        let _ = writeln!(t, "listen = \"{l}\"");
    }
    let _ = write!(
        t,
        "conduits = [{CONDUIT}]\n\n[[peer]]\nsp = \"{peer}\"\naddress = \"{peer_addr}\"\n\n\
         [limits]\nmax_message_size = {}\nsession_queue_depth = {QUEUE_DEPTH}\nsession_queue_bytes = {QUEUE_BYTES}\nasync_sends_per_session = {}\n",
        c.size.max(1 << 20),
        c.window.max(4096),
    );
    if let Ok(n) = std::env::var("MPSPERF_SOCKET_SEND_BUFFER") {
        // Config::from_toml refuses a bad value with its line and reason.
        let _ = writeln!(t, "socket_send_buffer = {n}");
    }
    // The point of confirmation of both SPs (`accepted` or `delivered`).
    if let Ok(mode) = std::env::var("MPSPERF_CONFIRM") {
        let _ = write!(t, "\n[link]\nconfirm = \"{mode}\"\n");
    }
    t
}

fn start_sp(text: &str, origin: &str) -> Result<Mps, String> {
    let cfg = Config::from_toml(text, origin).map_err(|e| format!("configuration refused: {e}"))?;
    Mps::start(cfg).map_err(|e| format!("SP did not start: {e}"))
}

fn open(m: &Mps, cb: Option<Callback>, name: &str) -> Result<SessionId, String> {
    m.open(cb, CONDUIT, DOMAIN, name, 0).map_err(|e| format!("open {name:?}: {e}"))
}

fn scale_name(prefix: &str, i: usize) -> String {
    format!("{prefix}{i:05}")
}

/// Resident set size in bytes, from /proc/self/statm.
fn rss_bytes() -> Result<u64, String> {
    let s = fs::read_to_string("/proc/self/statm").map_err(|e| format!("/proc/self/statm: {e}"))?;
    let pages: u64 = s.split_whitespace().nth(1).and_then(|v| v.parse().ok()).ok_or("statm: no RSS field")?;
    // SAFETY: sysconf has no preconditions.
    let page = unsafe { libc::sysconf(libc::_SC_PAGESIZE) } as u64;
    Ok(pages * page)
}

/// Latency statistics: nanoseconds in an hdrhistogram (3 significant digits)
/// for the percentiles, exact sum/min/max beside it.
struct Lat {
    h: Histogram<u64>,
    sum: u128,
    min: u64,
    max: u64,
}

impl Lat {
    fn new() -> Lat {
        // Pre-sized (1 ns .. 1000 s) so that recording never allocates.
        Lat { h: Histogram::new_with_bounds(1, 1_000_000_000_000, 3).unwrap(), sum: 0, min: u64::MAX, max: 0 }
    }
    #[inline]
    fn record(&mut self, ns: u64) {
        self.h.saturating_record(ns.max(1));
        self.sum += ns as u128;
        self.min = self.min.min(ns);
        self.max = self.max.max(ns);
    }
    fn merge(&mut self, o: &Lat) {
        self.h.add(&o.h).expect("same bounds");
        self.sum += o.sum;
        self.min = self.min.min(o.min);
        self.max = self.max.max(o.max);
    }
    /// Nearest rank: the ceil(p*n)-th smallest sample (1-based), as the
    /// highest value equivalent to its histogram bucket (within 0.1 %).
    /// Computed here rather than with `value_at_quantile`, whose `ceil` of a
    /// floating product can land one rank too high (e.g. 0.999 * n).
    fn pct_ns(&self, p: f64) -> u64 {
        let n = self.h.len();
        let k = ((p * n as f64) - 1e-9).ceil().clamp(1.0, n.max(1) as f64) as u64;
        let mut cum = 0u64;
        for v in self.h.iter_recorded() {
            cum += v.count_since_last_iteration();
            if cum >= k {
                return self.h.highest_equivalent(v.value_iterated_to());
            }
        }
        self.h.max()
    }
    /// The metric fields of common.h's latency RESULT line.
    fn fields(&self) -> String {
        let us = |ns: u64| ns as f64 / 1000.0;
        let n = self.h.len().max(1);
        format!(
            "median_us={:.3} p99_us={:.3} p999_us={:.3} mean_us={:.3} min_us={:.3} max_us={:.3}",
            us(self.pct_ns(0.50)),
            us(self.pct_ns(0.99)),
            us(self.pct_ns(0.999)),
            self.sum as f64 / n as f64 / 1000.0,
            us(if self.min == u64::MAX { 0 } else { self.min }),
            us(self.max)
        )
    }
}

/// The metric fields of common.h's throughput RESULT line.
fn throughput_fields(n: u64, size: usize, el: Duration) -> String {
    let s = el.as_secs_f64();
    let bytes = n as f64 * size as f64;
    format!(
        "elapsed_s={:.6} msgs_per_s={:.1} GBps={:.4} MiBps={:.1}",
        s,
        n as f64 / s,
        bytes / s / 1e9,
        bytes / s / 1048576.0
    )
}

// ================================================================== sender

/// The receiver process, as seen by the sender. Dropping it kills and reaps
/// the receiver unless it was waited for.
struct ReceiverProc {
    child: Child,
    stdin: Option<ChildStdin>,
    reaped: bool,
}

impl ReceiverProc {
    /// Closes its stdin (its signal to finish) and waits for it.
    fn finish(&mut self) -> Result<(), String> {
        drop(self.stdin.take());
        let st = self.child.wait().map_err(|e| format!("waiting for the receiver: {e}"))?;
        self.reaped = true;
        if st.success() {
            Ok(())
        } else {
            Err(format!("receiver process failed ({st})"))
        }
    }
}

impl Drop for ReceiverProc {
    fn drop(&mut self) {
        if !self.reaped {
            drop(self.stdin.take());
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// Starts the receiver and reads its listening address from `READY <addr>`.
fn spawn_receiver(c: &Case) -> Result<(ReceiverProc, String), String> {
    let exe = std::env::current_exe().map_err(|e| format!("own path: {e}"))?;
    let mut cmd = Command::new(exe);
    cmd.arg("__receiver").args(c.to_args()).stdin(Stdio::piped()).stdout(Stdio::piped()).stderr(Stdio::inherit());
    // SAFETY: prctl is async-signal-safe; the receiver dies with its sender.
    unsafe {
        cmd.pre_exec(|| {
            libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
            Ok(())
        });
    }
    let mut child = cmd.spawn().map_err(|e| format!("cannot start the receiver: {e}"))?;
    let stdin = child.stdin.take();
    let stdout = child.stdout.take().expect("piped");
    let mut rp = ReceiverProc { child, stdin, reaped: false };
    let mut line = String::new();
    BufReader::new(stdout).read_line(&mut line).map_err(|e| format!("reading the receiver's READY: {e}"))?;
    let addr = match line.trim().strip_prefix("READY ") {
        Some(a) => a.to_string(),
        None => {
            let st = rp.child.wait().map(|s| s.to_string()).unwrap_or_default();
            rp.reaped = true;
            return Err(format!("the receiver exited before it was ready ({st})"));
        }
    };
    Ok((rp, addr))
}

fn sender_main(c: Case) -> ExitCode {
    if let Err(e) = apply_pin(&c.pin, 0) {
        fatal("sender", &e);
    }
    let (mut rx, addr) = match spawn_receiver(&c) {
        Ok(v) => v,
        Err(e) => fatal("sender", &e),
    };
    let m = match start_sp(&config_text(&c, SP_SENDER, None, SP_RECEIVER, &addr), "mpsperf sender") {
        Ok(m) => m,
        Err(e) => {
            drop(rx);
            fatal("sender", &e)
        }
    };
    let r = m
        .wait_for_peer(SP_RECEIVER, Some(LINK_TIMEOUT))
        .map_err(|e| format!("the link to SP {SP_RECEIVER} did not come up: {e}"))
        .and_then(|()| match c.workload.as_str() {
            "W1" => send_w1(&m, &c),
            "W2" | "W3" => send_stream(&m, &c),
            "S1" => send_s1(&m, &c),
            "S2" => send_s2(&m, &c),
            "S3" => send_s3(&m, &c),
            w => Err(format!("unknown workload {w}")),
        });
    let _ = m.shutdown();
    drop(m);
    // After a failure the receiver may wait forever for messages that will
    // not come: it is killed (and reaped) rather than waited for.
    let rx_result = if r.is_ok() { rx.finish() } else { Ok(()) };
    drop(rx);
    match (r, rx_result) {
        (Ok(fields), Ok(())) => {
            println!("RESULT {} {fields}", c.head());
            let _ = std::io::stdout().flush();
            ExitCode::SUCCESS
        }
        (Err(e), _) | (Ok(_), Err(e)) => fatal("sender", &e),
    }
}

/// W1: one synchronous send per iteration, timed around the call; its return
/// is the confirmation (the ack).
fn send_w1(m: &Mps, c: &Case) -> Result<String, String> {
    let s = open(m, None, MAILBOX)?;
    let mut buf = pattern_buf(c.size)?;
    let mut lat = Lat::new();
    let mut copies = 0;
    for seq in 0..c.warmup + c.iters {
        stamp_buf(&mut buf, seq, &mut copies);
        let t0 = Instant::now();
        let r = m.send_sync(s, SP_RECEIVER, &buf, c.size, seq as u32);
        let ns = t0.elapsed().as_nanos() as u64;
        r.map_err(|e| format!("send_sync of seq {seq}: {e}"))?;
        if seq >= c.warmup {
            lat.record(ns);
        }
    }
    report_copies(copies);
    Ok(lat.fields())
}

fn report_copies(copies: u64) {
    if copies > 0 {
        eprintln!("[pid {}] note: {copies} sender buffer(s) were still shared with the library when restamped (copied)", pid());
    }
}

/// The asynchronous-send window shared by the sender and its callbacks.
struct Win {
    st: Mutex<WinState>,
    cv: Condvar,
    /// Per session: the tag its next `MessageSent` must carry (the callbacks
    /// of one session come in send order; different sessions' may interleave).
    next_tag: Vec<AtomicU64>,
    /// How far a session's next tag moves per message (1, or the number of
    /// sessions when the traffic is spread round-robin).
    stride: AtomicU64,
}

struct WinState {
    /// Confirmed messages, all phases.
    acked: u64,
    /// Buffers not lent to a send (one per window slot in all).
    free: Vec<MessageBuf>,
    /// The sender is blocked on `cv`.
    waiting: bool,
    err: Option<String>,
}

impl Win {
    fn new(sessions: usize, window: u64, size: usize) -> Result<Arc<Win>, String> {
        let mut free = Vec::with_capacity(window as usize);
        for _ in 0..window {
            free.push(pattern_buf(size)?);
        }
        Ok(Arc::new(Win {
            st: Mutex::new(WinState { acked: 0, free, waiting: false, err: None }),
            cv: Condvar::new(),
            next_tag: (0..sessions).map(|_| AtomicU64::new(0)).collect(),
            stride: AtomicU64::new(1),
        }))
    }

    /// The callback of session number `k`: counts each confirmation, checks
    /// that it is the next sequence number of that session and succeeded,
    /// takes the buffer back, and wakes the sender if it waits, once the
    /// completions that arrived together have all been counted.
    ///
    /// WORKLOADS.md W2: the sender blocks until an ack write arrives, then
    /// takes the acks in it. One CONFIRM frame is that write; the library
    /// delivers its completions one callback each, and says how many of that
    /// frame's completions are still to run after the one running, over all
    /// sessions (they may be spread over many, as in S1): `session_info().sp_pending_events`,
    /// `MPS_SESSION_INFO.SpPendingCallbacks` in C. The sender
    /// is woken at the last of them, not at the first: woken at the first, on
    /// a shared CPU it preempts the callback thread and refills one slot per
    /// completion, two context switches per message.
    fn callback(self: &Arc<Win>, k: usize, m: &Mps) -> Callback {
        let w = self.clone();
        let m = m.clone();
        Arc::new(move |ev| {
            if let Event::MessageSent { session, status, tag, buffer, .. } = ev {
                let more = m.session_info(session).map(|i| i.sp_pending_events > 0).unwrap_or(false);
                let expect = w.next_tag[k].load(Ordering::Relaxed);
                w.next_tag[k].store(expect + w.stride.load(Ordering::Relaxed), Ordering::Relaxed);
                let bad = if status != Status::STATUS_SUCCESS {
                    Some(format!("asynchronous send of seq {expect} failed: {status}"))
                } else if tag != expect as u32 {
                    Some(format!("confirmation out of order: got tag {tag}, expected {expect}"))
                } else {
                    None
                };
                let mut st = w.st.lock().unwrap();
                st.acked += 1;
                st.free.push(buffer);
                // One wake-up per wait: std's notify is a system call even
                // when the sender is already awake.
                let wake = bad.is_some() || (!more && std::mem::take(&mut st.waiting));
                if let Some(e) = bad {
                    st.err.get_or_insert(e);
                }
                // Wake after unlocking: on a shared CPU the woken sender may
                // run at once, and would only block again on the lock.
                drop(st);
                if wake {
                    w.cv.notify_one();
                }
            }
        })
    }

    /// Before a phase (nothing outstanding): message `i` of the phase goes to
    /// session `i % sessions.len()` with tag `seq0 + i`.
    fn expect(&self, sessions: usize, seq0: u64) {
        self.stride.store(sessions as u64, Ordering::Relaxed);
        for k in 0..sessions {
            self.next_tag[k].store(seq0 + k as u64, Ordering::Relaxed);
        }
    }
}

/// The W2/W3 loop: keep at most `window` unconfirmed, block (condvar) when
/// the window is full; timed from the first send to the last confirmation.
/// Message `i` (counting from `idx0`) goes to `sessions[i % len]` with
/// sequence number / tag `seq0 + i - idx0`.
#[allow(clippy::too_many_arguments)]
fn stream_phase(
    m: &Mps,
    sessions: &[SessionId],
    win: &Win,
    size: usize,
    window: u64,
    seq0: u64,
    idx0: u64,
    count: u64,
    copies: &mut u64,
) -> Result<Duration, String> {
    let acked0 = win.st.lock().unwrap().acked;
    let n_sess = sessions.len() as u64;
    let mut sent = 0u64;
    let t0 = Instant::now();
    loop {
        let mut buf = {
            let mut st = win.st.lock().unwrap();
            loop {
                if let Some(e) = st.err.take() {
                    return Err(e);
                }
                let acked = st.acked - acked0;
                if acked >= count {
                    return Ok(t0.elapsed());
                }
                if sent < count && sent - acked < window {
                    break st.free.pop().ok_or("no free buffer inside the window")?;
                }
                st.waiting = true;
                st = win.cv.wait(st).unwrap();
            }
        };
        let seq = seq0 + sent;
        stamp_buf(&mut buf, seq, copies);
        let s = sessions[((idx0 + sent) % n_sess) as usize];
        m.send_async(s, SP_RECEIVER, buf, size, seq as u32, 0)
            .map_err(|(e, _)| format!("send_async of seq {seq}: {e}"))?;
        sent += 1;
    }
}

/// W2 and W3.
fn send_stream(m: &Mps, c: &Case) -> Result<String, String> {
    let win = Win::new(1, c.window, c.size)?;
    let s = open(m, Some(win.callback(0, m)), MAILBOX)?;
    let mut copies = 0;
    win.expect(1, 0);
    if c.warmup > 0 {
        stream_phase(m, &[s], &win, c.size, c.window, 0, 0, c.warmup, &mut copies)?;
    }
    let el = stream_phase(m, &[s], &win, c.size, c.window, c.warmup, c.warmup, c.iters, &mut copies)?;
    report_copies(copies);
    Ok(throughput_fields(c.iters, c.size, el))
}

/// S1: W2-style traffic (64 B, window 64) on one session, then spread
/// round-robin over 10,000 sessions; then open+close of 10,000 more sessions.
fn send_s1(m: &Mps, c: &Case) -> Result<String, String> {
    let win = Win::new(SCALE_SESSIONS, c.window, c.size)?;
    let mut sessions = Vec::with_capacity(SCALE_SESSIONS);
    for k in 0..SCALE_SESSIONS {
        sessions.push(open(m, Some(win.callback(k, m)), &scale_name("s", k))?);
    }
    let mut copies = 0;
    let phase = |sess: &[SessionId], seq0: u64, copies: &mut u64| -> Result<Duration, String> {
        win.expect(sess.len(), seq0);
        if c.warmup > 0 {
            stream_phase(m, sess, &win, c.size, c.window, seq0, 0, c.warmup, copies)?;
        }
        stream_phase(m, sess, &win, c.size, c.window, seq0 + c.warmup, c.warmup, c.iters, copies)
    };
    let one = phase(&sessions[..1], 0, &mut copies)?;
    let spread = phase(&sessions, c.warmup + c.iters, &mut copies)?;
    report_copies(copies);
    // Open and close 10,000 further sessions (idle, no callback) on this SP,
    // with the 10,000 above still open.
    let names: Vec<String> = (0..SCALE_SESSIONS).map(|k| scale_name("oc", k)).collect();
    let mut ids = Vec::with_capacity(SCALE_SESSIONS);
    let t0 = Instant::now();
    for n in &names {
        ids.push(open(m, None, n)?);
    }
    let t_open = t0.elapsed();
    let t1 = Instant::now();
    for s in ids {
        m.close(s).map_err(|e| format!("close: {e}"))?;
    }
    let t_close = t1.elapsed();
    let n = c.iters as f64;
    let (r1, rn) = (n / one.as_secs_f64(), n / spread.as_secs_f64());
    let ns = SCALE_SESSIONS as f64;
    Ok(format!(
        "sessions={SCALE_SESSIONS} elapsed_one_s={:.6} msgs_per_s_one={r1:.1} elapsed_spread_s={:.6} msgs_per_s_spread={rn:.1} \
         spread_vs_one={:.4} open_per_s={:.1} close_per_s={:.1} open_close_per_s={:.1}",
        one.as_secs_f64(),
        spread.as_secs_f64(),
        rn / r1,
        ns / t_open.as_secs_f64(),
        ns / t_close.as_secs_f64(),
        ns / (t_open + t_close).as_secs_f64(),
    ))
}

/// S2: RSS of this SP before and after opening 10,000 idle sessions.
fn send_s2(m: &Mps, c: &Case) -> Result<String, String> {
    let n = c.iters as usize;
    let mut ids = Vec::with_capacity(n);
    let names: Vec<String> = (0..n).map(|k| scale_name("idle", k)).collect();
    let before = rss_bytes()?;
    for name in &names {
        ids.push(open(m, None, name)?);
    }
    let after = rss_bytes()?;
    Ok(format!(
        "sessions={n} rss_before_kib={} rss_after_kib={} bytes_per_session={:.1}",
        before / 1024,
        after / 1024,
        (after as f64 - before as f64) / n as f64
    ))
}

/// S3: 8 threads, each with its own session, send synchronously (64 B).
fn send_s3(m: &Mps, c: &Case) -> Result<String, String> {
    let mut sessions = Vec::new();
    for k in 0..FANIN_THREADS {
        sessions.push(open(m, None, &format!("fan{k}"))?);
    }
    let barrier = Arc::new(Barrier::new(FANIN_THREADS + 1));
    let mut handles = Vec::new();
    for &s in &sessions {
        let (m, b, c) = (m.clone(), barrier.clone(), c.clone());
        handles.push(std::thread::spawn(move || -> Result<(Lat, Instant, Instant), String> {
            let mut buf = pattern_buf(c.size)?;
            let mut lat = Lat::new();
            let mut copies = 0;
            let mut res = Ok(());
            let mut start = Instant::now();
            for seq in 0..c.warmup + c.iters {
                if seq == c.warmup {
                    b.wait();
                    start = Instant::now();
                }
                if res.is_err() {
                    continue; // still reach the barrier
                }
                stamp_buf(&mut buf, seq, &mut copies);
                let t0 = Instant::now();
                let r = m.send_sync(s, SP_RECEIVER, &buf, c.size, seq as u32);
                let ns = t0.elapsed().as_nanos() as u64;
                match r {
                    Ok(()) if seq >= c.warmup => lat.record(ns),
                    Ok(()) => {}
                    Err(e) => res = Err(format!("send_sync of seq {seq}: {e}")),
                }
            }
            if c.iters == 0 {
                b.wait();
            }
            report_copies(copies);
            let end = Instant::now();
            res.map(|()| (lat, start, end))
        }));
    }
    // The timed phase: from the first thread's start after the barrier (all
    // warmed up) to the last thread's end.
    barrier.wait();
    let mut all = Lat::new();
    let (mut t0, mut end): (Option<Instant>, Option<Instant>) = (None, None);
    let mut err = None;
    for h in handles {
        match h.join().map_err(|_| "a sending thread panicked".to_string()).and_then(|r| r) {
            Ok((lat, s, e)) => {
                all.merge(&lat);
                t0 = Some(t0.map_or(s, |t| t.min(s)));
                end = Some(end.map_or(e, |t| t.max(e)));
            }
            Err(e) => err = Some(e),
        }
    }
    if let Some(e) = err {
        return Err(e);
    }
    let el = end.zip(t0).map(|(e, s)| e - s).unwrap_or_default();
    let n = c.iters * FANIN_THREADS as u64;
    Ok(format!("threads={FANIN_THREADS} elapsed_s={:.6} msgs_per_s={:.1} {}", el.as_secs_f64(), n as f64 / el.as_secs_f64(), all.fields()))
}

// ================================================================ receiver

fn receiver_main(c: Case) -> ExitCode {
    if let Err(e) = apply_pin(&c.pin, 1) {
        fatal("receiver", &e);
    }
    let (listen, peer_addr) = match c.transport.as_str() {
        // The sender's address is never dialed (the lower id, 0.A, dials) but
        // a configured peer needs one.
        "uds" => (format!("unix:{}/b.sock", c.dir), format!("unix:{}/a.sock", c.dir)),
        "tcp" => ("tcp:127.0.0.1:0".to_string(), "tcp:127.0.0.1:1".to_string()),
        t => fatal("receiver", &format!("unknown transport {t}")),
    };
    let m = match start_sp(&config_text(&c, SP_RECEIVER, Some(&listen), SP_SENDER, &peer_addr), "mpsperf receiver") {
        Ok(m) => m,
        Err(e) => fatal("receiver", &e),
    };
    let r = match c.workload.as_str() {
        "W1" => recv_queue(&m, &c, MAILBOX, c.warmup + c.iters),
        // W2/W3 receiver: the NULL-callback session with a receive loop, or
        // (MPSPERF_RECV=callback) a session whose callback checks the
        // messages. Measured alternately (uds and tcp, same and split, 3 runs
        // each, 2 shared vCPUs) the two were within the run-to-run noise
        // (+-10 %), the receive loop a little ahead in W3; it is the default.
        "W2" | "W3" => match std::env::var("MPSPERF_RECV").as_deref() {
            Ok("callback") => recv_callback(&m, &c),
            _ => recv_queue(&m, &c, MAILBOX, c.warmup + c.iters),
        },
        "S1" => recv_s1(&m, &c),
        "S2" => ready(&m),
        "S3" => recv_s3(&m, &c),
        w => Err(format!("unknown workload {w}")),
    };
    if let Err(e) = r {
        fatal("receiver", &e);
    }
    // Done: wait for the sender to close our stdin, then leave.
    let _ = std::io::stdin().read_to_end(&mut Vec::new());
    let _ = m.shutdown();
    ExitCode::SUCCESS
}

/// Tells the sender where to dial, once the sessions are open.
fn ready(m: &Mps) -> Result<(), String> {
    let addr = m.listen_address().ok_or("the SP has no listening address")?;
    let mut out = std::io::stdout().lock();
    writeln!(out, "READY {addr}").and_then(|()| out.flush()).map_err(|e| format!("stdout: {e}"))
}

/// A session with a NULL callback and a loop of `receive(Forever)`.
fn recv_queue(m: &Mps, c: &Case, name: &str, total: u64) -> Result<(), String> {
    let s = open(m, None, name)?;
    ready(m)?;
    for seq in 0..total {
        let r = m.receive(s, Timeout::Forever, 0).map_err(|e| format!("receive of seq {seq}: {e}"))?;
        check(&r.data, c.size, seq)?;
    }
    Ok(())
}

/// W2/W3 receiver with `MPSPERF_RECV=callback`: a session with a callback,
/// which checks each message as the library delivers it (no hand-off to an
/// application thread); the main thread waits for the last one.
fn recv_callback(m: &Mps, c: &Case) -> Result<(), String> {
    let total = c.warmup + c.iters;
    let size = c.size;
    let next = Arc::new(AtomicU64::new(0));
    let done = Arc::new((Mutex::new(false), Condvar::new()));
    let (n2, d2) = (next.clone(), done.clone());
    let cb: Callback = Arc::new(move |ev| {
        if let Event::MessageReceived(r) = ev {
            let seq = n2.load(Ordering::Relaxed);
            if let Err(e) = check(&r.data, size, seq) {
                fatal("receiver", &e);
            }
            n2.store(seq + 1, Ordering::Relaxed);
            if seq + 1 == total {
                *d2.0.lock().unwrap() = true;
                d2.1.notify_all();
            }
        }
    });
    open(m, Some(cb), MAILBOX)?;
    ready(m)?;
    let (lock, cv) = &*done;
    let mut d = lock.lock().unwrap();
    while !*d && total > 0 {
        d = cv.wait(d).unwrap();
    }
    Ok(())
}

/// S1 receiver: 10,000 NULL-callback sessions; message i of a phase is taken
/// from the session it was sent to.
fn recv_s1(m: &Mps, c: &Case) -> Result<(), String> {
    let mut sessions = Vec::with_capacity(SCALE_SESSIONS);
    for k in 0..SCALE_SESSIONS {
        sessions.push(open(m, None, &scale_name("s", k))?);
    }
    ready(m)?;
    let per_phase = c.warmup + c.iters;
    for (phase, n_sess) in [(0u64, 1usize), (1, SCALE_SESSIONS)] {
        let seq0 = phase * per_phase;
        for i in 0..per_phase {
            let s = sessions[(i % n_sess as u64) as usize];
            let r = m.receive(s, Timeout::Forever, 0).map_err(|e| format!("receive of seq {}: {e}", seq0 + i))?;
            check(&r.data, c.size, seq0 + i)?;
        }
    }
    Ok(())
}

/// S3 receiver: the 8 sessions, one receiving thread each.
fn recv_s3(m: &Mps, c: &Case) -> Result<(), String> {
    let mut sessions = Vec::new();
    for k in 0..FANIN_THREADS {
        sessions.push(open(m, None, &format!("fan{k}"))?);
    }
    ready(m)?;
    let handles: Vec<_> = sessions
        .into_iter()
        .map(|s| {
            let (m, size, total) = (m.clone(), c.size, c.warmup + c.iters);
            std::thread::spawn(move || -> Result<(), String> {
                for seq in 0..total {
                    let r = m.receive(s, Timeout::Forever, 0).map_err(|e| format!("receive of seq {seq}: {e}"))?;
                    check(&r.data, size, seq)?;
                }
                Ok(())
            })
        })
        .collect();
    for h in handles {
        h.join().map_err(|_| "a receiving thread panicked".to_string())??;
    }
    Ok(())
}

// ============================================================ orchestrator

#[derive(Clone)]
struct Counts {
    reps: u64,
    w1: (u64, u64),
    w2: (u64, u64),
    w2_window: u64,
    w3_window: u64,
    w3_64k: (u64, u64),
    w3_1m: (u64, u64),
    s1: (u64, u64),
    s3: (u64, u64),
    run_timeout: u64,
}

fn env_u64(name: &str, default: u64) -> Result<u64, String> {
    match std::env::var(name) {
        Ok(v) if !v.is_empty() => v.parse().map_err(|_| format!("{name}={v:?} is not a number")),
        _ => Ok(default),
    }
}

impl Counts {
    fn from_env(quick: bool) -> Result<Counts, String> {
        // (timed, warm-up); WORKLOADS.md defaults, or tiny ones for --quick.
        let d = |full: (u64, u64), q: (u64, u64)| if quick { q } else { full };
        let pair = |n: &str, w: &str, v: (u64, u64)| -> Result<(u64, u64), String> { Ok((env_u64(n, v.0)?, env_u64(w, v.1)?)) };
        let w2 = pair("W2_MSGS", "W2_WARMUP", d((1_000_000, 10_000), (2000, 100)))?;
        Ok(Counts {
            reps: env_u64("REPS", if quick { 1 } else { 3 })?,
            w1: pair("W1_ITERS", "W1_WARMUP", d((100_000, 10_000), (200, 20)))?,
            w2,
            w2_window: env_u64("W2_WINDOW", 64)?,
            w3_window: env_u64("W3_WINDOW", 16)?,
            w3_64k: pair("W3_64K_MSGS", "W3_64K_WARMUP", d((16384, 1024), (64, 8)))?,
            w3_1m: pair("W3_1M_MSGS", "W3_1M_WARMUP", d((1024, 64), (16, 4)))?,
            // S1 is W2-style: the W2 counts unless S1_MSGS / S1_WARMUP say otherwise.
            s1: pair("S1_MSGS", "S1_WARMUP", w2)?,
            s3: pair("S3_ITERS", "S3_WARMUP", d((20_000, 1000), (200, 20)))?,
            run_timeout: env_u64("RUN_TIMEOUT", 180)?,
        })
    }
}

struct Opts {
    quick: bool,
    pins: Vec<String>,
    workloads: Vec<String>,
    transports: Vec<String>,
    csv: PathBuf,
    runs: PathBuf,
}

const USAGE: &str = "usage: mpsperf [--quick] [--pin same|split|both] [--workloads W1,W2,W3,S1,S2,S3]
               [--transports uds,tcp] [--csv PATH] [--runs PATH]
counts: REPS W1_ITERS W1_WARMUP W2_MSGS W2_WARMUP W2_WINDOW W3_WINDOW W3_64K_MSGS
        W3_64K_WARMUP W3_1M_MSGS W3_1M_WARMUP S1_MSGS S1_WARMUP S3_ITERS S3_WARMUP
        RUN_TIMEOUT (environment; --quick lowers the defaults)
settings: MPSPERF_CONFIRM=accepted|delivered (link.confirm of both SPs),
          MPSPERF_SOCKET_SEND_BUFFER, MPSPERF_RECV=callback (environment)
defaults: --pin both, all workloads, both transports,
          --csv target/mpsperf/results.csv, --runs target/mpsperf/results_runs.txt (appended)";

fn parse_opts(args: &[String]) -> Result<Opts, String> {
    let out = Path::new(env!("CARGO_MANIFEST_DIR")).join("target/mpsperf");
    let mut o = Opts {
        quick: false,
        pins: vec!["same".into(), "split".into()],
        workloads: ["W1", "W2", "W3", "S1", "S2", "S3"].iter().map(|s| s.to_string()).collect(),
        transports: vec!["uds".into(), "tcp".into()],
        csv: out.join("results.csv"),
        runs: out.join("results_runs.txt"),
    };
    let list = |v: &str, allowed: &[&str], what: &str| -> Result<Vec<String>, String> {
        let l: Vec<String> = v.split(',').map(|s| s.trim().to_string()).filter(|s| !s.is_empty()).collect();
        match l.iter().find(|x| !allowed.contains(&x.as_str())) {
            Some(bad) => Err(format!("unknown {what} {bad:?} (one of {})", allowed.join(","))),
            None if l.is_empty() => Err(format!("no {what} given")),
            None => Ok(l),
        }
    };
    let mut it = args.iter();
    while let Some(a) = it.next() {
        let mut val = || it.next().cloned().ok_or_else(|| format!("{a} needs a value"));
        match a.as_str() {
            "--quick" => o.quick = true,
            "--pin" => {
                o.pins = match val()?.as_str() {
                    "both" => vec!["same".into(), "split".into()],
                    p @ ("same" | "split") => vec![p.to_string()],
                    p => return Err(format!("--pin {p:?}: same, split or both")),
                }
            }
            "--workloads" => o.workloads = list(&val()?, &["W1", "W2", "W3", "S1", "S2", "S3"], "workload")?,
            "--transports" => o.transports = list(&val()?, &["uds", "tcp"], "transport")?,
            "--csv" => o.csv = PathBuf::from(val()?),
            "--runs" => o.runs = PathBuf::from(val()?),
            "-h" | "--help" => return Err(String::new()),
            other => return Err(format!("unknown option {other:?}")),
        }
    }
    Ok(o)
}

/// The cases in run.sh's order: per placement, per transport, W1 64 B and
/// 4 KiB, W2, W3 64 KiB and 1 MiB, S1, S3; S2 (transport-independent) once
/// per placement.
fn cases(o: &Opts, n: &Counts) -> Vec<Case> {
    let want = |w: &str| o.workloads.iter().any(|x| x == w);
    let mut v = Vec::new();
    for pin in &o.pins {
        let mk = |t: &str, w: &str, var: &str, size: usize, window: u64, (iters, warmup): (u64, u64)| Case {
            transport: t.into(),
            workload: w.into(),
            variant: var.into(),
            size,
            window,
            iters,
            warmup,
            pin: pin.clone(),
            dir: "-".into(),
        };
        for t in &o.transports {
            if want("W1") {
                v.push(mk(t, "W1", "sync", 64, 1, n.w1));
                v.push(mk(t, "W1", "sync", 4096, 1, n.w1));
            }
            if want("W2") {
                v.push(mk(t, "W2", "async", 64, n.w2_window, n.w2));
            }
            if want("W3") {
                v.push(mk(t, "W3", "async", 65536, n.w3_window, n.w3_64k));
                v.push(mk(t, "W3", "async", 1048576, n.w3_window, n.w3_1m));
            }
            if want("S1") {
                v.push(mk(t, "S1", "sessions10000-vs-1", 64, n.w2_window, n.s1));
            }
            if want("S3") {
                v.push(mk(t, "S3", "fanin8-sync", 64, 1, n.s3));
            }
        }
        if want("S2") {
            v.push(mk(&o.transports[0], "S2", "idle-sessions10000", 0, 0, (SCALE_SESSIONS as u64, 0)));
        }
    }
    v
}

static INTERRUPTED: AtomicBool = AtomicBool::new(false);

extern "C" fn on_signal(_: libc::c_int) {
    INTERRUPTED.store(true, Ordering::SeqCst);
}

/// SIGINT/SIGTERM interrupt the timed wait (no SA_RESTART) so that the
/// current run is killed and cleaned up before the program leaves.
fn install_signal_handlers() {
    // SAFETY: the handler only stores to an atomic.
    unsafe {
        let mut sa: libc::sigaction = std::mem::zeroed();
        sa.sa_sigaction = on_signal as *const () as usize;
        libc::sigemptyset(&mut sa.sa_mask);
        libc::sigaction(libc::SIGINT, &sa, std::ptr::null_mut());
        libc::sigaction(libc::SIGTERM, &sa, std::ptr::null_mut());
    }
}

enum Waited {
    Exited,
    TimedOut,
    Interrupted,
}

/// Waits (without reaping) until the process exits or the deadline passes:
/// poll(2) on a pidfd.
fn timed_wait(pid: u32, timeout: Duration) -> Result<Waited, String> {
    // SAFETY: pidfd_open takes a pid and flags and returns a new fd.
    let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid as libc::pid_t, 0) } as libc::c_int;
    if fd < 0 {
        return Err(format!("pidfd_open: {}", std::io::Error::last_os_error()));
    }
    let deadline = Instant::now() + timeout;
    let r = loop {
        if INTERRUPTED.load(Ordering::SeqCst) {
            break Ok(Waited::Interrupted);
        }
        let left = deadline.saturating_duration_since(Instant::now());
        let mut p = libc::pollfd { fd, events: libc::POLLIN, revents: 0 };
        let ms = left.as_millis().min(i32::MAX as u128) as libc::c_int;
        // SAFETY: one valid pollfd.
        let n = unsafe { libc::poll(&mut p, 1, ms) };
        if n > 0 {
            break Ok(Waited::Exited);
        }
        if n == 0 && left.is_zero() {
            break Ok(Waited::TimedOut);
        }
        if n < 0 && std::io::Error::last_os_error().raw_os_error() != Some(libc::EINTR) {
            break Err(format!("poll: {}", std::io::Error::last_os_error()));
        }
    };
    // SAFETY: our own fd.
    unsafe { libc::close(fd) };
    r
}

/// A private directory for one run's Unix sockets (mode 0700).
fn private_dir() -> Result<PathBuf, String> {
    let mut tmpl = b"/tmp/mpsperf-XXXXXX\0".to_vec();
    // SAFETY: a writable NUL-terminated template.
    let p = unsafe { libc::mkdtemp(tmpl.as_mut_ptr() as *mut libc::c_char) };
    if p.is_null() {
        return Err(format!("mkdtemp: {}", std::io::Error::last_os_error()));
    }
    tmpl.pop();
    Ok(PathBuf::from(String::from_utf8(tmpl).expect("ASCII")))
}

struct RunOutcome {
    /// The RESULT line (with rep=) or the FAIL line.
    line: String,
    ok: bool,
    interrupted: bool,
}

/// One run: a sender process (which starts its receiver), timed wait, kill
/// on timeout, reap everything, remove the private directory.
fn run_one(case: &Case, rep: u64, logs: &Path, timeout: Duration) -> RunOutcome {
    let mut c = case.clone();
    let dir = if c.transport == "uds" {
        match private_dir() {
            Ok(d) => {
                c.dir = d.display().to_string();
                Some(d)
            }
            Err(e) => {
                eprintln!("mpsperf: {e}");
                None
            }
        }
    } else {
        None
    };
    let log_path = logs.join(format!("{}.log", c.id()));
    let (rc, stdout, interrupted) = (|| -> (i32, String, bool) {
        if c.transport == "uds" && dir.is_none() {
            return (1, String::new(), false);
        }
        let log = match OpenOptions::new().create(true).append(true).open(&log_path) {
            Ok(mut f) => {
                let _ = writeln!(f, "--- rep {rep} at {} ---", utc_now());
                f
            }
            Err(e) => {
                eprintln!("mpsperf: {}: {e}", log_path.display());
                return (1, String::new(), false);
            }
        };
        let exe = std::env::current_exe().expect("own path");
        let mut cmd = Command::new(exe);
        cmd.arg("__sender").args(c.to_args()).stdin(Stdio::null()).stdout(Stdio::piped()).stderr(log).process_group(0);
        // SAFETY: prctl is async-signal-safe; the run dies with the orchestrator.
        unsafe {
            cmd.pre_exec(|| {
                libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
                Ok(())
            });
        }
        let mut child = match cmd.spawn() {
            Ok(ch) => ch,
            Err(e) => {
                eprintln!("mpsperf: cannot start a sender: {e}");
                return (1, String::new(), false);
            }
        };
        let pgid = child.id() as libc::pid_t;
        let mut out = child.stdout.take().expect("piped");
        let reader = std::thread::spawn(move || {
            let mut s = String::new();
            let _ = out.read_to_string(&mut s);
            s
        });
        let waited = timed_wait(child.id(), timeout);
        let mut forced = None;
        match &waited {
            Ok(Waited::Exited) => {}
            Ok(Waited::TimedOut) => forced = Some(124),
            Ok(Waited::Interrupted) => forced = Some(130),
            Err(e) => {
                eprintln!("mpsperf: {e}");
                forced = Some(1);
            }
        }
        if forced.is_some() {
            // The sender has not been reaped, so its id still names its group.
            // SAFETY: signals only the process group this run created.
            unsafe { libc::kill(-pgid, libc::SIGKILL) };
        }
        let status = child.wait();
        // Anything of the group left (a receiver orphaned by a sender that
        // died) was re-parented to us (child subreaper): reap it.
        loop {
            let mut st = 0;
            // SAFETY: waits for children in our own run's process group.
            let r = unsafe { libc::waitpid(-pgid, &mut st, 0) };
            if r <= 0 {
                break;
            }
        }
        let stdout = reader.join().unwrap_or_default();
        let rc = forced.unwrap_or_else(|| match status {
            Ok(s) => s.code().unwrap_or_else(|| 128 + s.signal().unwrap_or(0)),
            Err(_) => 1,
        });
        (rc, stdout, matches!(waited, Ok(Waited::Interrupted)))
    })();
    if let Some(d) = dir {
        let _ = fs::remove_dir_all(d);
    }
    let result = stdout.lines().find(|l| l.starts_with("RESULT "));
    match result {
        Some(l) if rc == 0 => RunOutcome { line: format!("{l} rep={rep}"), ok: true, interrupted },
        _ => {
            if rc == 124 {
                eprintln!("mpsperf: run killed after {} s (RUN_TIMEOUT)", timeout.as_secs());
            }
            // This run's part of the log: its FATAL lines and its last line.
            if let Ok(log) = fs::read_to_string(&log_path) {
                let run = log.rfind("--- rep ").map_or(&log[..], |i| &log[i..]);
                let lines: Vec<&str> = run.lines().skip(1).collect();
                for (i, l) in lines.iter().enumerate() {
                    if l.contains("FATAL") || i + 1 == lines.len() {
                        eprintln!("    | {l}");
                    }
                }
            }
            RunOutcome {
                line: format!(
                    "FAIL peer={PEER} transport={} workload={} variant={} size={} window={} pin={} rc={rc}",
                    c.transport, c.workload, c.variant, c.size, c.window, c.pin
                ),
                ok: false,
                interrupted,
            }
        }
    }
}

/// UTC date and time, ISO 8601.
fn utc_now() -> String {
    let t = SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0) as i64;
    let (days, secs) = (t.div_euclid(86400), t.rem_euclid(86400));
    // Civil from days (H. Hinnant).
    let z = days + 719468;
    let era = z.div_euclid(146097);
    let doe = z - era * 146097;
    let yoe = (doe - doe / 1460 + doe / 36524 - doe / 146096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let mo = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + if mo <= 2 { 1 } else { 0 };
    format!("{y:04}-{mo:02}-{d:02}T{:02}:{:02}:{:02}Z", secs / 3600, secs / 60 % 60, secs % 60)
}

fn read_trim(p: &str) -> String {
    fs::read_to_string(p).map(|s| s.trim().to_string()).unwrap_or_else(|_| "?".into())
}

// ------------------------------------------------------------- aggregation

/// As aggregate.py formats a figure.
fn fmt_fig(x: f64) -> String {
    if x >= 1e5 {
        let s = format!("{x:.0}");
        let (neg, digits) = s.strip_prefix('-').map(|d| (true, d)).unwrap_or((false, &s));
        let mut out = String::new();
        for (i, ch) in digits.chars().enumerate() {
            if i > 0 && (digits.len() - i) % 3 == 0 {
                out.push(',');
            }
            out.push(ch);
        }
        if neg { format!("-{out}") } else { out }
    } else if x >= 100.0 {
        format!("{x:.0}")
    } else if x >= 10.0 {
        format!("{x:.1}")
    } else if x >= 1.0 {
        format!("{x:.2}")
    } else {
        format!("{x:.3}")
    }
}

fn size_h(s: &str) -> String {
    match s.parse::<u64>() {
        Ok(0) => "-".into(),
        Ok(s) if s >= 1048576 => format!("{}MiB", s / 1048576),
        Ok(s) if s >= 1024 => format!("{}KiB", s / 1024),
        Ok(s) => format!("{s}B"),
        Err(_) => s.into(),
    }
}

/// (csv metric name, RESULT field, unit) per workload.
fn metrics(workload: &str) -> &'static [(&'static str, &'static str, &'static str)] {
    match workload {
        "W1" => &[("rtt_median_us", "median_us", "us"), ("rtt_p99_us", "p99_us", "us"), ("rtt_p999_us", "p999_us", "us")],
        "W2" => &[("msgs_per_s", "msgs_per_s", "msg/s")],
        "W3" => &[("GBps", "GBps", "GB/s"), ("MiBps", "MiBps", "MiB/s"), ("msgs_per_s", "msgs_per_s", "msg/s")],
        "S1" => &[
            ("msgs_per_s_spread_10000_sessions", "msgs_per_s_spread", "msg/s"),
            ("msgs_per_s_one_session", "msgs_per_s_one", "msg/s"),
            ("spread_vs_one_ratio", "spread_vs_one", "ratio"),
            ("open_close_per_s", "open_close_per_s", "pairs/s"),
        ],
        "S2" => &[("rss_bytes_per_idle_session", "bytes_per_session", "B")],
        "S3" => &[
            ("msgs_per_s", "msgs_per_s", "msg/s"),
            ("rtt_median_us", "median_us", "us"),
            ("rtt_p99_us", "p99_us", "us"),
            ("rtt_p999_us", "p999_us", "us"),
        ],
        _ => &[],
    }
}

type Key = [String; 7];

fn parse_line(line: &str) -> Option<(bool, Vec<(String, String)>)> {
    let (kind, rest) = line.split_once(' ')?;
    let ok = match kind {
        "RESULT" => true,
        "FAIL" => false,
        _ => return None,
    };
    Some((ok, rest.split_whitespace().filter_map(|f| f.split_once('=')).map(|(k, v)| (k.into(), v.into())).collect()))
}

/// The Markdown table (printed) and the CSV (written), from the run lines.
fn aggregate(lines: &[String], csv: &Path) -> Result<String, String> {
    let mut order: Vec<Key> = Vec::new();
    let mut runs: HashMap<Key, (Vec<HashMap<String, String>>, usize)> = HashMap::new();
    for l in lines {
        let Some((ok, kv)) = parse_line(l) else { continue };
        let kv: HashMap<String, String> = kv.into_iter().collect();
        let g = |k: &str| kv.get(k).cloned().unwrap_or_default();
        let key: Key = [g("peer"), g("transport"), g("workload"), g("variant"), g("size"), g("window"), g("pin")];
        if !runs.contains_key(&key) {
            order.push(key.clone());
        }
        let e = runs.entry(key).or_default();
        if ok {
            e.0.push(kv);
        } else {
            e.1 += 1;
        }
    }
    let mut rows = String::from(
        "peer,transport,workload,variant,size_bytes,window,pin,iters,runs_ok,metric,unit,median_of_runs,min_of_runs,max_of_runs\n",
    );
    let mut table: Vec<[String; 9]> = Vec::new();
    for key in &order {
        let (rs, fails) = &runs[key];
        let [peer, tr, wl, var, size, win, pin] = key.clone();
        let shown_win = if win == "0" { "-".to_string() } else { win.clone() };
        let base = [peer.clone(), tr.clone(), wl.clone(), var.clone(), size_h(&size), shown_win, pin.clone()];
        if rs.is_empty() {
            let _ = writeln!(rows, "{},,0,FAILED,,,,", key.join(","));
            let [a, b, c, d, e, f, g] = base;
            table.push([a, b, c, d, e, f, g, "FAILED".into(), format!("{fails} of {fails} runs failed")]);
            continue;
        }
        let iters = rs[0].get("iters").cloned().unwrap_or_default();
        let mut agg: HashMap<&str, (f64, f64, f64)> = HashMap::new();
        for (name, field, unit) in metrics(&wl) {
            let mut v: Vec<f64> = rs.iter().filter_map(|r| r.get(*field)?.parse().ok()).collect();
            if v.is_empty() {
                continue;
            }
            v.sort_by(|a, b| a.partial_cmp(b).unwrap());
            let med = if v.len() % 2 == 1 { v[v.len() / 2] } else { (v[v.len() / 2 - 1] + v[v.len() / 2]) / 2.0 };
            let (lo, hi) = (v[0], v[v.len() - 1]);
            agg.insert(*name, (med, lo, hi));
            let _ = writeln!(rows, "{},{iters},{},{name},{unit},{med:.4},{lo:.4},{hi:.4}", key.join(","), rs.len());
        }
        let a = |n: &str| agg.get(n).copied().unwrap_or((f64::NAN, f64::NAN, f64::NAN));
        let (fig, spread) = match wl.as_str() {
            "W1" => {
                let (m, p, q) = (a("rtt_median_us"), a("rtt_p99_us"), a("rtt_p999_us"));
                (
                    format!("median {} us; p99 {}; p99.9 {}", fmt_fig(m.0), fmt_fig(p.0), fmt_fig(q.0)),
                    format!(
                        "median {}-{}; p99 {}-{}; p99.9 {}-{}",
                        fmt_fig(m.1), fmt_fig(m.2), fmt_fig(p.1), fmt_fig(p.2), fmt_fig(q.1), fmt_fig(q.2)
                    ),
                )
            }
            "W2" => {
                let m = a("msgs_per_s");
                (format!("{} msg/s", fmt_fig(m.0)), format!("{}-{}", fmt_fig(m.1), fmt_fig(m.2)))
            }
            "W3" => {
                let (g, mi) = (a("GBps"), a("MiBps"));
                (format!("{:.2} GB/s ({} MiB/s)", g.0, fmt_fig(mi.0)), format!("{:.2}-{:.2} GB/s", g.1, g.2))
            }
            "S1" => {
                let (sp, one, r, oc) =
                    (a("msgs_per_s_spread_10000_sessions"), a("msgs_per_s_one_session"), a("spread_vs_one_ratio"), a("open_close_per_s"));
                (
                    format!(
                        "10000 sessions {} msg/s vs 1 session {} (x{:.2}); open+close {}/s",
                        fmt_fig(sp.0), fmt_fig(one.0), r.0, fmt_fig(oc.0)
                    ),
                    format!(
                        "10000: {}-{}; 1: {}-{}; x{:.2}-{:.2}; open+close {}-{}",
                        fmt_fig(sp.1), fmt_fig(sp.2), fmt_fig(one.1), fmt_fig(one.2), r.1, r.2, fmt_fig(oc.1), fmt_fig(oc.2)
                    ),
                )
            }
            "S2" => {
                let b = a("rss_bytes_per_idle_session");
                (format!("{} B RSS per idle session", fmt_fig(b.0)), format!("{}-{} B", fmt_fig(b.1), fmt_fig(b.2)))
            }
            "S3" => {
                let (t, m, p) = (a("msgs_per_s"), a("rtt_median_us"), a("rtt_p99_us"));
                (
                    format!("{} msg/s; median {} us; p99 {}", fmt_fig(t.0), fmt_fig(m.0), fmt_fig(p.0)),
                    format!("{}-{}; median {}-{}; p99 {}-{}", fmt_fig(t.1), fmt_fig(t.2), fmt_fig(m.1), fmt_fig(m.2), fmt_fig(p.1), fmt_fig(p.2)),
                )
            }
            _ => ("?".into(), "?".into()),
        };
        let n_ok = if *fails > 0 { format!("{} ({fails} failed)", rs.len()) } else { rs.len().to_string() };
        let [a1, b1, c1, d1, e1, f1, g1] = base;
        table.push([a1, b1, c1, d1, e1, f1, g1, fig, format!("{spread} [n={n_ok}]")]);
    }
    if let Some(d) = csv.parent() {
        let _ = fs::create_dir_all(d);
    }
    fs::write(csv, rows).map_err(|e| format!("{}: {e}", csv.display()))?;
    let hdr = ["peer", "transport", "workload", "variant", "size", "window", "pin", "figure (median of runs)", "spread over runs (min-max)"];
    let mut w: Vec<usize> = hdr.iter().map(|h| h.chars().count()).collect();
    for r in &table {
        for (i, x) in r.iter().enumerate() {
            w[i] = w[i].max(x.chars().count());
        }
    }
    let line = |r: &[String]| {
        let cells: Vec<String> = r.iter().enumerate().map(|(i, x)| format!("{x:<width$}", width = w[i])).collect();
        format!("| {} |", cells.join(" | "))
    };
    let mut out = String::new();
    let _ = writeln!(out, "{}", line(&hdr.iter().map(|s| s.to_string()).collect::<Vec<_>>()));
    let _ = writeln!(out, "|{}|", w.iter().map(|x| "-".repeat(x + 2)).collect::<Vec<_>>().join("|"));
    for r in &table {
        let _ = writeln!(out, "{}", line(r));
    }
    Ok(out)
}

fn orchestrate(args: &[String]) -> ExitCode {
    let o = match parse_opts(args) {
        Ok(o) => o,
        Err(e) => {
            if !e.is_empty() {
                eprintln!("mpsperf: {e}");
            }
            eprintln!("{USAGE}");
            return if e.is_empty() { ExitCode::SUCCESS } else { ExitCode::from(2) };
        }
    };
    let n = match Counts::from_env(o.quick) {
        Ok(n) => n,
        Err(e) => {
            eprintln!("mpsperf: {e}");
            return ExitCode::from(2);
        }
    };
    let mut o = o;
    let ncpu = online_cpus();
    let mut notes = Vec::new();
    if ncpu < 2 && o.pins.iter().any(|p| p == "split") {
        notes.push("only 1 CPU online: placement split skipped".to_string());
        o.pins.retain(|p| p != "split");
    }
    for note in &notes {
        eprintln!("mpsperf: note: {note}");
    }
    // Orphans of a run (a receiver whose sender died) come to us to be reaped.
    // SAFETY: prctl with constant arguments.
    unsafe { libc::prctl(libc::PR_SET_CHILD_SUBREAPER, 1) };
    install_signal_handlers();

    let all = cases(&o, &n);
    let logs = o.runs.parent().unwrap_or(Path::new(".")).join("logs");
    for d in [o.runs.parent(), o.csv.parent(), Some(logs.as_path())].into_iter().flatten() {
        if let Err(e) = fs::create_dir_all(d) {
            eprintln!("mpsperf: {}: {e}", d.display());
            return ExitCode::from(2);
        }
    }
    let mut meta = vec![
        format!("mpsperf: {}", args.join(" ")),
        format!("date: {}", utc_now()),
        format!("kernel: {}", read_trim("/proc/sys/kernel/osrelease")),
        format!("cpus: {ncpu}"),
        format!("clocksource: {}", read_trim("/sys/devices/system/clocksource/clocksource0/current_clocksource")),
        format!("loadavg_before: {}", read_trim("/proc/loadavg").split(' ').take(3).collect::<Vec<_>>().join(" ")),
        format!("pin: {}  reps: {}", o.pins.join(","), n.reps),
    ];
    meta.extend(notes.iter().map(|s| format!("note: {s}")));
    let mut runs_file = match OpenOptions::new().create(true).append(true).open(&o.runs) {
        Ok(f) => f,
        Err(e) => {
            eprintln!("mpsperf: {}: {e}", o.runs.display());
            return ExitCode::from(2);
        }
    };
    for m in &meta {
        let _ = writeln!(runs_file, "# {m}");
    }
    eprintln!("mpsperf: {} cases x {} repetitions; logs in {}", all.len(), n.reps, logs.display());
    let timeout = Duration::from_secs(n.run_timeout);
    let t_start = Instant::now();
    let mut lines = Vec::new();
    let mut failed = false;
    'reps: for rep in 1..=n.reps {
        for c in &all {
            let r = run_one(c, rep, &logs, timeout);
            println!("{}", r.line);
            let _ = std::io::stdout().flush();
            let _ = writeln!(runs_file, "{}", r.line);
            eprintln!("mpsperf: rep {rep}: {} {}", c.id(), if r.ok { "ok" } else { "FAILED" });
            failed |= !r.ok;
            lines.push(r.line);
            if r.interrupted {
                eprintln!("mpsperf: interrupted");
                break 'reps;
            }
        }
    }
    let _ = writeln!(runs_file, "# loadavg_after: {}", read_trim("/proc/loadavg").split(' ').take(3).collect::<Vec<_>>().join(" "));
    let _ = writeln!(runs_file, "# elapsed_s: {}", t_start.elapsed().as_secs());
    drop(runs_file);
    // Reap anything still ours (nothing, normally).
    loop {
        let mut st = 0;
        // SAFETY: non-blocking wait for our own children.
        if unsafe { libc::waitpid(-1, &mut st, libc::WNOHANG) } <= 0 {
            break;
        }
    }
    println!();
    for m in &meta {
        println!("{m}");
    }
    println!();
    match aggregate(&lines, &o.csv) {
        Ok(t) => print!("{t}"),
        Err(e) => {
            eprintln!("mpsperf: {e}");
            failed = true;
        }
    }
    println!("\nCSV written to {}; every single run is appended to {}", o.csv.display(), o.runs.display());
    if failed || INTERRUPTED.load(Ordering::SeqCst) {
        eprintln!("mpsperf: some runs FAILED: see the logs in {}", logs.display());
        return ExitCode::from(3);
    }
    ExitCode::SUCCESS
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match args.first().map(String::as_str) {
        Some("__sender") => match Case::from_args(&args[1..]) {
            Ok(c) => sender_main(c),
            Err(e) => fatal("sender", &e),
        },
        Some("__receiver") => match Case::from_args(&args[1..]) {
            Ok(c) => receiver_main(c),
            Err(e) => fatal("receiver", &e),
        },
        _ => orchestrate(&args),
    }
}
