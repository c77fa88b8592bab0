//! BatchGetItem / BatchWriteItem with bounded concurrency, retrying unprocessed keys and items
//! with exponential backoff and full jitter.

use std::time::Duration;

use aws_sdk_dynamodb::types::{
    KeysAndAttributes, PutRequest, ReturnConsumedCapacity, WriteRequest,
};
use futures::{StreamExt, TryStreamExt};
use rand::Rng;

use super::capacity::item_keys;
use super::items::Item;
use super::DynamoStore;
use crate::store::{Result, StoreError};

/// DynamoDB's limits per request.
const GET_BATCH: usize = 100;
const WRITE_BATCH: usize = 25;
/// Batches in flight at once.
const CONCURRENCY: usize = 8;
/// Retries of unprocessed keys/items before giving up (about a minute of backoff in total).
const MAX_RETRIES: u32 = 12;

/// Sleeps before retry `attempt` (0-based): uniform in [0, min(5 s, 50 ms * 2^attempt)].
pub(crate) async fn backoff(attempt: u32) {
    let cap = 50u64.saturating_mul(1u64 << attempt.min(16)).min(5_000);
    let ms = rand::rng().random_range(0..=cap);
    tokio::time::sleep(Duration::from_millis(ms)).await;
}

impl DynamoStore {
    /// Reads the items with these keys (consistent reads); missing ones are simply absent from
    /// the result. `projection` limits the attributes returned (`pk` is always included).
    pub(crate) async fn batch_get(
        &self,
        op: &str,
        keys: Vec<Item>,
        projection: Option<&[&str]>,
    ) -> Result<Vec<Item>> {
        self.batch_get_read(op, keys, projection, true).await
    }

    /// [`Self::batch_get`] with eventually consistent reads (half the read units; a write of
    /// the last second may not be seen yet).
    pub(crate) async fn batch_get_eventually(
        &self,
        op: &str,
        keys: Vec<Item>,
    ) -> Result<Vec<Item>> {
        self.batch_get_read(op, keys, None, false).await
    }

    async fn batch_get_read(
        &self,
        op: &str,
        keys: Vec<Item>,
        projection: Option<&[&str]>,
        consistent: bool,
    ) -> Result<Vec<Item>> {
        let chunks: Vec<Vec<Item>> = keys.chunks(GET_BATCH).map(<[Item]>::to_vec).collect();
        let pages: Vec<Vec<Item>> = futures::stream::iter(chunks)
            .map(|chunk| self.batch_get_chunk(op, chunk, projection, consistent))
            .buffer_unordered(CONCURRENCY)
            .try_collect()
            .await?;
        Ok(pages.into_iter().flatten().collect())
    }

    /// One BatchGetItem of at most 100 keys, and its retries of the keys left unprocessed
    /// (each a request: counted in the request mix as `{op} read`).
    async fn batch_get_chunk(
        &self,
        op: &str,
        mut keys: Vec<Item>,
        projection: Option<&[&str]>,
        consistent: bool,
    ) -> Result<Vec<Item>> {
        let mut found = Vec::new();
        let mut attempt = 0;
        while !keys.is_empty() {
            let mut request = KeysAndAttributes::builder()
                .set_keys(Some(std::mem::take(&mut keys)))
                .consistent_read(consistent);
            if let Some(attrs) = projection {
                let (expr, names) = super::projection(attrs);
                request = request
                    .projection_expression(expr)
                    .set_expression_attribute_names(Some(names));
            }
            let request = request.build().map_err(|e| StoreError::backend(op, e))?;
            self.mix.add(&format!("{op} read"));
            let out = self
                .client
                .batch_get_item()
                .request_items(&self.table, request)
                .return_consumed_capacity(ReturnConsumedCapacity::Total)
                .send()
                .await
                .map_err(|e| self.err(op, e))?;
            self.consumed(out.consumed_capacity(), false);
            if let Some(mut responses) = out.responses {
                found.extend(responses.remove(&self.table).unwrap_or_default());
            }
            if let Some(mut unprocessed) = out.unprocessed_keys {
                if let Some(rest) = unprocessed.remove(&self.table) {
                    keys = rest.keys;
                }
            }
            if !keys.is_empty() {
                if attempt >= MAX_RETRIES {
                    return Err(StoreError::unavailable(
                        op,
                        format!(
                            "{} keys still unprocessed after {MAX_RETRIES} retries of BatchGetItem",
                            keys.len()
                        ),
                    ));
                }
                backoff(attempt).await;
                attempt += 1;
            }
        }
        Ok(found)
    }

    /// Puts these items (unconditionally), 25 per request, several requests in flight.
    pub(crate) async fn batch_put(&self, op: &str, items: Vec<Item>) -> Result<()> {
        let mut chunks = Vec::new();
        for chunk in items.chunks(WRITE_BATCH) {
            let requests = chunk
                .iter()
                .map(|item| {
                    PutRequest::builder()
                        .set_item(Some(item.clone()))
                        .build()
                        .map(|put| WriteRequest::builder().put_request(put).build())
                        .map_err(|e| StoreError::backend(op, e))
                })
                .collect::<Result<Vec<_>>>()?;
            chunks.push(requests);
        }
        futures::stream::iter(chunks)
            .map(|chunk| self.batch_write_chunk(op, chunk))
            .buffer_unordered(CONCURRENCY)
            .try_collect::<Vec<()>>()
            .await?;
        for item in &items {
            self.wrote(item_keys(item));
        }
        Ok(())
    }

    async fn batch_write_chunk(&self, op: &str, mut requests: Vec<WriteRequest>) -> Result<()> {
        let mut attempt = 0;
        while !requests.is_empty() {
            let out = self
                .client
                .batch_write_item()
                .request_items(&self.table, std::mem::take(&mut requests))
                .return_consumed_capacity(ReturnConsumedCapacity::Total)
                .send()
                .await
                .map_err(|e| self.err(op, e))?;
            self.consumed(out.consumed_capacity(), true);
            if let Some(mut unprocessed) = out.unprocessed_items {
                requests = unprocessed.remove(&self.table).unwrap_or_default();
            }
            if !requests.is_empty() {
                if attempt >= MAX_RETRIES {
                    return Err(StoreError::unavailable(
                        op,
                        format!(
                            "{} items still unprocessed after {MAX_RETRIES} retries of BatchWriteItem",
                            requests.len()
                        ),
                    ));
                }
                backoff(attempt).await;
                attempt += 1;
            }
        }
        Ok(())
    }
}
