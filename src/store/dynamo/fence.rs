//! Writes fenced by the leadership epoch: a [`Fence::Leader`] write is one
//! `TransactWriteItems` of a `ConditionCheck` on the cluster's leader item (`owner` and
//! `fencing` still the writer's) and the write itself, so a deposed leader's write changes
//! nothing. An unfenced write is the plain request. The cost is in `docs/dynamodb-table.md`.
//!
//! Concurrent transactions that include the same item conflict (DynamoDB cancels one), and
//! every fenced write includes the leader item: this store sends its fenced writes one at a
//! time. A conflict with another controller's leadership attempt is reported as
//! [`StoreError::Unavailable`] (tried again next pass).

use aws_sdk_dynamodb::operation::transact_write_items::TransactWriteItemsError;
use aws_sdk_dynamodb::types::{
    ConditionCheck, Delete, Put, ReturnConsumedCapacity, TransactWriteItem, Update,
};

use super::capacity::item_keys;
use super::expr::Expr;
use super::items::*;
use super::DynamoStore;
use crate::store::{Fence, LeaderToken, Result, StoreError};

/// One item write.
pub(super) enum Write {
    /// A conditional update of the item with this key.
    Update { pk: String, expr: Box<Expr> },
    /// An unconditional put.
    Put(Item),
    /// An unconditional delete of the item with this key, whose index key is `index`.
    Delete { pk: String, index: Option<String> },
}

impl Write {
    /// The partition keys this write touches.
    fn keys(&self) -> Vec<String> {
        match self {
            Write::Update { pk, expr } => expr.written_keys(pk),
            Write::Put(item) => item_keys(item).into_iter().map(str::to_string).collect(),
            Write::Delete { pk, index } => std::iter::once(pk.clone())
                .chain(index.iter().cloned())
                .collect(),
        }
    }
}

impl DynamoStore {
    /// Sends `write` fenced by `fence`. `Ok(true)`: written; `Ok(false)`: the write's own
    /// condition did not hold; [`StoreError::Fenced`]: the leadership moved on.
    pub(super) async fn write_fenced(
        &self,
        op: &str,
        kind: &str,
        fence: Fence<'_>,
        write: Write,
    ) -> Result<bool> {
        let token = match fence {
            Fence::Unfenced => return self.write_plain(op, kind, write).await,
            Fence::Leader(token) => token,
        };
        let keys = write.keys();
        let change = match &write {
            Write::Update { expr, .. } => expr.count_change(),
            _ => None,
        };
        let items = vec![
            self.leader_check(op, token)?,
            self.transact_item(op, write)?,
        ];
        let _one_at_a_time = self.fence_lock.lock().await;
        let result = self
            .client
            .transact_write_items()
            .set_transact_items(Some(items))
            .return_consumed_capacity(ReturnConsumedCapacity::Total)
            .send()
            .await;
        match result {
            Ok(out) => {
                self.mix.add(&format!("{kind} fenced write"));
                self.consumed(out.consumed_capacity(), true);
                self.wrote(keys.iter().map(String::as_str));
                if let Some(change) = change {
                    self.bump(op, &change).await?;
                }
                Ok(true)
            }
            Err(e) => {
                let codes: Vec<Option<String>> = match e.as_service_error() {
                    Some(TransactWriteItemsError::TransactionCanceledException(c)) => c
                        .cancellation_reasons()
                        .iter()
                        .map(|r| r.code().map(str::to_string))
                        .collect(),
                    _ => Vec::new(),
                };
                let failed = |i: usize| {
                    codes.get(i).and_then(Option::as_deref) == Some("ConditionalCheckFailed")
                };
                if failed(0) {
                    self.mix.add(&format!("{kind} fenced write refused"));
                    Err(StoreError::fenced(op, token))
                } else if failed(1) {
                    self.mix.add(&format!("{kind} fenced write lost"));
                    Ok(false)
                } else if !codes.is_empty() {
                    self.mix.add(&format!("{kind} fenced write failed"));
                    Err(StoreError::unavailable(
                        op,
                        format!("transaction cancelled ({codes:?}); try again"),
                    ))
                } else {
                    self.mix.add(&format!("{kind} fenced write failed"));
                    Err(self.err(op, e))
                }
            }
        }
    }

    /// The `ConditionCheck` that the leadership is still `token`'s.
    fn leader_check(&self, op: &str, token: &LeaderToken) -> Result<TransactWriteItem> {
        let e = Expr::new()
            .cond_eq("owner", s(token.owner()))
            .cond_eq("fencing", n(token.fencing()));
        let check = ConditionCheck::builder()
            .table_name(&self.table)
            .set_key(Some(key(leader_pk(token.cluster()))))
            .set_condition_expression(e.condition_expression())
            .set_expression_attribute_names(e.names())
            .set_expression_attribute_values(e.values())
            .build()
            .map_err(|e| StoreError::backend(op, e))?;
        Ok(TransactWriteItem::builder().condition_check(check).build())
    }

    fn transact_item(&self, op: &str, write: Write) -> Result<TransactWriteItem> {
        let built = match write {
            Write::Update { pk, expr } => TransactWriteItem::builder().update(
                Update::builder()
                    .table_name(&self.table)
                    .set_key(Some(key(pk)))
                    .set_update_expression(expr.update_expression())
                    .set_condition_expression(expr.condition_expression())
                    .set_expression_attribute_names(expr.names())
                    .set_expression_attribute_values(expr.values())
                    .build()
                    .map_err(|e| StoreError::backend(op, e))?,
            ),
            Write::Put(item) => TransactWriteItem::builder().put(
                Put::builder()
                    .table_name(&self.table)
                    .set_item(Some(item))
                    .build()
                    .map_err(|e| StoreError::backend(op, e))?,
            ),
            Write::Delete { pk, .. } => TransactWriteItem::builder().delete(
                Delete::builder()
                    .table_name(&self.table)
                    .set_key(Some(key(pk)))
                    .build()
                    .map_err(|e| StoreError::backend(op, e))?,
            ),
        };
        Ok(built.build())
    }

    /// The write as a plain request.
    async fn write_plain(&self, op: &str, kind: &str, write: Write) -> Result<bool> {
        let keys = write.keys();
        let written = match write {
            Write::Update { pk, expr } => {
                return Ok(self.update_as(op, kind, pk, *expr, false).await?.is_some())
            }
            Write::Put(item) => self
                .client
                .put_item()
                .table_name(&self.table)
                .set_item(Some(item))
                .return_consumed_capacity(ReturnConsumedCapacity::Total)
                .send()
                .await
                .map(|out| self.consumed(out.consumed_capacity(), true))
                .map_err(|e| self.err(op, e)),
            Write::Delete { pk, .. } => self
                .client
                .delete_item()
                .table_name(&self.table)
                .set_key(Some(key(pk)))
                .return_consumed_capacity(ReturnConsumedCapacity::Total)
                .send()
                .await
                .map(|out| self.consumed(out.consumed_capacity(), true))
                .map_err(|e| self.err(op, e)),
        };
        written?;
        self.mix.add(kind);
        self.wrote(keys.iter().map(String::as_str));
        Ok(true)
    }
}
