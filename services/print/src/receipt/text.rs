//! Text shaping: arbitrary order text (names typed by customers, notes with line breaks,
//! emoji, control characters) to what the printer can print, and word wrapping of that.
//!
//! Everything here works on the printable form: every char is either one byte of the code
//! page (one printer column) or a char the bundled font draws, in which case its line prints
//! as a raster image ([`needs_raster`]) and the char takes [`glyphs::columns`] columns (0 for
//! Thai vowel and tone marks, 2 for CJK, Hangul and emoji). Widths are measured in printer
//! columns with [`columns_of`], never by counting chars; that is what makes "fits the width"
//! checkable.
//!
//! [`glyphs::columns`]: crate::glyphs::columns

use wixprint_shared::codepage::{CodePage, transliterate};

/// The printable form of `text` on `cp`: whitespace (line breaks and tabs included) becomes
/// a space, control and invisible characters (emoji skin tones and variation selectors
/// included) are dropped, decomposed accents are composed, characters the code page lacks are
/// transliterated (quotes, dashes: Latin text stays text), else kept when the bundled font
/// has a glyph for them (Thai with its marks, CJK, emoji ...: the line prints as an image) or
/// they are emoji newer than the font (printed as an empty box), else become `?`.
pub(crate) fn printable(text: &str, cp: CodePage) -> String {
    let mut out = String::with_capacity(text.len());
    for c in composed(text) {
        push_printable(&mut out, c, cp);
    }
    out
}

/// Most bytes a QR code's data may have: plenty for a feedback or menu URL, small enough that
/// the code (version 13 at error correction M, 69 modules of 6 dots) fits 80 mm paper. On
/// 58 mm paper data beyond about 250 bytes makes a code too wide to print.
pub(crate) const QR_MAX_BYTES: usize = 300;

/// QR code data as the printer gets it: trimmed, control characters dropped, cut to at most
/// [`QR_MAX_BYTES`] bytes at a character boundary. Everything else is kept as is (the code
/// carries UTF-8 bytes, no code page involved).
pub(crate) fn qr_data(data: &str) -> String {
    let mut out = String::new();
    for c in data.trim().chars().filter(|c| !c.is_control()) {
        if out.len() + c.len_utf8() > QR_MAX_BYTES {
            break;
        }
        out.push(c);
    }
    out.trim().to_owned()
}

/// `text` as a reader sees it, whatever the code page: decomposed accents composed and marks
/// that do not compose dropped, invisible characters (soft hyphens, zero-width spaces) dropped,
/// everything else unchanged. Matching words against order text works on this form, so
/// "Nu\u{308}sse" and "Erd\u{AD}nüsse" are the words the kitchen reads.
pub(crate) fn as_read(text: &str) -> String {
    composed(text).filter(|&c| !is_invisible(c) && !is_combining(c)).collect()
}

/// The characters of `text` with combining marks folded into their base letter. Text from
/// macOS/iOS can arrive decomposed ("u" + U+0308); the code pages only have the composed
/// letter. A mark that does not compose is dropped: the base letter alone reads better than a
/// `?` after it.
fn composed(text: &str) -> impl Iterator<Item = char> + '_ {
    let mut chars = text.chars().peekable();
    std::iter::from_fn(move || {
        let mut c = chars.next()?;
        while let Some(&mark) = chars.peek() {
            if !is_combining(mark) {
                break;
            }
            chars.next();
            if let Some(composed) = compose(c, mark) {
                c = composed;
            }
        }
        Some(c)
    })
}

fn push_printable(out: &mut String, c: char, cp: CodePage) {
    if c.is_whitespace() {
        out.push(' ');
    } else if c.is_control() || is_invisible(c) || crate::glyphs::is_invisible(c) || is_combining(c) {
        // Dropped: control bytes would be read as printer commands (NUL, ESC, GS ...); the
        // Latin marks left here did not compose. Thai marks are not `is_combining`: they are
        // kept below, drawn over their letter.
    } else if cp.can_encode(c) {
        out.push(c);
    } else if let Some(t) = transliterate(c) {
        // Transliterations are ASCII, but check anyway: they must print as text.
        out.extend(t.chars().map(|t| if cp.can_encode(t) { t } else { '?' }));
    } else if crate::glyphs::has_glyph(c) || is_newer_emoji(c) {
        // Thai, CJK, emoji ...: kept; the line prints as a raster image (see `needs_raster`).
        out.push(c);
    } else {
        out.push('?');
    }
}

/// Characters with no glyph of their own (zero-width joiners, direction marks, variation
/// selectors, emoji skin tones, soft hyphen): printing them as `?` would only add noise.
fn is_invisible(c: char) -> bool {
    matches!(c,
        '\u{00AD}'
        | '\u{200B}'..='\u{200F}'
        | '\u{202A}'..='\u{202E}'
        | '\u{2060}'..='\u{206F}'
        | '\u{FE00}'..='\u{FE0F}'
        | '\u{FEFF}'
        | '\u{1F3FB}'..='\u{1F3FF}'
        | '\u{E0000}'..='\u{E007F}'
        | '\u{E0100}'..='\u{E01EF}')
}

/// Emoji the bundled font (Unifont 15) has no glyph for: the code points of the emoji blocks
/// and those Unicode keeps for future emoji (`Extended_Pictographic` reserved ranges), e.g.
/// Unicode 16's U+1FAE9 face with bags under eyes. An emoji never prints as `?`: the image
/// draws an empty box of its width instead ([`glyphs::columns`]: 2 up to U+1FAFF), the preview
/// shows the emoji itself. The emoji outside these blocks (U+2600.. and the like) all have
/// glyphs.
///
/// [`glyphs::columns`]: crate::glyphs::columns
fn is_newer_emoji(c: char) -> bool {
    matches!(c, '\u{1F000}'..='\u{1FAFF}' | '\u{1FC00}'..='\u{1FFFD}')
}

fn is_combining(c: char) -> bool {
    matches!(c,
        '\u{0300}'..='\u{036F}'
        | '\u{1AB0}'..='\u{1AFF}'
        | '\u{1DC0}'..='\u{1DFF}'
        | '\u{20D0}'..='\u{20FF}'
        | '\u{FE20}'..='\u{FE2F}')
}

/// The few compositions that matter for German/French/Spanish menus and names.
fn compose(base: char, mark: char) -> Option<char> {
    let (bases, composed) = match mark {
        '\u{0308}' => ("aeiouyAEIOU", "äëïöüÿÄËÏÖÜ"),
        '\u{0301}' => ("aeiouyAEIOUY", "áéíóúýÁÉÍÓÚÝ"),
        '\u{0300}' => ("aeiouAEIOU", "àèìòùÀÈÌÒÙ"),
        '\u{0302}' => ("aeiouAEIOU", "âêîôûÂÊÎÔÛ"),
        '\u{0303}' => ("anoANO", "ãñõÃÑÕ"),
        '\u{0327}' => ("cC", "çÇ"),
        '\u{030A}' => ("aA", "åÅ"),
        _ => return None,
    };
    let i = bases.chars().position(|b| b == base)?;
    composed.chars().nth(i)
}

/// Printer columns `c` takes in its printable form: 1 for a code-page character, the glyph's
/// width for one printed as an image (0 for Thai vowel and tone marks, 2 for CJK and emoji).
pub(crate) fn char_columns(c: char, cp: CodePage) -> usize {
    if cp.can_encode(c) { 1 } else { crate::glyphs::columns(c) }
}

/// Printer columns of a printable string.
pub(crate) fn columns_of(s: &str, cp: CodePage) -> usize {
    s.chars().map(|c| char_columns(c, cp)).sum()
}

/// Whether a printable line holds characters the code page lacks: it prints as an image.
pub(crate) fn needs_raster(s: &str, cp: CodePage) -> bool {
    s.chars().any(|c| !cp.can_encode(c))
}

/// The longest start of the printable `s` that takes at most `room` columns, as (bytes,
/// columns): whole chars only, a 2-column glyph that does not fit left out, and the 0-column
/// marks after the last char taken kept with it (a cut never separates a letter from its
/// marks). Marks at the very start are always taken.
pub(crate) fn fit_columns(s: &str, cp: CodePage, room: usize) -> (usize, usize) {
    let (mut end, mut taken) = (0, 0);
    for (i, c) in s.char_indices() {
        let w = char_columns(c, cp);
        if w > 0 && taken + w > room {
            break;
        }
        taken += w;
        end = i + c.len_utf8();
    }
    (end, taken)
}

/// Breaks `text` into lines of at most `width` columns.
///
/// Words wrap; a word longer than a line is hard-broken (nothing is ever cut off). The first
/// line starts with `first_indent` spaces, later ones with `cont_indent` (a hanging indent
/// keeps "3 x Name" continuations under the name). Line breaks in the text start a new line;
/// blank lines are dropped so a note full of newlines cannot waste paper. Returns no lines
/// when the text has nothing printable.
pub(crate) fn wrap(text: &str, cp: CodePage, width: usize, first_indent: usize, cont_indent: usize) -> Vec<String> {
    let mut w = Wrapper::new(width, first_indent, cont_indent, cp);
    for paragraph in text.split(['\n', '\r', '\u{2028}', '\u{2029}', '\u{85}']) {
        let paragraph = printable(paragraph, cp);
        for word in paragraph.split(' ').filter(|w| !w.is_empty()) {
            w.word(word);
        }
        w.end_line();
    }
    w.lines
}

/// Two columns: `left` wraps in a column that leaves room for `right`, and `right` sits
/// right-aligned on the last line of `left` (amounts line up under each other). When `right`
/// is too long for that, `left` takes the full width and `right` follows on its own
/// right-aligned line(s).
pub(crate) fn columns(
    left: &str,
    right: &str,
    cp: CodePage,
    width: usize,
    first_indent: usize,
    cont_indent: usize,
) -> Vec<String> {
    let width = width.max(1);
    let right = printable(right, cp);
    let right = right.trim();
    let rlen = columns_of(right, cp);
    if rlen == 0 {
        return wrap(left, cp, width, first_indent, cont_indent);
    }
    let left_width = width.saturating_sub(rlen + 1);
    if left_width >= width / 2 && left_width > 0 {
        let mut lines = wrap(left, cp, left_width, first_indent, cont_indent);
        let last = lines.pop().unwrap_or_default();
        let pad = width.saturating_sub(columns_of(&last, cp) + rlen);
        lines.push(format!("{last}{}{right}", " ".repeat(pad)));
        return lines;
    }
    let mut lines = wrap(left, cp, width, first_indent, cont_indent);
    for chunk in wrap(right, cp, width, 0, 0) {
        let pad = width.saturating_sub(columns_of(&chunk, cp));
        lines.push(format!("{}{chunk}", " ".repeat(pad)));
    }
    lines
}

/// Greedy line filler behind [`wrap`].
struct Wrapper {
    width: usize,
    first_indent: usize,
    cont_indent: usize,
    lines: Vec<String>,
    line: String,
    /// Columns used on `line`, indent included.
    used: usize,
    has_words: bool,
    cp: CodePage,
}

impl Wrapper {
    fn new(width: usize, first_indent: usize, cont_indent: usize, cp: CodePage) -> Wrapper {
        let width = width.max(1);
        // An indent may take at most half the line, so even narrow double-width lines keep
        // room for text and hard-breaking always makes progress.
        let clamp = |i: usize| i.min(width / 2);
        let mut w = Wrapper {
            width,
            first_indent: clamp(first_indent),
            cont_indent: clamp(cont_indent),
            lines: Vec::new(),
            line: String::new(),
            used: 0,
            has_words: false,
            cp,
        };
        w.start_line();
        w
    }

    fn start_line(&mut self) {
        let indent = if self.lines.is_empty() { self.first_indent } else { self.cont_indent };
        self.line = " ".repeat(indent);
        self.used = indent;
        self.has_words = false;
    }

    fn end_line(&mut self) {
        if self.has_words {
            // A space added before a word whose first glyph then did not fit stays behind.
            let kept = self.line.trim_end().len();
            self.line.truncate(kept);
            let line = std::mem::take(&mut self.line);
            self.lines.push(line);
            self.start_line();
        }
    }

    fn word(&mut self, word: &str) {
        let len = columns_of(word, self.cp);
        if self.has_words {
            let fits_here = self.used + 1 + len <= self.width;
            // A word longer than any line is broken anyway: start it right here instead of
            // leaving the rest of this line empty (keeps "3 x" next to the name).
            let fits_nowhere = self.cont_indent + len > self.width;
            if fits_here || (fits_nowhere && self.used + 2 <= self.width) {
                self.line.push(' ');
                self.used += 1;
            } else {
                self.end_line();
            }
        }
        let mut rest = word;
        let mut rest_len = len;
        // Hard-break what does not fit, at a column boundary. `width - used` is at least 1
        // here (indents are clamped to half the width, a space is only added with room after
        // it). A break never separates a letter from the marks that follow it (0 columns), and
        // a 2-column glyph that does not fit goes to the next line. A fresh line whose indent
        // leaves one column for a 2-column glyph drops the indent; only a line of 1 column
        // takes a 2-column glyph anyway (it cannot hold it at all). Every round consumes
        // characters or ends a line with words or drops an indent, so the loop ends.
        while self.used + rest_len > self.width {
            let (mut split, mut taken) = fit_columns(rest, self.cp, self.width - self.used);
            if split == 0 && !self.has_words {
                let first = rest.chars().next().map_or(1, |c| char_columns(c, self.cp));
                if self.used > 0 && first <= self.width {
                    self.line.clear();
                    self.used = 0;
                    continue;
                }
                (split, taken) = fit_columns(rest, self.cp, first);
            }
            self.line.push_str(&rest[..split]);
            if split > 0 {
                self.has_words = true;
            }
            self.end_line();
            rest = &rest[split..];
            rest_len -= taken;
        }
        // Not `rest_len > 0`: a lone mark is a word of 0 columns, still printed.
        if !rest.is_empty() {
            self.line.push_str(rest);
            self.used += rest_len;
            self.has_words = true;
        }
    }
}
