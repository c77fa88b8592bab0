//! EC2's API request throttling, as the simulated provider applies it: token buckets per
//! action, with the defaults AWS documents for an account (per Region), "Request throttling
//! for the Amazon EC2 API", <https://docs.aws.amazon.com/ec2/latest/devguide/ec2-api-throttling.html>:
//!
//! | bucket | capacity | refill per second |
//! |---|---|---|
//! | `RunInstances` requests (an uncategorized action) | 5 | 2 |
//! | `RunInstances` instances launched (resource bucket) | 1,000 | 2 |
//! | `TerminateInstances` requests (uncategorized) | 100 | 5 |
//! | `TerminateInstances` instances terminated (resource bucket) | 1,000 | 20 |
//!
//! A call takes one request token, and a resource token per instance it launches or
//! terminates; with none left it fails with [`ProviderError::Throttled`]
//! (`RequestLimitExceeded`), and the controller's own handling of a throttled call applies: an
//! unclear launch is issued again with its batch token on the next pass, a termination is
//! planned again. What EC2 does with a `RunInstances` of `MinCount=1` asking for more
//! instances than the resource bucket holds is not documented; the simulated provider launches
//! what the bucket holds (at least one), as it launches what capacity allows. Not modelled:
//! the provider's retries within one call (`aws_error::with_backoff`, up to 4 retries over a
//! few seconds, which a 10 s pass mostly covers), and `DescribeInstances` (the non-mutating
//! bucket, 100 and 20/s: one call per fleet per pass never empties it below 200 fleets).

use serde::Serialize;

use super::World;
use crate::clock::Millis;
use crate::provider::ProviderError;

/// A bucket's documented size.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct BucketSpec {
    pub capacity: f64,
    pub refill_per_sec: f64,
}

/// The EC2 API quotas the simulated provider enforces.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Ec2Quotas {
    pub run_requests: BucketSpec,
    pub run_instances: BucketSpec,
    pub terminate_requests: BucketSpec,
    pub terminate_instances: BucketSpec,
    /// How full every bucket is when the simulation starts (1: an account that has been
    /// quiet; 0: one that has just used them up, e.g. by another 1,000-instance launch).
    pub start_fill: f64,
}

impl Default for Ec2Quotas {
    /// AWS's defaults for an account (see the module's table).
    fn default() -> Self {
        let spec = |capacity, refill_per_sec| BucketSpec {
            capacity,
            refill_per_sec,
        };
        Ec2Quotas {
            run_requests: spec(5.0, 2.0),
            run_instances: spec(1_000.0, 2.0),
            terminate_requests: spec(100.0, 5.0),
            terminate_instances: spec(1_000.0, 20.0),
            start_fill: 1.0,
        }
    }
}

/// A token bucket on simulated time.
#[derive(Debug, Clone)]
pub(crate) struct Bucket {
    spec: BucketSpec,
    tokens: f64,
    at: Millis,
}

impl Bucket {
    fn new(spec: BucketSpec, fill: f64, now: Millis) -> Bucket {
        Bucket {
            spec,
            tokens: spec.capacity * fill.clamp(0.0, 1.0),
            at: now,
        }
    }

    fn refill(&mut self, now: Millis) {
        let elapsed = now.saturating_sub(self.at) as f64 / 1000.0;
        self.tokens = (self.tokens + elapsed * self.spec.refill_per_sec).min(self.spec.capacity);
        self.at = now.max(self.at);
    }

    /// Takes up to `n` whole tokens (as many as there are); returns how many.
    fn take_up_to(&mut self, n: u32, now: Millis) -> u32 {
        self.refill(now);
        let took = (self.tokens.floor().max(0.0) as u32).min(n);
        self.tokens -= f64::from(took);
        took
    }
}

/// The buckets of one simulated account.
#[derive(Debug, Clone)]
pub(crate) struct QuotaState {
    run_requests: Bucket,
    run_instances: Bucket,
    terminate_requests: Bucket,
    terminate_instances: Bucket,
}

impl QuotaState {
    pub fn new(q: &Ec2Quotas, now: Millis) -> QuotaState {
        let b = |spec| Bucket::new(spec, q.start_fill, now);
        QuotaState {
            run_requests: b(q.run_requests),
            run_instances: b(q.run_instances),
            terminate_requests: b(q.terminate_requests),
            terminate_instances: b(q.terminate_instances),
        }
    }
}

fn throttled(action: &str, what: &str) -> ProviderError {
    ProviderError::Throttled(format!(
        "RequestLimitExceeded (simulated): {action} {what} bucket empty"
    ))
}

/// Instances per `TerminateInstances` call of the EC2 provider.
const TERMINATE_CHUNK: usize = 200;

impl World {
    /// How many of `wanted` new instances one `RunInstances` call may launch now, or its
    /// throttling error (counted).
    pub(super) fn launch_quota(&mut self, wanted: u32) -> Result<u32, ProviderError> {
        let now = self.now;
        let Some(q) = self.quotas.as_mut() else {
            return Ok(wanted);
        };
        if q.run_requests.take_up_to(1, now) == 0 {
            self.tally.throttled_calls += 1;
            return Err(throttled("RunInstances", "request"));
        }
        let granted = q.run_instances.take_up_to(wanted, now);
        if wanted > 0 && granted == 0 {
            self.tally.throttled_calls += 1;
            return Err(throttled("RunInstances", "instance"));
        }
        Ok(granted)
    }

    /// The leading part of `ids` that `TerminateInstances` calls of up to [`TERMINATE_CHUNK`]
    /// ids each may terminate now: the calls stop at the first one throttled (counted), as
    /// the EC2 provider's do.
    pub(super) fn terminate_quota(&mut self, ids: usize) -> usize {
        let now = self.now;
        let Some(q) = self.quotas.as_mut() else {
            return ids;
        };
        let mut allowed = 0;
        while allowed < ids {
            let chunk = (ids - allowed).min(TERMINATE_CHUNK) as u32;
            if q.terminate_requests.take_up_to(1, now) == 0 {
                self.tally.throttled_calls += 1;
                break;
            }
            let granted = q.terminate_instances.take_up_to(chunk, now);
            if granted < chunk {
                // A call is refused as a whole: give back what it took.
                q.terminate_instances.tokens += f64::from(granted);
                self.tally.throttled_calls += 1;
                break;
            }
            allowed += chunk as usize;
        }
        allowed
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_bucket_bursts_then_refills_at_its_rate() {
        let spec = BucketSpec {
            capacity: 1_000.0,
            refill_per_sec: 2.0,
        };
        let mut b = Bucket::new(spec, 1.0, 0);
        assert_eq!(b.take_up_to(1_500, 0), 1_000);
        assert_eq!(b.take_up_to(10, 0), 0);
        assert_eq!(b.take_up_to(10, 2_500), 5);
        // Never beyond the capacity, however long it rests.
        assert_eq!(b.take_up_to(5_000, 10_000_000), 1_000);
        let mut empty = Bucket::new(spec, 0.0, 0);
        assert_eq!(empty.take_up_to(1_000, 499_000), 998);
    }
}
