//! Headless Chromium (the Debian package `scripts/test-services` installs) reading a page.

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use super::process::run_with_timeout;

/// Runs headless Chromium `bin` on `url` with a fresh profile in `profile` and the `extra`
/// flags (e.g. `--dump-dom`, `--screenshot=...`); its stdout, after checking it succeeded.
pub fn chromium(bin: &Path, profile: &Path, extra: &[&str], url: &str) -> String {
    let (status, out, err) = run_with_timeout(
        "chromium",
        Command::new(bin)
            .args([
                "--headless",
                "--no-sandbox",
                "--disable-gpu",
                "--disable-dev-shm-usage",
                "--no-first-run",
                "--no-default-browser-check",
                "--disable-background-networking",
                "--disable-component-update",
                "--disable-default-apps",
                "--disable-extensions",
                "--disable-sync",
                "--hide-scrollbars",
            ])
            .arg(format!("--user-data-dir={}", profile.display()))
            .args(extra)
            .arg(url),
        Duration::from_secs(90),
    );
    assert!(
        status.success(),
        "chromium {extra:?} {url}: {status}\n{err}"
    );
    out
}
