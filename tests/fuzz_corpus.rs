//! Replays every committed fuzz input as an ordinary test, on stable: each
//! file of `fuzz/corpus/<target>/` and `fuzz/regressions/<target>/` goes
//! through the same `mps::fuzzing` entry point the fuzz target calls
//! (docs/FUZZING.md). So every `cargo test` run exercises the corpus, and a
//! crash the fuzzer once found stays fixed.
//!
//! `cargo test --test fuzz_corpus -- --ignored write_seeds` (re)writes the
//! hand-made seeds (`seed-*` files) from the library's real encoders.

use mps::cmi::frame::{self, Hello, Kind, MessageHead, MODE_ASYNC, MODE_SYNC};
use mps::{SpId, Status};
use std::path::{Path, PathBuf};
use std::sync::mpsc;
use std::time::Duration;

/// Fewer corpus files than this for a target means the corpus is missing
/// (a wrong path, a lost directory): the replay must not pass on nothing.
const MIN_CORPUS_FILES: usize = 10;

/// One input may take this long before the test calls it a hang. The
/// entries are bounded at 5 s (the fuzzed link's dead-peer timeout); the
/// rest is slack for a loaded machine.
const WATCHDOG: Duration = Duration::from_secs(60);

fn fuzz_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz")
}

fn files_in(dir: &Path) -> Vec<PathBuf> {
    let Ok(rd) = std::fs::read_dir(dir) else { return Vec::new() };
    let mut v: Vec<PathBuf> = rd.map(|e| e.expect("readable directory entry").path()).filter(|p| p.is_file()).collect();
    v.sort();
    v
}

/// Runs every corpus and regression file of `target` through `entry`, each
/// on its own thread under a watchdog; fails listing every file that
/// panicked or hung.
fn replay(target: &str, entry: fn(&[u8])) {
    let corpus = files_in(&fuzz_dir().join("corpus").join(target));
    assert!(
        corpus.len() >= MIN_CORPUS_FILES,
        "fuzz/corpus/{target} holds {} files, expected at least {MIN_CORPUS_FILES}",
        corpus.len()
    );
    let regressions = files_in(&fuzz_dir().join("regressions").join(target));
    let mut failures = Vec::new();
    for path in corpus.iter().chain(&regressions) {
        let data = std::fs::read(path).expect("readable corpus file");
        let (tx, rx) = mpsc::channel();
        let t = std::thread::spawn(move || {
            let r = std::panic::catch_unwind(|| entry(&data));
            let _ = tx.send(r.is_ok());
        });
        match rx.recv_timeout(WATCHDOG) {
            Ok(true) => t.join().expect("replay thread"),
            Ok(false) => {
                let _ = t.join();
                failures.push(format!("{}: panicked", path.display()));
            }
            // The thread is left behind: the test fails anyway.
            Err(_) => failures.push(format!("{}: still running after {WATCHDOG:?}", path.display())),
        }
    }
    assert!(failures.is_empty(), "{} of {} inputs of {target} failed:\n{}", failures.len(), corpus.len() + regressions.len(), failures.join("\n"));
    eprintln!("{target}: {} corpus files and {} regressions replayed", corpus.len(), regressions.len());
}

#[test]
fn frame_decoder_corpus_replays() {
    replay("frame_decoder", mps::fuzzing::frame_decoder);
}

#[test]
fn handshake_corpus_replays() {
    replay("handshake", mps::fuzzing::handshake);
}

#[test]
fn confirm_corpus_replays() {
    replay("confirm", mps::fuzzing::confirm);
}

#[test]
fn config_corpus_replays() {
    replay("config", mps::fuzzing::config);
}

// --- the hand-made seeds -------------------------------------------------------

fn hello(version_min: u16, version_max: u16, sp: SpId) -> Vec<u8> {
    Hello { version_min, version_max, sp, max_message: 1 << 20, heartbeat_ms: 250, dead_timeout_ms: 3000 }.encode().to_vec()
}

fn message(id: u64, tag: u32, mode: u8, name: &[u8], payload: &[u8]) -> Vec<u8> {
    let mut head = [0u8; frame::MAX_MESSAGE_HEAD];
    let h = MessageHead { id, conduit: 1, domain: u32::from_le_bytes(*b"DOMA"), tag, mode };
    let n = frame::encode_message_head(&mut head, &h, name, payload.len() as u32);
    let mut f = head[..n].to_vec();
    f.extend_from_slice(payload);
    f
}

fn confirms(entries: &[(u64, Status)]) -> Vec<u8> {
    let mut f = Vec::new();
    frame::encode_confirms(&mut f, entries);
    f
}

fn cat(parts: &[&[u8]]) -> Vec<u8> {
    parts.concat()
}

/// Seeds for the link's stream after the handshake (also what follows a HELLO).
fn stream_seeds() -> Vec<(&'static str, Vec<u8>)> {
    let hb = frame::heartbeat().to_vec();
    let sync = message(1, 7, MODE_SYNC, b"Mirror", b"hello, peer");
    let asyn = message(2, 8, MODE_ASYNC, b"Mirror", &[0xa5; 300]);
    let refused = message(3, 2, MODE_ASYNC, b"Cache", b"refused by tag");
    let conf = confirms(&[(1, Status::STATUS_SUCCESS), (2, Status::STATUS_OBJECT_NAME_NOT_FOUND), (9, Status(-1))]);
    let mut bad_flags = hb.clone();
    bad_flags[5] = 1;
    let mut unknown = hb.clone();
    unknown[4] = 9;
    let mut not_utf8 = message(4, 0, MODE_SYNC, b"ab\xffd", b"x");
    not_utf8[8 + 24 + 2] = 0xff;
    vec![
        ("heartbeat", hb.clone()),
        ("message-sync", sync.clone()),
        ("message-async", asyn.clone()),
        ("message-refused", refused.clone()),
        ("message-long-name", message(5, 1, MODE_SYNC, &[b'n'; frame::MAX_NAME_BYTES], b"p")),
        ("message-empty-payload", message(6, 1, MODE_ASYNC, b"M", b"")),
        ("confirm", conf.clone()),
        ("mixed", cat(&[&hb, &sync, &refused, &conf, &asyn, &hb])),
        ("truncated-prefix", sync[..5].to_vec()),
        ("truncated-head", sync[..20].to_vec()),
        ("truncated-payload", asyn[..asyn.len() - 100].to_vec()),
        ("truncated-confirm", conf[..conf.len() - 3].to_vec()),
        ("second-hello", cat(&[&hb, &hello(1, 1, SpId::b(0))])),
        ("bad-flags", bad_flags),
        ("unknown-kind", unknown),
        ("name-not-utf8", not_utf8),
    ]
}

/// Version-2 frames for the stream seeds (the decoder runs every input on a
/// version-2 link too): numbered MESSAGEs and CONFIRMs, acknowledgements,
/// a duplicate, a gap, a RESUME where none belongs.
fn stream_seeds_v2() -> Vec<(&'static str, Vec<u8>)> {
    let m = |seq: u64, ack: u64, id: u64| {
        let mut head = [0u8; frame::MAX_MESSAGE_HEAD];
        let h = MessageHead { id, conduit: 1, domain: u32::from_le_bytes(*b"DOMA"), tag: 7, mode: MODE_SYNC };
        let n = frame::encode_message_head_v(&mut head, &h, b"Mirror", 5, Some((seq, ack)));
        let mut f = head[..n].to_vec();
        f.extend_from_slice(b"hello");
        f
    };
    let mut conf = Vec::new();
    frame::encode_confirms_v(&mut conf, &[(1, Status::STATUS_SUCCESS)], Some((3, 0)));
    let hb = frame::heartbeat_v2(0).to_vec();
    let resume = frame::Resume { incarnation: 5, peer_incarnation: 0, received: 0, flags: 0 }.encode().to_vec();
    vec![
        ("v2-messages", cat(&[&m(1, 0, 1), &hb, &m(2, 0, 2)])),
        ("v2-duplicate", cat(&[&m(1, 0, 1), &m(1, 0, 1), &m(2, 0, 2)])),
        ("v2-gap", cat(&[&m(1, 0, 1), &m(3, 0, 2)])),
        ("v2-ack-never-sent", cat(&[&m(1, 9, 1)])),
        ("v2-confirm-unknown", cat(&[&m(1, 0, 1), &m(2, 0, 2), &conf])),
        ("v2-heartbeat-ack", frame::heartbeat_v2(3).to_vec()),
        ("v2-resume-after-handshake", cat(&[&hb, &resume])),
        ("v2-refuse", frame::refuse(frame::REFUSE_CONFLICT).to_vec()),
    ]
}

fn confirm_seeds() -> Vec<(&'static str, Vec<u8>)> {
    let body = |entries: &[(u64, Status)]| confirms(entries)[8..].to_vec();
    let one = body(&[(1, Status::STATUS_SUCCESS)]);
    let many: Vec<(u64, Status)> = (0..300u64).map(|i| (i * 7919, Status(i as i32 - 150))).collect();
    let mut lying = one.clone();
    lying[0] = 2;
    vec![
        ("one", one.clone()),
        ("three", body(&[(1, Status::STATUS_SUCCESS), (u64::MAX, Status::STATUS_INSUFFICIENT_RESOURCES), (0, Status(0x7fff_ffff))])),
        ("many", body(&many)),
        ("count-too-high", lying),
        ("count-zero", vec![0, 0, 0, 0]),
        ("short", vec![1, 0]),
        ("empty", vec![]),
        ("truncated", one[..10].to_vec()),
        ("trailing-byte", cat(&[&one, &[0]])),
        ("count-huge", cat(&[&u32::MAX.to_le_bytes(), &one[4..]])),
    ]
}

fn handshake_seeds() -> Vec<(&'static str, Vec<u8>)> {
    let h = hello(1, 1, SpId::b(0));
    let mut bad_magic = h.clone();
    bad_magic[8] = b'X';
    let mut reserved = h.clone();
    reserved[8 + 28..].copy_from_slice(&[1, 2, 3, 4]);
    let stream = stream_seeds();
    let mixed = &stream.iter().find(|(n, _)| *n == "mixed").expect("mixed seed").1;
    let many: Vec<u8> = (0..40).flat_map(|i| message(i, i as u32, MODE_ASYNC, b"Mirror", b"0123456789")).collect();
    vec![
        ("hello", h.clone()),
        ("hello-then-frames", cat(&[&h, mixed])),
        ("hello-then-many-frames", cat(&[&h, &many])),
        ("hello-newer-range", hello(1, 3, SpId::a(1))),
        ("hello-no-common-version", hello(2, 3, SpId::b(0))),
        ("hello-empty-range", hello(3, 1, SpId::b(0))),
        ("hello-bad-magic", bad_magic),
        ("hello-bad-side", {
            let mut f = h.clone();
            f[8 + 12] = 2;
            f
        }),
        ("hello-reserved-bytes", reserved),
        ("hello-truncated", h[..30].to_vec()),
        ("hello-twice", cat(&[&h, &h])),
        ("message-first", message(1, 0, MODE_SYNC, b"Mirror", b"x")),
        ("heartbeat-first", frame::heartbeat().to_vec()),
    ]
}

fn config_seeds() -> Vec<(&'static str, Vec<u8>)> {
    let example = std::fs::read(Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/mps-two-units.toml")).expect("example config");
    let t = |s: &str| s.as_bytes().to_vec();
    vec![
        ("example-two-units", example),
        ("minimal", t("sp = \"0.A\"\n")),
        ("inproc", t("sp = \"1.b\"\nlisten = \"inproc:x\"\n[[peer]]\nsp = \"1.A\"\naddress = \"inproc:y\"\n")),
        ("tcp-ipv6", t("sp = \"0.B\"\nlisten = \"tcp:[::1]:0\"\n[[peer]]\nsp = \"0.A\"\naddress = \"tcp:[::1]:7001\"\n")),
        ("all-tables", t("sp = \"0.A\"\nconduits = [0, 4294967295]\n[limits]\nmax_message_size = 1\nsession_queue_depth = 1\nsession_queue_bytes = 1024\nasync_sends_per_session = 1\nsocket_send_buffer = 0\n[heartbeat]\ninterval_ms = 10\ndead_peer_timeout_ms = 20\n[reconnect]\ninitial_backoff_ms = 1\nmax_backoff_ms = 1\n[callbacks]\nthreads = 64\n")),
        ("bad-missing-sp", t("listen = \"unix:/tmp/x.sock\"\n")),
        ("bad-unknown-key", t("sp = \"0.A\"\ncolour = \"blue\"\n")),
        ("bad-wrong-type", t("sp = \"0.A\"\n[limits]\nmax_message_size = \"big\"\n")),
        ("bad-own-peer", t("sp = \"0.A\"\n[[peer]]\nsp = \"0.A\"\naddress = \"inproc:a\"\n")),
        ("bad-duplicate-peer", t("sp = \"0.A\"\n[[peer]]\nsp = \"0.B\"\naddress = \"inproc:a\"\n[[peer]]\nsp = \"0.b\"\naddress = \"inproc:b\"\n")),
        ("bad-port-zero-peer", t("sp = \"0.A\"\n[[peer]]\nsp = \"0.B\"\naddress = \"tcp:localhost:0\"\n")),
        ("bad-relative-unix", t("sp = \"0.A\"\nlisten = \"unix:relative.sock\"\n")),
        ("bad-heartbeat", t("sp = \"0.A\"\n[heartbeat]\ninterval_ms = 100\ndead_peer_timeout_ms = 150\n")),
        ("bad-backoff", t("sp = \"0.A\"\n[reconnect]\ninitial_backoff_ms = 50\nmax_backoff_ms = 10\n")),
        ("bad-sp-side", t("sp = \"0.C\"\n")),
        ("bad-toml", t("sp = \"0.A\n[[peer\n")),
        ("bad-out-of-range", t("sp = \"0.A\"\n[callbacks]\nthreads = 0\n[limits]\nmax_message_size = 268435457\n")),
    ]
}

/// Writes the seeds above into `fuzz/corpus/<target>/seed-<name>`.
#[test]
#[ignore = "writes files into fuzz/corpus: run by hand when the seeds change"]
fn write_seeds() {
    let stream = stream_seeds();
    let frame_seeds: Vec<(&str, Vec<u8>)> = stream.iter().cloned().chain(stream_seeds_v2()).collect();
    let all = [
        ("frame_decoder", frame_seeds),
        ("handshake", handshake_seeds()),
        ("confirm", confirm_seeds()),
        ("config", config_seeds()),
    ];
    for (target, seeds) in all {
        let dir = fuzz_dir().join("corpus").join(target);
        std::fs::create_dir_all(&dir).expect("corpus directory");
        for (name, bytes) in seeds {
            std::fs::write(dir.join(format!("seed-{name}")), bytes).expect("seed written");
        }
    }
    // The prefix kinds are all covered by some seed.
    let kinds: Vec<Kind> = stream.iter().filter_map(|(_, b)| b.get(..8)).filter_map(|p| frame::parse_prefix(p.try_into().unwrap(), 1 << 20).ok()).map(|p| p.kind).collect();
    for k in [Kind::Message, Kind::Confirm, Kind::Heartbeat] {
        assert!(kinds.contains(&k), "no seed starts with a {k:?} frame");
    }
}
