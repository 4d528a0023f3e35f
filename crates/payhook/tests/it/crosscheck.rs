//! Cross-checks with independent implementations: runs `tests/crosscheck/jose_check.py`, which
//! opens payhook's JWEs with Python's jwcrypto and verifies its JWSs with PyJWT.
//!
//! The interpreter is `PAYHOOK_PYTHON`, else `python3`. A missing interpreter or library fails
//! the test with the command that installs them: these checks are never skipped.

use serde_json::Value;
use std::process::Stdio;
use tokio::io::AsyncWriteExt;

const SCRIPT: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/crosscheck/jose_check.py");
const INSTALL: &str = "pip install -r requirements-test.txt";
/// jose_check.py's exit code for a token that failed the check.
const CHECK_FAILED: i32 = 1;
/// jose_check.py's exit code when jwcrypto or PyJWT cannot be imported.
const MISSING_LIBRARY: i32 = 3;

fn python() -> String {
    std::env::var("PAYHOOK_PYTHON").unwrap_or_else(|_| "python3".to_owned())
}

/// Runs one job through jose_check.py: `Ok(payload)` when the independent library accepts the
/// token, `Err(reason)` when it refuses it. Panics when the check cannot run at all.
pub async fn jose_check(job: Value) -> Result<Value, String> {
    let python = python();
    let mut child = tokio::process::Command::new(&python)
        .arg(SCRIPT)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap_or_else(|e| {
            panic!(
                "cannot start {python:?} (PAYHOOK_PYTHON): {e}; install Python 3, then `{INSTALL}`"
            )
        });
    let mut stdin = child.stdin.take().expect("stdin is piped");
    stdin.write_all(job.to_string().as_bytes()).await.expect("job written to jose_check.py");
    drop(stdin);
    let out = child.wait_with_output().await.expect("jose_check.py runs to its end");
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    match out.status.code() {
        Some(0) => Ok(serde_json::from_slice(&out.stdout).expect("jose_check.py prints JSON")),
        Some(CHECK_FAILED) => Err(stderr),
        Some(MISSING_LIBRARY) => panic!(
            "the cross-check needs jwcrypto and PyJWT for {python:?}: run `{INSTALL}` at the \
             repository root (or point PAYHOOK_PYTHON at an interpreter that has them)\n{stderr}"
        ),
        other => panic!("jose_check.py could not run the job (exit {other:?}): {stderr}"),
    }
}
