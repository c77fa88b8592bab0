//! AWS errors and throttling safety shared by the `ec2` and `autoscaling` providers.
//!
//! * [`from_sdk`] is the one function that turns an SDK error (EC2 or Auto Scaling) into a
//!   [`ProviderError`], by the error code grouped into sets (capacity, limits, throttling,
//!   configuration, not found), as Karpenter's `pkg/errors` does.
//! * [`with_backoff`] retries an API call on [`ProviderError::Throttled`] with exponential
//!   backoff and jitter, a bounded number of times.
//! * [`TokenBucket`] limits the rate of mutating calls (RunInstances, TerminateInstances,
//!   SetDesiredCapacity, ...) of one provider, so a controller that wants to launch and
//!   terminate a lot at once does not run into the account's API rate limits.

use std::future::Future;
use std::sync::Mutex;
use std::time::Duration;

use aws_sdk_ec2::config::http::HttpResponse;
use aws_sdk_ec2::error::{DisplayErrorContext, ProvideErrorMetadata, SdkError};
use backon::{ExponentialBuilder, Retryable};
use tokio::time::Instant;

use super::{ProviderError, ProviderResult};

/// No capacity for this instance type / zone right now: try another override, or cool off.
pub const CAPACITY_CODES: &[&str] = &[
    "InsufficientInstanceCapacity",
    "InsufficientHostCapacity",
    "InsufficientReservedInstanceCapacity",
    "InsufficientCapacityOnOutpost",
    "InsufficientFreeAddressesInSubnet",
    "InsufficientAddressCapacity",
    "InsufficientCapacity",
    "UnfulfillableCapacity",
    "SpotMaxPriceTooLow",
];

/// An account (or group) limit was reached.
pub const LIMIT_CODES: &[&str] = &[
    "InstanceLimitExceeded",
    "VcpuLimitExceeded",
    "MaxSpotInstanceCountExceeded",
    "MaxSpotFleetRequestCountExceeded",
    "VolumeLimitExceeded",
    "AddressLimitExceeded",
    "NetworkInterfaceLimitExceeded",
    // Auto Scaling
    "LimitExceeded",
];

/// The API is rate limiting us (or is busy with the same resource): back off and retry.
pub const THROTTLING_CODES: &[&str] = &[
    "RequestLimitExceeded",
    "Throttling",
    "ThrottlingException",
    "ThrottledException",
    "RequestThrottled",
    "RequestThrottledException",
    "TooManyRequestsException",
    "EC2ThrottledException",
    "BandwidthLimitExceeded",
    "PriorRequestNotComplete",
    "SlowDown",
    // Auto Scaling: another request is changing the group right now.
    "ResourceContention",
    "ScalingActivityInProgress",
];

/// The request can never succeed as configured: fix the manifest, the launch template or the
/// IAM policy.
pub const CONFIG_CODES: &[&str] = &[
    "InvalidLaunchTemplateName.NotFoundException",
    "InvalidLaunchTemplateName.MalformedException",
    "InvalidLaunchTemplateId.NotFound",
    "InvalidLaunchTemplateId.Malformed",
    "InvalidLaunchTemplateId.VersionNotFound",
    "InvalidLaunchTemplateId.NotFoundException",
    "Unsupported",
    "UnsupportedOperation",
    "InvalidParameterValue",
    "InvalidParameterCombination",
    "InvalidParameter",
    "MissingParameter",
    "InvalidInstanceType",
    "InvalidSubnetID.NotFound",
    "InvalidSubnetID.Malformed",
    "InvalidAMIID.NotFound",
    "InvalidAMIID.Malformed",
    "InvalidAMIID.Unavailable",
    "InvalidGroup.NotFound",
    "InvalidSecurityGroupID.NotFound",
    "InvalidKeyPair.NotFound",
    "InvalidBlockDeviceMapping",
    "InvalidUserData.Malformed",
    "InvalidInstanceID.Malformed",
    "IdempotentParameterMismatch",
    "UnauthorizedOperation",
    "AuthFailure",
    "InvalidClientTokenId",
    "SignatureDoesNotMatch",
    "AccessDenied",
    "AccessDeniedException",
    "OptInRequired",
    "Blocked",
    "PendingVerification",
    // Auto Scaling
    "ValidationError",
    "ServiceLinkedRoleFailure",
];

/// The named resource does not exist (any more). Mapped to [`ProviderError::Api`] carrying the
/// code, so that call sites where "gone" is fine (terminate) can tell.
pub const NOT_FOUND_CODES: &[&str] = &[
    "InvalidInstanceID.NotFound",
    "InvalidInstanceID",
    "InvalidReservationID.NotFound",
];

/// Errors after which the `ec2` provider tries the next instance type / subnet override of
/// a launch: the condition is specific to that type or zone, another may work.
pub const NEXT_OVERRIDE_CODES: &[&str] = &[
    "Unsupported",
    "InstanceLimitExceeded",
    "VcpuLimitExceeded",
    "MaxSpotInstanceCountExceeded",
];

/// The group an error code belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorClass {
    Capacity,
    Limit,
    Throttling,
    Config,
    NotFound,
}

/// The class of an AWS error code, when it is in one of the sets above.
pub fn class_of(code: &str) -> Option<ErrorClass> {
    if CAPACITY_CODES.contains(&code) {
        Some(ErrorClass::Capacity)
    } else if LIMIT_CODES.contains(&code) {
        Some(ErrorClass::Limit)
    } else if THROTTLING_CODES.contains(&code) {
        Some(ErrorClass::Throttling)
    } else if NOT_FOUND_CODES.contains(&code) {
        Some(ErrorClass::NotFound)
    } else if CONFIG_CODES.contains(&code) {
        Some(ErrorClass::Config)
    } else {
        None
    }
}

/// Whether a launch that failed with this error should go on with the next instance type or
/// subnet override.
pub fn try_next_override(err: &ProviderError) -> bool {
    match err {
        ProviderError::InsufficientCapacity(_) => true,
        ProviderError::LimitExceeded(m) | ProviderError::Config(m) => NEXT_OVERRIDE_CODES
            .iter()
            .any(|c| message_code(m) == Some(c)),
        _ => false,
    }
}

/// The code in a message built by [`classify`] (`Operation: Code: message`).
fn message_code(message: &str) -> Option<&str> {
    let mut parts = message.splitn(3, ": ");
    let _operation = parts.next()?;
    let code = parts.next()?;
    parts.next()?;
    Some(code)
}

/// Maps what the service answered (or did not) to a [`ProviderError`]. `operation` is the API
/// operation (`RunInstances`); the message keeps the AWS code and message.
pub fn classify(
    operation: &'static str,
    code: Option<&str>,
    message: Option<&str>,
    http_status: Option<u16>,
) -> ProviderError {
    let message = message.unwrap_or("").trim();
    let Some(code) = code.filter(|c| !c.is_empty()) else {
        let status = http_status.map_or_else(|| "no status".to_string(), |s| format!("HTTP {s}"));
        let text = format!("{operation}: {status}: {message}");
        return match http_status {
            Some(429) => ProviderError::Throttled(text),
            Some(s) if s >= 500 => ProviderError::Unavailable(text),
            _ => ProviderError::Api {
                operation,
                code: "Unknown".to_string(),
                message: text,
            },
        };
    };
    let text = format!("{operation}: {code}: {message}");
    match class_of(code) {
        Some(ErrorClass::Capacity) => ProviderError::InsufficientCapacity(text),
        Some(ErrorClass::Limit) => ProviderError::LimitExceeded(text),
        Some(ErrorClass::Throttling) => ProviderError::Throttled(text),
        Some(ErrorClass::Config) => ProviderError::Config(text),
        Some(ErrorClass::NotFound) => ProviderError::Api {
            operation,
            code: code.to_string(),
            message: message.to_string(),
        },
        None if http_status.is_some_and(|s| s >= 500) => ProviderError::Unavailable(text),
        None => ProviderError::Api {
            operation,
            code: code.to_string(),
            message: message.to_string(),
        },
    }
}

/// THE mapping of SDK errors (any AWS SDK crate: they share `SdkError`) to provider errors.
/// Timeouts, connection failures and unreadable responses are [`ProviderError::Unavailable`];
/// service errors are classified by their code ([`classify`]).
pub fn from_sdk<E>(operation: &'static str, err: SdkError<E, HttpResponse>) -> ProviderError
where
    E: ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
{
    match &err {
        SdkError::ServiceError(service) => classify(
            operation,
            err.code(),
            err.message(),
            Some(service.raw().status().as_u16()),
        ),
        SdkError::ConstructionFailure(_) => ProviderError::Api {
            operation,
            code: "ConstructionFailure".to_string(),
            message: DisplayErrorContext(&err).to_string(),
        },
        // Timeouts, dispatch failures, unparseable responses, and whatever a future SDK adds.
        _ => ProviderError::Unavailable(format!("{operation}: {}", DisplayErrorContext(&err))),
    }
}

/// The AWS error code of a [`ProviderError::Api`] (how not-found errors are reported).
pub fn api_code(err: &ProviderError) -> Option<&str> {
    match err {
        ProviderError::Api { code, .. } => Some(code),
        _ => None,
    }
}

/// Whether `err` says that a resource does not exist.
pub fn is_not_found(err: &ProviderError) -> bool {
    api_code(err).is_some_and(|c| class_of(c) == Some(ErrorClass::NotFound))
}

// ---- throttling safety -------------------------------------------------------------------

/// How a provider paces its API calls.
#[derive(Debug, Clone, PartialEq)]
pub struct ThrottleConfig {
    /// Attempts of one API call when it is throttled (the first one included). At least 1.
    pub max_attempts: usize,
    /// Delay before the first retry; doubled on each further retry, plus up to 100% jitter.
    pub min_delay: Duration,
    /// Upper bound of the delay between two attempts (before jitter).
    pub max_delay: Duration,
    /// Mutating calls that may be made in a burst.
    pub bucket_capacity: u32,
    /// Mutating calls per second allowed in the long run.
    pub refill_per_sec: f64,
}

impl Default for ThrottleConfig {
    fn default() -> Self {
        ThrottleConfig {
            max_attempts: 5,
            min_delay: Duration::from_millis(250),
            max_delay: Duration::from_secs(8),
            bucket_capacity: 5,
            refill_per_sec: 2.0,
        }
    }
}

impl ThrottleConfig {
    /// A token bucket with this configuration's capacity and refill rate.
    pub fn bucket(&self) -> TokenBucket {
        TokenBucket::new(self.bucket_capacity, self.refill_per_sec)
    }
}

/// Runs `call` until it succeeds, fails with anything but [`ProviderError::Throttled`], or has
/// been tried `cfg.max_attempts` times, sleeping with exponential backoff and jitter between
/// attempts (tokio time: tests pause it).
pub async fn with_backoff<T, F, Fut>(
    cfg: &ThrottleConfig,
    operation: &'static str,
    call: F,
) -> ProviderResult<T>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = ProviderResult<T>>,
{
    let policy = ExponentialBuilder::default()
        .with_jitter()
        .with_min_delay(cfg.min_delay)
        .with_max_delay(cfg.max_delay.max(cfg.min_delay))
        .with_max_times(cfg.max_attempts.max(1) - 1);
    call.retry(policy)
        .sleep(tokio::time::sleep)
        .when(|e: &ProviderError| matches!(e, ProviderError::Throttled(_)))
        .notify(|e: &ProviderError, delay: Duration| {
            tracing::warn!(
                operation, error = %e, delay_ms = delay.as_millis() as u64,
                "throttled; backing off"
            );
        })
        .await
}

/// A token bucket: holds up to `capacity` tokens, refilled continuously at `refill_per_sec`;
/// [`acquire`](Self::acquire) takes one, waiting (tokio time) until one is there.
#[derive(Debug)]
pub struct TokenBucket {
    capacity: f64,
    refill_per_sec: f64,
    state: Mutex<BucketState>,
}

#[derive(Debug)]
struct BucketState {
    tokens: f64,
    last: Instant,
}

impl TokenBucket {
    /// A full bucket. `capacity` is at least 1; a rate that is not positive is taken as 1/s.
    pub fn new(capacity: u32, refill_per_sec: f64) -> TokenBucket {
        let capacity = f64::from(capacity.max(1));
        let refill_per_sec = if refill_per_sec.is_finite() && refill_per_sec > 0.0 {
            refill_per_sec
        } else {
            1.0
        };
        TokenBucket {
            capacity,
            refill_per_sec,
            state: Mutex::new(BucketState {
                tokens: capacity,
                last: Instant::now(),
            }),
        }
    }

    /// Takes a token now if there is one; otherwise says how long until there will be.
    fn take(&self) -> Result<(), Duration> {
        let mut s = self.state.lock().unwrap_or_else(|e| e.into_inner());
        let now = Instant::now();
        let elapsed = now.saturating_duration_since(s.last).as_secs_f64();
        s.tokens = (s.tokens + elapsed * self.refill_per_sec).min(self.capacity);
        s.last = now;
        if s.tokens >= 1.0 {
            s.tokens -= 1.0;
            Ok(())
        } else {
            let wait = (1.0 - s.tokens) / self.refill_per_sec;
            // Never a zero sleep (no tight loop on rounding).
            Err(Duration::from_secs_f64(wait).max(Duration::from_millis(1)))
        }
    }

    /// Takes a token without waiting; false when the bucket is empty.
    pub fn try_acquire(&self) -> bool {
        self.take().is_ok()
    }

    /// Takes a token, waiting until one is available.
    pub async fn acquire(&self) {
        loop {
            match self.take() {
                Ok(()) => return,
                Err(wait) => tokio::time::sleep(wait).await,
            }
        }
    }

    /// Tokens available now (for tests and metrics).
    pub fn available(&self) -> f64 {
        let s = self.state.lock().unwrap_or_else(|e| e.into_inner());
        let elapsed = Instant::now()
            .saturating_duration_since(s.last)
            .as_secs_f64();
        (s.tokens + elapsed * self.refill_per_sec).min(self.capacity)
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};

    use super::*;

    #[test]
    fn codes_are_grouped() {
        let err = |code| classify("RunInstances", Some(code), Some("msg"), Some(400));
        assert!(matches!(
            err("InsufficientInstanceCapacity"),
            ProviderError::InsufficientCapacity(_)
        ));
        assert!(matches!(
            err("InsufficientHostCapacity"),
            ProviderError::InsufficientCapacity(_)
        ));
        for code in [
            "InstanceLimitExceeded",
            "VcpuLimitExceeded",
            "MaxSpotInstanceCountExceeded",
        ] {
            assert!(
                matches!(err(code), ProviderError::LimitExceeded(_)),
                "{code}"
            );
        }
        for code in ["RequestLimitExceeded", "Throttling", "ThrottlingException"] {
            assert!(matches!(err(code), ProviderError::Throttled(_)), "{code}");
        }
        for code in [
            "InvalidLaunchTemplateName.NotFoundException",
            "InvalidLaunchTemplateId.NotFound",
            "InvalidLaunchTemplateId.Malformed",
            "Unsupported",
            "InvalidParameterValue",
        ] {
            assert!(matches!(err(code), ProviderError::Config(_)), "{code}");
        }
        let nf = err("InvalidInstanceID.NotFound");
        assert!(is_not_found(&nf));
        assert_eq!(api_code(&nf), Some("InvalidInstanceID.NotFound"));
        assert!(matches!(
            err("SomethingNew"),
            ProviderError::Api { ref code, .. } if code == "SomethingNew"
        ));
        assert!(matches!(
            classify("RunInstances", Some("InternalError"), None, Some(500)),
            ProviderError::Unavailable(_)
        ));
        assert!(matches!(
            classify("RunInstances", None, Some("<html>"), Some(503)),
            ProviderError::Unavailable(_)
        ));
    }

    #[test]
    fn sets_do_not_overlap() {
        let sets = [
            CAPACITY_CODES,
            LIMIT_CODES,
            THROTTLING_CODES,
            CONFIG_CODES,
            NOT_FOUND_CODES,
        ];
        for (i, a) in sets.iter().enumerate() {
            for b in &sets[i + 1..] {
                for code in *a {
                    assert!(!b.contains(code), "{code} is in two sets");
                }
            }
        }
    }

    #[test]
    fn messages_keep_the_aws_code_and_text() {
        let e = classify(
            "RunInstances",
            Some("InvalidLaunchTemplateName.NotFoundException"),
            Some("The launch template does not exist."),
            Some(400),
        );
        assert_eq!(
            e.to_string(),
            "configuration error: RunInstances: InvalidLaunchTemplateName.NotFoundException: \
             The launch template does not exist."
        );
        assert_eq!(e.kind(), "config");
    }

    #[test]
    fn next_override_on_capacity_and_per_type_errors_only() {
        let err = |code| classify("RunInstances", Some(code), Some("m"), Some(400));
        assert!(try_next_override(&err("InsufficientInstanceCapacity")));
        assert!(try_next_override(&err("Unsupported")));
        assert!(try_next_override(&err("InstanceLimitExceeded")));
        assert!(!try_next_override(&err(
            "InvalidLaunchTemplateName.NotFoundException"
        )));
        assert!(!try_next_override(&err("RequestLimitExceeded")));
        assert!(!try_next_override(&err("UnauthorizedOperation")));
    }

    #[tokio::test(start_paused = true)]
    async fn backoff_retries_throttling_only_and_is_bounded() {
        let cfg = ThrottleConfig {
            max_attempts: 4,
            min_delay: Duration::from_millis(100),
            max_delay: Duration::from_secs(1),
            ..ThrottleConfig::default()
        };
        // Always throttled: exactly max_attempts calls, with growing sleeps in between.
        let calls = AtomicUsize::new(0);
        let start = Instant::now();
        let res: ProviderResult<()> = with_backoff(&cfg, "Op", || async {
            calls.fetch_add(1, Ordering::SeqCst);
            Err(ProviderError::Throttled("slow down".into()))
        })
        .await;
        assert!(matches!(res, Err(ProviderError::Throttled(_))));
        assert_eq!(calls.load(Ordering::SeqCst), 4);
        // 100 + 200 + 400 ms at least, jitter adds at most as much again.
        let waited = start.elapsed();
        assert!(
            waited >= Duration::from_millis(700) && waited < Duration::from_millis(1400),
            "{waited:?}"
        );

        // Throttled twice, then fine.
        let calls = AtomicUsize::new(0);
        let res = with_backoff(&cfg, "Op", || async {
            if calls.fetch_add(1, Ordering::SeqCst) < 2 {
                Err(ProviderError::Throttled("slow down".into()))
            } else {
                Ok(7)
            }
        })
        .await;
        assert_eq!(res.unwrap(), 7);
        assert_eq!(calls.load(Ordering::SeqCst), 3);

        // Other errors are not retried.
        let calls = AtomicUsize::new(0);
        let res: ProviderResult<()> = with_backoff(&cfg, "Op", || async {
            calls.fetch_add(1, Ordering::SeqCst);
            Err(ProviderError::InsufficientCapacity("none".into()))
        })
        .await;
        assert!(res.is_err());
        assert_eq!(calls.load(Ordering::SeqCst), 1);
    }

    #[tokio::test(start_paused = true)]
    async fn bucket_allows_a_burst_then_the_refill_rate() {
        let bucket = TokenBucket::new(5, 2.0);
        let start = Instant::now();
        for _ in 0..5 {
            bucket.acquire().await;
        }
        assert_eq!(start.elapsed(), Duration::ZERO, "the burst is immediate");
        assert!(!bucket.try_acquire());
        bucket.acquire().await;
        let sixth = start.elapsed();
        assert!(
            sixth >= Duration::from_millis(499) && sixth <= Duration::from_millis(502),
            "{sixth:?}"
        );
        for _ in 0..10 {
            bucket.acquire().await;
        }
        // 10 more tokens at 2/s: 5 more seconds.
        let total = start.elapsed();
        assert!(
            total >= Duration::from_millis(5499) && total <= Duration::from_millis(5510),
            "{total:?}"
        );
        // Idle time refills up to the capacity, not beyond.
        tokio::time::advance(Duration::from_secs(60)).await;
        assert!((bucket.available() - 5.0).abs() < 1e-9);
    }

    #[tokio::test(start_paused = true)]
    async fn bucket_is_shared_by_concurrent_callers() {
        let bucket = std::sync::Arc::new(TokenBucket::new(2, 4.0));
        let start = Instant::now();
        let tasks: Vec<_> = (0..6)
            .map(|_| {
                let b = bucket.clone();
                tokio::spawn(async move {
                    b.acquire().await;
                    Instant::now()
                })
            })
            .collect();
        let mut done = Vec::new();
        for t in tasks {
            done.push(t.await.unwrap() - start);
        }
        done.sort();
        // 2 at once, then one every 250 ms.
        assert_eq!(done[1], Duration::ZERO);
        assert!(done[5] >= Duration::from_millis(999), "{done:?}");
        assert!(done[5] <= Duration::from_millis(1010), "{done:?}");
    }
}
