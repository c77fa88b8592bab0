//! The order in which a claim tries a page's pending candidates (see [`claims`](super::claims)
//! and the lanes of [`polls`](super::polls)).

use std::collections::VecDeque;

use aws_sdk_dynamodb::types::AttributeValue;
use rand::Rng;

use super::items::*;

/// A pending shard a claim reads: its index partition key, whether it is the claimer's
/// lane's shard, and the lanes' turn at claim time (`None` on a step of one shard, where
/// lanes do not turn; see [`polls`](super::polls)).
#[derive(Debug, Clone, Copy)]
pub(super) struct PendingShard<'a> {
    pub pk: &'a str,
    pub in_lane: bool,
    pub turn: Option<i64>,
}

/// How a claim orders a page's candidates within each priority group.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Order {
    /// Index order, so a lone claimer takes tasks in exactly the order SQLite does (the
    /// conformance suite relies on it), also from its leftovers.
    Head,
    /// Rotated to start at a random entry: once this store has recently lost a claim race,
    /// concurrent claimers spread over the page instead of all racing for the head (or, on a
    /// shard outside their lanes, for its end: at the end of a step several claimers whose
    /// lanes' shards ran empty visit the same shard), and each goes on along a stretch of its
    /// own (its leftovers) until it runs into tasks another one took.
    Spread,
    /// From the page's end: a shard outside the claimer's lane (its own lane's shard did not
    /// fill its batch) is most likely another claimer's lane, whose owner takes the head and
    /// keeps the page; this claimer takes from the other end, so the two meet, if at all,
    /// only after the owner went through most of the page. A task waits behind at most a
    /// page of later ones of its shard (with several shards the step's order is per shard
    /// anyway).
    Tail,
}

/// Orders a page of pending candidates (in index order: highest priority, then oldest, then
/// id) for claiming: priority groups stay in order, each group in the [`Order`] given.
pub(super) fn order_candidates(page: &[Item], order: Order) -> Vec<VecDeque<String>> {
    let mut groups: Vec<(&str, Vec<String>)> = Vec::new();
    for item in page {
        let Some(AttributeValue::S(sk)) = item.get(INDEX_SK) else {
            continue; // not a well-formed index entry
        };
        // `id` is also the last part of a pending task's sort key (ids contain no `#`).
        let id = match item.get(ID) {
            Some(AttributeValue::S(id)) => id.as_str(),
            _ => match sk.rsplit('#').next() {
                Some(id) if sk.matches('#').count() == 2 => id,
                _ => continue,
            },
        };
        let group = sk.split('#').next().unwrap_or_default();
        match groups.last_mut() {
            Some((g, ids)) if *g == group => ids.push(id.to_string()),
            _ => groups.push((group, vec![id.to_string()])),
        }
    }
    let mut rng = rand::rng();
    groups
        .into_iter()
        .map(|(_, ids)| {
            let mut ids = VecDeque::from(ids);
            match order {
                Order::Head => {}
                Order::Spread => ids.rotate_left(rng.random_range(0..ids.len())),
                Order::Tail => ids.make_contiguous().reverse(),
            }
            ids
        })
        .collect()
}

/// A page's candidates in claiming order, by priority group (see [`order_candidates`]).
pub(super) struct Candidates(Vec<VecDeque<String>>);

impl Candidates {
    pub(super) fn new(mut groups: Vec<VecDeque<String>>) -> Self {
        groups.retain(|g| !g.is_empty());
        groups.reverse(); // the best group last, where it is taken from
        Candidates(groups)
    }

    /// The next `n` candidates.
    pub(super) fn take(&mut self, n: usize) -> Vec<String> {
        let mut taken = Vec::with_capacity(n);
        while taken.len() < n {
            let Some(group) = self.0.last_mut() else {
                break;
            };
            match group.pop_front() {
                Some(id) => taken.push(id),
                None => {
                    self.0.pop();
                }
            }
        }
        taken
    }

    /// Goes on from a random candidate of the current priority group (the stretch just tried
    /// is being taken by someone else).
    pub(super) fn jump(&mut self) {
        if let Some(group) = self.0.last_mut() {
            if !group.is_empty() {
                let at = rand::rng().random_range(0..group.len());
                group.rotate_left(at);
            }
        }
    }

    /// What is left, in order.
    pub(super) fn rest(self) -> VecDeque<String> {
        self.0.into_iter().rev().flatten().collect()
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashSet;

    use super::super::layout::TaskKeys;
    use super::*;
    use crate::clock::Millis;
    use crate::model::TaskState;

    fn entry(priority: i32, at: Millis, id: &str, with_id: bool) -> Item {
        let (_, sk) = super::super::layout::task_index_keys(&TaskKeys {
            step: "s",
            id,
            state: TaskState::Pending,
            priority,
            updated_at: at,
            retry_at: 0,
            lease_owner: None,
            shards: 1,
        });
        let mut item = Item::from([(INDEX_SK.to_string(), s(sk))]);
        if with_id {
            item.insert(ID.to_string(), s(id));
        }
        item
    }

    #[test]
    fn candidates_keep_priority_groups_and_the_head() {
        let page = vec![
            entry(5, 1, "a", true),
            entry(5, 2, "b", false),
            entry(5, 3, "c", true),
            entry(5, 4, "f", true),
            entry(1, 0, "d", true),
            entry(1, 0, "e", true),
        ];
        let flat = |groups: Vec<VecDeque<String>>| -> Vec<String> {
            Candidates::new(groups).rest().into_iter().collect()
        };
        assert_eq!(
            flat(order_candidates(&page, Order::Head)),
            ["a", "b", "c", "f", "d", "e"],
            "uncontended: index order (the id read from the sort key when absent)"
        );
        let mut starts = HashSet::new();
        for _ in 0..200 {
            let busy = flat(order_candidates(&page, Order::Spread));
            // Each priority group is a rotation of itself: a contiguous stretch from a random
            // start, wrapping; lower priority after.
            let top = ["a", "b", "c", "f"];
            let start = top.iter().position(|id| *id == busy[0]).unwrap();
            let rotated: Vec<&str> = (0..4).map(|i| top[(start + i) % 4]).collect();
            assert_eq!(busy[..4], rotated[..]);
            let mut rest: Vec<_> = busy[4..].to_vec();
            rest.sort();
            assert_eq!(rest, ["d", "e"], "lower priority after");
            starts.insert(busy[0].clone());
        }
        assert_eq!(starts.len(), 4, "every start is drawn");
        assert_eq!(
            flat(order_candidates(&page, Order::Tail)),
            ["f", "c", "b", "a", "e", "d"],
            "off the lane: each group from its end, best group first"
        );
    }

    #[test]
    fn candidates_are_taken_best_group_first() {
        let groups = vec![
            VecDeque::from(["a".to_string(), "b".to_string()]),
            VecDeque::new(),
            VecDeque::from(["c".to_string(), "d".to_string(), "e".to_string()]),
        ];
        let mut c = Candidates::new(groups.clone());
        assert_eq!(c.take(3), ["a", "b", "c"]);
        c.jump();
        let mut rest: Vec<String> = c.rest().into_iter().collect();
        rest.sort();
        assert_eq!(rest, ["d", "e"]);
        let mut c = Candidates::new(groups);
        c.jump();
        let first = c.take(2);
        assert!(
            first == ["a", "b"] || first == ["b", "a"],
            "a jump stays in the best group: {first:?}"
        );
        assert_eq!(c.take(5), ["c", "d", "e"]);
        assert!(c.take(1).is_empty());
    }
}
