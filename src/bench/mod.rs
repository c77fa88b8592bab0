//! `anamo bench`: figures measured in one run, each next to the limit or reference it is
//! compared with, so a result reads as a ratio rather than an absolute number.
//!
//! * **dispatch**: W in-process workers × S slots run trivial tasks (`true`) on SQLite and on
//!   DynamoDB Local ([`crate::worker::bench_dispatch`]), each worker on a DynamoDB store of
//!   its own as in a process of its own (what a store keeps between requests is not pooled;
//!   before 2026-12-04 the workers shared one); beside it, DynamoDB Local's raw
//!   conditional `UpdateItem` rate at the same concurrency from a bare SDK loop (the goal's
//!   reference), and the rate of the task table's own conditional write (lease renewals of
//!   claimed tasks: a task item with an index entry, as claims and completions write).
//! * **claims**: N concurrent claim + complete loops on each store, no processes.
//! * **embedded**: `anamo up` on trivial tasks (this binary, a temporary directory, one
//!   local fleet) against `xargs -P <slots> -n1 sh -c true` on the same list.
//! * **reconcile**: one controller pass over many pending tasks in many steps on DynamoDB
//!   Local, with fleets whose provider has no instances, in a child process so that its peak
//!   RSS is the controller's own; and the planner alone on the same input.
//! * **latency**: backlog appears → launch action (relative to the controller interval);
//!   worker killed → task requeued (relative to the lease TTL).
//!
//! Nothing here asserts on time: tests never depend on a machine's speed.

mod dispatch;
mod embedded;
mod latency;
mod planner_time;
mod reconcile;

use std::path::PathBuf;
use std::time::Duration;

use serde::Serialize;

pub use reconcile::{reconcile_child, ReconcileChild};

/// What to measure and how big.
#[derive(Debug, Clone)]
pub struct BenchConfig {
    /// DynamoDB Local endpoint; without it the DynamoDB rows are skipped.
    pub dynamodb_endpoint: Option<String>,
    pub parts: Vec<Part>,
    /// Dispatch: workers × slots, tasks, their command and lease TTL.
    pub dispatch: crate::worker::DispatchLoad,
    /// Seconds of the raw `UpdateItem` loop.
    pub raw_secs: f64,
    /// Claims: concurrent claimers and tasks.
    pub claimers: usize,
    pub claim_tasks: u64,
    /// Embedded: tasks and slots of the one local worker.
    pub up_tasks: u64,
    pub up_slots: u32,
    /// Reconcile: pending tasks over steps (one fleet per step).
    pub tasks: u64,
    pub steps: u32,
    /// Latency: trials, controller interval, lease TTL.
    pub trials: u32,
    pub interval: Duration,
    pub lease_ttl: Duration,
    /// This binary (for `anamo up`, workers and the reconcile child).
    pub exe: PathBuf,
}

/// The parts of a run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum Part {
    Dispatch,
    Claims,
    Embedded,
    Reconcile,
    Latency,
}

impl Part {
    pub const ALL: [Part; 5] = [
        Part::Dispatch,
        Part::Claims,
        Part::Embedded,
        Part::Reconcile,
        Part::Latency,
    ];
}

/// The machine a run was made on.
#[derive(Debug, Clone, Serialize)]
pub struct Machine {
    pub nproc: usize,
    pub memory: String,
    pub cpu: String,
}

impl Machine {
    pub fn detect() -> Machine {
        let read = |p: &str| std::fs::read_to_string(p).unwrap_or_default();
        let field = |text: &str, key: &str| {
            text.lines()
                .find(|l| l.starts_with(key))
                .and_then(|l| l.split_once(':'))
                .map(|(_, v)| v.trim().to_string())
                .unwrap_or_else(|| "unknown".into())
        };
        let mem_kb: f64 = field(&read("/proc/meminfo"), "MemTotal")
            .trim_end_matches("kB")
            .trim()
            .parse()
            .unwrap_or(0.0);
        Machine {
            nproc: std::thread::available_parallelism().map_or(1, |n| n.get()),
            memory: format!("{:.1} GiB", mem_kb / 1024.0 / 1024.0),
            cpu: field(&read("/proc/cpuinfo"), "model name"),
        }
    }
}

/// One line of the result table.
#[derive(Debug, Clone, Serialize)]
pub struct Row {
    pub name: String,
    /// The measured figure, with its unit.
    pub figure: String,
    /// What it is compared with, if anything.
    pub reference: String,
    /// figure ÷ reference, in the sense of the goal.
    pub ratio: Option<f64>,
    pub goal: String,
    /// Whether the goal is met (`None`: no goal, or not measured).
    pub met: Option<bool>,
    pub note: String,
}

impl Row {
    fn new(name: impl Into<String>, figure: impl Into<String>) -> Row {
        Row {
            name: name.into(),
            figure: figure.into(),
            reference: String::new(),
            ratio: None,
            goal: String::new(),
            met: None,
            note: String::new(),
        }
    }

    fn skipped(name: impl Into<String>, why: impl Into<String>) -> Row {
        let mut r = Row::new(name, "skipped");
        r.note = why.into();
        r
    }

    fn reference(mut self, r: impl Into<String>) -> Row {
        self.reference = r.into();
        self
    }

    fn ratio(mut self, ratio: f64) -> Row {
        self.ratio = Some(ratio);
        self
    }

    fn goal(mut self, goal: impl Into<String>, met: bool) -> Row {
        self.goal = goal.into();
        self.met = Some(met);
        self
    }

    fn note(mut self, note: impl Into<String>) -> Row {
        self.note = note.into();
        self
    }
}

/// Everything a run measured.
#[derive(Debug, Clone, Serialize)]
pub struct BenchRun {
    pub machine: Machine,
    pub rows: Vec<Row>,
    /// Structured results of each part, for `--json`.
    pub details: serde_json::Map<String, serde_json::Value>,
}

/// Runs the configured parts, one after the other, printing progress to stderr.
pub async fn run(cfg: &BenchConfig) -> anyhow::Result<BenchRun> {
    let mut run = BenchRun {
        machine: Machine::detect(),
        rows: Vec::new(),
        details: serde_json::Map::new(),
    };
    for part in &cfg.parts {
        eprintln!("bench: {part:?} ...");
        let started = std::time::Instant::now();
        let (rows, details) = match part {
            Part::Dispatch => dispatch::dispatch(cfg).await?,
            Part::Claims => dispatch::claims(cfg).await?,
            Part::Embedded => embedded::run(cfg).await?,
            Part::Reconcile => reconcile::run(cfg).await?,
            Part::Latency => latency::run(cfg).await?,
        };
        eprintln!(
            "bench: {part:?} done in {:.1}s",
            started.elapsed().as_secs_f64()
        );
        run.rows.extend(rows);
        let key = serde_json::to_value(part)?
            .as_str()
            .unwrap_or("part")
            .to_string();
        run.details.insert(key, details);
    }
    Ok(run)
}

pub(crate) use crate::aws_client::local_dynamo_client as dynamo_client;

/// A fresh table name.
pub(crate) fn unique(prefix: &str) -> String {
    format!(
        "{prefix}-{}",
        &uuid::Uuid::new_v4().simple().to_string()[..12]
    )
}

/// Peak resident set size of this process (VmHWM), in bytes.
pub fn peak_rss_bytes() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kb: u64 = line
        .trim_start_matches("VmHWM:")
        .trim()
        .trim_end_matches("kB")
        .trim()
        .parse()
        .ok()?;
    Some(kb * 1024)
}

/// `bytes` in megabytes (10^6 bytes, as the goals and `ps`'s SI units count them),
/// with the mebibytes (2^20, as `/proc` and `top` count) beside: "38.3 MiB (40.2 MB)".
pub(crate) fn mb(bytes: u64) -> String {
    format!(
        "{:.1} MiB ({:.1} MB)",
        bytes as f64 / 1024.0 / 1024.0,
        bytes as f64 / 1e6
    )
}

/// The memory goal of issue 20: at most 40 MB, read as 40,000,000 bytes (the stricter reading;
/// 40 MiB would allow 41,943,040).
pub(crate) const RSS_GOAL_BYTES: u64 = 40_000_000;

#[cfg(test)]
mod tests {
    use super::*;

    /// The in-process parts run end to end on SQLite at toy sizes (no timing is asserted).
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn in_process_parts_run_on_sqlite() {
        let cfg = BenchConfig {
            dynamodb_endpoint: None,
            parts: vec![Part::Dispatch, Part::Claims, Part::Reconcile],
            dispatch: crate::worker::DispatchLoad::trivial(2, 2, 20),
            raw_secs: 0.1,
            claimers: 4,
            claim_tasks: 40,
            up_tasks: 0,
            up_slots: 1,
            tasks: 100,
            steps: 2,
            trials: 1,
            interval: Duration::from_secs(1),
            lease_ttl: Duration::from_secs(3),
            exe: PathBuf::from("anamo"),
        };
        let run = run(&cfg).await.unwrap();
        let names: Vec<&str> = run.rows.iter().map(|r| r.name.as_str()).collect();
        assert!(
            names
                .iter()
                .any(|n| n.starts_with("dispatch `true`, SQLite")),
            "{names:?}"
        );
        assert!(
            names
                .iter()
                .any(|n| n.starts_with("claim+complete, SQLite")),
            "{names:?}"
        );
        assert!(
            names.iter().any(|n| n.starts_with("planner alone")),
            "{names:?}"
        );
        // DynamoDB rows say why they were skipped.
        let skipped: Vec<&Row> = run.rows.iter().filter(|r| r.figure == "skipped").collect();
        assert_eq!(skipped.len(), 3, "{skipped:?}");
        assert!(skipped.iter().all(|r| r.note.contains("DynamoDB endpoint")));
        assert_eq!(run.details["claims"]["sqlite"]["tasks"], 40);
    }

    /// The takeover figure: the follower leads only once the crashed leader's lease ran out.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_follower_takes_over_once_the_leaders_lease_ran_out() {
        let cfg = BenchConfig {
            dynamodb_endpoint: None,
            parts: vec![Part::Latency],
            dispatch: crate::worker::DispatchLoad::trivial(1, 1, 0),
            raw_secs: 0.0,
            claimers: 1,
            claim_tasks: 0,
            up_tasks: 0,
            up_slots: 1,
            tasks: 0,
            steps: 1,
            trials: 1,
            interval: Duration::from_millis(200),
            lease_ttl: Duration::from_secs(1),
            exe: PathBuf::from("anamo"),
        };
        let took = latency::leader_takeover(&cfg).await.unwrap();
        assert!(
            took >= 1.0,
            "took over after {took} s, before the 1 s lease ran out"
        );
    }

    #[test]
    fn machine_and_rss_are_read_from_proc() {
        let m = Machine::detect();
        assert!(m.nproc >= 1);
        assert!(peak_rss_bytes().unwrap_or(0) > 0);
    }
}
