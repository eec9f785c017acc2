//! The words of alert mails: German and English built in, overridable and extendable with a
//! TOML file (`ALERT_LABELS_FILE`), the same mechanism as wix-print's receipt label book.
//!
//! Decision (issue 12 says "the same label book as receipts"): alerts have their own table
//! here in `shared`, because both services send mails and only wix-print prints receipts;
//! moving the receipt book to `shared` would drag receipt vocabulary into wix-ingest. The file
//! format is the receipt book's: one table per language code (`[de]`, `[en]`, `[fr]` ...),
//! keys = the names below, values = texts; a key not set keeps the built-in text (a new
//! language starts from English, or from `base = "de"`); an unknown key is an error naming
//! the language and the key. `{subject}`, `{n}` and `{time}` are replaced where listed.
//!
//! Must never: fail at send time. A loaded table has every key.

use std::collections::BTreeMap;
use std::path::Path;

use super::AlertKind;

/// The general keys (besides `<kind>.title`, `<kind>.did`, `<kind>.todo`).
const GENERAL: [&str; 14] = [
    "what",
    "since",
    "did",
    "todo",
    "restaurant",
    "host",
    "service",
    "details",
    "resolved",
    "resolved_todo",
    "more_times",
    "digest",
    "test_note",
    "footer",
];

fn builtin_de() -> Vec<(&'static str, &'static str)> {
    vec![
        ("what", "Was ist passiert"),
        ("since", "Seit"),
        ("did", "Was der Dienst tut"),
        ("todo", "Was Sie tun sollten"),
        ("restaurant", "Restaurant"),
        ("host", "Rechner"),
        ("service", "Dienst"),
        ("details", "Details"),
        ("resolved", "Behoben: {title}"),
        ("resolved_todo", "Nichts mehr zu tun."),
        ("more_times", "{n} weitere Male seit {time} (nicht einzeln gemeldet)"),
        ("digest", "{n} Meldungen"),
        ("test_note", "Dies ist eine Testmeldung (SendTestAlert): der Mailversand funktioniert."),
        ("footer", "Diese Nachricht wurde automatisch vom Bestelldrucker verschickt."),
        ("printer_not_ready.title", "Drucker {subject} ist nicht bereit"),
        (
            "printer_not_ready.did",
            "Bons für diesen Drucker warten in der Warteschlange (oder gehen an den Ersatzdrucker).",
        ),
        ("printer_not_ready.todo", "Papier in den Drucker {subject} legen, Deckel schliessen, Strom und Kabel prüfen."),
        ("paper_low.title", "Papier im Drucker {subject} geht zu Ende"),
        ("paper_low.did", "Es wird weiter gedruckt, solange Papier da ist."),
        ("paper_low.todo", "Eine neue Papierrolle für den Drucker {subject} bereitlegen."),
        ("internet_offline.title", "Internet nicht erreichbar"),
        (
            "internet_offline.did",
            "Neue Wix-Bestellungen kommen erst an, wenn das Internet zurück ist; dann werden sie nachgeholt.",
        ),
        ("internet_offline.todo", "Router und Internetanschluss prüfen; Bestellungen bei Wix im Blick behalten."),
        ("peer_unreachable.title", "Der andere Dienst antwortet nicht"),
        ("peer_unreachable.did", "Bestellungen werden gespeichert und nachgeliefert, sobald er wieder da ist."),
        ("peer_unreachable.todo", "Den Bestelldrucker (Raspberry Pi) neu starten, wenn es anhält."),
        ("dead_letters.title", "Bestellungen konnten nicht gedruckt werden ({subject})"),
        ("dead_letters.did", "Die betroffenen Aufträge wurden beiseitegelegt (ListDeadLetters)."),
        (
            "dead_letters.todo",
            "Die Bestellungen bei Wix nachsehen und von Hand erledigen oder erneut drucken (RequeueJob).",
        ),
        ("breaker_open.title", "Verbindung ausgesetzt: {subject}"),
        ("breaker_open.did", "Nach wiederholten Fehlern wartet der Dienst kurz und versucht es dann erneut."),
        ("breaker_open.todo", "Meist nichts; hält es an, die Verbindung zu {subject} prüfen."),
        ("health_critical.title", "Systemzustand kritisch: {subject}"),
        ("health_critical.did", "Der Dienst versucht, sich selbst zu helfen (aufräumen, neu verbinden)."),
        ("health_critical.todo", "Hält es an: den Bestelldrucker neu starten oder den Techniker rufen."),
        ("self_restart.title", "Der Dienst hat sich neu gestartet"),
        ("self_restart.did", "Ein Neustart nach einem anhaltenden Problem; die Warteschlange bleibt erhalten."),
        ("self_restart.todo", "Nichts, wenn es selten vorkommt."),
        ("restart_limit.title", "Zu viele Neustarts: der Dienst läuft eingeschränkt"),
        ("restart_limit.did", "Der Dienst startet sich nicht mehr selbst neu."),
        ("restart_limit.todo", "Den Bestelldrucker neu starten und den Techniker informieren."),
        ("sync_refused.title", "Wix verweigert den Abgleich der Bestellungen"),
        ("sync_refused.did", "Webhooks kommen weiter an; der Abgleich verpasster Bestellungen ruht."),
        ("sync_refused.todo", "Den API-Schlüssel bei Wix prüfen (abgelaufen oder Rechte entzogen)."),
        ("no_orders.title", "Keine Bestellungen während der Öffnungszeit"),
        ("no_orders.did", "Nichts; der Dienst wartet."),
        ("no_orders.todo", "Prüfen, ob die Bestellseite bei Wix online ist."),
        ("recovery_finished.title", "Rückstand abgearbeitet ({subject})"),
        ("recovery_finished.did", "Die aufgelaufenen Bons wurden gedruckt."),
        ("recovery_finished.todo", "Die nachgedruckten Bons durchsehen."),
        ("test.title", "Testmeldung {subject}"),
        ("test.did", "Nichts: eine Testmeldung."),
        ("test.todo", "Nichts. Kommt diese Mail an, funktionieren die Meldungen."),
    ]
}

fn builtin_en() -> Vec<(&'static str, &'static str)> {
    vec![
        ("what", "What happened"),
        ("since", "Since"),
        ("did", "What the service does"),
        ("todo", "What you should do"),
        ("restaurant", "Restaurant"),
        ("host", "Host"),
        ("service", "Service"),
        ("details", "Details"),
        ("resolved", "Resolved: {title}"),
        ("resolved_todo", "Nothing left to do."),
        ("more_times", "{n} more times since {time} (not mailed one by one)"),
        ("digest", "{n} alerts"),
        ("test_note", "This is a test alert (SendTestAlert): mail delivery works."),
        ("footer", "This message was sent automatically by the order printer."),
        ("printer_not_ready.title", "Printer {subject} is not ready"),
        ("printer_not_ready.did", "Tickets for this printer wait in the queue (or go to the backup printer)."),
        ("printer_not_ready.todo", "Put paper in the printer {subject}, close its cover, check power and cable."),
        ("paper_low.title", "Paper in printer {subject} is running out"),
        ("paper_low.did", "Printing goes on while there is paper."),
        ("paper_low.todo", "Have a new paper roll ready for the printer {subject}."),
        ("internet_offline.title", "The internet is unreachable"),
        ("internet_offline.did", "New Wix orders arrive only once the internet is back; then they are caught up."),
        ("internet_offline.todo", "Check the router and the internet line; watch your orders on Wix."),
        ("peer_unreachable.title", "The other service does not answer"),
        ("peer_unreachable.did", "Orders are kept and delivered once it is back."),
        ("peer_unreachable.todo", "Restart the order printer (Raspberry Pi) if it persists."),
        ("dead_letters.title", "Orders could not be printed ({subject})"),
        ("dead_letters.did", "The jobs concerned were set aside (ListDeadLetters)."),
        ("dead_letters.todo", "Look the orders up on Wix and handle them by hand, or print them again (RequeueJob)."),
        ("breaker_open.title", "Connection paused: {subject}"),
        ("breaker_open.did", "After repeated failures the service waits a little, then tries again."),
        ("breaker_open.todo", "Usually nothing; if it persists, check the connection to {subject}."),
        ("health_critical.title", "System health critical: {subject}"),
        ("health_critical.did", "The service tries to help itself (cleaning up, reconnecting)."),
        ("health_critical.todo", "If it persists: restart the order printer or call your technician."),
        ("self_restart.title", "The service restarted itself"),
        ("self_restart.did", "A restart after a lasting problem; the queue is kept."),
        ("self_restart.todo", "Nothing, if it is rare."),
        ("restart_limit.title", "Too many restarts: the service runs degraded"),
        ("restart_limit.did", "The service no longer restarts itself."),
        ("restart_limit.todo", "Restart the order printer and tell your technician."),
        ("sync_refused.title", "Wix refuses the order sync"),
        ("sync_refused.did", "Webhooks still arrive; catching up missed orders is paused."),
        ("sync_refused.todo", "Check the API key on Wix (expired or permissions revoked)."),
        ("no_orders.title", "No orders during opening hours"),
        ("no_orders.did", "Nothing; the service waits."),
        ("no_orders.todo", "Check that the ordering page on Wix is online."),
        ("recovery_finished.title", "Backlog printed ({subject})"),
        ("recovery_finished.did", "The tickets that piled up were printed."),
        ("recovery_finished.todo", "Look through the late tickets."),
        ("test.title", "Test alert {subject}"),
        ("test.did", "Nothing: a test alert."),
        ("test.todo", "Nothing. If this mail arrives, alerts work."),
    ]
}

/// Every key a language table has.
fn all_keys() -> Vec<String> {
    let mut keys: Vec<String> = GENERAL.iter().map(|k| (*k).to_owned()).collect();
    for kind in AlertKind::ALL {
        for part in ["title", "did", "todo"] {
            keys.push(format!("{}.{part}", kind.as_str()));
        }
    }
    keys
}

/// Alert texts per language code.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Texts {
    languages: BTreeMap<String, BTreeMap<String, String>>,
}

fn table(pairs: Vec<(&'static str, &'static str)>) -> BTreeMap<String, String> {
    pairs.into_iter().map(|(k, v)| (k.to_owned(), v.to_owned())).collect()
}

impl Texts {
    pub fn builtin() -> Texts {
        let mut languages = BTreeMap::new();
        languages.insert("de".to_owned(), table(builtin_de()));
        languages.insert("en".to_owned(), table(builtin_en()));
        Texts { languages }
    }

    pub fn load(path: &Path) -> Result<Texts, String> {
        let text = std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))?;
        Texts::from_toml_str(&text).map_err(|e| format!("{}: {e}", path.display()))
    }

    /// The built-in texts with a label file's tables on top.
    pub fn from_toml_str(text: &str) -> Result<Texts, String> {
        let file: toml::Table = text.parse().map_err(|e: toml::de::Error| e.message().to_owned())?;
        let mut texts = Texts::builtin();
        let known = all_keys();
        for (lang, value) in &file {
            let code = lang.to_lowercase();
            let toml::Value::Table(t) = value else {
                return Err(format!("[{lang}] must be a table of texts"));
            };
            let base = match t.get("base") {
                Some(toml::Value::String(b)) => b.to_lowercase(),
                Some(_) => return Err(format!("[{lang}] base: must be a language code in quotes")),
                None if texts.languages.contains_key(&code) => code.clone(),
                None => code.split('-').next().filter(|p| texts.languages.contains_key(*p)).unwrap_or("en").to_owned(),
            };
            let mut merged = texts
                .languages
                .get(&base)
                .cloned()
                .ok_or_else(|| format!("[{lang}] base {base:?}: no such language (define it earlier)"))?;
            for (key, v) in t {
                if key == "base" {
                    continue;
                }
                if !known.iter().any(|k| k == key) {
                    return Err(format!("[{lang}] {key}: unknown alert text"));
                }
                let toml::Value::String(v) = v else {
                    return Err(format!("[{lang}] {key}: must be a text in double quotes"));
                };
                merged.insert(key.clone(), v.clone());
            }
            texts.languages.insert(code, merged);
        }
        Ok(texts)
    }

    pub fn has(&self, language: &str) -> bool {
        self.languages.contains_key(&language.to_lowercase())
    }

    /// The text `key` in `language` (English, then the key itself, if missing).
    pub fn get<'a>(&'a self, language: &str, key: &'a str) -> &'a str {
        self.languages
            .get(language)
            .and_then(|t| t.get(key))
            .or_else(|| self.languages.get("en").and_then(|t| t.get(key)))
            .map_or(key, String::as_str)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn builtin_tables_are_complete() {
        let t = Texts::builtin();
        for lang in ["de", "en"] {
            let table = &t.languages[lang];
            for key in all_keys() {
                assert!(table.contains_key(&key), "{lang} lacks {key}");
            }
            assert_eq!(table.len(), all_keys().len(), "{lang} has extra keys");
        }
    }

    #[test]
    fn a_file_overrides_adds_languages_and_names_mistakes() {
        let t = Texts::from_toml_str("[de]\n\"test.title\" = \"Probe {subject}\"\n[fr]\nsince = \"Depuis\"\n").unwrap();
        assert_eq!(t.get("de", "test.title"), "Probe {subject}");
        assert_eq!(t.get("de", "since"), "Seit");
        assert_eq!(t.get("fr", "since"), "Depuis");
        assert_eq!(t.get("fr", "what"), "What happened");
        let e = Texts::from_toml_str("[de]\nsinse = \"x\"\n").unwrap_err();
        // The example file of deploy/ loads.
        let example = concat!(env!("CARGO_MANIFEST_DIR"), "/../deploy/alert-labels.example.toml");
        let t = Texts::load(Path::new(example)).unwrap();
        assert!(t.has("de-ch") && t.get("de", "printer_not_ready.todo").contains("Küchendrucker"));
        assert!(e.contains("[de] sinse"), "{e}");
    }
}
