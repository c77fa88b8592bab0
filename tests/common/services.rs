//! The services and tools that tests need (DynamoDB Local, moto, Prometheus, Chromium,
//! systemd-analyze), found through the environment `scripts/test-services` sets.
//!
//! A test that did not run must never count as passed: when a service is missing or does not
//! answer, the test fails with a message naming the service and the command that starts it.
//! The one way to skip is a deliberate local opt-out, `ANAMO_TEST_ALLOW_SKIP=1` (ignored when
//! `CI` is set): each test that then skips prints a loud `SKIPPED` line (to the terminal, past
//! the test runner's capture, when there is one) and appends it to the skip list
//! (`target/anamo-skipped-tests.txt`, or `ANAMO_TEST_SKIP_LOG`), so what was not run is on
//! record; `scripts/test-services run` prints that list at the end.

use std::io::Write;
use std::net::{SocketAddr, TcpStream, ToSocketAddrs};
use std::path::{Path, PathBuf};
use std::time::Duration;

/// The command that starts every service and runs the tests with them.
pub const RUN_COMMAND: &str = "scripts/test-services run -- cargo nextest run";

/// The variable of the deliberate local opt-out.
pub const ALLOW_SKIP: &str = "ANAMO_TEST_ALLOW_SKIP";

/// The endpoint in `var` (e.g. `ANAMO_TEST_MOTO_ENDPOINT`) of the service `name`, checked to
/// accept connections. Missing or unreachable: the test fails (or, opted out, skips: `None`).
pub fn endpoint(var: &str, name: &str) -> Option<String> {
    match check_endpoint(var, name, std::env::var(var).ok().as_deref()) {
        Ok(url) => Some(url),
        Err(problem) => missing(&problem),
    }
}

/// The external program (or directory) in `var` (e.g. `ANAMO_TEST_PROMETHEUS_BIN`), or with `path_name`
/// the program of that name on `PATH` when `var` is unset. Missing: the test fails (or, opted
/// out, skips: `None`).
pub fn tool(var: &str, what: &str, path_name: Option<&str>) -> Option<PathBuf> {
    let value = std::env::var_os(var).filter(|v| !v.is_empty());
    let found = match (&value, path_name) {
        (Some(p), _) => Some(PathBuf::from(p)).filter(|p| p.exists()),
        (None, Some(name)) => on_path(name),
        (None, None) => None,
    };
    if found.is_some() {
        return found;
    }
    let why = match (value, path_name) {
        (Some(p), _) => format!("{var}={} does not exist", p.to_string_lossy()),
        (None, Some(name)) => format!("{var} is not set and `{name}` is not on PATH"),
        (None, None) => format!("{var} is not set"),
    };
    missing(&format!(
        "{what} is not available ({why}); `scripts/test-services install` installs it and \
         `{RUN_COMMAND}` runs the tests with it"
    ))
}

fn on_path(name: &str) -> Option<PathBuf> {
    std::env::split_paths(&std::env::var_os("PATH")?)
        .map(|dir| dir.join(name))
        .find(|p| p.is_file())
}

/// Pure part of [`endpoint`]: the URL when `value` names a service that accepts connections,
/// else what is wrong and how to fix it.
pub fn check_endpoint(var: &str, name: &str, value: Option<&str>) -> Result<String, String> {
    let start = format!("start it with `{RUN_COMMAND}` (it starts every test service)");
    let url = match value {
        Some(v) if !v.trim().is_empty() => v.trim().to_string(),
        _ => return Err(format!("{name} is not running: {var} is not set; {start}")),
    };
    let addr = socket_addr(&url).ok_or_else(|| {
        format!("{name}: {var}={url} is not an http://HOST:PORT endpoint; {start}")
    })?;
    TcpStream::connect_timeout(&addr, Duration::from_secs(3)).map_err(|e| {
        format!("{name} does not answer at {var}={url} ({e}): is it running? {start}")
    })?;
    Ok(url)
}

/// `http://host:port[/...]` → the first socket address of `host:port`.
fn socket_addr(url: &str) -> Option<SocketAddr> {
    let rest = url.split_once("://").map_or(url, |(_, r)| r);
    let authority = rest.split('/').next()?;
    if !authority.contains(':') {
        return None;
    }
    authority.to_socket_addrs().ok()?.next()
}

/// Whether skipping is allowed: the explicit opt-out, and never in CI.
pub fn skip_allowed() -> bool {
    std::env::var(ALLOW_SKIP).is_ok_and(|v| v == "1") && std::env::var_os("CI").is_none()
}

/// Fails the test with `problem` (what is missing and how to provide it), or, opted out,
/// records the skip and returns `None`.
pub fn missing<T>(problem: &str) -> Option<T> {
    if !skip_allowed() {
        panic!(
            "{problem}.\nA test that cannot reach what it needs fails rather than passing \
             unchecked; to skip such tests on purpose set {ALLOW_SKIP}=1 (ignored when CI is set)."
        );
    }
    let test = format!(
        "{}::{}",
        env!("CARGO_CRATE_NAME"),
        std::thread::current().name().unwrap_or("<unnamed test>")
    );
    let line = format!("SKIPPED (not run, {ALLOW_SKIP}=1): {test}: {problem}");
    eprintln!("\n!!!!! {line}\n");
    if let Ok(mut tty) = std::fs::OpenOptions::new().write(true).open("/dev/tty") {
        let _ = writeln!(tty, "!!!!! {line}");
    }
    let log = skip_log();
    let _ = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&log)
        .and_then(|mut f| writeln!(f, "{line}"));
    None
}

/// Where skipped tests are listed: `ANAMO_TEST_SKIP_LOG`, else `target/anamo-skipped-tests.txt`.
pub fn skip_log() -> PathBuf {
    if let Some(p) = std::env::var_os("ANAMO_TEST_SKIP_LOG").filter(|p| !p.is_empty()) {
        return PathBuf::from(p);
    }
    let tmp = Path::new(env!("CARGO_TARGET_TMPDIR"));
    tmp.parent().unwrap_or(tmp).join("anamo-skipped-tests.txt")
}
