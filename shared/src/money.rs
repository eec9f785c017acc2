//! The one money type of the workspace. Orders carry money as decimal strings ("132.00",
//! "0.5", sometimes "0" or ""); they are parsed exactly (no floats: 0.1 + 0.2 must print 0.30)
//! and printed with at least two decimals. wix-ingest checks amounts with
//! [`Money::parse_plain`] (what Wix sends), wix-print's `SubmitOrder` with
//! [`crate::validate`] (what a receipt can print), the receipts print [`Money`], the queue
//! compares totals with it.

use std::fmt;

/// More fraction digits than any currency uses; longer fractions are treated as invalid
/// rather than rounded (rounding would print an amount nobody charged).
const MAX_SCALE: u32 = 6;
/// Far beyond any order total, far below what `i128` holds, so arithmetic cannot overflow
/// in practice (and is checked anyway).
const MAX_DIGITS: usize = 30;
/// Longest amount string [`Money::parse_plain`] accepts.
pub const MAX_PLAIN_CHARS: usize = 40;

/// A decimal amount: `minor / 10^scale`, with `2 <= scale <= MAX_SCALE`. Equality is by
/// value ("1.50" == "1.5").
#[derive(Debug, Clone, Copy)]
pub struct Money {
    minor: i128,
    scale: u32,
}

impl PartialEq for Money {
    fn eq(&self, other: &Money) -> bool {
        self.checked_add(other.negated()).is_some_and(Money::is_zero)
    }
}

impl Eq for Money {}

impl PartialOrd for Money {
    fn partial_cmp(&self, other: &Money) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for Money {
    /// By value. Parsed amounts have at most 30 digits and scale 6, so the difference never
    /// overflows; if it did, they would compare equal rather than panic.
    fn cmp(&self, other: &Money) -> std::cmp::Ordering {
        self.checked_add(other.negated()).map(|d| d.minor.cmp(&0)).unwrap_or(std::cmp::Ordering::Equal)
    }
}

impl Money {
    pub const ZERO: Money = Money { minor: 0, scale: 2 };

    /// Parses "132", "132.00", "-3.2", "+0.5", ".5"; surrounding whitespace is ignored.
    /// Anything else (empty, "abc", "1e3", "1,50", absurdly long) is `None`: absent.
    pub fn parse(s: &str) -> Option<Money> {
        let s = s.trim();
        let (negative, s) = match s.as_bytes().first()? {
            b'-' => (true, &s[1..]),
            b'+' => (false, &s[1..]),
            _ => (false, s),
        };
        let (int, frac) = s.split_once('.').unwrap_or((s, ""));
        if int.is_empty() && frac.is_empty() {
            return None;
        }
        if !int.bytes().chain(frac.bytes()).all(|b| b.is_ascii_digit()) {
            return None;
        }
        let int = int.trim_start_matches('0');
        let frac = frac.trim_end_matches('0');
        let scale = u32::try_from(frac.len()).ok().filter(|&n| n <= MAX_SCALE)?.max(2);
        if int.len() + scale as usize > MAX_DIGITS {
            return None;
        }
        let mut minor: i128 = 0;
        for b in int.bytes().chain(frac.bytes()) {
            minor = minor.checked_mul(10)?.checked_add(i128::from(b - b'0'))?;
        }
        // `frac` may be shorter than the scale (".5" has scale 2): pad with zeros.
        minor = minor.checked_mul(10i128.checked_pow(scale - frac.len() as u32)?)?;
        Some(Money { minor: if negative { -minor } else { minor }, scale })
    }

    /// The strict form orders carry: `-?digits(.digits)?`, nothing around it, at most
    /// [`MAX_PLAIN_CHARS`] characters, and printable (at most 6 fraction digits that are not
    /// trailing zeros, at most 30 significant digits). ".5", "+1", " 1", "1e3" are `None`.
    pub fn parse_plain(s: &str) -> Option<Money> {
        if s.is_empty() || s.len() > MAX_PLAIN_CHARS {
            return None;
        }
        let unsigned = s.strip_prefix('-').unwrap_or(s);
        let (whole, fraction) = match unsigned.split_once('.') {
            Some((w, f)) => (w, Some(f)),
            None => (unsigned, None),
        };
        let digits = |part: &str| !part.is_empty() && part.bytes().all(|b| b.is_ascii_digit());
        if !(digits(whole) && fraction.is_none_or(digits)) {
            return None;
        }
        Money::parse(s)
    }

    pub fn is_negative(self) -> bool {
        self.minor < 0
    }

    /// `Money::parse`, but zero counts as absent too (for optional summary lines).
    pub fn parse_nonzero(s: &str) -> Option<Money> {
        Money::parse(s).filter(|m| !m.is_zero())
    }

    pub fn is_zero(self) -> bool {
        self.minor == 0
    }

    pub fn abs(self) -> Money {
        Money { minor: self.minor.abs(), scale: self.scale }
    }

    pub fn negated(self) -> Money {
        Money { minor: -self.minor, scale: self.scale }
    }

    pub fn checked_add(self, other: Money) -> Option<Money> {
        let scale = self.scale.max(other.scale);
        let a = self.minor.checked_mul(10i128.checked_pow(scale - self.scale)?)?;
        let b = other.minor.checked_mul(10i128.checked_pow(scale - other.scale)?)?;
        Some(Money { minor: a.checked_add(b)?, scale })
    }

    pub fn checked_mul(self, quantity: u32) -> Option<Money> {
        Some(Money { minor: self.minor.checked_mul(i128::from(quantity))?, scale: self.scale })
    }
}

impl fmt::Display for Money {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let unit = 10u128.pow(self.scale);
        let abs = self.minor.unsigned_abs();
        let sign = if self.minor < 0 { "-" } else { "" };
        write!(f, "{sign}{}.{:0width$}", abs / unit, abs % unit, width = self.scale as usize)
    }
}

#[cfg(test)]
mod tests {
    use super::Money;

    fn fmt(s: &str) -> Option<String> {
        Money::parse(s).map(|m| m.to_string())
    }

    #[test]
    fn formats_with_at_least_two_decimals_exactly() {
        assert_eq!(fmt("132").as_deref(), Some("132.00"));
        assert_eq!(fmt("132.00").as_deref(), Some("132.00"));
        assert_eq!(fmt("0.5").as_deref(), Some("0.50"));
        assert_eq!(fmt("-3.2").as_deref(), Some("-3.20"));
        assert_eq!(fmt(" +7 ").as_deref(), Some("7.00"));
        assert_eq!(fmt(".5").as_deref(), Some("0.50"));
        assert_eq!(fmt("5.").as_deref(), Some("5.00"));
        assert_eq!(fmt("007.10").as_deref(), Some("7.10"));
        assert_eq!(fmt("0").as_deref(), Some("0.00"));
        assert_eq!(fmt("-0.00").as_deref(), Some("0.00"));
        assert_eq!(fmt("1.005").as_deref(), Some("1.005"));
        assert_eq!(fmt("1.0050000").as_deref(), Some("1.005"));
    }

    #[test]
    fn invalid_strings_are_absent() {
        for s in ["", " ", "-", ".", "abc", "1e3", "1,50", "1.2.3", "--1", "1 000", "0x10", "1.0000001", "١٢"] {
            assert_eq!(Money::parse(s), None, "{s:?}");
        }
        assert_eq!(Money::parse(&"9".repeat(10_000)), None);
    }

    #[test]
    fn plain_amounts_are_strict_and_compare_by_value() {
        for s in ["132.00", "0", "-2.50", "3.5", "1.005", "007"] {
            assert_eq!(Money::parse_plain(s), Money::parse(s), "{s}");
            assert!(Money::parse_plain(s).is_some(), "{s}");
        }
        for s in ["", ".5", "5.", "+1", " 1", "1e3", "12,50", "1.0000001", &"9".repeat(41), "-"] {
            assert_eq!(Money::parse_plain(s), None, "{s:?}");
        }
        let m = |s: &str| Money::parse(s).unwrap();
        assert!(m("200.00") >= m("200"));
        assert!(m("199.99") < m("200"));
        assert!(m("-1") < m("0"));
        assert!(m("-1").is_negative() && !m("0").is_negative());
    }

    #[test]
    fn arithmetic_is_exact() {
        let a = Money::parse("0.1").unwrap();
        let b = Money::parse("0.2").unwrap();
        assert_eq!(a.checked_add(b).unwrap().to_string(), "0.30");
        assert_eq!(Money::parse("26.00").unwrap().checked_mul(3).unwrap().to_string(), "78.00");
        assert_eq!(Money::parse("1.005").unwrap().checked_add(b).unwrap().to_string(), "1.205");
        assert_eq!(Money::parse("2").unwrap().negated().to_string(), "-2.00");
        assert_eq!(Money::parse("-2").unwrap().abs().to_string(), "2.00");
        assert_eq!(Money::parse_nonzero("0.00"), None);
        assert_eq!(Money::parse("1.5"), Money::parse("1.500"));
        assert_eq!(Money::parse("0.005").unwrap().checked_add(Money::parse("0.005").unwrap()), Money::parse("0.01"));
        assert_ne!(Money::parse("1.5"), Money::parse("-1.5"));
    }
}
