//! What each request consumed: every item request (all but a user's `task delete`, the first
//! write of a cluster's leader item and the table's own management) asks for
//! `ReturnConsumedCapacity::Total`, and the answer goes to the store's
//! [`Capacity`](crate::store::Capacity) with the partition keys each item write touched (its
//! table key and its index keys), for `anamo bench` and its tests.

use aws_sdk_dynamodb::types::ConsumedCapacity;

use super::items::{Item, INDEX_PK, PK};
use super::DynamoStore;
use aws_sdk_dynamodb::types::AttributeValue;

/// Read and write units of one `ConsumedCapacity`. DynamoDB gives `ReadCapacityUnits` and
/// `WriteCapacityUnits` for provisioned tables; otherwise only `CapacityUnits`, which are of
/// the request's kind (`write`).
fn units(cc: &ConsumedCapacity, write: bool) -> (f64, f64) {
    match (cc.read_capacity_units(), cc.write_capacity_units()) {
        (None, None) => {
            let total = cc.capacity_units().unwrap_or(0.0);
            if write {
                (0.0, total)
            } else {
                (total, 0.0)
            }
        }
        (r, w) => (r.unwrap_or(0.0), w.unwrap_or(0.0)),
    }
}

/// The partition keys a put (or delete) of `item` writes: its table key and its index key.
pub(super) fn item_keys(item: &Item) -> Vec<&str> {
    [PK, INDEX_PK]
        .iter()
        .filter_map(|attr| match item.get(*attr) {
            Some(AttributeValue::S(k)) => Some(k.as_str()),
            _ => None,
        })
        .collect()
}

impl DynamoStore {
    /// Records what one request consumed; `write`: whether it was a write request.
    pub(super) fn consumed<'c>(
        &self,
        consumed: impl IntoIterator<Item = &'c ConsumedCapacity>,
        write: bool,
    ) {
        for cc in consumed {
            let (r, w) = units(cc, write);
            self.capacity.consumed(r, w);
        }
    }

    /// Records one item write to each of `keys`.
    pub(super) fn wrote<'k>(&self, keys: impl IntoIterator<Item = &'k str>) {
        self.capacity.wrote(keys);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn units_are_of_the_requests_kind_unless_split() {
        let total = ConsumedCapacity::builder().capacity_units(2.0).build();
        assert_eq!(units(&total, true), (0.0, 2.0));
        assert_eq!(units(&total, false), (2.0, 0.0));
        let split = ConsumedCapacity::builder()
            .capacity_units(3.0)
            .read_capacity_units(1.0)
            .write_capacity_units(2.0)
            .build();
        assert_eq!(units(&split, true), (1.0, 2.0));
    }
}
