//! The line builder the layouts write with: every method wraps its text to the width of the
//! chosen size, so a layout cannot produce a line that does not fit. QR codes are lines too;
//! their data is sanitised here.

use super::document::{Align, Document, Line, Size};
use super::{Layout, text};

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
}

impl<'a> Builder<'a> {
    pub fn new(layout: &'a Layout) -> Builder<'a> {
        Builder { layout, lines: Vec::new() }
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
        let lines = text::wrap(text, self.layout.code_page, columns, first, rest);
        self.push(lines, style);
    }

    /// `left` wrapped in a column, `right` right-aligned on its last line (names and amounts).
    pub fn columns(&mut self, left: &str, right: &str, style: Style, first: usize, rest: usize) {
        let (style, columns) = self.fit(style);
        let lines = text::columns(left, right, self.layout.code_page, columns, first, rest);
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

    pub fn finish(self) -> Document {
        Document { lines: self.lines }
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

    fn push(&mut self, lines: Vec<String>, style: Style) {
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
