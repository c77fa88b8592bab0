//! The binary behaves like a Unix tool: a closed pipe ends a command quietly, no colour codes
//! go to a pipe (or anywhere with `NO_COLOR`), and a worker off EC2 says so in one short debug
//! line instead of an SDK error dump.

use std::os::fd::OwnedFd;
use std::path::Path;
use std::process::{Command, Output, Stdio};

fn anamo(dir: &Path) -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_anamo"));
    c.current_dir(dir)
        .env_remove("RUST_LOG")
        .env_remove("NO_COLOR")
        .env("ANAMO_STORE", "sqlite://tasks.db");
    c
}

fn ok(what: &str, out: &Output) -> String {
    assert!(
        out.status.success(),
        "{what} failed: {}\n{}",
        String::from_utf8_lossy(&out.stderr),
        String::from_utf8_lossy(&out.stdout)
    );
    String::from_utf8_lossy(&out.stdout).to_string()
}

/// A store with `n` pending tasks of step `align`.
fn store_with_tasks(dir: &Path, n: usize) {
    ok(
        "table create",
        &anamo(dir).args(["table", "create"]).output().unwrap(),
    );
    let tasks: String = (0..n)
        .map(|i| format!("S{i:04}\talign\techo {i}\n"))
        .collect();
    std::fs::write(dir.join("tasks.tsv"), tasks).unwrap();
    ok(
        "task import",
        &anamo(dir)
            .args(["task", "import", "tasks.tsv"])
            .output()
            .unwrap(),
    );
}

/// The write end of a pipe whose read end is already closed, as after `| head` has exited.
fn closed_pipe() -> OwnedFd {
    let (read, write) = nix::unistd::pipe().expect("pipe");
    drop(read);
    write
}

#[test]
fn a_closed_pipe_ends_every_printing_command_quietly() {
    let dir = tempfile::tempdir().unwrap();
    store_with_tasks(dir.path(), 300);
    let examples = concat!(env!("CARGO_MANIFEST_DIR"), "/examples/manifests");
    let commands: [&[&str]; 12] = [
        &["--help"],
        &["manifest", "validate", examples],
        &["plan", "--manifests", examples],
        &["status"],
        &["status", "--json"],
        &["task", "list"],
        &["task", "list", "--json"],
        &["task", "list", "--ids"],
        &["task", "show", "--step", "align", "--id", "S0001"],
        &["manifest", "schema"],
        &["completions", "bash"],
        &["table", "create"],
    ];
    for args in commands {
        let out = anamo(dir.path())
            .args(args)
            .stdout(Stdio::from(closed_pipe()))
            .stderr(Stdio::piped())
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(
            stderr.is_empty(),
            "`anamo {}` on a closed pipe said: {stderr}",
            args.join(" ")
        );
        assert_eq!(
            out.status.code(),
            Some(0),
            "`anamo {}` on a closed pipe: {:?}",
            args.join(" "),
            out.status
        );
    }
}

#[test]
fn a_real_pipe_into_head_gets_its_lines_and_no_complaint() {
    let dir = tempfile::tempdir().unwrap();
    store_with_tasks(dir.path(), 3000);
    let out = Command::new("sh")
        .arg("-c")
        .arg(format!(
            "'{}' task list | head -n 3",
            env!("CARGO_BIN_EXE_anamo")
        ))
        .current_dir(dir.path())
        .env("ANAMO_STORE", "sqlite://tasks.db")
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(stdout.lines().count(), 3, "{stdout}");
    assert!(stdout.starts_with("STEP"), "{stdout}");
    assert!(stderr.is_empty(), "{stderr}");
}

/// A worker that gives up at once on a store with no tasks, with metadata at `imds`.
fn idle_worker(dir: &Path, imds: &str, verbose: bool) -> Command {
    let mut c = anamo(dir);
    if verbose {
        c.arg("-v");
    }
    c.args([
        "worker",
        "--step",
        "align",
        "--idle-exit",
        "100ms",
        "--poll-interval",
        "50ms",
        "--spot-poll",
        "0s",
        "--log-dir",
        "logs",
        "--imds-endpoint",
        imds,
    ]);
    c
}

/// An address nothing listens on: what the metadata endpoint is off EC2.
fn closed_endpoint() -> String {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    drop(listener);
    format!("http://127.0.0.1:{port}")
}

#[test]
fn off_ec2_the_worker_says_so_in_one_short_debug_line() {
    let dir = tempfile::tempdir().unwrap();
    store_with_tasks(dir.path(), 0);
    let imds = closed_endpoint();

    let out = idle_worker(dir.path(), &imds, false).output().unwrap();
    ok("worker", &out);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        !stderr.to_lowercase().contains("metadata"),
        "nothing about metadata at the default level:\n{stderr}"
    );

    let out = idle_worker(dir.path(), &imds, true).output().unwrap();
    ok("worker -v", &out);
    let stderr = String::from_utf8_lossy(&out.stderr);
    let lines: Vec<&str> = stderr
        .lines()
        .filter(|l| l.to_lowercase().contains("metadata"))
        .collect();
    assert_eq!(lines.len(), 1, "one line about metadata:\n{stderr}");
    assert!(
        lines[0].contains("DEBUG") && lines[0].contains("not on EC2: no instance metadata"),
        "{}",
        lines[0]
    );
    assert!(lines[0].len() < 200, "a short line: {}", lines[0]);
}

fn has_escape(bytes: &[u8]) -> bool {
    bytes.contains(&0x1b)
}

#[test]
fn no_colour_codes_in_a_pipe() {
    let dir = tempfile::tempdir().unwrap();
    store_with_tasks(dir.path(), 0);
    let out = idle_worker(dir.path(), "off", true).output().unwrap();
    ok("worker -v", &out);
    assert!(String::from_utf8_lossy(&out.stderr).contains("INFO"));
    assert!(
        !has_escape(&out.stderr),
        "colour codes in a pipe: {:?}",
        String::from_utf8_lossy(&out.stderr)
    );
    // clap's own errors too.
    let out = anamo(dir.path()).args(["task", "nope"]).output().unwrap();
    assert!(!out.status.success());
    assert!(!has_escape(&out.stderr), "{:?}", out.stderr);
}

/// Runs `anamo ARGS` on a pseudo-terminal (through `script`) and returns what it showed.
fn on_a_terminal(dir: &Path, args: &str, no_color: bool) -> Vec<u8> {
    let mut c = Command::new("script");
    c.args(["-q", "-e", "-c"])
        .arg(format!("'{}' {args}", env!("CARGO_BIN_EXE_anamo")))
        .arg("/dev/null")
        .current_dir(dir)
        .env("ANAMO_STORE", "sqlite://tasks.db")
        .env_remove("RUST_LOG")
        .env_remove("NO_COLOR");
    if no_color {
        c.env("NO_COLOR", "1");
    }
    let out = c
        .output()
        .expect("`script` (util-linux) runs a command on a terminal");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    out.stdout
}

#[test]
fn colours_on_a_terminal_unless_no_color_is_set() {
    let dir = tempfile::tempdir().unwrap();
    store_with_tasks(dir.path(), 0);
    let args = "-v worker --step align --idle-exit 100ms --poll-interval 50ms --spot-poll 0s \
                --log-dir logs --imds-endpoint off";
    let coloured = on_a_terminal(dir.path(), args, false);
    assert!(
        String::from_utf8_lossy(&coloured).contains("INFO"),
        "{}",
        String::from_utf8_lossy(&coloured)
    );
    assert!(has_escape(&coloured), "a terminal gets colours");
    let plain = on_a_terminal(dir.path(), args, true);
    assert!(String::from_utf8_lossy(&plain).contains("INFO"));
    assert!(
        !has_escape(&plain),
        "NO_COLOR: {:?}",
        String::from_utf8_lossy(&plain)
    );
}
