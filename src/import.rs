//! Reading task files: TSV (`id<TAB>step<TAB>script[<TAB>arg]...`), PyAnamo-style `|`-separated
//! lines, and JSONL (one `TaskSpec` object per line). The whole input is parsed and validated
//! before anything is written, and every problem is reported as `file:line: what is wrong`.

use std::collections::HashMap;
use std::fmt;

use crate::model::TaskSpec;

/// Defaults applied to TSV lines (JSONL objects carry their own fields).
#[derive(Debug, Clone, Default)]
pub struct ImportDefaults {
    /// Step for lines that give only `id<TAB>script`.
    pub step: Option<String>,
    pub depends_on: Vec<String>,
    pub max_attempts: Option<u32>,
    pub priority: Option<i32>,
    pub timeout_secs: Option<u64>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    /// Detect per line: a line starting with `{` is JSON, otherwise TSV or `|`-separated.
    Auto,
    Tsv,
    Jsonl,
}

/// One problem in the input, with where it is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LineError {
    pub source: String,
    pub line: usize,
    pub message: String,
}

impl fmt::Display for LineError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}: {}", self.source, self.line, self.message)
    }
}

/// Every problem found in an input (the import writes nothing when there is any).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub struct ParseErrors {
    pub errors: Vec<LineError>,
}

impl fmt::Display for ParseErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        const SHOWN: usize = 20;
        let n = self.errors.len();
        writeln!(
            f,
            "{n} invalid line{} (nothing was imported):",
            if n == 1 { "" } else { "s" }
        )?;
        for e in self.errors.iter().take(SHOWN) {
            writeln!(f, "  {e}")?;
        }
        if n > SHOWN {
            writeln!(f, "  ... and {} more", n - SHOWN)?;
        }
        Ok(())
    }
}

/// Parses a whole input. `source` names it in errors (a path, or `<stdin>`).
pub fn parse(
    source: &str,
    text: &str,
    format: Format,
    defaults: &ImportDefaults,
) -> Result<Vec<TaskSpec>, ParseErrors> {
    let mut tasks = Vec::new();
    let mut errors = Vec::new();
    let mut seen: HashMap<(String, String), usize> = HashMap::new();
    for (idx, raw) in text.lines().enumerate() {
        let line_no = idx + 1;
        let line = raw.trim_end_matches('\r');
        let trimmed = line.trim();
        if trimmed.is_empty() || trimmed.starts_with('#') {
            continue;
        }
        let err = |message: String| LineError {
            source: source.to_string(),
            line: line_no,
            message,
        };
        let parsed = match format {
            Format::Jsonl => parse_json(trimmed),
            Format::Tsv => parse_delimited(line, defaults),
            Format::Auto if trimmed.starts_with('{') => parse_json(trimmed),
            Format::Auto => {
                // A header row (`id<TAB>step<TAB>script`) is allowed on the first line.
                if line_no == 1 && is_header(line) {
                    continue;
                }
                parse_delimited(line, defaults)
            }
        };
        let spec = match parsed.and_then(|s| s.validate().map(|_| s)) {
            Ok(s) => s,
            Err(m) => {
                errors.push(err(m));
                continue;
            }
        };
        let key = (spec.step.clone(), spec.id.clone());
        if let Some(first) = seen.get(&key) {
            errors.push(err(format!(
                "task {}/{} appears twice (first on line {first})",
                spec.step, spec.id
            )));
            continue;
        }
        seen.insert(key, line_no);
        tasks.push(spec);
    }
    if errors.is_empty() {
        Ok(tasks)
    } else {
        Err(ParseErrors { errors })
    }
}

fn is_header(line: &str) -> bool {
    let mut f = line
        .split(['\t', '|'])
        .map(|s| s.trim().to_ascii_lowercase());
    f.next().as_deref() == Some("id") && f.next().as_deref() == Some("step")
}

fn parse_json(line: &str) -> Result<TaskSpec, String> {
    serde_json::from_str::<TaskSpec>(line).map_err(|e| format!("invalid JSON task: {e}"))
}

/// `id<TAB>step<TAB>script[<TAB>arg]...`, or with `|` separators when the line has no tab.
/// With a default step, `id<TAB>script` is accepted too.
fn parse_delimited(line: &str, defaults: &ImportDefaults) -> Result<TaskSpec, String> {
    let sep = if line.contains('\t') { '\t' } else { '|' };
    let fields: Vec<&str> = line.split(sep).collect();
    let sep_name = if sep == '\t' { "tab" } else { "`|`" };
    let (id, step, script, args) = match (fields.len(), &defaults.step) {
        (n, _) if n >= 3 => (fields[0], fields[1].to_string(), fields[2], &fields[3..]),
        (2, Some(step)) => (fields[0], step.clone(), fields[1], &fields[2..]),
        (n, _) => {
            return Err(format!(
                "expected `id{0}step{0}script` ({1}-separated), found {n} field{2}{3}",
                if sep == '\t' { "<TAB>" } else { "|" },
                sep_name,
                if n == 1 { "" } else { "s" },
                if n == 2 {
                    " (give --step to import `id<TAB>script` lines)"
                } else {
                    ""
                }
            ))
        }
    };
    let mut spec = TaskSpec::new(step.trim(), id.trim(), script.trim());
    spec.args = args.iter().map(|a| a.to_string()).collect();
    spec.depends_on = defaults.depends_on.clone();
    if let Some(m) = defaults.max_attempts {
        spec.max_attempts = m;
    }
    if let Some(p) = defaults.priority {
        spec.priority = p;
    }
    spec.timeout_secs = defaults.timeout_secs;
    Ok(spec)
}

/// Fills what the fleet manifests say about a step into tasks that do not say it themselves:
/// `dependsOn` (for tasks without dependencies) and `maxAttempts` (for tasks left at the
/// default).
pub fn apply_fleet_defaults(tasks: &mut [TaskSpec], manifests: &crate::manifest::ManifestSet) {
    for t in tasks.iter_mut() {
        let Some(fleet) = manifests.fleet_for_step(&t.step) else {
            continue;
        };
        if t.depends_on.is_empty() {
            t.depends_on = fleet.spec.depends_on.clone();
        }
        if t.max_attempts == crate::model::DEFAULT_MAX_ATTEMPTS {
            t.max_attempts = fleet.spec.max_attempts;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse_auto(text: &str) -> Result<Vec<TaskSpec>, ParseErrors> {
        parse("tasks.tsv", text, Format::Auto, &ImportDefaults::default())
    }

    #[test]
    fn tsv_pipe_and_json_lines() {
        let text = "id\tstep\tscript\n\
                    S1\talign\tbwa mem $1\tref.fa\n\
                    # a comment\n\
                    \n\
                    S2|align|echo hi\n\
                    {\"id\":\"S3\",\"step\":\"call\",\"script\":\"true\",\"depends_on\":[\"align\"]}\n";
        let tasks = parse_auto(text).unwrap();
        assert_eq!(tasks.len(), 3);
        assert_eq!(tasks[0].args, vec!["ref.fa"]);
        assert_eq!(tasks[1].script, "echo hi");
        assert_eq!(tasks[2].depends_on, vec!["align"]);
    }

    #[test]
    fn errors_name_every_bad_line() {
        let text = "S1\talign\ttrue\nS2 only\nS1\talign\ttrue\n{\"id\":\"x\"}\nS3\tal ign\ttrue\n";
        let err = parse_auto(text).unwrap_err();
        let lines: Vec<usize> = err.errors.iter().map(|e| e.line).collect();
        assert_eq!(lines, vec![2, 3, 4, 5]);
        let shown = err.to_string();
        assert!(
            shown.contains("tasks.tsv:2: expected `id|step|script`"),
            "{shown}"
        );
        assert!(
            shown.contains("tasks.tsv:3: task align/S1 appears twice (first on line 1)"),
            "{shown}"
        );
        assert!(shown.contains("tasks.tsv:4: invalid JSON task"), "{shown}");
        assert!(shown.contains("tasks.tsv:5: `step`"), "{shown}");
        assert!(shown.contains("nothing was imported"), "{shown}");
    }

    #[test]
    fn default_step_allows_two_fields_and_applies_defaults() {
        let d = ImportDefaults {
            step: Some("align".into()),
            depends_on: vec!["fetch".into()],
            max_attempts: Some(5),
            priority: Some(2),
            timeout_secs: Some(60),
        };
        let tasks = parse("f", "S1\tbwa\n", Format::Tsv, &d).unwrap();
        assert_eq!(tasks[0].step, "align");
        assert_eq!(tasks[0].max_attempts, 5);
        assert_eq!(tasks[0].depends_on, vec!["fetch"]);
        assert_eq!(tasks[0].timeout_secs, Some(60));
    }

    #[test]
    fn unknown_json_fields_are_rejected() {
        let err = parse_auto("{\"id\":\"a\",\"step\":\"b\",\"script\":\"c\",\"scirpt\":1}\n")
            .unwrap_err();
        assert!(err.to_string().contains("unknown field `scirpt`"), "{err}");
    }
}
