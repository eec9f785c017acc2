//! The binary refuses bad configuration before binding anything: exit code 78 and a message
//! naming the key and its environment variable.

use std::process::Command;

fn run(env: &[(&str, &str)]) -> (i32, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_wix-print"))
        .env_clear()
        .envs(env.iter().copied())
        .output()
        .expect("run wix-print");
    (out.status.code().unwrap_or(-1), String::from_utf8_lossy(&out.stderr).into_owned())
}

#[test]
fn missing_printer_url_exits_78_naming_it() {
    let (code, err) = run(&[]);
    assert_eq!(code, 78, "{err}");
    assert!(err.contains("PRINTER_URL") && err.contains("required"), "{err}");
}

#[test]
fn invalid_values_exit_78_naming_the_key() {
    for (k, v, needle) in [
        ("PRINTER_URL", "lpt1", "PRINTER_URL"),
        ("PRINT_GRPC_ADDR", "localhost", "PRINT_GRPC_ADDR"),
        ("PRINT_WIDTH", "500", "PRINT_WIDTH"),
        ("PRINT_TIME_ZONE", "Mars/Olympus", "PRINT_TIME_ZONE"),
        ("PRINT_CONFIRM_MODE", "hope", "PRINT_CONFIRM_MODE"),
        ("PRINT_RECEIPT_TYPES", "kitchen,menu", "PRINT_RECEIPT_TYPES"),
        // A connectivity bus other hosts can reach needs the shared secret.
        ("PRINT_PUB_ADDR", "tcp://0.0.0.0:5562", "BUS_KEY_FILE"),
        ("INGEST_PUB_ADDR", "tcp://192.168.1.10:5561", "BUS_KEY_FILE"),
        ("BUS_KEY_FILE", "/nonexistent/bus.key", "BUS_KEY_FILE"),
        // Health thresholds: numbers ≥ 0, in order; shared parse, this service's prefix.
        ("PRINT_HEALTH_MEMORY_WARN_PCT", "lots", "PRINT_HEALTH_MEMORY_WARN_PCT"),
        ("PRINT_HEALTH_DISK_WARN_PCT", "99", "PRINT_HEALTH_DISK_WARN_PCT"),
        ("PRINT_HEALTH_QUEUE_AGE_WARN_SECS", "-5", "PRINT_HEALTH_QUEUE_AGE_WARN_SECS"),
        ("PRINT_HEALTH_RESTART_COOLDOWN_SECS", "0", "PRINT_HEALTH_RESTART_COOLDOWN_SECS"),
        // Retries and breakers (issue 11), alert thresholds (issue 12).
        ("PRINT_RETRY_BACKOFF_FACTOR", "0.5", "PRINT_RETRY_BACKOFF_FACTOR"),
        ("PRINT_RETRY_JITTER_PCT", "150", "PRINT_RETRY_JITTER_PCT"),
        ("PRINT_BREAKER_FAILURES", "0", "PRINT_BREAKER_FAILURES"),
        ("PRINT_BREAKER_OPEN_MS", "0", "PRINT_BREAKER_OPEN_MS"),
        ("ALERT_PRINTER_NOT_READY_SECS", "forever", "ALERT_PRINTER_NOT_READY_SECS"),
        ("ALERT_RECOVERY_MIN_OUTAGE_SECS", "99999999", "ALERT_RECOVERY_MIN_OUTAGE_SECS"),
        // The unauthenticated metrics endpoint stays on loopback.
        ("PRINT_METRICS_ADDR", "0.0.0.0:9464", "PRINT_METRICS_ADDR"),
    ] {
        let mut env = vec![("PRINTER_URL", "tcp://127.0.0.1:9100")];
        env.retain(|(ek, _)| *ek != k);
        env.push((k, v));
        let (code, err) = run(&env);
        assert_eq!(code, 78, "{k}={v}: {err}");
        assert!(err.contains(needle), "{k}={v}: {err}");
    }
}

#[test]
fn valid_configuration_checks_ok() {
    let out = Command::new(env!("CARGO_BIN_EXE_wix-print"))
        .env_clear()
        .env("PRINTER_URL", "tcp://127.0.0.1:9100")
        .arg("--check-config")
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
}

#[test]
fn toml_file_is_read_and_the_environment_overrides_it() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("print.toml");
    std::fs::write(&file, "printer_url = \"tcp://10.0.0.9:9100\"\nwidth = 500\n").unwrap();
    let run = |env: &[(&str, &str)]| {
        let out = Command::new(env!("CARGO_BIN_EXE_wix-print"))
            .env_clear()
            .envs(env.iter().copied())
            .args(["--config", file.to_str().unwrap(), "--check-config"])
            .output()
            .unwrap();
        (out.status.code().unwrap_or(-1), String::from_utf8_lossy(&out.stderr).into_owned())
    };
    // The file's bad width is reported with its origin...
    let (code, err) = run(&[]);
    assert_eq!(code, 78, "{err}");
    assert!(err.contains("width") && err.contains("config file"), "{err}");
    // ...and the environment wins over it.
    let (code, err) = run(&[("PRINT_WIDTH", "42")]);
    assert_eq!(code, 0, "{err}");
    std::fs::write(&file, "printer_url = \"tcp://10.0.0.9:9100\"\nwidht = 42\n").unwrap();
    let (code, err) = run(&[]);
    assert_eq!(code, 78);
    assert!(err.contains("unknown key `widht`"), "{err}");
}
