//! The README's commands work as written, so the README cannot rot:
//!
//! * "The two commands": the first runs (with the built binary in place of `cargo run --`) in
//!   a directory holding `examples/`, and finishes every task; it shows the build (no
//!   `--quiet`), and the text says how long the first build takes. The second is exactly what
//!   `.ci/run` runs.
//! * The walkthrough's SQLite-safe blocks run in order through `sh`, with `anamo` being the
//!   built binary: 1 (table, import of the example's tasks, dependents first) on
//!   `sqlite://tasks.db` — the alternative its comment names — then 3 (`anamo plan`, and
//!   `anamo controller` run as a service over the example's local fleets until every task
//!   succeeded), 4 (`anamo worker`'s flags only), 5 (progress commands).
//! * Every flag and subcommand of the "Configuration reference" table exists.

mod common;

use std::path::Path;
use std::process::{Command, Output};

use common::cli::{repo, stdout_ok as assert_ok};

fn readme() -> String {
    std::fs::read_to_string(repo().join("README.md")).unwrap()
}

/// The text of the section whose heading line is `heading`, up to the next heading of the
/// same or a higher level.
fn section(text: &str, heading: &str) -> String {
    let level = heading.chars().take_while(|c| *c == '#').count();
    let mut lines = text.lines().skip_while(|l| l.trim_end() != heading);
    assert!(lines.next().is_some(), "README has no section `{heading}`");
    lines
        .take_while(|l| {
            let h = l.chars().take_while(|c| *c == '#').count();
            !(h > 0 && h <= level && l.chars().nth(h) == Some(' '))
        })
        .collect::<Vec<_>>()
        .join("\n")
}

/// The ```` ```lang ```` code blocks of `text`.
fn code_blocks(text: &str, lang: &str) -> Vec<String> {
    let mut blocks = Vec::new();
    let mut cur: Option<Vec<&str>> = None;
    for line in text.lines() {
        match &mut cur {
            None if line.trim_start() == format!("```{lang}") => cur = Some(Vec::new()),
            None => {}
            Some(_) if line.trim_start() == "```" => blocks.push(cur.take().unwrap().join("\n")),
            Some(b) => b.push(line),
        }
    }
    blocks
}

fn clean_env(cmd: &mut Command) -> &mut Command {
    for (k, _) in std::env::vars_os() {
        if k.to_string_lossy().starts_with("ANAMO_") {
            cmd.env_remove(k);
        }
    }
    cmd.env("RUST_LOG", "warn")
}

/// Runs `script` with `sh` in `dir`, `anamo` being the built binary.
fn sh(dir: &Path, script: &str) -> Output {
    let full = format!("set -eu\nanamo() {{ \"$ANAMO_BIN\" \"$@\"; }}\n{script}\n");
    clean_env(Command::new("sh").arg("-c").arg(&full))
        .current_dir(dir)
        .env("ANAMO_BIN", env!("CARGO_BIN_EXE_anamo"))
        .output()
        .unwrap()
}

fn two_commands() -> (String, String) {
    let blocks = code_blocks(&section(&readme(), "## The two commands"), "sh");
    assert!(blocks.len() >= 2, "expected two sh blocks: {blocks:?}");
    (blocks[0].trim().to_string(), blocks[1].trim().to_string())
}

#[test]
fn the_first_command_runs_the_example_pipeline() {
    let (first, _) = two_commands();
    // A newcomer must see the first build happen (minutes), not a silent terminal.
    let args = first.strip_prefix("cargo run -- ").unwrap_or_else(|| {
        panic!("the first command is no longer `cargo run -- ...` (no --quiet): {first}")
    });
    let intro = section(&readme(), "## The two commands");
    let intro = intro.split_whitespace().collect::<Vec<_>>().join(" ");
    assert!(
        intro.contains("The first run builds anamo") && intro.contains("minutes"),
        "the README must say that the first run builds anamo, and how long that takes"
    );
    assert!(
        !args.contains(['\'', '"', '\\', '$']),
        "plain words expected: {args}"
    );
    let dir = tempfile::tempdir().unwrap();
    std::os::unix::fs::symlink(repo().join("examples"), dir.path().join("examples")).unwrap();
    let out = clean_env(&mut Command::new(env!("CARGO_BIN_EXE_anamo")))
        .args(args.split_whitespace())
        .current_dir(dir.path())
        .output()
        .unwrap();
    let stdout = assert_ok(&first, &out);
    // The summary: one row per step, every task succeeded (24 samples, 4 regions).
    for (step, n) in [
        ("align", "24"),
        ("call", "96"),
        ("joint", "4"),
        ("merge", "1"),
    ] {
        let row: Vec<&str> = stdout
            .lines()
            .find(|l| l.split_whitespace().next() == Some(step))
            .unwrap_or_else(|| panic!("no summary row for {step}:\n{stdout}"))
            .split_whitespace()
            .collect();
        // STEP SUCCEEDED FAILED CANCELLED UNFINISHED TOTAL
        assert_eq!(row[1..], [n, "0", "0", "0", n], "{stdout}");
    }
    assert!(stdout.contains("finished in"), "{stdout}");
    assert!(dir.path().join("anamo.db").exists(), "default store");
    assert!(dir.path().join("anamo-out/summary.txt").exists());
    assert!(dir.path().join("anamo-logs/tasks").is_dir());
}

#[test]
fn the_second_command_is_what_ci_runs() {
    let (_, second) = two_commands();
    let ci = std::fs::read_to_string(repo().join(".ci/run")).unwrap();
    assert!(
        ci.lines().any(|l| l.trim() == second),
        ".ci/run does not run the README's `{second}`:\n{ci}"
    );
}

/// `samples.tsv` for the walkthrough: the example's tasks with their lines reversed, so that
/// dependents (merge, joint, call) come before their upstream tasks.
fn samples_tsv(dir: &Path) -> usize {
    let text = std::fs::read_to_string(repo().join("examples/tasks.tsv")).unwrap();
    let mut tasks: Vec<&str> = text
        .lines()
        .filter(|l| !l.trim().is_empty() && !l.starts_with('#'))
        .collect();
    tasks.reverse();
    std::fs::write(dir.join("samples.tsv"), tasks.join("\n") + "\n").unwrap();
    tasks.len()
}

/// How many tasks the example becomes: its lines, with each `call` line one per region.
fn example_task_count(lines: usize) -> usize {
    let text = std::fs::read_to_string(repo().join("examples/tasks.tsv")).unwrap();
    let calls = text.lines().filter(|l| l.contains("\tcall\t")).count();
    let regions = std::fs::read_to_string(repo().join("examples/regions.txt")).unwrap();
    let regions = regions
        .lines()
        .filter(|l| !l.trim().is_empty() && !l.starts_with('#'))
        .count();
    lines + calls * (regions - 1)
}

/// Every task in the store (`anamo task list --json`).
fn all_tasks(dir: &Path) -> Vec<serde_json::Value> {
    let out = sh(dir, "anamo --store sqlite://tasks.db task list --json");
    serde_json::from_str::<Vec<serde_json::Value>>(&assert_ok("task list", &out)).unwrap()
}

/// The literal `anamo controller ...` line of §3, started as the service it is, run until
/// every one of `total` tasks reached a final state, then stopped with SIGTERM (which stops
/// its local workers too).
fn run_controller_until_done(dir: &Path, line: &str, total: usize) -> Vec<serde_json::Value> {
    let line = line.split('#').next().unwrap().trim();
    let args: Vec<&str> = line.split_whitespace().skip(1).collect();
    let mut controller = clean_env(&mut Command::new(env!("CARGO_BIN_EXE_anamo")))
        .args(&args)
        .env("ANAMO_STORE", "sqlite://tasks.db")
        // Not the default port, which another controller on this machine may hold.
        .env("ANAMO_METRICS_ADDR", "127.0.0.1:0")
        .current_dir(dir)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    // A hang guard, far above the half minute the example takes.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(300);
    let tasks = loop {
        let tasks = all_tasks(dir);
        let finished = tasks
            .iter()
            .filter(|t| {
                ["succeeded", "failed", "cancelled"].contains(&t["state"].as_str().unwrap())
            })
            .count();
        if tasks.len() == total && finished == total {
            break tasks;
        }
        if let Some(status) = controller.try_wait().unwrap() {
            let out = controller.wait_with_output().unwrap();
            panic!(
                "`{line}` exited ({status}):\n{}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        if std::time::Instant::now() > deadline {
            let _ = controller.kill();
            panic!("the walkthrough's pipeline did not finish: {finished} of {total} tasks");
        }
        std::thread::sleep(std::time::Duration::from_millis(500));
    };
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(controller.id() as i32),
        nix::sys::signal::Signal::SIGTERM,
    )
    .unwrap();
    let out = controller.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "`{line}` after SIGTERM: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    tasks
}

/// The walkthrough followed literally on the SQLite store §1 offers: tasks imported first
/// (dependents before their upstream tasks, `call` lines naming only their sample), the
/// manifests checked, the plan shown, then the controller of §3 run as the service it is
/// (the example's fleets are local worker processes) until every task finished: every one
/// succeeded, none failed or was held up for want of its upstream tasks. Then §4's worker
/// flags and §5's progress commands.
#[test]
fn the_walkthrough_runs_on_sqlite() {
    let readme = readme();
    let walk = section(
        &readme,
        "## Walkthrough: from a sample sheet to a fleet on AWS",
    );
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let lines = samples_tsv(d);
    let total = example_task_count(lines);
    std::os::unix::fs::symlink(repo().join("examples"), d.join("examples")).unwrap();
    std::os::unix::fs::symlink(repo().join("examples/manifests"), d.join("manifests")).unwrap();

    // 1. A table and tasks, on the SQLite store the comment offers.
    let s1 = code_blocks(&section(&walk, "### 1. A table and tasks"), "sh").remove(0);
    assert!(s1.contains("# or sqlite://tasks.db"), "{s1}");
    let s1 = s1.replace("dynamodb://genomics-tasks", "sqlite://tasks.db");
    let s2 = section(&walk, "### 2. Manifests");
    assert!(s2.contains("`anamo manifest validate DIR`"), "{s2}");
    let s3 = code_blocks(&section(&walk, "### 3. The controller"), "sh").remove(0);
    let (controller, plan): (Vec<&str>, Vec<&str>) = s3
        .lines()
        .partition(|l| l.trim_start().starts_with("anamo controller"));
    assert_eq!(controller.len(), 1, "{s3}");
    let s4 = code_blocks(&section(&walk, "### 4. Workers"), "sh").remove(0);
    assert!(s4.trim_start().starts_with("anamo worker"), "{s4}");
    let s5 = code_blocks(&section(&walk, "### 5. Progress"), "sh").remove(0);

    let script = format!(
        "{s1}\nanamo manifest validate manifests\n{}\n",
        plan.join("\n")
    );
    let stdout = assert_ok(&script, sh(d, &script));
    assert!(d.join("tasks.db").exists(), "the walkthrough's store");
    assert!(!d.join("anamo.db").exists(), "ANAMO_STORE was not honoured");
    assert!(stdout.contains("table ready: "), "{stdout}");
    assert!(
        stdout.contains(&format!("imported {lines} new task(s)")),
        "import report:\n{stdout}"
    );
    assert!(
        stdout.contains("ok: 4 fleet(s) and a controller"),
        "{stdout}"
    );

    let tasks = run_controller_until_done(d, controller[0], total);
    let not_succeeded: Vec<String> = tasks
        .iter()
        .filter(|t| t["state"] != "succeeded" || t["attempts"] != 1)
        .map(|t| {
            let (step, id, state) = (&t["step"], &t["id"], &t["state"]);
            format!("{step}/{id} {state} after {} attempt(s)", t["attempts"])
        })
        .collect();
    assert!(
        not_succeeded.is_empty(),
        "every task succeeds at its first attempt whatever the order of import and manifests: \
         {not_succeeded:?}"
    );
    let summary = std::fs::read_to_string(d.join("anamo-out/summary.txt")).unwrap();
    assert!(summary.starts_with("regions\t"), "{summary}");

    progress_after_the_run(d, &s4, &s5);
}

/// §4 (the worker's flags) and §5 (progress commands) on the finished pipeline; §5's last
/// command cancels a task that has not finished yet, so here it is refused, saying why.
fn progress_after_the_run(d: &Path, s4: &str, s5: &str) {
    let (s5, cancel) = s5.trim().rsplit_once('\n').unwrap();
    assert!(cancel.starts_with("anamo task cancel"), "{cancel}");
    let script = format!(
        "export ANAMO_STORE=sqlite://tasks.db\n{} --help >/dev/null\n{s5}\n\
         echo '--- json'\nanamo task show --step call --id NA12878/chr20 --json\n",
        s4.trim()
    );
    let stdout = assert_ok(&script, sh(d, &script));
    let json = stdout.split("--- json\n").nth(1).unwrap();
    let task: serde_json::Value = serde_json::from_str(json).unwrap();
    assert_eq!(task["id"], "NA12878/chr20");
    assert_eq!(task["state"], "succeeded");
    assert!(
        stdout.contains("requeued 0 task(s) of step call"),
        "{stdout}"
    );
    let refused = sh(
        d,
        &format!("export ANAMO_STORE=sqlite://tasks.db\n{cancel}"),
    );
    assert!(!refused.status.success(), "{cancel} on a finished task");
    let err = String::from_utf8_lossy(&refused.stderr);
    assert!(err.contains("is succeeded"), "{err}");
}

/// `--json` on every read command, as the walkthrough promises.
#[test]
fn read_commands_take_json() {
    let readme = readme();
    assert!(readme.contains("Every read command takes `--json`."));
    let dir = tempfile::tempdir().unwrap();
    for args in [
        "status --help",
        "task list --help",
        "task show --help",
        "plan --help",
    ] {
        let out = sh(dir.path(), &format!("anamo {args}"));
        let help = assert_ok(args, &out);
        assert!(help.contains("--json"), "anamo {args}:\n{help}");
    }
}

#[test]
fn every_flag_of_the_configuration_table_exists() {
    let readme = readme();
    let conf = section(&readme, "## Configuration reference");
    let dir = tempfile::tempdir().unwrap();
    let mut checked = 0;
    for line in conf.lines().filter(|l| l.starts_with("| `anamo ")) {
        let cells: Vec<&str> = line.split('|').map(str::trim).collect();
        let command = cells[1].trim_matches('`');
        let help = assert_ok(
            command,
            sh(dir.path(), &format!("export COLUMNS=200\n{command} --help")),
        );
        // Backticked items: `--flag ...` are flags, other words subcommands.
        for item in cells[2].split('`').skip(1).step_by(2) {
            let word = item.split_whitespace().next().unwrap();
            let found = if word.starts_with('-') {
                help.contains(&format!("{word} ")) || help.contains(&format!("{word}\n"))
            } else {
                // A subcommand, or a value of an argument.
                let values = help
                    .split("[possible values: ")
                    .skip(1)
                    .flat_map(|v| v[..v.find(']').unwrap_or(v.len())].split(", "));
                help.lines()
                    .any(|l| l.split_whitespace().next() == Some(word))
                    || values.into_iter().any(|v| v == word)
            };
            assert!(
                found,
                "`{command}` has no `{word}` (README: {line}):\n{help}"
            );
            checked += 1;
        }
    }
    assert!(checked > 30, "only {checked} items checked");
    // The global flags named above the table.
    let global = assert_ok("anamo --help", sh(dir.path(), "anamo --help"));
    for flag in ["--store", "--log-format", "-v"] {
        assert!(conf.contains(&format!("`{flag}")), "{flag}");
        assert!(global.contains(flag), "{flag}");
    }
}

/// The JSONL fields the walkthrough lists are exactly those `anamo task import` accepts.
#[test]
fn the_jsonl_fields_listed_are_the_accepted_ones() {
    let readme = readme();
    let text = section(&readme, "### 1. A table and tasks").replace('\n', " ");
    let listed = text
        .split("one task definition per line: ")
        .nth(1)
        .and_then(|t| t.split(", named as in").next())
        .expect("the JSONL sentence");
    let mut listed: Vec<&str> = listed.split('`').skip(1).step_by(2).collect();
    listed.sort_unstable();
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("t.jsonl"), "{\"unknown_field\": 1}\n").unwrap();
    let out = sh(
        dir.path(),
        "anamo --store sqlite://t.db task import t.jsonl",
    );
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    let expected = err
        .split("expected one of ")
        .nth(1)
        .unwrap_or_else(|| panic!("{err}"));
    let expected = &expected[..expected.find(" at line").unwrap_or(expected.len())];
    let mut accepted: Vec<&str> = expected.split('`').skip(1).step_by(2).collect();
    accepted.sort_unstable();
    assert_eq!(
        listed, accepted,
        "README's JSONL fields vs `anamo task import`"
    );
}

/// The README's completion commands install scripts the shells accept.
#[test]
fn shell_completions_install_as_shown() {
    let readme = readme();
    let block = code_blocks(&section(&readme, "## Shell completions"), "sh").remove(0);
    let home = tempfile::tempdir().unwrap();
    let h = home.path();
    for dir in [
        ".local/share/bash-completion/completions",
        ".zfunc",
        ".config/fish/completions",
    ] {
        std::fs::create_dir_all(h.join(dir)).unwrap();
    }
    let out = sh(h, &format!("export HOME={}\n{block}", h.display()));
    assert_ok(&block, &out);
    let bash = h.join(".local/share/bash-completion/completions/anamo");
    let out = Command::new("bash")
        .arg("-c")
        .arg(format!("source '{}' && complete -p anamo", bash.display()))
        .output()
        .unwrap();
    let registered = assert_ok("bash completion", &out);
    assert!(registered.contains("anamo"), "{registered}");
    let zsh = std::fs::read_to_string(h.join(".zfunc/_anamo")).unwrap();
    assert!(zsh.starts_with("#compdef anamo"), "{zsh:.80}");
    let fish = std::fs::read_to_string(h.join(".config/fish/completions/anamo.fish")).unwrap();
    assert!(fish.contains("complete -c anamo"), "{fish:.200}");
    assert!(
        fish.contains("completions"),
        "the completions command completes too"
    );
}

/// "Run a Snakemake workflow on anamo": the example directory and manifests it runs exist,
/// the controller's flags exist, and every `--anamo-*` option it (and the plugin's README)
/// names is a setting of the plugin. The workflow itself runs in tests/snakemake.rs.
#[test]
fn snakemake_section_matches_the_plugin() {
    let readme = readme();
    let text = section(&readme, "## Run a Snakemake workflow on anamo");
    let block = code_blocks(&text, "sh").remove(0);
    let plugin = repo().join("integrations/snakemake");
    let example = plugin.join("example");
    assert!(
        block.contains("cd integrations/snakemake/example"),
        "{block}"
    );
    assert!(example.join("Snakefile").is_file());
    assert!(example.join("manifests/count.yaml").is_file());
    assert!(example.join("manifests/summary.yaml").is_file());
    let out = Command::new(env!("CARGO_BIN_EXE_anamo"))
        .args(["manifest", "validate"])
        .arg(example.join("manifests"))
        .output()
        .unwrap();
    assert_ok("anamo manifest validate (Snakemake example)", &out);
    let settings =
        std::fs::read_to_string(plugin.join("snakemake_executor_plugin_anamo/__init__.py"))
            .unwrap();
    let plugin_readme = std::fs::read_to_string(plugin.join("README.md")).unwrap();
    let mut named = 0;
    for doc in [&text, &plugin_readme] {
        for opt in doc.split(|c: char| !(c.is_ascii_alphanumeric() || c == '-')) {
            if let Some(name) = opt.strip_prefix("--anamo-") {
                let field = format!("    {}: ", name.replace('-', "_"));
                assert!(
                    settings.contains(&field),
                    "`--anamo-{name}` is documented but is no setting of the plugin"
                );
                named += 1;
            }
        }
    }
    assert!(named >= 8, "the READMEs name the plugin's options");
}
