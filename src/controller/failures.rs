//! Why tasks failed, at a glance (`anamo status`, the status page, `/api/status`): the newest
//! tasks that failed on their own — sample, step, id, reason, exit code, the last line of
//! their log tail, attempts and a link to their log — bounded to [`FAILED_SHOWN`], with how
//! many more there are and how many failed only because a dependency failed. The shaping is
//! pure ([`failed_tasks`]); [`read_failed`] reads the failed tasks of the steps.
//!
//! Also the tasks that cannot run yet for want of any upstream task ([`starved`]): a gather
//! over a step that has no task waits until its tasks are added, said as a warning.

use serde::{Deserialize, Serialize};

use crate::clock::Millis;
use crate::logs::log_href;
use crate::model::{Task, TaskFilter, TaskState};
use crate::pipeline::{is_dependency_reason, Graph};
use crate::store::{StoreError, TaskStore};
use crate::text::shorten;

/// How many failed tasks are listed (the newest); the rest are counted.
pub const FAILED_SHOWN: usize = 20;
/// The longest log line and reason shown (characters), so the status stays small.
pub const LINE_CHARS: usize = 160;
/// Where the rest of the failed tasks are listed.
pub const MORE_FAILED_HINT: &str = "anamo task list --state failed";

/// The failed tasks of every step, as published.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct FailedTasks {
    /// Failed tasks in all (of every step read).
    pub total: u64,
    /// Of them, failed only because a task they depend on failed (not listed).
    pub dependency_failed: u64,
    /// The newest tasks that failed on their own, newest first, at most [`FAILED_SHOWN`].
    pub newest: Vec<FailedTask>,
}

impl FailedTasks {
    /// Failed on their own but not listed.
    pub fn more(&self) -> u64 {
        (self.total - self.dependency_failed).saturating_sub(self.newest.len() as u64)
    }
}

/// One failed task.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FailedTask {
    /// The sample the task belongs to (`None` for gathers over samples).
    pub sample: Option<String>,
    pub step: String,
    pub id: String,
    /// Why it failed (`exit 3`, `timeout`, `lease expired after 3 attempts`), shortened.
    pub reason: Option<String>,
    pub exit_code: Option<i32>,
    /// The last non-empty line of its last attempt's output, shortened.
    pub log_line: Option<String>,
    pub attempts: u32,
    pub max_attempts: u32,
    pub failed_at: Millis,
    /// The controller's link to the log of its last attempt (`None` when it never ran).
    pub log_href: Option<String>,
}

impl FailedTask {
    /// How `t`, a failed task, is shown.
    pub fn of(graph: &Graph, t: &Task) -> FailedTask {
        let result = t.result.as_ref();
        FailedTask {
            sample: graph.sample_of(t.step(), t.id()).map(str::to_string),
            step: t.step().to_string(),
            id: t.id().to_string(),
            reason: t
                .reason
                .clone()
                .or_else(|| result.and_then(|r| r.error.clone()))
                .map(|r| shorten(&r, LINE_CHARS)),
            exit_code: result.and_then(|r| r.exit_code),
            log_line: result.and_then(|r| last_line(&r.log_tail)),
            attempts: t.attempts,
            max_attempts: t.spec.max_attempts,
            failed_at: t.updated_at,
            log_href: (t.attempts > 0).then(|| log_href(t.step(), t.id(), t.attempts)),
        }
    }
}

/// `kept` and `new` merged: newest first (then by step and id), each task once (its newest
/// failure), at most [`FAILED_SHOWN`].
pub fn newest_first(kept: Vec<FailedTask>, new: Vec<FailedTask>) -> Vec<FailedTask> {
    let mut all: Vec<FailedTask> = new.into_iter().chain(kept).collect();
    all.sort_by(|a, b| (b.failed_at, &a.step, &a.id).cmp(&(a.failed_at, &b.step, &b.id)));
    let mut seen = std::collections::HashSet::new();
    all.retain(|t| seen.insert((t.step.clone(), t.id.clone())));
    all.truncate(FAILED_SHOWN);
    all
}

/// The last non-empty line of `tail`, shortened to [`LINE_CHARS`].
pub fn last_line(tail: &str) -> Option<String> {
    tail.lines()
        .rev()
        .map(str::trim)
        .find(|l| !l.is_empty())
        .map(|l| shorten(l, LINE_CHARS))
}

/// The published view of `failed` tasks (every one in state failed).
pub fn failed_tasks(graph: &Graph, failed: &[Task], shown: usize) -> FailedTasks {
    let dependency = |t: &Task| t.reason.as_deref().is_some_and(is_dependency_reason);
    let mut own: Vec<&Task> = failed.iter().filter(|t| !dependency(t)).collect();
    own.sort_by(|a, b| (b.updated_at, a.step(), a.id()).cmp(&(a.updated_at, b.step(), b.id())));
    let newest = own
        .into_iter()
        .take(shown)
        .map(|t| FailedTask::of(graph, t))
        .collect();
    FailedTasks {
        total: failed.len() as u64,
        dependency_failed: failed.iter().filter(|t| dependency(t)).count() as u64,
        newest,
    }
}

/// Reads the failed tasks of `steps` (one list of each step's failed tasks: on DynamoDB one
/// Query of `S#{step}#failed`, whole items) and keeps the newest [`FAILED_SHOWN`].
pub async fn read_failed(
    store: &dyn TaskStore,
    graph: &Graph,
    steps: &[String],
) -> Result<FailedTasks, StoreError> {
    let mut failed = Vec::new();
    for step in steps {
        let filter = TaskFilter {
            step: Some(step.clone()),
            state: Some(TaskState::Failed),
            ..Default::default()
        };
        failed.extend(store.list(&filter).await?);
    }
    Ok(failed_tasks(graph, &failed, FAILED_SHOWN))
}

/// Waiting tasks of a step that gathers over a step without any task.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StarvedGather {
    pub step: String,
    /// The upstream step, which has no task.
    pub upstream: String,
    /// The step's waiting tasks.
    pub waiting: u64,
}

impl StarvedGather {
    /// The warning shown for it.
    pub fn message(&self) -> String {
        format!(
            "{} task(s) of step `{}` wait for step `{}`, which has no tasks: they run once its \
             tasks are added (`anamo task import`), or cancel them (`anamo task cancel --step {} \
             --state waiting`)",
            self.waiting, self.step, self.upstream, self.step
        )
    }
}

/// The steps with waiting tasks (by `counts`) that gather over a step without tasks (not
/// among `with_tasks`; [`Graph::starved_gathers`]).
pub fn starved(
    graph: &Graph,
    with_tasks: &[String],
    counts: &[&crate::model::StepCounts],
) -> Vec<StarvedGather> {
    graph
        .starved_gathers(with_tasks)
        .into_iter()
        .filter_map(|(step, upstream)| {
            let waiting = counts.iter().find(|c| c.step == step)?.waiting;
            (waiting > 0).then_some(StarvedGather {
                step,
                upstream,
                waiting,
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{TaskResult, TaskSpec};

    fn failed(step: &str, id: &str, at: Millis, reason: &str, tail: &str) -> Task {
        let mut t = Task::new(TaskSpec::new(step, id, "true"), 0);
        t.state = TaskState::Failed;
        t.attempts = 2;
        t.updated_at = at;
        t.reason = Some(reason.to_string());
        t.result = Some(TaskResult {
            exit_code: Some(3),
            log_tail: tail.to_string(),
            ..Default::default()
        });
        t
    }

    #[test]
    fn a_gather_over_a_step_without_tasks_is_starved_until_it_has_some() {
        use crate::model::StepCounts;
        use crate::pipeline::{Edge, StepNode};
        let mut g = Graph::default();
        let mut joint = StepNode::plain();
        joint.key = vec!["region".into()];
        joint.depends_on = vec![Edge::to("call")];
        g.steps.insert("joint".into(), joint);
        let mut call = StepNode::plain();
        call.key = vec!["sample".into(), "region".into()];
        g.steps.insert("call".into(), call);
        let counts = |step: &str, waiting: u64, succeeded: u64| StepCounts {
            step: step.into(),
            waiting,
            succeeded,
            ..Default::default()
        };
        let joint = counts("joint", 4, 0);
        let s = starved(&g, &["joint".into()], &[&joint]);
        assert_eq!(s.len(), 1);
        assert_eq!((s[0].upstream.as_str(), s[0].waiting), ("call", 4));
        assert!(s[0].message().contains("which has no tasks"));
        let both = ["joint".to_string(), "call".to_string()];
        let call = counts("call", 0, 3);
        assert!(
            starved(&g, &both, &[&joint, &call]).is_empty(),
            "call has tasks"
        );
        assert!(
            starved(&g, &both[..1], &[&counts("joint", 0, 4)]).is_empty(),
            "nothing waits"
        );
    }

    #[test]
    fn the_newest_own_failures_are_listed_with_a_link_to_their_log() {
        let g = Graph::default();
        let mut tasks: Vec<Task> = (0..25)
            .map(|i| {
                failed(
                    "call",
                    &format!("S{i}/chr 1"),
                    i,
                    "exit 3",
                    "a\nno space left\n\n",
                )
            })
            .collect();
        tasks.push(failed(
            "joint",
            "chr1",
            100,
            "dependency failed: call/S1/chr1",
            "",
        ));
        let f = failed_tasks(&g, &tasks, 20);
        assert_eq!((f.total, f.dependency_failed, f.newest.len()), (26, 1, 20));
        assert_eq!(f.more(), 5);
        let first = &f.newest[0];
        assert_eq!(first.id, "S24/chr 1", "newest first");
        assert_eq!(first.log_line.as_deref(), Some("no space left"));
        assert_eq!(first.exit_code, Some(3));
        assert_eq!(
            first.log_href.as_deref(),
            Some("/api/tasks/call/S24%2Fchr%201/log?attempt=2")
        );
        let long = failed("a", "x", 1, &"r".repeat(500), &"y".repeat(5000));
        let f = failed_tasks(&g, &[long], 20);
        assert_eq!(
            f.newest[0].reason.as_ref().map(|r| r.chars().count()),
            Some(LINE_CHARS)
        );
        assert_eq!(
            f.newest[0].log_line.as_ref().map(|r| r.chars().count()),
            Some(LINE_CHARS)
        );
    }
}
