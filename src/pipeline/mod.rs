//! The pipeline graph: which tasks of which steps a task waits for, declared once (in the
//! fleets' manifests) and applied to every task however it arrived.
//!
//! Every step has a **key**: the names of the parts its task ids are made of, joined by `/`
//! (`[sample]` by default; `call` over regions has `[sample, region]`, so `NA12878/chr1`). An
//! edge from a step to an upstream step joins their tasks on the key parts they share:
//!
//! * **one** — the upstream key is part of this step's key: a task waits for exactly one
//!   upstream task (`call/NA12878/chr1` waits for `align/NA12878`; with equal keys, the task
//!   with the same id, as before pipelines).
//! * **gather** — the upstream step has key parts this step lacks: a task waits for every
//!   upstream task that agrees on the shared parts (`joint/chr1` waits for `call/*/chr1`; a
//!   step with an empty key waits for the whole upstream step), with a rule for failed ones.
//!
//! A step may **scatter** over one of its key parts: a task imported with the other parts
//! becomes one task per item (`NA12878` → `NA12878/chr1` … `NA12878/chrY`).
//!
//! Everything here is pure: the store reads the upstream tasks an edge selects
//! ([`Selector`]) and [`decide`] says what becomes of a waiting task.

mod apply;
mod cascade;
mod decide;
mod key;
pub mod matrix;

#[cfg(test)]
mod tests;

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

pub use self::apply::SCATTER_PART;
pub use self::cascade::{cascade, is_dependency_reason};
pub use self::decide::{decide, EdgeView, Readiness, UpstreamTask};
pub use self::key::{KeyError, Selector};

/// Kept with the task types (a completion carries one); the graph's defaults name it.
pub use crate::model::RetryDelay;
use crate::model::TaskSpec;

/// The key part that names a sample unless the Controller manifest says otherwise.
pub const DEFAULT_SAMPLE_PART: &str = "sample";
/// Environment variable prefix of a task's key parts (`ANAMO_KEY_SAMPLE=NA12878`).
pub const KEY_ENV_PREFIX: &str = "ANAMO_KEY_";
/// Environment variable prefix naming the file of a gather's upstream ids, one per line
/// (`ANAMO_UPSTREAM_CALL=/path/to/file`).
pub const UPSTREAM_ENV_PREFIX: &str = "ANAMO_UPSTREAM_";

/// The graph of every step anamo knows of, as the controller publishes it to the store.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Graph {
    /// The key part that names a sample (`sample list` groups by it).
    #[serde(default = "default_sample_part")]
    pub sample_part: String,
    pub steps: BTreeMap<String, StepNode>,
}

fn default_sample_part() -> String {
    DEFAULT_SAMPLE_PART.to_string()
}

/// One step of the graph.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StepNode {
    /// Names of the parts of this step's task ids, in order.
    pub key: Vec<String>,
    /// The steps this one waits for.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub depends_on: Vec<Edge>,
    /// The key part this step's tasks are expanded over at import, with its items.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scatter: Option<Scatter>,
    /// Defaults for this step's tasks (fields a task does not set itself).
    #[serde(default)]
    pub defaults: TaskDefaults,
}

impl StepNode {
    /// A step keyed by one `sample` part, with no dependencies (a step that is not declared
    /// in any manifest behaves this way).
    pub fn plain() -> Self {
        StepNode {
            key: vec![DEFAULT_SAMPLE_PART.to_string()],
            depends_on: Vec::new(),
            scatter: None,
            defaults: TaskDefaults::default(),
        }
    }
}

/// A dependency on an upstream step.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Edge {
    pub step: String,
    /// What a gather does when some upstream tasks failed.
    #[serde(default)]
    pub on_failure: OnFailure,
    /// With `on_failure: continue`, the least fraction (0–1) of the upstream tasks (dropped
    /// samples not counted) that must have succeeded.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min_succeeded: Option<f64>,
}

impl Edge {
    /// A plain edge: wait for `step`, fail when it fails.
    pub fn to(step: impl Into<String>) -> Self {
        Edge {
            step: step.into(),
            on_failure: OnFailure::Fail,
            min_succeeded: None,
        }
    }
}

/// What a gather does when upstream tasks failed (dropped samples are always left out).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum OnFailure {
    /// The gather fails too.
    #[default]
    Fail,
    /// The gather runs over the upstream tasks that succeeded.
    Continue,
}

/// A key part whose values come from a list.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Scatter {
    pub part: String,
    pub items: Vec<String>,
}

/// Per-step defaults of the fields a task may also set itself.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct TaskDefaults {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_attempts: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout_secs: Option<u64>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub retry_exit_codes: Vec<i32>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub fail_exit_codes: Vec<i32>,
    /// Wait before a failed attempt is retried.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retry_delay: Option<RetryDelay>,
}

/// What a task depends on: the step's edges, plus the task's own `depends_on` (same id).
#[derive(Debug, Clone, PartialEq)]
pub struct Dependency {
    pub edge: Edge,
    pub selector: Selector,
}

impl Graph {
    /// The step's node, or a plain one for a step the manifests do not declare.
    pub fn node(&self, step: &str) -> std::borrow::Cow<'_, StepNode> {
        match self.steps.get(step) {
            Some(n) => std::borrow::Cow::Borrowed(n),
            None => std::borrow::Cow::Owned(StepNode::plain()),
        }
    }

    /// Whether a task of `spec.step` imported now must wait (for the graph or its own
    /// `depends_on`) rather than start pending.
    pub fn must_wait(&self, spec: &TaskSpec) -> bool {
        !spec.depends_on.is_empty()
            || self
                .steps
                .get(&spec.step)
                .is_some_and(|n| !n.depends_on.is_empty())
    }

    /// What the task `spec` waits for. Fails when its id does not have the parts its step's
    /// key names.
    pub fn dependencies(&self, spec: &TaskSpec) -> Result<Vec<Dependency>, KeyError> {
        let node = self.node(&spec.step);
        let mut deps = Vec::new();
        if !node.depends_on.is_empty() {
            let parts = key::split(&node.key, &spec.step, &spec.id)?;
            for edge in &node.depends_on {
                let upstream = self.node(&edge.step);
                deps.push(Dependency {
                    edge: edge.clone(),
                    selector: Selector::for_edge(&edge.step, &upstream.key, &node.key, &parts),
                });
            }
        }
        for step in &spec.depends_on {
            if deps.iter().any(|d| &d.edge.step == step) {
                continue;
            }
            deps.push(Dependency {
                edge: Edge::to(step),
                selector: Selector::exact(step, &spec.id),
            });
        }
        Ok(deps)
    }

    /// The value of the sample part of a task's id, or the whole id when its step is keyed by
    /// one part (every step no manifest declares); `None` for steps without a sample part
    /// (gathers over samples).
    pub fn sample_of<'a>(&self, step: &str, id: &'a str) -> Option<&'a str> {
        let node = self.node(step);
        let at = node.key.iter().position(|p| p == &self.sample_part);
        match at {
            Some(i) => key::split(&node.key, step, id).ok()?.into_iter().nth(i),
            None if node.key.len() == 1 && !self.steps.contains_key(step) => Some(id),
            None => None,
        }
    }

    /// The environment variables naming a task's key parts (`ANAMO_KEY_SAMPLE`, …).
    pub fn key_env(&self, step: &str, id: &str) -> Vec<(String, String)> {
        let node = self.node(step);
        match key::split(&node.key, step, id) {
            Ok(parts) => node
                .key
                .iter()
                .zip(parts)
                .map(|(name, value)| (env_name(KEY_ENV_PREFIX, name), value.to_string()))
                .collect(),
            Err(_) => Vec::new(),
        }
    }

    /// Expands a task of a scattered step into one task per item (ids `ID/ITEM` with the item
    /// appended in its key position, the item in the task's environment). Tasks of other
    /// steps, and tasks whose id already has every key part, are returned as they are.
    pub fn scatter(&self, spec: TaskSpec) -> Result<Vec<TaskSpec>, KeyError> {
        let node = self.node(&spec.step);
        let Some(scatter) = &node.scatter else {
            return Ok(vec![spec]);
        };
        key::scatter(&node.key, scatter, spec)
    }

    /// Steps in an order where every step comes after the steps it depends on (ties by
    /// name). Steps on a cycle (validation rejects them) come last.
    pub fn in_order(&self) -> Vec<&str> {
        let mut done: Vec<&str> = Vec::new();
        let mut left: Vec<&str> = self.steps.keys().map(String::as_str).collect();
        while !left.is_empty() {
            let ready = left.iter().position(|s| {
                self.steps[*s]
                    .depends_on
                    .iter()
                    .all(|e| done.contains(&e.step.as_str()) || !self.steps.contains_key(&e.step))
            });
            let at = ready.unwrap_or(0);
            done.push(left.remove(at));
        }
        done
    }

    /// Whether `step`'s edge to `upstream` is a gather: the upstream key is empty or has a
    /// part `step`'s key lacks, so a task waits for many upstream tasks.
    pub fn is_gather_edge(&self, step: &str, upstream: &str) -> bool {
        let (own, up) = (self.node(step), self.node(upstream));
        up.key.is_empty() || up.key.iter().any(|p| !own.key.contains(p))
    }

    /// The gathers that can only wait: `(step, upstream)` for every declared step's gather
    /// edge to a declared upstream step that has no task at all (`with_tasks` are the steps
    /// that have some). Their tasks run once upstream tasks are added, and not before.
    pub fn starved_gathers(&self, with_tasks: &[String]) -> Vec<(String, String)> {
        let mut out = Vec::new();
        for (step, node) in &self.steps {
            for e in &node.depends_on {
                if self.steps.contains_key(&e.step)
                    && !with_tasks.contains(&e.step)
                    && self.is_gather_edge(step, &e.step)
                {
                    out.push((step.clone(), e.step.clone()));
                }
            }
        }
        out
    }

    /// Steps that depend on `step` directly.
    pub fn dependents(&self, step: &str) -> Vec<&str> {
        self.steps
            .iter()
            .filter(|(_, n)| n.depends_on.iter().any(|e| e.step == step))
            .map(|(s, _)| s.as_str())
            .collect()
    }
}

/// `PREFIX` + the name upper-cased, with every character but A–Z, 0–9 and `_` as `_`.
pub fn env_name(prefix: &str, name: &str) -> String {
    let mut out = String::from(prefix);
    out.extend(name.chars().map(|c| {
        if c.is_ascii_alphanumeric() {
            c.to_ascii_uppercase()
        } else {
            '_'
        }
    }));
    out
}
