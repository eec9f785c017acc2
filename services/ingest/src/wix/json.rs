//! Tolerant readers for Wix JSON and the sanitising every mapped string goes through.
//!
//! Wix adds fields and enum values over time and leaves out what does not apply, so a reader
//! here never fails: a missing field, `null` or a value of the wrong type reads as "unknown"
//! (empty string, `None`). The callers decide which unknowns are errors.

use std::str::FromStr;

use prost_types::Timestamp;
use serde_json::Value;
use wixprint_shared::money::Money;
use wixprint_shared::time::try_ms_from_timestamp;

/// Longest string (in characters) this module hands on. Longer text is cut, not refused: a
/// kitchen ticket is better with a shortened note than without the order. Ids are the exception
/// (see `MAX_ID_CHARS`), because cutting a key could make two keys equal.
pub const MAX_TEXT_CHARS: usize = wixprint_shared::validate::MAX_TEXT_CHARS;

/// Longest id (event id, order id) accepted; Wix ids are 36-character UUIDs.
pub(super) const MAX_ID_CHARS: usize = wixprint_shared::validate::MAX_ID_CHARS;

/// Follows `path` through nested objects. `None` as soon as a step is missing or not an object.
pub(super) fn at<'a>(value: &'a Value, path: &[&str]) -> Option<&'a Value> {
    path.iter().try_fold(value, |v, key| v.as_object()?.get(*key))
}

/// Like [`at`], starting from an optional value.
pub(super) fn at_opt<'a>(value: Option<&'a Value>, path: &[&str]) -> Option<&'a Value> {
    value.and_then(|v| at(v, path))
}

/// The value when it is a JSON object; `null`, strings and the like count as absent.
pub(super) fn object(value: Option<&Value>) -> Option<&Value> {
    value.filter(|v| v.is_object())
}

/// The elements of an array; anything else reads as empty.
pub(super) fn array(value: Option<&Value>) -> &[Value] {
    match value {
        Some(Value::Array(items)) => items,
        _ => &[],
    }
}

/// A string field, sanitised. Numbers are accepted and written out (Wix sends `number` as a
/// string, but a number there is no reason to lose it); everything else reads as empty.
pub(super) fn text(value: Option<&Value>) -> String {
    match value {
        Some(Value::String(s)) => clean(s),
        Some(Value::Number(n)) => n.to_string(),
        _ => String::new(),
    }
}

/// A Wix translatable text `{original, translated}`: the translation when there is one, else the
/// original. A bare string is taken as is.
pub(super) fn localized(value: Option<&Value>) -> String {
    match value {
        Some(Value::Object(_)) => {
            let translated = text(value.and_then(|v| v.get("translated")));
            if translated.is_empty() { text(value.and_then(|v| v.get("original"))) } else { translated }
        }
        other => text(other),
    }
}

/// A Wix price `{amount: "26.00", formattedAmount}` (or a bare amount) as the decimal string Wix
/// sent. Money never goes through `f64`: the string is kept exactly, and only checked to be a
/// plain decimal so that a ticket never prints garbage as a price. Anything else is "unknown"
/// (empty).
pub(super) fn amount(value: Option<&Value>) -> String {
    let raw = match value {
        Some(Value::Object(price)) => price.get("amount"),
        other => other,
    };
    let candidate = match raw {
        Some(Value::String(s)) => s.trim().to_owned(),
        Some(Value::Number(n)) => n.to_string(),
        _ => return String::new(),
    };
    if is_decimal(&candidate) { candidate } else { String::new() }
}

/// `-?digits(.digits)?`, at most 40 characters and printable: what Wix sends for money
/// ("132.00", "0"). The one money type decides ([`Money::parse_plain`]).
fn is_decimal(s: &str) -> bool {
    Money::parse_plain(s).is_some()
}

/// An RFC 3339 instant; anything unparsable, or whose milliseconds would not fit
/// ([`try_ms_from_timestamp`]), is "unknown" rather than an error, because a wrong date must
/// not cost the order.
pub(super) fn timestamp(value: Option<&Value>) -> Option<Timestamp> {
    value
        .and_then(Value::as_str)
        .and_then(|s| Timestamp::from_str(s.trim()).ok())
        .filter(|t| try_ms_from_timestamp(t).is_ok())
}

/// Removes what must never reach a ticket, a log line or a database row: control characters
/// (NUL, ESC, which would drive the printer, …) and invisible bidi/format marks that can make a
/// text display differently from what it contains. Line breaks and tabs become one space, so
/// words stay apart. The result is trimmed and cut to [`MAX_TEXT_CHARS`] characters.
pub(super) fn clean(s: &str) -> String {
    let mut out = String::with_capacity(s.len().min(MAX_TEXT_CHARS));
    let mut chars = 0;
    let mut pending_space = false;
    for c in s.chars() {
        if is_break(c) {
            pending_space = true;
            continue;
        }
        if c.is_control() || is_invisible_format(c) {
            continue;
        }
        if pending_space && !out.is_empty() && chars < MAX_TEXT_CHARS {
            out.push(' ');
            chars += 1;
        }
        pending_space = false;
        if chars == MAX_TEXT_CHARS {
            break;
        }
        out.push(c);
        chars += 1;
    }
    let trimmed = out.trim();
    if trimmed.len() == out.len() { out } else { trimmed.to_owned() }
}

fn is_break(c: char) -> bool {
    matches!(c, '\t' | '\n' | '\u{0B}' | '\u{0C}' | '\r' | '\u{85}' | '\u{2028}' | '\u{2029}')
}

fn is_invisible_format(c: char) -> bool {
    matches!(c, '\u{200B}' | '\u{200E}' | '\u{200F}' | '\u{202A}'..='\u{202E}' | '\u{2066}'..='\u{2069}' | '\u{FEFF}')
}

/// A short rendering of a JSON value for an error message: never the whole of a hostile value.
pub(super) fn shown(value: &Value) -> String {
    let full = match value {
        Value::String(s) => format!("{:?}", clean(s)),
        other => other.to_string(),
    };
    if full.chars().count() <= 40 { full } else { format!("{}…", full.chars().take(40).collect::<String>()) }
}

/// The JSON type of a value, for error messages.
pub(super) fn type_name(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn clean_strips_control_and_bidi_characters_and_keeps_words_apart() {
        assert_eq!(clean("Bitte\u{0}ohne\u{1B}@ Koriander"), "Bitteohne@ Koriander");
        assert_eq!(clean("  erste Zeile\r\nzweite\tZeile \n"), "erste Zeile zweite Zeile");
        assert_eq!(clean("\u{202E}gnuhcsitamuA\u{FEFF}"), "gnuhcsitamuA");
        assert_eq!(clean("Käsespätzle, Weißbier"), "Käsespätzle, Weißbier");
    }

    #[test]
    fn clean_cuts_long_text_at_the_character_limit() {
        let long = "ä".repeat(5000);
        let cleaned = clean(&long);
        assert_eq!(cleaned.chars().count(), MAX_TEXT_CHARS);
        assert!(cleaned.chars().all(|c| c == 'ä'));
        let spaced = "a\n".repeat(3000);
        assert!(clean(&spaced).chars().count() <= MAX_TEXT_CHARS);
    }

    #[test]
    fn amount_keeps_decimal_strings_exactly_and_refuses_garbage() {
        assert_eq!(amount(Some(&json!({"amount": "132.00", "formattedAmount": "CHF 132.00"}))), "132.00");
        assert_eq!(amount(Some(&json!({"amount": "0"}))), "0");
        assert_eq!(amount(Some(&json!({"amount": "-2.50"}))), "-2.50");
        assert_eq!(amount(Some(&json!({"amount": 3.5}))), "3.5");
        for garbage in
            [json!({"amount": "12,50"}), json!({"amount": "1e9"}), json!({"amount": ".5"}), json!({}), json!(null)]
        {
            assert_eq!(amount(Some(&garbage)), "", "{garbage}");
        }
        assert_eq!(amount(None), "");
    }

    #[test]
    fn readers_tolerate_absence_and_wrong_types() {
        let v = json!({"a": {"b": "x"}, "n": 10033, "arr": 5, "t": "2025-09-24T18:24:00Z"});
        assert_eq!(text(at(&v, &["a", "b"])), "x");
        assert_eq!(text(at(&v, &["a", "b", "c"])), "");
        assert_eq!(text(v.get("n")), "10033");
        assert!(array(v.get("arr")).is_empty());
        assert_eq!(timestamp(v.get("t")).map(|t| t.seconds), Some(1_758_738_240));
        assert_eq!(timestamp(Some(&json!("24.09.25 20:24"))), None);
        // Parsable, but past what a ticket can show: unknown, never an overflow later.
        assert_eq!(timestamp(Some(&json!("9999-12-31T23:59:59Z"))), None);
        assert!(timestamp(Some(&json!("9999-01-01T00:00:00Z"))).is_some());
        assert_eq!(localized(Some(&json!({"original": "Nam Tok", "translated": ""}))), "Nam Tok");
        assert_eq!(localized(Some(&json!({"original": "Reis", "translated": "Rice"}))), "Rice");
    }

    #[test]
    fn shown_never_echoes_a_whole_hostile_value() {
        assert_eq!(shown(&json!(-2)), "-2");
        assert_eq!(shown(&json!("abc")), "\"abc\"");
        assert!(shown(&json!("x".repeat(10_000))).chars().count() <= 41);
    }
}
