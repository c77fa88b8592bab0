//! The fault-injecting provider decorator, and backoff on the throttling it injects (paused
//! tokio time: nothing is slept through).

use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use async_trait::async_trait;
use tokio::time::Instant;

use anamo::provider::aws_error::{with_backoff, ThrottleConfig};
use anamo::provider::fault::{Call, FaultInjecting, Op};
use anamo::provider::{
    FleetProvider, Instance, InstanceState, LaunchOutcome, LaunchRequest, ProviderError,
    ProviderResult,
};

/// Launches `count` numbered instances; counts the calls that reach it.
#[derive(Debug, Default)]
struct Counting {
    launched: AtomicUsize,
    calls: AtomicUsize,
}

#[async_trait]
impl FleetProvider for Counting {
    async fn list(&self) -> ProviderResult<Vec<Instance>> {
        self.calls.fetch_add(1, Ordering::SeqCst);
        Ok((0..self.launched.load(Ordering::SeqCst))
            .map(|n| Instance {
                id: format!("i-{n}"),
                fleet: "align".into(),
                state: InstanceState::Running,
                launched_at: 0,
                instance_type: None,
                launch_batch: None,
                protected: false,
                market: Default::default(),
            })
            .collect())
    }

    async fn launch(&self, req: &LaunchRequest) -> ProviderResult<LaunchOutcome> {
        self.calls.fetch_add(1, Ordering::SeqCst);
        let start = self
            .launched
            .fetch_add(req.count as usize, Ordering::SeqCst);
        Ok(LaunchOutcome {
            instances: (start..start + req.count as usize)
                .map(|n| format!("i-{n}"))
                .collect(),
        })
    }

    async fn terminate(&self, _ids: &[String]) -> ProviderResult<()> {
        self.calls.fetch_add(1, Ordering::SeqCst);
        Ok(())
    }

    fn kind(&self) -> &'static str {
        "counting"
    }
}

fn request(count: u32) -> LaunchRequest {
    LaunchRequest {
        fleet: "align".into(),
        step: "align".into(),
        count,
        batch_token: "batch-1".into(),
        tags: Default::default(),
    }
}

#[tokio::test]
async fn injected_errors_come_first_and_every_call_is_recorded() {
    let p = FaultInjecting::new(Counting::default());
    assert_eq!(p.kind(), "counting");
    p.throttle_next(Op::Launch, 2);
    p.no_capacity_next(1);
    assert_eq!(p.pending_faults(Op::Launch), 3);

    let e1 = p.launch(&request(2)).await.unwrap_err();
    let e2 = p.launch(&request(2)).await.unwrap_err();
    let e3 = p.launch(&request(2)).await.unwrap_err();
    assert!(matches!(e1, ProviderError::Throttled(_)));
    assert!(matches!(e2, ProviderError::Throttled(_)));
    assert!(e3.is_capacity());
    assert_eq!(
        p.inner().calls.load(Ordering::SeqCst),
        0,
        "injected: not called"
    );

    let ok = p.launch(&request(2)).await.unwrap();
    assert_eq!(ok.instances, ["i-0", "i-1"]);
    // Other operations are not affected.
    assert_eq!(p.list().await.unwrap().len(), 2);
    p.terminate(&["i-0".into()]).await.unwrap();

    let records = p.records();
    let summary: Vec<(Op, Option<&str>, bool)> = records
        .iter()
        .map(|r| (r.call.op(), r.error, r.injected))
        .collect();
    assert_eq!(
        summary,
        [
            (Op::Launch, Some("throttled"), true),
            (Op::Launch, Some("throttled"), true),
            (Op::Launch, Some("insufficient_capacity"), true),
            (Op::Launch, None, false),
            (Op::List, None, false),
            (Op::Terminate, None, false),
        ]
    );
    assert_eq!(records[5].call, Call::Terminate(vec!["i-0".into()]));
    assert_eq!(p.calls(Op::Launch), 4);
    assert_eq!(p.launches().len(), 4);
    assert!(p.launches().iter().all(|r| r == &request(2)));
}

#[tokio::test]
async fn custom_errors_and_clearing() {
    let p = FaultInjecting::new(Counting::default());
    p.fail_next(Op::List, 5, || {
        ProviderError::Unavailable("injected: connection refused".into())
    });
    assert!(matches!(p.list().await, Err(ProviderError::Unavailable(_))));
    p.clear_faults();
    assert_eq!(p.pending_faults(Op::List), 0);
    assert!(p.list().await.is_ok());
    p.fail_next(Op::SetProtection, 1, || {
        ProviderError::Config("injected".into())
    });
    assert!(p.set_protection(&["i-0".into()], true).await.is_err());
    // The default set_protection of the inner provider does nothing.
    assert!(p.set_protection(&["i-0".into()], true).await.is_ok());
    p.clear_records();
    assert!(p.records().is_empty());
}

#[tokio::test(start_paused = true)]
async fn backoff_on_injected_throttling_counts_calls_and_waits() {
    let p = FaultInjecting::new(Counting::default());
    p.throttle_next(Op::Launch, 3);
    let cfg = ThrottleConfig {
        max_attempts: 5,
        min_delay: Duration::from_millis(200),
        max_delay: Duration::from_secs(2),
        ..ThrottleConfig::default()
    };
    let req = request(1);
    let start = Instant::now();
    let out = with_backoff(&cfg, "Launch", || p.launch(&req))
        .await
        .unwrap();
    assert_eq!(out.instances, ["i-0"]);
    assert_eq!(
        p.calls(Op::Launch),
        4,
        "three throttled calls, then one that worked"
    );
    assert_eq!(p.inner().calls.load(Ordering::SeqCst), 1);
    // Waited 200 + 400 + 800 ms, plus up to as much again of jitter: no tight loop.
    let waited = start.elapsed();
    assert!(
        waited >= Duration::from_millis(1400) && waited < Duration::from_millis(2800),
        "{waited:?}"
    );

    // Throttled for longer than the attempts allow: gives up, still throttled.
    p.throttle_next(Op::Launch, 10);
    let err = with_backoff(&cfg, "Launch", || p.launch(&req))
        .await
        .unwrap_err();
    assert!(matches!(err, ProviderError::Throttled(_)));
    assert_eq!(p.calls(Op::Launch), 4 + 5);
    assert_eq!(p.pending_faults(Op::Launch), 5);

    // Capacity errors are not retried by the backoff.
    p.clear_faults();
    p.no_capacity_next(1);
    let before = p.calls(Op::Launch);
    assert!(with_backoff(&cfg, "Launch", || p.launch(&req))
        .await
        .unwrap_err()
        .is_capacity());
    assert_eq!(p.calls(Op::Launch), before + 1);
}
