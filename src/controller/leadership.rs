//! Leader election between controllers of one cluster, through a lease in the store. A pass
//! acquires or renews the lease when it starts; before acting it reads the lease again and
//! compares it with the clock *at that moment*, since observing may have taken longer than the
//! lease; while acting, each action is preceded by a check of the lease's known expiry.
//!
//! A leader that was deposed without knowing it can still not be refused by the store: that
//! needs writes fenced by the lease's epoch (the DynamoDB scale issue owns that).

use tracing::{info, warn};

use super::status::Role;
use super::Controller;
use crate::clock::ms;
use crate::store::StoreError;

impl Controller {
    /// Acquires or renews the lease (always the leader without leader election).
    pub(super) async fn ensure_leadership(&mut self) -> Result<Role, StoreError> {
        if !self.cfg.leader_election {
            return Ok(Role::Leader);
        }
        let held = self
            .store
            .acquire_leadership(
                &self.cfg.cluster,
                &self.cfg.identity,
                ms(self.cfg.leader_ttl),
                self.clock.now(),
            )
            .await?;
        let was = self.leadership.as_ref().map(|l| l.fencing);
        self.leadership = held;
        match (&self.leadership, was) {
            // A new fencing token: the lease changed hands since this controller last held it
            // (even if it never saw itself lose it), and another leader may have launched
            // meanwhile: read the launch intents again.
            (Some(l), was) if was != Some(l.fencing) => {
                info!(fencing = l.fencing, "became the leader");
                for mem in self.memory.values_mut() {
                    mem.ledger.invalidate();
                }
            }
            (None, Some(_)) => warn!("lost the leadership"),
            _ => {}
        }
        Ok(if self.leadership.is_some() {
            Role::Leader
        } else {
            Role::Follower
        })
    }

    /// Whether this controller still holds the lease now: read from the store and compared
    /// with the clock at the time of the call (not the start of the pass).
    pub(super) async fn still_leader(&self) -> bool {
        if !self.cfg.leader_election {
            return true;
        }
        let Some(mine) = &self.leadership else {
            return false;
        };
        match self.store.current_leader(&self.cfg.cluster).await {
            Ok(Some(l)) => {
                l.owner == self.cfg.identity
                    && l.fencing == mine.fencing
                    && l.expires_at > self.clock.now()
            }
            _ => false,
        }
    }

    /// Whether the lease this controller acquired has not run out yet (no store read: checked
    /// before each action).
    pub(super) fn lease_holds(&self) -> bool {
        !self.cfg.leader_election
            || self
                .leadership
                .as_ref()
                .is_some_and(|l| l.expires_at > self.clock.now())
    }
}
