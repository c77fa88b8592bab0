//! Conformance of a sample's actions across steps (`store::samples`) on every `TaskStore`
//! (SQLite and DynamoDB Local): a sample's tasks are found in every step, keyed or scattered
//! or undeclared; drop cancels its unfinished tasks only; hold and resume act on its pending
//! and waiting tasks only; an unknown sample is an error that changes nothing.

mod common;

use anamo::model::{ClaimRequest, TaskSpec, TaskState};
use anamo::pipeline::{Edge, Graph, Scatter, StepNode};
use anamo::store::samples::{apply, sample_tasks, SampleAction};
use anamo::store::{SharedStore, StoreError};

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

    pub async fn an_unknown_sample_is_an_error_and_changes_nothing(store: SharedStore) {
        let g = genome();
        import(&store, &g).await;
        let before = store.counts("align").await.unwrap();
        for action in [SampleAction::Drop, SampleAction::Hold, SampleAction::Resume] {
            match apply(store.as_ref(), &g, "NA000", action, T0 + 1).await {
                Err(StoreError::InvalidInput(m)) => {
                    assert!(m.contains("`NA000`") && m.contains("sample list"), "{m}")
                }
                other => panic!("{action:?}: expected InvalidInput, got {other:?}"),
            }
        }
        assert_eq!(store.counts("align").await.unwrap(), before);
    }
}

macro_rules! conformance {
    ($($case:ident),* $(,)?) => {
        mod sqlite {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $case() {
                    let h = crate::common::Harness::sqlite().await;
                    crate::cases::$case(h.store.clone()).await;
                }
            )*
        }
        mod dynamodb {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $case() {
                    let Some(h) = crate::common::Harness::dynamo().await else { return };
                    crate::cases::$case(h.store.clone()).await;
                    h.store.delete_schema().await.expect("delete test table");
                }
            )*
        }
    };
}

conformance!(
    a_samples_tasks_are_found_in_every_step,
    drop_cancels_only_the_samples_unfinished_tasks,
    hold_and_resume_a_sample,
    an_unknown_sample_is_an_error_and_changes_nothing,
);
