//! The line builder the layouts write with: every method wraps its text to the width of the
//! chosen size, so a layout cannot produce a line that does not fit. QR codes are lines too;
//! their data is sanitised here.
//!
//! It also bounds a ticket, whatever the order holds: one text prints at most
//! [`MAX_TEXT_CHARS`] characters, a document at most [`MAX_LINES`] lines and at most
//! [`MAX_RASTER_LINES`] image lines (later lines print the code page's characters only, the
//! others as `?`). Whatever is cut ends with a visible [`TRUNCATED`]. A closing banner
//! ([`Builder::closing`]) always prints.

use std::borrow::Cow;

use super::document::{Align, Document, Line, Size};
use super::{Layout, text};

/// Most characters of one text (a buyer's note, a name) a ticket prints; the rest is cut and
/// marked. As long as the longest note `SubmitOrder` accepts.
pub(crate) const MAX_TEXT_CHARS: usize = wixprint_shared::validate::MAX_NOTE_CHARS;
/// Most lines of one document (about 4 m of paper, a quarter of a minute of printing).
pub(crate) const MAX_LINES: usize = 1000;
/// Most image lines (`GS v 0`, about 1.7 KB each on 80 mm) of one document.
pub(crate) const MAX_RASTER_LINES: usize = 200;
/// What ends a cut text or a cut ticket ("..." on code pages without the ellipsis).
pub(crate) const TRUNCATED: &str = "\u{2026} (truncated)";

/// How a line looks. Layouts start from a constant and adjust with the builder-style methods.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Style {
    pub size: Size,
    pub bold: bool,
    pub reverse: bool,
    pub align: Align,
}

impl Style {
    pub const NORMAL: Style = Style { size: Size::Normal, bold: false, reverse: false, align: Align::Left };
    /// Big, bold and reversed: the reprint banner and "this order is canceled".
    pub const BANNER: Style = Style { size: Size::Double, bold: true, reverse: true, align: Align::Center };

    pub const fn size(self, size: Size) -> Style {
        Style { size, ..self }
    }

    pub const fn bold(self) -> Style {
        Style { bold: true, ..self }
    }

    pub const fn center(self) -> Style {
        Style { align: Align::Center, ..self }
    }
}

pub(crate) struct Builder<'a> {
    layout: &'a Layout,
    lines: Vec<Line>,
    /// Image lines so far (see [`MAX_RASTER_LINES`]).
    raster_lines: usize,
    /// Lines were dropped at [`MAX_LINES`]; the marker is not printed yet.
    cut: bool,
}

/// `text` cut to [`MAX_TEXT_CHARS`] characters and marked, or as it is.
fn capped(text: &str) -> Cow<'_, str> {
    if text.len() <= MAX_TEXT_CHARS {
        return Cow::Borrowed(text);
    }
    match text.char_indices().nth(MAX_TEXT_CHARS) {
        None => Cow::Borrowed(text),
        Some((end, _)) => Cow::Owned(format!("{} {TRUNCATED}", &text[..end])),
    }
}

impl<'a> Builder<'a> {
    pub fn new(layout: &'a Layout) -> Builder<'a> {
        Builder { layout, lines: Vec::new(), raster_lines: 0, cut: false }
    }

    pub fn layout(&self) -> &'a Layout {
        self.layout
    }

    /// Wrapped text; nothing is printed when it has no printable characters.
    pub fn text(&mut self, text: &str, style: Style) {
        self.indented(text, style, 0, 0);
    }

    /// Wrapped text whose first line is indented by `first` columns, later lines by `rest`.
    pub fn indented(&mut self, text: &str, style: Style, first: usize, rest: usize) {
        let (style, columns) = self.fit(style);
        let lines = text::wrap(&capped(text), self.layout.code_page, columns, first, rest);
        self.push(lines, style);
    }

    /// `left` wrapped in a column, `right` right-aligned on its last line (names and amounts).
    pub fn columns(&mut self, left: &str, right: &str, style: Style, first: usize, rest: usize) {
        let (style, columns) = self.fit(style);
        let lines = text::columns(&capped(left), right, self.layout.code_page, columns, first, rest);
        // The padding is part of the text: the line is left-aligned as a whole.
        self.push(lines, Style { align: Align::Left, ..style });
    }

    /// A full-width line of `c` (a separator between sections); `c` is a code-page character
    /// of one column (the layouts use '=' and '-').
    pub fn rule(&mut self, c: char) {
        let columns = self.layout.width.max(1);
        self.push(vec![c.to_string().repeat(columns)], Style::NORMAL);
    }

    /// An empty line (space between sections).
    pub fn blank(&mut self) {
        self.push(vec![String::new()], Style::NORMAL);
    }

    /// A centered QR code of `data` (sanitised, see [`text::qr_data`]); nothing when no data
    /// is left.
    pub fn qr(&mut self, data: &str) {
        let data = text::qr_data(data);
        if data.is_empty() {
            return;
        }
        if self.lines.len() >= MAX_LINES {
            self.cut = true;
            return;
        }
        let style = Style::NORMAL.center();
        self.lines.push(Line {
            text: String::new(),
            size: style.size,
            bold: style.bold,
            reverse: style.reverse,
            align: style.align,
            qr: Some(data),
        });
    }

    /// The last text of a document (the reprint banner at the bottom): printed even when the
    /// document was cut at [`MAX_LINES`], after the [`TRUNCATED`] marker.
    pub fn closing(&mut self, text: &str, style: Style) {
        self.mark_cut();
        let (style, columns) = self.fit(style);
        let lines = text::wrap(&capped(text), self.layout.code_page, columns, 0, 0);
        self.append(lines, style);
    }

    pub fn finish(mut self) -> Document {
        self.mark_cut();
        Document { lines: self.lines }
    }

    /// Prints the marker once lines were dropped.
    fn mark_cut(&mut self) {
        if std::mem::take(&mut self.cut) {
            let lines = text::wrap(TRUNCATED, self.layout.code_page, self.layout.width.max(1), 0, 0);
            self.append(lines, Style::NORMAL);
        }
    }

    /// The style actually used and its columns. A double-width size on a layout too narrow
    /// for even one double-width character falls back to its single-width twin.
    fn fit(&self, style: Style) -> (Style, usize) {
        let width = self.layout.width.max(1);
        let columns = style.size.columns(width);
        if columns > 0 {
            return (style, columns);
        }
        let size = match style.size {
            Size::Double => Size::DoubleHeight,
            _ => Size::Normal,
        };
        (Style { size, ..style }, width)
    }

    /// Adds lines up to [`MAX_LINES`]; the rest are dropped (and marked at the end).
    fn push(&mut self, mut lines: Vec<String>, style: Style) {
        let room = MAX_LINES.saturating_sub(self.lines.len());
        if lines.len() > room {
            lines.truncate(room);
            self.cut = true;
        }
        self.append(lines, style);
    }

    /// Adds lines, each an image line only while fewer than [`MAX_RASTER_LINES`] were.
    fn append(&mut self, lines: Vec<String>, style: Style) {
        let cp = self.layout.code_page;
        let lines: Vec<String> = lines
            .into_iter()
            .map(|line| {
                if !text::needs_raster(&line, cp) {
                    line
                } else if self.raster_lines < MAX_RASTER_LINES {
                    self.raster_lines += 1;
                    line
                } else {
                    // As many `?` as the glyph took columns: the line still fits.
                    line.chars()
                        .flat_map(|c| {
                            let n = if cp.can_encode(c) { 0 } else { text::char_columns(c, cp) };
                            std::iter::repeat_n('?', n).chain(cp.can_encode(c).then_some(c))
                        })
                        .collect()
                }
            })
            .collect();
        self.lines.extend(lines.into_iter().map(|text| Line {
            text,
            size: style.size,
            bold: style.bold,
            reverse: style.reverse,
            align: style.align,
            qr: None,
        }));
    }
}
