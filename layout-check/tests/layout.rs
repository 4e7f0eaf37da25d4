//! The C ABI of `mps` against `include/mps.h`: ctest's generated checks (see
//! build.rs). Every check compares the compiled `mps` crate (sizes, alignments,
//! offsets, constant values, function addresses) with the C compiler's view of
//! the header; a mismatch prints `bad ...` and fails. Mismatched field types,
//! typedef targets or function prototypes fail earlier, when build.rs compiles
//! the C side with -Werror.
//!
//! Run: `cargo test -p mps-layout-check` (also part of `cargo test --workspace`).
//! `MPS_LAYOUT_CHECK_INCLUDE_DIR=/some/dir` checks `/some/dir/mps.h` instead of
//! `include/mps.h`. The header is the one on disk when build.rs runs: cargo does
//! not order this build script after mps's (which rewrites the header), so the
//! first run after an API change in src/ may check the previous header; the
//! next run checks again (build.rs reruns when mps.h changes).
#![allow(bad_style, dead_code, unused_imports, clippy::all)]

use mps::ffi::*;
use mps::status::raw::*;
use std::ffi::*;

mod extras {
    #![allow(bad_style, dead_code, unused_imports)]
    use super::*;
    include!(concat!(env!("OUT_DIR"), "/extras.rs"));
}
use extras::*;

include!(concat!(env!("OUT_DIR"), "/rust_only.rs"));
include!(concat!(env!("OUT_DIR"), "/mps_layout.rs"));
