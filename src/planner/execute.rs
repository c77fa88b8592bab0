//! How a plan is carried out, decided once for the controller (`controller/act.rs`) and the
//! simulator (`sim/policy.rs`): how a launch batch is named and begun in the ledger, and what a
//! provider's answer to a launch means for it.

use super::ledger::{FleetLedger, LaunchIntent, LaunchResult};
use super::CoolOff;
use crate::clock::Millis;
use crate::provider::{Instance, ProviderError};

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

    #[test]
    fn batch_ids_name_their_fleet() {
        assert_eq!(batch_id("align", "000007"), "align-000007");
    }
}
