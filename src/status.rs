//! NTSTATUS values (SPEC section 3): one table, shared with the header generator.

use std::fmt;

/// An NT status code. `Status::SUCCESS` and the informational values
/// (`PENDING`, `TIMEOUT`) are not errors in the NT sense; see [`Status::is_success`].
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct Status(pub i32);

macro_rules! status_table {
    ($($name:ident = $val:expr, $doc:expr;)*) => {
        /// The raw NTSTATUS constants, exported to C (as guarded `#define`s).
        pub mod raw {
            $(
                #[doc = $doc]
                pub const $name: i32 = $val as u32 as i32;
            )*
        }
        impl Status {
            $(
                #[doc = $doc]
                #[allow(non_upper_case_globals)]
                pub const $name: Status = Status($val as u32 as i32);
            )*
            /// The constant's name, e.g. `"STATUS_SUCCESS"`, or `None` for a value not in the table.
            pub fn name(self) -> Option<&'static str> {
                match self.0 as u32 {
                    $( v if v == $val => Some(stringify!($name)), )*
                    _ => None,
                }
            }
            /// Every status in the table, for tests and documentation.
            pub const ALL: &'static [(&'static str, Status)] = &[$((stringify!($name), Status($val as u32 as i32))),*];
        }
    };
}
include!("status_table.rs");

impl Status {
    /// `NT_SUCCESS`: true for success and informational values (severity bits 00 or 01).
    pub fn is_success(self) -> bool {
        self.0 >= 0
    }
}

impl fmt::Debug for Status {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.name() {
            Some(n) => write!(f, "{n}"),
            None => write!(f, "NTSTATUS(0x{:08X})", self.0 as u32),
        }
    }
}

impl fmt::Display for Status {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.name() {
            Some(n) => write!(f, "{n} (0x{:08X})", self.0 as u32),
            None => write!(f, "NTSTATUS(0x{:08X})", self.0 as u32),
        }
    }
}

impl std::error::Error for Status {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_are_the_nt_values() {
        assert_eq!(Status::STATUS_PENDING.0, 0x103);
        assert_eq!(Status::STATUS_INVALID_HANDLE.0 as u32, 0xC000_0008);
        assert_eq!(Status::STATUS_DEVICE_BUSY.0 as u32, 0x8000_0011);
        assert!(!Status::STATUS_DEVICE_BUSY.is_success());
        assert!(Status::STATUS_TIMEOUT.is_success());
    }

    #[test]
    fn names_are_unique_and_round_trip() {
        let mut seen = std::collections::HashSet::new();
        for (name, st) in Status::ALL {
            assert!(seen.insert(st.0), "{name} duplicates a value");
            assert_eq!(st.name(), Some(*name));
        }
        assert_eq!(Status(0x1234).name(), None);
    }
}
