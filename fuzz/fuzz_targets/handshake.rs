//! Fuzz target `handshake`: the bytes go to `mps::fuzzing::handshake`, which drives the
//! library's own code (docs/FUZZING.md).
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| mps::fuzzing::handshake(data));
