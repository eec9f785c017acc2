//! Every binary the project builds answers `--help` and `--version` (and `-h`, `-V`) at once,
//! exit 0, without side effects: nothing starts (no stack, no benchmark), no file appears in
//! the working directory or under TMPDIR.

use std::process::Command;
use std::time::{Duration, Instant};

use wixprint_tests::harness::bin_path;

const BINARIES: &[&str] = &[
    "wix-ingest",
    "wix-print",
    "printer-sim",
    "demo",
    "observe",
    "loadgen",
    "recoverybench",
    "storagebench",
    "decisionbench",
    "send-webhook",
    "fake-wix",
    "tcp-relay",
    "compose-driver",
];

fn entries(dir: &std::path::Path) -> Vec<String> {
    std::fs::read_dir(dir).unwrap().map(|e| e.unwrap().file_name().to_string_lossy().into_owned()).collect()
}

#[test]
fn every_binary_answers_help_and_version_without_side_effects() {
    let version = env!("CARGO_PKG_VERSION");
    for name in BINARIES {
        let bin = bin_path(name);
        assert!(bin.is_file(), "{} is not built (cargo build --workspace)", bin.display());
        for flag in ["--help", "-h", "--version", "-V"] {
            let cwd = tempfile::tempdir().unwrap();
            let tmp = tempfile::tempdir().unwrap();
            let started = Instant::now();
            let out = Command::new(&bin)
                .arg(flag)
                .current_dir(cwd.path())
                .env("TMPDIR", tmp.path())
                // Nothing a service reads may matter: a config that would fail if read.
                .env("WIX_PUBLIC_KEY_FILE", "/nonexistent/key.pem")
                .output()
                .unwrap();
            let took = started.elapsed();
            let stdout = String::from_utf8_lossy(&out.stdout);
            let stderr = String::from_utf8_lossy(&out.stderr);
            assert!(out.status.success(), "{name} {flag}: {:?}\n{stdout}\n{stderr}", out.status);
            assert!(took < Duration::from_secs(5), "{name} {flag} took {took:?} (did something start?)");
            assert!(!stdout.trim().is_empty(), "{name} {flag} printed nothing");
            if flag.contains('V') || flag == "--version" {
                assert!(
                    stdout.trim() == format!("{name} {version}"),
                    "{name} {flag} printed {stdout:?}, want \"{name} {version}\""
                );
            } else {
                assert!(stdout.contains(name), "{name} {flag}: the help does not name the program:\n{stdout}");
                assert!(stdout.lines().count() >= 2, "{name} {flag}: one line is no help:\n{stdout}");
            }
            assert!(entries(cwd.path()).is_empty(), "{name} {flag} wrote {:?} into its cwd", entries(cwd.path()));
            assert!(entries(tmp.path()).is_empty(), "{name} {flag} wrote {:?} into TMPDIR", entries(tmp.path()));
        }
    }
}
