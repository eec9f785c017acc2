//! The rendered receipt: styled lines (text or a QR code), and their two outputs (plain text,
//! ESC/POS bytes).

use super::Layout;
use super::text::{columns_of, fit_columns, needs_raster, printable, qr_data};
use crate::glyphs::Bitmap;

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
    /// A QR code printed instead of `text` (empty on such a line): the data it encodes.
    pub qr: Option<String>,
}

/// The printer's font (`ESC M n`). The layout's width counts columns of this font.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Font {
    /// 12 x 24 dots: 48 columns on 80 mm paper, 32 (or 42) on 58 mm.
    #[default]
    A,
    /// 9 x 17 dots: 64 columns on 80 mm paper.
    B,
}

impl Font {
    /// The font a layout of `width` columns needs: B above 56 columns (more than Font A fits
    /// on 80 mm paper), A otherwise.
    pub const fn for_width(width: usize) -> Font {
        if width > 56 { Font::B } else { Font::A }
    }

    /// The `n` of `ESC M n`.
    fn escpos(self) -> u8 {
        match self {
            Font::A => 0,
            Font::B => 1,
        }
    }
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
    /// Layout columns one printer column of this size takes (a CJK glyph, 2 printer
    /// columns, takes twice this).
    pub fn column_factor(self) -> usize {
        match self {
            Size::Normal | Size::DoubleHeight => 1,
            Size::DoubleWidth | Size::Double => 2,
        }
    }

    /// Printer columns of this size on a line of `width` layout columns.
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

    /// Spaces in front of text of `len` columns on a line of `columns` columns.
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

/// `ESC ( A`: the built-in buzzer, pattern 1 ('1'), twice, 500 ms cycle.
const BUZZER: [u8; 9] = [ESC, b'(', b'A', 4, 0, 0x30, 0x31, 2, 5];
/// `GS ( k` QR code settings: model 2, module size 6 dots, error correction level M.
const QR_SETUP: [u8; 25] = [
    GS, b'(', b'k', 4, 0, 0x31, 0x41, 0x32, 0x00, // model 2
    GS, b'(', b'k', 3, 0, 0x31, 0x43, 6, // module size
    GS, b'(', b'k', 3, 0, 0x31, 0x45, 0x31, // error correction M
];
/// `GS ( k`: print the stored QR code.
const QR_PRINT: [u8; 8] = [GS, b'(', b'k', 3, 0, 0x31, 0x51, 0x30];

impl Document {
    /// Plain text exactly as it prints: one line per [`Line`], alignment applied with leading
    /// spaces for the line's effective width (`width / 2` for double-width sizes), counted in
    /// printer columns (a CJK or emoji glyph 2, a Thai mark 0), each line ending in '\n'. Text
    /// is shown in its printable form for the layout's code page (what the printer receives,
    /// the characters of an image line as themselves: Thai, CJK, emoji), so a preview never
    /// shows characters the paper will not. A QR code shows as `[QR <data>]`, its data cut
    /// short with "..." when that does not fit.
    pub fn to_text(&self, layout: &Layout) -> String {
        let mut out = String::new();
        for line in &self.lines {
            let columns = line.size.columns(layout.width);
            let text = match &line.qr {
                Some(data) => qr_preview(data, layout, columns),
                None => printable(&line.text, layout.code_page),
            };
            if !text.is_empty() {
                let pad = line.align.padding(columns_of(&text, layout.code_page), columns);
                out.extend(std::iter::repeat_n(' ', pad));
                out.push_str(&text);
            }
            out.push('\n');
        }
        out
    }

    /// The ticket as ESC/POS: initialise, select the code table and the font (`ESC M`), each
    /// line with its full style (`GS !`, `ESC E`, `GS B`, `ESC a`; set on every line so no
    /// line depends on the state left by another), reset the styles, sound the buzzer when
    /// the layout wants it, feed 3 lines and cut (`GS V 66 0`).
    ///
    /// A line whose printable form has a character the code page lacks (Thai, CJK, emoji ...)
    /// is sent as one raster image (`GS v 0`) instead: the whole layout width in the font's
    /// cell (Font A 12x24, Font B 9x17 dots a column), the line's size, bold, reverse and
    /// alignment drawn into the image, and no LF after it (the image feeds the paper by its
    /// height). Its data never holds a real-time command (`10 04`/`10 05`/`10 14`, which the
    /// printer would execute even inside an image): see `sanitize_raster`.
    ///
    /// Ends with the cut on purpose: the printer driver appends its confirmation request
    /// (`GS ( H` / `GS r`) after it, so the confirmation means "printed and cut".
    pub fn to_escpos(&self, layout: &Layout) -> Vec<u8> {
        let mut out = Vec::with_capacity(64 + self.lines.iter().map(|l| l.text.len() + 13).sum::<usize>());
        out.extend_from_slice(&[ESC, b'@', ESC, b't', layout.code_page.escpos_table()]);
        out.extend_from_slice(&[ESC, b'M', layout.font.escpos()]);
        for line in &self.lines {
            out.extend_from_slice(&[GS, b'!', line.size.escpos()]);
            out.extend_from_slice(&[ESC, b'E', u8::from(line.bold)]);
            out.extend_from_slice(&[GS, b'B', u8::from(line.reverse)]);
            out.extend_from_slice(&[ESC, b'a', line.align.escpos()]);
            let text = printable(&line.text, layout.code_page);
            match &line.qr {
                Some(data) => push_qr(&mut out, data),
                // Characters no code page has (Thai, CJK, emoji): the whole line as an image,
                // styled and aligned inside it. `GS v 0` feeds by the image height: no LF.
                None if needs_raster(&text, layout.code_page) => {
                    out.extend(raster_line(&text, line, layout));
                    continue;
                }
                // `printable` first so the bytes match `to_text` one for one; `encode` then
                // never needs to drop or transliterate anything.
                None => out.extend(layout.code_page.encode(&text)),
            }
            out.push(LF);
        }
        out.extend_from_slice(&[GS, b'!', 0, ESC, b'E', 0, GS, b'B', 0, ESC, b'a', 0]);
        if layout.buzzer {
            out.extend_from_slice(&BUZZER);
        }
        out.extend_from_slice(&[ESC, b'd', 3]);
        out.extend_from_slice(&[GS, b'V', 66, 0]);
        out
    }
}

/// A QR code as `GS ( k`: settings, store the data (its UTF-8 bytes, sanitised again so a
/// hand-made line cannot smuggle control bytes in), print. Nothing for empty data.
fn push_qr(out: &mut Vec<u8>, data: &str) {
    let data = qr_data(data);
    if data.is_empty() {
        return;
    }
    // `qr_data` keeps at most 300 bytes, so the length always fits pL/pH.
    let Ok(len) = u16::try_from(data.len() + 3) else { return };
    out.extend_from_slice(&QR_SETUP);
    let [pl, ph] = len.to_le_bytes();
    out.extend_from_slice(&[GS, b'(', b'k', pl, ph, 0x31, 0x50, 0x30]);
    out.extend_from_slice(data.as_bytes());
    out.extend_from_slice(&QR_PRINT);
}

/// One line as a raster image (`GS v 0`) in the layout's font cell, so it lines up with the
/// text lines around it. Its data never contains `10 04`, `10 05` or `10 14`: the printer
/// would execute those real-time commands even inside image data (see [`sanitize_raster`]).
fn raster_line(text: &str, line: &Line, layout: &Layout) -> Vec<u8> {
    use crate::glyphs::{RasterAlign, RasterStyle, render_line};
    let cell = match layout.font {
        Font::A => RasterStyle::FONT_A,
        Font::B => RasterStyle::FONT_B,
    };
    let (width_mult, height_mult) = match line.size {
        Size::Normal => (1, 1),
        Size::DoubleHeight => (1, 2),
        Size::DoubleWidth => (2, 1),
        Size::Double => (2, 2),
    };
    let style = RasterStyle {
        line_width: layout.width.max(1) * cell.cell_width,
        width_mult,
        height_mult,
        bold: line.bold,
        reverse: line.reverse,
        align: match line.align {
            Align::Left => RasterAlign::Left,
            Align::Center => RasterAlign::Center,
            Align::Right => RasterAlign::Right,
        },
        ..cell
    };
    image_bytes(&render_line(text, &style))
}

/// `GS v 0` of `image` (see [`Bitmap::to_escpos`]) with its data [sanitised](sanitize_raster).
/// The 8 header bytes (`1D 76 30 00 xL xH yL yH`) are left as they are: a real-time command
/// in them would need `xH` = `10` or `xL xH` = `10 04`/`10 05`/`10 14`, rows of 1040 bytes
/// and more (8320 dots), far beyond any line (576 dots on 80 mm paper is `48 00`).
pub(crate) fn image_bytes(image: &Bitmap) -> Vec<u8> {
    let mut bytes = image.to_escpos();
    if let Some(data) = bytes.get_mut(8..) {
        sanitize_raster(data);
    }
    bytes
}

/// Breaks every `10 04`, `10 05` and `10 14` in image data (DLE EOT / ENQ / DC4, which an
/// Epson printer executes wherever they appear, raster data included) by turning the `10`
/// byte into `00`: the one black dot it has (the 4th of its 8) turns white. One dot of a
/// glyph is invisible in print; the alternative is a status reply nobody asked for (which
/// the driver would mistake for an answer), a buffer clear or a pulse. `00` cannot start a
/// new such sequence, so one pass over the data is enough.
pub(crate) fn sanitize_raster(data: &mut [u8]) {
    for i in 0..data.len().saturating_sub(1) {
        if data[i] == 0x10 && matches!(data[i + 1], 0x04 | 0x05 | 0x14) {
            data[i] = 0x00;
        }
    }
}

/// What frames a cut-short QR preview: `[QR ...]`.
const QR_FRAME: usize = 8;

/// `[QR <data>]` in at most `columns` printer columns: the data in printable form (the QR
/// code carries its UTF-8 bytes; the preview shows them as a line of text would print), cut
/// short at a column boundary and marked with "..." when the whole does not fit. Empty for
/// empty data.
fn qr_preview(data: &str, layout: &Layout, columns: usize) -> String {
    let cp = layout.code_page;
    let data = printable(&qr_data(data), cp);
    if data.is_empty() {
        return String::new();
    }
    let full = format!("[QR {data}]");
    if columns_of(&full, cp) <= columns {
        return full;
    }
    if columns <= QR_FRAME {
        let (end, _) = fit_columns(&full, cp, columns);
        return full[..end].to_owned();
    }
    let (end, _) = fit_columns(&data, cp, columns - QR_FRAME);
    format!("[QR {}...]", &data[..end])
}
