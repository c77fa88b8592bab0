//! A decorator that makes any [`FleetProvider`] fail or stall on demand and records every
//! call: for tests of the controller's reaction to throttling, missing capacity, an
//! unreachable API (as Karpenter's fake EC2 can be told to return the next error) or a call
//! that takes longer than a leadership lease ([`FaultInjecting::hold_next`]).
//!
//! ```ignore
//! let provider = FaultInjecting::new(fake);
//! provider.fail_next(Op::Launch, 2, || ProviderError::Throttled("injected".into()));
//! ```

use std::collections::{BTreeMap, VecDeque};
use std::fmt;
use std::sync::{Arc, Mutex, MutexGuard};

use async_trait::async_trait;
use tokio::sync::Notify;

use super::{
    FleetProvider, Instance, LaunchOutcome, LaunchRequest, ProviderError, ProviderResult, SpotPrice,
};

/// An operation of [`FleetProvider`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Op {
    List,
    Launch,
    Terminate,
    SetProtection,
}

/// One call as the decorator saw it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Call {
    List,
    Launch(LaunchRequest),
    Terminate(Vec<String>),
    SetProtection(Vec<String>, bool),
}

impl Call {
    pub fn op(&self) -> Op {
        match self {
            Call::List => Op::List,
            Call::Launch(_) => Op::Launch,
            Call::Terminate(_) => Op::Terminate,
            Call::SetProtection(..) => Op::SetProtection,
        }
    }
}

/// A recorded call and how it ended: `None` when it succeeded, else the error's
/// [`kind`](ProviderError::kind), and whether the error was injected (the inner provider was
/// then not called).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Record {
    pub call: Call,
    pub error: Option<&'static str>,
    pub injected: bool,
}

type MakeError = Arc<dyn Fn() -> ProviderError + Send + Sync>;

/// A call held back by [`FaultInjecting::hold_next`]: it waits, before doing anything, until
/// [`Hold::release`] is called.
#[derive(Debug, Default)]
pub struct Hold {
    reached: Notify,
    released: Notify,
}

impl Hold {
    /// Waits until the held call has started (and is waiting).
    pub async fn reached(&self) {
        self.reached.notified().await;
    }

    /// Lets the held call go on (also if it has not started yet).
    pub fn release(&self) {
        self.released.notify_one();
    }
}

#[derive(Default)]
struct State {
    /// Per operation, errors to return before calling the inner provider again.
    faults: BTreeMap<Op, VecDeque<MakeError>>,
    /// Per operation, calls to hold back until released.
    holds: BTreeMap<Op, VecDeque<Arc<Hold>>>,
    records: Vec<Record>,
}

/// Wraps a provider; see the module documentation.
pub struct FaultInjecting<P> {
    inner: P,
    state: Mutex<State>,
}

impl<P: fmt::Debug> fmt::Debug for FaultInjecting<P> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let s = self.lock();
        f.debug_struct("FaultInjecting")
            .field("inner", &self.inner)
            .field(
                "pending_faults",
                &s.faults
                    .iter()
                    .map(|(op, q)| (*op, q.len()))
                    .collect::<BTreeMap<_, _>>(),
            )
            .field("calls", &s.records.len())
            .finish()
    }
}

impl<P> FaultInjecting<P> {
    pub fn new(inner: P) -> FaultInjecting<P> {
        FaultInjecting {
            inner,
            state: Mutex::new(State::default()),
        }
    }

    pub fn inner(&self) -> &P {
        &self.inner
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The next `n` calls of `op` fail with `make()` (queued after faults already pending).
    pub fn fail_next(
        &self,
        op: Op,
        n: usize,
        make: impl Fn() -> ProviderError + Send + Sync + 'static,
    ) {
        let make: MakeError = Arc::new(make);
        let mut s = self.lock();
        let q = s.faults.entry(op).or_default();
        q.extend(std::iter::repeat_n(make, n));
    }

    /// The next call of `op` waits until the returned [`Hold`] is released (then goes on as
    /// usual, faults included).
    pub fn hold_next(&self, op: Op) -> Arc<Hold> {
        let hold = Arc::new(Hold::default());
        self.lock()
            .holds
            .entry(op)
            .or_default()
            .push_back(hold.clone());
        hold
    }

    /// Waits while a hold of `op` is pending.
    async fn held(&self, op: Op) {
        let hold = self.lock().holds.get_mut(&op).and_then(VecDeque::pop_front);
        if let Some(h) = hold {
            h.reached.notify_one();
            h.released.notified().await;
        }
    }

    /// The next `n` calls of `op` are throttled.
    pub fn throttle_next(&self, op: Op, n: usize) {
        self.fail_next(op, n, || {
            ProviderError::Throttled("injected: RequestLimitExceeded".into())
        });
    }

    /// The next `n` launches find no capacity.
    pub fn no_capacity_next(&self, n: usize) {
        self.fail_next(Op::Launch, n, || {
            ProviderError::InsufficientCapacity("injected: InsufficientInstanceCapacity".into())
        });
    }

    /// Drops all pending faults.
    pub fn clear_faults(&self) {
        self.lock().faults.clear();
    }

    /// Faults still pending for `op`.
    pub fn pending_faults(&self, op: Op) -> usize {
        self.lock().faults.get(&op).map_or(0, VecDeque::len)
    }

    /// Every call so far, in order.
    pub fn records(&self) -> Vec<Record> {
        self.lock().records.clone()
    }

    /// Calls of `op` so far (injected failures included).
    pub fn calls(&self, op: Op) -> usize {
        self.lock()
            .records
            .iter()
            .filter(|r| r.call.op() == op)
            .count()
    }

    /// The launch requests received, in order.
    pub fn launches(&self) -> Vec<LaunchRequest> {
        self.lock()
            .records
            .iter()
            .filter_map(|r| match &r.call {
                Call::Launch(req) => Some(req.clone()),
                _ => None,
            })
            .collect()
    }

    /// Forgets the recorded calls (pending faults stay).
    pub fn clear_records(&self) {
        self.lock().records.clear();
    }

    /// The injected error for this call, if one is pending; records an injected call.
    fn injected(&self, call: &Call) -> Option<ProviderError> {
        let mut s = self.lock();
        let make = s.faults.get_mut(&call.op())?.pop_front()?;
        let err = make();
        s.records.push(Record {
            call: call.clone(),
            error: Some(err.kind()),
            injected: true,
        });
        Some(err)
    }

    fn record<T>(&self, call: Call, res: ProviderResult<T>) -> ProviderResult<T> {
        self.lock().records.push(Record {
            call,
            error: res.as_ref().err().map(ProviderError::kind),
            injected: false,
        });
        res
    }
}

#[async_trait]
impl<P: FleetProvider> FleetProvider for FaultInjecting<P> {
    async fn list(&self) -> ProviderResult<Vec<Instance>> {
        let call = Call::List;
        self.held(Op::List).await;
        if let Some(e) = self.injected(&call) {
            return Err(e);
        }
        let res = self.inner.list().await;
        self.record(call, res)
    }

    async fn launch(&self, req: &LaunchRequest) -> ProviderResult<LaunchOutcome> {
        let call = Call::Launch(req.clone());
        self.held(Op::Launch).await;
        if let Some(e) = self.injected(&call) {
            return Err(e);
        }
        let res = self.inner.launch(req).await;
        self.record(call, res)
    }

    async fn terminate(&self, ids: &[String]) -> ProviderResult<()> {
        let call = Call::Terminate(ids.to_vec());
        self.held(Op::Terminate).await;
        if let Some(e) = self.injected(&call) {
            return Err(e);
        }
        let res = self.inner.terminate(ids).await;
        self.record(call, res)
    }

    async fn set_protection(&self, ids: &[String], protected: bool) -> ProviderResult<()> {
        let call = Call::SetProtection(ids.to_vec(), protected);
        self.held(Op::SetProtection).await;
        if let Some(e) = self.injected(&call) {
            return Err(e);
        }
        let res = self.inner.set_protection(ids, protected).await;
        self.record(call, res)
    }

    async fn spot_prices(&self, instance_types: &[String]) -> ProviderResult<Vec<SpotPrice>> {
        self.inner.spot_prices(instance_types).await
    }

    fn lists_launches_immediately(&self) -> bool {
        self.inner.lists_launches_immediately()
    }

    fn scale_in_protection(&self) -> bool {
        self.inner.scale_in_protection()
    }

    fn slots_per_instance(&self) -> Option<u32> {
        self.inner.slots_per_instance()
    }

    fn kind(&self) -> &'static str {
        self.inner.kind()
    }
}
