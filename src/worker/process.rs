//! Task processes: `/bin/sh -c SCRIPT sh ARGS...` in a process group of its own, so the whole
//! tree can be stopped (SIGTERM, then SIGKILL after a short grace); log files and their tails.

use std::io::{self, SeekFrom};
use std::path::Path;
use std::process::{ExitStatus, Stdio};
use std::sync::Arc;
use std::time::Duration;

use nix::sys::signal::{killpg, Signal};
use nix::unistd::Pid;
use tokio::io::{AsyncReadExt, AsyncSeekExt, AsyncWriteExt};
use tokio::process::{Child, Command};
use tokio::sync::{watch, Mutex};
use tokio::time::Instant;

/// Time between SIGTERM and SIGKILL when a task is stopped.
pub(crate) const KILL_GRACE: Duration = Duration::from_secs(5);

/// Why a running task is being stopped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum StopCause {
    /// The task's own `timeout_secs` ran out.
    Timeout,
    /// The worker's `--wall-time` (plus drain grace) ran out: recorded like a timeout.
    WallTime,
    /// The lease is gone: the result must not be written.
    LeaseLost,
    /// Drain or spot interruption: the task goes back to pending.
    HandBack,
}

/// How a process ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Exit {
    Code(i32),
    Signal(i32),
}

impl Exit {
    fn from_status(status: ExitStatus) -> Exit {
        use std::os::unix::process::ExitStatusExt;
        match (status.code(), status.signal()) {
            (Some(c), _) => Exit::Code(c),
            (None, Some(s)) => Exit::Signal(s),
            // Neither is possible for a waited-for child on Unix; report something sane.
            (None, None) => Exit::Code(-1),
        }
    }

    pub(crate) fn code(self) -> Option<i32> {
        match self {
            Exit::Code(c) => Some(c),
            Exit::Signal(_) => None,
        }
    }
}

/// What a command is run with.
#[derive(Debug, Clone)]
pub(crate) struct ShellCommand<'a> {
    pub script: &'a str,
    pub args: &'a [String],
    pub env: &'a [(String, String)],
}

impl ShellCommand<'_> {
    fn command(&self) -> Command {
        let mut cmd = Command::new("/bin/sh");
        cmd.arg("-c").arg(self.script).arg("sh").args(self.args);
        cmd.envs(self.env.iter().map(|(k, v)| (k.as_str(), v.as_str())));
        cmd.stdin(Stdio::null());
        // A new process group whose id is the shell's pid: killpg reaches every descendant
        // that did not move itself to another group.
        cmd.process_group(0);
        cmd
    }
}

/// A spawned process group.
#[derive(Debug)]
pub(crate) struct Group {
    child: Child,
    pgid: Pid,
    reaped: bool,
}

impl Group {
    /// Spawns `cmd` with its output going to `stdout`/`stderr`.
    pub(crate) fn spawn(cmd: &ShellCommand<'_>, stdout: Stdio, stderr: Stdio) -> io::Result<Group> {
        let mut command = cmd.command();
        command.stdout(stdout).stderr(stderr);
        let child = command.spawn()?;
        let pid = child
            .id()
            .ok_or_else(|| io::Error::other("spawned process has no pid"))?;
        Ok(Group {
            child,
            pgid: Pid::from_raw(pid as i32),
            reaped: false,
        })
    }

    pub(crate) fn child_mut(&mut self) -> &mut Child {
        &mut self.child
    }

    fn signal(&self, sig: Signal) {
        // ESRCH (nothing left in the group) is the normal case after the leader is gone.
        let _ = killpg(self.pgid, sig);
    }

    /// Waits for the process to exit, or stops it when `deadline` passes (cause
    /// [`StopCause::Timeout`]) or a cause is published on `stop`. Whatever happens, no member
    /// of the group is left running afterwards.
    pub(crate) async fn wait_or_stop(
        &mut self,
        deadline: Option<Instant>,
        stop: &mut watch::Receiver<Option<StopCause>>,
    ) -> (Exit, Option<StopCause>) {
        let already = *stop.borrow_and_update();
        let cause = if let Some(cause) = already {
            Some(cause)
        } else {
            let timeout = async {
                match deadline {
                    Some(d) => tokio::time::sleep_until(d).await,
                    None => std::future::pending().await,
                }
            };
            let stopped = async {
                loop {
                    if stop.changed().await.is_err() {
                        // Nobody can ask any more: wait for the process alone.
                        std::future::pending::<()>().await;
                    }
                    if let Some(cause) = *stop.borrow_and_update() {
                        return cause;
                    }
                }
            };
            // Biased: a process that has exited reports its own exit, even when a stop request
            // is ready in the same poll.
            tokio::select! {
                biased;
                status = self.child.wait() => {
                    self.reaped = true;
                    // Leftover members (background jobs) of a finished task are not kept.
                    self.signal(Signal::SIGKILL);
                    return (status.map(Exit::from_status).unwrap_or(Exit::Code(-1)), None);
                }
                _ = timeout => Some(StopCause::Timeout),
                cause = stopped => Some(cause),
            }
        };
        // A process that has already exited (e.g. while the worker was paused; the reactor
        // may not have noticed yet) reports its own exit: it finished before it was stopped.
        if let Ok(Some(status)) = self.child.try_wait() {
            self.reaped = true;
            self.signal(Signal::SIGKILL);
            return (Exit::from_status(status), None);
        }
        let exit = self.terminate().await;
        (exit, cause)
    }

    /// SIGTERM to the group, SIGKILL after [`KILL_GRACE`], then reaps the leader.
    pub(crate) async fn terminate(&mut self) -> Exit {
        self.signal(Signal::SIGTERM);
        // A stopped process does not act on SIGTERM until it is continued.
        self.signal(Signal::SIGCONT);
        let status = match tokio::time::timeout(KILL_GRACE, self.child.wait()).await {
            Ok(status) => status,
            Err(_) => {
                self.signal(Signal::SIGKILL);
                self.child.wait().await
            }
        };
        self.reaped = true;
        self.signal(Signal::SIGKILL);
        status.map(Exit::from_status).unwrap_or(Exit::Signal(9))
    }
}

impl Drop for Group {
    fn drop(&mut self) {
        if !self.reaped {
            // Dropped mid-run (panic, cancelled future): never leave the tree behind. Tokio
            // reaps the dropped child in the background.
            self.signal(Signal::SIGKILL);
        }
    }
}

/// Opens (appending) a task's log file and returns it with its current length, the offset
/// where this attempt's output starts.
pub(crate) fn open_log(path: &Path) -> io::Result<(std::fs::File, u64)> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    let file = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)?;
    let start = file.metadata()?.len();
    Ok((file, start))
}

/// The last `max` bytes written to `path` after offset `start`, as UTF-8 (invalid sequences
/// replaced, a character cut at the front dropped). Reads only the tail, never the whole file.
pub(crate) async fn read_tail(path: &Path, start: u64, max: usize) -> io::Result<String> {
    let mut file = tokio::fs::File::open(path).await?;
    let len = file.metadata().await?.len();
    let from = len.saturating_sub(max as u64).max(start);
    if from >= len {
        return Ok(String::new());
    }
    file.seek(SeekFrom::Start(from)).await?;
    let mut buf = Vec::with_capacity((len - from) as usize);
    file.take(len - from).read_to_end(&mut buf).await?;
    // Skip UTF-8 continuation bytes of a character cut by the window.
    let skip = buf
        .iter()
        .take(3)
        .take_while(|b| (**b & 0b1100_0000) == 0b1000_0000)
        .count();
    let text = String::from_utf8_lossy(&buf[skip..]);
    Ok(crate::model::tail_utf8(&text, max))
}

/// A log file shared by concurrently running sub-commands; writes are whole chunks.
pub(crate) type SharedLog = Arc<Mutex<tokio::fs::File>>;

/// Copies `reader` into `log`, starting every line with `prefix`. Reads in bounded chunks, so
/// a line without newline never grows memory.
pub(crate) async fn pump_prefixed<R>(mut reader: R, prefix: String, log: SharedLog)
where
    R: tokio::io::AsyncRead + Unpin,
{
    let mut buf = vec![0u8; 8192];
    let mut at_line_start = true;
    let mut out = Vec::with_capacity(buf.len() + 64);
    loop {
        let n = match reader.read(&mut buf).await {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        out.clear();
        for line in buf[..n].split_inclusive(|b| *b == b'\n') {
            if at_line_start {
                out.extend_from_slice(prefix.as_bytes());
            }
            out.extend_from_slice(line);
            at_line_start = line.ends_with(b"\n");
        }
        let mut f = log.lock().await;
        if f.write_all(&out).await.is_err() {
            break;
        }
    }
    if !at_line_start {
        let mut f = log.lock().await;
        let _ = f.write_all(b"\n").await;
    }
}

/// Writes one line to a shared log.
pub(crate) async fn log_line(log: &SharedLog, line: &str) {
    let mut f = log.lock().await;
    let _ = f.write_all(line.as_bytes()).await;
    let _ = f.write_all(b"\n").await;
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sh(script: &str) -> ShellCommand<'_> {
        ShellCommand {
            script,
            args: &[],
            env: &[],
        }
    }

    #[tokio::test]
    async fn exit_codes_and_signals() {
        let (_tx, mut rx) = watch::channel(None);
        let mut g = Group::spawn(&sh("exit 3"), Stdio::null(), Stdio::null()).unwrap();
        assert_eq!(g.wait_or_stop(None, &mut rx).await, (Exit::Code(3), None));
        let mut g = Group::spawn(&sh("kill -9 $$"), Stdio::null(), Stdio::null()).unwrap();
        assert_eq!(g.wait_or_stop(None, &mut rx).await, (Exit::Signal(9), None));
    }

    #[tokio::test]
    async fn timeout_kills_the_whole_group() {
        let dir = tempfile::tempdir().unwrap();
        let pidfile = dir.path().join("pid");
        let script = format!("sleep 30 & echo $! > {}; wait", pidfile.display());
        let (_tx, mut rx) = watch::channel(None);
        let mut g = Group::spawn(&sh(&script), Stdio::null(), Stdio::null()).unwrap();
        let deadline = Instant::now() + Duration::from_millis(300);
        let (exit, cause) = g.wait_or_stop(Some(deadline), &mut rx).await;
        assert_eq!(cause, Some(StopCause::Timeout));
        assert_eq!(exit, Exit::Signal(15));
        let pid: i32 = std::fs::read_to_string(&pidfile)
            .unwrap()
            .trim()
            .parse()
            .unwrap();
        // The background sleep was in the group: it is gone (or a zombie about to be reaped
        // by init). The signal was sent with the group's; on a loaded machine the process may
        // take a moment to act on it, so wait for it (bounded) instead of looking once.
        let alive = || {
            nix::sys::signal::kill(Pid::from_raw(pid), None).is_ok()
                && !std::fs::read_to_string(format!("/proc/{pid}/stat"))
                    .map(|s| s.contains(") Z"))
                    .unwrap_or(true)
        };
        let deadline = Instant::now() + Duration::from_secs(5);
        while alive() && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        assert!(
            !alive(),
            "background process {pid} survived its group's SIGTERM for 5 s"
        );
    }

    #[tokio::test]
    async fn stop_request_escalates_to_sigkill() {
        let (tx, mut rx) = watch::channel(None);
        let mut g = Group::spawn(
            &sh("trap '' TERM; while :; do sleep 0.05; done"),
            Stdio::null(),
            Stdio::null(),
        )
        .unwrap();
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(100)).await;
            tx.send(Some(StopCause::HandBack)).unwrap();
            tokio::time::sleep(Duration::from_secs(60)).await;
        });
        let t = std::time::Instant::now();
        let (exit, cause) = g.wait_or_stop(None, &mut rx).await;
        assert_eq!(cause, Some(StopCause::HandBack));
        assert_eq!(exit, Exit::Signal(9));
        assert!(t.elapsed() >= KILL_GRACE);
    }

    #[tokio::test]
    async fn tail_is_bounded_and_utf8() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("x.log");
        std::fs::write(&path, "old output\n").unwrap();
        let (_f, start) = open_log(&path).unwrap();
        assert_eq!(start, 11);
        assert_eq!(read_tail(&path, start, 100).await.unwrap(), "");
        let mut body = String::from("old output\n");
        body.push_str(&"é".repeat(3000));
        std::fs::write(&path, &body).unwrap();
        let tail = read_tail(&path, start, 4096).await.unwrap();
        assert!(tail.len() <= 4096 && tail.len() >= 4094, "{}", tail.len());
        assert!(tail.chars().all(|c| c == 'é'));
    }
}
