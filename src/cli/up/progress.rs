//! What `anamo up` shows while it runs: a progress bar per step with the action lines above
//! them (plain lines without a terminal), and the waits between controller passes during which
//! it looks for the end of the run.

use std::collections::BTreeMap;
use std::future::Future;
use std::pin::Pin;
use std::time::Duration;

use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};

use crate::controller::status::ControllerStatus;
use crate::controller::PassReport;
use crate::model::StepCounts;
use crate::store::SharedStore;

/// How often `up` checks for the end of the run between controller passes.
const PROGRESS_TICK: Duration = Duration::from_millis(200);
/// The shortest wait between two looks (when the last tasks are about to finish).
const FINAL_TICK: Duration = Duration::from_millis(10);

/// The bars, one per step, and how many of the status's recent actions were printed already.
pub(super) struct Progress {
    multi: MultiProgress,
    style: ProgressStyle,
    bars: BTreeMap<String, ProgressBar>,
    printed_actions: usize,
}

impl Progress {
    pub(super) fn new() -> Self {
        let multi = MultiProgress::with_draw_target(ProgressDrawTarget::stderr_with_hz(4));
        let style = ProgressStyle::with_template("{prefix:>12} [{bar:30}] {pos}/{len} {msg}")
            .unwrap_or_else(|_| ProgressStyle::default_bar())
            .progress_chars("=> ");
        Progress {
            multi,
            style,
            bars: BTreeMap::new(),
            printed_actions: 0,
        }
    }

    /// A line above the bars; without a terminal the bars are hidden, so it is printed plainly.
    pub(super) fn say(&self, line: String) {
        if self.multi.is_hidden() {
            eprintln!("{line}");
        } else {
            let _ = self.multi.println(line);
        }
    }

    /// Shows a pass: its errors as warnings, the new actions as log lines above the bars, and
    /// each step's bar. Returns each step's counts.
    pub(super) fn show_pass(
        &mut self,
        report: &PassReport,
        status: &ControllerStatus,
    ) -> Vec<StepCounts> {
        for e in &report.errors {
            self.say(format!("warning: {e}"));
        }
        let total_actions = status.recent_actions.len();
        let new = total_actions.saturating_sub(self.printed_actions.min(total_actions));
        for a in status.recent_actions.iter().take(new).rev() {
            self.say(format!("{:>12}: {} — {}", a.fleet, a.action, a.reason));
        }
        self.printed_actions = total_actions;
        let steps: Vec<StepCounts> = status.steps.iter().map(|s| s.counts.clone()).collect();
        for c in &steps {
            self.show_step(c);
        }
        steps
    }

    fn show_step(&mut self, c: &StepCounts) {
        let bar = self.bars.entry(c.step.clone()).or_insert_with(|| {
            let b = self.multi.add(ProgressBar::new(0));
            b.set_style(self.style.clone());
            b.set_prefix(c.step.clone());
            b
        });
        bar.set_length(c.total());
        bar.set_position(c.succeeded + c.failed + c.cancelled);
        bar.set_message(format!(
            "ok {} failed {} running {} pending {} waiting {}",
            c.succeeded, c.failed, c.running, c.pending, c.waiting
        ));
    }

    pub(super) fn finish(&self) {
        for b in self.bars.values() {
            b.finish();
        }
    }
}

/// Tasks not yet in a final state, over every step (`None` on a store error: the next pass
/// reports it).
async fn unfinished_tasks(store: &SharedStore) -> Option<u64> {
    let mut n = 0;
    for step in store.steps().await.ok()? {
        n += store.counts(&step).await.ok()?.unfinished();
    }
    Some(n)
}

/// The wait before the next look for the end of the run: when the rest should be done at the
/// rate seen since the last look (`since` ago, `before` tasks unfinished then, `now` now), so
/// the end is noticed within a few milliseconds rather than up to a [`PROGRESS_TICK`] later;
/// twice the last wait while nothing finishes. Between [`FINAL_TICK`] and [`PROGRESS_TICK`],
/// and never shorter than 20 times what a look takes (a large store).
fn next_tick(
    tick: Duration,
    before: Option<u64>,
    now: Option<u64>,
    since: Duration,
    look_took: Duration,
) -> Duration {
    let wait = match (before, now) {
        (Some(b), Some(n)) if b > n && !since.is_zero() => since.mul_f64(n as f64 / (b - n) as f64),
        (Some(_), Some(_)) => tick * 2,
        _ => PROGRESS_TICK,
    };
    wait.max(FINAL_TICK).max(look_took * 20).min(PROGRESS_TICK)
}

/// Waits until the next pass (`interval` from now). Until then, unless `lingering` (every task
/// is done), looks at the counts a few times a second, and when the last tasks are due to
/// finish (see `next_tick`): when they have, returns at once instead of up to an interval
/// later. Returns `true` when `shutdown` came first.
pub(super) async fn wait_for_next_pass<F: Future<Output = ()>>(
    store: &SharedStore,
    interval: Duration,
    unfinished: u64,
    lingering: bool,
    mut shutdown: Pin<&mut F>,
) -> bool {
    let next_pass = tokio::time::Instant::now() + interval;
    let mut left = Some(unfinished);
    let mut looked_at = tokio::time::Instant::now();
    let mut tick = PROGRESS_TICK;
    loop {
        let at = if lingering {
            // Nothing to look for until the next pass.
            next_pass
        } else {
            (tokio::time::Instant::now() + tick).min(next_pass)
        };
        tokio::select! {
            _ = tokio::time::sleep_until(at) => {}
            _ = &mut shutdown => return true,
        }
        if tokio::time::Instant::now() >= next_pass {
            return false;
        }
        if !lingering {
            let started = tokio::time::Instant::now();
            let now = unfinished_tasks(store).await;
            if now == Some(0) {
                return false;
            }
            let since = started - looked_at;
            tick = next_tick(tick, left, now, since, started.elapsed());
            (left, looked_at) = (now, started);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn end_of_run_is_looked_for_when_it_is_due() {
        let ms = Duration::from_millis;
        // 100 of 1000 tasks finished in the last 200 ms: the rest takes longer than a tick.
        assert_eq!(
            next_tick(PROGRESS_TICK, Some(1000), Some(900), ms(200), ms(1)),
            PROGRESS_TICK
        );
        // 300 finished in 200 ms, 60 left: look again in 40 ms...
        assert_eq!(
            next_tick(PROGRESS_TICK, Some(360), Some(60), ms(200), ms(1)),
            ms(40)
        );
        // ...not sooner than FINAL_TICK when just a few are left...
        assert_eq!(
            next_tick(ms(40), Some(60), Some(1), ms(40), ms(0)),
            FINAL_TICK
        );
        // ...and never more often than 20 times a look's duration.
        assert_eq!(next_tick(ms(40), Some(60), Some(1), ms(40), ms(2)), ms(40));
        // Nothing finished: less and less often.
        assert_eq!(next_tick(ms(10), Some(7), Some(7), ms(10), ms(0)), ms(20));
        assert_eq!(
            next_tick(ms(160), Some(7), Some(7), ms(160), ms(0)),
            PROGRESS_TICK
        );
        // No earlier look, or the store failed: the normal tick.
        assert_eq!(
            next_tick(ms(10), None, Some(7), ms(10), ms(0)),
            PROGRESS_TICK
        );
        assert_eq!(
            next_tick(ms(10), Some(9), None, ms(10), ms(0)),
            PROGRESS_TICK
        );
    }
}
