//! A [`FleetProvider`] decorator that counts and traces every call of the provider it wraps:
//! `anamo_provider_api_calls_total{provider,operation}`,
//! `anamo_provider_api_errors_total{provider,operation,kind}` (kind from
//! [`ProviderError::kind`], never the message) and `anamo_provider_throttled_total{provider}`,
//! each call in a `provider` tracing span. The controller wraps every fleet's provider in one,
//! as the store is wrapped in `store::instrumented`.
//!
//! The wrapped provider keeps its own behaviour exactly: every method (capabilities included)
//! delegates, and the result is passed through untouched.

use std::future::Future;
use std::sync::Arc;

use async_trait::async_trait;
use tracing::Instrument;

use super::{
    FleetProvider, Instance, LaunchOutcome, LaunchRequest, ProviderError, ProviderResult, SpotPrice,
};
use crate::metrics::Metrics;

/// Wraps a provider and records each call on the metrics registry.
#[derive(Debug)]
pub struct InstrumentedProvider {
    inner: Arc<dyn FleetProvider>,
    metrics: Arc<Metrics>,
}

impl InstrumentedProvider {
    pub fn new(inner: Arc<dyn FleetProvider>, metrics: Arc<Metrics>) -> Self {
        InstrumentedProvider { inner, metrics }
    }

    /// `inner` wrapped, as a shared provider.
    pub fn wrap(inner: Arc<dyn FleetProvider>, metrics: Arc<Metrics>) -> Arc<dyn FleetProvider> {
        Arc::new(InstrumentedProvider::new(inner, metrics))
    }

    async fn call<T>(
        &self,
        operation: &'static str,
        fut: impl Future<Output = ProviderResult<T>>,
    ) -> ProviderResult<T> {
        let kind = self.inner.kind();
        self.metrics
            .provider_calls
            .with_label_values(&[kind, operation])
            .inc();
        let span = tracing::debug_span!("provider", provider = kind, operation);
        let res = fut.instrument(span).await;
        if let Err(e) = &res {
            self.metrics
                .provider_errors
                .with_label_values(&[kind, operation, e.kind()])
                .inc();
            if matches!(e, ProviderError::Throttled(_)) {
                self.metrics
                    .provider_throttles
                    .with_label_values(&[kind])
                    .inc();
            }
        }
        res
    }
}

#[async_trait]
impl FleetProvider for InstrumentedProvider {
    async fn list(&self) -> ProviderResult<Vec<Instance>> {
        self.call("list", self.inner.list()).await
    }

    async fn launch(&self, req: &LaunchRequest) -> ProviderResult<LaunchOutcome> {
        self.call("launch", self.inner.launch(req)).await
    }

    async fn terminate(&self, ids: &[String]) -> ProviderResult<()> {
        self.call("terminate", self.inner.terminate(ids)).await
    }

    async fn set_protection(&self, ids: &[String], protected: bool) -> ProviderResult<()> {
        self.call("set_protection", self.inner.set_protection(ids, protected))
            .await
    }

    async fn spot_prices(&self, instance_types: &[String]) -> ProviderResult<Vec<SpotPrice>> {
        self.call("spot_prices", self.inner.spot_prices(instance_types))
            .await
    }

    fn lists_launches_immediately(&self) -> bool {
        self.inner.lists_launches_immediately()
    }

    fn scale_in_protection(&self) -> bool {
        self.inner.scale_in_protection()
    }

    fn slots_per_instance(&self) -> Option<u32> {
        self.inner.slots_per_instance()
    }

    fn kind(&self) -> &'static str {
        self.inner.kind()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::clock::ManualClock;
    use crate::provider::fake::FakeProvider;
    use crate::provider::fault::{FaultInjecting, Op};

    #[tokio::test]
    async fn counts_calls_errors_and_throttles_by_fixed_labels() {
        let metrics = Arc::new(Metrics::new());
        let fault = Arc::new(FaultInjecting::new(FakeProvider::new(
            "f",
            ManualClock::new(0),
        )));
        fault.throttle_next(Op::List, 1);
        let p = InstrumentedProvider::wrap(fault.clone(), metrics.clone());
        assert!(p.list().await.is_err());
        assert!(p.list().await.is_ok());
        let kind = p.kind();
        let calls = metrics.provider_calls.with_label_values(&[kind, "list"]);
        assert_eq!(calls.get(), 2);
        let errors = metrics
            .provider_errors
            .with_label_values(&[kind, "list", "throttled"]);
        assert_eq!(errors.get(), 1);
        assert_eq!(
            metrics.provider_throttles.with_label_values(&[kind]).get(),
            1
        );
        assert_eq!(fault.calls(Op::List), 2, "every call reached the provider");
    }
}
