//! `--help` and `--version` for the test kit's binaries: answered before anything starts (no
//! stack, no benchmark, no files), exit 0.

/// If the arguments ask for help (`-h`, `--help`) or the version (`-V`, `--version`), prints
/// it and exits 0; otherwise returns and the program goes on.
pub fn help_or_version(name: &str, help: &str) {
    for arg in std::env::args().skip(1) {
        match arg.as_str() {
            "-h" | "--help" => {
                println!("{}", help.trim_end());
                std::process::exit(0);
            }
            "-V" | "--version" => {
                println!("{name} {}", env!("CARGO_PKG_VERSION"));
                std::process::exit(0);
            }
            "--" => return,
            _ => {}
        }
    }
}
