//! Task ids as keys: splitting an id into the parts its step's key names, selecting the
//! upstream tasks an edge joins to, and scattering a task over a list of items.

use super::{Scatter, TaskSpec};

/// A task id that does not fit its step's key.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct KeyError {
    pub step: String,
    pub id: String,
    pub message: String,
}

/// Splits `id` into one value per key part: the whole id for a one-part key, nothing for an
/// empty key (the id is then free), otherwise `/`-separated parts, the last one taking the
/// rest.
pub(super) fn split<'a>(key: &[String], step: &str, id: &'a str) -> Result<Vec<&'a str>, KeyError> {
    match key.len() {
        0 => Ok(Vec::new()),
        1 => Ok(vec![id]),
        n => {
            let parts: Vec<&str> = id.splitn(n, '/').collect();
            if parts.len() == n && parts.iter().all(|p| !p.is_empty()) {
                Ok(parts)
            } else {
                Err(KeyError {
                    step: step.to_string(),
                    id: id.to_string(),
                    message: format!(
                        "task id `{id}` of step `{step}` must have {n} parts `{}` separated by `/`",
                        key.join("/")
                    ),
                })
            }
        }
    }
}

/// The upstream tasks an edge joins a task to: the upstream step, and per upstream key part
/// either the value it must have or `None` (any value).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Selector {
    pub step: String,
    /// The upstream step's key length (0: every task of the step).
    pub key_len: usize,
    pub parts: Vec<Option<String>>,
}

impl Selector {
    /// The task of `step` with exactly this id (a task's own `depends_on`).
    pub fn exact(step: &str, id: &str) -> Self {
        Selector {
            step: step.to_string(),
            key_len: 1,
            parts: vec![Some(id.to_string())],
        }
    }

    /// The upstream tasks of `upstream_step` (keyed by `upstream_key`) that agree with a task
    /// keyed by `own_key` with values `own_parts` on every part the two keys share.
    pub fn for_edge(
        upstream_step: &str,
        upstream_key: &[String],
        own_key: &[String],
        own_parts: &[&str],
    ) -> Self {
        let parts = upstream_key
            .iter()
            .map(|name| {
                own_key
                    .iter()
                    .position(|p| p == name)
                    .and_then(|i| own_parts.get(i))
                    .map(|v| v.to_string())
            })
            .collect();
        Selector {
            step: upstream_step.to_string(),
            key_len: upstream_key.len(),
            parts,
        }
    }

    /// The one upstream id, when every part is fixed (a "one" edge); `None` for a gather.
    pub fn exact_id(&self) -> Option<String> {
        if self.key_len == 0 || self.parts.iter().any(Option::is_none) {
            return None;
        }
        let parts: Vec<&str> = self.parts.iter().flatten().map(String::as_str).collect();
        Some(parts.join("/"))
    }

    /// Whether this edge joins to many upstream tasks.
    pub fn is_gather(&self) -> bool {
        self.exact_id().is_none()
    }

    /// Whether the upstream task `id` is one this selector joins to. Ids that do not fit the
    /// upstream key never match.
    pub fn matches(&self, id: &str) -> bool {
        if self.key_len == 0 {
            return true;
        }
        let parts: Vec<&str> = if self.key_len == 1 {
            vec![id]
        } else {
            id.splitn(self.key_len, '/').collect()
        };
        parts.len() == self.key_len
            && parts
                .iter()
                .zip(&self.parts)
                .all(|(have, want)| !have.is_empty() && want.as_deref().is_none_or(|w| w == *have))
    }

    /// The longest id prefix every matching id starts with (for prefix queries).
    pub fn prefix(&self) -> String {
        if let Some(id) = self.exact_id() {
            return id;
        }
        let mut prefix = String::new();
        for part in &self.parts {
            match part {
                Some(v) => {
                    prefix.push_str(v);
                    prefix.push('/');
                }
                None => break,
            }
        }
        prefix
    }

    /// `step/pattern` for messages, with `*` for free parts (`call/*/chr1`).
    pub fn describe(&self) -> String {
        if self.key_len == 0 {
            return format!("{}/*", self.step);
        }
        let parts: Vec<&str> = self
            .parts
            .iter()
            .map(|p| p.as_deref().unwrap_or("*"))
            .collect();
        format!("{}/{}", self.step, parts.join("/"))
    }
}

/// Expands `spec` over `scatter.items`: its id holds every key part but the scattered one,
/// and each new task gets the item inserted at that part's position. An id that already has
/// every part is kept as it is (importing expanded tasks again changes nothing).
pub(super) fn scatter(
    key: &[String],
    scatter: &Scatter,
    spec: TaskSpec,
) -> Result<Vec<TaskSpec>, KeyError> {
    if split(key, &spec.step, &spec.id).is_ok() && key.len() > 1 {
        return Ok(vec![spec]);
    }
    let Some(at) = key.iter().position(|p| p == &scatter.part) else {
        return Ok(vec![spec]);
    };
    let rest: Vec<String> = key
        .iter()
        .filter(|p| **p != scatter.part)
        .cloned()
        .collect();
    let refused = || KeyError {
        step: spec.step.clone(),
        id: spec.id.clone(),
        message: format!(
            "task id `{}` of step `{}` (key `{}`) is scattered over `{}`; give the other parts \
             `{}`",
            spec.id,
            spec.step,
            key.join("/"),
            scatter.part,
            rest.join("/")
        ),
    };
    let given = split(&rest, &spec.step, &spec.id).map_err(|_| refused())?;
    // The item goes in between or after the given parts: they may not hold a `/` themselves.
    if given.iter().any(|p| p.contains('/')) {
        return Err(refused());
    }
    let env_name = super::env_name(super::KEY_ENV_PREFIX, &scatter.part);
    Ok(scatter
        .items
        .iter()
        .map(|item| {
            let mut parts: Vec<&str> = given.clone();
            parts.insert(at.min(parts.len()), item);
            let mut t = spec.clone();
            t.id = parts.join("/");
            t.env.insert(env_name.clone(), item.clone());
            t
        })
        .collect())
}
