//! Child processes of tests: killed when the test ends (even on panic), stopped politely.

use std::process::{Child, ExitStatus};
use std::time::{Duration, Instant};

/// Kills (and reaps) the child when dropped.
pub struct Kill(pub Child);

impl Drop for Kill {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Sends SIGTERM and waits up to `within` for the process to exit; panics naming `what` if it
/// does not.
pub fn terminate(child: &mut Child, within: Duration, what: &str) -> ExitStatus {
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(child.id() as i32),
        nix::sys::signal::Signal::SIGTERM,
    )
    .unwrap();
    let deadline = Instant::now() + within;
    loop {
        if let Some(s) = child.try_wait().unwrap() {
            return s;
        }
        assert!(Instant::now() < deadline, "{what} did not exit on SIGTERM");
        std::thread::sleep(Duration::from_millis(100));
    }
}
