//! How many pending candidates a claim query reads: what the claimer will take while it may
//! keep the page ([`claims`](super::claims)), from what it took lately. Pure: no SDK or I/O.
//!
//! A claimer pays one Query per page it uses up or drops, so a fixed page either makes a fast
//! claimer query more often than it needs (a worker taking 40 tasks a second uses a page of 32
//! in under a second) or reads entries a slow one drops unread. Reading what the claimer took
//! in the last [`LEFTOVERS_FOR`](super::claims::LEFTOVERS_FOR), scaled to the time the page
//! may be kept (the rest of the lanes' turn, at most that long), makes the Queries per task
//! about one per page kept, whatever the claim rate. A claimer that started claiming less than
//! that window ago is measured over the time since it started: what it took in its first
//! 300 ms is its pace over 300 ms, not over 2 s (which would read pages a seventh of what it
//! takes, and query seven times as often, until its window filled).

use std::collections::VecDeque;

use crate::clock::Millis;

/// Most candidates one claim query reads: about 40 KB of index entries, 5 read units
/// (eventually consistent reads cost half a unit per 4 KB), far below a Query's 1 MB page.
/// Reached by a claimer taking more than 64 tasks a second; past it, one Query per 128 tasks.
pub(super) const MAX_CLAIM_PAGE: usize = 128;

/// The claims one claimer made within the last window: `(claim time, tasks taken)`.
#[derive(Debug, Default, Clone)]
pub(super) struct Pace {
    taken: VecDeque<(Millis, usize)>,
    /// When the claimer first claimed (taking anything or not): its pace is measured over
    /// the time since, up to the window.
    started: Option<Millis>,
}

impl Pace {
    /// Records `n` tasks taken at `now` (the claim clock) and forgets what is older than
    /// `window` ms.
    pub(super) fn record(&mut self, now: Millis, n: usize, window: Millis) {
        self.started.get_or_insert(now);
        if n > 0 {
            self.taken.push_back((now, n));
        }
        while self
            .taken
            .front()
            .is_some_and(|(at, _)| !within(*at, now, window))
        {
            self.taken.pop_front();
        }
    }

    /// The page to read at `now` for a claim of `want` tasks whose rest may be kept for
    /// `keep_for` ms: the batch plus what the claimer took in the last `window` ms (or since
    /// it started claiming, when that is sooner) scaled to `keep_for`, at least `floor`, at
    /// most [`MAX_CLAIM_PAGE`] (never below `floor`).
    pub(super) fn page(
        &self,
        now: Millis,
        want: usize,
        keep_for: Millis,
        window: Millis,
        floor: usize,
    ) -> usize {
        let recent: usize = self
            .taken
            .iter()
            .filter(|(at, _)| within(*at, now, window))
            .map(|(_, n)| n)
            .sum();
        // Measured over the window, or the part of it since the claimer started (a clock
        // that went back before the start measures over the window).
        let measured = match self.started {
            Some(at) if at <= now => (now - at).clamp(1, window.max(1)),
            _ => window.max(1),
        };
        let ahead = (recent as u128 * keep_for.max(0) as u128 / measured as u128) as usize;
        (want + ahead).clamp(floor, MAX_CLAIM_PAGE.max(floor))
    }
}

/// Whether a claim at `at` lies within the `window` ms up to `now` (not after it: the claim
/// clock may go back).
fn within(at: Millis, now: Millis, window: Millis) -> bool {
    at <= now && now - at < window
}

/// How long from `now` a page read now may be kept: `leftovers_for`, or less when the lanes
/// turn sooner (`turn`: the lanes' period in ms, `None` when they do not turn).
pub(super) fn keep_for(now: Millis, leftovers_for: Millis, turn: Option<Millis>) -> Millis {
    match turn {
        Some(t) if t > 0 => leftovers_for.min(t - now.rem_euclid(t)),
        _ => leftovers_for,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const WINDOW: Millis = 2_000;

    #[test]
    fn a_new_claimer_reads_the_floor() {
        let pace = Pace::default();
        assert_eq!(pace.page(10_000, 4, WINDOW, WINDOW, 32), 32);
        assert_eq!(pace.page(10_000, 32, WINDOW, WINDOW, 64), 64);
    }

    #[test]
    fn a_fast_claimer_reads_what_it_takes_while_it_keeps_the_page() {
        let mut pace = Pace::default();
        // Claiming for a while already; 4 tasks every 100 ms: 40 a second, 80 within the
        // window.
        pace.record(5_000, 0, WINDOW);
        for i in 0..20 {
            pace.record(10_000 + i * 100, 4, WINDOW);
        }
        let now = 11_950;
        // Kept for the whole window: 80 ahead, plus the batch.
        assert_eq!(pace.page(now, 4, WINDOW, WINDOW, 32), 84);
        // Kept for half of it (the lanes turn in 1 s): 40 ahead.
        assert_eq!(pace.page(now, 4, 1_000, WINDOW, 32), 44);
        // Kept for a moment: the floor.
        assert_eq!(pace.page(now, 4, 100, WINDOW, 32), 32);
    }

    #[test]
    fn a_claimer_that_just_started_is_measured_since_its_start() {
        let mut pace = Pace::default();
        // Started at 10 s, took 4 tasks every 100 ms: 12 by 10.3 s, 40 a second.
        pace.record(10_000, 4, WINDOW);
        pace.record(10_100, 4, WINDOW);
        pace.record(10_200, 4, WINDOW);
        // 12 in 300 ms, kept for 2 s: 80 ahead (not 12 ahead as over the whole window).
        assert_eq!(pace.page(10_300, 4, WINDOW, WINDOW, 32), 84);
        // A claimer that started long ago is measured over the window as before.
        let mut old = Pace::default();
        old.record(5_000, 0, WINDOW);
        for at in [10_000, 10_100, 10_200] {
            old.record(at, 4, WINDOW);
        }
        assert_eq!(old.page(10_300, 4, WINDOW, WINDOW, 32), 32);
        // Its first claim has nothing to measure: the floor.
        let mut first = Pace::default();
        assert_eq!(first.page(10_000, 4, WINDOW, WINDOW, 32), 32);
        first.record(10_000, 0, WINDOW);
        assert_eq!(first.page(10_000, 4, WINDOW, WINDOW, 32), 32);
    }

    #[test]
    fn the_page_is_capped_and_old_claims_are_forgotten() {
        let mut pace = Pace::default();
        for i in 0..100 {
            pace.record(10_000 + i * 10, 8, WINDOW);
        }
        assert_eq!(pace.page(11_000, 8, WINDOW, WINDOW, 32), MAX_CLAIM_PAGE);
        // A floor above the cap wins (a contended claim of a large batch).
        assert_eq!(pace.page(11_000, 8, WINDOW, WINDOW, 200), 200);
        // Two windows later, nothing recent: back to the floor.
        pace.record(15_000, 0, WINDOW);
        assert_eq!(pace.page(15_000, 8, WINDOW, WINDOW, 32), 32);
        assert!(pace.taken.is_empty());
    }

    #[test]
    fn a_clock_that_went_back_forgets_what_lies_ahead() {
        let mut pace = Pace::default();
        pace.record(20_000, 50, WINDOW);
        pace.record(10_000, 1, WINDOW);
        assert_eq!(pace.page(10_000, 1, WINDOW, WINDOW, 2), 2);
    }

    #[test]
    fn a_page_is_kept_until_the_lanes_turn_at_most() {
        assert_eq!(keep_for(10_500, 2_000, Some(2_000)), 1_500);
        assert_eq!(keep_for(11_999, 2_000, Some(2_000)), 1);
        assert_eq!(keep_for(12_000, 2_000, Some(2_000)), 2_000);
        assert_eq!(keep_for(12_000, 2_000, None), 2_000);
        assert_eq!(keep_for(-500, 2_000, Some(2_000)), 500);
    }
}
