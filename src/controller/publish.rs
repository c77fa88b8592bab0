//! Publishing: after a pass, each fleet's report (what the plan saw, its conditions, the last
//! action) goes to the status the HTTP server shows, to the metrics, and to the store as a
//! status document that `anamo status` reads.

use futures::StreamExt;
use tracing::warn;

use super::observe::Observed;
use super::status::{conditions_summary, FleetReport, Role};
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
        let (store, fence) = (&self.store, self.fence());
        let written: Vec<Result<(), StoreError>> =
            futures::stream::iter(docs.iter().map(|doc| store.put_status(doc, fence)))
                .buffered(OBSERVE_CONCURRENCY)
                .collect()
                .await;
        for (doc, result) in docs.iter().zip(written) {
            if let Err(e) = result {
                if !self.note_fenced(&e) {
                    warn!(status = doc.name, error = %e, "cannot write fleet status");
                }
            }
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

    /// One fleet's report, with its gauges set.
    fn fleet_report(&self, fp: &FleetPlan, obs: &Observed, now: Millis) -> FleetReport {
        let mem = self.memory.get(&fp.fleet);
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
        for c in &fp.conditions {
            m.fleet_condition
                .with_label_values(&[&fp.fleet, c.type_.as_str()])
                .set(i64::from(c.status == ConditionStatus::True));
        }
        report
    }
}
