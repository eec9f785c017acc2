//! wix-print binary: everything lives in the library; see `wix_print::run`.
#![forbid(unsafe_code)]

fn main() {
    wixprint_shared::cli::main(
        "wix-print",
        "Prints Wix orders on ESC/POS printers, marking a ticket printed only when the printer confirms.",
        wix_print::config::KEYS,
        wix_print::Config::from_source,
        wix_print::run,
    );
}
