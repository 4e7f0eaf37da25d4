//! Fuzz target `frame_decoder`: the bytes go to `mps::fuzzing::frame_decoder`, which drives the
//! library's own code (docs/FUZZING.md).
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| mps::fuzzing::frame_decoder(data));
