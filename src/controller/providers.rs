//! Building and keeping one provider per fleet, from the manifests.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use crate::clock::SharedClock;
use crate::manifest::{FleetManifest, FleetSpec, ProviderSpec};
use crate::provider::local::{LocalFleet, LocalFleetConfig};
use crate::provider::{FleetProvider, ProviderError};

/// How the controller starts workers, shared by every provider.
#[derive(Debug, Clone)]
pub struct WorkerLaunch {
    /// Store URL the workers use.
    pub store_url: String,
    /// The `anamo` binary for local workers.
    pub exe: PathBuf,
    /// Where local workers' logs go.
    pub log_dir: Option<PathBuf>,
    /// Extra environment for local workers.
    pub env: BTreeMap<String, String>,
    /// Run every fleet as local processes whatever its provider (`anamo up`).
    pub force_local: bool,
    /// Where EC2 instances download the `anamo` binary (user-data); `None`: it is in the AMI.
    pub binary_url: Option<String>,
}

/// `anamo worker` arguments (after `--step`) that a fleet spec implies.
pub fn worker_args(spec: &FleetSpec) -> Vec<String> {
    let mut args = vec![
        "--slots".to_string(),
        spec.slots_per_instance.to_string(),
        "--lease-ttl".to_string(),
        format!("{}ms", spec.lease_ttl.as_millis()),
        "--heartbeat".to_string(),
        format!("{}ms", spec.heartbeat_interval().as_millis()),
    ];
    if let Some(idle) = spec.idle_exit {
        args.push("--idle-exit".into());
        args.push(format!("{}ms", idle.as_millis()));
    }
    if let Some(url) = &spec.log_url {
        args.push("--log-url".into());
        args.push(url.clone());
    }
    args.extend(spec.worker_args.iter().cloned());
    args
}

#[derive(Debug, Clone)]
pub enum ProviderHandle {
    Local(Arc<LocalFleet>),
    Remote(Arc<dyn FleetProvider>),
}

impl ProviderHandle {
    pub fn get(&self) -> Arc<dyn FleetProvider> {
        match self {
            ProviderHandle::Local(l) => l.clone(),
            ProviderHandle::Remote(r) => r.clone(),
        }
    }
}

struct Entry {
    /// What the provider was built from; a change rebuilds it.
    key: (ProviderSpec, Vec<String>),
    handle: ProviderHandle,
}

/// One provider per fleet, rebuilt when the fleet's provider settings change.
pub struct ProviderSet {
    launch: WorkerLaunch,
    clock: SharedClock,
    cluster: String,
    entries: BTreeMap<String, Entry>,
    /// Builds EC2 and Auto Scaling providers (they need AWS clients).
    remote: Option<Box<dyn RemoteFactory>>,
}

/// Builds providers that talk to AWS.
#[async_trait::async_trait]
pub trait RemoteFactory: Send + Sync {
    async fn build(
        &self,
        cluster: &str,
        fleet: &FleetManifest,
        launch: &WorkerLaunch,
    ) -> Result<Arc<dyn FleetProvider>, ProviderError>;
}

impl ProviderSet {
    pub fn new(
        launch: WorkerLaunch,
        clock: SharedClock,
        cluster: &str,
        remote: Option<Box<dyn RemoteFactory>>,
    ) -> Self {
        ProviderSet {
            launch,
            clock,
            cluster: cluster.to_string(),
            entries: BTreeMap::new(),
            remote,
        }
    }

    pub fn launch_settings(&self) -> &WorkerLaunch {
        &self.launch
    }

    /// The provider of `fleet`, building or rebuilding it as its manifest requires.
    pub async fn get(
        &mut self,
        fleet: &FleetManifest,
    ) -> Result<Arc<dyn FleetProvider>, ProviderError> {
        let provider_spec = if self.launch.force_local {
            ProviderSpec::Local(Default::default())
        } else {
            fleet.spec.provider.clone()
        };
        let key = (provider_spec.clone(), worker_args(&fleet.spec));
        if let Some(e) = self.entries.get_mut(fleet.name()) {
            if e.key == key {
                return Ok(e.handle.get());
            }
        }
        let handle = match &provider_spec {
            ProviderSpec::Local(_) => ProviderHandle::Local(Arc::new(LocalFleet::new(
                LocalFleetConfig {
                    fleet: fleet.name().to_string(),
                    step: fleet.step().to_string(),
                    exe: self.launch.exe.clone(),
                    store: self.launch.store_url.clone(),
                    worker_args: key.1.clone(),
                    log_dir: self.launch.log_dir.clone(),
                    env: self.launch.env.clone(),
                },
                self.clock.clone(),
            ))),
            ProviderSpec::Ec2(_) | ProviderSpec::Autoscaling(_) => {
                let factory = self.remote.as_ref().ok_or_else(|| {
                    ProviderError::Config(format!(
                        "fleet {} uses the {} provider, which needs AWS access",
                        fleet.name(),
                        provider_spec.kind()
                    ))
                })?;
                ProviderHandle::Remote(factory.build(&self.cluster, fleet, &self.launch).await?)
            }
        };
        let provider = handle.get();
        if let Some(old) = self
            .entries
            .insert(fleet.name().to_string(), Entry { key, handle })
        {
            // The old local workers drain; remote instances stay and are found again by tag.
            if let ProviderHandle::Local(l) = old.handle {
                tokio::spawn(async move { l.shutdown(Duration::from_secs(30)).await });
            }
        }
        Ok(provider)
    }

    /// Forgets fleets no longer in the manifests (their local workers are drained).
    pub async fn retain(&mut self, fleets: &[&str]) {
        let gone: Vec<String> = self
            .entries
            .keys()
            .filter(|k| !fleets.contains(&k.as_str()))
            .cloned()
            .collect();
        for name in gone {
            if let Some(Entry {
                handle: ProviderHandle::Local(l),
                ..
            }) = self.entries.remove(&name)
            {
                l.shutdown(Duration::from_secs(30)).await;
            }
        }
    }

    /// Drains every local worker (controller shutdown).
    pub async fn shutdown_local(&self, grace: Duration) {
        let locals: Vec<Arc<LocalFleet>> = self
            .entries
            .values()
            .filter_map(|e| match &e.handle {
                ProviderHandle::Local(l) => Some(l.clone()),
                _ => None,
            })
            .collect();
        futures::future::join_all(locals.iter().map(|l| l.shutdown(grace))).await;
    }
}
