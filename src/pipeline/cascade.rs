//! Which finished tasks a requeue carries along: the dependents that failed or were
//! cancelled *because of* a requeued task (their reason is one the promotion gives, see
//! [`super::decide`]), found transitively and listed in dependency order (every task after
//! the tasks it waits for), so they run again once their upstream tasks have.

use std::collections::BTreeSet;

use super::Graph;
use crate::model::{Task, TaskState};

/// Whether `reason` is one the promotion gives a task it fails or cancels because of its
/// dependencies (not an attempt's own failure, nor a user's cancel).
pub fn is_dependency_reason(reason: &str) -> bool {
    reason.starts_with("dependency failed: ")
        || reason.starts_with("dependency cancelled: ")
        || reason.starts_with("every task of ")
        || (reason.contains(" tasks of ")
            && (reason.ends_with("(onFailure: fail)") || reason.contains("minSucceeded")))
}

/// The tasks of `candidates` (finished tasks of any step) to requeue along with `requeued`
/// (`(step, id)` pairs), in dependency order: failed or cancelled with a dependency reason,
/// and waiting (through the graph or their own `depends_on`) for a requeued task or for
/// one this cascade already chose.
pub fn cascade(
    graph: &Graph,
    requeued: &[(String, String)],
    candidates: &[Task],
) -> Vec<(String, String)> {
    let mut chosen: BTreeSet<(String, String)> = requeued.iter().cloned().collect();
    let mut out = Vec::new();
    loop {
        let before = out.len();
        for t in candidates {
            let key = (t.spec.step.clone(), t.spec.id.clone());
            if chosen.contains(&key)
                || !matches!(t.state, TaskState::Failed | TaskState::Cancelled)
                || !t.reason.as_deref().is_some_and(is_dependency_reason)
            {
                continue;
            }
            let Ok(deps) = graph.dependencies(&t.spec) else {
                continue;
            };
            let waits_on_chosen = deps.iter().any(|d| {
                chosen
                    .iter()
                    .any(|(step, id)| *step == d.selector.step && d.selector.matches(id))
            });
            if waits_on_chosen {
                chosen.insert(key.clone());
                out.push(key);
            }
        }
        if out.len() == before {
            return out;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::TaskSpec;
    use crate::pipeline::{Edge, StepNode};

    fn task(step: &str, id: &str, state: TaskState, reason: &str) -> Task {
        let mut t = Task::new(TaskSpec::new(step, id, "true"), 0);
        t.state = state;
        t.reason = Some(reason.to_string());
        t
    }

    fn graph() -> Graph {
        let mut g = Graph {
            sample_part: "sample".into(),
            ..Default::default()
        };
        let mut call = StepNode::plain();
        call.depends_on = vec![Edge::to("align")];
        let mut qc = StepNode::plain();
        qc.depends_on = vec![Edge::to("call")];
        let mut joint = StepNode::plain();
        joint.key = vec![];
        joint.depends_on = vec![Edge::to("call")];
        g.steps.insert("align".into(), StepNode::plain());
        g.steps.insert("call".into(), call);
        g.steps.insert("qc".into(), qc);
        g.steps.insert("joint".into(), joint);
        g
    }

    #[test]
    fn carries_the_dependents_that_ended_because_of_it_in_order() {
        let g = graph();
        let roots = vec![("align".to_string(), "S1".to_string())];
        let candidates = vec![
            // Listed before its upstream: still comes after it.
            task(
                "qc",
                "S1",
                TaskState::Cancelled,
                "dependency cancelled: call/S1",
            ),
            task(
                "call",
                "S1",
                TaskState::Failed,
                "dependency failed: align/S1",
            ),
            task(
                "joint",
                "all",
                TaskState::Failed,
                "1 of 2 tasks of call/* failed (onFailure: fail)",
            ),
            // Its own failure, another sample, a user's cancel: left alone.
            task(
                "call",
                "S2",
                TaskState::Failed,
                "dependency failed: align/S2",
            ),
            task("qc", "S3", TaskState::Failed, "exit 3"),
            task("call", "S9", TaskState::Cancelled, "cancelled by user"),
        ];
        let got = cascade(&g, &roots, &candidates);
        let got: Vec<String> = got.iter().map(|(s, i)| format!("{s}/{i}")).collect();
        // qc and joint both wait for call/S1 only: either order is a dependency order.
        assert_eq!(got, ["call/S1", "joint/all", "qc/S1"]);
    }

    #[test]
    fn own_failures_and_user_cancels_are_not_dependency_reasons() {
        assert!(is_dependency_reason("dependency failed: align/S1"));
        assert!(is_dependency_reason("every task of call/* was cancelled"));
        assert!(is_dependency_reason(
            "1 of 4 tasks of call/*/chr1 succeeded, fewer than minSucceeded 0.5"
        ));
        assert!(!is_dependency_reason("exit 3"));
        assert!(!is_dependency_reason("cancelled by user"));
        assert!(!is_dependency_reason("lease expired after 3 attempts"));
    }
}
