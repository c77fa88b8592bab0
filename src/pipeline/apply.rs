//! The graph applied to imported tasks, before anything is written: scattered steps expanded,
//! ids checked against their step's key (and against the items of a scattered upstream step,
//! so that no task waits for upstream tasks that cannot exist), and the step's defaults filled
//! into the fields a task does not set. Whether a task starts waiting is the store's call at import
//! ([`Graph::must_wait`]).

use super::{key, Graph, KeyError, Scatter, StepNode};
use crate::model::{TaskSpec, DEFAULT_MAX_ATTEMPTS};

impl Graph {
    /// The tasks `spec` becomes under this graph: one per item when its step is scattered
    /// (and its id lacks the scattered part), each with an id that fits the step's key and
    /// the step's defaults. Fails when an id does not fit the key.
    pub fn prepare(&self, spec: TaskSpec) -> Result<Vec<TaskSpec>, KeyError> {
        let node = self.node(&spec.step).into_owned();
        let mut out = self.scatter(spec)?;
        for t in &mut out {
            self.check_matchable(&node, t)?;
            fill_defaults(&node, t);
        }
        Ok(out)
    }

    /// Fails when `t`'s id does not fit its step's key, or when an edge selects upstream tasks
    /// by a part the upstream step is scattered over with a value that is none of the
    /// scatter's items: no upstream task could ever match, and `t` would wait forever.
    fn check_matchable(&self, node: &StepNode, t: &TaskSpec) -> Result<(), KeyError> {
        let parts = key::split(&node.key, &t.step, &t.id)?;
        for edge in &node.depends_on {
            let upstream = self.node(&edge.step);
            let Some(scatter) = &upstream.scatter else {
                continue;
            };
            let Some(at) = node.key.iter().position(|p| p == &scatter.part) else {
                continue;
            };
            let value = parts[at];
            if scatter.items.iter().any(|i| i == value) {
                continue;
            }
            let shown: Vec<&str> = scatter.items.iter().take(8).map(String::as_str).collect();
            let more = if scatter.items.len() > shown.len() {
                ", …"
            } else {
                ""
            };
            return Err(KeyError {
                step: t.step.clone(),
                id: t.id.clone(),
                message: format!(
                    "task {}/{} would wait forever: no task of step `{}` can have {} `{value}`, \
                     as `{}` is scattered over [{}{more}]; use one of those items as its `{}`",
                    t.step,
                    t.id,
                    edge.step,
                    scatter.part,
                    edge.step,
                    shown.join(", "),
                    scatter.part
                ),
            });
        }
        Ok(())
    }

    /// This graph with `step` scattered over `items` (`task import --scatter-file`): over
    /// `part` when given, else over the last part of a key with several parts, else over a
    /// new last part `item` (ids become `ID/ITEM`). Fails when the manifests already
    /// scatter the step, or `part` is not in its key.
    pub fn scattered(
        &self,
        step: &str,
        part: Option<&str>,
        items: Vec<String>,
    ) -> Result<Graph, String> {
        let mut node: StepNode = self.node(step).into_owned();
        if node.scatter.is_some() {
            return Err(format!(
                "step `{step}` is already scattered by its manifest; drop --scatter-file"
            ));
        }
        let part = match part {
            Some(p) if node.key.iter().any(|k| k == p) => p.to_string(),
            Some(p) if node.key.len() > 1 => {
                return Err(format!(
                    "--scatter-part `{p}` is not a part of step `{step}`'s key `{}`",
                    node.key.join("/")
                ))
            }
            Some(p) => {
                node.key.push(p.to_string());
                p.to_string()
            }
            None if node.key.len() > 1 => node.key[node.key.len() - 1].clone(),
            None => {
                node.key.push(SCATTER_PART.to_string());
                SCATTER_PART.to_string()
            }
        };
        node.scatter = Some(Scatter { part, items });
        let mut graph = self.clone();
        graph.steps.insert(step.to_string(), node);
        Ok(graph)
    }
}

/// The key part `--scatter-file` adds to a step keyed by one part.
pub const SCATTER_PART: &str = "item";

/// Fills the step's defaults into the fields `t` leaves at their own default.
fn fill_defaults(node: &StepNode, t: &mut TaskSpec) {
    let d = &node.defaults;
    if let Some(m) = d.max_attempts {
        if t.max_attempts == DEFAULT_MAX_ATTEMPTS {
            t.max_attempts = m;
        }
    }
    if t.timeout_secs.is_none() {
        t.timeout_secs = d.timeout_secs;
    }
    if t.retry_exit_codes.is_empty() {
        t.retry_exit_codes = d.retry_exit_codes.clone();
    }
    if t.fail_exit_codes.is_empty() {
        t.fail_exit_codes = d.fail_exit_codes.clone();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pipeline::{Edge, TaskDefaults};

    fn graph() -> Graph {
        let mut g = Graph {
            sample_part: "sample".into(),
            steps: Default::default(),
        };
        g.steps.insert("align".into(), StepNode::plain());
        let mut call = StepNode::plain();
        call.key = vec!["sample".into(), "region".into()];
        call.depends_on = vec![Edge::to("align")];
        call.scatter = Some(Scatter {
            part: "region".into(),
            items: vec!["chr1".into(), "chr2".into()],
        });
        call.defaults = TaskDefaults {
            max_attempts: Some(5),
            timeout_secs: Some(60),
            retry_exit_codes: vec![75],
            ..Default::default()
        };
        g.steps.insert("call".into(), call);
        let mut joint = StepNode::plain();
        joint.key = vec!["region".into()];
        joint.depends_on = vec![Edge::to("call")];
        g.steps.insert("joint".into(), joint);
        g
    }

    #[test]
    fn scatters_checks_keys_and_fills_defaults() {
        let g = graph();
        let tasks = g.prepare(TaskSpec::new("call", "S1", "true")).unwrap();
        let ids: Vec<&str> = tasks.iter().map(|t| t.id.as_str()).collect();
        assert_eq!(ids, ["S1/chr1", "S1/chr2"]);
        assert_eq!(tasks[0].max_attempts, 5);
        assert_eq!(tasks[0].timeout_secs, Some(60));
        assert_eq!(tasks[0].retry_exit_codes, [75]);
        assert_eq!(tasks[1].env["ANAMO_KEY_REGION"], "chr2");
        // A task's own settings win over the step's defaults.
        let mut own = TaskSpec::new("call", "S1/chr9", "true");
        own.max_attempts = 1;
        own.timeout_secs = Some(5);
        let t = g.prepare(own).unwrap();
        assert_eq!((t[0].max_attempts, t[0].timeout_secs), (1, Some(5)));
        // Already expanded ids are kept; ids that do not fit are refused.
        assert_eq!(
            g.prepare(TaskSpec::new("call", "S1/chr1", "x"))
                .unwrap()
                .len(),
            1
        );
        let err = g.prepare(TaskSpec::new("call", "S1/", "x")).unwrap_err();
        assert!(err.message.contains("sample/region"), "{err}");
        assert_eq!(
            g.prepare(TaskSpec::new("other", "a/b", "x")).unwrap().len(),
            1
        );
    }

    #[test]
    fn a_key_value_no_upstream_task_can_have_is_refused() {
        let g = graph();
        assert_eq!(
            g.prepare(TaskSpec::new("joint", "chr2", "x"))
                .unwrap()
                .len(),
            1
        );
        let err = g.prepare(TaskSpec::new("joint", "chr9", "x")).unwrap_err();
        assert!(
            err.message.contains("joint/chr9 would wait forever")
                && err.message.contains("region `chr9`")
                && err.message.contains("[chr1, chr2]"),
            "{err}"
        );
    }

    #[test]
    fn scatter_file_extends_a_plain_step_or_uses_its_last_part() {
        let g = graph();
        let items = vec!["a".to_string(), "b".to_string()];
        let s = g.scattered("align", None, items.clone()).unwrap();
        let tasks = s.prepare(TaskSpec::new("align", "S1", "x")).unwrap();
        let ids: Vec<&str> = tasks.iter().map(|t| t.id.as_str()).collect();
        assert_eq!(ids, ["S1/a", "S1/b"]);
        assert_eq!(tasks[0].env["ANAMO_KEY_ITEM"], "a");
        let err = g.scattered("call", None, items.clone()).unwrap_err();
        assert!(err.contains("already scattered"), "{err}");
        let err = g.scattered("joint", Some("x"), items.clone()).unwrap();
        assert_eq!(err.steps["joint"].key, ["region", "x"]);
    }
}
