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

#[test]
fn bad_connectivity_listener_and_outbox_settings_exit_78_naming_the_variable() {
    use rsa::pkcs8::{EncodePublicKey, LineEnding};
    let dir = tempfile::tempdir().unwrap();
    let private = rsa::RsaPrivateKey::new(&mut rsa::rand_core::OsRng, 2048).unwrap();
    let pem = private.to_public_key().to_public_key_pem(LineEnding::LF).unwrap();
    let key = dir.path().join("wix.pem");
    std::fs::write(&key, pem).unwrap();
    let key = key.to_str().unwrap();
    let (code, err) = run(&[("WIX_WEBHOOK_PUBLIC_KEY_FILE", key)]);
    assert_eq!(code, 0, "the defaults are valid: {err}");
    for (var, value) in [
        ("INGEST_INTERNET_PROBES", "udp://1.1.1.1:53"),
        ("INGEST_INTERNET_DEBOUNCE", "0"),
        ("INGEST_INTERNET_INTERVAL_MS", "soon"),
        ("INGEST_CONNECTIVITY_RETENTION_DAYS", "-1"),
        ("INGEST_PUB_ADDR", "localhost"),
        ("PRINT_PUB_ADDR", "tcp://127.0.0.1:0"),
        ("BUS_STALE_MS", "500"),
        ("INGEST_HTTP_MAX_CONNECTIONS", "0"),
        ("INGEST_HTTP_MAX_CONNECTIONS", "100000000"),
        ("INGEST_HTTP_HEADER_TIMEOUT_MS", "0"),
        ("INGEST_HTTP_BODY_TIMEOUT_MS", "slow"),
        ("INGEST_HTTP_IDLE_TIMEOUT_MS", "99999999"),
        ("INGEST_HTTP_BODY_BUDGET_BYTES", "10"),
        ("INGEST_OUTBOX_DEAD_AFTER", "0"),
        ("INGEST_OUTBOX_DEAD_AFTER", "many"),
        ("INGEST_HEALTH_MEMORY_CRIT_PCT", "50"),
        ("INGEST_HEALTH_CPU_EMERGENCY_PCT", "nan"),
        ("INGEST_HEALTH_OUTBOX_BACKLOG_WARN_ROWS", "x"),
        ("INGEST_HEALTH_STALL_MS", "0"),
        ("ALERT_OPENING_HOURS", "mon-fri 11:00"),
        ("ALERT_OPENING_HOURS", "someday 11:00-14:00"),
        ("ALERT_NO_ORDERS_SECS", "99999999"),
        ("ALERT_INTERNET_OFFLINE_SECS", "soon"),
        ("ALERT_PEER_SECS", "-1"),
        ("INGEST_METRICS_ADDR", "192.168.1.5:9464"),
    ] {
        let (code, err) = run(&[("WIX_WEBHOOK_PUBLIC_KEY_FILE", key), (var, value)]);
        assert_eq!(code, 78, "{var}={value}: {err}");
        assert!(err.contains(var), "{var}={value}: {err}");
    }
    // A bus address other hosts can reach needs the shared secret.
    let (code, err) = run(&[("WIX_WEBHOOK_PUBLIC_KEY_FILE", key), ("INGEST_PUB_ADDR", "tcp://0.0.0.0:5561")]);
    assert_eq!(code, 78, "{err}");
    assert!(err.contains("BUS_KEY_FILE"), "{err}");
}
