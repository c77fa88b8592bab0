//! Which instances of a fleet go, and why: broken or finished ones regardless of demand
//! (boot timed out, worker exited, drained, lost and idle), and idle ones beyond the desired
//! size, newest first: at once when too little work is expected within a boot time to fill
//! them (the ski-rental break-even, see [`scale_down`]), else once idle for `scaleDownDelay`.
//! Never an instance with busy slots.

use super::drain::{marked, Drains};
use super::estimate::{Outlook, BILLING_MINIMUM};
use super::scale::{
    ago, booting_phrase, count, free_slots, ids, live_workers, Class, Demand, Member,
};
use super::{Action, FleetPolicy, FleetStatus, TerminateCause};
use crate::clock::{format_duration_ms, Millis};

/// Instances to terminate for one cause, with the reason.
pub(super) struct Termination {
    pub cause: TerminateCause,
    pub ids: Vec<String>,
    pub reason: String,
}

/// Idle members of a class (busy ones are never terminated).
fn idle_of<'m, 'a>(
    members: &'m [Member<'a>],
    class: impl Fn(Class) -> bool,
) -> Vec<&'m Member<'a>> {
    members
        .iter()
        .filter(|m| class(m.class) && m.busy == 0)
        .collect()
}

/// Broken or finished instances, which go regardless of demand; and the lost ones, reported
/// (a `MarkLost` action) and terminated when idle.
pub(super) fn broken(
    policy: &FleetPolicy,
    members: &[Member],
    now: Millis,
) -> (Vec<Termination>, Option<Action>) {
    let mut out = Vec::new();
    let timed_out = idle_of(members, |c| c == Class::BootTimedOut);
    if !timed_out.is_empty() {
        let list: Vec<String> = timed_out
            .iter()
            .map(|m| {
                format!(
                    "{} (launched {} ago)",
                    m.instance.id,
                    ago(now, m.instance.launched_at)
                )
            })
            .collect();
        out.push(Termination {
            cause: TerminateCause::BootTimeout,
            ids: ids(&timed_out),
            reason: format!(
                "no worker registered within bootTimeout {}: {}",
                format_duration_ms(policy.boot_timeout),
                list.join(", ")
            ),
        });
    }
    let finished = idle_of(members, |c| c == Class::Finished);
    if !finished.is_empty() {
        out.push(Termination {
            cause: TerminateCause::WorkerExited,
            ids: ids(&finished),
            reason: format!(
                "the worker has exited (idle exit or shutdown) but the instance is still there: {}",
                ids(&finished).join(", ")
            ),
        });
    }
    let drained = idle_of(members, |c| c == Class::Draining);
    if !drained.is_empty() {
        out.push(Termination {
            cause: TerminateCause::Drained,
            ids: ids(&drained),
            reason: format!(
                "the worker is draining and has no running tasks: {}",
                ids(&drained).join(", ")
            ),
        });
    }
    let lost = mark_lost(policy, members, now);
    let idle_lost = idle_of(members, |c| matches!(c, Class::Lost { .. }));
    if !idle_lost.is_empty() {
        out.push(Termination {
            cause: TerminateCause::Lost,
            ids: ids(&idle_lost),
            reason: format!(
                "the worker stopped heartbeating and had no running tasks: {}",
                ids(&idle_lost).join(", ")
            ),
        });
    }
    (out, lost)
}

/// The report of the instances whose workers stopped heartbeating, if any.
fn mark_lost(policy: &FleetPolicy, members: &[Member], now: Millis) -> Option<Action> {
    let lost: Vec<&Member> = members
        .iter()
        .filter(|m| matches!(m.class, Class::Lost { .. }))
        .collect();
    if lost.is_empty() {
        return None;
    }
    let details: Vec<String> = lost
        .iter()
        .map(|m| {
            let last_seen = match m.class {
                Class::Lost { last_seen } => last_seen,
                _ => now,
            };
            let workers: Vec<&str> = live_workers(m).map(|w| w.worker_id.as_str()).collect();
            let mut d = format!(
                "worker {} on {} last heartbeat {} ago",
                workers.join("+"),
                m.instance.id,
                ago(now, last_seen)
            );
            if m.busy > 0 {
                d.push_str(&format!(
                    " (kept: the store still shows {})",
                    count(m.busy, "busy slot")
                ));
            }
            d
        })
        .collect();
    Some(Action::MarkLost {
        fleet: policy.fleet.clone(),
        ids: ids(&lost),
        workers: lost
            .iter()
            .flat_map(|m| live_workers(m).map(|w| w.worker_id.clone()))
            .collect(),
        reason: format!(
            "no heartbeat for more than {}: {}; their tasks return to pending when the leases expire",
            format_duration_ms(policy.lost_after),
            details.join(", ")
        ),
    })
}

/// Ready instances without busy slots with how long they have been idle, newest first.
pub(super) fn idle_ready<'m, 'a>(
    members: &'m [Member<'a>],
    now: Millis,
) -> Vec<(&'m Member<'a>, Millis)> {
    let mut idle: Vec<(&Member, Millis)> = members
        .iter()
        .filter_map(|m| match m.class {
            Class::Ready { last_busy_at } if m.busy == 0 => {
                Some((m, now.saturating_sub(last_busy_at)))
            }
            _ => None,
        })
        .collect();
    idle.sort_by(|(a, _), (b, _)| {
        b.instance
            .launched_at
            .cmp(&a.instance.launched_at)
            .then_with(|| a.instance.id.cmp(&b.instance.id))
    });
    idle
}

/// The slots of the ready instances that run tasks: free ones, and busy ones.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(super) struct BusyInstances {
    pub free: u64,
    pub busy: u64,
}

impl BusyInstances {
    /// The busy ready instances that take new work: not those asked to drain (before this
    /// pass and not taken back, or in this pass).
    pub fn of(members: &[Member], drains: &Drains) -> BusyInstances {
        let mut b = BusyInstances::default();
        let open = |m: &Member| {
            let id = &m.instance.id;
            !drains.drained.contains(id) && (!marked(m) || drains.undrained.contains(id))
        };
        for m in members
            .iter()
            .filter(|m| m.busy > 0 && matches!(m.class, Class::Ready { .. }) && open(m))
        {
            b.free += free_slots(m);
            b.busy += u64::from(m.busy);
        }
        b
    }
}

/// The tasks expected within a boot time that the instances already busy would not take
/// (their free slots, and the slots their running tasks free within a boot at the estimated
/// duration): what would reach an idle instance before a replacement could boot. Without a
/// duration estimate every expected task counts; without an arrival or boot estimate, `None`.
fn reaching_idle(outlook: &Outlook, busy: BusyInstances) -> Option<(f64, f64)> {
    let boot = outlook.boot?;
    let expected = outlook.arrivals_within(boot)?;
    let absorbed = outlook.starts_per_slot(boot).map_or(0.0, |per_slot| {
        busy.free as f64 + busy.busy as f64 * per_slot
    });
    Some((expected, (expected - absorbed).max(0.0)))
}

/// Scale down: up to `excess` of the idle ready instances, newest first (never below
/// desired).
///
/// Keeping an idle instance costs its time; stopping it costs a boot (billed, and waited for)
/// if work comes back. Without an arrival estimate the planner cannot tell, and keeps it for
/// `scaleDownDelay` (the deterministic ski-rental rule: with a delay of one boot time it never
/// pays more than twice the best choice in hindsight). With one, the tasks expected within a
/// boot time that the busy instances would not take themselves ([`reaching_idle`]) say how
/// many idle instances work would reach before a replacement could boot: those are kept for
/// `scaleDownDelay`, the others go at once, once past the billing minimum (stopping earlier
/// saves nothing).
#[allow(clippy::too_many_arguments)]
pub(super) fn scale_down(
    policy: &FleetPolicy,
    demand: &Demand,
    status: &FleetStatus,
    excess: u32,
    idle_ready: &[(&Member, Millis)],
    busy: BusyInstances,
    outlook: &Outlook,
    now: Millis,
) -> Option<Termination> {
    let reaching = reaching_idle(outlook, busy);
    let expected = reaching.map(|(x, _)| x);
    // Idle instances that the work expected within a boot time would reach.
    let keep = reaching.map(|(_, r)| (r / f64::from(demand.tasks_per_instance)).floor() as usize);
    let mut unneeded = 0usize;
    let chosen: Vec<&(&Member, Millis)> = idle_ready
        .iter()
        .filter(|(m, idle)| {
            let past_minimum = now.saturating_sub(m.instance.launched_at) >= BILLING_MINIMUM;
            let go_now = keep.is_some_and(|k| unneeded < idle_ready.len().saturating_sub(k));
            if go_now && past_minimum && *idle < policy.scale_down_delay {
                unneeded += 1;
                return true;
            }
            *idle >= policy.scale_down_delay
        })
        .take(excess as usize)
        .collect();
    if chosen.is_empty() {
        return None;
    }
    let list: Vec<String> = chosen
        .iter()
        .map(|(m, idle)| format!("{} (idle {})", m.instance.id, format_duration_ms(*idle)))
        .collect();
    let why = match (expected, unneeded) {
        (Some(x), n) if n > 0 => format!(
            "idle and past the billing minimum: {x:.1} tasks expected within a boot time ({}), {:.1} of them beyond what the busy instances take, would not reach {} of them before a replacement could boot (the ski-rental break-even), the rest idle for at least {} (scaleDownDelay)",
            outlook.describe(),
            reaching.map_or(0.0, |(_, r)| r),
            count(n as u64, "instance"),
            format_duration_ms(policy.scale_down_delay),
        ),
        _ => format!(
            "idle for at least {} (scaleDownDelay)",
            format_duration_ms(policy.scale_down_delay)
        ),
    };
    Some(Termination {
        cause: TerminateCause::ScaleDown,
        ids: chosen.iter().map(|(m, _)| m.instance.id.clone()).collect(),
        reason: format!(
            "{}, {} ready{}: desired {}, terminating {} {why}, newest first: {}",
            demand.explain(),
            count(u64::from(status.ready), "instance"),
            booting_phrase(status.booting, status.launching),
            demand.desired,
            count(chosen.len() as u64, "instance"),
            list.join(", ")
        ),
    })
}
