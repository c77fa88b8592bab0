//! What becomes of a waiting task, given the upstream tasks its edges select.

use super::{Dependency, OnFailure};
use crate::model::TaskState;

/// An upstream task as the store reports it for an edge.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UpstreamTask {
    pub id: String,
    pub state: TaskState,
}

/// One dependency with the upstream tasks its selector matched (only those).
#[derive(Debug, Clone)]
pub struct EdgeView<'a> {
    pub dependency: &'a Dependency,
    pub upstream: &'a [UpstreamTask],
}

/// The verdict on a waiting task.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Readiness {
    /// Some upstream task has not finished, or none exists yet (it may still arrive).
    Wait,
    /// Every dependency is met: the task may run.
    Ready,
    /// A dependency failed: the task fails without running, with this reason.
    Fail(String),
    /// A dependency was cancelled (its sample dropped): so is the task, with this reason.
    Cancel(String),
}

/// Decides a waiting task from its dependencies. A "one" edge needs its upstream task to
/// have succeeded; a cancelled one cancels the task, a failed one fails it. A gather waits
/// while any selected upstream task is unfinished (so a sample that arrives in time is
/// included), leaves cancelled ones out, and with failures either fails or, with
/// `onFailure: continue`, runs when at least `minSucceeded` of the rest succeeded (and at
/// least one did). Failing wins over cancelling, cancelling over waiting.
pub fn decide(edges: &[EdgeView<'_>]) -> Readiness {
    let mut verdict = Readiness::Ready;
    for edge in edges {
        let v = if edge.dependency.selector.is_gather() {
            gather(edge)
        } else {
            one(edge)
        };
        verdict = worse(verdict, v);
        if matches!(verdict, Readiness::Fail(_)) {
            break;
        }
    }
    verdict
}

fn rank(r: &Readiness) -> u8 {
    match r {
        Readiness::Ready => 0,
        Readiness::Wait => 1,
        Readiness::Cancel(_) => 2,
        Readiness::Fail(_) => 3,
    }
}

fn worse(a: Readiness, b: Readiness) -> Readiness {
    if rank(&b) > rank(&a) {
        b
    } else {
        a
    }
}

fn one(edge: &EdgeView<'_>) -> Readiness {
    let what = edge.dependency.selector.describe();
    match edge.upstream.first().map(|t| t.state) {
        None => Readiness::Wait,
        Some(TaskState::Succeeded) => Readiness::Ready,
        Some(TaskState::Failed) => Readiness::Fail(format!("dependency failed: {what}")),
        Some(TaskState::Cancelled) => Readiness::Cancel(format!("dependency cancelled: {what}")),
        Some(_) => Readiness::Wait,
    }
}

fn gather(edge: &EdgeView<'_>) -> Readiness {
    let what = edge.dependency.selector.describe();
    let (mut succeeded, mut failed, mut cancelled) = (0usize, 0usize, 0usize);
    for t in edge.upstream {
        match t.state {
            TaskState::Succeeded => succeeded += 1,
            TaskState::Failed => failed += 1,
            TaskState::Cancelled => cancelled += 1,
            _ => return Readiness::Wait,
        }
    }
    let counted = succeeded + failed;
    if counted == 0 {
        return if cancelled > 0 {
            Readiness::Cancel(format!("every task of {what} was cancelled"))
        } else {
            Readiness::Wait
        };
    }
    if failed == 0 {
        return Readiness::Ready;
    }
    let e = &edge.dependency.edge;
    let fraction = succeeded as f64 / counted as f64;
    let min = e.min_succeeded.unwrap_or(0.0);
    match e.on_failure {
        OnFailure::Continue if succeeded > 0 && fraction >= min => Readiness::Ready,
        OnFailure::Continue => Readiness::Fail(format!(
            "{succeeded} of {counted} tasks of {what} succeeded, fewer than minSucceeded {min}"
        )),
        OnFailure::Fail => Readiness::Fail(format!(
            "{failed} of {counted} tasks of {what} failed (onFailure: fail)"
        )),
    }
}
