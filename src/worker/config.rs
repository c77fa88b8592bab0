//! `WorkerArgs` resolved and checked: defaults filled in (worker id, log dir, heartbeat),
//! durations validated against each other.

use std::path::PathBuf;
use std::time::Duration;

use sha2::{Digest, Sha256};

use super::{WorkerArgs, WorkerError};

/// The IMDS endpoint used when none is given.
pub const DEFAULT_IMDS_ENDPOINT: &str = "http://169.254.169.254";

#[derive(Debug, Clone)]
pub(crate) struct Config {
    pub step: String,
    pub slots: u32,
    pub lease_ttl: Duration,
    pub heartbeat: Duration,
    pub idle_exit: Option<Duration>,
    pub on_idle_exit: Option<String>,
    pub wall_time: Option<Duration>,
    pub drain_grace: Duration,
    pub log_dir: PathBuf,
    pub log_url: Option<crate::logs::LogUrl>,
    pub log_upload_interval: Duration,
    pub log_upload_timeout: Duration,
    pub worker_id: String,
    /// Given or read from IMDS (filled in by `run`).
    pub instance_id: Option<String>,
    /// `None`: IMDS is not used (no instance id lookup, no spot polling).
    pub imds_endpoint: Option<String>,
    pub spot_poll: Option<Duration>,
    pub poll_interval: Duration,
    pub max_tasks: Option<u64>,
}

impl Config {
    pub(crate) fn from_args(args: &WorkerArgs) -> Result<Config, WorkerError> {
        let invalid = |msg: String| Err(WorkerError::InvalidArgs(msg));
        crate::model::validate_name("step", &args.step).map_err(WorkerError::InvalidArgs)?;
        if args.slots == 0 {
            return invalid("`--slots` must be at least 1".into());
        }
        let slots = super::task_size::slots_from_args(args).map_err(WorkerError::InvalidArgs)?;
        if args.lease_ttl < Duration::from_millis(100) {
            return invalid("`--lease-ttl` must be at least 100ms".into());
        }
        let heartbeat = args
            .heartbeat
            .unwrap_or_else(|| crate::manifest::default_heartbeat(args.lease_ttl));
        if heartbeat.is_zero() || heartbeat >= args.lease_ttl {
            return invalid(format!(
                "`--heartbeat` ({}) must be more than 0 and less than `--lease-ttl` ({})",
                humantime::format_duration(heartbeat),
                humantime::format_duration(args.lease_ttl)
            ));
        }
        if args.poll_interval < Duration::from_millis(10) {
            return invalid("`--poll-interval` must be at least 10ms".into());
        }
        if args.max_tasks == Some(0) {
            return invalid("`--max-tasks` must be at least 1".into());
        }
        if args.log_upload_interval < Duration::from_millis(100) {
            return invalid("`--log-upload-interval` must be at least 100ms".into());
        }
        if args.log_upload_timeout < Duration::from_millis(100) {
            return invalid("`--log-upload-timeout` must be at least 100ms".into());
        }
        let log_url = match args.log_url.as_deref().map(str::trim) {
            None | Some("") => None,
            Some(url) => Some(
                crate::logs::LogUrl::parse(url)
                    .map_err(|e| WorkerError::InvalidArgs(format!("`--log-url`: {e}")))?,
            ),
        };
        let worker_id = match &args.worker_id {
            Some(id) => {
                crate::model::validate_name("worker id", id).map_err(WorkerError::InvalidArgs)?;
                id.clone()
            }
            None => default_worker_id(),
        };
        let imds_endpoint = match args.imds_endpoint.as_deref().map(str::trim) {
            Some("" | "off" | "none") => None,
            Some(url) => Some(url.to_string()),
            None if env_true("AWS_EC2_METADATA_DISABLED") => None,
            None => Some(DEFAULT_IMDS_ENDPOINT.to_string()),
        };
        Ok(Config {
            step: args.step.clone(),
            slots,
            lease_ttl: args.lease_ttl,
            heartbeat,
            idle_exit: args.idle_exit,
            on_idle_exit: args.on_idle_exit.clone().filter(|c| !c.trim().is_empty()),
            wall_time: args.wall_time,
            drain_grace: args.drain_grace,
            log_dir: args
                .log_dir
                .clone()
                .unwrap_or_else(|| std::env::temp_dir().join("anamo").join("logs")),
            log_url,
            log_upload_interval: args.log_upload_interval,
            log_upload_timeout: args.log_upload_timeout,
            worker_id,
            instance_id: args.instance_id.clone().filter(|i| !i.is_empty()),
            imds_endpoint,
            spot_poll: Some(args.spot_poll).filter(|d| !d.is_zero()),
            poll_interval: args.poll_interval,
            max_tasks: args.max_tasks,
        })
    }

    /// `<log-dir>/<step>/<id>.<attempt>.log`, with path-unsafe characters replaced.
    pub(crate) fn log_path(&self, step: &str, id: &str, attempt: u32) -> PathBuf {
        self.log_dir
            .join(file_safe(step))
            .join(format!("{}.{attempt}.log", file_safe(id)))
    }
}

fn env_true(name: &str) -> bool {
    std::env::var(name)
        .map(|v| v.eq_ignore_ascii_case("true") || v == "1")
        .unwrap_or(false)
}

/// A file name for an id: kept as is when it is made of `[A-Za-z0-9._-]` (and is not hidden),
/// otherwise the unsafe characters become `_` and a short hash of the original keeps distinct
/// ids apart.
fn file_safe(name: &str) -> String {
    let safe = |c: char| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-');
    if !name.is_empty() && name.chars().all(safe) && !name.starts_with('.') {
        return name.to_string();
    }
    let cleaned: String = name
        .chars()
        .map(|c| if safe(c) { c } else { '_' })
        .collect::<String>()
        .trim_start_matches('.')
        .chars()
        .take(100)
        .collect();
    let hash = hex::encode(&Sha256::digest(name.as_bytes())[..4]);
    format!("{cleaned}-{hash}")
}

fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .or_else(|| std::env::var("HOSTNAME").ok())
        .map(|h| h.trim().to_string())
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "worker".to_string())
}

/// `<hostname>-<pid>-<random>`.
fn default_worker_id() -> String {
    let host: String = hostname()
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' || c == '.' {
                c
            } else {
                '_'
            }
        })
        .collect();
    let random = &uuid::Uuid::new_v4().simple().to_string()[..8];
    format!("{host}-{}-{random}", std::process::id())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn file_names_are_safe_and_distinct() {
        assert_eq!(file_safe("S1.bam"), "S1.bam");
        let a = file_safe("../etc/passwd");
        assert!(!a.contains('/') && !a.starts_with('.'), "{a}");
        assert_ne!(file_safe("a/b"), file_safe("a_b"));
        assert_ne!(file_safe("a/b"), file_safe("a:b"));
    }

    #[test]
    fn defaults_and_checks() {
        let args = WorkerArgs::new("align");
        let c = Config::from_args(&args).unwrap();
        assert_eq!(c.heartbeat, Duration::from_secs(20));
        assert!(c.worker_id.contains(&std::process::id().to_string()));
        assert_eq!(
            c.log_path("align", "S1", 2),
            c.log_dir.join("align").join("S1.2.log")
        );
        let mut bad = WorkerArgs::new("align");
        bad.heartbeat = Some(Duration::from_secs(60));
        let err = Config::from_args(&bad).unwrap_err();
        assert_eq!(err.kind(), "invalid_args");
        let mut off = WorkerArgs::new("align");
        off.imds_endpoint = Some("off".into());
        assert_eq!(Config::from_args(&off).unwrap().imds_endpoint, None);
        let mut logs = WorkerArgs::new("align");
        logs.log_url = Some("s3://Bad_Bucket/x".into());
        let err = Config::from_args(&logs).unwrap_err().to_string();
        assert!(
            err.contains("`--log-url`") && err.contains("Bad_Bucket"),
            "{err}"
        );
        logs.log_url = Some("s3://logs-bucket/run1".into());
        assert!(Config::from_args(&logs).unwrap().log_url.is_some());
    }
}
