//! An EC2 instance as the controller sees it: its state, launch time, batch tag, and how it
//! was bought and where (for its price); a reclaimed spot instance is counted as an
//! interruption once.

use aws_sdk_ec2::types::{InstanceLifecycleType, InstanceStateName};

use super::fleet;
use super::Ec2Fleet;
use crate::provider::offerings::{is_spot_interruption, Lifecycle};
use crate::provider::{Instance, InstanceState, Market, TAG_LAUNCH_BATCH};

impl Ec2Fleet {
    /// EC2's instance as ours; `None` for terminated (gone) ones.
    pub(super) fn convert(&self, i: &aws_sdk_ec2::types::Instance) -> Option<Instance> {
        let id = i.instance_id()?.to_string();
        let state = match i.state().and_then(|s| s.name())? {
            InstanceStateName::Pending => InstanceState::Pending,
            InstanceStateName::Running => InstanceState::Running,
            InstanceStateName::Terminated => return None,
            // shutting-down, stopping, stopped, and states a future API may add.
            _ => InstanceState::Stopping,
        };
        let launched_at = i
            .launch_time()
            .and_then(|t| t.to_millis().ok())
            .unwrap_or_else(|| self.cfg.clock.now());
        self.note_interruption(i, &id);
        let tag = |key: &str| {
            i.tags()
                .iter()
                .find(|t| t.key() == Some(key))
                .and_then(|t| t.value())
                .map(str::to_string)
        };
        Some(Instance {
            id,
            fleet: self.cfg.fleet.clone(),
            state,
            launched_at,
            instance_type: i.instance_type().map(|t| t.as_str().to_string()),
            launch_batch: tag(TAG_LAUNCH_BATCH),
            protected: false,
            market: Market {
                lifecycle: Some(
                    if i.instance_lifecycle() == Some(&InstanceLifecycleType::Spot) {
                        Lifecycle::Spot
                    } else {
                        Lifecycle::OnDemand
                    },
                ),
                zone: i
                    .placement()
                    .and_then(|p| p.availability_zone())
                    .map(str::to_string),
            },
        })
    }

    /// Counts a listed spot instance that EC2 reclaimed as an interruption (once per id).
    fn note_interruption(&self, i: &aws_sdk_ec2::types::Instance, id: &str) {
        let spot = i.instance_lifecycle() == Some(&InstanceLifecycleType::Spot);
        let reclaimed = i
            .state_reason()
            .and_then(|r| r.code())
            .is_some_and(is_spot_interruption);
        if !(spot && reclaimed) {
            return;
        }
        let window = self
            .cfg
            .spec
            .spot_fallback
            .clone()
            .unwrap_or_default()
            .window;
        let now = self.cfg.clock.now();
        if self
            .capacity()
            .record_interruption(id, now, fleet::interruption_memory(window))
        {
            tracing::warn!(
                fleet = %self.cfg.fleet, instance = id,
                instance_type = i.instance_type().map(|t| t.as_str()).unwrap_or("unknown"),
                zone = i.placement().and_then(|p| p.availability_zone()).unwrap_or("unknown"),
                "spot instance interrupted"
            );
        }
    }
}
