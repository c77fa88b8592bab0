//! An in-memory provider for reconciler scenarios: instances appear on launch (idempotently per
//! batch, like the real providers), every call is recorded, and errors can be queued.

use std::collections::VecDeque;
use std::sync::Mutex;

use async_trait::async_trait;

use super::{
    FleetProvider, Instance, InstanceState, LaunchOutcome, LaunchRequest, ProviderError,
    ProviderResult,
};
use crate::clock::SharedClock;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Call {
    List,
    Launch { batch: String, count: u32 },
    Terminate(Vec<String>),
    SetProtection(Vec<String>, bool),
}

#[derive(Debug, Default)]
struct Inner {
    instances: Vec<Instance>,
    calls: Vec<Call>,
    launch_errors: VecDeque<ProviderError>,
    list_errors: VecDeque<ProviderError>,
    next_id: u64,
    /// Launch at most this many per call (like moto launching only MinCount).
    max_per_launch: Option<u32>,
    /// What `slots_per_instance` answers (slots derived per instance type).
    slots_per_instance: Option<u32>,
}

#[derive(Debug)]
pub struct FakeProvider {
    fleet: String,
    clock: SharedClock,
    inner: Mutex<Inner>,
}

impl FakeProvider {
    pub fn new(fleet: &str, clock: SharedClock) -> Self {
        FakeProvider {
            fleet: fleet.to_string(),
            clock,
            inner: Mutex::new(Inner::default()),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub fn calls(&self) -> Vec<Call> {
        self.lock().calls.clone()
    }

    pub fn instances(&self) -> Vec<Instance> {
        self.lock().instances.clone()
    }

    pub fn fail_next_launch(&self, e: ProviderError) {
        self.lock().launch_errors.push_back(e);
    }

    pub fn fail_next_list(&self, e: ProviderError) {
        self.lock().list_errors.push_back(e);
    }

    pub fn limit_per_launch(&self, n: Option<u32>) {
        self.lock().max_per_launch = n;
    }

    /// Answers `slots_per_instance` with `slots`, like an `ec2` fleet with `vcpusPerTask`.
    pub fn set_slots_per_instance(&self, slots: Option<u32>) {
        self.lock().slots_per_instance = slots;
    }

    /// Gives a listed instance an instance type and zone, as EC2 lists them.
    pub fn place(&self, id: &str, instance_type: &str, zone: &str) {
        for i in self.lock().instances.iter_mut().filter(|i| i.id == id) {
            i.instance_type = Some(instance_type.to_string());
            i.market.zone = Some(zone.to_string());
        }
    }

    /// Adds an instance as if launched earlier by someone (e.g. a previous controller).
    pub fn add_instance(&self, id: &str, batch: Option<&str>, launched_at: i64) {
        self.lock().instances.push(Instance {
            id: id.to_string(),
            fleet: self.fleet.clone(),
            state: InstanceState::Running,
            launched_at,
            instance_type: None,
            launch_batch: batch.map(str::to_string),
            protected: false,
            market: Default::default(),
        });
    }
}

#[async_trait]
impl FleetProvider for FakeProvider {
    async fn list(&self) -> ProviderResult<Vec<Instance>> {
        let mut inner = self.lock();
        inner.calls.push(Call::List);
        if let Some(e) = inner.list_errors.pop_front() {
            return Err(e);
        }
        Ok(inner.instances.clone())
    }

    async fn launch(&self, req: &LaunchRequest) -> ProviderResult<LaunchOutcome> {
        let now = self.clock.now();
        let mut inner = self.lock();
        inner.calls.push(Call::Launch {
            batch: req.batch_token.clone(),
            count: req.count,
        });
        if let Some(e) = inner.launch_errors.pop_front() {
            return Err(e);
        }
        let mut ids: Vec<String> = inner
            .instances
            .iter()
            .filter(|i| i.launch_batch.as_deref() == Some(req.batch_token.as_str()))
            .map(|i| i.id.clone())
            .collect();
        let missing = req.count.saturating_sub(ids.len() as u32);
        let n = inner.max_per_launch.map_or(missing, |m| m.min(missing));
        for _ in 0..n {
            inner.next_id += 1;
            let id = format!("i-fake{:04}", inner.next_id);
            inner.instances.push(Instance {
                id: id.clone(),
                fleet: self.fleet.clone(),
                state: InstanceState::Pending,
                launched_at: now,
                instance_type: Some("fake.large".into()),
                launch_batch: Some(req.batch_token.clone()),
                protected: false,
                market: Default::default(),
            });
            ids.push(id);
        }
        Ok(LaunchOutcome { instances: ids })
    }

    async fn terminate(&self, ids: &[String]) -> ProviderResult<()> {
        let mut inner = self.lock();
        inner.calls.push(Call::Terminate(ids.to_vec()));
        inner.instances.retain(|i| !ids.contains(&i.id));
        Ok(())
    }

    async fn set_protection(&self, ids: &[String], protected: bool) -> ProviderResult<()> {
        let mut inner = self.lock();
        inner
            .calls
            .push(Call::SetProtection(ids.to_vec(), protected));
        for i in inner.instances.iter_mut() {
            if ids.contains(&i.id) {
                i.protected = protected;
            }
        }
        Ok(())
    }

    fn slots_per_instance(&self) -> Option<u32> {
        self.lock().slots_per_instance
    }

    fn kind(&self) -> &'static str {
        "fake"
    }
}
