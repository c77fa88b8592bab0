//! Child processes of tests: killed when the test ends (even on panic), stopped politely,
//! with their descendants; and commands run to completion under a time limit.

use std::path::PathBuf;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;

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
    kill(Pid::from_raw(child.id() as i32), Signal::SIGTERM).unwrap();
    let deadline = Instant::now() + within;
    loop {
        if let Some(s) = child.try_wait().unwrap() {
            return s;
        }
        assert!(Instant::now() < deadline, "{what} did not exit on SIGTERM");
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Pids of the children of `pid` (from /proc).
fn children_of(pid: u32) -> Vec<u32> {
    let mut out = Vec::new();
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return out;
    };
    for e in dir.flatten() {
        let Some(p) = e.file_name().to_str().and_then(|s| s.parse::<u32>().ok()) else {
            continue;
        };
        if let Ok(stat) = std::fs::read_to_string(format!("/proc/{p}/stat")) {
            // `pid (comm) state ppid ...`; comm may contain spaces and parentheses.
            let ppid = stat
                .rsplit_once(')')
                .and_then(|(_, rest)| rest.split_whitespace().nth(1))
                .and_then(|s| s.parse::<u32>().ok());
            if ppid == Some(pid) {
                out.push(p);
            }
        }
    }
    out
}

/// `pid` and all its descendants with their start times (to recognise them later).
fn process_tree(pid: u32) -> Vec<(u32, String)> {
    let mut all = Vec::new();
    let mut todo = vec![pid];
    while let Some(p) = todo.pop() {
        if let Some(start) = start_time(p) {
            all.push((p, start));
        }
        todo.extend(children_of(p));
    }
    all
}

fn start_time(pid: u32) -> Option<String> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let (_, rest) = stat.rsplit_once(')')?;
    // Field 22 of stat (starttime) is the 20th after the comm.
    rest.split_whitespace().nth(19).map(str::to_string)
}

/// Owns a spawned process. Dropping it (also while a test panics) sends SIGTERM, waits up to
/// `grace`, then SIGKILLs it and every descendant still alive that it had when the drop began
/// (local workers run in their own process groups, so a group kill would not reach them).
pub struct ProcessGuard {
    pub name: String,
    child: Option<Child>,
    pub grace: Duration,
}

impl ProcessGuard {
    pub fn spawn(name: &str, cmd: &mut Command) -> ProcessGuard {
        let child = cmd
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {name}: {e}"));
        ProcessGuard {
            name: name.to_string(),
            child: Some(child),
            grace: Duration::from_secs(20),
        }
    }

    pub fn pid(&self) -> u32 {
        self.child.as_ref().map(|c| c.id()).unwrap_or(0)
    }

    /// `Some(status)` once the process has exited.
    pub fn try_wait(&mut self) -> Option<ExitStatus> {
        self.child
            .as_mut()
            .and_then(|c| c.try_wait().ok().flatten())
    }

    /// Stops the process (and its descendants) now; returns how it ended.
    pub fn stop(&mut self) -> Option<ExitStatus> {
        let mut child = self.child.take()?;
        let tree = process_tree(child.id());
        let _ = kill(Pid::from_raw(child.id() as i32), Signal::SIGTERM);
        let deadline = Instant::now() + self.grace;
        let mut status = None;
        while Instant::now() < deadline {
            if let Ok(Some(s)) = child.try_wait() {
                status = Some(s);
                break;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        if status.is_none() {
            eprintln!(
                "{} did not stop within {:?}; killing it",
                self.name, self.grace
            );
            let _ = child.kill();
            status = child.wait().ok();
        }
        // Whatever it started and left behind (same pid *and* start time: not a recycled pid).
        for (pid, started) in tree.into_iter().skip(1) {
            if start_time(pid).as_deref() == Some(started.as_str()) {
                let _ = kill(Pid::from_raw(pid as i32), Signal::SIGKILL);
            }
        }
        status
    }
}

impl Drop for ProcessGuard {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Runs `cmd` to completion with a time limit, stdout and stderr captured. The command runs in
/// its own process group, which is killed as a whole on timeout (or panic).
pub fn run_with_timeout(
    name: &str,
    cmd: &mut Command,
    timeout: Duration,
) -> (ExitStatus, String, String) {
    use std::os::unix::process::CommandExt;
    let dir = tempfile::tempdir().expect("tempdir");
    let out_path = dir.path().join("stdout");
    let err_path = dir.path().join("stderr");
    cmd.stdin(Stdio::null())
        .stdout(std::fs::File::create(&out_path).expect("stdout file"))
        .stderr(std::fs::File::create(&err_path).expect("stderr file"))
        .process_group(0);
    struct Group(Option<Child>);
    impl Drop for Group {
        fn drop(&mut self) {
            if let Some(mut c) = self.0.take() {
                let _ = kill(Pid::from_raw(-(c.id() as i32)), Signal::SIGKILL);
                let _ = c.wait();
            }
        }
    }
    let mut g = Group(Some(
        cmd.spawn()
            .unwrap_or_else(|e| panic!("cannot start {name}: {e}")),
    ));
    let start = Instant::now();
    let status = loop {
        let c = g.0.as_mut().expect("child");
        if let Ok(Some(s)) = c.try_wait() {
            g.0 = None;
            break s;
        }
        if start.elapsed() > timeout {
            drop(g);
            panic!(
                "{name} did not finish within {timeout:?}; stderr:\n{}",
                std::fs::read_to_string(&err_path).unwrap_or_default()
            );
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    (
        status,
        std::fs::read_to_string(&out_path).unwrap_or_default(),
        std::fs::read_to_string(&err_path).unwrap_or_default(),
    )
}

/// A child process with its log (stderr) in a file; killed (SIGKILL) and reaped on drop if
/// still running.
pub struct Logged {
    pub child: std::process::Child,
    /// Its stderr (the log).
    pub log: PathBuf,
}

impl Logged {
    pub fn pid(&self) -> i32 {
        self.child.id() as i32
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// `kill -9`, then reap.
    pub fn kill9(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    pub fn running(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }

    /// Waits for the exit; panics after `timeout`.
    pub async fn wait_exit(&mut self, timeout: Duration) -> std::process::ExitStatus {
        let start = Instant::now();
        loop {
            if let Some(status) = self.child.try_wait().expect("try_wait") {
                return status;
            }
            if start.elapsed() > timeout {
                panic!(
                    "process {} did not exit within {timeout:?}; log:\n{}",
                    self.pid(),
                    self.log_text()
                );
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

impl Drop for Logged {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}
