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
