//! The graph's pure rules: keys, selectors, scatter and the verdict on waiting tasks.

use proptest::prelude::*;

use super::*;
use crate::model::{TaskSpec, TaskState};

fn key(parts: &[&str]) -> Vec<String> {
    parts.iter().map(|s| s.to_string()).collect()
}

fn node(k: &[&str], deps: &[&str]) -> StepNode {
    StepNode {
        key: key(k),
        depends_on: deps.iter().map(|d| Edge::to(*d)).collect(),
        scatter: None,
        defaults: TaskDefaults::default(),
    }
}

/// align [sample] → call [sample, region] (scatter) → joint [region] → merge [].
fn genome() -> Graph {
    let mut g = Graph {
        sample_part: DEFAULT_SAMPLE_PART.into(),
        steps: Default::default(),
    };
    g.steps.insert("align".into(), node(&["sample"], &[]));
    let mut call = node(&["sample", "region"], &["align"]);
    call.scatter = Some(Scatter {
        part: "region".into(),
        items: vec!["chr1".into(), "chr2".into(), "chrX".into()],
    });
    g.steps.insert("call".into(), call);
    g.steps.insert("joint".into(), node(&["region"], &["call"]));
    g.steps.insert("merge".into(), node(&[], &["joint"]));
    g
}

fn up(id: &str, state: TaskState) -> UpstreamTask {
    UpstreamTask {
        id: id.into(),
        state,
    }
}

fn verdict(dep: &Dependency, upstream: &[UpstreamTask]) -> Readiness {
    let matched: Vec<UpstreamTask> = upstream
        .iter()
        .filter(|t| dep.selector.matches(&t.id))
        .cloned()
        .collect();
    decide(&[EdgeView {
        dependency: dep,
        upstream: &matched,
    }])
}

#[test]
fn one_edges_join_on_the_shared_key() {
    let g = genome();
    let deps = g
        .dependencies(&TaskSpec::new("call", "NA12878/chr1", "true"))
        .unwrap();
    assert_eq!(deps.len(), 1);
    assert_eq!(deps[0].selector.exact_id().as_deref(), Some("NA12878"));
    assert!(deps[0].selector.matches("NA12878"));
    assert!(!deps[0].selector.matches("NA12879"));
}

#[test]
fn gathers_select_every_upstream_task_that_agrees() {
    let g = genome();
    let deps = g
        .dependencies(&TaskSpec::new("joint", "chr1", "true"))
        .unwrap();
    let sel = &deps[0].selector;
    assert!(sel.is_gather());
    assert_eq!(sel.describe(), "call/*/chr1");
    assert!(sel.matches("NA1/chr1"));
    assert!(!sel.matches("NA1/chr10"));
    assert!(!sel.matches("NA1/chr2"));
    let all = g
        .dependencies(&TaskSpec::new("merge", "all", "true"))
        .unwrap();
    assert!(all[0].selector.matches("chr1") && all[0].selector.matches("chrX"));
    assert_eq!(all[0].selector.prefix(), "");
}

#[test]
fn ids_that_miss_key_parts_are_named() {
    let g = genome();
    let e = g
        .dependencies(&TaskSpec::new("call", "NA12878", "true"))
        .unwrap_err();
    assert!(e.message.contains("sample/region"), "{}", e.message);
}

#[test]
fn a_tasks_own_depends_on_still_means_the_same_id() {
    let g = Graph::default();
    let mut t = TaskSpec::new("qc", "S1", "true");
    t.depends_on = vec!["align".into()];
    assert!(g.must_wait(&t));
    let deps = g.dependencies(&t).unwrap();
    assert_eq!(deps[0].selector.exact_id().as_deref(), Some("S1"));
    assert!(!g.must_wait(&TaskSpec::new("qc", "S1", "true")));
}

#[test]
fn scatter_expands_and_keeps_expanded_ids() {
    let g = genome();
    let tasks = g.scatter(TaskSpec::new("call", "NA1", "call.sh")).unwrap();
    let ids: Vec<&str> = tasks.iter().map(|t| t.id.as_str()).collect();
    assert_eq!(ids, ["NA1/chr1", "NA1/chr2", "NA1/chrX"]);
    assert_eq!(tasks[2].env["ANAMO_KEY_REGION"], "chrX");
    let again = g.scatter(tasks[0].clone()).unwrap();
    assert_eq!(again, vec![tasks[0].clone()]);
    let plain = g.scatter(TaskSpec::new("align", "NA1", "x")).unwrap();
    assert_eq!(plain.len(), 1);
}

#[test]
fn samples_and_key_env() {
    let g = genome();
    assert_eq!(g.sample_of("call", "NA1/chr2"), Some("NA1"));
    assert_eq!(g.sample_of("align", "NA1"), Some("NA1"));
    assert_eq!(g.sample_of("joint", "chr2"), None);
    assert_eq!(g.sample_of("undeclared", "S7"), Some("S7"));
    assert_eq!(
        g.key_env("call", "NA1/chr2"),
        vec![
            ("ANAMO_KEY_SAMPLE".to_string(), "NA1".to_string()),
            ("ANAMO_KEY_REGION".to_string(), "chr2".to_string())
        ]
    );
}

#[test]
fn one_edge_verdicts() {
    let g = genome();
    let dep = &g
        .dependencies(&TaskSpec::new("call", "A/chr1", "x"))
        .unwrap()[0];
    assert_eq!(verdict(dep, &[]), Readiness::Wait);
    assert_eq!(
        verdict(dep, &[up("A", TaskState::Running)]),
        Readiness::Wait
    );
    assert_eq!(
        verdict(dep, &[up("A", TaskState::Succeeded)]),
        Readiness::Ready
    );
    assert!(
        matches!(verdict(dep, &[up("A", TaskState::Failed)]), Readiness::Fail(r) if r.contains("align/A"))
    );
    assert!(matches!(
        verdict(dep, &[up("A", TaskState::Cancelled)]),
        Readiness::Cancel(_)
    ));
}

#[test]
fn gather_verdicts_follow_the_failure_rule() {
    let mut g = genome();
    let dep = g
        .dependencies(&TaskSpec::new("joint", "chr1", "x"))
        .unwrap()
        .remove(0);
    let done = [
        up("A/chr1", TaskState::Succeeded),
        up("B/chr1", TaskState::Succeeded),
        up("B/chr2", TaskState::Running),
    ];
    assert_eq!(verdict(&dep, &done), Readiness::Ready);
    let late = [done[0].clone(), up("C/chr1", TaskState::Pending)];
    assert_eq!(verdict(&dep, &late), Readiness::Wait);
    let dropped = [done[0].clone(), up("C/chr1", TaskState::Cancelled)];
    assert_eq!(verdict(&dep, &dropped), Readiness::Ready);
    let failed = [done[0].clone(), up("C/chr1", TaskState::Failed)];
    assert!(matches!(verdict(&dep, &failed), Readiness::Fail(_)));

    let joint = g.steps.get_mut("joint").unwrap();
    joint.depends_on[0].on_failure = OnFailure::Continue;
    joint.depends_on[0].min_succeeded = Some(0.5);
    let dep = g
        .dependencies(&TaskSpec::new("joint", "chr1", "x"))
        .unwrap()
        .remove(0);
    assert_eq!(verdict(&dep, &failed), Readiness::Ready);
    let mostly_failed = [
        done[0].clone(),
        up("C/chr1", TaskState::Failed),
        up("D/chr1", TaskState::Failed),
    ];
    assert!(matches!(verdict(&dep, &mostly_failed), Readiness::Fail(_)));
    assert_eq!(verdict(&dep, &[]), Readiness::Wait);
}

#[test]
fn retry_delay_doubles_caps_and_jitters_within_bounds() {
    let d = RetryDelay {
        initial_ms: 1_000,
        max_ms: 60_000,
    };
    assert_eq!(d.base_ms(1), 1_000);
    assert_eq!(d.base_ms(3), 4_000);
    assert_eq!(d.base_ms(40), 60_000);
    assert_eq!(d.jittered_ms(3, 0.0), 2_000);
    assert_eq!(d.jittered_ms(3, 1.0), 4_000);
}

#[test]
fn graph_order_puts_upstream_first() {
    let g = genome();
    assert_eq!(g.in_order(), ["align", "call", "joint", "merge"]);
    assert_eq!(g.dependents("call"), ["joint"]);
}

fn state() -> impl Strategy<Value = TaskState> {
    prop::sample::select(TaskState::ALL.to_vec())
}

proptest! {
    /// A gather is ready only when every selected upstream task is final and none failed
    /// under `onFailure: fail`; it never runs while one is unfinished.
    #[test]
    fn gathers_never_run_early(states in prop::collection::vec(state(), 0..30)) {
        let g = genome();
        let dep = g.dependencies(&TaskSpec::new("joint", "chr1", "x")).unwrap().remove(0);
        let upstream: Vec<UpstreamTask> = states
            .iter()
            .enumerate()
            .map(|(i, s)| up(&format!("S{i}/chr1"), *s))
            .collect();
        let v = verdict(&dep, &upstream);
        let unfinished = states.iter().any(|s| !s.is_final());
        if unfinished {
            prop_assert_eq!(v, Readiness::Wait);
        } else if v == Readiness::Ready {
            prop_assert!(states.iter().all(|s| *s != TaskState::Failed));
            prop_assert!(states.contains(&TaskState::Succeeded));
        }
    }

    /// Splitting an id into its key and selecting it again with every part fixed finds it.
    #[test]
    fn exact_selectors_match_their_own_id(a in "[a-z0-9]{1,8}", b in "[a-z0-9/]{1,8}") {
        let id = format!("{a}/{b}");
        let k = key(&["sample", "region"]);
        let parts = key::split(&k, "s", &id).unwrap();
        let sel = Selector::for_edge("s", &k, &k, &parts);
        prop_assert!(!sel.is_gather());
        prop_assert!(sel.matches(&id));
        prop_assert!(id.starts_with(&sel.prefix()));
    }
}
