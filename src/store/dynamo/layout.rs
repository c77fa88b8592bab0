//! Table layout version 2 (see `docs/dynamodb-table.md`): the index `gsi2` with sharded task
//! partitions and a small INCLUDE projection, the shard function, the task index keys, the
//! per-shard counter items and the schema version item. Pure: no SDK or I/O here.

use crate::clock::Millis;
use crate::model::TaskState;

use super::items::{priority_key, ts13};

/// The layout version this build reads and writes (stored in the [`META_PK`] item).
pub(crate) const SCHEMA_VERSION: u32 = 2;

/// The global secondary index of layout 2. A new name (and new key attributes) because
/// DynamoDB cannot change an existing index's projection: a version-1 table is migrated by
/// adding `gsi2` beside `gsi1` and dropping `gsi1` afterwards.
pub(crate) const INDEX: &str = "gsi2";
pub(crate) const INDEX_PK: &str = "g2pk";
pub(crate) const INDEX_SK: &str = "g2sk";

/// A worker registration's attribute: the lease TTL (ms) its worker's claims ask for (absent
/// in registrations written before it existed, and before the worker's first claim).
pub(crate) const LEASE_TTL_MS: &str = "lease_ttl_ms";

/// The non-key attributes the index projects (INCLUDE; DynamoDB allows at most 20): what
/// claims (`id`), the oldest pending task (`updated_at`), the sample view and the graph's
/// promotion (`id`, `state`), due retries (`priority`), the failed-tasks query of the docs
/// (`reason`, `attempts`) and the registry items listed through the index (steps, workers,
/// status documents) read from it. Everything else of a task — `result` with its log tail,
/// `script`, `args`, `env`, `subtasks`, the lease (`lease_expires_at` changes on every
/// heartbeat) — is read by key (GetItem, BatchGetItem): a reader that lists whole tasks
/// queries the keys and then gets the items.
pub(crate) const PROJECTED: &[&str] = &[
    // tasks
    "step",
    "id",
    "state",
    "priority",
    "updated_at",
    "attempts",
    "reason",
    // step registry
    "shards",
    // workers (`step`, `state` above)
    "worker_id",
    "instance_id",
    "slots",
    "busy_slots",
    "started_at",
    "last_seen",
    "last_busy_at",
    "stop_reason",
    LEASE_TTL_MS,
    // status documents (`updated_at` above)
    "name",
    "body",
];

/// Index shards per step unless the table (`anamo table create --shards N`) says otherwise.
///
/// One index partition key takes at most 1,000 write units per second (docs/dynamodb-table.md,
/// "DynamoDB limits"). With heartbeats off the index, a task writes its step's `running`
/// partition key twice (claimed in, completed out) and its `pending` key once or twice, each a
/// write unit (entries under 1 KB). 8 shards take 8,000 writes/s on `running`: 4,000 tasks/s, so
/// 160,000 slots (10,000 instances × 16) with tasks as short as 40 s, while an idle claimer
/// probes at most 8 small Queries, and an exact recount reads 8 × 8 partitions per step.
pub(crate) const DEFAULT_SHARDS: u32 = 8;

/// Most shards a step may have (a claim on an empty step queries each one).
pub(crate) const MAX_SHARDS: u32 = 256;

/// The key of the schema version item; attributes `version` (N) and `shards` (N, the table's
/// default shard count).
pub(crate) const META_PK: &str = "META#schema";
pub(crate) const META_VERSION: &str = "version";
pub(crate) const META_SHARDS: &str = "shards";

/// The shard of a task: the 32-bit FNV-1a hash of its id (UTF-8 bytes), mixed by the
/// MurmurHash3 finalizer (FNV-1a alone spreads ids that differ in their last characters
/// unevenly over a power-of-two count), modulo the step's shard count. Stable across releases
/// and platforms (unlike `DefaultHasher`): other clients compute it too
/// (`docs/dynamodb-table.md` has it in Python).
pub fn shard_of(id: &str, shards: u32) -> u32 {
    const OFFSET: u32 = 0x811c_9dc5;
    const PRIME: u32 = 0x0100_0193;
    let mut h = id
        .bytes()
        .fold(OFFSET, |h, b| (h ^ u32::from(b)).wrapping_mul(PRIME));
    h ^= h >> 16;
    h = h.wrapping_mul(0x85eb_ca6b);
    h ^= h >> 13;
    h = h.wrapping_mul(0xc2b2_ae35);
    h ^= h >> 16;
    h % shards.max(1)
}

/// What a task's index keys are computed from.
#[derive(Debug, Clone, Copy)]
pub(crate) struct TaskKeys<'a> {
    pub step: &'a str,
    pub id: &'a str,
    pub state: TaskState,
    pub priority: i32,
    pub updated_at: Millis,
    pub retry_at: Millis,
    pub lease_owner: Option<&'a str>,
    pub shards: u32,
}

impl<'a> TaskKeys<'a> {
    /// The keys of a task moved to `state` (not running, not retrying) at `now`.
    pub(crate) fn moved(
        step: &'a str,
        id: &'a str,
        state: TaskState,
        priority: i32,
        now: Millis,
        shards: u32,
    ) -> Self {
        TaskKeys {
            step,
            id,
            state,
            priority,
            updated_at: now,
            retry_at: 0,
            lease_owner: None,
            shards,
        }
    }
}

/// The index partition key of `step`'s tasks in `state` in `shard`: `S#{step}#{state}#{shard}`.
pub(crate) fn state_shard_pk(step: &str, state: TaskState, shard: u32) -> String {
    format!("S#{step}#{}#{shard}", state.as_str())
}

/// A task's `(g2pk, g2sk)`. The sort key depends on the state:
///
/// * pending: `{P}#{updated_at:013}#{id}` (`P` = [`priority_key`]): highest priority first,
///   then oldest — within the shard;
/// * running: `{lease_owner}#{id}`, set at the claim and never changed by heartbeats, so a
///   worker's tasks are `begins_with(g2sk, "{owner}#")`;
/// * retrying: `{retry_at:013}#{id}`: due retries are a range;
/// * any other: `{updated_at:013}#{id}`: recent changes last.
pub(crate) fn task_index_keys(t: &TaskKeys) -> (String, String) {
    let shard = shard_of(t.id, t.shards);
    let pk = state_shard_pk(t.step, t.state, shard);
    let id = t.id;
    let sk = match t.state {
        TaskState::Pending => format!("{}#{}#{id}", priority_key(t.priority), ts13(t.updated_at)),
        TaskState::Running => format!("{}#{id}", t.lease_owner.unwrap_or_default()),
        TaskState::Retrying => format!("{}#{id}", ts13(t.retry_at)),
        _ => format!("{}#{id}", ts13(t.updated_at)),
    };
    (pk, sk)
}

/// The sort key prefix of a worker's running tasks.
pub(crate) fn owner_prefix(owner: &str) -> String {
    format!("{owner}#")
}

/// The counter item of one shard of a step: one N attribute per state name.
pub(crate) fn counter_pk(step: &str, shard: u32) -> String {
    format!("C#{step}#{shard}")
}

/// The shard count the layout accepts, or why not.
pub(crate) fn check_shards(shards: u32) -> std::result::Result<u32, String> {
    if (1..=MAX_SHARDS).contains(&shards) {
        Ok(shards)
    } else {
        Err(format!(
            "shard count {shards} is out of range: use 1 to {MAX_SHARDS} (default {DEFAULT_SHARDS})"
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn keys(state: TaskState, id: &str) -> TaskKeys<'_> {
        TaskKeys {
            step: "align",
            id,
            state,
            priority: 0,
            updated_at: 1_000,
            retry_at: 5_000,
            lease_owner: Some("w1"),
            shards: DEFAULT_SHARDS,
        }
    }

    #[test]
    fn the_shard_function_is_the_documented_one() {
        // FNV-1a ("" → 0x811c9dc5, "a" → 0xe40c292c, "foobar" → 0xbf9cf968) then the
        // MurmurHash3 finalizer; the same values as the Python in docs/dynamodb-table.md.
        assert_eq!(shard_of("", u32::MAX), 0xab3e_7c0b);
        assert_eq!(shard_of("a", u32::MAX), 0x1a80_b1b3);
        assert_eq!(shard_of("foobar", u32::MAX), 0x0c0d_a6dc);
        assert_eq!(shard_of("S42", 8), 3);
        assert_eq!(shard_of("anything", 1), 0);
        assert_eq!(shard_of("anything", 0), 0, "0 shards is treated as 1");
    }

    #[test]
    fn shards_spread_ids_evenly() {
        let mut per = [0u32; DEFAULT_SHARDS as usize];
        for i in 0..8_000 {
            per[shard_of(&format!("NA{i:05}/chr{}", i % 22), DEFAULT_SHARDS) as usize] += 1;
        }
        assert!(per.iter().all(|&c| (900..1_100).contains(&c)), "{per:?}");
    }

    #[test]
    fn a_task_keeps_its_shard_in_every_state() {
        let shard = shard_of("S42", DEFAULT_SHARDS);
        for state in TaskState::ALL {
            let (pk, _) = task_index_keys(&keys(state, "S42"));
            assert_eq!(pk, format!("S#align#{}#{shard}", state.as_str()));
        }
    }

    #[test]
    fn sort_keys_by_state() {
        let sk = |state| task_index_keys(&keys(state, "S42")).1;
        assert_eq!(sk(TaskState::Pending), "2147483647#0000000001000#S42");
        assert_eq!(sk(TaskState::Running), "w1#S42");
        assert!(sk(TaskState::Running).starts_with(&owner_prefix("w1")));
        assert_eq!(sk(TaskState::Retrying), "0000000005000#S42");
        assert_eq!(sk(TaskState::Succeeded), "0000000001000#S42");
        assert_eq!(sk(TaskState::Waiting), "0000000001000#S42");
    }

    #[test]
    fn running_keys_ignore_heartbeat_inputs() {
        // A heartbeat changes neither the owner nor the id: the running key stays put.
        let mut k = keys(TaskState::Running, "x");
        let before = task_index_keys(&k);
        k.updated_at = 99_999;
        k.retry_at = 7;
        assert_eq!(task_index_keys(&k), before);
    }

    #[test]
    fn pending_keys_sort_by_priority_then_age() {
        let sk = |priority, at| {
            let mut k = keys(TaskState::Pending, "a");
            (k.priority, k.updated_at) = (priority, at);
            task_index_keys(&k).1
        };
        let mut all = [sk(-1, 0), sk(10, 2), sk(10, 1), sk(0, 0)];
        all.sort();
        assert_eq!(all, [sk(10, 1), sk(10, 2), sk(0, 0), sk(-1, 0)]);
    }

    #[test]
    fn counters_and_limits() {
        assert_eq!(counter_pk("align", 3), "C#align#3");
        assert!(check_shards(0).is_err());
        assert!(check_shards(MAX_SHARDS + 1).is_err());
        assert_eq!(check_shards(DEFAULT_SHARDS), Ok(DEFAULT_SHARDS));
        for heavy in [
            "result",
            "script",
            "args",
            "env",
            "subtasks",
            "lease_expires_at",
        ] {
            assert!(!PROJECTED.contains(&heavy), "{heavy} must not be projected");
        }
    }
}
