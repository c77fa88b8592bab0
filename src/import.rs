//! Reading task files: TSV (`id<TAB>step<TAB>script[<TAB>arg]...`), PyAnamo-style `|`-separated
//! lines, and JSONL (one `TaskSpec` object per line). The whole input is parsed and validated
//! before anything is written, and every problem is reported as `file:line: what is wrong`,
//! including input that is not UTF-8 and tasks that could never start because `execve` would
//! refuse their command line (see [`check_exec_limits`]).

use std::collections::HashMap;
use std::fmt;

use crate::model::TaskSpec;
use crate::pipeline::Graph;

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
    Ok(parse_lines(source, text, format, defaults)?
        .into_iter()
        .map(|(_, t)| t)
        .collect())
}

/// [`parse`], each task with the number of the line it came from.
pub fn parse_lines(
    source: &str,
    text: &str,
    format: Format,
    defaults: &ImportDefaults,
) -> Result<Vec<(usize, TaskSpec)>, ParseErrors> {
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
        let checked = parsed
            .and_then(|s| s.validate().map(|_| s))
            .and_then(|s| check_exec_limits(&s).map(|_| s));
        let spec = match checked {
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
        tasks.push((line_no, spec));
    }
    if errors.is_empty() {
        Ok(tasks)
    } else {
        Err(ParseErrors { errors })
    }
}

/// The text of an input read as bytes (`source` names it in the error). Input that is not
/// UTF-8 is refused with the line and byte where the first invalid sequence is.
pub fn utf8_text(source: &str, bytes: Vec<u8>) -> Result<String, LineError> {
    crate::text::utf8(bytes).map_err(|e| LineError {
        source: source.to_string(),
        line: e.line,
        message: e.message,
    })
}

/// The longest single argument or environment string (`KEY=VALUE`) `execve` accepts on
/// Linux, in bytes with its terminating NUL: `MAX_ARG_STRLEN`, 32 pages of 4 KiB. It is a
/// constant of the kernel, not a setting, so a longer one fails on every worker.
pub const MAX_ARG_BYTES: usize = 128 * 1024;

/// What one command line of a task (`/bin/sh -c SCRIPT sh ARGS...` and its environment) may
/// add up to, counting each string's NUL and pointer. The kernel's own limit (`ARG_MAX`) is a
/// quarter of the stack limit, 2 MiB with the usual 8 MiB, and also holds the worker's
/// environment: half of it is left for that.
pub const MAX_COMMAND_BYTES: usize = 1024 * 1024;

/// Refuses a task whose command line `execve` could never accept (it would fail every attempt
/// with "Argument list too long"), or that holds a NUL byte (which no command line can).
pub fn check_exec_limits(spec: &TaskSpec) -> Result<(), String> {
    let env: Vec<String> = spec.env.iter().map(|(k, v)| format!("{k}={v}")).collect();
    let commands = std::iter::once(("script", &spec.script))
        .chain(spec.subtasks.iter().map(|c| ("subtask", c)));
    for (what, command) in commands {
        let mut strings: Vec<(String, &str)> = vec![(format!("`{what}`"), command.as_str())];
        for (i, a) in spec.args.iter().enumerate() {
            strings.push((format!("`args[{i}]`"), a));
        }
        for (k, e) in spec.env.keys().zip(&env) {
            strings.push((format!("`env.{k}`"), e));
        }
        let mut total = 0;
        for (name, text) in &strings {
            if text.contains('\0') {
                return Err(format!(
                    "{name} contains a NUL byte, which no command line can hold"
                ));
            }
            if text.len() + 1 > MAX_ARG_BYTES {
                return Err(format!(
                    "{name} is {} bytes; execve accepts at most {} bytes per argument (Linux \
                     MAX_ARG_STRLEN, 128 KiB), so the task could never start; pass large data \
                     in a file and give its path instead",
                    text.len(),
                    MAX_ARG_BYTES - 1
                ));
            }
            total += text.len() + 1 + std::mem::size_of::<usize>();
        }
        if total > MAX_COMMAND_BYTES {
            return Err(format!(
                "the {what}, args and env add up to {total} bytes; anamo accepts at most \
                 {MAX_COMMAND_BYTES} (half of the usual 2 MiB execve limit, ARG_MAX, leaving \
                 the rest to the worker's environment); pass large data in a file"
            ));
        }
    }
    Ok(())
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

/// Applies the pipeline graph to parsed tasks (see [`Graph::prepare`]): scattered steps
/// expanded, ids checked against their step's key, step defaults filled in. Every problem is
/// reported with its line, and nothing is returned when there is one.
pub fn apply_graph(
    source: &str,
    tasks: Vec<(usize, TaskSpec)>,
    graph: &Graph,
) -> Result<Vec<TaskSpec>, ParseErrors> {
    let mut out = Vec::with_capacity(tasks.len());
    let mut errors = Vec::new();
    let mut seen: HashMap<(String, String), usize> = HashMap::new();
    for (line, spec) in tasks {
        let err = |message: String| LineError {
            source: source.to_string(),
            line,
            message,
        };
        let prepared = match graph.prepare(spec) {
            Ok(p) => p,
            Err(e) => {
                errors.push(err(e.message));
                continue;
            }
        };
        for t in prepared {
            if let Err(m) = check_exec_limits(&t) {
                errors.push(err(m));
                continue;
            }
            let key = (t.step.clone(), t.id.clone());
            if let Some(first) = seen.get(&key) {
                errors.push(err(format!(
                    "task {}/{} appears twice once scattered (first from line {first})",
                    t.step, t.id
                )));
                continue;
            }
            seen.insert(key, line);
            out.push(t);
        }
    }
    if errors.is_empty() {
        Ok(out)
    } else {
        Err(ParseErrors { errors })
    }
}

/// The items of a scatter list file: one per line, blank lines and `#` comments skipped.
pub fn scatter_items(source: &str, text: &str) -> Result<Vec<String>, LineError> {
    let items: Vec<String> = text
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .map(str::to_string)
        .collect();
    if items.is_empty() {
        return Err(LineError {
            source: source.to_string(),
            line: 1,
            message: "the scatter list has no items (one per line expected)".into(),
        });
    }
    if let Some((i, bad)) = text
        .lines()
        .enumerate()
        .find(|(_, l)| l.trim().contains('/'))
    {
        return Err(LineError {
            source: source.to_string(),
            line: i + 1,
            message: format!(
                "scatter item `{}` contains `/`, which separates key parts",
                bad.trim()
            ),
        });
    }
    Ok(items)
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
    fn commands_execve_would_refuse_are_rejected_with_the_limit() {
        let big = "x".repeat(MAX_ARG_BYTES);
        let text = format!("S1\talign\ttrue\nS2\talign\techo\t{big}\nS3\talign\techo\tok\n");
        let err = parse_auto(&text).unwrap_err();
        assert_eq!(err.errors.len(), 1, "{err}");
        let shown = err.to_string();
        assert!(
            shown.contains("tasks.tsv:2: `args[0]` is 131072 bytes"),
            "{shown}"
        );
        assert!(
            shown.contains("at most 131071 bytes per argument"),
            "{shown}"
        );
        // Just under the limit is fine; many arguments that add up past the total are not.
        let fits = "x".repeat(MAX_ARG_BYTES - 1);
        assert!(parse_auto(&format!("S1\talign\techo\t{fits}\n")).is_ok());
        let many = vec![fits; 9].join("\t");
        let err = parse_auto(&format!("S1\talign\techo\t{many}\n")).unwrap_err();
        assert!(err.to_string().contains("add up to"), "{err}");
        let json =
            "{\"id\":\"a\",\"step\":\"b\",\"script\":\"echo\",\"env\":{\"K\":\"a\\u0000b\"}}";
        let err = parse_auto(json).unwrap_err();
        assert!(
            err.to_string().contains("`env.K` contains a NUL byte"),
            "{err}"
        );
    }

    #[test]
    fn invalid_utf8_names_its_line() {
        let mut bytes = b"S1\talign\ttrue\nS2\talign\techo ".to_vec();
        bytes.extend_from_slice(&[0xff, 0xfe, b'\n']);
        let err = utf8_text("t.tsv", bytes).unwrap_err();
        assert_eq!(err.line, 2);
        assert_eq!(
            err.to_string(),
            "t.tsv:2: not valid UTF-8 (byte 15 of the line is 0xff); save the file as UTF-8"
        );
        assert_eq!(utf8_text("t", b"ok\n".to_vec()).unwrap(), "ok\n");
    }

    #[test]
    fn unknown_json_fields_are_rejected() {
        let err = parse_auto("{\"id\":\"a\",\"step\":\"b\",\"script\":\"c\",\"scirpt\":1}\n")
            .unwrap_err();
        assert!(err.to_string().contains("unknown field `scirpt`"), "{err}");
    }
}
