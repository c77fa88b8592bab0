use super::*;
use crate::controller::sample_view::Samples;
use crate::model::TaskSpec;
use crate::pipeline::StepNode;
use TaskState::*;

fn graph() -> Graph {
    let mut g = Graph {
        sample_part: "sample".into(),
        ..Default::default()
    };
    let mut call = StepNode::plain();
    call.key = vec!["sample".into(), "region".into()];
    g.steps.insert("call".into(), call);
    g
}

fn entered(id: &str, at: Millis) -> Entered {
    Entered {
        id: id.into(),
        at,
        reason: None,
    }
}

fn ids(v: &[(&str, TaskState)]) -> Vec<(String, TaskState)> {
    v.iter().map(|(i, s)| (i.to_string(), *s)).collect()
}

fn counts(v: &[(TaskState, u64)]) -> StepCounts {
    let mut c = StepCounts {
        step: "call".into(),
        ..Default::default()
    };
    for (s, n) in v {
        c.set(*s, *n);
    }
    c
}

type Row = (Option<String>, Vec<(TaskState, u64)>);

/// A step's tally with its cells.
struct Step {
    t: StepTally,
    names: Samples,
    col: Column,
}

impl Step {
    fn apply(&mut self, changes: Changes, counts: Option<StepCounts>) -> Vec<String> {
        let g = graph();
        let mut sink = CellSink {
            names: &mut self.names,
            column: &mut self.col,
            graph: &g,
            step: "call",
        };
        self.t.apply(&mut sink, changes, counts)
    }
}

/// The cells by sample, as sorted `(state, n)` lists.
fn view(s: &Step) -> Vec<Row> {
    let mut v: Vec<Row> = s
        .col
        .cells()
        .map(|(n, c)| {
            let name = Some(s.names.name(n).to_string());
            (name, c.counts().into_iter().collect())
        })
        .collect();
    if !s.col.none().counts().is_empty() {
        v.push((None, s.col.none().counts().into_iter().collect()));
    }
    v.sort();
    v
}

const T: Millis = 1_000_000;

/// S1: two waiting, one pending, one succeeded at T; S2: one running, one pending.
fn first_read() -> Step {
    let read = FullRead {
        unfinished: ids(&[
            ("S1/a", Waiting),
            ("S1/b", Waiting),
            ("S1/c", Pending),
            ("S2/a", Running),
            ("S2/b", Pending),
        ]),
        finals: vec![(Succeeded, vec![entered("S1/d", T)])],
    };
    let (mut names, mut col) = (Samples::default(), Column::default());
    let g = graph();
    let mut sink = CellSink {
        names: &mut names,
        column: &mut col,
        graph: &g,
        step: "call",
    };
    let t = StepTally::from_full(&mut sink, read, (None, None), T).0;
    Step { t, names, col }
}

#[test]
fn a_full_read_counts_every_task_by_sample() {
    let t = first_read();
    assert_eq!(
        view(&t),
        [
            (
                Some("S1".into()),
                vec![(Waiting, 2), (Pending, 1), (Succeeded, 1)]
            ),
            (Some("S2".into()), vec![(Pending, 1), (Running, 1)]),
        ]
    );
}

#[test]
fn changes_merge_into_the_view_and_the_margin_counts_nothing_twice() {
    let mut t = first_read();
    // S2/a succeeded, S1/c is claimed; S1/d (already counted) is read again in the margin.
    let changes = Changes {
        live: vec![(Running, vec!["S1/c".into()])],
        finals: vec![(
            Succeeded,
            vec![entered("S1/d", T), entered("S2/a", T + 5_000)],
        )],
    };
    assert!(t.apply(changes, None).is_empty());
    assert_eq!(
        view(&t),
        [
            (
                Some("S1".into()),
                vec![(Waiting, 2), (Running, 1), (Succeeded, 1)]
            ),
            (Some("S2".into()), vec![(Pending, 1), (Succeeded, 1)]),
        ]
    );
    // The next read starts a margin before the newest entry; an entry that arrives late
    // (an older time than one already seen, within the margin) is counted once.
    let Refresh::Changes(plan) = t.t.plan(None, T + 6_000) else {
        panic!("no full read is due");
    };
    assert!(plan.finals.contains(&(Succeeded, T + 5_000 - SKEW_MARGIN)));
    let late = Changes {
        live: vec![],
        finals: vec![(
            Succeeded,
            vec![
                entered("S1/a", T + 1_000),
                entered("S2/a", T + 5_000),
                entered("S1/a", T + 1_000),
            ],
        )],
    };
    t.apply(late, None);
    assert_eq!(
        view(&t)[0],
        (Some("S1".into()), vec![(Waiting, 2), (Succeeded, 2)]),
        "S1/a counted once; running emptied (no live read); the 2 left were 2 waiting at the \
         full read, so they show as waiting until the next one"
    );
}

#[test]
fn counters_decide_what_is_read_and_when_all_is_read_again() {
    let mut t = first_read();
    let before = counts(&[(Waiting, 2), (Pending, 2), (Running, 1), (Succeeded, 1)]);
    t.apply(Changes::default(), Some(before.clone()));
    // Read again at the refresh after a change (the index may show an entry after its
    // counter): after the first counters, the final states that have tasks.
    let Refresh::Changes(plan) = t.t.plan(Some(&before), T + 1) else {
        panic!("no full read is due");
    };
    assert_eq!(plan.finals, [(Succeeded, T - SKEW_MARGIN)], "{plan:?}");
    t.apply(Changes::default(), Some(before.clone()));
    // One completion: succeeded read from the margin, running not read (none left).
    let after = counts(&[(Waiting, 2), (Pending, 2), (Succeeded, 2)]);
    assert_eq!(
        t.t.plan(Some(&after), T + 1),
        Refresh::Changes(ChangesPlan {
            live: vec![],
            finals: vec![(Succeeded, T - SKEW_MARGIN)],
        })
    );
    // A requeue (succeeded went down) or an import (the total moved): everything.
    let requeued = counts(&[(Waiting, 2), (Pending, 3), (Running, 1)]);
    assert_eq!(t.t.plan(Some(&requeued), T + 1), Refresh::Full);
    let imported = counts(&[(Waiting, 3), (Pending, 2), (Running, 1), (Succeeded, 1)]);
    assert_eq!(t.t.plan(Some(&imported), T + 1), Refresh::Full);
    // Nothing seen changed, but the interval is up.
    assert_eq!(t.t.plan(Some(&before), T + REREAD_EVERY), Refresh::Full);
}

#[test]
fn new_failures_are_counted_and_the_newest_own_ones_fetched() {
    let mut t = first_read();
    let dependency = Entered {
        reason: Some("dependency failed: align/S1".into()),
        ..entered("S1/a", T + 1)
    };
    let changes = Changes {
        live: vec![],
        finals: vec![(
            Failed,
            vec![entered("S1/b", T + 2), dependency, entered("S2/b", T + 3)],
        )],
    };
    let fetch = t.apply(changes, None);
    assert_eq!(fetch, ["S2/b", "S1/b"], "own failures, newest first");
    let task = |id: &str, state, at| {
        let mut task = Task::new(TaskSpec::new("call", id, "true"), 0);
        (task.state, task.updated_at, task.attempts) = (state, at, 1);
        task
    };
    // S1/b was requeued meanwhile: not listed.
    t.t.add_failed(
        &graph(),
        &[task("S2/b", Failed, T + 3), task("S1/b", Pending, T + 4)],
    );
    let (total, dependency, newest) = t.t.failed(&t.col);
    assert_eq!((total, dependency), (3, 1));
    assert_eq!(newest.len(), 1);
    assert_eq!(
        (newest[0].id.as_str(), newest[0].sample.as_deref()),
        ("S2/b", Some("S2"))
    );
}
