//! A panic, in any thread, is one log event (JSON when logs are), counted,
//! and never raw text on standard error. Run in a child process of its
//! own, since the hook and the subscriber are process-wide.

use std::{process::Command, time::Duration};

use runtime::{
    settings::{LogFormat, LogSettings},
    telemetry::{OtlpProtocol, TraceSettings},
};
use serde_json::Value;

/// Set in the child process: it panics instead of checking.
const CHILD: &str = "SHORTENER_TEST_PANIC_CHILD";

#[test]
fn panics_are_logged_as_json_events() {
    if std::env::var_os(CHILD).is_some() {
        panic_in_a_thread();
        return;
    }
    let output = Command::new(std::env::current_exe().expect("test binary"))
        .args(["--exact", "panics_are_logged_as_json_events", "--nocapture"])
        .env(CHILD, "1")
        .env_remove("RUST_LOG")
        .env_remove("RUST_BACKTRACE")
        .output()
        .expect("run the child");
    assert!(output.status.success(), "{output:?}");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    let event: Value = stdout
        .lines()
        .filter_map(|line| serde_json::from_str::<Value>(line).ok())
        .find(|event| event["message"] == "a thread panicked")
        .unwrap_or_else(|| panic!("no panic event in:\n{stdout}\n{stderr}"));
    assert_eq!(event["level"], "ERROR");
    assert_eq!(event["target"], "panic");
    assert_eq!(event["panic"], "boom at the edge");
    assert_eq!(event["thread"], "doomed");
    assert!(
        event["location"]
            .as_str()
            .is_some_and(|l| l.contains("panic_log.rs")),
        "{event}"
    );
    assert!(
        !stderr.contains("panicked at"),
        "the panic went to standard error too:\n{stderr}"
    );
    assert!(
        stdout.contains("panics counted: 1"),
        "the child did not count it:\n{stdout}"
    );
}

fn panic_in_a_thread() {
    let _telemetry = runtime::telemetry::init(
        "panic-test",
        &LogSettings {
            level: "info".into(),
            format: LogFormat::Json,
        },
        &TraceSettings {
            endpoint: String::new(),
            protocol: OtlpProtocol::Grpc,
            sampling_ratio: 0.0,
            export_timeout: Duration::from_secs(1),
        },
    )
    .expect("telemetry");
    let outcome = std::thread::Builder::new()
        .name("doomed".into())
        .spawn(|| panic!("boom at the edge"))
        .expect("spawn")
        .join();
    assert!(outcome.is_err());
    println!("panics counted: {}", runtime::panics::count());
}
