//! Character encoding for ESC/POS code pages: PC858 (Epson table 19, with €) and WPC1252
//! (table 16). Encoding never fails: characters outside the page are transliterated where a
//! faithful ASCII form exists, else replaced by `?`. Layout code decides what to do earlier;
//! this module only turns text into bytes and bytes back into text.

use crate::codepage_tables::{PC858_HIGH, WPC1252_HIGH};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum CodePage {
    Pc858,
    Wpc1252,
}

impl CodePage {
    /// The `n` of `ESC t n` that selects this table on Epson TM printers.
    pub fn escpos_table(self) -> u8 {
        match self {
            CodePage::Pc858 => 19,
            CodePage::Wpc1252 => 16,
        }
    }

    fn high(self) -> &'static [char; 128] {
        match self {
            CodePage::Pc858 => &PC858_HIGH,
            CodePage::Wpc1252 => &WPC1252_HIGH,
        }
    }

    /// Decodes one byte (printable range) to its character.
    pub fn decode_byte(self, b: u8) -> char {
        if b < 0x80 { b as char } else { self.high()[(b - 0x80) as usize] }
    }

    /// Decodes bytes that are known to be text (no commands) to a string.
    pub fn decode(self, bytes: &[u8]) -> String {
        bytes.iter().map(|&b| self.decode_byte(b)).collect()
    }

    /// The byte for `c` if this code page has it.
    pub fn encode_char(self, c: char) -> Option<u8> {
        if (c as u32) >= 0x20 && (c as u32) < 0x7F {
            return Some(c as u8);
        }
        self.high().iter().position(|&h| h == c && h != '\u{FFFD}').map(|i| 0x80 + i as u8)
    }

    /// True when `c` prints as itself on this code page.
    pub fn can_encode(self, c: char) -> bool {
        self.encode_char(c).is_some()
    }

    /// Encodes text; control characters are dropped, unknown characters transliterated or `?`.
    pub fn encode(self, text: &str) -> Vec<u8> {
        let mut out = Vec::with_capacity(text.len());
        for c in text.chars() {
            if let Some(b) = self.encode_char(c) {
                out.push(b);
            } else if c.is_control() {
                continue;
            } else if let Some(t) = transliterate(c) {
                out.extend(t.bytes());
            } else {
                out.push(b'?');
            }
        }
        out
    }
}

/// ASCII stand-ins for common typographic characters no receipt code page has.
pub fn transliterate(c: char) -> Option<&'static str> {
    Some(match c {
        '\u{2018}' | '\u{2019}' | '\u{201A}' | '\u{2032}' => "'",
        '\u{201C}' | '\u{201D}' | '\u{201E}' | '\u{2033}' => "\"",
        '\u{2010}' | '\u{2011}' | '\u{2012}' | '\u{2013}' | '\u{2014}' | '\u{2212}' => "-",
        '\u{2026}' => "...",
        '\u{00A0}' | '\u{2002}' | '\u{2003}' | '\u{2009}' | '\u{202F}' => " ",
        '\u{2022}' => "*",
        '\u{20AC}' => "EUR",
        '\u{2122}' => "TM",
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pc858_has_the_german_letters_and_euro_at_epson_codes() {
        let cp = CodePage::Pc858;
        assert_eq!(cp.encode("ÄÖÜäöüß€"), vec![0x8E, 0x99, 0x9A, 0x84, 0x94, 0x81, 0xE1, 0xD5]);
        assert_eq!(cp.decode(&cp.encode("Grüße aus Zürich €")), "Grüße aus Zürich €");
    }

    #[test]
    fn wpc1252_has_euro_at_0x80() {
        let cp = CodePage::Wpc1252;
        assert_eq!(cp.encode("Ä€"), vec![0xC4, 0x80]);
    }

    #[test]
    fn unknown_characters_become_ascii_or_question_mark_never_control_bytes() {
        let cp = CodePage::Pc858;
        assert_eq!(cp.encode("„Hi“ – ok\u{0}\u{1b}"), b"\"Hi\" - ok".to_vec());
        assert_eq!(cp.encode("ก"), b"?".to_vec());
    }
}
