//! Upkeep actions: scale-in protection follows the workers, registrations of gone workers are
//! tidied, and nothing of the kind is planned from an incomplete view.

use super::*;

fn upkeep(input: FleetInput) -> Vec<Action> {
    let plan = plan(
        &PlanInput {
            fleets: vec![input],
        },
        NOW,
    );
    plan.fleets[0]
        .actions
        .iter()
        .filter(|a| {
            matches!(
                a,
                Action::SetProtection { .. }
                    | Action::ForgetWorkers { .. }
                    | Action::RetireWorkers { .. }
            )
        })
        .cloned()
        .collect()
}

fn protected(mut i: Instance) -> Instance {
    i.protected = true;
    i
}

#[test]
fn protection_follows_busy_workers_on_providers_that_have_it() {
    let mut fin = input(
        0,
        1,
        vec![
            inst("i-busy", 30 * MIN),
            protected(inst("i-idle", 30 * MIN)),
        ],
        vec![worker("i-busy", 1, 0), worker("i-idle", 0, 0)],
    );
    assert!(
        upkeep(fin.clone()).is_empty(),
        "no protection: nothing to do"
    );
    fin.scale_in_protection = true;
    let actions = upkeep(fin.clone());
    let set: Vec<(Vec<String>, bool)> = actions
        .iter()
        .filter_map(|a| match a {
            Action::SetProtection { ids, protected, .. } => Some((ids.clone(), *protected)),
            _ => None,
        })
        .collect();
    assert_eq!(
        set,
        vec![
            (vec!["i-busy".to_string()], true),
            (vec!["i-idle".to_string()], false)
        ]
    );
    // An unreadable store must not unprotect busy instances.
    fin.step = Err("store down".into());
    assert!(upkeep(fin).is_empty());
}

#[test]
fn gone_workers_are_forgotten_and_silent_ones_retired() {
    let mut exited = worker("i-gone", 0, 0);
    exited.state = WorkerState::Gone;
    let mut silent = worker("i-1", 1, 0);
    silent.last_seen = NOW - 76 * SEC;
    let mut stale = worker("i-old", 0, 0);
    stale.last_seen = NOW - 11 * MIN;
    stale.state = WorkerState::Active;
    let fin = input(
        0,
        1,
        vec![inst("i-1", 30 * MIN)],
        vec![exited, silent, stale, worker("i-2", 0, 0)],
    );
    let actions = upkeep(fin.clone());
    assert_eq!(actions.len(), 2, "{actions:?}");
    match &actions[0] {
        Action::ForgetWorkers { workers, .. } => {
            assert_eq!(
                workers,
                &vec!["w-i-gone".to_string(), "w-i-old".to_string()]
            )
        }
        a => panic!("expected ForgetWorkers, got {a:?}"),
    }
    match &actions[1] {
        Action::RetireWorkers {
            workers, reason, ..
        } => {
            assert_eq!(workers, &vec!["w-i-1".to_string()]);
            assert!(reason.contains("75 s"), "{reason}");
        }
        a => panic!("expected RetireWorkers, got {a:?}"),
    }
    // A failed listing: every worker would look instance-less; nothing is forgotten.
    let mut failed = fin;
    failed.instances = Err("throttled".into());
    assert!(upkeep(failed).is_empty());
}
