//! EC2 instance metadata (IMDSv2): the instance id at start, the spot interruption notice
//! (`GET /latest/meta-data/spot/instance-action`: 404 = none, 200 = interruption coming) and
//! the rebalance recommendation (`GET /latest/meta-data/events/recommendations/rebalance`:
//! 404 = none, 200 with `{"noticeTime": "..."}` = the instance is at elevated risk of
//! interruption; see <https://docs.aws.amazon.com/AWSEC2/latest/UserGuide/rebalance-recommendations.html>).
//! A recommendation stops claims and lets running tasks finish; a notice hands them back at
//! once, also after a recommendation.
//!
//! Timeouts are short and there are no retries, so a worker off EC2 starts at once.

use std::time::Duration;

use aws_config::imds::client::error::ImdsError;
use aws_config::imds::client::Client;

use super::events::{RebalanceRecommendation, SpotInterruption};
use super::WorkerControl;

/// The log line (at debug) when instance metadata does not answer: no instance id to record
/// and no spot notices to watch for.
pub(crate) const NOT_ON_EC2: &str = "not on EC2: no instance metadata";

const CONNECT_TIMEOUT: Duration = Duration::from_millis(500);
const READ_TIMEOUT: Duration = Duration::from_secs(1);
const OPERATION_TIMEOUT: Duration = Duration::from_secs(2);

#[derive(Debug, Clone)]
pub(crate) struct Imds {
    client: Client,
    endpoint: String,
}

/// What a metadata lookup found.
#[derive(Debug)]
pub(crate) enum Lookup {
    Found(String),
    /// IMDS answered with an error status (404: no such item).
    Status(u16),
    /// IMDS did not answer (or not sensibly).
    Unreachable(String),
}

impl Imds {
    pub(crate) fn new(endpoint: &str) -> Result<Imds, String> {
        let client = Client::builder()
            .endpoint(endpoint)
            .map_err(|e| format!("invalid IMDS endpoint `{endpoint}`: {e}"))?
            .max_attempts(1)
            .connect_timeout(CONNECT_TIMEOUT)
            .read_timeout(READ_TIMEOUT)
            .operation_timeout(OPERATION_TIMEOUT)
            .build();
        Ok(Imds {
            client,
            endpoint: endpoint.to_string(),
        })
    }

    pub(crate) fn endpoint(&self) -> &str {
        &self.endpoint
    }

    pub(crate) async fn get(&self, path: &str) -> Lookup {
        match self.client.get(path).await {
            Ok(v) => Lookup::Found(v.as_ref().to_string()),
            Err(ImdsError::ErrorResponse(r)) => Lookup::Status(r.response().status().as_u16()),
            Err(e) => Lookup::Unreachable(
                aws_smithy_types::error::display::DisplayErrorContext(e).to_string(),
            ),
        }
    }

    /// Whether IMDS answers, and the instance id when it has one.
    pub(crate) async fn probe(&self) -> Result<Option<String>, String> {
        match self.get("/latest/meta-data/instance-id").await {
            Lookup::Found(id) => Ok(Some(id.trim().to_string()).filter(|i| !i.is_empty())),
            Lookup::Status(_) => Ok(None),
            Lookup::Unreachable(e) => Err(e),
        }
    }

    /// `Some(notice)` when a spot interruption is scheduled.
    pub(crate) async fn spot_notice(&self) -> Result<Option<String>, String> {
        self.notice("/latest/meta-data/spot/instance-action").await
    }

    /// `Some(notice)` when EC2 recommends rebalancing away from this instance.
    pub(crate) async fn rebalance_notice(&self) -> Result<Option<String>, String> {
        self.notice("/latest/meta-data/events/recommendations/rebalance")
            .await
    }

    /// An item that is 404 until something is announced.
    async fn notice(&self, path: &str) -> Result<Option<String>, String> {
        match self.get(path).await {
            Lookup::Found(body) => Ok(Some(body)),
            Lookup::Status(404) => Ok(None),
            Lookup::Status(s) => Err(format!("IMDS answered HTTP {s}")),
            Lookup::Unreachable(e) => Err(e),
        }
    }
}

/// What the spot watcher needs besides the IMDS client.
#[derive(Debug, Clone)]
pub(crate) struct SpotWatch {
    pub step: String,
    pub every: Duration,
    pub control: WorkerControl,
    /// IMDS answered at start (else the first failed poll means: not on EC2).
    pub known_reachable: bool,
}

/// Polls for a spot interruption notice every `every`; on one, hands running tasks back and
/// returns. Until then, a rebalance recommendation stops claims (once). Unless IMDS is
/// `known_reachable` (it answered at start), returns at once when it does not answer the
/// first poll (not on EC2).
pub(crate) async fn watch_spot(imds: Imds, watch: SpotWatch) {
    let SpotWatch {
        step,
        every,
        control,
        known_reachable,
    } = watch;
    let mut failures = 0u32;
    let mut answered = known_reachable;
    let mut counting = false;
    let mut first = true;
    let mut rebalancing = false;
    loop {
        if !std::mem::take(&mut first) {
            tokio::time::sleep(super::backoff::spread(every, 0.1)).await;
        }
        let poll = imds.spot_notice().await;
        match &poll {
            Err(e) if !answered => {
                tracing::debug!(endpoint = imds.endpoint(), "{NOT_ON_EC2}");
                tracing::trace!(error = %e, "instance metadata lookup failed");
                return;
            }
            _ => answered = true,
        }
        if !std::mem::replace(&mut counting, true) {
            // Watching from now on: the notice counters start at 0.
            control.worker_stats().spot_notices_watched(&step);
        }
        match poll {
            Ok(Some(notice)) => {
                SpotInterruption {
                    step: &step,
                    notice: &notice,
                }
                .emit(control.worker_stats());
                control.hand_back();
                return;
            }
            Ok(None) => {
                failures = 0;
                if !rebalancing {
                    rebalancing = check_rebalance(&imds, &step, &control).await;
                }
            }
            Err(e) => {
                failures += 1;
                // One line when the trouble starts, then every 60th failure.
                if failures == 1 || failures % 60 == 0 {
                    tracing::warn!(error = %e, failures, "spot interruption poll failed");
                }
            }
        }
    }
}

/// Stops claims when a rebalance recommendation is out; whether one was.
async fn check_rebalance(imds: &Imds, step: &str, control: &WorkerControl) -> bool {
    match imds.rebalance_notice().await {
        Ok(Some(notice)) => {
            RebalanceRecommendation {
                step,
                notice: notice_time(&notice).unwrap_or(&notice),
            }
            .emit(control.worker_stats());
            control.rebalance();
            true
        }
        Ok(None) => false,
        Err(e) => {
            tracing::debug!(error = %e, "rebalance recommendation poll failed");
            false
        }
    }
}

/// The `noticeTime` of a rebalance recommendation (`{"noticeTime": "2020-11-05T08:22:00Z"}`),
/// when the body is that JSON.
fn notice_time(body: &str) -> Option<&str> {
    #[derive(serde::Deserialize)]
    #[serde(rename_all = "camelCase")]
    struct Notice<'a> {
        notice_time: &'a str,
    }
    serde_json::from_str::<Notice<'_>>(body)
        .ok()
        .map(|n| n.notice_time)
}

#[cfg(test)]
mod tests {
    use super::notice_time;

    #[test]
    fn reads_the_notice_time_of_a_recommendation() {
        let body = r#"{"noticeTime": "2020-11-05T08:22:00Z"}"#;
        assert_eq!(notice_time(body), Some("2020-11-05T08:22:00Z"));
        assert_eq!(notice_time("not json"), None);
        assert_eq!(notice_time(r#"{"other": 1}"#), None);
    }
}
