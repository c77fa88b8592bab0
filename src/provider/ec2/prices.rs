//! Current spot prices for cost figures: one `DescribeSpotPriceHistory` (Linux/UNIX, in or out
//! of a VPC) for the types asked, with start and end time now, which EC2 answers with each
//! type's and zone's price in effect at that time ("It also returns the last price change before
//! the start time, which is the effective price as of the start time", the API reference); the
//! newest per type and zone wins. moto answers with a fixed price and ignores the times, so the
//! tests check the request's shape besides the answer.

use std::collections::BTreeMap;

use aws_sdk_ec2::types::InstanceType;

use super::Ec2Fleet;
use crate::provider::aws_error::{from_sdk, with_backoff};
use crate::provider::{ProviderResult, SpotPrice};

/// The products whose price anamo's instances pay: Linux, written as EC2 writes it outside
/// and inside a VPC.
const PRODUCTS: [&str; 2] = ["Linux/UNIX", "Linux/UNIX (Amazon VPC)"];

impl Ec2Fleet {
    pub(super) async fn describe_spot_prices(
        &self,
        instance_types: &[String],
    ) -> ProviderResult<Vec<SpotPrice>> {
        if instance_types.is_empty() {
            return Ok(Vec::new());
        }
        let now = aws_sdk_ec2::primitives::DateTime::from_millis(self.cfg.clock.now());
        let types: Vec<InstanceType> = instance_types
            .iter()
            .map(|t| InstanceType::from(t.as_str()))
            .collect();
        with_backoff(&self.cfg.throttle, "DescribeSpotPriceHistory", || async {
            self.bucket.acquire().await;
            let mut pages = self
                .client
                .describe_spot_price_history()
                .set_instance_types(Some(types.clone()))
                .set_product_descriptions(Some(PRODUCTS.map(str::to_string).to_vec()))
                .start_time(now)
                .end_time(now)
                .into_paginator()
                .send();
            // (type, zone) → (timestamp, price)
            let mut newest: BTreeMap<(String, String), (i64, f64)> = BTreeMap::new();
            while let Some(page) = pages.next().await {
                let page = page.map_err(|e| from_sdk("DescribeSpotPriceHistory", e))?;
                for p in page.spot_price_history() {
                    let (Some(t), Some(zone), Some(price)) = (
                        p.instance_type(),
                        p.availability_zone(),
                        p.spot_price().and_then(|s| s.parse::<f64>().ok()),
                    ) else {
                        continue;
                    };
                    let at = p.timestamp().and_then(|t| t.to_millis().ok()).unwrap_or(0);
                    let key = (t.as_str().to_string(), zone.to_string());
                    if newest.get(&key).is_none_or(|(seen, _)| at >= *seen) {
                        newest.insert(key, (at, price));
                    }
                }
            }
            Ok(newest
                .into_iter()
                .map(|((instance_type, zone), (_, usd_per_hour))| SpotPrice {
                    instance_type,
                    zone,
                    usd_per_hour,
                })
                .collect())
        })
        .await
    }
}
