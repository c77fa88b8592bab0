//! Acting: executes a fleet's planned actions through its (instrumented) provider and the
//! store, and records each in the fleet's ledger, the status and the metrics. Nothing is
//! decided here: the steps, their order and what each answer means for the ledger are
//! [`crate::planner::execute`]'s (shared with `anamo simulate`); this is the I/O around them.

use std::collections::BTreeMap;
use std::sync::Arc;

use tracing::{info, warn};

use super::observe::{intent_key, Observed};
use super::status::ActionRecord;
use super::{Controller, ControllerError};
use crate::clock::ms;
use crate::planner::execute::{self, LaunchAnswer, Step};
use crate::planner::ledger::{FleetLedger, LaunchIntent};
use crate::planner::{Action, FleetPlan, TerminateCause};
use crate::provider::{
    FleetProvider, LaunchRequest, ProviderError, TAG_CONTROLLER, TAG_FLEET, TAG_LAUNCH_BATCH,
    TAG_STEP,
};
use crate::store::{StatusDoc, StoreError};

impl Controller {
    /// Executes one fleet's plan in the steps [`execute::steps`] orders, stopping early if
    /// the leadership lease runs out.
    pub(super) async fn act(
        &mut self,
        fp: &FleetPlan,
        obs: &Observed,
        errors: &mut Vec<ControllerError>,
    ) {
        let fleet = fp.fleet.as_str();
        let fresh = FleetLedger::fresh();
        let ledger = self.memory.get(fleet).map_or(&fresh, |m| &m.ledger);
        let steps = execute::steps(fp, ledger, obs.provider.is_some());
        for step in steps {
            if !self.lease_holds() {
                warn!(fleet, "the leadership lease ran out while acting; stopping");
                return;
            }
            match (step, &obs.provider) {
                (Step::Reissue(intent), Some(provider)) => {
                    let why = "re-issued unconfirmed launch";
                    self.launch(fp, provider, intent, why, errors).await
                }
                (Step::Act(action), _) => self.act_one(fp, obs, action, errors).await,
                // Re-issues are steps only where there is a provider.
                (Step::Reissue(_), None) => {}
            }
        }
    }

    async fn act_one(
        &mut self,
        fp: &FleetPlan,
        obs: &Observed,
        action: &Action,
        errors: &mut Vec<ControllerError>,
    ) {
        let now = self.clock.now();
        let fleet = fp.fleet.as_str();
        let provider = obs.provider.as_ref();
        match (action, provider) {
            (Action::Launch { count, reason, .. }, Some(p)) => {
                self.launch_new(fp, obs, p, *count, reason, errors).await
            }
            (
                Action::Terminate {
                    ids, cause, reason, ..
                },
                Some(p),
            ) => self.terminate(fleet, p, ids, *cause, reason, errors).await,
            (
                Action::SetProtection {
                    ids,
                    protected,
                    reason,
                    ..
                },
                Some(p),
            ) => {
                info!(fleet, ids = ?ids, protected, "{reason}");
                if let Err(source) = p.set_protection(ids, *protected).await {
                    self.provider_failed(fleet, "set protection", source, errors);
                }
            }
            (
                Action::MarkLost {
                    ids,
                    workers,
                    reason,
                    ..
                },
                _,
            ) => self.mark_lost(fleet, ids, workers, reason),
            (Action::RequeueExpired { step, .. }, _) => {
                if let Err(source) = self.requeue_expired(step, now).await {
                    let step = step.clone();
                    self.note_error(ControllerError::Housekeeping { step, source }, errors);
                }
            }
            (Action::ForgetWorkers { workers, .. }, _) => self.forget_workers(workers).await,
            (
                Action::RetireWorkers {
                    workers, reason, ..
                },
                _,
            ) => self.retire_workers(obs, workers, reason).await,
            (
                Action::DrainWorkers {
                    step,
                    workers,
                    drain,
                    reason,
                    ..
                },
                _,
            ) => {
                self.drain_workers(fleet, step, workers, *drain, reason)
                    .await
            }
            // Provider actions are planned only for fleets whose instances were listed.
            (_, None) => {}
        }
    }

    /// Removes the registrations of workers that exited (stops at a fenced write: deposed).
    async fn forget_workers(&self, workers: &[String]) {
        for w in workers {
            if let Err(e) = self.store.remove_worker(w, self.fence()).await {
                if self.note_fenced(&e) {
                    return;
                }
                warn!(worker = w, error = %e, "cannot remove worker registration");
            }
        }
    }

    /// Marks the workers gone (and idle), so that their instances can be replaced.
    async fn retire_workers(&self, obs: &Observed, workers: &[String], reason: &str) {
        for w in obs
            .workers
            .iter()
            .filter(|w| workers.contains(&w.worker_id))
        {
            warn!(worker = w.worker_id, "{reason}");
            if let Err(e) = self
                .store
                .put_worker(&execute::retired(w), self.fence())
                .await
            {
                if self.note_fenced(&e) {
                    return;
                }
                warn!(worker = w.worker_id, error = %e, "cannot update worker registration");
            }
        }
    }

    /// Reports lost workers (their tasks come back through lease expiry).
    fn mark_lost(&self, fleet: &str, ids: &[String], workers: &[String], reason: &str) {
        warn!(fleet, instances = ?ids, workers = ?workers, "{reason}");
        self.write_status().record_action(ActionRecord {
            at: self.clock.now(),
            fleet: fleet.to_string(),
            action: format!("mark lost {}", ids.join(" ")),
            reason: reason.to_string(),
            ok: true,
            error: None,
        });
    }

    /// Sets (or clears) the workers' drain marks, fenced like every controller write.
    async fn drain_workers(
        &mut self,
        fleet: &str,
        step: &str,
        workers: &[String],
        drain: bool,
        reason: &str,
    ) {
        let now = self.clock.now();
        let mut error = None;
        for w in workers {
            let res = self
                .store
                .set_worker_drain(step, w, drain, self.fence())
                .await;
            if let Err(e) = res {
                if self.note_fenced(&e) {
                    return;
                }
                warn!(worker = w, error = %e, "cannot write the worker's drain mark");
                error = Some(e.to_string());
            }
        }
        info!(fleet, workers = ?workers, drain, "{reason}");
        let verb = if drain { "drain" } else { "undrain" };
        self.remember(
            fleet,
            format!("{verb} {}: {reason}", workers.len()),
            ActionRecord {
                at: now,
                fleet: fleet.to_string(),
                action: format!("{verb} workers {}", workers.join(" ")),
                reason: reason.to_string(),
                ok: error.is_none(),
                error,
            },
        );
    }

    async fn terminate(
        &mut self,
        fleet: &str,
        provider: &Arc<dyn FleetProvider>,
        ids: &[String],
        cause: TerminateCause,
        reason: &str,
        errors: &mut Vec<ControllerError>,
    ) {
        let now = self.clock.now();
        let res = provider.terminate(ids).await;
        let ok = res.is_ok();
        let mut error = None;
        match res {
            Ok(()) => {
                info!(fleet, ids = ?ids, cause = cause.as_str(), "{reason}");
                self.metrics
                    .terminations
                    .with_label_values(&[fleet, cause.as_str()])
                    .inc_by(ids.len() as u64);
            }
            Err(source) => {
                error = Some(source.to_string());
                self.provider_failed(fleet, "terminate", source, errors);
            }
        }
        self.remember(
            fleet,
            format!("terminate {}: {reason}", ids.len()),
            ActionRecord {
                at: now,
                fleet: fleet.to_string(),
                action: format!("terminate {}", ids.join(" ")),
                reason: reason.to_string(),
                ok,
                error,
            },
        );
    }

    /// A new launch: written ahead to the store as an intent, then made.
    async fn launch_new(
        &mut self,
        fp: &FleetPlan,
        obs: &Observed,
        provider: &Arc<dyn FleetProvider>,
        count: u32,
        reason: &str,
        errors: &mut Vec<ControllerError>,
    ) {
        let fleet = fp.fleet.clone();
        let unique = uuid::Uuid::new_v4().simple().to_string();
        let now = self.clock.now();
        let mem = self.memory.entry(fleet.clone()).or_default();
        let listed = &obs.instances;
        let intent =
            execute::begin_launch(&mut mem.ledger, &fleet, &unique[..16], count, now, listed);
        // Written ahead: if this fails we do not launch (we could not recover).
        if let Err(source) = self.save_intents(&fleet).await {
            if let Some(m) = self.memory.get_mut(&fleet) {
                m.ledger.forget(&intent.batch);
            }
            self.note_error(ControllerError::RecordIntent { fleet, source }, errors);
            return;
        }
        self.launch(fp, provider, intent, reason, errors).await;
    }

    /// Issues the launch of `intent` and records how it ended.
    async fn launch(
        &mut self,
        fp: &FleetPlan,
        provider: &Arc<dyn FleetProvider>,
        intent: LaunchIntent,
        reason: &str,
        errors: &mut Vec<ControllerError>,
    ) {
        let name = fp.fleet.clone();
        let tags = BTreeMap::from([
            (TAG_FLEET.to_string(), name.clone()),
            (TAG_STEP.to_string(), fp.step.clone()),
            (TAG_CONTROLLER.to_string(), self.cfg.cluster.clone()),
            (TAG_LAUNCH_BATCH.to_string(), intent.batch.clone()),
        ]);
        let req = LaunchRequest {
            fleet: name.clone(),
            step: fp.step.clone(),
            count: intent.count,
            batch_token: intent.batch.clone(),
            tags,
        };
        let res = provider.launch(&req).await;
        let now = self.clock.now();
        let (answer, error) = match res {
            Ok(out) => (
                LaunchAnswer::Launched {
                    ids: out.instances.len() as u32,
                },
                None,
            ),
            Err(source) => {
                let answer = LaunchAnswer::failed(&source);
                let text = source.to_string();
                self.provider_failed(&name, "launch", source, errors);
                (answer, Some(text))
            }
        };
        let at_once = provider.lists_launches_immediately();
        let cool_off = ms(self.cfg.cool_off);
        let mem = self.memory.entry(name.clone()).or_default();
        let got = execute::finish_launch(&mut mem.ledger, &intent, answer, now, cool_off, at_once);
        if error.is_none() {
            self.metrics
                .launches
                .with_label_values(&[&name])
                .inc_by(u64::from(got));
            info!(
                fleet = name,
                batch = intent.batch,
                launched = got,
                requested = intent.count,
                "{reason}"
            );
        }
        if let Err(e) = self.save_intents(&name).await {
            if !self.note_fenced(&e) {
                warn!(fleet = name, error = %e, "cannot record launch intents");
            }
        }
        self.remember(
            &name,
            format!("launch {}: {reason}", intent.count),
            ActionRecord {
                at: now,
                fleet: name.clone(),
                action: format!("launch {}", intent.count),
                reason: reason.to_string(),
                ok: error.is_none(),
                error,
            },
        );
    }

    fn provider_failed(
        &self,
        fleet: &str,
        operation: &'static str,
        source: ProviderError,
        errors: &mut Vec<ControllerError>,
    ) {
        let fleet = fleet.to_string();
        let e = ControllerError::Provider {
            fleet,
            operation,
            source,
        };
        self.note_error(e, errors);
    }

    async fn save_intents(&self, fleet: &str) -> Result<(), StoreError> {
        let intents = self
            .memory
            .get(fleet)
            .map(|m| m.ledger.intents().to_vec())
            .unwrap_or_default();
        let doc = StatusDoc {
            name: intent_key(fleet),
            updated_at: self.clock.now(),
            body: serde_json::to_value(intents).unwrap_or_default(),
        };
        self.store.put_status(&doc, self.fence()).await
    }

    fn remember(&mut self, fleet: &str, what: String, rec: ActionRecord) {
        self.memory
            .entry(fleet.to_string())
            .or_default()
            .last_action = Some((rec.at, what));
        self.write_status().record_action(rec);
    }
}
