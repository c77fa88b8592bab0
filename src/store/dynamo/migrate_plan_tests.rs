use super::*;
use crate::store::dynamo::layout::{shard_of, state_shard_pk};

/// A task item as docs/dynamodb-table.md (layout 1) describes it.
fn v1_task(state: TaskState) -> Item {
    let mut item = Item::from([
        (PK.to_string(), s("T#align#S1")),
        (STEP.to_string(), s("align")),
        (ID.to_string(), s("S1")),
        (STATE.to_string(), s(state.as_str())),
        (CREATED_AT.to_string(), n(1_000)),
        (UPDATED_AT.to_string(), n(2_000)),
        (v1::PK.to_string(), s(format!("S#align#{}", state.as_str()))),
        (v1::SK.to_string(), s(v1_sk(state))),
    ]);
    if state == TaskState::Running {
        item.insert(LEASE_OWNER.to_string(), s("w1"));
        item.insert(LEASE_TOKEN.to_string(), s("tok"));
        item.insert(LEASE_EXPIRES_AT.to_string(), n(9_000));
    }
    item
}

/// `gsi1sk` as layout 1 writes it (a lease expiring at 9,000, a change at 2,000).
fn v1_sk(state: TaskState) -> String {
    match state {
        TaskState::Pending => "2147483647#0000000002000#S1".into(),
        TaskState::Running => "0000000009000#S1".into(),
        _ => "0000000002000#S1".into(),
    }
}

/// Before the leases of [`v1_task`] expire.
const NOW: Millis = 5_000;

fn four(_: &str) -> Option<u32> {
    Some(4)
}

fn fix_of(item: &Item) -> Fix {
    match plan(item, four, NOW).unwrap() {
        Plan::Fix(f) => f,
        other => panic!("expected a fix, got {other:?}"),
    }
}

fn apply(item: &Item, fix: &Fix) -> Item {
    fix.apply(item)
}

#[test]
fn a_pending_task_gets_its_sharded_keys_and_loses_the_old_ones() {
    let item = v1_task(TaskState::Pending);
    let fix = fix_of(&item);
    let shard = shard_of("S1", 4);
    assert!(fix.set.contains(&(
        INDEX_PK,
        s(state_shard_pk("align", TaskState::Pending, shard))
    )));
    assert!(fix
        .set
        .contains(&(INDEX_SK, s("2147483647#0000000002000#S1"))));
    assert_eq!(fix.remove, vec![v1::PK, v1::SK]);
    assert!(fix.unchanged.contains(&(STATE, Some(s("pending")))));
    assert!(fix.unchanged.contains(&(v1::SK, item.get(v1::SK).cloned())));
    let after = apply(&item, &fix);
    assert_eq!(
        plan(&after, four, NOW).unwrap(),
        Plan::Done,
        "a second pass writes nothing"
    );
    assert_eq!(facts(&after).unwrap(), ItemFacts::default());
}

#[test]
fn a_layout1_lease_is_marked_until_it_ends() {
    let item = v1_task(TaskState::Running);
    assert!(facts(&item).unwrap().layout1_lease);
    let fix = fix_of(&item);
    assert!(fix.set.contains(&(LAYOUT1_LEASE, s("tok"))));
    assert!(fix.set.contains(&(INDEX_SK, s("w1#S1"))));
    let after = apply(&item, &fix);
    // The layout-1 keys are gone, yet the lease is still known to be a layout-1 one.
    assert_eq!(plan(&after, four, NOW).unwrap(), Plan::Done);
    assert!(facts(&after).unwrap().layout1_lease);

    // Its worker completes it (layout 1 writes gsi1 keys again): the mark goes with the keys.
    let mut done = after.clone();
    done.insert(STATE.to_string(), s("succeeded"));
    done.insert(v1::PK.to_string(), s("S#align#succeeded"));
    done.insert(v1::SK.to_string(), s("0000000003000#S1"));
    done.insert(UPDATED_AT.to_string(), n(3_000));
    for k in [LEASE_OWNER, LEASE_TOKEN, LEASE_EXPIRES_AT] {
        done.remove(k);
    }
    let f = facts(&done).unwrap();
    assert!(f.layout1_keys && !f.layout1_lease);
    let fix = fix_of(&done);
    assert!(fix.remove.contains(&LAYOUT1_LEASE));
    assert_eq!(plan(&apply(&done, &fix), four, NOW).unwrap(), Plan::Done);
}

#[test]
fn a_layout2_claim_is_not_a_layout1_lease() {
    // Claimed by a layout-2 worker after the first pass: no gsi1 keys, g2 keys written.
    let mut item = apply(
        &v1_task(TaskState::Pending),
        &fix_of(&v1_task(TaskState::Pending)),
    );
    item.insert(STATE.to_string(), s("running"));
    item.insert(LEASE_OWNER.to_string(), s("w2"));
    item.insert(LEASE_TOKEN.to_string(), s("t2"));
    item.insert(LEASE_EXPIRES_AT.to_string(), n(9_000));
    let shard = shard_of("S1", 4);
    item.insert(
        INDEX_PK.to_string(),
        s(state_shard_pk("align", TaskState::Running, shard)),
    );
    item.insert(INDEX_SK.to_string(), s("w2#S1"));
    assert_eq!(facts(&item).unwrap(), ItemFacts::default());
    assert_eq!(plan(&item, four, NOW).unwrap(), Plan::Done);
}

#[test]
fn stale_layout1_keys_of_a_layout2_change_are_not_a_lease() {
    // A layout-1 running task, completed and re-claimed by layout 2 before migrate saw it:
    // gsi1pk still says running, but gsi1sk does not follow the new lease's expiry.
    let mut item = v1_task(TaskState::Running);
    item.insert(LEASE_TOKEN.to_string(), s("t2"));
    item.insert(LEASE_EXPIRES_AT.to_string(), n(12_345));
    assert!(!facts(&item).unwrap().layout1_lease);
    assert!(facts(&item).unwrap().layout1_keys);
}

#[test]
fn a_task_of_a_step_without_shards_waits_for_its_registration() {
    let item = v1_task(TaskState::Waiting);
    assert_eq!(
        plan(&item, |_| None, NOW).unwrap(),
        Plan::NeedsStep("align".into())
    );
}

#[test]
fn registry_items_keep_their_keys_under_the_new_names() {
    let item = Item::from([
        (PK.to_string(), s("W#w1")),
        (v1::PK.to_string(), s(WORKERS_GSI)),
        (v1::SK.to_string(), s("align#w1")),
    ]);
    let fix = fix_of(&item);
    assert_eq!(
        fix.set,
        vec![(INDEX_PK, s(WORKERS_GSI)), (INDEX_SK, s("align#w1"))]
    );
    assert_eq!(plan(&apply(&item, &fix), four, NOW).unwrap(), Plan::Done);
    let leader = Item::from([(PK.to_string(), s("LEADER#c"))]);
    assert_eq!(plan(&leader, four, NOW).unwrap(), Plan::Done);
}

#[test]
fn a_malformed_task_is_an_error_naming_it() {
    let mut item = v1_task(TaskState::Pending);
    item.insert(STATE.to_string(), s("bogus"));
    let err = plan(&item, four, NOW).unwrap_err().to_string();
    assert!(err.contains("T#align#S1") && err.contains("state"), "{err}");
}

#[test]
fn an_expired_layout1_lease_is_requeued_with_layout2_keys() {
    let mut item = v1_task(TaskState::Running);
    item.insert(ATTEMPTS.to_string(), n(1));
    let Plan::Fix(fix) = plan(&item, four, 10_000).unwrap() else {
        panic!("expected a requeue");
    };
    assert!(fix.set.contains(&(STATE, s("pending"))));
    assert!(fix.unchanged.contains(&(LEASE_TOKEN, Some(s("tok")))));
    assert!(fix.unchanged.contains(&(LEASE_EXPIRES_AT, Some(n(9_000)))));
    let after = apply(&item, &fix);
    assert_eq!(facts(&after).unwrap(), ItemFacts::default());
    assert_eq!(plan(&after, four, 10_000).unwrap(), Plan::Done);
    // On its last attempt it fails, as layout 1's requeue would have it.
    item.insert(ATTEMPTS.to_string(), n(3));
    let Plan::Fix(fix) = plan(&item, four, 10_000).unwrap() else {
        panic!("expected a requeue");
    };
    assert!(fix.set.contains(&(STATE, s("failed"))));
}
