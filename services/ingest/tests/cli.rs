//! The binary refuses bad configuration before binding anything: exit code 78 and a message
//! naming the key and its environment variable.

use std::process::Command;

fn run(env: &[(&str, &str)]) -> (i32, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_wix-ingest"))
        .env_clear()
        .envs(env.iter().copied())
        .arg("--check-config")
        .output()
        .expect("run wix-ingest");
    (out.status.code().unwrap_or(-1), String::from_utf8_lossy(&out.stderr).into_owned())
}

#[test]
fn missing_public_key_exits_78_naming_it() {
    let (code, err) = run(&[]);
    assert_eq!(code, 78, "{err}");
    assert!(err.contains("WIX_WEBHOOK_PUBLIC_KEY_FILE"), "{err}");
}

#[test]
fn unreadable_or_invalid_key_and_bad_addresses_exit_78() {
    let dir = tempfile::tempdir().unwrap();
    let junk = dir.path().join("junk.pem");
    std::fs::write(&junk, "not a key").unwrap();
    let junk = junk.to_str().unwrap();
    for (env, needle) in [
        (vec![("WIX_WEBHOOK_PUBLIC_KEY_FILE", "/nonexistent/key.pem")], "WIX_WEBHOOK_PUBLIC_KEY_FILE"),
        (vec![("WIX_WEBHOOK_PUBLIC_KEY_FILE", junk)], "WIX_WEBHOOK_PUBLIC_KEY_FILE"),
    ] {
        let (code, err) = run(&env);
        assert_eq!(code, 78, "{env:?}: {err}");
        assert!(err.contains(needle), "{env:?}: {err}");
    }
    let (code, err) = run(&[("INGEST_HTTP_ADDR", "nowhere"), ("WIX_WEBHOOK_PUBLIC_KEY_FILE", junk)]);
    assert_eq!(code, 78, "{err}");
}
