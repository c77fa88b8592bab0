//! Conformance of a sample's actions across steps (`store::samples`) on every `TaskStore`
//! (SQLite and DynamoDB Local): a sample's tasks are found in every step, keyed or scattered
//! or undeclared; drop cancels its unfinished tasks only; hold and resume act on its pending
//! and waiting tasks only; retry requeues its own failures and, in dependency order, the
//! tasks that failed because of them; an unknown sample is an error that changes nothing.

#[macro_use]
mod common;

use anamo::model::{ClaimRequest, Completion, Outcome, TaskResult, TaskSpec, TaskState};
use anamo::pipeline::{Edge, Graph, Scatter, StepNode};
use anamo::store::samples::{apply, retry, sample_tasks, SampleAction};
use anamo::store::{promote, SharedStore, StoreError};

const T0: i64 = 1_700_000_000_000;

fn node(key: &[&str], deps: Vec<Edge>) -> StepNode {
    let mut n = StepNode::plain();
    n.key = key.iter().map(|k| k.to_string()).collect();
    n.depends_on = deps;
    n
}

/// align per sample → call per sample × region (chr1, chr2) → joint per region.
fn genome() -> Graph {
    let mut call = node(&["sample", "region"], vec![Edge::to("align")]);
    call.scatter = Some(Scatter {
        part: "region".into(),
        items: vec!["chr1".into(), "chr2".into()],
    });
    Graph {
        sample_part: "sample".into(),
        steps: [
            ("align", node(&["sample"], vec![])),
            ("call", call),
            ("joint", node(&["region"], vec![Edge::to("call")])),
        ]
        .into_iter()
        .map(|(s, n)| (s.to_string(), n))
        .collect(),
    }
}

/// Two samples (S1, S10: a prefix of one another's id is not the same sample) through align
/// and call, both regions' joint tasks, and an undeclared step `qc` keyed by the sample.
async fn import(store: &SharedStore, g: &Graph) {
    let mut tasks = Vec::new();
    for (step, id) in [
        ("align", "S1"),
        ("align", "S10"),
        ("call", "S1"),
        ("call", "S10"),
        ("joint", "chr1"),
        ("joint", "chr2"),
        ("qc", "S1"),
    ] {
        tasks.extend(g.prepare(TaskSpec::new(step, id, "true")).unwrap());
    }
    store.import_graph(&tasks, g, T0).await.unwrap();
}

fn keys(tasks: &[(String, String)]) -> Vec<String> {
    tasks.iter().map(|(s, i)| format!("{s}/{i}")).collect()
}

async fn state(store: &SharedStore, step: &str, id: &str) -> TaskState {
    store
        .get(step, id)
        .await
        .unwrap()
        .expect("task exists")
        .state
}

/// Claims every pending task of `step` and ends each attempt: permanently failed for the ids
/// in `fail`, succeeded for the others.
async fn run_step(store: &SharedStore, step: &str, fail: &[&str], at: i64) {
    let req = ClaimRequest {
        step: step.into(),
        owner: "w".into(),
        ttl_ms: 60_000,
    };
    for c in store.claim_batch(&req, 100, at).await.unwrap() {
        let failed = fail.contains(&c.task.id());
        let done = Completion {
            outcome: if failed {
                Outcome::FailedPermanently
            } else {
                Outcome::Succeeded
            },
            retry_delay: None,
            result: TaskResult {
                exit_code: Some(if failed { 3 } else { 0 }),
                worker_id: "w".into(),
                error: failed.then(|| "exit 3".to_string()),
                ..Default::default()
            },
        };
        store.complete(&c.lease(), &done, at + 1).await.unwrap();
    }
}

mod cases {
    use super::*;

    pub async fn a_samples_tasks_are_found_in_every_step(store: SharedStore) {
        let g = genome();
        import(&store, &g).await;
        let found: Vec<String> = sample_tasks(store.as_ref(), &g, "S1")
            .await
            .unwrap()
            .into_iter()
            .map(|t| format!("{}/{}:{}", t.step, t.id, t.state))
            .collect();
        assert_eq!(
            found,
            [
                "align/S1:pending",
                "call/S1/chr1:waiting",
                "call/S1/chr2:waiting",
                "qc/S1:pending"
            ]
        );
        assert!(sample_tasks(store.as_ref(), &g, "S9")
            .await
            .unwrap()
            .is_empty());
    }

    pub async fn drop_cancels_only_the_samples_unfinished_tasks(store: SharedStore) {
        let g = genome();
        import(&store, &g).await;
        let req = ClaimRequest {
            step: "qc".into(),
            owner: "w".into(),
            ttl_ms: 60_000,
        };
        let running = store.claim(&req, T0).await.unwrap().expect("qc/S1");
        let r = apply(store.as_ref(), &g, "S1", SampleAction::Drop, T0 + 1)
            .await
            .unwrap();
        assert_eq!(
            keys(&r.changed),
            ["align/S1", "call/S1/chr1", "call/S1/chr2", "qc/S1"]
        );
        assert!(r.skipped.is_empty(), "{r:?}");
        for (step, id) in &r.changed {
            assert_eq!(state(&store, step, id).await, TaskState::Cancelled);
        }
        // The running task lost its lease (its worker stops the process).
        let hb = store.heartbeat(&running.lease(), 60_000, T0 + 2).await;
        assert!(matches!(hb, Err(StoreError::LeaseLost { .. })), "{hb:?}");
        assert_eq!(state(&store, "align", "S10").await, TaskState::Pending);
        assert_eq!(state(&store, "joint", "chr1").await, TaskState::Waiting);
        // Dropping again changes nothing: every task is final.
        let again = apply(store.as_ref(), &g, "S1", SampleAction::Drop, T0 + 3)
            .await
            .unwrap();
        assert!(again.changed.is_empty());
        assert_eq!(again.skipped.len(), 4);
    }

    pub async fn hold_and_resume_a_sample(store: SharedStore) {
        let g = genome();
        import(&store, &g).await;
        let r = apply(store.as_ref(), &g, "S10", SampleAction::Hold, T0 + 1)
            .await
            .unwrap();
        assert_eq!(
            keys(&r.changed),
            ["align/S10", "call/S10/chr1", "call/S10/chr2"]
        );
        let req = ClaimRequest {
            step: "align".into(),
            owner: "w".into(),
            ttl_ms: 60_000,
        };
        let c = store.claim(&req, T0 + 2).await.unwrap().expect("align/S1");
        assert_eq!(c.task.id(), "S1", "held align/S10 is not claimed");
        assert!(store.claim(&req, T0 + 2).await.unwrap().is_none());
        let r = apply(store.as_ref(), &g, "S10", SampleAction::Resume, T0 + 3)
            .await
            .unwrap();
        assert_eq!(r.changed.len(), 3);
        assert_eq!(state(&store, "align", "S10").await, TaskState::Pending);
        assert_eq!(state(&store, "call", "S10/chr1").await, TaskState::Waiting);
    }

    pub async fn retry_requeues_the_sample_and_what_failed_because_of_it(store: SharedStore) {
        let g = genome();
        import(&store, &g).await;
        run_step(&store, "align", &["S1"], T0 + 1).await;
        promote::promote_waiting(store.as_ref(), &g, "call", T0 + 3)
            .await
            .unwrap();
        assert_eq!(state(&store, "call", "S1/chr1").await, TaskState::Failed);
        run_step(&store, "call", &[], T0 + 4).await;
        promote::promote_waiting(store.as_ref(), &g, "joint", T0 + 6)
            .await
            .unwrap();
        assert_eq!(state(&store, "joint", "chr1").await, TaskState::Failed);
        let (roots, carried) = retry(store.as_ref(), &g, "S1", T0 + 7).await.unwrap();
        assert_eq!(keys(&roots), ["align/S1"]);
        let mut carried = keys(&carried);
        // Dependency order: the calls come before the joints that gather them.
        assert!(
            carried[..2].iter().all(|k| k.starts_with("call/S1/")),
            "{carried:?}"
        );
        carried.sort();
        assert_eq!(
            carried,
            ["call/S1/chr1", "call/S1/chr2", "joint/chr1", "joint/chr2"]
        );
        assert_eq!(state(&store, "align", "S1").await, TaskState::Pending);
        for (step, id) in [("call", "S1/chr2"), ("joint", "chr2")] {
            let t = store.get(step, id).await.unwrap().unwrap();
            assert_eq!(
                (t.state, t.attempts),
                (TaskState::Waiting, 0),
                "{step}/{id}"
            );
        }
        assert_eq!(
            state(&store, "call", "S10/chr1").await,
            TaskState::Succeeded
        );
        // Nothing failed on its own any more: a second retry requeues nothing.
        let (roots, carried) = retry(store.as_ref(), &g, "S1", T0 + 8).await.unwrap();
        assert!(roots.is_empty() && carried.is_empty());
    }

    pub async fn an_unknown_sample_is_an_error_and_changes_nothing(store: SharedStore) {
        let g = genome();
        import(&store, &g).await;
        let before = store.counts("align").await.unwrap();
        let r = retry(store.as_ref(), &g, "NA000", T0 + 1).await;
        assert!(matches!(r, Err(StoreError::InvalidInput(_))), "{r:?}");
        for action in [SampleAction::Drop, SampleAction::Hold, SampleAction::Resume] {
            match apply(store.as_ref(), &g, "NA000", action, T0 + 1).await {
                Err(StoreError::InvalidInput(m)) => {
                    assert!(m.contains("no task of sample `NA000`"), "{m}")
                }
                other => panic!("{action:?}: expected InvalidInput, got {other:?}"),
            }
        }
        assert_eq!(store.counts("align").await.unwrap(), before);
    }
}

conformance!(
    a_samples_tasks_are_found_in_every_step,
    drop_cancels_only_the_samples_unfinished_tasks,
    hold_and_resume_a_sample,
    retry_requeues_the_sample_and_what_failed_because_of_it,
    an_unknown_sample_is_an_error_and_changes_nothing,
);
