//! Generates include/mps.h with cbindgen. The header is committed; CI regenerates
//! it and fails on any difference (`git diff --exit-code include/mps.h`).

use std::fmt::Write as _;
use std::path::PathBuf;

// The status table, shared with src/status.rs.
macro_rules! status_table {
    ($($name:ident = $val:expr, $doc:expr;)*) => {
        const STATUSES: &[(&str, u32, &str)] = &[$((stringify!($name), $val, $doc)),*];
    };
}
include!("src/status_table.rs");

fn nt_prelude() -> String {
    let mut s = String::new();
    s.push_str(
        "\n/* NT base types. Guarded: a file that already has them (its own NT\n\
         * compatibility header, or Windows' ntdef.h) defines MPS_NT_BASE_TYPES_DEFINED\n\
         * (or _NTDEF_) first. NT is LLP64: ULONG and LONG are 32 bits here too. */\n\
         #if !defined(MPS_NT_BASE_TYPES_DEFINED) && !defined(_NTDEF_)\n\
         #define MPS_NT_BASE_TYPES_DEFINED 1\n\
         typedef int32_t NTSTATUS;\n\
         typedef uint32_t ULONG;\n\
         typedef int32_t LONG;\n\
         typedef void *PVOID;\n\
         typedef wchar_t WCHAR;\n\
         typedef WCHAR *PWCHAR;\n\
         #endif\n\n\
         #ifndef NT_SUCCESS\n\
         /** True for success and informational statuses (STATUS_PENDING, STATUS_TIMEOUT). */\n\
         #define NT_SUCCESS(Status) (((NTSTATUS)(Status)) >= 0)\n\
         #endif\n\n\
         /* NTSTATUS values used by libmps (README.md has the table of when each is returned).\n\
         * Each is guarded so that ntstatus.h or a port's own definitions may come first. */\n",
    );
    for (name, val, doc) in STATUSES {
        let _ = write!(
            s,
            "#ifndef {name}\n/** {doc} */\n#define {name} ((NTSTATUS)0x{val:08X}L)\n#endif\n"
        );
    }
    s
}

fn main() {
    println!("cargo:rerun-if-changed=src");
    println!("cargo:rerun-if-changed=cbindgen.toml");
    println!("cargo:rerun-if-changed=build.rs");

    let crate_dir = PathBuf::from(std::env::var("CARGO_MANIFEST_DIR").unwrap());
    let mut config = cbindgen::Config::from_file(crate_dir.join("cbindgen.toml"))
        .expect("cbindgen.toml is readable and valid");
    config.after_includes = Some(nt_prelude());

    let bindings = match cbindgen::Builder::new()
        .with_config(config)
        // Only the C layer: nothing else in the crate belongs in the header.
        .with_src(crate_dir.join("src/ffi/types.rs"))
        .with_src(crate_dir.join("src/ffi/api.rs"))
        .generate()
    {
        Ok(b) => b,
        Err(e) => panic!("cbindgen could not generate include/mps.h: {e}"),
    };
    let out = crate_dir.join("include").join("mps.h");
    // write_to_file leaves the file alone when the content is unchanged, so
    // the header's mtime only moves when the API does.
    bindings.write_to_file(out);
}
