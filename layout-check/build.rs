//! Generates the layout check of `mps::ffi` against `include/mps.h` with ctest 0.5.
//!
//! ctest reads a Rust file (expanded by rustc, never compiled), and writes a C
//! file that it compiles against the header (with -Werror) and a Rust file that
//! `tests/layout.rs` compiles against the real `mps` crate and runs. The file it
//! reads is generated here, `ctest_input.rs` in OUT_DIR:
//!
//! - `src/ffi/types.rs` itself (`#[path]`): every `#[repr(C)]` struct (size,
//!   alignment, field offsets, field sizes, field types, by-value round trip),
//!   every `pub type` (size, alignment, signedness) and every `pub const`.
//! - `src/status_table.rs` (`include!`), through a local `status_table!` that
//!   declares `pub const STATUS_X: NTSTATUS` as `mps::status::raw` does: the
//!   Rust value compared is `mps::status::raw::STATUS_X`, the C one the header's
//!   `#define`.
//! - `extras.rs`, generated from types.rs and api.rs (ctest 0.5 reads no Rust
//!   enums and no function signatures):
//!   - each `#[repr(C)] enum`: one `pub const` per variant (compared with the
//!     C enumerator of the same name) and an alias `<ENUM>__C_ENUM` (renamed
//!     to the C `<ENUM>`) for its size and alignment;
//!   - `MPS_LAYOUT_CHECK_TYPEDEFS`: one member per `pub type X = T;`, of type
//!     `T` on the Rust side and of the C typedef `X` in C. ctest's field-type
//!     check (`&b->X` returned as a `T *`) makes the C compiler refuse a
//!     typedef whose target differs (a pointer to another struct, a signed
//!     type for an unsigned one), which a size check alone would not see;
//!   - `MPS_LAYOUT_CHECK_FNS`: one member per `#[no_mangle] extern "C" fn` of
//!     api.rs, of its Rust signature as a function pointer on the Rust side and
//!     of `__typeof__(Fn) *` in C: the same check makes the C compiler refuse a
//!     header prototype whose parameters or return type differ.
//! - an `extern "C"` block with the functions of api.rs, for ctest's check that
//!   the header's function and the Rust one are the same symbol.
//!
//! `mps_layout_check.h` in OUT_DIR holds the C side of the two check structs.
//! Set MPS_LAYOUT_CHECK_INCLUDE_DIR to check another directory's `mps.h`.

use std::env;
use std::fmt::Write as _;
use std::fs;
use std::path::{Path, PathBuf};

use quote::ToTokens;

/// A Rust `#[no_mangle] extern "C" fn`: name, parameters (name, type) and return type.
struct Sig {
    name: String,
    params: Vec<(String, String)>,
    ret: Option<String>,
}

fn tokens(t: &impl ToTokens) -> String {
    t.to_token_stream().to_string()
}

fn parse(path: &Path) -> syn::File {
    let src = fs::read_to_string(path).unwrap_or_else(|e| panic!("reading {}: {e}", path.display()));
    syn::parse_file(&src).unwrap_or_else(|e| panic!("parsing {}: {e}", path.display()))
}

fn is_pub(vis: &syn::Visibility) -> bool {
    matches!(vis, syn::Visibility::Public(_))
}

/// `#[no_mangle]` or `#[unsafe(no_mangle)]`.
fn is_no_mangle(attrs: &[syn::Attribute]) -> bool {
    attrs.iter().any(|a| {
        a.path().is_ident("no_mangle")
            || (a.path().is_ident("unsafe")
                && a.meta.require_list().is_ok_and(|l| l.tokens.to_string().trim() == "no_mangle"))
    })
}

fn has_repr(attrs: &[syn::Attribute]) -> bool {
    attrs.iter().any(|a| a.path().is_ident("repr"))
}

/// The exported functions of api.rs, in file order.
fn exported_fns(api: &syn::File) -> Vec<Sig> {
    let mut out = Vec::new();
    for item in &api.items {
        let syn::Item::Fn(f) = item else { continue };
        let abi_c = f.sig.abi.as_ref().is_some_and(|abi| abi.name.as_ref().is_none_or(|n| n.value() == "C"));
        if !(is_pub(&f.vis) && abi_c && is_no_mangle(&f.attrs)) {
            continue;
        }
        assert!(f.sig.variadic.is_none(), "{}: variadic functions are not checked", f.sig.ident);
        let params = f
            .sig
            .inputs
            .iter()
            .map(|arg| match arg {
                syn::FnArg::Typed(pt) => {
                    let name = match &*pt.pat {
                        syn::Pat::Ident(i) => i.ident.to_string(),
                        _ => "_".to_string(),
                    };
                    (name, tokens(&*pt.ty))
                }
                syn::FnArg::Receiver(_) => unreachable!("extern \"C\" fn with self"),
            })
            .collect();
        let ret = match &f.sig.output {
            syn::ReturnType::Default => None,
            syn::ReturnType::Type(_, ty) => Some(tokens(&**ty)),
        };
        out.push(Sig { name: f.sig.ident.to_string(), params, ret });
    }
    out
}

fn fn_ptr_type(s: &Sig) -> String {
    let params: Vec<String> = s.params.iter().map(|(n, t)| format!("{n}: {t}")).collect();
    let ret = s.ret.as_ref().map(|r| format!(" -> {r}")).unwrap_or_default();
    format!("unsafe extern \"C\" fn({}){ret}", params.join(", "))
}

fn rust_str(p: &Path) -> String {
    format!("{:?}", p.to_str().expect("UTF-8 path"))
}

fn write(path: &Path, text: &str) {
    // Rewrite only on change, so that the test is not rebuilt for nothing.
    if fs::read_to_string(path).ok().as_deref() != Some(text) {
        fs::write(path, text).unwrap_or_else(|e| panic!("writing {}: {e}", path.display()));
    }
}

fn main() {
    let manifest = PathBuf::from(env::var("CARGO_MANIFEST_DIR").unwrap());
    let root = manifest.parent().expect("layout-check/ is inside the mps crate").to_path_buf();
    let types_rs = root.join("src/ffi/types.rs");
    let api_rs = root.join("src/ffi/api.rs");
    let status_table_rs = root.join("src/status_table.rs");
    let include_dir = env::var_os("MPS_LAYOUT_CHECK_INCLUDE_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| root.join("include"));
    let header = include_dir.join("mps.h");
    assert!(header.is_file(), "{} not found", header.display());

    println!("cargo:rerun-if-changed=build.rs");
    println!("cargo:rerun-if-env-changed=MPS_LAYOUT_CHECK_INCLUDE_DIR");
    for p in [&types_rs, &api_rs, &status_table_rs, &header] {
        println!("cargo:rerun-if-changed={}", p.display());
    }

    let out = PathBuf::from(env::var("OUT_DIR").unwrap());
    let types = parse(&types_rs);
    let api = parse(&api_rs);

    // typedefs and enums of types.rs
    let mut aliases: Vec<(String, String)> = Vec::new();
    let mut enums: Vec<(String, Vec<String>)> = Vec::new();
    let mut opaque: Vec<String> = Vec::new();
    for item in &types.items {
        match item {
            syn::Item::Struct(s) if is_pub(&s.vis) && s.fields.iter().all(|f| !is_pub(&f.vis)) => {
                opaque.push(s.ident.to_string());
            }
            syn::Item::Type(t) if is_pub(&t.vis) && t.generics.params.is_empty() => {
                aliases.push((t.ident.to_string(), tokens(&*t.ty)));
            }
            syn::Item::Enum(e) if is_pub(&e.vis) && has_repr(&e.attrs) => {
                let variants = e.variants.iter().map(|v| v.ident.to_string()).collect();
                enums.push((e.ident.to_string(), variants));
            }
            _ => {}
        }
    }
    let fns = exported_fns(&api);
    assert!(!fns.is_empty(), "no #[no_mangle] extern \"C\" fn found in {}", api_rs.display());
    assert!(!aliases.is_empty(), "no pub type found in {}", types_rs.display());

    // extras.rs: shared by the ctest input and tests/layout.rs.
    let mut extras = String::from(
        "// Generated by layout-check/build.rs from src/ffi/types.rs and src/ffi/api.rs.\n\
         // Read by ctest (through ctest_input.rs) and compiled into tests/layout.rs.\n\
         #[allow(unused_imports)]\nuse std::ffi::*;\n\n",
    );
    for (name, variants) in &enums {
        let _ = writeln!(
            extras,
            "/// `{name}` for ctest's size and alignment check (it reads no Rust enum); C name `{name}`.\n\
             pub type {name}__C_ENUM = {name};"
        );
        for v in variants {
            let _ = writeln!(extras, "pub const {v}: {name} = {name}::{v};");
        }
        extras.push('\n');
    }
    extras.push_str(
        "/// One member per typedef of types.rs, of the aliased Rust type; in C, of the typedef.\n\
         #[repr(C)]\npub struct MPS_LAYOUT_CHECK_TYPEDEFS {\n",
    );
    for (name, ty) in &aliases {
        let _ = writeln!(extras, "    pub {name}: {ty},");
    }
    extras.push_str(
        "}\n\n/// One member per exported function of api.rs, of its Rust signature; in C, of the header's.\n\
         #[repr(C)]\npub struct MPS_LAYOUT_CHECK_FNS {\n",
    );
    for s in &fns {
        let _ = writeln!(extras, "    pub {}: Option<{}>,", s.name, fn_ptr_type(s));
    }
    extras.push_str("}\n");
    write(&out.join("extras.rs"), &extras);

    // rust_only.rs: the real functions must fit the signatures read from api.rs.
    let mut rust_only = String::from(
        "// Generated by layout-check/build.rs: compiled into tests/layout.rs only.\n\
         const _: MPS_LAYOUT_CHECK_FNS = MPS_LAYOUT_CHECK_FNS {\n",
    );
    for s in &fns {
        let _ = writeln!(rust_only, "    {0}: Some({0} as {1}),", s.name, fn_ptr_type(s));
    }
    rust_only.push_str("};\n");
    write(&out.join("rust_only.rs"), &rust_only);

    // ctest_input.rs: what ctest reads.
    let mut input = format!(
        "// Generated by layout-check/build.rs: read by ctest (expanded by rustc, never compiled).\n\
         #![allow(warnings)]\n\
         // For rustc's expansion only: `libc::wchar_t` in types.rs must resolve. Private, so\n\
         // not checked; tests/layout.rs uses the real libc crate.\n\
         extern crate self as libc;\n\
         type wchar_t = i32;\n\n\
         #[path = {types}]\n\
         pub mod types;\n\
         pub use types::*;\n\n\
         /// The status table, declared as src/status.rs declares `mps::status::raw`.\n\
         pub mod status_raw {{\n\
         \x20   use super::*;\n\
         \x20   macro_rules! status_table {{\n\
         \x20       ($($name:ident = $val:expr, $doc:expr;)*) => {{ $(pub const $name: NTSTATUS = $val as u32 as i32;)* }};\n\
         \x20   }}\n\
         \x20   include!({table});\n\
         }}\n\
         pub use status_raw::*;\n\n\
         pub mod extras {{\n\
         \x20   use super::*;\n\
         \x20   include!({extras});\n\
         }}\n\
         pub use extras::*;\n\n\
         use std::ffi::*;\n\
         extern \"C\" {{\n",
        types = rust_str(&types_rs),
        table = rust_str(&status_table_rs),
        extras = rust_str(&out.join("extras.rs")),
    );
    for s in &fns {
        let params: Vec<String> = s.params.iter().map(|(n, t)| format!("{n}: {t}")).collect();
        let ret = s.ret.as_ref().map(|r| format!(" -> {r}")).unwrap_or_default();
        let _ = writeln!(input, "    pub fn {}({}){ret};", s.name, params.join(", "));
    }
    input.push_str("}\n");
    let input_path = out.join("ctest_input.rs");
    write(&input_path, &input);

    // mps_layout_check.h: the C side of the two check structs.
    let mut h = String::from(
        "/* Generated by layout-check/build.rs. */\n\
         #ifndef MPS_LAYOUT_CHECK_H\n#define MPS_LAYOUT_CHECK_H\n#include <mps.h>\n\n\
         struct MPS_LAYOUT_CHECK_TYPEDEFS {\n",
    );
    for (name, _) in &aliases {
        let _ = writeln!(h, "    {name} {name};");
    }
    h.push_str("};\n\nstruct MPS_LAYOUT_CHECK_FNS {\n");
    for s in &fns {
        let _ = writeln!(h, "    __typeof__({0}) *{0};", s.name);
    }
    h.push_str("};\n\n#endif\n");
    write(&out.join("mps_layout_check.h"), &h);

    let enum_aliases: Vec<String> = enums.iter().map(|(n, _)| format!("{n}__C_ENUM")).collect();
    let renames = enum_aliases.clone();
    let mut cfg = ctest::TestGenerator::new();
    cfg.include(&include_dir)
        .include(&out)
        .header("mps.h")
        .header("mps_layout_check.h")
        .edition(2021)
        // Private items are not C API: types.rs's `const _` layout asserts, the
        // expansion-only `wchar_t` above.
        .skip_private(true)
        // Opaque structs (no public field, e.g. MPS_FILAMENT): C has no
        // definition to measure. Pointers to them are checked as typedefs.
        .skip_struct(move |s| opaque.iter().any(|o| o == s.ident()))
        .rename_type(move |t| renames.iter().any(|a| a == t).then(|| t.trim_end_matches("__C_ENUM").to_string()))
        // A by-value round trip writes bytes that are no valid enum value.
        .skip_roundtrip(move |id| enum_aliases.iter().any(|a| a == id));
    if let Err(e) = ctest::generate_test(&mut cfg, &input_path, "mps_layout.rs") {
        panic!("ctest could not generate the layout check: {e}");
    }
}
