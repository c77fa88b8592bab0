//! Where each task of `anamo sample show` has its log, and the command that reads it
//! (`anamo task logs STEP ID --attempt N`): the lines under the table and the `log` field of
//! `--json`.

use serde::Serialize;

use super::output::outln;
use crate::logs::read::{log_ref, LogRef};
use crate::model::Task;
use crate::provider::user_data::shell_quote;

/// A task as `sample show --json` prints it: the stored task and where its log is.
#[derive(Debug, Serialize)]
pub struct ShownTask<'a> {
    #[serde(flatten)]
    pub task: &'a Task,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub log: Option<ShownLog>,
}

/// The `log` field: the attempt, its log's URL (`null` when none is recorded), whether only
/// the result's tail holds its output, and the command that prints it.
#[derive(Debug, Serialize)]
pub struct ShownLog {
    #[serde(flatten)]
    pub at: LogRef,
    pub command: String,
}

/// The tasks with their logs' places.
pub fn shown(tasks: &[Task]) -> Vec<ShownTask<'_>> {
    tasks
        .iter()
        .map(|task| ShownTask {
            task,
            log: log_ref(task).map(|at| ShownLog {
                command: command(task, &at),
                at,
            }),
        })
        .collect()
}

/// `anamo task logs STEP ID --attempt N`, quoted for a shell; with `--log-url` to fill in
/// when nothing says where the running attempt's log is.
fn command(task: &Task, at: &LogRef) -> String {
    let mut cmd = format!(
        "anamo task logs {} {} --attempt {}",
        shell_quote(task.step()),
        shell_quote(task.id()),
        at.attempt
    );
    if at.url.is_none() && !at.in_result {
        cmd.push_str(" --log-url URL");
    }
    cmd
}

/// One line per task that ran: where its log is, then the command that prints it.
pub fn print_logs(shown: &[ShownTask<'_>]) {
    let mut header = false;
    for s in shown {
        let Some(log) = &s.log else { continue };
        if !header {
            outln!("\nLogs:");
            header = true;
        }
        let place = match (&log.at.url, log.at.in_result) {
            (Some(url), _) => url.clone(),
            (None, true) => "only the last 4 KB, kept in the result (no --log-url)".into(),
            (None, false) => "not recorded yet; give the fleet's logUrl".into(),
        };
        outln!(
            "  {}/{} attempt {}: {place}\n    {}",
            s.task.step(),
            s.task.id(),
            log.at.attempt,
            log.command
        );
    }
}
