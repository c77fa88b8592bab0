//! Builds `ec2` and `autoscaling` fleet providers from the default AWS configuration
//! (credentials chain, `AWS_REGION`, `AWS_ENDPOINT_URL`), sharing one rate limit for mutating
//! EC2 calls across fleets (RunInstances is limited per account).

use std::sync::Arc;

use aws_config::retry::RetryConfig;
use aws_config::BehaviorVersion;

use super::providers::{RemoteFactory, WorkerLaunch};
use crate::manifest::{FleetManifest, ProviderSpec};
use crate::provider::asg::{AsgFleet, AsgFleetConfig};
use crate::provider::aws_error::{ThrottleConfig, TokenBucket};
use crate::provider::ec2::{Ec2Fleet, Ec2FleetConfig};
use crate::provider::user_data::WorkerValues;
use crate::provider::{FleetProvider, ProviderError};

/// Loads the AWS configuration on first use, so controllers with only local fleets never
/// touch it.
pub struct AwsFactory {
    region: Option<String>,
    clients: tokio::sync::OnceCell<Clients>,
    bucket: Arc<TokenBucket>,
}

struct Clients {
    ec2: aws_sdk_ec2::Client,
    asg: aws_sdk_autoscaling::Client,
    region: Option<String>,
}

impl AwsFactory {
    pub fn new(region: Option<String>) -> Self {
        AwsFactory {
            region,
            clients: tokio::sync::OnceCell::new(),
            bucket: Arc::new(ThrottleConfig::default().bucket()),
        }
    }

    /// The providers retry throttling themselves (with backoff and a token bucket), so the
    /// SDK's own retries are reduced to avoid stacking them.
    async fn clients(&self) -> &Clients {
        self.clients
            .get_or_init(|| async {
                let mut loader = aws_config::defaults(BehaviorVersion::latest())
                    .retry_config(RetryConfig::standard().with_max_attempts(2));
                if let Some(r) = &self.region {
                    loader = loader.region(aws_config::Region::new(r.clone()));
                }
                let conf = loader.load().await;
                Clients {
                    ec2: aws_sdk_ec2::Client::new(&conf),
                    asg: aws_sdk_autoscaling::Client::new(&conf),
                    region: conf.region().map(|r| r.to_string()),
                }
            })
            .await
    }
}

#[async_trait::async_trait]
impl RemoteFactory for AwsFactory {
    async fn build(
        &self,
        cluster: &str,
        fleet: &FleetManifest,
        launch: &WorkerLaunch,
    ) -> Result<Arc<dyn FleetProvider>, ProviderError> {
        let c = self.clients().await;
        match &fleet.spec.provider {
            ProviderSpec::Ec2(_) => {
                let mut values =
                    WorkerValues::for_fleet(fleet, cluster, &launch.store_url, c.region.as_deref());
                values.anamo_url = launch.binary_url.clone();
                let mut cfg = Ec2FleetConfig::from_manifest(fleet, &values)?;
                cfg.bucket = Some(self.bucket.clone());
                Ok(Arc::new(Ec2Fleet::new(c.ec2.clone(), cfg)))
            }
            ProviderSpec::Autoscaling(_) => {
                let mut cfg = AsgFleetConfig::from_manifest(fleet)?;
                cfg.bucket = Some(self.bucket.clone());
                Ok(Arc::new(AsgFleet::new(c.asg.clone(), c.ec2.clone(), cfg)))
            }
            ProviderSpec::Local(_) => Err(ProviderError::Config(format!(
                "fleet {} is local; it needs no AWS provider",
                fleet.name()
            ))),
        }
    }
}
