//! Storage processor identities (SPEC section 1): a storage unit and SP A or B within it.

use std::fmt;
use std::str::FromStr;

/// One SP's identity. Ordered by unit, then A before B; the lower of two SPs
/// dials the link between them (docs/PROTOCOL.md).
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct SpId {
    /// The storage unit's number.
    pub unit: u32,
    /// 0 for SP A, 1 for SP B. Other values are never configured and so never reachable.
    pub sp: u32,
}

impl SpId {
    /// SP A of `unit`.
    pub const fn a(unit: u32) -> SpId {
        SpId { unit, sp: 0 }
    }
    /// SP B of `unit`.
    pub const fn b(unit: u32) -> SpId {
        SpId { unit, sp: 1 }
    }
    /// The other SP of the same storage unit (A <-> B), if this is A or B.
    pub fn partner(self) -> Option<SpId> {
        match self.sp {
            0 => Some(SpId::b(self.unit)),
            1 => Some(SpId::a(self.unit)),
            _ => None,
        }
    }
}

impl fmt::Display for SpId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.sp {
            0 => write!(f, "{}.A", self.unit),
            1 => write!(f, "{}.B", self.unit),
            n => write!(f, "{}.?{}", self.unit, n),
        }
    }
}

impl fmt::Debug for SpId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

impl FromStr for SpId {
    type Err = String;
    /// Parses `<unit>.<A|B>`, e.g. `0.B` (the letter in either case).
    fn from_str(s: &str) -> Result<SpId, String> {
        let (unit, side) = s
            .split_once('.')
            .ok_or_else(|| format!("SP id {s:?} is not of the form <unit>.<A|B>, e.g. 0.A"))?;
        let unit: u32 = unit
            .parse()
            .map_err(|_| format!("SP id {s:?}: storage unit {unit:?} is not a number"))?;
        let sp = match side {
            "A" | "a" => 0,
            "B" | "b" => 1,
            _ => return Err(format!("SP id {s:?}: the SP must be A or B, not {side:?}")),
        };
        Ok(SpId { unit, sp })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_prints() {
        let id: SpId = "12.B".parse().unwrap();
        assert_eq!(id, SpId::b(12));
        assert_eq!(id.to_string(), "12.B");
        assert_eq!(id.partner(), Some(SpId::a(12)));
    }

    #[test]
    fn refuses_malformed_ids() {
        for bad in ["", "0", "0.C", "x.A", "-1.A", "0.AB", "99999999999.A"] {
            assert!(bad.parse::<SpId>().is_err(), "{bad:?} was accepted");
        }
    }

    #[test]
    fn orders_by_unit_then_side() {
        assert!(SpId::a(0) < SpId::b(0));
        assert!(SpId::b(0) < SpId::a(1));
    }
}
