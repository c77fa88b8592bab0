//! Task traces: what the simulator replays. A trace is a list of tasks, each with a step, a
//! submission time and a duration, read from CSV or JSONL or made by a generator.
//!
//! ```text
//! step,submit_time_s,duration_s,id
//! align,0,1830.5,S0001
//! call,0,600,S0001
//! ```
//!
//! `id` is optional: without it the n-th task of each step (in file order) gets the id
//! `t000n`, so the n-th tasks of consecutive steps depend on each other.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;
use std::path::Path;

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};

use crate::clock::Millis;

/// One task of a trace.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct TraceTask {
    pub step: String,
    pub id: String,
    /// When the task is submitted (imported), relative to the start of the trace.
    pub submit_ms: Millis,
    /// How long the task runs once claimed.
    pub duration_ms: Millis,
}

/// A task trace: tasks in file order, and the steps in the order they first appear.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Trace {
    /// A short name for reports (the file name or the generator spec).
    pub name: String,
    pub steps: Vec<String>,
    pub tasks: Vec<TraceTask>,
}

/// Why a trace could not be read or generated.
#[derive(Debug, thiserror::Error)]
pub enum TraceError {
    #[error("cannot read {path}: {source}")]
    Read {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{source_name}:{line}: {message}")]
    Line {
        source_name: String,
        line: usize,
        message: String,
    },
    #[error("{0}")]
    Invalid(String),
    #[error("bad generator spec `{spec}`: {message}")]
    Generator { spec: String, message: String },
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct JsonRow {
    step: String,
    submit_time_s: f64,
    duration_s: f64,
    #[serde(default)]
    id: Option<String>,
}

impl Trace {
    /// Reads a CSV (`.csv`) or JSONL (`.jsonl`, `.json`, or content starting with `{`) trace.
    pub fn load(path: &Path) -> Result<Trace, TraceError> {
        let text = std::fs::read_to_string(path).map_err(|source| TraceError::Read {
            path: path.display().to_string(),
            source,
        })?;
        let name = path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_else(|| path.display().to_string());
        let ext = path
            .extension()
            .map(|e| e.to_string_lossy().to_ascii_lowercase());
        let jsonl = match ext.as_deref() {
            Some("jsonl" | "json" | "ndjson") => true,
            Some("csv") => false,
            _ => text.trim_start().starts_with('{'),
        };
        if jsonl {
            Trace::parse_jsonl(&name, &text)
        } else {
            Trace::parse_csv(&name, &text)
        }
    }

    /// Parses CSV with a header naming the columns `step`, `submit_time_s`, `duration_s` and
    /// optionally `id`, in any order. Empty lines and lines starting with `#` are skipped.
    pub fn parse_csv(name: &str, text: &str) -> Result<Trace, TraceError> {
        let err = |line: usize, message: String| TraceError::Line {
            source_name: name.to_string(),
            line,
            message,
        };
        let mut lines = text
            .lines()
            .enumerate()
            .map(|(i, l)| (i + 1, l.trim()))
            .filter(|(_, l)| !l.is_empty() && !l.starts_with('#'));
        let (hline, header) = lines
            .next()
            .ok_or_else(|| TraceError::Invalid(format!("{name}: the trace is empty")))?;
        let cols: Vec<&str> = header.split(',').map(str::trim).collect();
        let find = |c: &str| cols.iter().position(|h| *h == c);
        let (Some(step_col), Some(submit_col), Some(dur_col)) =
            (find("step"), find("submit_time_s"), find("duration_s"))
        else {
            return Err(err(
                hline,
                format!(
                    "the header must name the columns step, submit_time_s, duration_s (and optionally id); found `{header}`"
                ),
            ));
        };
        let id_col = find("id");
        let mut rows = Vec::new();
        for (n, line) in lines {
            let fields: Vec<&str> = line.split(',').map(str::trim).collect();
            if fields.len() != cols.len() {
                return Err(err(
                    n,
                    format!("{} fields, the header has {}", fields.len(), cols.len()),
                ));
            }
            let num = |col: usize, what: &str| -> Result<f64, TraceError> {
                fields[col]
                    .parse::<f64>()
                    .map_err(|_| err(n, format!("{what} `{}` is not a number", fields[col])))
            };
            rows.push((
                n,
                fields[step_col].to_string(),
                num(submit_col, "submit_time_s")?,
                num(dur_col, "duration_s")?,
                id_col
                    .map(|c| fields[c].to_string())
                    .filter(|s| !s.is_empty()),
            ));
        }
        Trace::from_rows(name, rows)
    }

    /// Parses JSON lines `{"step": .., "submit_time_s": .., "duration_s": .., "id": ..}`.
    pub fn parse_jsonl(name: &str, text: &str) -> Result<Trace, TraceError> {
        let mut rows = Vec::new();
        for (i, line) in text.lines().enumerate() {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let r: JsonRow = serde_json::from_str(line).map_err(|e| TraceError::Line {
                source_name: name.to_string(),
                line: i + 1,
                message: e.to_string(),
            })?;
            rows.push((i + 1, r.step, r.submit_time_s, r.duration_s, r.id));
        }
        Trace::from_rows(name, rows)
    }

    #[allow(clippy::type_complexity)]
    fn from_rows(
        name: &str,
        rows: Vec<(usize, String, f64, f64, Option<String>)>,
    ) -> Result<Trace, TraceError> {
        let mut steps: Vec<String> = Vec::new();
        let mut per_step: BTreeMap<String, (usize, BTreeSet<String>)> = BTreeMap::new();
        let mut tasks = Vec::with_capacity(rows.len());
        for (line, step, submit, dur, id) in rows {
            let err = |message: String| TraceError::Line {
                source_name: name.to_string(),
                line,
                message,
            };
            crate::model::validate_name("step", &step).map_err(err)?;
            if !(submit.is_finite() && submit >= 0.0) {
                return Err(err(format!(
                    "submit_time_s must be 0 or more, not {submit}"
                )));
            }
            if !(dur.is_finite() && dur > 0.0) {
                return Err(err(format!("duration_s must be more than 0, not {dur}")));
            }
            if !steps.contains(&step) {
                steps.push(step.clone());
            }
            let (count, ids) = per_step.entry(step.clone()).or_default();
            *count += 1;
            let id = id.unwrap_or_else(|| format!("t{:06}", *count));
            crate::model::validate_name("id", &id).map_err(err)?;
            if !ids.insert(id.clone()) {
                return Err(err(format!("task {step}/{id} appears twice")));
            }
            tasks.push(TraceTask {
                step,
                id,
                submit_ms: (submit * 1000.0).round() as Millis,
                duration_ms: ((dur * 1000.0).round() as Millis).max(1),
            });
        }
        if tasks.is_empty() {
            return Err(TraceError::Invalid(format!(
                "{name}: the trace has no tasks"
            )));
        }
        Ok(Trace {
            name: name.to_string(),
            steps,
            tasks,
        })
    }

    /// The trace as CSV (with ids), as [`Trace::parse_csv`] reads it.
    pub fn to_csv(&self) -> String {
        let mut s = String::from("step,submit_time_s,duration_s,id\n");
        for t in &self.tasks {
            let _ = writeln!(
                s,
                "{},{},{},{}",
                t.step,
                fmt_secs(t.submit_ms),
                fmt_secs(t.duration_ms),
                t.id
            );
        }
        s
    }

    /// Total task time of `step`, in milliseconds.
    pub fn task_ms(&self, step: &str) -> Millis {
        self.tasks
            .iter()
            .filter(|t| t.step == step)
            .map(|t| t.duration_ms)
            .sum()
    }
}

fn fmt_secs(ms: Millis) -> String {
    if ms % 1000 == 0 {
        (ms / 1000).to_string()
    } else {
        format!("{:.3}", ms as f64 / 1000.0)
    }
}

/// A distribution of task durations, in seconds.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "lowercase", tag = "kind")]
pub enum DurationDist {
    /// `exp(mu + sigma * N(0,1))` seconds.
    Lognormal {
        mu: f64,
        sigma: f64,
    },
    Const {
        secs: f64,
    },
    Uniform {
        min: f64,
        max: f64,
    },
    /// Exponential with this mean.
    Exp {
        mean: f64,
    },
    /// Pareto (heavy-tailed): at least `min` seconds, tail index `alpha` (> 1: a finite mean
    /// of `min * alpha / (alpha - 1)`).
    Pareto {
        min: f64,
        alpha: f64,
    },
}

impl DurationDist {
    fn sample(&self, rng: &mut ChaCha8Rng) -> f64 {
        let secs = match *self {
            DurationDist::Lognormal { mu, sigma } => (mu + sigma * standard_normal(rng)).exp(),
            DurationDist::Const { secs } => secs,
            DurationDist::Uniform { min, max } => min + (max - min) * rng.random::<f64>(),
            DurationDist::Exp { mean } => exponential(rng, 1.0 / mean),
            DurationDist::Pareto { min, alpha } => {
                let u = 1.0 - rng.random::<f64>(); // (0, 1]
                min * u.powf(-1.0 / alpha)
            }
        };
        secs.max(0.001)
    }
}

/// When tasks are submitted.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "lowercase", tag = "kind")]
pub enum Arrival {
    /// Everything at time 0.
    Burst,
    /// A Poisson process with `rate` tasks per second.
    Poisson { rate: f64 },
    /// Uniformly spread over `span` seconds.
    Uniform { span: f64 },
    /// `count` equal bursts, `gap` seconds apart.
    Waves { count: u32, gap: f64 },
    /// A Poisson process whose rate follows a day-like wave: `rate * (1 + sin(2πt/period))`
    /// tasks per second (mean `rate`, zero at the trough).
    Diurnal { rate: f64, period: f64 },
}

/// What `--generate` describes: `tasks=N,steps=K|a:b:c,duration=DIST,arrival=ARR,seed=S`.
///
/// Every generated id exists in every step, so step k+1's task depends on step k's task of the
/// same id. Durations are drawn independently per step; `scale=a:b:c` multiplies each step's
/// durations.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct GeneratorSpec {
    pub spec: String,
    pub tasks: u32,
    pub steps: Vec<String>,
    pub duration: DurationDist,
    pub scale: Vec<f64>,
    pub arrival: Arrival,
    pub seed: Option<u64>,
}

impl GeneratorSpec {
    pub fn parse(spec: &str) -> Result<GeneratorSpec, TraceError> {
        let bad = |message: String| TraceError::Generator {
            spec: spec.to_string(),
            message,
        };
        let mut g = GeneratorSpec {
            spec: spec.to_string(),
            tasks: 1000,
            steps: vec!["step1".into()],
            duration: DurationDist::Lognormal {
                mu: 600f64.ln(),
                sigma: 0.5,
            },
            scale: Vec::new(),
            arrival: Arrival::Burst,
            seed: None,
        };
        for part in split_top(spec) {
            let part = part.trim();
            if part.is_empty() {
                continue;
            }
            let (key, value) = part
                .split_once('=')
                .ok_or_else(|| bad(format!("`{part}` is not KEY=VALUE")))?;
            let value = value.trim();
            match key.trim() {
                "tasks" => {
                    g.tasks =
                        value.parse().ok().filter(|n| *n > 0).ok_or_else(|| {
                            bad(format!("tasks `{value}` is not a positive count"))
                        })?
                }
                "steps" => {
                    g.steps = match value.parse::<u32>() {
                        Ok(n) if n > 0 => (1..=n).map(|i| format!("step{i}")).collect(),
                        Ok(_) => return Err(bad("steps must be at least 1".into())),
                        Err(_) => value.split(':').map(|s| s.trim().to_string()).collect(),
                    };
                    for s in &g.steps {
                        crate::model::validate_name("step", s).map_err(bad)?;
                    }
                }
                "duration" => g.duration = parse_duration(value).map_err(bad)?,
                "scale" => {
                    g.scale = value
                        .split(':')
                        .map(|s| s.trim().parse::<f64>().ok().filter(|x| *x > 0.0))
                        .collect::<Option<Vec<_>>>()
                        .ok_or_else(|| {
                            bad(format!(
                                "scale `{value}` is not positive numbers joined by `:`"
                            ))
                        })?
                }
                "arrival" => g.arrival = parse_arrival(value).map_err(bad)?,
                "seed" => {
                    g.seed = Some(
                        value
                            .parse()
                            .map_err(|_| bad(format!("seed `{value}` is not a number")))?,
                    )
                }
                other => {
                    return Err(bad(format!(
                    "unknown key `{other}` (expected tasks, steps, duration, scale, arrival, seed)"
                )))
                }
            }
        }
        if !g.scale.is_empty() && g.scale.len() != g.steps.len() {
            return Err(bad(format!(
                "scale has {} factors for {} steps",
                g.scale.len(),
                g.steps.len()
            )));
        }
        Ok(g)
    }

    /// Generates the trace; `seed` is used when the spec names none.
    pub fn generate(&self, seed: u64) -> Trace {
        let mut rng = ChaCha8Rng::seed_from_u64(self.seed.unwrap_or(seed));
        let n = self.tasks as usize;
        let mut submits: Vec<f64> = Vec::with_capacity(n);
        let mut t = 0.0;
        for i in 0..n {
            let at = match self.arrival {
                Arrival::Burst => 0.0,
                Arrival::Poisson { rate } => {
                    if i > 0 {
                        t += exponential(&mut rng, rate);
                    }
                    t
                }
                Arrival::Uniform { span } => span * i as f64 / n as f64,
                Arrival::Waves { count, gap } => {
                    let per = n.div_ceil(count.max(1) as usize);
                    (i / per) as f64 * gap
                }
                Arrival::Diurnal { rate, period } => {
                    if i > 0 {
                        t = next_diurnal(&mut rng, t, rate, period);
                    }
                    t
                }
            };
            submits.push(at);
        }
        let mut tasks = Vec::with_capacity(n * self.steps.len());
        for (i, at) in submits.iter().enumerate() {
            for (k, step) in self.steps.iter().enumerate() {
                let scale = self.scale.get(k).copied().unwrap_or(1.0);
                let dur = self.duration.sample(&mut rng) * scale;
                tasks.push(TraceTask {
                    step: step.clone(),
                    id: format!("t{:06}", i + 1),
                    submit_ms: (at * 1000.0).round() as Millis,
                    duration_ms: ((dur * 1000.0).round() as Millis).max(1),
                });
            }
        }
        Trace {
            name: format!("generated({})", self.spec),
            steps: self.steps.clone(),
            tasks,
        }
    }
}

/// Splits on commas that are not inside parentheses.
fn split_top(s: &str) -> Vec<&str> {
    let mut out = Vec::new();
    let (mut depth, mut start) = (0i32, 0usize);
    for (i, c) in s.char_indices() {
        match c {
            '(' => depth += 1,
            ')' => depth -= 1,
            ',' if depth == 0 => {
                out.push(&s[start..i]);
                start = i + 1;
            }
            _ => {}
        }
    }
    out.push(&s[start..]);
    out
}

/// `name(a,b)` → (`name`, [a, b]).
fn call(value: &str) -> Result<(&str, Vec<f64>), String> {
    let Some((name, rest)) = value.split_once('(') else {
        return Ok((value, Vec::new()));
    };
    let args = rest
        .strip_suffix(')')
        .ok_or_else(|| format!("`{value}` lacks a closing parenthesis"))?;
    let nums = args
        .split(',')
        .filter(|a| !a.trim().is_empty())
        .map(|a| {
            a.trim()
                .parse::<f64>()
                .map_err(|_| format!("`{a}` in `{value}` is not a number"))
        })
        .collect::<Result<Vec<_>, _>>()?;
    Ok((name.trim(), nums))
}

fn parse_duration(value: &str) -> Result<DurationDist, String> {
    let (name, a) = call(value)?;
    let d = match (name, a.as_slice()) {
        ("lognormal", [mu, sigma]) if *sigma >= 0.0 => DurationDist::Lognormal {
            mu: *mu,
            sigma: *sigma,
        },
        ("const", [s]) if *s > 0.0 => DurationDist::Const { secs: *s },
        ("uniform", [lo, hi]) if *lo > 0.0 && hi >= lo => DurationDist::Uniform { min: *lo, max: *hi },
        ("exp", [mean]) if *mean > 0.0 => DurationDist::Exp { mean: *mean },
        ("pareto", [min, alpha]) if *min > 0.0 && *alpha > 1.0 => DurationDist::Pareto {
            min: *min,
            alpha: *alpha,
        },
        _ => {
            return Err(format!(
                "duration `{value}` is not one of lognormal(MU,SIGMA) (of ln seconds), const(SECS), uniform(MIN,MAX), exp(MEAN), pareto(MIN,ALPHA) (ALPHA > 1)"
            ))
        }
    };
    Ok(d)
}

fn parse_arrival(value: &str) -> Result<Arrival, String> {
    let (name, a) = call(value)?;
    let arr = match (name, a.as_slice()) {
        ("burst", []) => Arrival::Burst,
        ("poisson", [rate]) if *rate > 0.0 => Arrival::Poisson { rate: *rate },
        ("uniform", [span]) if *span >= 0.0 => Arrival::Uniform { span: *span },
        ("waves", [count, gap]) if *count >= 1.0 && *gap >= 0.0 => Arrival::Waves {
            count: *count as u32,
            gap: *gap,
        },
        ("diurnal", [rate, period]) if *rate > 0.0 && *period > 0.0 => Arrival::Diurnal {
            rate: *rate,
            period: *period,
        },
        _ => {
            return Err(format!(
                "arrival `{value}` is not one of burst, poisson(TASKS_PER_SEC), uniform(SPAN_SECS), waves(COUNT,GAP_SECS), diurnal(MEAN_TASKS_PER_SEC,PERIOD_SECS)"
            ))
        }
    };
    Ok(arr)
}

/// The next arrival after `t` of a Poisson process with rate `rate * (1 + sin(2πt/period))`,
/// by thinning a process of the peak rate `2 * rate`.
fn next_diurnal(rng: &mut ChaCha8Rng, mut t: f64, rate: f64, period: f64) -> f64 {
    loop {
        t += exponential(rng, 2.0 * rate);
        let at = rate * (1.0 + (std::f64::consts::TAU * t / period).sin());
        if rng.random::<f64>() * 2.0 * rate <= at {
            return t;
        }
    }
}

/// A standard normal variate (Box-Muller), computed here so that recorded figures do not
/// depend on a distribution crate's algorithm.
pub(crate) fn standard_normal(rng: &mut ChaCha8Rng) -> f64 {
    let u1 = 1.0 - rng.random::<f64>(); // (0, 1]
    let u2 = rng.random::<f64>();
    (-2.0 * u1.ln()).sqrt() * (std::f64::consts::TAU * u2).cos()
}

/// An exponential variate with `rate` events per unit.
pub(crate) fn exponential(rng: &mut ChaCha8Rng, rate: f64) -> f64 {
    let u = 1.0 - rng.random::<f64>(); // (0, 1]
    -u.ln() / rate
}

#[cfg(test)]
mod tests;
