//! The launch ledger: what a controller remembers about one fleet between passes, and how a
//! fresh listing of its instances updates it. Pure bookkeeping (no I/O, no clock reads): the
//! controller and `anamo simulate` both keep one [`FleetLedger`] per fleet and call the same
//! methods, so the simulator's figures come from the real bookkeeping.
//!
//! Launches are written ahead as *intents* (a batch token and a count) before the provider is
//! called, so that a controller that crashes mid-launch finds the batch again after a restart
//! and completes it instead of launching twice. An intent stays *pending* (capacity on its
//! way) until each of its instances has been listed once, or the boot timeout has passed.
//! Providers that pick their own instances (Auto Scaling groups) do not tag them with the
//! batch: a new untagged instance is adopted by the oldest intent still waiting.

use std::collections::{BTreeSet, HashMap, HashSet, VecDeque};

use serde::{Deserialize, Serialize};

use super::{estimate, CoolOff, FleetInput, FleetPolicy, PendingLaunch, StepView};
use crate::clock::Millis;
use crate::model::WorkerInfo;
use crate::provider::Instance;

/// A launch written ahead of the provider call (persisted by the controller).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LaunchIntent {
    pub batch: String,
    pub count: u32,
    pub launched_at: Millis,
    /// The provider confirmed the launch. Unconfirmed intents (crash or error mid-call) are
    /// issued again with the same token, which launches only what is missing.
    pub confirmed: bool,
    /// Instances of the batch listed at least once. Once listed, an instance counts as
    /// capacity by itself (or, if it died, as nothing): it is no longer "being launched".
    #[serde(default)]
    pub seen: BTreeSet<String>,
    /// Instances without a batch tag listed when the launch was planned: they are not the
    /// batch's, whatever the order in which they are listed later.
    #[serde(default, skip_serializing_if = "BTreeSet::is_empty")]
    pub known: BTreeSet<String>,
}

impl LaunchIntent {
    /// Instances of the batch not listed yet.
    pub fn unseen(&self) -> u32 {
        self.count.saturating_sub(self.seen.len() as u32)
    }
}

/// How a launch call ended, as the ledger needs to know it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LaunchResult {
    /// The provider accepted it and returned these many instance ids (0: it does not know
    /// them yet, the whole batch is on its way).
    Launched { ids: u32 },
    /// Nothing was launched (no capacity, a configuration error): drop the intent and launch
    /// nothing for the fleet until `cool_off.until`.
    Refused { cool_off: CoolOff },
    /// It may or may not have launched (throttled, timed out): the intent stays unconfirmed
    /// and is issued again with the same token next pass.
    Unknown,
}

/// One fleet's launch intents, capacity cool-off and last listing.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FleetLedger {
    intents: Vec<LaunchIntent>,
    cool_off: Option<CoolOff>,
    /// The intents were read from the store (or this ledger began them all).
    loaded: bool,
    /// Ids listed by the last successful listing (`None` before the first one).
    listed: Option<BTreeSet<String>>,
    /// The fleet's recent boot times, see [`BootMemory`].
    boots: BootMemory,
}

/// Launch to first registration of the fleet's most recently booted instances, newest last
/// (at most [`estimate::WINDOW`]), each instance once. The planner estimates the boot time
/// from them; the listing alone forgets it whenever the fleet scales to nothing, and the next
/// batch of work would be planned without it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
struct BootMemory {
    times: VecDeque<Millis>,
    /// Instances whose boot is remembered (pruned to the listing from time to time).
    counted: HashSet<String>,
}

impl BootMemory {
    fn observe(&mut self, listed: &[Instance], workers: &[WorkerInfo]) {
        let new: Vec<&Instance> = listed
            .iter()
            .filter(|x| !self.counted.contains(&x.id))
            .collect();
        if new.is_empty() {
            return;
        }
        let mut registered: HashMap<&str, Millis> = HashMap::new();
        for w in workers {
            if let Some(id) = w.instance_id.as_deref() {
                let at = registered.entry(id).or_insert(w.started_at);
                *at = (*at).min(w.started_at);
            }
        }
        for x in new {
            let Some(&at) = registered.get(x.id.as_str()) else {
                continue;
            };
            if at < x.launched_at {
                continue;
            }
            self.counted.insert(x.id.clone());
            self.times.push_back(at - x.launched_at);
            if self.times.len() > estimate::WINDOW {
                self.times.pop_front();
            }
        }
        // Forget instances no longer listed, once they are as many as the listed ones.
        if self.counted.len() > 2 * listed.len() + estimate::WINDOW {
            let ids: HashSet<&str> = listed.iter().map(|x| x.id.as_str()).collect();
            self.counted.retain(|id| ids.contains(id.as_str()));
        }
    }
}

impl FleetLedger {
    /// A ledger that starts with nothing to read back (the simulator's).
    pub fn fresh() -> Self {
        FleetLedger {
            loaded: true,
            ..Default::default()
        }
    }

    /// Whether the intents must be read from the store before the fleet acts.
    pub fn needs_load(&self) -> bool {
        !self.loaded
    }

    /// Takes over intents written by an earlier controller. They are unconfirmed: the earlier
    /// controller may have stopped mid-call, so they are issued again (same token).
    pub fn restore(&mut self, intents: Vec<LaunchIntent>) {
        self.intents = intents
            .into_iter()
            .map(|mut i| {
                i.confirmed = false;
                i
            })
            .collect();
        self.loaded = true;
    }

    /// Forgets what this controller knew: another leader may have launched since, so the
    /// intents are read again and every listed instance is new again.
    pub fn invalidate(&mut self) {
        self.loaded = false;
        self.listed = None;
    }

    pub fn intents(&self) -> &[LaunchIntent] {
        &self.intents
    }

    pub fn cool_off(&self) -> Option<&CoolOff> {
        self.cool_off.as_ref()
    }

    /// Updates the ledger with this pass's listing (`None` when it failed): marks the batches'
    /// listed instances as seen, adopts new untagged instances, drops intents whose instances
    /// were all listed or that are older than `boot_timeout`, and ends an elapsed cool-off.
    pub fn observe(&mut self, listed: Option<&[Instance]>, boot_timeout: Millis, now: Millis) {
        if let Some(list) = listed {
            for i in self.intents.iter_mut() {
                for x in list {
                    if x.launch_batch.as_deref() == Some(i.batch.as_str()) {
                        i.seen.insert(x.id.clone());
                    }
                }
            }
            self.adopt_untagged(list);
            self.listed = Some(list.iter().map(|x| x.id.clone()).collect());
            self.intents
                .retain(|i| i.unseen() > 0 && now - i.launched_at < boot_timeout);
        }
        if self.cool_off.as_ref().is_some_and(|c| c.until <= now) {
            self.cool_off = None;
        }
    }

    /// Untagged instances listed for the first time go to the oldest intent still waiting
    /// that did not know them already.
    fn adopt_untagged(&mut self, list: &[Instance]) {
        let mut new_untagged: Vec<&Instance> = list
            .iter()
            .filter(|x| x.launch_batch.is_none())
            .filter(|x| !self.listed.as_ref().is_some_and(|l| l.contains(&x.id)))
            .filter(|x| !self.intents.iter().any(|i| i.seen.contains(&x.id)))
            .collect();
        new_untagged.sort_by(|a, b| (a.launched_at, &a.id).cmp(&(b.launched_at, &b.id)));
        for x in new_untagged {
            if let Some(i) = self
                .intents
                .iter_mut()
                .find(|i| i.unseen() > 0 && !i.known.contains(&x.id))
            {
                i.seen.insert(x.id.clone());
            }
        }
    }

    /// The launches the planner counts as on their way. The planner subtracts a batch's listed
    /// instances from `count`; it gets the unseen ones plus those, so that an instance that
    /// was listed and then died is not counted as still launching.
    pub fn pending_launches(&self, listed: Option<&[Instance]>) -> Vec<PendingLaunch> {
        self.intents
            .iter()
            .map(|i| {
                let listed_now = listed.map_or(0, |l| {
                    l.iter()
                        .filter(|x| x.launch_batch.as_deref() == Some(i.batch.as_str()))
                        .count() as u32
                });
                PendingLaunch {
                    batch: i.batch.clone(),
                    count: i.unseen() + listed_now,
                    launched_at: i.launched_at,
                }
            })
            .collect()
    }

    /// Intents whose launch call was never confirmed, to issue again.
    pub fn unconfirmed(&self) -> Vec<LaunchIntent> {
        self.intents
            .iter()
            .filter(|i| !i.confirmed)
            .cloned()
            .collect()
    }

    /// Records a new launch of `count` under `batch`, before the provider is called.
    /// `listed` is this pass's listing: its untagged instances are not the batch's.
    pub fn begin(
        &mut self,
        batch: String,
        count: u32,
        now: Millis,
        listed: &[Instance],
    ) -> LaunchIntent {
        let intent = LaunchIntent {
            batch,
            count,
            launched_at: now,
            confirmed: false,
            seen: BTreeSet::new(),
            known: listed
                .iter()
                .filter(|i| i.launch_batch.is_none())
                .map(|i| i.id.clone())
                .collect(),
        };
        self.intents.push(intent.clone());
        intent
    }

    /// Forgets an intent (it could not be written ahead, so it was not launched).
    pub fn forget(&mut self, batch: &str) {
        self.intents.retain(|i| i.batch != batch);
    }

    /// Reconciles the ledger with this pass's listing (`Err`: it failed) and gives the
    /// planner's input for the fleet: what was observed, with the launches still on their way
    /// and the cool-off. The controller and the simulator call it once per fleet and pass.
    pub fn reconcile(
        &mut self,
        policy: FleetPolicy,
        step: Result<StepView, String>,
        instances: Result<Vec<Instance>, String>,
        scale_in_protection: bool,
        now: Millis,
    ) -> FleetInput {
        let listed = instances.as_deref().ok();
        self.observe(listed, policy.boot_timeout, now);
        let step = step.map(|mut view| {
            if let Some(list) = listed {
                self.boots.observe(list, &view.workers);
            }
            view.recent.boots = self.boots.times.iter().copied().collect();
            view
        });
        FleetInput {
            cool_off: self.cool_off().cloned(),
            pending_launches: self.pending_launches(listed),
            policy,
            step,
            instances,
            scale_in_protection,
        }
    }

    /// Records how the launch call of `batch` ended. `lists_at_once`: the provider lists a
    /// launched instance as soon as the call returns, so nothing of the batch is pending.
    pub fn finish(&mut self, batch: &str, result: LaunchResult, lists_at_once: bool) {
        match result {
            LaunchResult::Launched { ids } => {
                if let Some(i) = self.intents.iter_mut().find(|i| i.batch == batch) {
                    i.confirmed = true;
                    // Fewer than asked: the planner launches the rest on a later pass.
                    if ids > 0 {
                        i.count = ids.min(i.count);
                    }
                }
                self.intents.retain(|i| i.count > 0);
                if lists_at_once {
                    self.forget(batch);
                }
            }
            LaunchResult::Refused { cool_off } => {
                self.forget(batch);
                self.cool_off = Some(cool_off);
            }
            LaunchResult::Unknown => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::provider::InstanceState;

    const BOOT: Millis = 300_000;

    fn inst(id: &str, batch: Option<&str>, at: Millis) -> Instance {
        Instance {
            id: id.into(),
            fleet: "f".into(),
            state: InstanceState::Pending,
            launched_at: at,
            instance_type: None,
            launch_batch: batch.map(str::to_string),
            protected: false,
            market: Default::default(),
        }
    }

    fn pending(l: &FleetLedger, listed: &[Instance]) -> Vec<u32> {
        l.pending_launches(Some(listed))
            .iter()
            .map(|p| p.count)
            .collect()
    }

    #[test]
    fn an_intent_stays_pending_until_each_instance_was_listed_once() {
        let mut l = FleetLedger::fresh();
        l.begin("b1".into(), 2, 0, &[]);
        l.finish("b1", LaunchResult::Launched { ids: 2 }, false);
        let one = [inst("i-1", Some("b1"), 0)];
        l.observe(Some(&one), BOOT, 10);
        assert_eq!(l.intents()[0].unseen(), 1);
        // The planner subtracts the listed one: one still on its way.
        assert_eq!(pending(&l, &one), vec![2]);
        // i-1 died, i-2 appears: every instance was listed once, nothing is pending.
        let two = [inst("i-2", Some("b1"), 0)];
        l.observe(Some(&two), BOOT, 20);
        assert!(l.intents().is_empty());
    }

    #[test]
    fn a_listed_instance_that_died_is_not_counted_as_launching() {
        let mut l = FleetLedger::fresh();
        l.begin("b1".into(), 2, 0, &[]);
        l.observe(Some(&[inst("i-1", Some("b1"), 0)]), BOOT, 10);
        // i-1 is gone now: only the one never listed is pending.
        assert_eq!(pending(&l, &[]), vec![1]);
    }

    #[test]
    fn intents_expire_after_the_boot_timeout() {
        let mut l = FleetLedger::fresh();
        l.begin("b1".into(), 1, 0, &[]);
        l.observe(Some(&[]), BOOT, BOOT - 1);
        assert_eq!(l.intents().len(), 1);
        l.observe(Some(&[]), BOOT, BOOT);
        assert!(l.intents().is_empty());
    }

    #[test]
    fn a_failed_listing_keeps_the_intents() {
        let mut l = FleetLedger::fresh();
        l.begin("b1".into(), 1, 0, &[]);
        l.observe(None, BOOT, BOOT * 2);
        assert_eq!(l.intents().len(), 1);
    }

    #[test]
    fn untagged_instances_go_to_the_oldest_waiting_intent_it_did_not_know() {
        let mut l = FleetLedger::fresh();
        let old = [inst("i-old", None, 0)];
        l.observe(Some(&old), BOOT, 0);
        l.begin("b1".into(), 1, 10, &old);
        l.begin("b2".into(), 1, 20, &old);
        // i-old was there before either launch; i-new is the first launch's.
        let now = [inst("i-old", None, 0), inst("i-new", None, 15)];
        l.observe(Some(&now), BOOT, 30);
        assert_eq!(l.intents().len(), 1);
        assert_eq!(l.intents()[0].batch, "b2");
    }

    #[test]
    fn untagged_instances_already_listed_are_not_adopted() {
        let mut l = FleetLedger::fresh();
        let before = [inst("i-1", None, 0)];
        // Listed before the launch, though the intent did not know it (e.g. restored).
        l.observe(Some(&before), BOOT, 0);
        l.restore(vec![LaunchIntent {
            batch: "b1".into(),
            count: 1,
            launched_at: 0,
            confirmed: true,
            seen: BTreeSet::new(),
            known: BTreeSet::new(),
        }]);
        l.observe(Some(&before), BOOT, 10);
        assert_eq!(l.intents()[0].unseen(), 1);
    }

    #[test]
    fn restored_intents_are_issued_again() {
        let mut l = FleetLedger::default();
        assert!(l.needs_load());
        let mut i = FleetLedger::fresh().begin("b1".into(), 3, 0, &[]);
        i.confirmed = true;
        l.restore(vec![i]);
        assert!(!l.needs_load());
        assert_eq!(l.unconfirmed().len(), 1);
        l.invalidate();
        assert!(l.needs_load());
    }

    #[test]
    fn launch_results() {
        let cool = CoolOff {
            until: 100,
            reason: "no capacity".into(),
        };
        let mut l = FleetLedger::fresh();
        l.begin("b1".into(), 3, 0, &[]);
        l.finish("b1", LaunchResult::Unknown, false);
        assert_eq!(l.unconfirmed().len(), 1, "unknown: issued again");
        l.finish("b1", LaunchResult::Launched { ids: 2 }, false);
        assert_eq!(l.intents()[0].count, 2, "fewer than asked");
        assert!(l.unconfirmed().is_empty());
        l.finish("b1", LaunchResult::Launched { ids: 0 }, true);
        assert!(l.intents().is_empty(), "listed at once: nothing pending");
        l.begin("b2".into(), 1, 0, &[]);
        l.finish(
            "b2",
            LaunchResult::Refused {
                cool_off: cool.clone(),
            },
            false,
        );
        assert!(l.intents().is_empty());
        assert_eq!(l.cool_off(), Some(&cool));
        l.observe(None, BOOT, 99);
        assert!(l.cool_off().is_some());
        l.observe(None, BOOT, 100);
        assert!(l.cool_off().is_none());
    }

    /// The planner's input carries what the listing left of the ledger: a batch half listed
    /// is still launching the rest; with a failed listing nothing is matched.
    #[test]
    fn reconcile_gives_the_planner_the_launches_on_their_way() {
        let mut l = FleetLedger::fresh();
        l.begin("b1".into(), 2, 0, &[]);
        l.finish("b1", LaunchResult::Launched { ids: 0 }, false);
        let policy = crate::planner::tests::policy();
        let listing = vec![inst("i-1", Some("b1"), 0)];
        let input = l.reconcile(
            policy.clone(),
            Err("no store".into()),
            Ok(listing),
            false,
            10,
        );
        assert_eq!(input.pending_launches.len(), 1);
        // One unseen, plus the listed one (which the planner subtracts by its batch tag).
        assert_eq!(input.pending_launches[0].count, 2, "{input:?}");
        assert_eq!(l.intents()[0].unseen(), 1);
        assert_eq!((input.policy, input.cool_off), (policy.clone(), None));
        let failed = l.reconcile(
            policy,
            Err("x".into()),
            Err("listing failed".into()),
            false,
            20,
        );
        assert_eq!(failed.instances, Err("listing failed".to_string()));
        assert_eq!(l.intents()[0].seen.len(), 1);
    }

    #[test]
    fn boot_times_outlive_the_instances_that_showed_them() {
        use crate::planner::tests::{input, worker, MIN, NOW, SEC};
        let boots = |l: &mut FleetLedger, listed: Vec<Instance>, workers| {
            let i = input(0, 0, listed, workers);
            let fleet = l.reconcile(i.policy, i.step, i.instances, false, NOW);
            fleet.step.map(|v| v.recent.boots).unwrap_or_default()
        };
        // The test workers registered 3 h before NOW: i-1 booted in 90 s, i-2 in 2 min.
        let registered = NOW - 3 * 60 * MIN;
        let one = || inst("i-1", None, registered - 90 * SEC);
        let mut l = FleetLedger::fresh();
        assert_eq!(boots(&mut l, vec![one()], vec![]), Vec::<Millis>::new());
        assert_eq!(
            boots(&mut l, vec![one()], vec![worker("i-1", 0, 0)]),
            [90 * SEC]
        );
        // Listed again: counted once.
        assert_eq!(
            boots(&mut l, vec![one()], vec![worker("i-1", 0, 0)]),
            [90 * SEC]
        );
        // The fleet scaled to nothing: the boot time stays for the next launch.
        assert_eq!(boots(&mut l, vec![], vec![]), [90 * SEC]);
        let two = inst("i-2", None, registered - 120 * SEC);
        assert_eq!(
            boots(&mut l, vec![two], vec![worker("i-2", 0, 0)]),
            [90 * SEC, 120 * SEC]
        );
    }
}
