//! Reading manifest files: split into documents, dispatch on `kind`, parse with serde-saphyr,
//! and turn its errors into `file:LINE:COL: field: message` problems.

use std::fs;
use std::path::{Path, PathBuf};

use serde::Deserialize;
use serde_saphyr::{MessageFormatter, UserMessageFormatter};

use super::hints::{did_you_mean, improve_message, number_placeholder};
use super::keys::{blank_entry, KeyIndex};
use super::types::{
    ControllerDocument, FleetDocument, API_VERSION, KINDS, KIND_CONTROLLER, KIND_FLEET,
};
use super::validate::{validate, ParsedDoc, ParsedKind};
use super::{ManifestError, ManifestSet, Problem};

/// Loads a manifest file, or every `*.yaml`/`*.yml` file of a directory.
pub fn load(path: impl AsRef<Path>) -> Result<ManifestSet, ManifestError> {
    let path = path.as_ref();
    if path.is_dir() {
        load_dir(path)
    } else {
        load_file(path)
    }
}

/// Loads every `*.yaml` and `*.yml` file directly in `dir` (sorted by name; not recursive) as
/// one set of manifests, validated together.
pub fn load_dir(dir: impl AsRef<Path>) -> Result<ManifestSet, ManifestError> {
    let dir = dir.as_ref();
    let read_err = |source| ManifestError::Read {
        path: dir.to_path_buf(),
        source,
    };
    let mut paths = Vec::new();
    for entry in fs::read_dir(dir).map_err(read_err)? {
        let path = entry.map_err(read_err)?.path();
        let is_yaml = path
            .extension()
            .and_then(|e| e.to_str())
            .is_some_and(|e| e == "yaml" || e == "yml");
        if is_yaml && path.is_file() {
            paths.push(path);
        }
    }
    if paths.is_empty() {
        return Err(ManifestError::Empty {
            path: dir.to_path_buf(),
        });
    }
    paths.sort();
    load_files(&paths)
}

/// Loads one manifest file (which may hold several `---`-separated documents).
pub fn load_file(path: impl AsRef<Path>) -> Result<ManifestSet, ManifestError> {
    load_files(&[path.as_ref().to_path_buf()])
}

/// Loads several manifest files as one set.
pub fn load_files(paths: &[PathBuf]) -> Result<ManifestSet, ManifestError> {
    let mut sources = Vec::with_capacity(paths.len());
    for path in paths {
        let bytes = fs::read(path).map_err(|source| ManifestError::Read {
            path: path.clone(),
            source,
        })?;
        let text = crate::text::utf8(bytes).map_err(|e| ManifestError::Parse {
            problems: vec![Problem {
                file: path.clone(),
                line: Some(e.line),
                column: None,
                subject: None,
                field: None,
                message: e.message,
            }],
        })?;
        sources.push((path.clone(), text));
    }
    parse_sources_inner(&sources, true)
}

/// Parses and validates manifest text that claims to come from `source` (used in messages and
/// to resolve relative paths; the file itself is not read, and referenced files such as
/// `userData` are not checked).
pub fn parse_str(text: &str, source: impl AsRef<Path>) -> Result<ManifestSet, ManifestError> {
    parse_sources(&[(source.as_ref().to_path_buf(), text.to_string())])
}

/// Like [`parse_str`], for several files' contents validated together.
pub fn parse_sources(sources: &[(PathBuf, String)]) -> Result<ManifestSet, ManifestError> {
    parse_sources_inner(sources, false)
}

fn parse_sources_inner(
    sources: &[(PathBuf, String)],
    check_files: bool,
) -> Result<ManifestSet, ManifestError> {
    let mut docs = Vec::new();
    let mut problems = Vec::new();
    // Steps of fleet documents that did not parse: other fleets may depend on them.
    let mut unparsed_steps = Vec::new();
    for (path, text) in sources {
        for chunk in split_documents(text) {
            let parsed = parse_document(path, &chunk);
            problems.extend(parsed.problems);
            match parsed.doc {
                Some(doc) => docs.push(doc),
                None => unparsed_steps.extend(parsed.step),
            }
        }
    }
    // Whatever else is wrong with the documents that parsed is reported too, so one run shows
    // everything there is to fix, in file and line order.
    let in_order = |mut problems: Vec<Problem>| {
        problems.sort_by_key(|p| (sources.iter().position(|(f, _)| *f == p.file), p.line));
        problems
    };
    match validate(docs, check_files, &unparsed_steps) {
        Ok(set) if problems.is_empty() => Ok(set),
        Err(ManifestError::Invalid { problems: invalid }) if problems.is_empty() => {
            Err(ManifestError::Invalid {
                problems: in_order(invalid),
            })
        }
        result => {
            if let Err(e) = result {
                problems.extend(e.problems().iter().cloned());
            }
            Err(ManifestError::Parse {
                problems: in_order(problems),
            })
        }
    }
}

/// One `---`-separated document of a file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Chunk {
    /// The document's text, including its leading `---` line if it has one.
    pub text: String,
    /// Line of the file the text starts at (1-based).
    pub first_line: usize,
}

/// Splits a YAML stream at document markers (`---` at the start of a line), keeping line
/// numbers. Documents with nothing but comments and directives are dropped (directives are kept
/// with the document that follows them).
pub(crate) fn split_documents(text: &str) -> Vec<Chunk> {
    let text = text.strip_prefix('\u{feff}').unwrap_or(text);
    let mut chunks = Vec::new();
    let mut current = String::new();
    let mut first_line = 1;
    let mut has_content = false;
    let mut has_marker = false;
    for (i, line) in text.split_inclusive('\n').enumerate() {
        let is_marker = line.starts_with("---")
            && line[3..]
                .chars()
                .next()
                .is_none_or(|c| c.is_ascii_whitespace());
        if is_marker {
            if has_content {
                chunks.push(Chunk {
                    text: std::mem::take(&mut current),
                    first_line,
                });
            } else if has_marker {
                // An empty document: drop it (keeping directives would need a marker anyway).
                current.clear();
            }
            has_content = false;
            has_marker = true;
        }
        if current.is_empty() {
            first_line = i + 1;
        }
        if is_marker {
            // Content after the marker on the same line (`--- {a: 1}`) counts.
            let after = line[3..].trim();
            has_content |= !after.is_empty() && !after.starts_with('#');
        } else {
            let t = line.trim();
            let is_document_end =
                line.starts_with("...") && line[3..].chars().all(|c| c.is_ascii_whitespace());
            has_content |=
                !(t.is_empty() || t.starts_with('#') || t.starts_with('%') || is_document_end);
        }
        current.push_str(line);
    }
    if has_content {
        chunks.push(Chunk {
            text: current,
            first_line,
        });
    }
    chunks
}

/// The fields read before the document's type is known. Unknown fields are ignored here.
#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
struct Header {
    #[serde(default)]
    api_version: Option<String>,
    #[serde(default)]
    kind: Option<String>,
    #[serde(default)]
    metadata: Option<HeaderMetadata>,
}

#[derive(Debug, Default, Deserialize)]
struct HeaderMetadata {
    #[serde(default)]
    name: Option<String>,
}

/// Only a fleet's step, read from a document that did not parse as a whole.
#[derive(Debug, Default, Deserialize)]
struct StepOnly {
    #[serde(default)]
    spec: Option<StepOnlySpec>,
}

#[derive(Debug, Default, Deserialize)]
struct StepOnlySpec {
    #[serde(default)]
    step: Option<String>,
}

/// What one document gave: the document when it parsed (perhaps with fields left out, see
/// [`parse_all`]), every problem found, and the step of a fleet that did not parse.
struct Parsed {
    doc: Option<ParsedDoc>,
    problems: Vec<Problem>,
    step: Option<String>,
}

fn parse_document(file: &Path, chunk: &Chunk) -> Parsed {
    let index = KeyIndex::new(&chunk.text, chunk.first_line);
    let result = parse_header_and_body(&Ctx {
        file,
        chunk,
        index: &index,
    });
    let (doc, problems) = match result {
        Ok((kind, problems, blanked)) => (
            kind.map(|kind| ParsedDoc {
                file: file.to_path_buf(),
                first_line: chunk.first_line,
                index,
                blanked,
                kind,
            }),
            problems,
        ),
        Err(problems) => (None, problems),
    };
    let step = match doc {
        Some(_) => None,
        None => serde_saphyr::from_str::<StepOnly>(&chunk.text)
            .ok()
            .and_then(|s| s.spec?.step),
    };
    Parsed {
        doc,
        problems,
        step,
    }
}

/// Most problems reported for one document (random text stops there).
const MAX_PROBLEMS_PER_DOCUMENT: usize = 50;

/// Parses the document as a `T`, reporting every field it cannot take: after each such
/// problem the entry at fault is blanked out (see [`blank_entry`]; a number field gets its
/// minimum instead) and the parse tried again. Returns the document when the rest parses
/// (blanked fields at stand-in values), the problems, and the dotted paths of the blanked
/// fields.
fn parse_all<T: serde::de::DeserializeOwned>(
    ctx: &Ctx<'_>,
    subject: Option<String>,
    schema_kind: &str,
) -> (Option<T>, Vec<Problem>, Vec<String>) {
    let mut text = ctx.chunk.text.clone();
    let mut problems: Vec<Problem> = Vec::new();
    let mut blanked: Vec<String> = Vec::new();
    // Each round blanks at least one more line, so the rounds are bounded by the lines too.
    while problems.len() < MAX_PROBLEMS_PER_DOCUMENT {
        let err = match serde_saphyr::from_str::<T>(&text) {
            Ok(doc) => return (Some(doc), problems, blanked),
            Err(e) => e,
        };
        let problem = ctx.saphyr_problem(&err, subject.clone(), Some(schema_kind));
        let under_blanked = |f: &str| {
            blanked
                .iter()
                .any(|b| f == b || f.starts_with(&format!("{b}.")))
        };
        if problem.message.starts_with("missing field") {
            // Required fields cannot be blanked out; one that was is already reported.
            if !problem.field.as_deref().is_some_and(under_blanked) {
                problems.push(problem);
            }
            break;
        }
        let entry = match (problem.line, problem.column) {
            (Some(l), Some(c)) => ctx.index.entry_at(l, c).cloned(),
            _ => None,
        };
        let repeated = problems
            .last()
            .is_some_and(|p| (p.line, p.column) == (problem.line, problem.column));
        // A mapping left empty by blanking its only entry (`provider: {gcp: {}}`) is not a
        // second problem.
        let emptied = entry.as_ref().is_some_and(|e| {
            let parent = format!("{}.", e.path.join("."));
            blanked.iter().any(|b| b.starts_with(&parent))
        });
        if !emptied {
            problems.push(problem);
        }
        // A number field gets a value it accepts rather than none: it may be required.
        let next = entry.filter(|_| !repeated).and_then(|e| {
            let stand_in = number_placeholder(schema_kind, &e.path.join("."));
            let next = blank_entry(&text, ctx.chunk.first_line, &e, stand_in.as_deref())?;
            Some((next, e))
        });
        let Some((next, entry)) = next.filter(|(n, _)| *n != text) else {
            break;
        };
        // Blanking keeps the text valid YAML unless, say, an alias pointed into the entry.
        if serde_saphyr::from_str::<serde::de::IgnoredAny>(&next).is_err() {
            break;
        }
        blanked.push(entry.path.join("."));
        text = next;
    }
    (None, problems, blanked)
}

/// The header checks, then the document of its kind. `Err` when the header is unusable.
#[allow(clippy::type_complexity)]
fn parse_header_and_body(
    ctx: &Ctx<'_>,
) -> Result<(Option<ParsedKind>, Vec<Problem>, Vec<String>), Vec<Problem>> {
    let chunk = ctx.chunk;
    let header: Header = serde_saphyr::from_str(&chunk.text)
        .map_err(|e| vec![ctx.saphyr_problem(&e, None, None)])?;
    let name = header.metadata.as_ref().and_then(|m| m.name.clone());
    // Before the kind is known, problems name no subject.
    let mut problems = Vec::new();
    match &header.api_version {
        None => problems.push(ctx.problem_at_field(
            None,
            "apiVersion",
            format!("missing; add `apiVersion: {API_VERSION}`"),
        )),
        Some(v) if v != API_VERSION => problems.push(ctx.problem_at_field(
            None,
            "apiVersion",
            format!(
                "`{}` is not supported by this version of anamo; use `apiVersion: {API_VERSION}`",
                v
            ),
        )),
        Some(_) => {}
    }
    let kind = header.kind.as_deref();
    match kind {
        None => problems.push(ctx.problem_at_field(
            None,
            "kind",
            format!("missing; add `kind: {}`", KINDS.join("` or `kind: ")),
        )),
        Some(k) if !KINDS.contains(&k) => problems.push(ctx.problem_at_field(
            None,
            "kind",
            match did_you_mean(k, &KINDS) {
                Some(best) => format!(
                    "unknown kind `{k}`; did you mean `{best}`? (expected one of {})",
                    KINDS.join(", ")
                ),
                None => format!("unknown kind `{k}`; expected one of {}", KINDS.join(", ")),
            },
        )),
        Some(_) => {}
    }
    if !problems.is_empty() {
        return Err(problems);
    }
    let subject = |kind: &str| {
        name.as_ref()
            .map(|n| format!("{} {n}", kind.to_lowercase()))
    };
    Ok(match kind {
        Some(KIND_FLEET) => {
            let (doc, problems, blanked) =
                parse_all::<FleetDocument>(ctx, subject(KIND_FLEET), "FleetDocument");
            (
                doc.map(|d| ParsedKind::Fleet(Box::new(d))),
                problems,
                blanked,
            )
        }
        _ => {
            let (doc, problems, blanked) = parse_all::<ControllerDocument>(
                ctx,
                subject(KIND_CONTROLLER),
                "ControllerDocument",
            );
            (doc.map(ParsedKind::Controller), problems, blanked)
        }
    })
}

struct Ctx<'a> {
    file: &'a Path,
    chunk: &'a Chunk,
    index: &'a KeyIndex,
}

impl Ctx<'_> {
    fn problem_at_field(&self, subject: Option<String>, field: &str, message: String) -> Problem {
        Problem {
            file: self.file.to_path_buf(),
            line: Some(self.index.line_of(field).unwrap_or(self.chunk.first_line)),
            column: None,
            subject,
            field: Some(field.to_string()),
            message,
        }
    }

    /// A serde-saphyr error as a problem: absolute line and column, the field found from the
    /// location, and a hint where the library's message is terse.
    fn saphyr_problem(
        &self,
        err: &serde_saphyr::Error,
        subject: Option<String>,
        schema_kind: Option<&str>,
    ) -> Problem {
        let raw = UserMessageFormatter.format_message(err.without_snippet());
        let message: String = raw
            .chars()
            .map(|c| if c.is_control() { ' ' } else { c })
            .collect();
        let (line, column) = match err.location() {
            Some(loc) if loc.line() > 0 => (
                Some(self.chunk.first_line + loc.line() as usize - 1),
                Some(loc.column() as usize),
            ),
            _ => (None, None),
        };
        let field = match (line, column) {
            (Some(l), Some(c)) => self.field_at(l, c, &message),
            _ => None,
        };
        Problem {
            file: self.file.to_path_buf(),
            line,
            column,
            subject,
            message: improve_message(message, schema_kind, field.as_deref()),
            field,
        }
    }

    fn field_at(&self, line: usize, column: usize, message: &str) -> Option<String> {
        let missing = message
            .strip_prefix("missing field `")
            .and_then(|m| m.split('`').next());
        let entry = self.index.entry_at(line, column);
        match (missing, entry) {
            (Some(field), Some(e)) => {
                // The location is either a sibling key (block mapping) or the key's own value
                // (`spec: {}`): the missing field belongs to the sibling's parent or to the key.
                let key_len = e.path.last().map_or(0, |k| k.len());
                let on_value = e.line == line && column > e.column + key_len;
                let mut path = e.path.clone();
                if !on_value {
                    path.pop();
                }
                path.push(field.to_string());
                Some(path.join("."))
            }
            (Some(field), None) => Some(field.to_string()),
            (None, Some(e)) => Some(e.path.join(".")),
            (None, None) => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn split_keeps_line_numbers() {
        let text =
            "# leading comment\na: 1\n---\nb: 2\n--- # empty\n# only a comment\n---\nc: 3\n...\n";
        let chunks = split_documents(text);
        let starts: Vec<usize> = chunks.iter().map(|c| c.first_line).collect();
        assert_eq!(starts, vec![1, 3, 7]);
        assert!(chunks[1].text.contains("b: 2"));
        assert!(chunks[2].text.contains("c: 3"));
        assert!(!chunks[2].text.contains("b: 2"));
    }

    #[test]
    fn split_handles_directives_and_inline_documents() {
        let chunks = split_documents("%YAML 1.2\n---\na: 1\n--- {b: 2}\n");
        assert_eq!(chunks.len(), 2);
        assert_eq!(chunks[0].first_line, 1);
        assert_eq!(chunks[1].first_line, 4);
        assert!(split_documents("").is_empty());
        assert!(split_documents("---\n# nothing\n").is_empty());
    }
}
