//! Fuzz target `confirm`: the bytes go to `mps::fuzzing::confirm`, which drives the
//! library's own code (docs/FUZZING.md).
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| mps::fuzzing::confirm(data));
