//! A small builder for DynamoDB update and condition expressions, with a placeholder for every
//! attribute name and value.

use std::collections::HashMap;

use aws_sdk_dynamodb::types::AttributeValue;

use super::items::{
    n, s, INDEX_PK, INDEX_SK, LEASE_EXPIRES_AT, LEASE_OWNER, LEASE_TOKEN, PK, STATE, UPDATED_AT,
};
use super::layout::{counter_pk, shard_of, state_shard_pk, task_index_keys, TaskKeys};
use crate::model::TaskState;

/// Builds update and condition expressions with a placeholder for every attribute name (many
/// of ours, e.g. `state` and `result`, are DynamoDB reserved words) and every value.
#[derive(Debug, Default)]
pub(crate) struct Expr {
    names: HashMap<String, String>,
    values: HashMap<String, AttributeValue>,
    sets: Vec<String>,
    removes: Vec<String>,
    conds: Vec<String>,
    /// The index partition the item is in after the write, and the step, shard and states it
    /// was in before and is in after (from `transition` and the `state` condition): the
    /// partition keys it writes and the counters it moves.
    index_to: Option<String>,
    step: Option<(String, u32)>,
    state_from: Option<TaskState>,
    state_to: Option<TaskState>,
}

/// A task's move between two states, for its shard's counter item.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct CountChange {
    pub counter: String,
    pub from: TaskState,
    pub to: TaskState,
}

impl Expr {
    pub(crate) fn new() -> Self {
        Self::default()
    }

    /// The placeholder of an attribute name.
    pub(crate) fn name(&mut self, attr: &str) -> String {
        let placeholder = format!("#{attr}");
        self.names.insert(placeholder.clone(), attr.to_string());
        placeholder
    }

    /// The placeholder of a value.
    pub(crate) fn value(&mut self, v: AttributeValue) -> String {
        let placeholder = format!(":v{}", self.values.len());
        self.values.insert(placeholder.clone(), v);
        placeholder
    }

    pub(crate) fn set(mut self, attr: &str, v: AttributeValue) -> Self {
        let (name, value) = (self.name(attr), self.value(v));
        self.sets.push(format!("{name} = {value}"));
        self
    }

    pub(crate) fn set_opt(self, attr: &str, v: Option<AttributeValue>) -> Self {
        match v {
            Some(v) => self.set(attr, v),
            None => self.remove(attr),
        }
    }

    /// A raw `SET` clause, built with [`Expr::name`] and [`Expr::value`].
    pub(crate) fn set_raw(mut self, clause: String) -> Self {
        self.sets.push(clause);
        self
    }

    pub(crate) fn remove(mut self, attr: &str) -> Self {
        let name = self.name(attr);
        self.removes.push(name);
        self
    }

    /// Sets `state`, `g2pk`, `g2sk` and `updated_at` together, as every transition must
    /// (`k.updated_at` is the time of the change).
    pub(crate) fn transition(self, k: &TaskKeys) -> Self {
        let mut e = self;
        let (pk, sk) = task_index_keys(k);
        e.index_to = Some(pk.clone());
        e.step = Some((k.step.to_string(), shard_of(k.id, k.shards)));
        e.state_to = Some(k.state);
        e.set(STATE, s(k.state.as_str()))
            .set(INDEX_PK, s(pk))
            .set(INDEX_SK, s(sk))
            .set(UPDATED_AT, n(k.updated_at))
    }

    pub(crate) fn remove_lease(self) -> Self {
        self.remove(LEASE_OWNER)
            .remove(LEASE_TOKEN)
            .remove(LEASE_EXPIRES_AT)
    }

    /// Adds a raw condition, ANDed with the others.
    pub(crate) fn cond(mut self, clause: String) -> Self {
        self.conds.push(format!("({clause})"));
        self
    }

    pub(crate) fn cond_eq(mut self, attr: &str, v: AttributeValue) -> Self {
        if let (STATE, AttributeValue::S(state)) = (attr, &v) {
            self.state_from = state.parse().ok();
        }
        let (name, value) = (self.name(attr), self.value(v));
        self.conds.push(format!("{name} = {value}"));
        self
    }

    pub(crate) fn cond_exists(mut self) -> Self {
        let name = self.name(PK);
        self.conds.push(format!("attribute_exists({name})"));
        self
    }

    /// The index partition keys this update writes: the one the item is in afterwards and,
    /// when it moves, the one it leaves.
    pub(crate) fn index_keys(&self) -> Vec<String> {
        let mut keys: Vec<String> = self.index_to.iter().cloned().collect();
        if let (Some((step, shard)), Some(from)) = (&self.step, self.state_from) {
            let left = state_shard_pk(step, from, *shard);
            if !keys.contains(&left) {
                keys.push(left);
            }
        }
        keys
    }

    /// The counter change this update makes when it succeeds: a transition from the state
    /// its condition names to another one.
    pub(crate) fn count_change(&self) -> Option<CountChange> {
        let (step, shard) = self.step.as_ref()?;
        let (from, to) = (self.state_from?, self.state_to?);
        (from != to).then(|| CountChange {
            counter: counter_pk(step, *shard),
            from,
            to,
        })
    }

    /// The partition keys this update writes when it succeeds: the item's, its index entry's
    /// (old and new) and its counter item's.
    pub(crate) fn written_keys(&self, pk: &str) -> Vec<String> {
        let mut keys = vec![pk.to_string()];
        keys.extend(self.index_keys());
        keys.extend(self.count_change().map(|c| c.counter));
        keys
    }

    pub(crate) fn update_expression(&self) -> Option<String> {
        let mut parts = Vec::new();
        if !self.sets.is_empty() {
            parts.push(format!("SET {}", self.sets.join(", ")));
        }
        if !self.removes.is_empty() {
            parts.push(format!("REMOVE {}", self.removes.join(", ")));
        }
        (!parts.is_empty()).then(|| parts.join(" "))
    }

    pub(crate) fn condition_expression(&self) -> Option<String> {
        (!self.conds.is_empty()).then(|| self.conds.join(" AND "))
    }

    pub(crate) fn names(&self) -> Option<HashMap<String, String>> {
        (!self.names.is_empty()).then(|| self.names.clone())
    }

    pub(crate) fn values(&self) -> Option<HashMap<String, AttributeValue>> {
        (!self.values.is_empty()).then(|| self.values.clone())
    }
}
