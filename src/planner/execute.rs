//! How a plan is carried out, decided once for the controller (`controller/act.rs`, the async
//! shell over the provider and the store) and the simulator (`sim/policy.rs`, over its
//! world): which steps in which order ([`steps`]: unconfirmed launches issued again first,
//! then the plan's actions, provider actions only where there is a provider), how a launch
//! batch is named and begun in the ledger, what a provider's answer to a launch means for the
//! ledger (the refusal's cool-off, an unclear answer issued again; [`finish_launch`]), and
//! what a retired worker's registration becomes ([`retired`]).

use super::ledger::{FleetLedger, LaunchIntent, LaunchResult};
use super::{Action, CoolOff, FleetPlan};
use crate::clock::Millis;
use crate::model::{WorkerInfo, WorkerState};
use crate::provider::{Instance, ProviderError};

/// One step of carrying out a fleet's plan.
#[derive(Debug, Clone, PartialEq)]
pub enum Step<'a> {
    /// Issue again a launch the ledger holds unconfirmed (crash or unclear answer), with its
    /// batch token: the provider launches only what is missing.
    Reissue(LaunchIntent),
    /// Carry out one action of the plan. A new launch is begun in the ledger
    /// ([`begin_launch`]; the controller writes it ahead) before the provider is called.
    Act(&'a Action),
}

/// The steps of carrying out `plan`, in order: the launches `ledger` holds unconfirmed, then
/// the plan's actions as planned. Without a provider (its listing failed) the steps that
/// need one (re-issues, launches, terminations, protection) are left out: the planner plans
/// them only for fleets it could list.
pub fn steps<'a>(plan: &'a FleetPlan, ledger: &FleetLedger, has_provider: bool) -> Vec<Step<'a>> {
    let reissues = ledger
        .unconfirmed()
        .into_iter()
        .filter(|_| has_provider)
        .map(Step::Reissue);
    let actions = plan
        .actions
        .iter()
        .filter(|a| has_provider || !needs_provider(a))
        .map(Step::Act);
    reissues.chain(actions).collect()
}

/// Whether carrying out `a` calls the fleet's provider.
pub fn needs_provider(a: &Action) -> bool {
    matches!(
        a,
        Action::Launch { .. } | Action::Terminate { .. } | Action::SetProtection { .. }
    )
}

/// Records in `ledger` how the launch of `intent` was answered: a refusal cools the fleet off
/// for `cool_off` from `now`; an unclear answer leaves the intent to be issued again. Returns
/// the instances counted as launched: the ids the provider returned, or the whole batch when
/// it returns none (an Auto Scaling group picks its instances later); 0 unless launched.
pub fn finish_launch(
    ledger: &mut FleetLedger,
    intent: &LaunchIntent,
    answer: LaunchAnswer,
    now: Millis,
    cool_off: Millis,
    lists_at_once: bool,
) -> u32 {
    let launched = match answer {
        LaunchAnswer::Launched { ids: 0 } => intent.count,
        LaunchAnswer::Launched { ids } => ids,
        _ => 0,
    };
    ledger.finish(&intent.batch, answer.result(now + cool_off), lists_at_once);
    launched
}

/// The registration a retired worker is given: gone and idle, so that its instance can be
/// replaced and no busy slot keeps it.
pub fn retired(w: &WorkerInfo) -> WorkerInfo {
    WorkerInfo {
        state: WorkerState::Gone,
        busy_slots: 0,
        ..w.clone()
    }
}

/// A launch batch's id: the fleet's name and a part unique within the fleet (random in the
/// controller, a counter in the simulator). It is the provider's idempotency token and the
/// instances' batch tag.
pub fn batch_id(fleet: &str, unique: &str) -> String {
    format!("{fleet}-{unique}")
}

/// Records a new launch of `count` for `fleet` in its ledger under a new batch (see
/// [`batch_id`]), before the provider is called. `listed` is this pass's listing.
pub fn begin_launch(
    ledger: &mut FleetLedger,
    fleet: &str,
    unique: &str,
    count: u32,
    now: Millis,
    listed: &[Instance],
) -> LaunchIntent {
    ledger.begin(batch_id(fleet, unique), count, now, listed)
}

/// How the provider answered a launch call.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LaunchAnswer {
    /// Accepted, with these many instance ids (0: it does not know them yet).
    Launched { ids: u32 },
    /// Nothing was launched, and why (no capacity, a configuration error).
    Refused(String),
    /// It may or may not have launched (throttled, timed out).
    Unclear,
}

impl LaunchAnswer {
    /// A failed launch call: after no capacity or a configuration error nothing was launched;
    /// after anything else (throttling, a timeout) it may have been.
    pub fn failed(e: &ProviderError) -> LaunchAnswer {
        if e.is_capacity() || matches!(e, ProviderError::Config(_)) {
            LaunchAnswer::Refused(e.to_string())
        } else {
            LaunchAnswer::Unclear
        }
    }

    /// What the answer means for the ledger: a refusal cools the fleet off until `cool_until`;
    /// an unclear answer leaves the intent to be issued again with the same token.
    pub fn result(self, cool_until: Millis) -> LaunchResult {
        match self {
            LaunchAnswer::Launched { ids } => LaunchResult::Launched { ids },
            LaunchAnswer::Refused(reason) => LaunchResult::Refused {
                cool_off: CoolOff {
                    until: cool_until,
                    reason,
                },
            },
            LaunchAnswer::Unclear => LaunchResult::Unknown,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_refusal_cools_off_and_an_unclear_answer_is_issued_again() {
        let refused = LaunchAnswer::failed(&ProviderError::Config("no subnet".into()));
        assert!(matches!(&refused, LaunchAnswer::Refused(r) if r.contains("no subnet")));
        let LaunchResult::Refused { cool_off } = refused.result(42) else {
            panic!("a configuration error launches nothing");
        };
        assert_eq!(cool_off.until, 42);
        let throttled = LaunchAnswer::failed(&ProviderError::Throttled("slow down".into()));
        assert_eq!(throttled.result(42), LaunchResult::Unknown);
        assert_eq!(
            LaunchAnswer::Launched { ids: 3 }.result(42),
            LaunchResult::Launched { ids: 3 }
        );
    }

    fn plan(actions: Vec<Action>) -> FleetPlan {
        FleetPlan {
            fleet: "align".into(),
            step: "align".into(),
            desired: 0,
            status: Default::default(),
            actions,
            conditions: Vec::new(),
        }
    }

    #[test]
    fn unconfirmed_launches_go_first_and_provider_steps_need_a_provider() {
        let mut ledger = FleetLedger::fresh();
        let stuck = begin_launch(&mut ledger, "align", "000001", 2, 0, &[]);
        ledger.finish(&stuck.batch, LaunchAnswer::Unclear.result(0), false);
        let p = plan(vec![
            Action::RequeueExpired {
                step: "align".into(),
                reason: "leases expired".into(),
            },
            Action::Terminate {
                fleet: "align".into(),
                ids: vec!["i-1".into()],
                cause: crate::planner::TerminateCause::ScaleDown,
                reason: "idle".into(),
            },
        ]);
        let all = steps(&p, &ledger, true);
        assert_eq!(all.len(), 3);
        assert_eq!(all[0], Step::Reissue(stuck));
        assert_eq!(all[1], Step::Act(&p.actions[0]));
        assert_eq!(all[2], Step::Act(&p.actions[1]));
        // Without a provider only the store's steps are left.
        assert_eq!(steps(&p, &ledger, false), [Step::Act(&p.actions[0])]);
    }

    #[test]
    fn a_finished_launch_counts_what_was_launched_and_cools_off_a_refusal() {
        let mut ledger = FleetLedger::fresh();
        let a = begin_launch(&mut ledger, "align", "000001", 3, 0, &[]);
        let answer = LaunchAnswer::Launched { ids: 0 };
        assert_eq!(finish_launch(&mut ledger, &a, answer, 10, 120, false), 3);
        let b = begin_launch(&mut ledger, "align", "000002", 3, 0, &[]);
        let answer = LaunchAnswer::Launched { ids: 2 };
        assert_eq!(finish_launch(&mut ledger, &b, answer, 10, 120, false), 2);
        assert!(ledger.unconfirmed().is_empty());
        let c = begin_launch(&mut ledger, "align", "000003", 1, 0, &[]);
        let answer = LaunchAnswer::Refused("no capacity".into());
        assert_eq!(finish_launch(&mut ledger, &c, answer, 10, 120, false), 0);
        assert_eq!(ledger.cool_off().map(|c| c.until), Some(130));
        let d = begin_launch(&mut ledger, "align", "000004", 1, 0, &[]);
        assert_eq!(
            finish_launch(&mut ledger, &d, LaunchAnswer::Unclear, 10, 120, false),
            0
        );
        assert_eq!(ledger.unconfirmed(), [d]);
    }

    #[test]
    fn a_retired_worker_is_gone_and_idle() {
        let w = WorkerInfo {
            worker_id: "w-1".into(),
            step: "align".into(),
            instance_id: Some("i-1".into()),
            slots: 2,
            busy_slots: 2,
            started_at: 0,
            last_seen: 0,
            last_busy_at: 0,
            state: WorkerState::Active,
            stop_reason: None,
            drain_requested: false,
        };
        let r = retired(&w);
        assert_eq!((r.state, r.busy_slots), (WorkerState::Gone, 0));
        assert_eq!((r.worker_id, r.slots), (w.worker_id, 2));
    }

    #[test]
    fn batch_ids_name_their_fleet() {
        assert_eq!(batch_id("align", "000007"), "align-000007");
    }
}
