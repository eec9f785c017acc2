//! wix-ingest binary: everything lives in the library; see `wix_ingest::run`.
#![forbid(unsafe_code)]

fn main() {
    wixprint_shared::cli::main(
        "wix-ingest",
        "Receives Wix order webhooks and forwards them to wix-print.",
        wix_ingest::config::KEYS,
        wix_ingest::Config::from_source,
        wix_ingest::run,
    );
}
