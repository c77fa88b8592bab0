//! Human-readable rendering of plans, for `anamo plan` (dry run) and logs.
//!
//! ```text
//! fleet align (step align): desired 5; 3 instances: 2 ready (1 busy), 1 booting; tasks: 37 pending, 8 running
//!   launch 2: backlog of 37 runnable tasks needs 5 instances (8 tasks per instance), 2 running, 1 booting: launching 2
//!   Ready=False: 2 of 5 desired instances ready, 1 booting, launching 2
//!   ScalingUp=True: launching 2, 1 booting
//! ```

use std::fmt;

use super::scale::count;
use super::{Action, Condition, ConditionStatus, ConditionType, FleetPlan, FleetStatus, Plan};

impl fmt::Display for Plan {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.fleets.is_empty() {
            return f.write_str("no fleets\n");
        }
        for (i, fleet) in self.fleets.iter().enumerate() {
            if i > 0 {
                writeln!(f)?;
            }
            write!(f, "{fleet}")?;
        }
        Ok(())
    }
}

impl Plan {
    /// The dry-run rendering (same as `Display`).
    pub fn describe(&self) -> String {
        self.to_string()
    }
}

impl fmt::Display for FleetPlan {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "fleet {} (step {}): desired {}; {}",
            self.fleet, self.step, self.desired, self.status
        )?;
        if self.actions.is_empty() {
            writeln!(f, "  no changes")?;
        }
        for a in &self.actions {
            writeln!(f, "  {a}")?;
        }
        for c in &self.conditions {
            if c.type_ == ConditionType::Ready || c.status != ConditionStatus::False {
                writeln!(f, "  {c}")?;
            }
        }
        Ok(())
    }
}

impl FleetPlan {
    /// The dry-run rendering of this fleet (same as `Display`).
    pub fn describe(&self) -> String {
        self.to_string()
    }
}

impl fmt::Display for FleetStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if !self.observed {
            write!(f, "instances not observed")?;
        } else {
            write!(f, "{}", count(self.instances, "instance"))?;
            let mut parts = vec![format!("{} ready", self.ready)];
            if self.busy > 0 {
                parts[0].push_str(&format!(" ({} busy)", self.busy));
            }
            for (n, what) in [
                (self.booting, "booting"),
                (self.launching, "launching"),
                (self.draining, "draining"),
                (self.lost, "lost"),
                (self.finished, "finished"),
                (self.boot_timed_out, "boot timed out"),
            ] {
                if n > 0 {
                    parts.push(format!("{n} {what}"));
                }
            }
            write!(f, ": {}", parts.join(", "))?;
        }
        write!(
            f,
            "; tasks: {}{} pending, {} running",
            if self.more_pending { "over " } else { "" },
            self.pending_tasks,
            self.running_tasks
        )
    }
}

impl fmt::Display for Action {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Action::Launch { count, reason, .. } => write!(f, "launch {count}: {reason}"),
            Action::Terminate {
                ids, cause, reason, ..
            } => write!(
                f,
                "terminate {} [{}]: {reason}",
                ids.join(", "),
                cause.as_str()
            ),
            Action::MarkLost { ids, reason, .. } => {
                write!(f, "mark lost {}: {reason}", ids.join(", "))
            }
            Action::RequeueExpired { step, reason } => {
                write!(f, "requeue expired leases of step {step}: {reason}")
            }
            Action::SetProtection {
                ids,
                protected,
                reason,
                ..
            } => {
                let on = if *protected { "on" } else { "off" };
                write!(
                    f,
                    "scale-in protection {on} for {}: {reason}",
                    ids.join(", ")
                )
            }
            Action::ForgetWorkers {
                workers, reason, ..
            } => write!(f, "forget workers {}: {reason}", workers.join(", ")),
            Action::RetireWorkers {
                workers, reason, ..
            } => write!(f, "mark workers gone {}: {reason}", workers.join(", ")),
            Action::DrainWorkers {
                workers,
                drain,
                reason,
                ..
            } => {
                let what = if *drain {
                    "drain"
                } else {
                    "take back the drain of"
                };
                write!(f, "{what} workers {}: {reason}", workers.join(", "))
            }
        }
    }
}

impl fmt::Display for Condition {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let status = match self.status {
            ConditionStatus::True => "True",
            ConditionStatus::False => "False",
            ConditionStatus::Unknown => "Unknown",
        };
        write!(f, "{}={status}: {}", self.type_.as_str(), self.message)
    }
}
