//! The table layout (see `docs/dynamodb-table.md`): key formats, item encoding and decoding.
//! Every conversion between SDK attribute values and model types happens here (update and
//! condition expressions are built in [`super::expr`]).

use std::collections::{BTreeMap, HashMap};
use std::fmt::Display;
use std::str::FromStr;

use aws_sdk_dynamodb::types::AttributeValue;

use super::layout::{task_index_keys, TaskKeys};
use crate::clock::Millis;
use crate::model::{
    Lease, StopReason, Task, TaskResult, TaskSpec, TaskState, WorkerInfo, WorkerState,
    DEFAULT_MAX_ATTEMPTS,
};
use crate::store::{Leadership, Result, StatusDoc, StoreError};

pub(crate) type Item = HashMap<String, AttributeValue>;

// ---- attribute names ---------------------------------------------------------------------

pub(crate) const PK: &str = "pk";
pub(crate) use super::layout::{INDEX, INDEX_PK, INDEX_SK};

pub(crate) const STEP: &str = "step";
pub(crate) const ID: &str = "id";
pub(crate) const STATE: &str = "state";
pub(crate) const SCRIPT: &str = "script";
pub(crate) const PRIORITY: &str = "priority";
pub(crate) const MAX_ATTEMPTS: &str = "max_attempts";
pub(crate) const ATTEMPTS: &str = "attempts";
pub(crate) const CREATED_AT: &str = "created_at";
pub(crate) const UPDATED_AT: &str = "updated_at";
pub(crate) const ARGS: &str = "args";
pub(crate) const ENV: &str = "env";
pub(crate) const TIMEOUT_SECS: &str = "timeout_secs";
pub(crate) const DEPENDS_ON: &str = "depends_on";
pub(crate) const RETRY_EXIT_CODES: &str = "retry_exit_codes";
pub(crate) const FAIL_EXIT_CODES: &str = "fail_exit_codes";
pub(crate) const SUBTASKS: &str = "subtasks";
pub(crate) const SUBTASK_PARALLELISM: &str = "subtask_parallelism";
pub(crate) const LEASE_OWNER: &str = "lease_owner";
pub(crate) const LEASE_TOKEN: &str = "lease_token";
pub(crate) const LEASE_EXPIRES_AT: &str = "lease_expires_at";
pub(crate) const REASON: &str = "reason";
pub(crate) const RESULT: &str = "result";
pub(crate) const RETRY_AT: &str = "retry_at";
pub(crate) const HELD_FROM: &str = "held_from";
/// A step registry item's index shard count.
pub(crate) const SHARDS: &str = "shards";

// ---- keys --------------------------------------------------------------------------------

pub(crate) fn task_pk(step: &str, id: &str) -> String {
    format!("T#{step}#{id}")
}

pub(crate) fn step_pk(step: &str) -> String {
    format!("STEP#{step}")
}

pub(crate) const STEPS_GSI: &str = "STEPS";
pub(crate) const WORKERS_GSI: &str = "WORKERS";
pub(crate) const STATUS_GSI: &str = "STATUS";

pub(crate) fn worker_pk(worker_id: &str) -> String {
    format!("W#{worker_id}")
}

pub(crate) fn status_pk(name: &str) -> String {
    format!("STATUS#{name}")
}

pub(crate) fn leader_pk(cluster: &str) -> String {
    format!("LEADER#{cluster}")
}

/// A timestamp as a fixed-width sort key fragment (negative times sort as 0).
pub(crate) fn ts13(t: Millis) -> String {
    format!("{:013}", t.max(0))
}

/// Priority as a sort key fragment: higher priority sorts first in a forward query.
pub(crate) fn priority_key(priority: i32) -> String {
    format!("{:010}", (i32::MAX as i64 - priority as i64) as u64)
}

pub(crate) fn key(pk: String) -> Item {
    HashMap::from([(PK.to_string(), AttributeValue::S(pk))])
}

// ---- value constructors ------------------------------------------------------------------

pub(crate) fn s(v: impl Into<String>) -> AttributeValue {
    AttributeValue::S(v.into())
}

pub(crate) fn n(v: impl Display) -> AttributeValue {
    AttributeValue::N(v.to_string())
}

fn list_s(v: &[String]) -> AttributeValue {
    AttributeValue::L(v.iter().map(|x| s(x.as_str())).collect())
}

fn list_n(v: &[i32]) -> AttributeValue {
    AttributeValue::L(v.iter().map(n).collect())
}

// ---- tasks -------------------------------------------------------------------------------

/// The item of a freshly imported task, in a step of `shards` index shards.
pub(crate) fn new_task_item(spec: &TaskSpec, state: TaskState, now: Millis, shards: u32) -> Item {
    let (g2pk, g2sk) = task_index_keys(&TaskKeys {
        step: &spec.step,
        id: &spec.id,
        state,
        priority: spec.priority,
        updated_at: now,
        retry_at: 0,
        lease_owner: None,
        shards,
    });
    let mut item = Item::new();
    let mut put = |k: &str, v: AttributeValue| {
        item.insert(k.to_string(), v);
    };
    put(PK, s(task_pk(&spec.step, &spec.id)));
    put(INDEX_PK, s(g2pk));
    put(INDEX_SK, s(g2sk));
    put(STEP, s(spec.step.as_str()));
    put(ID, s(spec.id.as_str()));
    put(STATE, s(state.as_str()));
    put(SCRIPT, s(spec.script.as_str()));
    put(PRIORITY, n(spec.priority));
    put(MAX_ATTEMPTS, n(spec.max_attempts));
    put(ATTEMPTS, n(0));
    put(CREATED_AT, n(now));
    put(UPDATED_AT, n(now));
    if !spec.args.is_empty() {
        put(ARGS, list_s(&spec.args));
    }
    if !spec.env.is_empty() {
        put(
            ENV,
            AttributeValue::M(
                spec.env
                    .iter()
                    .map(|(k, v)| (k.clone(), s(v.as_str())))
                    .collect(),
            ),
        );
    }
    if let Some(t) = spec.timeout_secs {
        put(TIMEOUT_SECS, n(t));
    }
    if !spec.depends_on.is_empty() {
        put(DEPENDS_ON, list_s(&spec.depends_on));
    }
    if !spec.retry_exit_codes.is_empty() {
        put(RETRY_EXIT_CODES, list_n(&spec.retry_exit_codes));
    }
    if !spec.fail_exit_codes.is_empty() {
        put(FAIL_EXIT_CODES, list_n(&spec.fail_exit_codes));
    }
    if !spec.subtasks.is_empty() {
        put(SUBTASKS, list_s(&spec.subtasks));
    }
    if let Some(p) = spec.subtask_parallelism {
        put(SUBTASK_PARALLELISM, n(p));
    }
    item
}

/// Reads attributes of one item; every error names the item's key and the attribute.
pub(crate) struct Reader<'a> {
    op: &'a str,
    item: &'a Item,
}

impl<'a> Reader<'a> {
    pub(crate) fn new(op: &'a str, item: &'a Item) -> Self {
        Reader { op, item }
    }

    fn pk(&self) -> &str {
        match self.item.get(PK) {
            Some(AttributeValue::S(pk)) => pk,
            _ => "(no pk)",
        }
    }

    pub(crate) fn error(&self, attr: &str, problem: impl Display) -> StoreError {
        StoreError::backend(
            self.op,
            format!(
                "malformed item `{}`: attribute `{attr}` {problem}",
                self.pk()
            ),
        )
    }

    fn kind(v: &AttributeValue) -> &'static str {
        match v {
            AttributeValue::S(_) => "S",
            AttributeValue::N(_) => "N",
            AttributeValue::B(_) => "B",
            AttributeValue::Bool(_) => "BOOL",
            AttributeValue::L(_) => "L",
            AttributeValue::M(_) => "M",
            AttributeValue::Null(_) => "NULL",
            AttributeValue::Ss(_) => "SS",
            AttributeValue::Ns(_) => "NS",
            AttributeValue::Bs(_) => "BS",
            _ => "an unknown type",
        }
    }

    fn present(&self, attr: &str) -> Option<&'a AttributeValue> {
        match self.item.get(attr) {
            None | Some(AttributeValue::Null(_)) => None,
            Some(v) => Some(v),
        }
    }

    pub(crate) fn opt_s(&self, attr: &str) -> Result<Option<String>> {
        match self.present(attr) {
            None => Ok(None),
            Some(AttributeValue::S(v)) => Ok(Some(v.clone())),
            Some(v) => Err(self.error(attr, format!("is {}, expected S", Self::kind(v)))),
        }
    }

    pub(crate) fn s(&self, attr: &str) -> Result<String> {
        self.opt_s(attr)?
            .ok_or_else(|| self.error(attr, "is missing"))
    }

    pub(crate) fn opt_n<T>(&self, attr: &str) -> Result<Option<T>>
    where
        T: FromStr,
        T::Err: Display,
    {
        match self.present(attr) {
            None => Ok(None),
            Some(AttributeValue::N(v)) => parse_num(v)
                .map(Some)
                .map_err(|e| self.error(attr, format!("`{v}` is not a valid number here: {e}"))),
            Some(v) => Err(self.error(attr, format!("is {}, expected N", Self::kind(v)))),
        }
    }

    pub(crate) fn n<T>(&self, attr: &str) -> Result<T>
    where
        T: FromStr,
        T::Err: Display,
    {
        self.opt_n(attr)?
            .ok_or_else(|| self.error(attr, "is missing"))
    }

    fn strings(&self, attr: &str) -> Result<Vec<String>> {
        match self.present(attr) {
            None => Ok(Vec::new()),
            Some(AttributeValue::L(l)) => l
                .iter()
                .map(|v| match v {
                    AttributeValue::S(x) => Ok(x.clone()),
                    v => Err(self.error(
                        attr,
                        format!("holds {}, expected a list of S", Self::kind(v)),
                    )),
                })
                .collect(),
            // A string set is a natural thing for other clients to write.
            Some(AttributeValue::Ss(l)) => Ok(l.clone()),
            Some(v) => Err(self.error(attr, format!("is {}, expected L of S", Self::kind(v)))),
        }
    }

    fn numbers(&self, attr: &str) -> Result<Vec<i32>> {
        let parse = |x: &str| {
            parse_num::<i32>(x)
                .map_err(|e| self.error(attr, format!("holds `{x}`, not a valid exit code: {e}")))
        };
        match self.present(attr) {
            None => Ok(Vec::new()),
            Some(AttributeValue::L(l)) => l
                .iter()
                .map(|v| match v {
                    AttributeValue::N(x) => parse(x),
                    v => Err(self.error(
                        attr,
                        format!("holds {}, expected a list of N", Self::kind(v)),
                    )),
                })
                .collect(),
            Some(AttributeValue::Ns(l)) => l.iter().map(|x| parse(x)).collect(),
            Some(v) => Err(self.error(attr, format!("is {}, expected L of N", Self::kind(v)))),
        }
    }

    fn string_map(&self, attr: &str) -> Result<BTreeMap<String, String>> {
        match self.present(attr) {
            None => Ok(BTreeMap::new()),
            Some(AttributeValue::M(m)) => m
                .iter()
                .map(|(k, v)| match v {
                    AttributeValue::S(x) => Ok((k.clone(), x.clone())),
                    v => Err(self.error(
                        attr,
                        format!("key `{k}` holds {}, expected S", Self::kind(v)),
                    )),
                })
                .collect(),
            Some(v) => Err(self.error(attr, format!("is {}, expected M of S", Self::kind(v)))),
        }
    }

    pub(crate) fn state(&self) -> Result<TaskState> {
        let raw = self.s(STATE)?;
        raw.parse().map_err(|e: String| self.error(STATE, e))
    }

    pub(crate) fn spec(&self) -> Result<TaskSpec> {
        Ok(TaskSpec {
            id: self.s(ID)?,
            step: self.s(STEP)?,
            script: self.s(SCRIPT)?,
            args: self.strings(ARGS)?,
            env: self.string_map(ENV)?,
            priority: self.opt_n(PRIORITY)?.unwrap_or(0),
            max_attempts: self.opt_n(MAX_ATTEMPTS)?.unwrap_or(DEFAULT_MAX_ATTEMPTS),
            timeout_secs: self.opt_n(TIMEOUT_SECS)?,
            depends_on: self.strings(DEPENDS_ON)?,
            retry_exit_codes: self.numbers(RETRY_EXIT_CODES)?,
            fail_exit_codes: self.numbers(FAIL_EXIT_CODES)?,
            subtasks: self.strings(SUBTASKS)?,
            subtask_parallelism: self.opt_n(SUBTASK_PARALLELISM)?,
        })
    }

    pub(crate) fn task(&self) -> Result<Task> {
        let spec = self.spec()?;
        let lease = match (
            self.opt_s(LEASE_OWNER)?,
            self.opt_s(LEASE_TOKEN)?,
            self.opt_n::<Millis>(LEASE_EXPIRES_AT)?,
        ) {
            (Some(owner), Some(token), Some(expires_at)) => Some(Lease {
                owner,
                token,
                expires_at,
            }),
            _ => None,
        };
        let result = match self.opt_s(RESULT)? {
            Some(json) => Some(
                serde_json::from_str::<TaskResult>(&json)
                    .map_err(|e| self.error(RESULT, format!("is not a task result: {e}")))?,
            ),
            None => None,
        };
        let created_at: Millis = self.n(CREATED_AT)?;
        Ok(Task {
            spec,
            state: self.state()?,
            attempts: self.opt_n(ATTEMPTS)?.unwrap_or(0),
            lease,
            result,
            reason: self.opt_s(REASON)?,
            retry_at: self.opt_n(RETRY_AT)?,
            held_from: match self.opt_s(HELD_FROM)? {
                Some(raw) => Some(raw.parse().map_err(|e: String| self.error(HELD_FROM, e))?),
                None => None,
            },
            created_at,
            updated_at: self.opt_n(UPDATED_AT)?.unwrap_or(created_at),
        })
    }
}

/// Parses a DynamoDB number; accepts a trailing `.0` and exponent-free decimals that are whole
/// (other clients may write `3.0`).
fn parse_num<T>(raw: &str) -> std::result::Result<T, String>
where
    T: FromStr,
    T::Err: Display,
{
    let raw = raw.trim();
    match raw.parse::<T>() {
        Ok(v) => Ok(v),
        Err(e) => {
            if let Some((whole, frac)) = raw.split_once('.') {
                if !frac.is_empty() && frac.bytes().all(|b| b == b'0') {
                    return whole.parse::<T>().map_err(|e| e.to_string());
                }
            }
            Err(e.to_string())
        }
    }
}

// ---- workers, status documents, leadership -----------------------------------------------

/// A worker registration's stop reason attribute.
const STOP_REASON: &str = "stop_reason";

pub(crate) fn worker_item(w: &WorkerInfo) -> Item {
    let mut item = Item::from([
        (PK.to_string(), s(worker_pk(&w.worker_id))),
        (INDEX_PK.to_string(), s(WORKERS_GSI)),
        (
            INDEX_SK.to_string(),
            s(format!("{}#{}", w.step, w.worker_id)),
        ),
        ("worker_id".to_string(), s(w.worker_id.as_str())),
        (STEP.to_string(), s(w.step.as_str())),
        ("slots".to_string(), n(w.slots)),
        ("busy_slots".to_string(), n(w.busy_slots)),
        ("started_at".to_string(), n(w.started_at)),
        ("last_seen".to_string(), n(w.last_seen)),
        ("last_busy_at".to_string(), n(w.last_busy_at)),
        (STATE.to_string(), s(w.state.as_str())),
    ]);
    if let Some(i) = &w.instance_id {
        item.insert("instance_id".to_string(), s(i.as_str()));
    }
    if let Some(r) = w.stop_reason {
        item.insert(STOP_REASON.to_string(), s(r.as_str()));
    }
    item
}

impl Reader<'_> {
    pub(crate) fn worker(&self) -> Result<WorkerInfo> {
        let state = self.s(STATE)?;
        Ok(WorkerInfo {
            worker_id: self.s("worker_id")?,
            step: self.s(STEP)?,
            instance_id: self.opt_s("instance_id")?,
            slots: self.n("slots")?,
            busy_slots: self.n("busy_slots")?,
            started_at: self.n("started_at")?,
            last_seen: self.n("last_seen")?,
            last_busy_at: self.n("last_busy_at")?,
            state: state
                .parse::<WorkerState>()
                .map_err(|e| self.error(STATE, e))?,
            stop_reason: self
                .opt_s(STOP_REASON)?
                .map(|r| {
                    r.parse::<StopReason>()
                        .map_err(|e| self.error(STOP_REASON, e))
                })
                .transpose()?,
            drain_requested: false,
        })
    }

    pub(crate) fn status(&self) -> Result<StatusDoc> {
        let body = self.s("body")?;
        Ok(StatusDoc {
            name: self.s("name")?,
            updated_at: self.n(UPDATED_AT)?,
            body: serde_json::from_str(&body)
                .map_err(|e| self.error("body", format!("is not JSON: {e}")))?,
        })
    }

    pub(crate) fn leadership(&self) -> Result<Leadership> {
        Ok(Leadership {
            owner: self.s("owner")?,
            fencing: self.n("fencing")?,
            expires_at: self.n("expires_at")?,
        })
    }
}

pub(crate) fn status_item(doc: &StatusDoc, body: String) -> Item {
    Item::from([
        (PK.to_string(), s(status_pk(&doc.name))),
        (INDEX_PK.to_string(), s(STATUS_GSI)),
        (INDEX_SK.to_string(), s(doc.name.as_str())),
        ("name".to_string(), s(doc.name.as_str())),
        (UPDATED_AT.to_string(), n(doc.updated_at)),
        ("body".to_string(), s(body)),
    ])
}

/// The step registry item, with the step's index shard count.
pub(crate) fn step_item(step: &str, shards: u32) -> Item {
    Item::from([
        (PK.to_string(), s(step_pk(step))),
        (INDEX_PK.to_string(), s(STEPS_GSI)),
        (INDEX_SK.to_string(), s(step)),
        (STEP.to_string(), s(step)),
        (SHARDS.to_string(), n(shards)),
    ])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn task_items_round_trip() {
        let mut spec = TaskSpec::new("call", "S1", "echo hi");
        spec.args = vec!["a".into(), "b".into()];
        spec.env.insert("K".into(), "V".into());
        spec.priority = -3;
        spec.timeout_secs = Some(60);
        spec.depends_on = vec!["align".into()];
        spec.retry_exit_codes = vec![75];
        spec.fail_exit_codes = vec![2, -1];
        spec.subtasks = vec!["x".into()];
        spec.subtask_parallelism = Some(4);
        let item = new_task_item(&spec, spec.initial_state(), 42, 4);
        let task = Reader::new("test", &item).task().unwrap();
        assert_eq!(task.spec, spec);
        assert_eq!(task.state, TaskState::Waiting);
        assert_eq!(
            (task.created_at, task.updated_at, task.attempts),
            (42, 42, 0)
        );
    }

    #[test]
    fn malformed_items_name_key_and_attribute() {
        let mut item = new_task_item(&TaskSpec::new("s", "i", "true"), TaskState::Pending, 1, 4);
        item.insert(ATTEMPTS.into(), s("three"));
        let err = Reader::new("get", &item).task().unwrap_err().to_string();
        assert!(err.contains("T#s#i") && err.contains("attempts"), "{err}");
        item.insert(ATTEMPTS.into(), n("x1"));
        let err = Reader::new("get", &item).task().unwrap_err().to_string();
        assert!(err.contains("T#s#i") && err.contains("attempts"), "{err}");
    }

    #[test]
    fn numbers_written_as_decimals_are_read() {
        assert_eq!(parse_num::<u32>("3.0"), Ok(3));
        assert!(parse_num::<u32>("3.5").is_err());
    }
}
