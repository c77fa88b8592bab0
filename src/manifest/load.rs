//! Reading manifest files: split into documents, dispatch on `kind`, parse with serde-saphyr,
//! and turn its errors into `file:LINE:COL: field: message` problems.

use std::fs;
use std::path::{Path, PathBuf};

use serde::Deserialize;
use serde_saphyr::{MessageFormatter, UserMessageFormatter};

use super::keys::KeyIndex;
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
        let text = crate::import::utf8_text(&path.display().to_string(), bytes).map_err(|e| {
            ManifestError::Parse {
                problems: vec![Problem {
                    file: path.clone(),
                    line: Some(e.line),
                    column: None,
                    subject: None,
                    field: None,
                    message: e.message,
                }],
            }
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
    for (path, text) in sources {
        for chunk in split_documents(text) {
            match parse_document(path, &chunk) {
                Ok(doc) => docs.push(doc),
                Err(p) => problems.extend(p),
            }
        }
    }
    if !problems.is_empty() {
        return Err(ManifestError::Parse { problems });
    }
    validate(docs, check_files)
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

fn parse_document(file: &Path, chunk: &Chunk) -> Result<ParsedDoc, Vec<Problem>> {
    let index = KeyIndex::new(&chunk.text, chunk.first_line);
    let ctx = Ctx {
        file,
        chunk,
        index: &index,
    };
    let header: Header =
        serde_saphyr::from_str(&chunk.text).map_err(|e| vec![ctx.saphyr_problem(&e, None)])?;
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
            format!("unknown kind `{k}`; expected one of {}", KINDS.join(", ")),
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
    let kind = match kind {
        Some(KIND_FLEET) => ParsedKind::Fleet(Box::new(
            serde_saphyr::from_str::<FleetDocument>(&chunk.text)
                .map_err(|e| vec![ctx.saphyr_problem(&e, subject(KIND_FLEET))])?,
        )),
        Some(KIND_CONTROLLER) => ParsedKind::Controller(
            serde_saphyr::from_str::<ControllerDocument>(&chunk.text)
                .map_err(|e| vec![ctx.saphyr_problem(&e, subject(KIND_CONTROLLER))])?,
        ),
        _ => unreachable!("kind checked above"),
    };
    Ok(ParsedDoc {
        file: file.to_path_buf(),
        first_line: chunk.first_line,
        index,
        kind,
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
    fn saphyr_problem(&self, err: &serde_saphyr::Error, subject: Option<String>) -> Problem {
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
            field,
            message: improve_message(message),
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

/// Adds how-to-fix hints to serde-saphyr's terser messages.
fn improve_message(message: String) -> String {
    match message.as_str() {
        "expected mapping start" => {
            return "expected a mapping (`key: value` lines, or `{key: value}`) here".to_string()
        }
        "expected sequence start" => {
            return "expected a list (`- item` lines, or `[a, b]`) here".to_string()
        }
        "invalid floating point" => return "expected a number".to_string(),
        _ => {}
    }
    for (ty, what) in [
        ("u8", "a whole number, 0 or more"),
        ("u16", "a whole number, 0 or more"),
        ("u32", "a whole number, 0 or more"),
        ("u64", "a whole number, 0 or more"),
        ("i32", "a whole number"),
        ("i64", "a whole number"),
        ("f32", "a number"),
        ("f64", "a number"),
    ] {
        if message == format!("invalid {ty}") {
            return format!("expected {what}");
        }
    }
    if message.contains("expected a duration") {
        return format!("{message}; write a duration such as `30s`, `5m` or `1h 30m`");
    }
    message
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
