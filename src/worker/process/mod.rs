//! Task processes: `/bin/sh -c SCRIPT sh ARGS...` in a process group of its own, so the whole
//! tree can be stopped (SIGTERM, then SIGKILL after a short grace); log files and their tails.
//! No group outlives the worker: its leader dies with the worker (`PR_SET_PDEATHSIG`) and the
//! worker's guard stops the rest (see `guard`).
//!
//! A task's output goes through a pipe the worker copies to the log file, keeping the last
//! bytes for the result: the file is created with the first byte, so a task that prints
//! nothing costs no file (creating one is most of what a short task costs besides its fork
//! and exec), and the tail needs no second read of the file.

use std::io::{self, SeekFrom};
use std::path::Path;
use std::path::PathBuf;
use std::process::{ExitStatus, Stdio};
use std::sync::Arc;
use std::time::Duration;

use nix::sys::signal::{killpg, Signal};
use nix::unistd::Pid;
use tokio::io::{AsyncReadExt, AsyncSeekExt, AsyncWriteExt};
use tokio::net::unix::pipe;
use tokio::process::{Child, Command};
use tokio::sync::{watch, Mutex};
use tokio::task::JoinHandle;
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
        super::guard::die_with_worker(&mut cmd);
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
        super::guard::watch(pid as i32);
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
                    // Leftover members (background jobs) of a finished task are not kept.
                    self.signal(Signal::SIGKILL);
                    self.mark_reaped();
                    return (status.map(Exit::from_status).unwrap_or(Exit::Code(-1)), None);
                }
                _ = timeout => Some(StopCause::Timeout),
                cause = stopped => Some(cause),
            }
        };
        // A process that has already exited (e.g. while the worker was paused; the reactor
        // may not have noticed yet) reports its own exit: it finished before it was stopped.
        if let Ok(Some(status)) = self.child.try_wait() {
            self.signal(Signal::SIGKILL);
            self.mark_reaped();
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
        self.signal(Signal::SIGKILL);
        self.mark_reaped();
        status.map(Exit::from_status).unwrap_or(Exit::Signal(9))
    }

    /// The leader is reaped (and the group killed): its id may be reused from now on.
    fn mark_reaped(&mut self) {
        self.reaped = true;
        super::guard::unwatch(self.pgid.as_raw());
    }
}

impl Drop for Group {
    fn drop(&mut self) {
        if !self.reaped {
            // Dropped mid-run (panic, cancelled future): never leave the tree behind. Tokio
            // reaps the dropped child in the background.
            self.signal(Signal::SIGKILL);
            super::guard::unwatch(self.pgid.as_raw());
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
    Ok(tail_text(&buf, max))
}

/// The last `max` bytes of `buf` as UTF-8 (invalid sequences replaced, a character cut at the
/// front dropped).
pub(crate) fn tail_text(buf: &[u8], max: usize) -> String {
    let buf = &buf[buf.len().saturating_sub(max)..];
    // Skip UTF-8 continuation bytes of a character cut by the window.
    let skip = buf
        .iter()
        .take(3)
        .take_while(|b| (**b & 0b1100_0000) == 0b1000_0000)
        .count();
    let text = String::from_utf8_lossy(&buf[skip..]);
    crate::model::tail_utf8(&text, max)
}

/// What the capture of a task's output saw.
#[derive(Debug, Default)]
struct Captured {
    /// The last bytes read (at most twice the tail length).
    tail: Vec<u8>,
    /// Why the log file could not be written, if it could not.
    error: Option<String>,
}

impl Captured {
    fn push(&mut self, data: &[u8], max: usize) {
        if data.len() >= max {
            self.tail.clear();
            self.tail.extend_from_slice(&data[data.len() - max..]);
            return;
        }
        self.tail.extend_from_slice(data);
        if self.tail.len() > 2 * max {
            let cut = self.tail.len() - max;
            self.tail.drain(..cut);
        }
    }
}

/// A task's stdout and stderr: one pipe (both streams interleaved as written, as in a shared
/// file) whose contents a background task appends to the log file, creating the file (and
/// its directory) with the first byte, and whose last bytes it keeps for the result.
#[derive(Debug)]
pub(crate) struct OutputCapture {
    state: Arc<std::sync::Mutex<Captured>>,
    pump: JoinHandle<()>,
    path: PathBuf,
    max: usize,
}

impl OutputCapture {
    /// The capture of output appended to `path`, keeping the last `max` bytes, and the
    /// stdout and stderr to give the process. Output stops being read when every holder of
    /// the write end (the process, its descendants) is gone.
    pub(crate) fn start(path: &Path, max: usize) -> io::Result<(OutputCapture, Stdio, Stdio)> {
        let (tx, rx) = pipe::pipe()?;
        let out = tx.into_blocking_fd()?;
        let err = out.try_clone()?;
        let state = Arc::new(std::sync::Mutex::new(Captured::default()));
        let pump = tokio::spawn(pump_to_log(rx, path.to_path_buf(), max, state.clone()));
        let capture = OutputCapture {
            state,
            pump,
            path: path.to_path_buf(),
            max,
        };
        Ok((capture, Stdio::from(out), Stdio::from(err)))
    }

    /// Waits up to `drain` for the output to end (the process has exited: normally it ends at
    /// once) and returns the tail of what was written. Output still coming after `drain` (a
    /// descendant outside the process group holds the pipe) still goes to the log file.
    pub(crate) async fn finish(mut self, drain: Duration) -> String {
        // Not done in time: the pump is left running (detached), not aborted.
        let _ = tokio::time::timeout(drain, &mut self.pump).await;
        let st = self.state.lock().unwrap_or_else(|p| p.into_inner());
        let mut tail = tail_text(&st.tail, self.max);
        if let Some(e) = &st.error {
            let note = format!("(log {} not written: {e})", self.path.display());
            if !tail.is_empty() && !tail.ends_with('\n') {
                tail.push('\n');
            }
            tail.push_str(&note);
            tail = crate::model::tail_utf8(&tail, self.max);
        }
        tail
    }
}

/// Copies the pipe into the log file (opened with the first byte) and keeps its tail. A log
/// file that cannot be written does not stop the reading: the process must not block on a
/// full pipe, and the tail is still kept.
async fn pump_to_log(
    mut rx: pipe::Receiver,
    path: PathBuf,
    max: usize,
    state: Arc<std::sync::Mutex<Captured>>,
) {
    let mut buf = vec![0u8; 16 * 1024];
    let mut file: Option<tokio::fs::File> = None;
    let mut failed = false;
    let fail = |e: io::Error| {
        tracing::warn!(log = %path.display(), error = %e, "cannot write a task log file");
        state.lock().unwrap_or_else(|p| p.into_inner()).error = Some(e.to_string());
    };
    loop {
        let n = match rx.read(&mut buf).await {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => {
                fail(e);
                break;
            }
        };
        state
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(&buf[..n], max);
        if failed {
            continue;
        }
        if file.is_none() {
            let p = path.clone();
            let opened = tokio::task::spawn_blocking(move || open_log(&p))
                .await
                .unwrap_or_else(|e| Err(io::Error::other(e)));
            match opened {
                Ok((f, _)) => file = Some(tokio::fs::File::from_std(f)),
                Err(e) => {
                    failed = true;
                    fail(e);
                    continue;
                }
            }
        }
        if let Some(f) = file.as_mut() {
            if let Err(e) = f.write_all(&buf[..n]).await {
                failed = true;
                file = None;
                fail(e);
            }
        }
    }
    if let Some(mut f) = file {
        // The file's writes are done in the background: wait for the last one.
        if let Err(e) = f.flush().await {
            fail(e);
        }
    }
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
mod tests;
