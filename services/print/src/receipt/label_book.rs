//! Which [`Labels`] an order gets, and labels a restaurant edits: a [`LabelBook`] maps
//! language codes to labels. German and English are built in; a TOML label file overrides
//! their texts and adds languages.
//!
//! Owns: the label file format, its validation (every mistake is an error naming the
//! language and the key, shown to the operator as a config error) and the language choice
//! (configured language, else the buyer's, else the site's; then the primary subtag; then
//! English).
//!
//! Must never: fail or panic at render time. A book that loaded is complete: every language
//! in it has every label, and English is always there to fall back to.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

use wixprint_shared::proto::order::Order;

use super::labels::Labels;

/// The language every lookup ends at, and the default `base` of a language a file adds
/// (unless it is a regional variant of a language the book has).
const FALLBACK: &str = "en";

/// Used only if a book somehow lacks English; [`LabelBook`] keeps it from happening.
static BUILTIN_EN: Labels = Labels::EN;

/// Labels per language code (lower case, '-' between subtags: "de", "en", "fr", "de-ch").
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LabelBook {
    languages: BTreeMap<String, Labels>,
}

impl Default for LabelBook {
    fn default() -> LabelBook {
        LabelBook::builtin()
    }
}

/// One language table of a label file, checked but not yet merged with its base.
struct Table {
    base: Option<String>,
    texts: Vec<(String, String)>,
}

impl LabelBook {
    /// German ("de") and English ("en").
    pub fn builtin() -> LabelBook {
        let languages = [("de", Labels::DE), ("en", Labels::EN)];
        LabelBook { languages: languages.into_iter().map(|(code, labels)| (code.to_owned(), labels)).collect() }
    }

    /// The built-in book with a label file applied. The file has one table per language
    /// code; its keys are [`Labels`] field names, its values strings, and `base` names the
    /// language that labels the table does not set come from: a built-in language keeps its
    /// own texts by default, a regional one ("de-ch") starts from its primary language when
    /// the book has it, any other language from English. A base may be built in or another
    /// table of the file (in any order).
    ///
    /// ```toml
    /// [de]
    /// kitchen = "KÜCHE"
    /// [fr]
    /// base = "en"
    /// kitchen = "CUISINE"
    /// ```
    ///
    /// Errors (syntax, a value that is not a table or a string, an unknown key, a base that
    /// is not a language of the book, bases that refer to each other) name the language and
    /// the key.
    pub fn from_toml_str(text: &str) -> Result<LabelBook, String> {
        let file: toml::Table = text.parse().map_err(|e: toml::de::Error| format!("label file: {e}"))?;
        let mut tables = BTreeMap::new();
        for (code, value) in &file {
            let language = language_code(code).ok_or_else(|| {
                format!(
                    "label file: [{code}] is not a language code (letters, digits and '-', like de, en, fr or de-ch)"
                )
            })?;
            let toml::Value::Table(entries) = value else {
                return Err(format!(
                    "label file: `{code}` is a {}, expected a table of labels ([{code}] followed by key = \"text\" lines)",
                    value.type_str()
                ));
            };
            let table = parse_table(code, entries)?;
            if tables.insert(language.clone(), table).is_some() {
                return Err(format!("label file: [{code}]: language {language:?} appears twice"));
            }
        }
        let mut book = LabelBook::builtin();
        let mut merged = BTreeMap::new();
        for language in tables.keys() {
            merge(language, &tables, &mut merged, &mut Vec::new())?;
        }
        book.languages.extend(merged);
        Ok(book)
    }

    /// [`from_toml_str`](LabelBook::from_toml_str) of the file at `path`; errors start with
    /// the path.
    pub fn load(path: impl AsRef<Path>) -> Result<LabelBook, String> {
        let path = path.as_ref();
        let text = std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))?;
        LabelBook::from_toml_str(&text).map_err(|e| format!("{}: {e}", path.display()))
    }

    /// The language codes of the book, sorted.
    pub fn languages(&self) -> impl Iterator<Item = &str> {
        self.languages.keys().map(String::as_str)
    }

    /// The labels of exactly `language` (any case, '_' or '-' between subtags).
    pub fn get(&self, language: &str) -> Option<&Labels> {
        self.languages.get(&language_code(language)?)
    }

    /// The labels for `language`: the language itself, else its primary subtag ("de-CH" gets
    /// "de"), else English.
    pub fn select(&self, language: &str) -> &Labels {
        let code = language_code(language).unwrap_or_default();
        let primary = code.split('-').next().unwrap_or_default();
        self.languages
            .get(&code)
            .or_else(|| self.languages.get(primary))
            .or_else(|| self.languages.get(FALLBACK))
            .unwrap_or(&BUILTIN_EN)
    }

    /// The labels for `order`: the `configured` language when set (not blank), else the
    /// buyer's, else the site's; then as [`select`](LabelBook::select).
    pub fn for_order(&self, order: &Order, configured: Option<&str>) -> &Labels {
        let configured = configured.map(str::trim).filter(|l| !l.is_empty());
        let buyer = order.buyer_language.trim();
        let from_order = if buyer.is_empty() { order.site_language.trim() } else { buyer };
        self.select(configured.unwrap_or(from_order))
    }
}

/// `code` normalised: trimmed, lower case, '_' as '-'. `None` when it is empty or has other
/// characters than ASCII letters, digits and '-'.
fn language_code(code: &str) -> Option<String> {
    let code = code.trim().to_ascii_lowercase().replace('_', "-");
    let valid = !code.is_empty() && code.chars().all(|c| c.is_ascii_alphanumeric() || c == '-');
    valid.then_some(code)
}

/// The `base` and the texts of the table `[code]`, every key and value checked.
fn parse_table(code: &str, entries: &toml::Table) -> Result<Table, String> {
    let mut table = Table { base: None, texts: Vec::new() };
    for (key, value) in entries {
        let is_base = key == "base";
        if !is_base && !Labels::KEYS.contains(&key.as_str()) {
            return Err(format!(
                "label file: [{code}] {key}: unknown key (the keys are the label names listed in labels.example.toml)"
            ));
        }
        let toml::Value::String(text) = value else {
            return Err(format!("label file: [{code}] {key}: expected a text in quotes, found a {}", value.type_str()));
        };
        if is_base {
            let base = language_code(text)
                .ok_or_else(|| format!("label file: [{code}] base: {text:?} is not a language code"))?;
            table.base = Some(base);
        } else {
            table.texts.push((key.clone(), text.clone()));
        }
    }
    Ok(table)
}

/// The base of a table that names none and is not built in: its primary subtag when the book
/// has that language ("de-ch" starts from "de"), else English.
fn default_base<'a>(language: &'a str, tables: &BTreeMap<String, Table>) -> &'a str {
    match language.split_once('-') {
        Some((primary, _)) if tables.contains_key(primary) || LabelBook::builtin().languages.contains_key(primary) => {
            primary
        }
        _ => FALLBACK,
    }
}

/// Merges the file's table for `language` onto its base and stores the result in `merged`,
/// merging the base first when it is a table of the file too. `chain` holds the languages
/// whose base is being merged, to report bases that refer to each other.
fn merge(
    language: &str,
    tables: &BTreeMap<String, Table>,
    merged: &mut BTreeMap<String, Labels>,
    chain: &mut Vec<String>,
) -> Result<(), String> {
    if merged.contains_key(language) {
        return Ok(());
    }
    let Some(table) = tables.get(language) else { return Ok(()) };
    chain.push(language.to_owned());
    let mut labels = base_labels(language, table, tables, merged, chain)?;
    chain.pop();
    for (key, text) in &table.texts {
        labels.set(key, text.clone());
    }
    merged.insert(language.to_owned(), labels);
    Ok(())
}

/// The labels `language`'s table starts from: its `base` (a table of the file, merged first,
/// or a built-in language), else the built-in labels of the same language, else those of
/// its [default base](default_base).
fn base_labels(
    language: &str,
    table: &Table,
    tables: &BTreeMap<String, Table>,
    merged: &mut BTreeMap<String, Labels>,
    chain: &mut Vec<String>,
) -> Result<Labels, String> {
    let builtin = LabelBook::builtin();
    let (base, key) = match &table.base {
        Some(base) => (base.as_str(), "base"),
        None => match builtin.languages.get(language) {
            Some(own) => return Ok(own.clone()),
            None => (default_base(language, tables), "base (default)"),
        },
    };
    if chain.iter().any(|c| c == base) {
        return Err(format!("label file: [{language}] {key}: {base:?} loops back ({} -> {base})", chain.join(" -> ")));
    }
    if tables.contains_key(base) {
        merge(base, tables, merged, chain)?;
        if let Some(labels) = merged.get(base) {
            return Ok(labels.clone());
        }
    }
    builtin.languages.get(base).cloned().ok_or_else(|| {
        let known: BTreeSet<&str> = builtin.languages().chain(tables.keys().map(String::as_str)).collect();
        let known = known.into_iter().collect::<Vec<_>>().join(", ");
        format!("label file: [{language}] {key}: unknown language {base:?} (known: {known})")
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const EXAMPLE: &str = include_str!("../../../../deploy/labels.example.toml");

    /// The keys whose text differs between `a` and `b`.
    fn differences(a: &Labels, b: &Labels) -> Vec<&'static str> {
        Labels::KEYS.iter().copied().filter(|k| a.get(k) != b.get(k)).collect()
    }

    fn error(text: &str) -> String {
        LabelBook::from_toml_str(text).expect_err(text)
    }

    #[test]
    fn the_builtin_book_has_german_and_english() {
        let book = LabelBook::builtin();
        assert_eq!(book.languages().collect::<Vec<_>>(), ["de", "en"]);
        assert_eq!(book.get("de"), Some(&Labels::DE));
        assert_eq!(book.get(" EN "), Some(&Labels::EN));
        assert_eq!(book.get("fr"), None);
        assert_eq!(LabelBook::default(), book);
        assert_eq!(LabelBook::from_toml_str("").unwrap(), book);
        assert_eq!(LabelBook::from_toml_str("# nothing to change\n").unwrap(), book);
    }

    #[test]
    fn a_language_falls_back_to_its_primary_subtag_then_to_english() {
        let book = LabelBook::builtin();
        for german in ["de", "DE", "de-CH", "de_at", " de-ch "] {
            assert_eq!(book.select(german), &Labels::DE, "{german:?}");
        }
        for other in ["en", "en-GB", "fr", "fr-CH", "", " ", "deutsch", "d", "de\u{0}", "ü", "-de"] {
            assert_eq!(book.select(other), &Labels::EN, "{other:?}");
        }
        let book = LabelBook::from_toml_str("[de-ch]\ntotal = \"TOTAL CHF\"").unwrap();
        assert_eq!(book.select("de-CH").total, "TOTAL CHF");
        assert_eq!(book.select("de-AT").total, "TOTAL");
        assert_eq!(differences(book.select("de-CH"), &Labels::DE), ["total"], "starts from [de]");
        let book = LabelBook::from_toml_str("[fr-ch]\ntotal = \"TOTAL CHF\"\n[fr]\nkitchen = \"CUISINE\"").unwrap();
        assert_eq!((&*book.select("fr-CH").total, &*book.select("fr-CH").kitchen), ("TOTAL CHF", "CUISINE"));
        let book = LabelBook::from_toml_str("[it-ch]\ntotal = \"TOTALE\"").unwrap();
        assert_eq!(differences(book.select("it-CH"), &Labels::EN), ["total"], "no [it]: from English");
    }

    #[test]
    fn the_order_or_the_configured_language_decides() {
        let book = LabelBook::builtin();
        let order = |buyer: &str, site: &str| Order {
            buyer_language: buyer.into(),
            site_language: site.into(),
            ..Order::default()
        };
        assert_eq!(book.for_order(&order("de", "en"), None), &Labels::DE);
        assert_eq!(book.for_order(&order("", "de-CH"), None), &Labels::DE);
        assert_eq!(book.for_order(&order(" ", "en"), None), &Labels::EN);
        assert_eq!(book.for_order(&order("en", "de"), None), &Labels::EN);
        assert_eq!(book.for_order(&order("de", "de"), Some("en")), &Labels::EN);
        assert_eq!(book.for_order(&order("en", "en"), Some("de-CH")), &Labels::DE);
        assert_eq!(book.for_order(&order("de", "de"), Some("fr")), &Labels::EN, "no [fr]: English");
        assert_eq!(book.for_order(&order("de", "en"), Some("  ")), &Labels::DE, "blank means not configured");
    }

    #[test]
    fn a_file_overriding_one_german_key_changes_only_that_text() {
        let book = LabelBook::from_toml_str("[de]\ncash_to_collect = \"BAR KASSIEREN\"\n").unwrap();
        let de = book.get("de").unwrap();
        assert_eq!(de.cash_to_collect, "BAR KASSIEREN");
        assert_eq!(differences(de, &Labels::DE), ["cash_to_collect"]);
        assert_eq!(book.get("en"), Some(&Labels::EN));
        assert_eq!(book.languages().collect::<Vec<_>>(), ["de", "en"]);
    }

    #[test]
    fn a_new_language_starts_from_its_base() {
        let book = LabelBook::from_toml_str("[fr]\nbase = \"de\"\nkitchen = \"CUISINE\"\n").unwrap();
        let fr = book.get("fr").unwrap();
        assert_eq!(fr.kitchen, "CUISINE");
        assert_eq!(differences(fr, &Labels::DE), ["kitchen"]);
        // Without a base: English.
        let book = LabelBook::from_toml_str("[fr]\nkitchen = \"CUISINE\"").unwrap();
        assert_eq!(differences(book.get("fr").unwrap(), &Labels::EN), ["kitchen"]);
        // The default base is the file's English when it has one.
        let book = LabelBook::from_toml_str("[fr]\nkitchen = \"CUISINE\"\n[en]\ntotal = \"SUM\"").unwrap();
        assert_eq!(book.get("fr").unwrap().total, "SUM");
        assert_eq!(book.get("fr").unwrap().kitchen, "CUISINE");
        // A base may be another table of the file, declared before or after.
        let text = "[fr]\nbase = \"it\"\nstorno = \"ANNULÉ\"\n[it]\nbase = \"de\"\nkitchen = \"CUCINA\"\n";
        let book = LabelBook::from_toml_str(text).unwrap();
        let fr = book.get("fr").unwrap();
        assert_eq!((&*fr.kitchen, &*fr.storno, &*fr.note), ("CUCINA", "ANNULÉ", "NOTIZ:"));
        // A built-in language may take another base.
        let book = LabelBook::from_toml_str("[de]\nbase = \"en\"\nkitchen = \"KÜCHE\"").unwrap();
        assert_eq!(differences(book.get("de").unwrap(), &Labels::EN), ["kitchen"]);
    }

    #[test]
    fn mistakes_are_errors_naming_the_language_and_the_key() {
        let e = error("[de]\nkitchn = \"KÜCHE\"");
        assert!(e.contains("[de]") && e.contains("kitchn") && e.contains("unknown key"), "{e}");
        let e = error("[fr]\nbase = \"xx\"\nkitchen = \"CUISINE\"");
        assert!(e.contains("[fr]") && e.contains("base") && e.contains("\"xx\""), "{e}");
        let e = error("[fr]\nbase = 5");
        assert!(e.contains("[fr]") && e.contains("base") && e.contains("integer"), "{e}");
        let e = error("[de]\ntotal = 12");
        assert!(e.contains("[de]") && e.contains("total") && e.contains("integer"), "{e}");
        let e = error("[de]\ntotal = [\"a\"]");
        assert!(e.contains("[de]") && e.contains("total") && e.contains("array"), "{e}");
        let e = error("[de]\nkitchn = 5");
        assert!(e.contains("[de]") && e.contains("kitchn") && e.contains("unknown key"), "{e}");
        let e = error("[de.total]\nx = \"y\"");
        assert!(e.contains("[de]") && e.contains("total") && e.contains("table"), "{e}");
        let e = error("kitchen = \"KÜCHE\"");
        assert!(e.contains("kitchen") && e.contains("table"), "{e}");
        let e = error("[de]\nbase = \"en\"\n[en]\nbase = \"de\"");
        assert!(e.contains("base") && e.contains("de -> en -> de"), "{e}");
        let e = error("[de]\nbase = \"de\"");
        assert!(e.contains("[de]") && e.contains("base"), "{e}");
        let e = error("[en]\nbase = \"fr\"\n[fr]\nkitchen = \"CUISINE\"");
        assert!(e.contains("base (default)") && e.contains("en -> fr -> en"), "{e}");
        let e = error("[\"d e\"]\nkitchen = \"x\"");
        assert!(e.contains("d e") && e.contains("language code"), "{e}");
        let e = error("[de]\nkitchen = \"a\"\n[DE]\nkitchen = \"b\"");
        assert!(e.contains("twice"), "{e}");
        let e = error("[de]\nkitchen = \"unterminated");
        assert!(e.starts_with("label file:"), "{e}");
    }

    #[test]
    fn load_reads_a_file_and_names_it_in_errors() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("labels.toml");
        std::fs::write(&path, "[de]\nkitchen = \"KUECHE\"\n").unwrap();
        assert_eq!(LabelBook::load(&path).unwrap().get("de").unwrap().kitchen, "KUECHE");
        std::fs::write(&path, "[de]\nkitchn = \"KUECHE\"\n").unwrap();
        let e = LabelBook::load(&path).unwrap_err();
        assert!(e.starts_with(&path.display().to_string()) && e.contains("kitchn"), "{e}");
        let missing = dir.path().join("missing.toml");
        assert!(LabelBook::load(&missing).unwrap_err().starts_with(&missing.display().to_string()));
    }

    #[test]
    fn the_example_file_lists_every_key_with_the_builtin_texts() {
        assert_eq!(LabelBook::from_toml_str(EXAMPLE).unwrap(), LabelBook::builtin());
        let file: toml::Table = EXAMPLE.parse().unwrap();
        assert_eq!(file.keys().collect::<Vec<_>>(), ["de", "en"]);
        for (language, table) in &file {
            let keys: Vec<&str> = table.as_table().unwrap().keys().map(String::as_str).collect();
            let mut expected = Labels::KEYS.to_vec();
            expected.sort_unstable();
            assert_eq!(keys, expected, "[{language}]");
        }
    }

    #[test]
    fn keys_name_the_fields() {
        let mut labels = Labels::EN;
        assert_eq!(labels.get("kitchen"), Some("KITCHEN"));
        assert_eq!(labels.get("nope"), None);
        assert!(labels.set("kitchen", String::from("K")));
        assert!(!labels.set("nope", "x"));
        assert_eq!(differences(&labels, &Labels::EN), ["kitchen"]);
        assert_eq!(Labels::KEYS.len(), Labels::KEYS.iter().collect::<BTreeSet<_>>().len());
        assert!(!Labels::KEYS.contains(&"base"), "base is the file's own key");
    }
}
