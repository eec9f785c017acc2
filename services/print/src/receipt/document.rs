//! The rendered receipt: styled lines, and their two outputs (plain text, ESC/POS bytes).

use super::Layout;
use super::text::printable;

/// A rendered receipt: what prints, line by line.
#[derive(Debug, Clone, PartialEq)]
pub struct Document {
    pub lines: Vec<Line>,
}

/// One printed line. `text` carries no alignment padding; alignment is applied on output.
#[derive(Debug, Clone, PartialEq)]
pub struct Line {
    pub text: String,
    pub size: Size,
    pub bold: bool,
    pub reverse: bool,
    pub align: Align,
}

/// Character size (`GS ! n`). The double-width sizes halve the columns of a line.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Size {
    Normal,
    DoubleHeight,
    DoubleWidth,
    Double,
}

impl Size {
    /// Font A columns one character of this size takes.
    pub fn column_factor(self) -> usize {
        match self {
            Size::Normal | Size::DoubleHeight => 1,
            Size::DoubleWidth | Size::Double => 2,
        }
    }

    /// Characters that fit on one line of `width` Font A columns.
    pub fn columns(self, width: usize) -> usize {
        width / self.column_factor()
    }

    /// The `n` of `GS ! n`: width multiplier - 1 in the high nibble, height - 1 in the low.
    fn escpos(self) -> u8 {
        match self {
            Size::Normal => 0x00,
            Size::DoubleHeight => 0x01,
            Size::DoubleWidth => 0x10,
            Size::Double => 0x11,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Align {
    Left,
    Center,
    Right,
}

impl Align {
    /// The `n` of `ESC a n`.
    fn escpos(self) -> u8 {
        match self {
            Align::Left => 0,
            Align::Center => 1,
            Align::Right => 2,
        }
    }

    /// Spaces in front of `len` chars on a line of `columns` chars.
    fn padding(self, len: usize, columns: usize) -> usize {
        match self {
            Align::Left => 0,
            Align::Center => columns.saturating_sub(len) / 2,
            Align::Right => columns.saturating_sub(len),
        }
    }
}

const ESC: u8 = 0x1B;
const GS: u8 = 0x1D;
const LF: u8 = 0x0A;

impl Document {
    /// Plain text exactly as it prints: one line per [`Line`], alignment applied with leading
    /// spaces for the line's effective width (`width / 2` for double-width sizes), each line
    /// ending in '\n'. Text is shown in its printable form for the layout's code page (what
    /// the printer receives), so a preview never shows characters the paper will not.
    pub fn to_text(&self, layout: &Layout) -> String {
        let mut out = String::new();
        for line in &self.lines {
            let text = printable(&line.text, layout.code_page);
            if !text.is_empty() {
                let pad = line.align.padding(text.chars().count(), line.size.columns(layout.width));
                out.extend(std::iter::repeat_n(' ', pad));
                out.push_str(&text);
            }
            out.push('\n');
        }
        out
    }

    /// The ticket as ESC/POS: initialise, select the code table, each line with its full
    /// style (`GS !`, `ESC E`, `GS B`, `ESC a`; set on every line so no line depends on the
    /// state left by another), reset the styles, feed 3 lines and cut (`GS V 66 0`).
    ///
    /// Ends with the cut on purpose: the printer driver appends its confirmation request
    /// (`GS ( H` / `GS r`) after it, so the confirmation means "printed and cut".
    pub fn to_escpos(&self, layout: &Layout) -> Vec<u8> {
        let mut out = Vec::with_capacity(64 + self.lines.iter().map(|l| l.text.len() + 13).sum::<usize>());
        out.extend_from_slice(&[ESC, b'@', ESC, b't', layout.code_page.escpos_table()]);
        for line in &self.lines {
            out.extend_from_slice(&[GS, b'!', line.size.escpos()]);
            out.extend_from_slice(&[ESC, b'E', u8::from(line.bold)]);
            out.extend_from_slice(&[GS, b'B', u8::from(line.reverse)]);
            out.extend_from_slice(&[ESC, b'a', line.align.escpos()]);
            // `printable` first so the bytes match `to_text` one for one; `encode` then never
            // needs to drop or transliterate anything.
            out.extend(layout.code_page.encode(&printable(&line.text, layout.code_page)));
            out.push(LF);
        }
        out.extend_from_slice(&[GS, b'!', 0, ESC, b'E', 0, GS, b'B', 0, ESC, b'a', 0]);
        out.extend_from_slice(&[ESC, b'd', 3]);
        out.extend_from_slice(&[GS, b'V', 66, 0]);
        out
    }
}
