//! The kitchen ticket's allergy block: when the buyer's note or a modifier names a configured
//! allergy word, the ticket says ALLERGIE/ALLERGY big and reversed above the items and repeats
//! what the customer wrote, so nobody has to find it at the bottom of a long ticket.
//!
//! Matching is by whole words, case-insensitive and Unicode-aware: a word is a run of
//! alphanumeric characters (ä, ö, ü, ß are letters), everything else separates words. "Ei"
//! matches "EI" and "ei," but not "kein", "Reis", "Eis" or "Eierlikör": a compound word is a
//! different word. A configured entry of several words ("gluten-free", "tree nuts") matches
//! the same words in sequence. Item names are not searched: "Erdnuss-Curry" names a dish,
//! not an allergy.

use wixprint_shared::proto::order::Order;

use super::builder::{Builder, Style};
use super::common::modifier_text;
use super::document::Size;
use super::labels::Labels;
use super::text;

/// Matched modifiers print "<item> + <group>: <name>"; their continuation lines sit this far in.
const WRAP_INDENT: usize = 2;

/// German and English words for the common allergens (the 14 EU ones) and for "allergy"
/// itself: the defaults of [`Layout::allergy_words`](super::Layout::allergy_words).
pub fn default_allergy_words() -> Vec<String> {
    [
        "Allergie",
        "Allergien",
        "Allergy",
        "Allergies",
        "allergisch",
        "allergic",
        "Unverträglichkeit",
        "intolerance",
        "Erdnuss",
        "Erdnüsse",
        "Nuss",
        "Nüsse",
        "nuts",
        "nut",
        "peanut",
        "peanuts",
        "Gluten",
        "glutenfrei",
        "gluten-free",
        "Laktose",
        "laktosefrei",
        "lactose",
        "Milch",
        "milk",
        "Ei",
        "Eier",
        "egg",
        "eggs",
        "Soja",
        "soy",
        "Sesam",
        "sesame",
        "Sellerie",
        "celery",
        "Senf",
        "mustard",
        "Fisch",
        "fish",
        "Krebstiere",
        "shellfish",
        "Weichtiere",
        "Lupine",
        "Sulfite",
        "Zöliakie",
        "coeliac",
        "celiac",
        "vegan",
    ]
    .into_iter()
    .map(String::from)
    .collect()
}

/// The entries of `words` that occur in `text` as whole words (see the module docs), each
/// once, in the order of `words`. Entries without any alphanumeric character never match.
pub fn allergy_matches<'w>(text: &str, words: &'w [String]) -> Vec<&'w str> {
    let text = words_of(text);
    let mut found: Vec<&str> = Vec::new();
    for word in words {
        if !found.contains(&word.as_str()) && occurs(&text, &words_of(word)) {
            found.push(word);
        }
    }
    found
}

/// Whether `word` occurs in `text` as a whole word (or, for several words, as the same words
/// in sequence), ignoring case.
pub fn contains_word(text: &str, word: &str) -> bool {
    occurs(&words_of(text), &words_of(word))
}

/// The block under the kitchen ticket's header: the label as a banner, then every text that
/// matched (the note, "<item> + <modifier>" lines), bold. Nothing when nothing matched.
pub(crate) fn block(b: &mut Builder, order: &Order, labels: &Labels) {
    let sources = sources(order, &b.layout().allergy_words);
    if sources.is_empty() {
        return;
    }
    b.text(&labels.allergy, Style::BANNER);
    let style = Style::NORMAL.size(Size::DoubleHeight).bold();
    for (text, wrap_indent) in &sources {
        b.indented(text, style, 0, *wrap_indent);
    }
}

/// The texts of `order` that name one of `words`, each with the indent of its continuation
/// lines: the buyer's note (wrapped flush, as in the note section), then each matching
/// modifier as "<item> + <group>: <name>" (the item says which dish it is about).
pub(crate) fn sources(order: &Order, words: &[String]) -> Vec<(String, usize)> {
    let words: Vec<Vec<String>> = words.iter().map(|w| words_of(w)).filter(|w| !w.is_empty()).collect();
    if words.is_empty() {
        return Vec::new();
    }
    let names_one = |text: &str| {
        let text = words_of(text);
        words.iter().any(|w| occurs(&text, w))
    };
    let mut sources = Vec::new();
    let note = order.buyer_note.trim();
    if names_one(note) {
        sources.push((note.to_owned(), 0));
    }
    for line in &order.line_items {
        for m in line.modifiers.iter().filter(|m| names_one(&m.group) || names_one(&m.name)) {
            let item = line.name.trim();
            let modifier = modifier_text(m);
            let text = if item.is_empty() { modifier } else { format!("{item} {modifier}") };
            sources.push((text, WRAP_INDENT));
        }
    }
    sources
}

/// The lower-cased words of `text` as read (decomposed accents composed, invisible
/// characters dropped), split at every non-alphanumeric character.
fn words_of(text: &str) -> Vec<String> {
    text::as_read(text).split(|c: char| !c.is_alphanumeric()).filter(|w| !w.is_empty()).map(str::to_lowercase).collect()
}

/// Whether `needle` (at least one word) is a run of consecutive words of `haystack`.
fn occurs(haystack: &[String], needle: &[String]) -> bool {
    !needle.is_empty() && haystack.windows(needle.len()).any(|w| w == needle)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn defaults_in(text: &str) -> Vec<String> {
        let words = default_allergy_words();
        allergy_matches(text, &words).into_iter().map(String::from).collect()
    }

    #[test]
    fn the_delivery_note_names_the_allergy_and_the_nuts() {
        assert_eq!(defaults_in("Allergie: Erdnüsse! Bitte klingeln bei Jäger, 3. Stock"), ["Allergie", "Erdnüsse"]);
    }

    #[test]
    fn ordinary_notes_and_modifiers_match_nothing() {
        for text in [
            "kein Salz",
            "Hinweis: kein Salz",
            "Reis (Beilage)",
            "Bitte ohne Koriander",
            "Ente",
            "Eis",
            "Eierlikör",
            "Spiegelei",
            "Bei Jäger klingeln",
            "Haselnusskuchen",
            "Fischers Fritz",
            "",
            " \n\t ",
        ] {
            assert_eq!(defaults_in(text), Vec::<String>::new(), "{text:?}");
        }
    }

    #[test]
    fn a_word_matches_only_as_a_whole_word() {
        for text in ["Eierlikör", "Eis", "kein", "Reis", "Bei", "Spiegelei", "eier", "Ei2"] {
            assert!(!contains_word(text, "Ei"), "{text:?} matched Ei");
        }
        for text in ["EI", "ei,", "Ei", "ohne Ei bitte", "(ei)", "Ei!", "kein-Ei", "2 Ei", "ei\n"] {
            assert!(contains_word(text, "Ei"), "{text:?} did not match Ei");
        }
        assert!(!contains_word("", "Ei"));
        assert!(!contains_word("Ei", ""));
        assert!(!contains_word("Ei", " - "), "an entry without letters matches nothing");
    }

    #[test]
    fn case_and_umlauts_are_unicode_aware() {
        assert!(contains_word("ERDNÜSSE", "Erdnüsse"));
        assert!(contains_word("erdnüsse!", "ERDNÜSSE"));
        assert!(contains_word("ZÖLIAKIE", "Zöliakie"));
        // Umlauts are letters: no boundary in the middle of "Nüsse" or "Jäger".
        assert!(!contains_word("Nüsse", "N"));
        assert!(!contains_word("Nüsse", "sse"));
        assert!(!contains_word("Jäger", "J"));
        assert!(!contains_word("Nuss", "Nüsse"));
        assert!(contains_word("Maß", "maß"));
        // Decomposed (macOS/iOS) text and invisible characters read as the composed word.
        assert!(contains_word("Erdnu\u{308}sse", "Erdnüsse"));
        assert!(contains_word("Erd\u{AD}nüsse", "Erdnüsse"));
    }

    #[test]
    fn several_words_match_the_same_words_in_sequence() {
        assert!(contains_word("gluten-free please", "gluten-free"));
        assert!(contains_word("GLUTEN-FREE", "gluten-free"));
        assert!(contains_word("needs it gluten free", "gluten-free"));
        assert!(!contains_word("gluten-freely", "gluten-free"));
        assert!(!contains_word("free of gluten", "gluten-free"));
        assert!(!contains_word("gluten", "gluten-free"));
        assert!(contains_word("allergic to tree nuts!", "tree nuts"));
        assert_eq!(defaults_in("gluten-free please"), ["Gluten", "gluten-free"]);
    }

    #[test]
    fn each_entry_is_reported_once_in_configuration_order() {
        let words: Vec<String> = ["Nuss", "Ei", "nuss"].into_iter().map(String::from).collect();
        assert_eq!(allergy_matches("ei, NUSS, Ei, nuss", &words), ["Nuss", "Ei", "nuss"]);
        assert_eq!(allergy_matches("Eis", &words), Vec::<&str>::new());
        assert_eq!(allergy_matches("Ei", &[]), Vec::<&str>::new());
    }
}
