//! One mail from one or more outbox rows: plain text plus a small HTML part
//! (multipart/alternative), UTF-8 subject (lettre encodes it) and bodies.
//!
//! Must never: do I/O. The same rows give the same `Message-ID`, so a mail sent again after a
//! crash between the SMTP server's accept and our commit is recognisable as the same mail.

use lettre::Message;
use lettre::message::{MultiPart, header};

use super::Severity;
use super::config::AlertConfig;
use super::store::{Event, Row};

/// One row in a mail, with the suppressed occurrences of its kind to report.
#[derive(Debug, Clone)]
pub struct Item {
    pub row: Row,
    /// (count, first one's raise time) of suppressed raises of this kind since its last mail.
    pub more: Option<(u32, i64)>,
}

/// Who sends: the service's name and the host it runs on.
#[derive(Debug, Clone)]
pub struct Origin {
    pub service: &'static str,
    pub host: String,
}

struct Rendered {
    title: String,
    label: &'static str,
    lines: Vec<(String, String)>,
    more: Option<String>,
    test: bool,
}

fn fill(template: &str, subject: &str) -> String {
    let s = template.replace("{subject}", subject);
    // "Printer  is not ready" when there is no subject: tidy the double space.
    s.split_whitespace().collect::<Vec<_>>().join(" ")
}

fn local(cfg: &AlertConfig, ms: i64, format: &str) -> String {
    match jiff::Timestamp::from_millisecond(ms) {
        Ok(t) => t.to_zoned(cfg.time_zone.clone()).strftime(format).to_string(),
        Err(_) => ms.to_string(),
    }
}

fn render(cfg: &AlertConfig, item: &Item) -> Rendered {
    let lang = cfg.language.as_str();
    let t = |k: &str| cfg.texts.get(lang, k).to_owned();
    let row = &item.row;
    let kind = row.kind.as_str();
    let base_title = fill(&t(&format!("{kind}.title")), &row.subject);
    let resolved = row.event == Event::Resolve;
    let title = if resolved { t("resolved").replace("{title}", &base_title) } else { base_title };
    let tz = cfg.time_zone.iana_name().unwrap_or("UTC").to_owned();
    let mut lines = vec![(t("since"), format!("{} ({tz})", local(cfg, row.since_ms, "%d.%m.%Y %H:%M:%S")))];
    if !resolved {
        lines.push((t("did"), fill(&t(&format!("{kind}.did")), &row.subject)));
        lines.push((t("todo"), fill(&t(&format!("{kind}.todo")), &row.subject)));
    } else {
        lines.push((t("todo"), t("resolved_todo")));
    }
    if !row.facts.is_empty() {
        let facts = row.facts.iter().map(|(k, v)| format!("{k}: {v}")).collect::<Vec<_>>().join(", ");
        lines.push((t("details"), facts));
    }
    let more = item.more.filter(|(n, _)| *n > 0).map(|(n, first)| {
        t("more_times").replace("{n}", &n.to_string()).replace("{time}", &local(cfg, first, "%H:%M"))
    });
    let label = if resolved { "OK" } else { row.severity.as_str() };
    Rendered { title, label, lines, more, test: row.event == Event::Test }
}

fn escape(s: &str) -> String {
    s.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;").replace('"', "&quot;")
}

/// The subject and both bodies of a mail carrying `items` (at least one).
pub fn texts(cfg: &AlertConfig, origin: &Origin, items: &[Item]) -> (String, String, String) {
    let lang = cfg.language.as_str();
    let t = |k: &str| cfg.texts.get(lang, k).to_owned();
    let rendered: Vec<Rendered> = items.iter().map(|i| render(cfg, i)).collect();
    let any_test = rendered.iter().any(|r| r.test);
    let worst = items
        .iter()
        .filter(|i| i.row.event != Event::Resolve)
        .map(|i| i.row.severity)
        .max()
        .map_or("OK", Severity::as_str);
    let test = if any_test { "TEST " } else { "" };
    let mut subject = if rendered.len() == 1 {
        format!("[{test}{}] {}", rendered[0].label, rendered[0].title)
    } else {
        let titles = rendered.iter().map(|r| r.title.as_str()).collect::<Vec<_>>().join("; ");
        format!("[{test}{worst}] {}: {titles}", t("digest").replace("{n}", &rendered.len().to_string()))
    };
    if subject.chars().count() > 160 {
        subject = subject.chars().take(159).collect::<String>() + "…";
    }
    if !cfg.restaurant.is_empty() {
        subject = format!("{subject} — {}", cfg.restaurant);
    }

    let mut text = String::new();
    let mut html = String::from(
        "<!DOCTYPE html><html><head><meta charset=\"utf-8\"></head><body style=\"font-family:sans-serif\">",
    );
    if any_test {
        text.push_str(&t("test_note"));
        text.push_str("\n\n");
        html.push_str(&format!("<p><em>{}</em></p>", escape(&t("test_note"))));
    }
    for r in &rendered {
        text.push_str(&format!("[{}] {}\n", r.label, r.title));
        html.push_str(&format!("<h2>[{}] {}</h2><table>", escape(r.label), escape(&r.title)));
        for (k, v) in &r.lines {
            text.push_str(&format!("{k}: {v}\n"));
            html.push_str(&format!(
                "<tr><th align=\"left\" valign=\"top\">{}</th><td>{}</td></tr>",
                escape(k),
                escape(v)
            ));
        }
        html.push_str("</table>");
        if let Some(m) = &r.more {
            text.push_str(&format!("{m}\n"));
            html.push_str(&format!("<p>{}</p>", escape(m)));
        }
        text.push('\n');
    }
    let mut footer = Vec::new();
    if !cfg.restaurant.is_empty() {
        footer.push((t("restaurant"), cfg.restaurant.clone()));
    }
    footer.push((t("service"), origin.service.to_owned()));
    footer.push((t("host"), origin.host.clone()));
    html.push_str("<hr><p style=\"color:#666\">");
    for (k, v) in &footer {
        text.push_str(&format!("{k}: {v}\n"));
        html.push_str(&format!("{}: {}<br>", escape(k), escape(v)));
    }
    text.push_str(&format!("-- \n{}\n", t("footer")));
    html.push_str(&format!("{}</p></body></html>", escape(&t("footer"))));
    (subject, text, html)
}

/// The mail itself; `mail_id` is the first row's id (its `Message-ID`).
pub fn message(cfg: &AlertConfig, origin: &Origin, items: &[Item], mail_id: i64) -> Result<Message, String> {
    let (subject, text, html) = texts(cfg, origin, items);
    let domain = cfg.from.email.domain().to_owned();
    let mut b = Message::builder()
        .from(cfg.from.clone())
        .subject(subject)
        .message_id(Some(format!("<wixprint-alert-{}-{}-{mail_id}@{domain}>", origin.service, origin.host)))
        .header(header::MIME_VERSION_1_0);
    for to in &cfg.to {
        b = b.to(to.clone());
    }
    b.multipart(MultiPart::alternative_plain_html(text, html)).map_err(|e| format!("building the mail: {e}"))
}

/// Whether rows of `kind` count for throttling as raises (tests do too).
pub fn is_raise(event: Event) -> bool {
    event != Event::Resolve
}
