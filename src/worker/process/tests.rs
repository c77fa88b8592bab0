//! Tests of task processes: exit codes and signals, stopping a whole process group, log files
//! and their tails.

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

/// Runs `script` with its output captured into `path`; the tail, once `drain` passed.
async fn captured(script: &str, path: &Path, max: usize, drain: Duration) -> String {
    let (capture, out, err) = OutputCapture::start(path, max).unwrap();
    let (_tx, mut rx) = watch::channel(None);
    let mut g = Group::spawn(&sh(script), out, err).unwrap();
    assert_eq!(g.wait_or_stop(None, &mut rx).await, (Exit::Code(0), None));
    capture.finish(drain).await
}

#[tokio::test]
async fn output_goes_to_a_log_created_with_the_first_byte() {
    let dir = tempfile::tempdir().unwrap();
    let silent = dir.path().join("step").join("silent.1.log");
    let tail = captured("true", &silent, 100, Duration::from_secs(5)).await;
    assert_eq!(tail, "");
    assert!(
        !silent.exists(),
        "a task that prints nothing has no log file"
    );
    assert!(!silent.parent().unwrap().exists());

    let log = dir.path().join("step").join("t.1.log");
    let script = "echo out; echo err >&2; printf '%0100d' 0";
    let tail = captured(script, &log, 50, Duration::from_secs(5)).await;
    assert_eq!(tail, "0".repeat(50), "the last 50 bytes");
    let text = std::fs::read_to_string(&log).unwrap();
    assert_eq!(text, format!("out\nerr\n{}", "0".repeat(100)));

    // Another run of the same attempt appends; its tail is its own output only.
    let tail = captured("echo again", &log, 50, Duration::from_secs(5)).await;
    assert_eq!(tail, "again\n");
    assert!(std::fs::read_to_string(&log).unwrap().ends_with("0again\n"));
}

#[tokio::test]
async fn output_held_by_an_escaped_descendant_does_not_hold_the_result() {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("t.1.log");
    let (escaped, release) = (dir.path().join("escaped"), dir.path().join("release"));
    // `setsid` leaves the process group: the descendant outlives the task and keeps the
    // pipe open. The task ends once the descendant has left (it says so in `escaped`); the
    // descendant writes `late` only when the test creates `release` (or after 60 s).
    let script = format!(
        "setsid sh -c 'touch {e}; i=0; while [ ! -e {r} ] && [ $i -lt 1200 ]; do \
         sleep 0.05; i=$((i+1)); done; echo late' & \
         while [ ! -e {e} ]; do sleep 0.01; done; echo early",
        e = escaped.display(),
        r = release.display()
    );
    // The result does not wait for the descendant, which waits for the test: a wait
    // would hang until this deadline (a hang guard, not a timing).
    let tail = tokio::time::timeout(
        Duration::from_secs(30),
        captured(&script, &log, 100, Duration::from_millis(200)),
    )
    .await
    .expect("the result waited for the escaped descendant's output");
    assert_eq!(tail, "early\n");
    std::fs::write(&release, "").unwrap();
    // What it writes later still goes to the log file.
    let deadline = Instant::now() + Duration::from_secs(30);
    while !std::fs::read_to_string(&log).unwrap().contains("late") {
        assert!(
            Instant::now() < deadline,
            "the late output never reached the log"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(std::fs::read_to_string(&log).unwrap(), "early\nlate\n");
}

#[test]
fn captured_tail_keeps_the_last_bytes() {
    let mut c = Captured::default();
    for chunk in ["abc", "defg", "hi"] {
        c.push(chunk.as_bytes(), 4);
    }
    assert_eq!(tail_text(&c.tail, 4), "fghi");
    c.push(b"0123456789", 4);
    assert_eq!(c.tail, b"6789");
    // A character cut at the front of the window is dropped, not mangled.
    assert_eq!(tail_text("aéb".as_bytes(), 2), "b");
    assert_eq!(tail_text("aéb".as_bytes(), 3), "éb");
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
