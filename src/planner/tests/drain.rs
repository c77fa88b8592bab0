//! Packing the tail (`drain.rs`): the emptiest busy instances are asked to drain when the
//! others' free slots cover the pending and expected tasks; marks not acted on are taken back
//! when pending tasks need the slots; nothing busy is ever terminated.

use std::collections::BTreeSet;

use proptest::prelude::*;

use super::*;
use crate::planner::estimate::RecentTasks;

/// One worker of `slots` slots per instance (i-0 the oldest), booted in about 90 s, tasks of 10
/// minutes, and 32 arrivals half an hour ago (about 1.5 expected within a boot: the open
/// instances must keep the pending count plus 2 free).
fn fleet(pending: u64, busy: &[(u32, u32)], marks: &[bool], states: &[WorkerState]) -> FleetInput {
    let up = 3 * 60 * MIN + 90 * SEC;
    let instances = (0..busy.len())
        .map(|k| inst(&format!("i-{k}"), up - k as Millis * SEC))
        .collect();
    let workers = busy
        .iter()
        .enumerate()
        .map(|(k, &(slots, b))| WorkerInfo {
            slots,
            drain_requested: marks.get(k).copied().unwrap_or(false),
            state: states.get(k).copied().unwrap_or(WorkerState::Active),
            ..worker(&format!("i-{k}"), b, 30 * SEC)
        })
        .collect();
    let running = busy.iter().map(|&(_, b)| u64::from(b)).sum();
    let mut i = input(pending, running, instances, workers);
    i.policy.slots_per_instance = busy.first().map_or(2, |b| b.0);
    i.policy.tasks_per_instance = i.policy.slots_per_instance;
    i.policy.max_instances = 10;
    if let Ok(view) = i.step.as_mut() {
        view.recent = RecentTasks {
            durations: vec![10 * MIN; 8],
            runnable_at: (0..32).map(|k| NOW - 30 * MIN - k * SEC).collect(),
            ..Default::default()
        };
    }
    i
}

fn planned(input: FleetInput) -> (FleetPlan, String) {
    let plan = plan(
        &PlanInput {
            fleets: vec![input],
        },
        NOW,
    );
    let text = plan.describe();
    (plan.fleets[0].clone(), text)
}

/// The workers asked to drain (`true`) or taken back (`false`).
fn drains(fp: &FleetPlan, drain: bool) -> Vec<String> {
    fp.actions
        .iter()
        .flat_map(|a| match a {
            Action::DrainWorkers {
                workers, drain: d, ..
            } if *d == drain => workers.clone(),
            _ => Vec::new(),
        })
        .collect()
}

#[test]
fn the_emptiest_busy_instances_drain_when_the_rest_has_room() {
    // Four 8-slot instances, 1, 5, 1 and 7 busy (18 free); nothing pending, 1.5 tasks
    // expected within a boot, and each busy slot frees 0.15 times within a boot (tasks of
    // 10 minutes): the two with one busy slot go first, the oldest first, then the one with 5
    // busy; the full one stays open (1 free slot and 1.05 completions cover the 1.5).
    let (fp, text) = planned(fleet(0, &[(8, 1), (8, 5), (8, 1), (8, 7)], &[], &[]));
    assert_eq!(drains(&fp, true), ["w-i-0", "w-i-2", "w-i-1"], "{text}");
    assert!(
        text.contains("draining the emptiest busy instances"),
        "{text}"
    );
    assert!(fp.terminated_ids().is_empty(), "{text}");
}

#[test]
fn pending_tasks_that_need_the_slots_keep_every_instance_open() {
    // 18 free slots, 17 pending and 1.5 expected: draining the full one (1 free) would leave
    // the 17 free slots the pending tasks need now, but none to spare: nothing drains.
    let (fp, text) = planned(fleet(17, &[(8, 1), (8, 5), (8, 1), (8, 7)], &[], &[]));
    assert!(drains(&fp, true).is_empty(), "{text}");
    // With 16 pending, it drains: the pending fit in the others' free slots now, one to spare.
    let (fp, text) = planned(fleet(16, &[(8, 1), (8, 5), (8, 1), (8, 7)], &[], &[]));
    assert_eq!(drains(&fp, true), ["w-i-3"], "{text}");
}

#[test]
fn what_busy_slots_free_within_a_boot_counts_for_the_expected_arrivals() {
    // Three 8-slot instances with 7 busy each, nothing pending, 1.5 tasks expected within a
    // boot; each busy slot frees 0.15 times in it. Two drain: the last one's free slot and
    // the 1.05 completions of its 7 busy slots cover the 1.5 (free slots alone would not).
    let (fp, text) = planned(fleet(0, &[(8, 7), (8, 7), (8, 7)], &[], &[]));
    assert_eq!(drains(&fp, true), ["w-i-0", "w-i-1"], "{text}");
    // 4-slot instances with 3 busy: the one left open would take 1 + 0.45 within a boot,
    // short of the 1.5 expected, so neither drains.
    let (fp, text) = planned(fleet(0, &[(4, 3), (4, 3)], &[], &[]));
    assert!(drains(&fp, true).is_empty(), "{text}");
}

#[test]
fn without_an_arrival_estimate_nothing_drains() {
    let mut i = fleet(0, &[(8, 1), (8, 5)], &[], &[]);
    if let Ok(view) = i.step.as_mut() {
        view.recent.runnable_at.clear();
    }
    let (fp, text) = planned(i);
    assert!(
        fp.actions.iter().all(|a| a.kind() != "drain_workers"),
        "{text}"
    );
}

#[test]
fn a_mark_not_acted_on_is_taken_back_when_pending_tasks_need_its_slots() {
    // i-0 and i-2 were asked to drain and have not read it yet; 4 tasks are pending and the
    // open i-1 has 3 free slots: the one with most free slots (i-0, 7) is taken back.
    let marks = [true, false, true];
    let (fp, text) = planned(fleet(4, &[(8, 1), (8, 5), (8, 2)], &marks, &[]));
    assert_eq!(drains(&fp, false), ["w-i-0"], "{text}");
    assert!(drains(&fp, true).is_empty(), "{text}");
    // Already draining (the worker acted on it): not taken back; the backlog launches instead.
    let states = [
        WorkerState::Draining,
        WorkerState::Active,
        WorkerState::Draining,
    ];
    let (fp, text) = planned(fleet(4, &[(8, 1), (8, 5), (8, 2)], &marks, &states));
    assert!(drains(&fp, false).is_empty(), "{text}");
}

#[test]
fn a_drained_worker_that_is_idle_is_terminated_and_a_busy_one_is_not() {
    let states = [
        WorkerState::Draining,
        WorkerState::Draining,
        WorkerState::Active,
    ];
    let (fp, text) = planned(fleet(0, &[(8, 0), (8, 3), (8, 5)], &[true, true], &states));
    assert_eq!(fp.terminated_ids(), ["i-0"], "{text}");
}

/// Per instance (one worker each): busy slots, marked, draining.
type ArbWorker = (u32, bool, bool);

/// Pending, more pending, the workers, slots per worker, seconds between recent arrivals.
fn arb_fleet() -> impl Strategy<Value = (u64, bool, Vec<ArbWorker>, u32, i64)> {
    (
        0u64..20,
        any::<bool>(),
        proptest::collection::vec(
            (0u32..5, any::<bool>(), proptest::bool::weighted(0.2)),
            1..8,
        ),
        1u32..5,
        1i64..600,
    )
}

proptest! {
    /// Never drains while the pending tasks need the open slots; drains only open busy
    /// instances, takes back only marks not acted on, and never terminates a busy instance.
    #[test]
    fn drains_never_take_slots_pending_tasks_need(
        (pending, more, ws, slots, gap_s) in arb_fleet()
    ) {
        let busy: Vec<(u32, u32)> = ws.iter().map(|&(b, _, _)| (slots, b.min(slots))).collect();
        let marks: Vec<bool> = ws.iter().map(|w| w.1).collect();
        let states: Vec<WorkerState> = ws
            .iter()
            .map(|w| if w.2 { WorkerState::Draining } else { WorkerState::Active })
            .collect();
        let mut i = fleet(pending, &busy, &marks, &states);
        if let Ok(view) = i.step.as_mut() {
            view.backlog.more_pending = more;
            view.recent.runnable_at = (0..32).map(|k| NOW - k * gap_s * SEC).collect();
        }
        let (fp, text) = planned(i);
        let drained: BTreeSet<String> = drains(&fp, true).into_iter().collect();
        let taken_back: BTreeSet<String> = drains(&fp, false).into_iter().collect();
        prop_assert!(drained.is_empty() || taken_back.is_empty(), "{}", text);
        let mut open_free = 0u64;
        for (k, &(_, b)) in busy.iter().enumerate() {
            let id = format!("w-i-{k}");
            let open = b > 0 && !marks[k] && states[k] == WorkerState::Active;
            if drained.contains(&id) {
                prop_assert!(open, "drained a worker that was not open: {}", text);
            } else if open {
                open_free += u64::from(slots - b);
            }
            if taken_back.contains(&id) {
                prop_assert!(marks[k] && states[k] == WorkerState::Active, "{}", text);
            }
            if b > 0 {
                prop_assert!(!fp.terminated_ids().contains(&format!("i-{k}").as_str()), "{}", text);
            }
        }
        if !drained.is_empty() {
            prop_assert!(pending + u64::from(more) <= open_free, "{}", text);
        }
    }
}
