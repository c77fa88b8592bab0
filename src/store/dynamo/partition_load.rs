//! The partition test of the layout: a simulated 10,000-instance × 16-slot fleet (160,000
//! slots) running 10-minute tasks of one step, with the worker's heartbeat every 20 s, drives
//! the writes the store would send — claim, heartbeat, completion, each built by the same pure
//! function the store sends, and the workers' registration refreshes — through the request
//! recorder on a simulated clock (nothing is sent), and asserts that no partition key is asked
//! for more than 1,000 write units per second (DynamoDB's per-partition limit, see
//! `docs/dynamodb-table.md`).

use std::collections::HashMap;

use aws_sdk_dynamodb::types::AttributeValue;

use super::capacity::item_keys;
use super::claims::claim_update;
use super::items::*;
use super::layout::{task_index_keys, TaskKeys, DEFAULT_SHARDS, INDEX_PK, INDEX_SK, PROJECTED};
use super::leases::{completion_update, heartbeat_update, Done};
use crate::clock::Millis;
use crate::model::{TaskSpec, TaskState, WorkerInfo, WorkerState};
use crate::store::requests::{Capacity, RequestRecorder};

const INSTANCES: u64 = 10_000;
const SLOTS: u64 = 16;
const TASK_SECS: u64 = 600;
const HEARTBEAT_SECS: u64 = 20;
const LIMIT: u64 = 1_000;
const STEP: &str = "align";

/// DynamoDB's size of an attribute value (strings by UTF-8 length, numbers about one byte per
/// two digits plus one, lists and maps 3 bytes plus their elements and one byte each).
fn value_size(v: &AttributeValue) -> usize {
    match v {
        AttributeValue::S(s) => s.len(),
        AttributeValue::N(n) => n.len().div_ceil(2) + 1,
        AttributeValue::L(l) => 3 + l.iter().map(|x| value_size(x) + 1).sum::<usize>(),
        AttributeValue::M(m) => {
            3 + m
                .iter()
                .map(|(k, x)| k.len() + value_size(x) + 1)
                .sum::<usize>()
        }
        _ => 1,
    }
}

fn item_size(item: &Item) -> usize {
    item.iter().map(|(k, v)| k.len() + value_size(v)).sum()
}

/// A running task's item as a claim leaves it (a typical genomics task line).
fn running_item(id: &str, owner: &str) -> Item {
    let mut spec = TaskSpec::new(STEP, id, format!("bwa mem ref.fa {id}.fq > {id}.sam"));
    spec.args = vec![format!("{id}.fq")];
    let mut item = new_task_item(&spec, TaskState::Pending, 1_700_000_000_000, DEFAULT_SHARDS);
    let (g2pk, g2sk) = task_index_keys(&TaskKeys {
        step: STEP,
        id,
        state: TaskState::Running,
        priority: 0,
        updated_at: 1_700_000_000_000,
        retry_at: 0,
        lease_owner: Some(owner),
        shards: DEFAULT_SHARDS,
    });
    for (k, v) in [
        (INDEX_PK, s(g2pk)),
        (INDEX_SK, s(g2sk)),
        (STATE, s("running")),
        (LEASE_OWNER, s(owner)),
        (LEASE_TOKEN, s("0123456789abcdef0123456789abcdef")),
        (LEASE_EXPIRES_AT, n(1_700_000_060_000i64)),
        (ATTEMPTS, n(3)),
        (REASON, s("lease expired on attempt 2 of 3")),
    ] {
        item.insert(k.to_string(), v);
    }
    item
}

/// The index entry of an item: its keys and the projected attributes.
fn index_entry(item: &Item) -> Item {
    item.iter()
        .filter(|(k, _)| {
            [PK, INDEX_PK, INDEX_SK].contains(&k.as_str()) || PROJECTED.contains(&k.as_str())
        })
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect()
}

fn worker(i: u64) -> WorkerInfo {
    WorkerInfo {
        worker_id: format!("i-{i:017x}"),
        step: STEP.into(),
        instance_id: Some(format!("i-{i:017x}")),
        slots: SLOTS as u32,
        busy_slots: SLOTS as u32,
        started_at: 1_700_000_000_000,
        last_seen: 1_700_000_000_000,
        last_busy_at: 1_700_000_000_000,
        state: WorkerState::Active,
        stop_reason: None,
        drain_requested: false,
    }
}

/// The keys one task's claim, heartbeats and completion write, from the store's own builders.
struct TaskWrites {
    claim: Vec<String>,
    heartbeat: Vec<String>,
    complete: Vec<String>,
}

fn task_writes(slot: u64, task: u64, now: Millis) -> TaskWrites {
    let id = format!("NA{slot:06}-{task}");
    let pk = task_pk(STEP, &id);
    let owner = format!("i-{:017x}", slot / SLOTS);
    let token = "0123456789abcdef0123456789abcdef";
    let claim = claim_update(STEP, &owner, &id, token, now + 60_000, now, DEFAULT_SHARDS);
    let heartbeat = heartbeat_update(token, now + 80_000);
    let done = Done {
        target: TaskState::Succeeded,
        priority: 0,
        retry_at: None,
        result: "{}".into(),
        reason: None,
    };
    let complete = completion_update(STEP, &id, token, done, now, DEFAULT_SHARDS);
    TaskWrites {
        claim: claim.written_keys(&pk),
        heartbeat: heartbeat.written_keys(&pk),
        complete: complete.written_keys(&pk),
    }
}

/// Writes by simulated second, each a list of partition keys (interned).
#[derive(Default)]
struct Schedule {
    names: Vec<String>,
    ids: HashMap<String, u32>,
    seconds: Vec<Vec<u32>>,
}

impl Schedule {
    fn at(&mut self, second: u64, keys: &[String]) {
        let second = second as usize;
        if self.seconds.len() <= second {
            self.seconds.resize_with(second + 1, Vec::new);
        }
        for key in keys {
            let id = match self.ids.get(key) {
                Some(&id) => id,
                None => {
                    let id = self.names.len() as u32;
                    self.names.push(key.clone());
                    self.ids.insert(key.clone(), id);
                    id
                }
            };
            self.seconds[second].push(id);
        }
    }

    /// Feeds the writes to `capacity` in time order.
    fn replay(&self, capacity: &Capacity) {
        for (second, keys) in self.seconds.iter().enumerate() {
            for &id in keys {
                capacity.wrote_at(second as u64, [self.names[id as usize].as_str()]);
            }
        }
    }
}

/// Every slot runs tasks back to back (its first task started before the window, the slots'
/// phases spread evenly); the window is one task duration, so each slot completes a task and
/// claims the next once and heartbeats `TASK_SECS / HEARTBEAT_SECS` times; each instance
/// refreshes its registration every heartbeat.
fn schedule() -> Schedule {
    let mut plan = Schedule::default();
    let slots = INSTANCES * SLOTS;
    for slot in 0..slots {
        // The slot's current task ends (and the next is claimed) at `switch`.
        let switch = slot * TASK_SECS / slots;
        let ms = (switch * 1_000) as Millis;
        let old = task_writes(slot, 0, ms);
        let new = task_writes(slot, 1, ms);
        for second in (switch % HEARTBEAT_SECS..TASK_SECS).step_by(HEARTBEAT_SECS as usize) {
            plan.at(
                second,
                if second < switch {
                    &old.heartbeat
                } else {
                    &new.heartbeat
                },
            );
        }
        // In the same second: the completion of one, the claim of the next.
        plan.at(switch, &old.complete);
        plan.at(switch, &new.claim);
    }
    for i in 0..INSTANCES {
        let keys: Vec<String> = item_keys(&worker_item(&worker(i)))
            .into_iter()
            .map(str::to_string)
            .collect();
        for second in (i % HEARTBEAT_SECS..TASK_SECS).step_by(HEARTBEAT_SECS as usize) {
            plan.at(second, &keys);
        }
    }
    plan
}

#[test]
fn no_partition_key_takes_more_than_1000_write_units_per_second() {
    // Index entries, counter items and worker registrations are under 1 KB: one write unit
    // per write. A task item is up to about 5 KB with its last result's 4 KB log tail.
    let running = running_item("NA012878-1", &worker(9_999).worker_id);
    let entry = index_entry(&running);
    assert!(
        item_size(&entry) <= 1_024,
        "index entry of {} bytes",
        item_size(&entry)
    );
    assert!(!entry.contains_key(RESULT) && !entry.contains_key(SCRIPT));
    let registration = worker_item(&worker(9_999));
    assert!(item_size(&registration) <= 1_024);
    let task_units = 5;

    let capacity = std::sync::Arc::new(Capacity::default());
    schedule().replay(&capacity);
    let recorder = RequestRecorder::new(Default::default(), Default::default(), capacity.clone());
    let mut peaks = capacity.peaks();
    peaks.sort_by_key(|(_, peak)| std::cmp::Reverse(*peak));
    for (key, peak) in &peaks {
        let units = if key.starts_with("T#") {
            peak * task_units
        } else {
            *peak
        };
        assert!(units <= LIMIT, "{key}: {units} write units in one second");
    }
    // The registrations' index key is the busiest: one write per instance and heartbeat.
    let busiest = recorder.peak_key().expect("writes");
    assert_eq!(busiest.key, "WORKERS");
    assert_eq!(busiest.writes_per_second, INSTANCES / HEARTBEAT_SECS);
    let running_keys = peaks
        .iter()
        .filter(|(k, _)| k.starts_with("S#align#running#"))
        .count();
    assert_eq!(running_keys, DEFAULT_SHARDS as usize);
    // Heartbeats write the task item only.
    let w = task_writes(7, 0, 0);
    assert_eq!(w.heartbeat, [task_pk(STEP, "NA000007-0")]);
}
