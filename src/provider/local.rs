//! `local` provider: an "instance" is an `anamo worker` child process on this machine. It backs
//! the embedded default (`anamo up`) and end-to-end tests of the controller without AWS.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Mutex;
use std::time::Duration;

use async_trait::async_trait;
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use tokio::process::{Child, Command};

use super::{
    FleetProvider, Instance, InstanceState, LaunchOutcome, LaunchRequest, ProviderError,
    ProviderResult,
};
use crate::clock::SharedClock;

/// How to start a worker process.
#[derive(Debug, Clone)]
pub struct LocalFleetConfig {
    pub fleet: String,
    pub step: String,
    /// The `anamo` binary (normally the running executable).
    pub exe: PathBuf,
    /// Store URL passed to the worker.
    pub store: String,
    /// Arguments after `anamo --store URL worker --step STEP --instance-id ID`.
    pub worker_args: Vec<String>,
    /// Where each worker's stderr goes (`<dir>/<instance>.log`); inherited when `None`.
    pub log_dir: Option<PathBuf>,
    /// Extra environment for workers.
    pub env: BTreeMap<String, String>,
}

#[derive(Debug)]
struct Proc {
    child: Child,
    launched_at: i64,
    batch: String,
    stopping: bool,
}

#[derive(Debug)]
pub struct LocalFleet {
    cfg: LocalFleetConfig,
    clock: SharedClock,
    procs: Mutex<BTreeMap<String, Proc>>,
}

impl LocalFleet {
    pub fn new(cfg: LocalFleetConfig, clock: SharedClock) -> Self {
        LocalFleet {
            cfg,
            clock,
            procs: Mutex::new(BTreeMap::new()),
        }
    }

    fn procs(&self) -> ProviderResult<std::sync::MutexGuard<'_, BTreeMap<String, Proc>>> {
        self.procs
            .lock()
            .map_err(|_| ProviderError::Unavailable("local process table poisoned".into()))
    }

    /// SIGTERMs every worker and waits up to `grace` for them to drain, then kills the rest.
    /// The workers leave the process table: it is waited on each process, not polled.
    pub async fn shutdown(&self, grace: Duration) {
        let ids: Vec<String> = match self.procs() {
            Ok(p) => p.keys().cloned().collect(),
            Err(_) => return,
        };
        let _ = self.terminate(&ids).await;
        let mut children: Vec<Child> = match self.procs() {
            Ok(mut p) => std::mem::take(&mut *p)
                .into_values()
                .map(|p| p.child)
                .collect(),
            Err(_) => return,
        };
        let deadline = tokio::time::Instant::now() + grace;
        futures::future::join_all(children.iter_mut().map(|c| async move {
            let _ = tokio::time::timeout_at(deadline, c.wait()).await;
        }))
        .await;
        for c in &mut children {
            if matches!(c.try_wait(), Ok(None)) {
                let _ = c.start_kill();
            }
        }
    }
}

#[async_trait]
impl FleetProvider for LocalFleet {
    async fn list(&self) -> ProviderResult<Vec<Instance>> {
        let mut procs = self.procs()?;
        // Reap exited workers: an exited process is a gone instance.
        procs.retain(|_, p| matches!(p.child.try_wait(), Ok(None)));
        Ok(procs
            .iter()
            .map(|(id, p)| Instance {
                id: id.clone(),
                fleet: self.cfg.fleet.clone(),
                state: if p.stopping {
                    InstanceState::Stopping
                } else {
                    InstanceState::Running
                },
                launched_at: p.launched_at,
                instance_type: Some("local".into()),
                launch_batch: Some(p.batch.clone()),
                protected: false,
                market: Default::default(),
            })
            .collect())
    }

    async fn launch(&self, req: &LaunchRequest) -> ProviderResult<LaunchOutcome> {
        let mut procs = self.procs()?;
        // Idempotent per batch: count what this batch already started.
        let mut instances: Vec<String> = procs
            .iter()
            .filter(|(_, p)| p.batch == req.batch_token)
            .map(|(id, _)| id.clone())
            .collect();
        let missing = (req.count as usize).saturating_sub(instances.len());
        for _ in 0..missing {
            let id = format!("local-{}", &uuid::Uuid::new_v4().simple().to_string()[..12]);
            let mut cmd = Command::new(&self.cfg.exe);
            cmd.arg("--store")
                .arg(&self.cfg.store)
                .arg("worker")
                .arg("--step")
                .arg(&self.cfg.step)
                .arg("--instance-id")
                .arg(&id)
                .args(&self.cfg.worker_args)
                .envs(&self.cfg.env)
                .stdin(std::process::Stdio::null())
                .stdout(std::process::Stdio::null())
                // A worker must not get the terminal's Ctrl-C: the controller drains it.
                .process_group(0)
                .kill_on_drop(true);
            match &self.cfg.log_dir {
                Some(dir) => {
                    std::fs::create_dir_all(dir).map_err(|e| {
                        ProviderError::Config(format!("cannot create {}: {e}", dir.display()))
                    })?;
                    let path = dir.join(format!("{id}.log"));
                    let file = std::fs::File::create(&path).map_err(|e| {
                        ProviderError::Config(format!("cannot create {}: {e}", path.display()))
                    })?;
                    cmd.stderr(file);
                }
                None => {
                    cmd.stderr(std::process::Stdio::inherit());
                }
            }
            let child = cmd.spawn().map_err(|e| {
                ProviderError::Config(format!(
                    "cannot start worker {}: {e}",
                    self.cfg.exe.display()
                ))
            })?;
            procs.insert(
                id.clone(),
                Proc {
                    child,
                    launched_at: self.clock.now(),
                    batch: req.batch_token.clone(),
                    stopping: false,
                },
            );
            instances.push(id);
        }
        Ok(LaunchOutcome { instances })
    }

    async fn terminate(&self, ids: &[String]) -> ProviderResult<()> {
        let mut procs = self.procs()?;
        for id in ids {
            // Gone already: not an error.
            let Some(p) = procs.get_mut(id) else { continue };
            if let Some(pid) = p.child.id() {
                // SIGTERM: the worker stops claiming and drains.
                let _ = kill(Pid::from_raw(pid as i32), Signal::SIGTERM);
            }
            p.stopping = true;
        }
        Ok(())
    }

    fn lists_launches_immediately(&self) -> bool {
        true
    }

    fn kind(&self) -> &'static str {
        "local"
    }
}
