//! Conformance cases of the pipeline graph applied by the store: "one" edges, scatter, gathers
//! per key part and over a whole step, out-of-order arrival, onFailure rules, cancelled
//! upstream tasks, legacy per-task `depends_on`, a gather over 10,000 upstream tasks, and the
//! pending → waiting move when a graph arrives. Promotion is `store::promote`, the same
//! function the controller calls, over each store's primitives.

use std::collections::HashMap;

use futures::StreamExt;

use anamo::model::{Completion, LeaseRef, Outcome, TaskSpec, TaskState};
use anamo::pipeline::{Edge, Graph, OnFailure, Scatter, StepNode};
use anamo::store::{graph as store_graph, promote, SharedStore};

use super::{done, req, T0};

fn node(key: &[&str], deps: Vec<Edge>) -> StepNode {
    let mut n = StepNode::plain();
    n.key = key.iter().map(|k| k.to_string()).collect();
    n.depends_on = deps;
    n
}

fn graph(steps: Vec<(&str, StepNode)>) -> Graph {
    Graph {
        sample_part: "sample".into(),
        steps: steps.into_iter().map(|(s, n)| (s.to_string(), n)).collect(),
    }
}

/// align per sample → call per sample × region (scattered over chr1, chr2) → joint per
/// region over every sample → merge once over every region.
fn genome() -> Graph {
    let mut call = node(&["sample", "region"], vec![Edge::to("align")]);
    call.scatter = Some(Scatter {
        part: "region".into(),
        items: vec!["chr1".into(), "chr2".into()],
    });
    graph(vec![
        ("align", node(&["sample"], vec![])),
        ("call", call),
        ("joint", node(&["region"], vec![Edge::to("call")])),
        ("merge", node(&[], vec![Edge::to("joint")])),
    ])
}

/// Imports tasks as `task import` does: prepared under the graph, imported under it.
async fn import(store: &SharedStore, g: &Graph, step: &str, ids: &[&str]) -> Vec<String> {
    let mut out = Vec::new();
    let mut tasks = Vec::new();
    for id in ids {
        for t in g.prepare(TaskSpec::new(step, *id, "true")).unwrap() {
            out.push(t.id.clone());
            tasks.push(t);
        }
    }
    store.import_graph(&tasks, g, T0).await.unwrap();
    out
}

/// Claims every pending task of `step` and ends each as `outcomes` says (succeeded when not
/// named there).
async fn run(store: &SharedStore, step: &str, outcomes: &[(&str, Outcome)]) {
    let outcomes: HashMap<&str, Outcome> = outcomes.iter().cloned().collect();
    loop {
        let claims = store
            .claim_batch(&req(step, "w"), 100, T0 + 1)
            .await
            .unwrap();
        if claims.is_empty() {
            return;
        }
        futures::stream::iter(claims)
            .map(|c| {
                let outcome = outcomes
                    .get(c.task.id())
                    .cloned()
                    .unwrap_or(Outcome::Succeeded);
                let code = i32::from(outcome != Outcome::Succeeded) * 2;
                let lease = LeaseRef::new(step, c.task.id(), &c.token);
                let completion: Completion = done(outcome, "w", code);
                async move { store.complete(&lease, &completion, T0 + 2).await.unwrap() }
            })
            .buffer_unordered(16)
            .collect::<Vec<_>>()
            .await;
    }
}

async fn promote_all(store: &SharedStore, g: &Graph) {
    for step in ["align", "call", "joint", "merge"] {
        promote::promote_waiting(store.as_ref(), g, step, T0 + 3)
            .await
            .unwrap();
    }
}

async fn state(store: &SharedStore, step: &str, id: &str) -> TaskState {
    store.get(step, id).await.unwrap().unwrap().state
}

/// The step's ids and states, read whole and page by page (the two must agree).
async fn states(store: &SharedStore, step: &str) -> Vec<(String, TaskState)> {
    let all = store.step_ids(step, &TaskState::ALL, "").await.unwrap();
    let mut paged = Vec::new();
    store
        .step_ids_paged(step, &TaskState::ALL, &mut |page| paged.extend(page))
        .await
        .unwrap();
    paged.sort();
    assert_eq!(paged, all, "step_ids_paged of {step}");
    all
}

pub async fn graph_is_published_and_read_back(store: SharedStore) {
    assert_eq!(store_graph::get_graph(store.as_ref()).await.unwrap(), None);
    let g = genome();
    store_graph::put_graph(store.as_ref(), &g, T0, anamo::store::Fence::Unfenced)
        .await
        .unwrap();
    assert_eq!(
        store_graph::get_graph(store.as_ref()).await.unwrap(),
        Some(g)
    );
}

pub async fn one_edge_and_scattered_children_wait_for_their_sample(store: SharedStore) {
    let g = genome();
    import(&store, &g, "align", &["S1", "S2"]).await;
    let calls = import(&store, &g, "call", &["S1", "S2"]).await;
    assert_eq!(calls, ["S1/chr1", "S1/chr2", "S2/chr1", "S2/chr2"]);
    let task = store.get("call", "S1/chr2").await.unwrap().unwrap();
    assert_eq!(
        task.state,
        TaskState::Waiting,
        "waits with no depends_on of its own"
    );
    assert!(task.spec.depends_on.is_empty());
    assert_eq!(task.spec.env["ANAMO_KEY_REGION"], "chr2");
    run(&store, "align", &[("S2", Outcome::FailedPermanently)]).await;
    promote_all(&store, &g).await;
    let got = states(&store, "call").await;
    use TaskState::*;
    let want = [
        ("S1/chr1", Pending),
        ("S1/chr2", Pending),
        ("S2/chr1", Failed),
        ("S2/chr2", Failed),
    ];
    let want: Vec<(String, TaskState)> = want.iter().map(|(i, s)| (i.to_string(), *s)).collect();
    assert_eq!(got, want);
    let failed = store.get("call", "S2/chr1").await.unwrap().unwrap();
    assert_eq!(
        failed.reason.as_deref(),
        Some("dependency failed: align/S2")
    );
}

pub async fn gathers_per_key_part_and_over_a_whole_step(store: SharedStore) {
    let g = genome();
    import(&store, &g, "align", &["S1", "S2"]).await;
    import(&store, &g, "call", &["S1", "S2"]).await;
    import(&store, &g, "joint", &["chr1", "chr2"]).await;
    import(&store, &g, "merge", &["all"]).await;
    run(&store, "align", &[]).await;
    promote_all(&store, &g).await;
    // Only chr1 of both samples finishes: joint/chr1 may run, joint/chr2 may not.
    let claims = store
        .claim_batch(&req("call", "w"), 10, T0 + 1)
        .await
        .unwrap();
    assert_eq!(claims.len(), 4);
    for c in claims {
        let lease = LeaseRef::new("call", c.task.id(), &c.token);
        if c.task.id().ends_with("chr1") {
            store
                .complete(&lease, &done(Outcome::Succeeded, "w", 0), T0 + 2)
                .await
                .unwrap();
        } else {
            store.release(&lease, T0 + 2).await.unwrap();
        }
    }
    promote_all(&store, &g).await;
    assert_eq!(state(&store, "joint", "chr1").await, TaskState::Pending);
    assert_eq!(state(&store, "joint", "chr2").await, TaskState::Waiting);
    run(&store, "joint", &[]).await;
    promote_all(&store, &g).await;
    assert_eq!(
        state(&store, "merge", "all").await,
        TaskState::Waiting,
        "joint/chr2 not run"
    );
    run(&store, "call", &[]).await;
    promote_all(&store, &g).await;
    run(&store, "joint", &[]).await;
    promote_all(&store, &g).await;
    assert_eq!(state(&store, "merge", "all").await, TaskState::Pending);
}

pub async fn dependents_imported_before_their_upstream_wait(store: SharedStore) {
    let g = genome();
    import(&store, &g, "joint", &["chr1"]).await;
    import(&store, &g, "call", &["S1/chr1"]).await;
    promote_all(&store, &g).await;
    assert_eq!(state(&store, "joint", "chr1").await, TaskState::Waiting);
    assert_eq!(state(&store, "call", "S1/chr1").await, TaskState::Waiting);
    // The sample arrives last; a second one arrives while the gather still waits.
    import(&store, &g, "align", &["S1"]).await;
    run(&store, "align", &[]).await;
    promote_all(&store, &g).await;
    import(&store, &g, "call", &["S2/chr1"]).await;
    import(&store, &g, "align", &["S2"]).await;
    run(&store, "call", &[]).await;
    promote_all(&store, &g).await;
    assert_eq!(
        state(&store, "joint", "chr1").await,
        TaskState::Waiting,
        "S2 joined in time"
    );
    run(&store, "align", &[]).await;
    promote_all(&store, &g).await;
    run(&store, "call", &[]).await;
    promote_all(&store, &g).await;
    assert_eq!(state(&store, "joint", "chr1").await, TaskState::Pending);
}

pub async fn gather_failure_rules(store: SharedStore) {
    let continue_at = |min: Option<f64>| Edge {
        step: "up".into(),
        on_failure: OnFailure::Continue,
        min_succeeded: min,
    };
    let g = graph(vec![
        ("up", node(&["sample"], vec![])),
        ("fail", node(&[], vec![Edge::to("up")])),
        ("cont", node(&[], vec![continue_at(None)])),
        ("min75", node(&[], vec![continue_at(Some(0.75))])),
        ("min80", node(&[], vec![continue_at(Some(0.8))])),
    ]);
    import(&store, &g, "up", &["a", "b", "c", "d"]).await;
    for step in ["fail", "cont", "min75", "min80"] {
        import(&store, &g, step, &["x"]).await;
    }
    run(&store, "up", &[("d", Outcome::FailedPermanently)]).await;
    for step in ["fail", "cont", "min75", "min80"] {
        promote::promote_waiting(store.as_ref(), &g, step, T0 + 3)
            .await
            .unwrap();
    }
    assert_eq!(state(&store, "fail", "x").await, TaskState::Failed);
    assert_eq!(state(&store, "cont", "x").await, TaskState::Pending);
    assert_eq!(state(&store, "min75", "x").await, TaskState::Pending);
    let t = store.get("min80", "x").await.unwrap().unwrap();
    assert_eq!(t.state, TaskState::Failed);
    assert!(t.reason.unwrap().contains("3 of 4 tasks of up/* succeeded"));
}

pub async fn cancelled_upstream_cancels_dependents(store: SharedStore) {
    let g = genome();
    import(&store, &g, "align", &["S1", "S2"]).await;
    import(&store, &g, "call", &["S1", "S2"]).await;
    import(&store, &g, "joint", &["chr1"]).await;
    store.cancel("align", "S1", T0 + 1).await.unwrap();
    promote_all(&store, &g).await;
    let t = store.get("call", "S1/chr1").await.unwrap().unwrap();
    assert_eq!(t.state, TaskState::Cancelled);
    assert_eq!(t.reason.as_deref(), Some("dependency cancelled: align/S1"));
    promote_all(&store, &g).await;
    assert_eq!(
        state(&store, "joint", "chr1").await,
        TaskState::Waiting,
        "S2 still runs"
    );
    run(&store, "align", &[]).await;
    promote_all(&store, &g).await;
    run(&store, "call", &[]).await;
    promote_all(&store, &g).await;
    // The dropped sample is left out of the gather.
    assert_eq!(state(&store, "joint", "chr1").await, TaskState::Pending);
}

pub async fn legacy_depends_on_without_a_graph(store: SharedStore) {
    let g = store_graph::empty_graph();
    store
        .import(&[TaskSpec::new("align", "S1", "true")], T0)
        .await
        .unwrap();
    let mut call = TaskSpec::new("call", "S1", "true");
    call.depends_on = vec!["align".into()];
    store.import(&[call], T0).await.unwrap();
    assert_eq!(state(&store, "call", "S1").await, TaskState::Waiting);
    promote_all(&store, &g).await;
    assert_eq!(state(&store, "call", "S1").await, TaskState::Waiting);
    run(&store, "align", &[]).await;
    let r = promote::promote_waiting(store.as_ref(), &g, "call", T0 + 3)
        .await
        .unwrap();
    assert_eq!(r.promoted, 1);
    assert_eq!(state(&store, "call", "S1").await, TaskState::Pending);
}

pub async fn gather_over_ten_thousand_upstream_tasks(store: SharedStore) {
    const N: usize = 10_000;
    let g = graph(vec![
        ("up", node(&["sample"], vec![])),
        ("all", node(&[], vec![Edge::to("up")])),
    ]);
    let ups: Vec<TaskSpec> = (0..N)
        .map(|i| TaskSpec::new("up", format!("s{i:05}"), "true"))
        .collect();
    for chunk in ups.chunks(1000) {
        store.import_graph(chunk, &g, T0).await.unwrap();
    }
    import(&store, &g, "all", &["x"]).await;
    let r = promote::promote_waiting(store.as_ref(), &g, "all", T0 + 3)
        .await
        .unwrap();
    assert_eq!(r.promoted, 0);
    run(&store, "up", &[]).await;
    let r = promote::promote_waiting(store.as_ref(), &g, "all", T0 + 3)
        .await
        .unwrap();
    assert_eq!(r.promoted, 1);
    assert_eq!(state(&store, "all", "x").await, TaskState::Pending);
}

pub async fn a_published_graph_holds_back_pending_tasks(store: SharedStore) {
    // Imported before any graph: every task pending.
    let plain = store_graph::empty_graph();
    for (step, id) in [("align", "S1"), ("call", "S1/chr1"), ("call", "S1/chr2")] {
        store
            .import_graph(&[TaskSpec::new(step, id, "true")], &plain, T0)
            .await
            .unwrap();
    }
    let claimed = store.claim(&req("call", "w"), T0).await.unwrap().unwrap();
    let g = genome();
    let held = promote::apply_graph(store.as_ref(), &g, T0 + 1, anamo::store::Fence::Unfenced)
        .await
        .unwrap();
    assert_eq!(held, 1, "the claimed task is not held back");
    let other = if claimed.task.id() == "S1/chr1" {
        "S1/chr2"
    } else {
        "S1/chr1"
    };
    assert_eq!(state(&store, "call", other).await, TaskState::Waiting);
    assert_eq!(
        state(&store, "call", claimed.task.id()).await,
        TaskState::Running
    );
    assert_eq!(state(&store, "align", "S1").await, TaskState::Pending);
    assert!(store
        .claim(&req("call", "w"), T0 + 2)
        .await
        .unwrap()
        .is_none());
    run(&store, "align", &[]).await;
    promote_all(&store, &g).await;
    assert_eq!(state(&store, "call", other).await, TaskState::Pending);
}

/// The README walkthrough's order: tasks imported before any graph (a `call` line names only
/// its sample), then the manifests' graph published. The held-back `call` task is expanded
/// over the scatter's items as an import under the graph would have done, and the pipeline
/// runs in order from there.
pub async fn tasks_imported_before_a_scatter_are_expanded(store: SharedStore) {
    let plain = store_graph::empty_graph();
    let imported = [
        ("merge", "all"),
        ("joint", "chr1"),
        ("call", "S1"),
        ("align", "S1"),
        ("qc", "S1"),
        ("qc", "S2/chr1"),
    ];
    for (step, id) in imported {
        store
            .import_graph(&[TaskSpec::new(step, id, "true")], &plain, T0)
            .await
            .unwrap();
    }
    // `qc`: scattered like `call`, without upstream steps.
    let mut g = genome();
    let mut qc = g.steps["call"].clone();
    qc.depends_on.clear();
    g.steps.insert("qc".into(), qc);
    let held = promote::apply_graph(store.as_ref(), &g, T0 + 1, anamo::store::Fence::Unfenced)
        .await
        .unwrap();
    assert_eq!(
        held, 4,
        "call, joint and merge wait for their upstream steps; qc/S1 is to be expanded"
    );
    let r = promote::promote_waiting(store.as_ref(), &g, "qc", T0 + 2)
        .await
        .unwrap();
    assert_eq!(r.expanded, 1);
    let qc: Vec<(String, TaskState)> = ["S1/chr1", "S1/chr2", "S2/chr1"]
        .iter()
        .map(|id| (id.to_string(), TaskState::Pending))
        .collect();
    assert_eq!(
        states(&store, "qc").await,
        qc,
        "expanded, and pending: no upstream"
    );
    let r = promote::promote_waiting(store.as_ref(), &g, "call", T0 + 2)
        .await
        .unwrap();
    assert_eq!((r.expanded, r.unfit, r.promoted), (1, 0, 0));
    use TaskState::*;
    let want: Vec<(String, TaskState)> =
        vec![("S1/chr1".into(), Waiting), ("S1/chr2".into(), Waiting)];
    assert_eq!(
        states(&store, "call").await,
        want,
        "S1 became one task per region"
    );
    let task = store.get("call", "S1/chr2").await.unwrap().unwrap();
    assert_eq!(task.spec.env["ANAMO_KEY_REGION"], "chr2");
    // Nothing runs before its upstream tasks.
    promote_all(&store, &g).await;
    for step in ["call", "joint", "merge"] {
        assert!(
            states(&store, step)
                .await
                .iter()
                .all(|(_, s)| *s == Waiting),
            "{step}: {:?}",
            states(&store, step).await
        );
    }
    for step in ["align", "call", "joint", "merge"] {
        promote_all(&store, &g).await;
        run(&store, step, &[]).await;
        assert!(
            states(&store, step)
                .await
                .iter()
                .all(|(_, s)| *s == Succeeded),
            "{step}: {:?}",
            states(&store, step).await
        );
    }
}
