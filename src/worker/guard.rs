//! Task processes do not outlive their worker, however it ends (`kill -9` included).
//!
//! Two mechanisms, because neither covers everything alone:
//!
//! * **`PR_SET_PDEATHSIG`**: every task's process group leader (its `/bin/sh`) is spawned with
//!   SIGKILL as its parent-death signal (see `process::Group::spawn`), so the kernel kills it
//!   the moment the worker goes. That reaches the leader only, not what it started.
//! * **The guard**: one small `/bin/sh` process per worker, in a process group of its own (so a
//!   Ctrl-C or a signal to the worker's group does not reach it), reading a pipe whose only
//!   writer is the worker. The worker writes `+ PGID` when it starts a task's process group and
//!   `- PGID` once it has reaped its leader. When the worker is gone the kernel closes the
//!   pipe; the guard reads end-of-file and sends every group still listed SIGTERM (and
//!   SIGCONT), then SIGKILL after the same grace a stopped task gets, and exits. A worker that
//!   ends normally has reaped every group, so its guard just exits.
//!
//! On EC2 a lost worker usually means a lost instance, and its processes are gone with it; the
//! guard matters where the machine stays up (local workers of `anamo up`, a worker killed by
//! hand or by the OOM killer). Either way the task's lease expires and the task is requeued.
//! The pipe's write end is close-on-exec, so no task inherits it and holds it open.

use std::io::Write;
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::Mutex;

use super::process::KILL_GRACE;

/// Reads `+ PGID` / `- PGID` lines until end-of-file, then stops the groups still listed.
/// Only shell built-ins run per line (no process per task); `$1` is the grace in seconds.
const GUARD_SCRIPT: &str = r#"
groups=" "
while read -r op pgid; do
  case "$op" in
    +) groups="$groups$pgid " ;;
    -) case "$groups" in *" $pgid "*) groups="${groups%% $pgid *} ${groups#* $pgid }" ;; esac ;;
  esac
done
set -- "$1" $groups
grace=$1
shift
[ $# -gt 0 ] || exit 0
for g do kill -TERM -"$g" 2>/dev/null; kill -CONT -"$g" 2>/dev/null; done
sleep "$grace"
for g do kill -KILL -"$g" 2>/dev/null; done
exit 0
"#;

struct Guard {
    /// Kept so the guard is never reaped (or killed) while the worker runs.
    _child: Child,
    pipe: ChildStdin,
}

static GUARD: Mutex<Option<Guard>> = Mutex::new(None);

/// Starts this process's guard (once; later calls do nothing).
pub(crate) fn start() -> std::io::Result<()> {
    use std::os::unix::process::CommandExt;
    let mut slot = GUARD.lock().unwrap_or_else(|p| p.into_inner());
    if slot.is_some() {
        return Ok(());
    }
    let mut child = Command::new("/bin/sh")
        .arg("-c")
        .arg(GUARD_SCRIPT)
        .arg("anamo-guard")
        .arg(KILL_GRACE.as_secs().max(1).to_string())
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .process_group(0)
        .spawn()?;
    let pipe = child
        .stdin
        .take()
        .ok_or_else(|| std::io::Error::other("the guard's pipe is missing"))?;
    *slot = Some(Guard {
        _child: child,
        pipe,
    });
    Ok(())
}

/// Makes the process `cmd` spawns get SIGKILL when the worker dies (the parent-death signal
/// survives `exec`), and not start at all when the worker died before that was set. The kernel
/// sends it when the *thread* that forked exits; tasks are spawned from the runtime's threads,
/// which live as long as the worker.
pub(crate) fn die_with_worker(cmd: &mut tokio::process::Command) {
    let worker = nix::unistd::getpid();
    // SAFETY: the closure runs in the forked child before `exec`; it makes three system calls
    // (async-signal-safe) and allocates nothing on success.
    unsafe {
        cmd.pre_exec(move || {
            nix::sys::prctl::set_pdeathsig(nix::sys::signal::Signal::SIGKILL)
                .map_err(std::io::Error::from)?;
            if nix::unistd::getppid() != worker {
                return Err(std::io::Error::from_raw_os_error(nix::libc::ESRCH));
            }
            Ok(())
        });
    }
}

/// Tells the guard about a process group the worker started (no-op without a guard).
pub(crate) fn watch(pgid: i32) {
    send('+', pgid);
}

/// Tells the guard the group's leader was reaped: its id may be reused, so it must not be
/// signalled any more.
pub(crate) fn unwatch(pgid: i32) {
    send('-', pgid);
}

fn send(op: char, pgid: i32) {
    let mut slot = GUARD.lock().unwrap_or_else(|p| p.into_inner());
    let Some(guard) = slot.as_mut() else {
        return;
    };
    // A short line on a pipe: one write, atomic, and it blocks only if the guard stopped
    // reading (then the worker has bigger problems than a late line).
    if let Err(e) = guard.pipe.write_all(format!("{op} {pgid}\n").as_bytes()) {
        tracing::warn!(error = %e, "the process guard is gone: task processes may outlive a killed worker");
        *slot = None;
    }
}
