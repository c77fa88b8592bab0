//! SIGTERM/SIGINT: the first one drains (stop claiming, let running tasks finish within the
//! drain grace, then hand them back); a second one hands them back at once.

use tokio::signal::unix::{signal, SignalKind};
use tokio::task::JoinHandle;

use super::WorkerControl;

pub(crate) fn listen(control: WorkerControl) -> std::io::Result<JoinHandle<()>> {
    let mut term = signal(SignalKind::terminate())?;
    let mut int = signal(SignalKind::interrupt())?;
    Ok(tokio::spawn(async move {
        loop {
            let name = tokio::select! {
                Some(()) = term.recv() => "SIGTERM",
                Some(()) = int.recv() => "SIGINT",
                else => return,
            };
            tracing::info!(signal = name, "signal received");
            control.drain();
        }
    }))
}
