//! Leader election between controllers of one cluster, through a lease in the store. A pass
//! acquires or renews the lease when it starts; before acting it reads the lease again and
//! compares it with the clock *at that moment*, since observing may have taken longer than the
//! lease; while acting, each action is preceded by a check of the lease's known expiry.
//!
//! A leader that was deposed without knowing it is refused by the store: every write it makes
//! for the cluster (launch intents, status and graph documents, requeues, worker clean-up)
//! carries its [`Fence`], checked against the lease in the same request. A refused write
//! ([`StoreError::Fenced`]) is counted in `anamo_controller_fenced_writes_total`, and the
//! pass stops: nothing more is written until the next pass acquires the lease again.

use std::sync::atomic::Ordering;

use tracing::{info, warn};

use super::status::Role;
use super::Controller;
use crate::clock::ms;
use crate::store::{Fence, LeaderToken, StoreError};

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
        self.token = self
            .leadership
            .as_ref()
            .map(|l| LeaderToken::new(&self.cfg.cluster, l));
        self.deposed.store(false, Ordering::Relaxed);
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

    /// Whether the lease this controller acquired has not run out yet and no write was refused
    /// as a deposed leader's (no store read: checked before each action).
    pub(super) fn lease_holds(&self) -> bool {
        if self.is_deposed() {
            return false;
        }
        !self.cfg.leader_election
            || self
                .leadership
                .as_ref()
                .is_some_and(|l| l.expires_at > self.clock.now())
    }

    /// The fence of this controller's writes: its leadership token, or none without leader
    /// election (it is the only controller). A follower does not write.
    pub(super) fn fence(&self) -> Fence<'_> {
        match &self.token {
            Some(token) if self.cfg.leader_election => Fence::Leader(token),
            _ => Fence::Unfenced,
        }
    }

    /// Notes a write refused as a deposed leader's: counted, and the pass stops. Returns
    /// whether `e` was one.
    pub(super) fn note_fenced(&self, e: &StoreError) -> bool {
        if !matches!(e, StoreError::Fenced { .. }) {
            return false;
        }
        self.metrics.fenced_writes.inc();
        if !self.deposed.swap(true, Ordering::Relaxed) {
            warn!("{e}");
        }
        true
    }

    /// Whether a write of this pass was refused as a deposed leader's.
    pub(super) fn is_deposed(&self) -> bool {
        self.deposed.load(Ordering::Relaxed)
    }

    /// After a refused write: gives up the leadership it no longer has, so the next pass
    /// acquires it (or follows) from the store's word.
    pub(super) fn step_down(&mut self) {
        self.leadership = None;
        self.token = None;
        self.metrics.leader.set(0);
        let mut st = self.write_status();
        st.role = Role::Follower;
    }
}
