//! What the simulated instances cost, accounted by the controller's own cost ledger
//! ([`CostLedger`], one per fleet): each instance is accrued just before its busy slots change
//! (a task ends, is claimed or handed back) and when it goes, so that its boot, busy and idle
//! time are exact to the tick, where the controller samples them once per pass. An instance
//! that goes is closed at once (its 60-second billing minimum applied); those still up at the
//! end are accrued to the end.

use super::World;
use crate::cost::ledger::Listed;
use crate::model::WorkerInfo;
use crate::planner::Spend;
use crate::provider::{Instance, InstanceState};

impl World {
    /// Accrues instance `i` up to now, in the state it has had since its last change.
    pub(super) fn accrue(&mut self, i: usize) {
        let now = self.now;
        let inst = &self.instances[i];
        let fi = inst.fleet;
        let listed = self.listing(i);
        let worker = inst.worker.as_ref().map(|w| WorkerInfo {
            busy_slots: inst.busy(),
            ..w.reg.clone()
        });
        let rate = self.rate_of(i);
        self.cost[fi].observe_one(
            now,
            Listed {
                instance: &listed,
                worker: worker.as_ref(),
                rate,
            },
        );
        self.accrue_capacity(
            i,
            Listed {
                instance: &listed,
                worker: worker.as_ref(),
                rate,
            },
        );
    }

    /// Closes instance `i`, which goes now.
    pub(super) fn close(&mut self, i: usize) {
        self.accrue(i);
        self.close_capacity(i);
        let inst = &self.instances[i];
        self.cost[inst.fleet].close_one(&inst.id);
    }

    /// Accrues every instance still up (at the end of the run, or for a budget's spend).
    pub fn account_all(&mut self) {
        for k in 0..self.alive.len() {
            self.accrue(self.alive[k]);
        }
    }

    /// What a fleet has spent so far, its instances accrued to now (for its budget).
    pub fn spend(&mut self, fleet: usize) -> Spend {
        let alive: Vec<usize> = self
            .alive
            .iter()
            .copied()
            .filter(|&i| self.instances[i].fleet == fleet)
            .collect();
        for i in alive {
            self.accrue(i);
        }
        Spend::of(&self.cost[fleet])
    }

    /// Instance `i` as the provider lists it.
    pub(super) fn listing(&self, i: usize) -> Instance {
        let inst = &self.instances[i];
        let f = &self.fleets[inst.fleet];
        Instance {
            id: inst.id.clone(),
            fleet: f.policy.fleet.clone(),
            state: if inst.booting() {
                InstanceState::Pending
            } else {
                InstanceState::Running
            },
            launched_at: inst.launched_at,
            instance_type: f.pricing.instance_type.clone(),
            launch_batch: Some(inst.batch.clone()),
            protected: false,
            market: crate::provider::Market {
                lifecycle: inst.lifecycle,
                zone: None,
            },
        }
    }
}
