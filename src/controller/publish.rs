//! Publishing: after a pass, each fleet's report (what the plan saw, its conditions, the last
//! action) goes to the status the HTTP server shows, to the metrics, and to the store as a
//! status document that `anamo status` reads, when it changed or is about to look stale
//! ([`super::status_docs`]).

use futures::StreamExt;
use tracing::warn;

use super::observe::Observed;
use super::status::{conditions_summary, FleetCost, FleetReport, Role};
use super::{Controller, ControllerError, OBSERVE_CONCURRENCY};
use crate::clock::Millis;
use crate::planner::{ConditionStatus, FleetPlan, Plan};
use crate::store::{StatusDoc, StoreError};

impl Controller {
    pub(super) async fn publish(
        &mut self,
        plan: &Plan,
        observed: &[Observed],
        store_ok: bool,
        now: Millis,
        errors: &[ControllerError],
    ) {
        let mut fleets = Vec::new();
        let mut docs = Vec::new();
        for (fp, obs) in plan.fleets.iter().zip(observed) {
            let report = self.fleet_report(fp, obs, now);
            docs.push(StatusDoc {
                name: format!("fleet/{}", fp.fleet),
                updated_at: now,
                body: serde_json::to_value(&report).unwrap_or_default(),
            });
            fleets.push(report);
        }
        docs.push(self.controller_doc().to_doc(now));
        let interval = crate::clock::ms(self.cfg.interval);
        self.docs_written
            .term(self.token.as_ref().map(|t| t.fencing()));
        docs.retain(|d| self.docs_written.due(d, interval, now));
        let (store, fence) = (&self.store, self.fence());
        let written: Vec<Result<(), StoreError>> =
            futures::stream::iter(docs.iter().map(|doc| store.put_status(doc, fence)))
                .buffered(OBSERVE_CONCURRENCY)
                .collect()
                .await;
        let mut failed = false;
        for (doc, result) in docs.iter().zip(written) {
            match result {
                Ok(()) => self.docs_written.wrote(doc),
                Err(e) => {
                    failed = true;
                    if !self.note_fenced(&e) {
                        warn!(status = doc.name, error = %e, "cannot write fleet status");
                    }
                }
            }
        }
        if failed {
            self.docs_written.clear();
        }
        if self.is_deposed() {
            return;
        }
        let mut st = self.write_status();
        st.role = Role::Leader;
        st.manifests_loaded = true;
        st.store_reachable = store_ok;
        st.last_reconcile_at = Some(now);
        if errors.is_empty() {
            st.last_success_at = Some(now);
            st.last_error = None;
        } else {
            st.last_error = errors.last().map(ToString::to_string);
        }
        st.fleets = fleets;
    }

    /// A fleet's cost figures from its ledger, per task by the step's last progress count;
    /// adds what accrued since the last pass to `anamo_fleet_cost_dollars_total`.
    fn fleet_cost(&mut self, fleet: &str, step: &str) -> Option<FleetCost> {
        let finished = {
            let st = self.status.read().unwrap_or_else(|p| p.into_inner());
            st.steps
                .iter()
                .find(|s| s.counts.step == step)
                .map(|s| s.counts.succeeded + s.counts.failed)
        };
        let mem = self.memory.get_mut(fleet)?;
        let ledger = mem.cost.as_ref()?;
        let totals = ledger.totals();
        let added = totals.dollars - mem.cost_exported;
        if added > 0.0 {
            self.metrics
                .fleet_cost
                .with_label_values(&[fleet])
                .inc_by(added);
            mem.cost_exported = totals.dollars;
        }
        Some(FleetCost::new(
            totals,
            ledger.closed().clone(),
            ledger.usd_per_hour(),
            finished,
        ))
    }

    /// One fleet's report, with its gauges set.
    fn fleet_report(&mut self, fp: &FleetPlan, obs: &Observed, now: Millis) -> FleetReport {
        let mem = self.memory.get(&fp.fleet);
        let interruptions = mem.map(|m| m.interruptions.totals()).unwrap_or_default();
        let s = &fp.status;
        let report = FleetReport {
            fleet: fp.fleet.clone(),
            step: fp.step.clone(),
            provider: obs
                .provider
                .as_ref()
                .map(|p| p.kind())
                .unwrap_or("-")
                .to_string(),
            desired: fp.desired,
            actual: s.instances,
            idle: s.ready.saturating_sub(s.busy),
            status: *s,
            conditions: fp.conditions.clone(),
            conditions_summary: conditions_summary(&fp.conditions),
            last_action: mem.and_then(|m| m.last_action.as_ref().map(|a| a.1.clone())),
            last_action_at: mem.and_then(|m| m.last_action.as_ref().map(|a| a.0)),
            error: obs.error.as_ref().map(ToString::to_string),
            observed_at: now,
            cost: self.fleet_cost(&fp.fleet, &fp.step),
            interruptions,
        };
        let m = &self.metrics;
        m.fleet_desired
            .with_label_values(&[&fp.fleet])
            .set(i64::from(fp.desired));
        for (label, v) in [
            ("actual", s.instances),
            ("ready", s.ready),
            ("busy", s.busy),
            ("idle", report.idle),
            ("booting", s.booting + s.launching),
            ("lost", s.lost),
        ] {
            m.fleet_instances
                .with_label_values(&[&fp.fleet, label])
                .set(i64::from(v));
        }
        if let Some(c) = &report.cost {
            m.fleet_cost_rate
                .with_label_values(&[&fp.fleet])
                .set(c.usd_per_hour);
            m.fleet_idle_cost_ratio
                .with_label_values(&[&fp.fleet])
                .set(c.idle_share);
            if let Some(per_task) = c.per_task {
                m.step_cost_per_task
                    .with_label_values(&[&fp.step])
                    .set(per_task);
            }
        }
        for c in &fp.conditions {
            m.fleet_condition
                .with_label_values(&[&fp.fleet, c.type_.as_str()])
                .set(i64::from(c.status == ConditionStatus::True));
        }
        report
    }
}
