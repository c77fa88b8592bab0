//! The controller's leadership lease: one item per cluster whose fencing number grows every
//! time leadership changes hands.

use std::collections::HashMap;

use super::error::is_condition_failed;
use super::expr::Expr;
use super::items::*;
use super::{DynamoStore, USER_ACTION_TRIES};
use crate::clock::Millis;
use crate::store::{Leadership, Result, StoreError};

pub(super) async fn acquire_leadership(
    store: &DynamoStore,
    cluster: &str,
    owner: &str,
    ttl_ms: Millis,
    now: Millis,
) -> Result<Option<Leadership>> {
    const OP: &str = "acquire leadership";
    let pk = leader_pk(cluster);
    let expires_at = now + ttl_ms;
    // Fast path, the steady state: the holder renews (its fencing number stays).
    let renew = Expr::new()
        .set("expires_at", n(expires_at))
        .cond_eq("owner", s(owner));
    if let Some(item) = store.update(OP, pk.clone(), renew, true).await? {
        return Reader::new(OP, &item).leadership().map(Some);
    }
    for _ in 0..USER_ACTION_TRIES {
        let current = store.get_item(OP, pk.clone()).await?;
        let written = match current {
            None => first_leadership(store, &pk, cluster, owner, expires_at).await?,
            Some(item) => {
                let held = Reader::new(OP, &item).leadership()?;
                if held.owner != owner && held.expires_at >= now {
                    return Ok(None);
                }
                let fencing = if held.owner == owner {
                    held.fencing
                } else {
                    held.fencing + 1
                };
                let e = Expr::new()
                    .set("owner", s(owner))
                    .set("fencing", n(fencing))
                    .set("expires_at", n(expires_at))
                    .cond_eq("owner", s(held.owner.as_str()))
                    .cond_eq("fencing", n(held.fencing))
                    .cond_eq("expires_at", n(held.expires_at));
                store
                    .update(OP, pk.clone(), e, false)
                    .await?
                    .map(|_| Leadership {
                        owner: owner.to_string(),
                        fencing,
                        expires_at,
                    })
            }
        };
        if written.is_some() {
            return Ok(written);
        }
    }
    Err(StoreError::unavailable(
        OP,
        format!("leadership of `{cluster}` kept changing concurrently"),
    ))
}

pub(super) async fn release_leadership(
    store: &DynamoStore,
    cluster: &str,
    owner: &str,
) -> Result<()> {
    const OP: &str = "release leadership";
    // Keep the item (and its fencing number) but expire it, so the next holder's fencing
    // number is still higher. Not holding it is fine.
    let e = Expr::new()
        .set("expires_at", n(0))
        .cond_eq("owner", s(owner));
    store.update(OP, leader_pk(cluster), e, false).await?;
    Ok(())
}

pub(super) async fn current_leader(
    store: &DynamoStore,
    cluster: &str,
) -> Result<Option<Leadership>> {
    const OP: &str = "current leader";
    store
        .get_item(OP, leader_pk(cluster))
        .await?
        .map(|item| Reader::new(OP, &item).leadership())
        .transpose()
}

/// Writes the first leadership item of `cluster` (fencing number 1) unless one appeared
/// meanwhile; `None` then.
async fn first_leadership(
    store: &DynamoStore,
    pk: &str,
    cluster: &str,
    owner: &str,
    expires_at: Millis,
) -> Result<Option<Leadership>> {
    const OP: &str = "acquire leadership";
    let e = Expr::new().cond(format!("attribute_not_exists({PK})"));
    let result = store
        .client
        .put_item()
        .table_name(&store.table)
        .set_item(Some(HashMap::from([
            (PK.to_string(), s(pk)),
            ("cluster".to_string(), s(cluster)),
            ("owner".to_string(), s(owner)),
            ("fencing".to_string(), n(1)),
            ("expires_at".to_string(), n(expires_at)),
        ])))
        .set_condition_expression(e.condition_expression())
        .send()
        .await;
    match result {
        Ok(_) => Ok(Some(Leadership {
            owner: owner.to_string(),
            fencing: 1,
            expires_at,
        })),
        Err(e) if is_condition_failed(&e) => Ok(None),
        Err(e) => Err(store.err(OP, e)),
    }
}
