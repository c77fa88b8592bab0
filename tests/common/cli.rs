//! Running programs from tests: the built `anamo` on a store, a run's stdout once it is
//! checked to have succeeded, and the AWS environment that `anamo` and Python's boto3 (from
//! the moto venv `scripts/test-services` installs) share on DynamoDB Local.

use std::borrow::Borrow;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// The repository's root.
pub fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// `anamo --store STORE ARGS...` run in `dir` (on DynamoDB Local when the tests have one).
pub fn anamo(dir: &Path, store: &str, args: &[&str]) -> Output {
    let mut c = Command::new(env!("CARGO_BIN_EXE_anamo"));
    c.current_dir(dir).arg("--store").arg(store).args(args);
    if let Ok(endpoint) = std::env::var("ANAMO_TEST_DYNAMODB_ENDPOINT") {
        c.env("AWS_ENDPOINT_URL", endpoint);
    }
    c.output().expect("run anamo")
}

/// The stdout of `out` (owned or borrowed), after checking that `what` succeeded (else fails
/// with both outputs).
pub fn stdout_ok(what: &str, out: impl Borrow<Output>) -> String {
    let out = out.borrow();
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "{what} failed ({}):\nstdout:\n{stdout}\nstderr:\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    stdout
}

/// The stdout of an `anamo` run that must have succeeded.
pub fn ok(out: &Output) -> String {
    stdout_ok("anamo", out)
}

/// DynamoDB Local's endpoint and the moto venv's Python (`$ANAMO_SERVICES_DIR/venv` or
/// `<repo>/.services/venv`), for tests where boto3 writes the table: a missing one fails
/// the test (see [`super::services`]).
pub fn dynamo_and_python() -> Option<(String, PathBuf)> {
    let endpoint = super::dynamo_endpoint()?;
    let dir = std::env::var_os("ANAMO_SERVICES_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| repo().join(".services"));
    let python = dir.join("venv/bin/python");
    if !python.exists() {
        return super::services::missing(&format!(
            "the moto venv's python ({}) does not exist; `scripts/test-services install` \
             creates it",
            python.display()
        ));
    }
    Some((endpoint, python))
}

/// Dummy credentials and `endpoint` for every AWS client of `cmd` (`anamo`, its workers and
/// boto3 alike), with no `ANAMO_` or `AWS_` variable of the test's own environment.
pub fn aws_env<'a>(cmd: &'a mut Command, endpoint: &str) -> &'a mut Command {
    for (k, _) in std::env::vars_os() {
        let k = k.to_string_lossy().into_owned();
        if k.starts_with("ANAMO_") || k.starts_with("AWS_") {
            cmd.env_remove(k);
        }
    }
    cmd.env("AWS_ENDPOINT_URL", endpoint)
        .env("AWS_ACCESS_KEY_ID", "test")
        .env("AWS_SECRET_ACCESS_KEY", "test")
        .env("AWS_REGION", "us-east-1")
        .env("AWS_DEFAULT_REGION", "us-east-1")
        .env("AWS_EC2_METADATA_DISABLED", "true")
        .env("RUST_LOG", "warn")
}
