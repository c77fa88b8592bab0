//! A small builder for DynamoDB update and condition expressions, with a placeholder for every
//! attribute name and value.

use std::collections::HashMap;

use aws_sdk_dynamodb::types::AttributeValue;

use super::items::{
    n, s, state_pk, task_sk, GSI1PK, GSI1SK, LEASE_EXPIRES_AT, LEASE_OWNER, LEASE_TOKEN, PK, STATE,
    UPDATED_AT,
};
use crate::clock::Millis;
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
    /// The index partition the item is in after the write, and the step and state it was in
    /// before (from `transition` and the `state` condition): the partition keys it writes.
    index_to: Option<String>,
    step: Option<String>,
    state_from: Option<TaskState>,
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

    /// Sets `state`, `gsi1pk`, `gsi1sk` and `updated_at` together, as every transition must.
    pub(crate) fn transition(
        self,
        step: &str,
        id: &str,
        state: TaskState,
        priority: i32,
        lease_expires_at: Millis,
        now: Millis,
    ) -> Self {
        let mut e = self;
        e.index_to = Some(state_pk(step, state));
        e.step = Some(step.to_string());
        e.set(STATE, s(state.as_str()))
            .set(GSI1PK, s(state_pk(step, state)))
            .set(
                GSI1SK,
                s(task_sk(state, priority, now, lease_expires_at, id)),
            )
            .set(UPDATED_AT, n(now))
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

    /// Says that the write changes the item's index entry in the `index` partition without
    /// moving it (e.g. a heartbeat's new sort key).
    pub(crate) fn in_index(mut self, index: String) -> Self {
        self.index_to = Some(index);
        self
    }

    /// The index partition keys this update writes: the one the item is in afterwards and,
    /// when it moves, the one it leaves.
    pub(crate) fn index_keys(&self) -> Vec<String> {
        let mut keys: Vec<String> = self.index_to.iter().cloned().collect();
        if let (Some(step), Some(from)) = (&self.step, self.state_from) {
            let left = state_pk(step, from);
            if !keys.contains(&left) {
                keys.push(left);
            }
        }
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
