//! Fencing: the writes a controller makes for its cluster's leader (launch intents, status and
//! graph documents, requeues of expired leases, worker clean-up) take a [`Fence`] argument, so
//! none can be sent without saying whom it acts for. A [`Fence::Leader`] write holds only while
//! the cluster's leadership lease still has the fencing number the writer acquired: the store
//! checks it in the same request (DynamoDB: a `ConditionCheck` on the leader item in one
//! `TransactWriteItems`; SQLite: one transaction), and a deposed leader's write fails with
//! [`StoreError::Fenced`](super::StoreError::Fenced) and changes nothing.
//!
//! [`Fence::Unfenced`] is for writers that are not a leader: a controller without leader
//! election (the only one), a worker's own registration, a user's command, tests.

use super::Leadership;

/// Proof of holding a cluster's leadership: the cluster, the holder and its fencing number
/// (made only from the [`Leadership`] the store returned).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LeaderToken {
    cluster: String,
    owner: String,
    fencing: u64,
}

impl LeaderToken {
    /// The token of `lease`, the leadership of `cluster` the store granted.
    pub fn new(cluster: &str, lease: &Leadership) -> Self {
        LeaderToken {
            cluster: cluster.to_string(),
            owner: lease.owner.clone(),
            fencing: lease.fencing,
        }
    }

    pub fn cluster(&self) -> &str {
        &self.cluster
    }

    pub fn owner(&self) -> &str {
        &self.owner
    }

    pub fn fencing(&self) -> u64 {
        self.fencing
    }

    /// Whether the leadership the store holds now is still this one.
    pub fn holds(&self, current: Option<&Leadership>) -> bool {
        current.is_some_and(|l| l.owner == self.owner && l.fencing == self.fencing)
    }
}

/// Whom a write acts for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fence<'a> {
    /// Not a leader's write (see the module documentation for who uses it).
    Unfenced,
    /// A leader's write: refused once the leadership moved on.
    Leader(&'a LeaderToken),
}

impl Fence<'_> {
    /// An owned copy of the token, for stores that move the write to another thread.
    pub fn token(&self) -> Option<LeaderToken> {
        match self {
            Fence::Unfenced => None,
            Fence::Leader(t) => Some((*t).clone()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_token_holds_only_for_its_owner_and_fencing_number() {
        let lease = Leadership {
            owner: "a".into(),
            fencing: 3,
            expires_at: 10,
        };
        let token = LeaderToken::new("c", &lease);
        assert!(token.holds(Some(&lease)));
        let taken = Leadership {
            owner: "b".into(),
            fencing: 4,
            ..lease.clone()
        };
        assert!(!token.holds(Some(&taken)));
        let renewed_elsewhere = Leadership {
            fencing: 4,
            ..lease.clone()
        };
        assert!(!token.holds(Some(&renewed_elsewhere)));
        assert!(!token.holds(None));
        assert_eq!(Fence::Leader(&token).token(), Some(token.clone()));
        assert_eq!(Fence::Unfenced.token(), None);
    }
}
