//! A light index of the mapping keys of one YAML document: which key path sits on which line.
//!
//! serde-saphyr reports *where* a problem is (line and column) but not *which field*; and
//! validation knows the field but not the line. This index bridges both ways for the block- and
//! flow-style mappings manifests are written in. It is a best-effort reading of the text, not a
//! YAML parser: when it cannot tell, it answers `None` and messages simply omit the detail.

/// One mapping key: its dotted path (`spec.provider.ec2.subnets`), line and column (1-based).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct KeyEntry {
    pub path: Vec<String>,
    pub line: usize,
    pub column: usize,
}

#[derive(Debug, Default)]
pub(crate) struct KeyIndex {
    entries: Vec<KeyEntry>,
}

impl KeyIndex {
    /// Indexes `text`, whose first line is line `first_line` of its file.
    pub fn new(text: &str, first_line: usize) -> Self {
        let mut entries = Vec::new();
        // Block keys above the current line: (column, key).
        let mut stack: Vec<(usize, String)> = Vec::new();
        // While inside a block scalar (`key: |`), lines indented deeper than this are content.
        let mut block_scalar_indent: Option<usize> = None;
        for (i, raw) in text.lines().enumerate() {
            let line_no = first_line + i;
            let indent = raw.len() - raw.trim_start_matches([' ', '\t']).len();
            let rest = &raw[indent..];
            if let Some(bi) = block_scalar_indent {
                if rest.is_empty() || indent > bi {
                    continue;
                }
                block_scalar_indent = None;
            }
            if rest.is_empty() || rest.starts_with('#') {
                continue;
            }
            if indent == 0 && (rest.starts_with("---") || rest.starts_with("...")) {
                stack.clear();
                continue;
            }
            // Sequence entries `- ` shift the key to the right.
            let mut col = indent;
            let mut body = rest;
            while let Some(after) = body.strip_prefix("- ").or_else(|| body.strip_prefix("-\t")) {
                let trimmed = after.trim_start_matches([' ', '\t']);
                col += body.len() - trimmed.len();
                body = trimmed;
            }
            let Some((key, after_colon)) = split_key(body) else {
                continue;
            };
            while stack.last().is_some_and(|(c, _)| *c >= col) {
                stack.pop();
            }
            let mut path: Vec<String> = stack.iter().map(|(_, k)| k.clone()).collect();
            path.push(key.clone());
            entries.push(KeyEntry {
                path: path.clone(),
                line: line_no,
                column: col + 1,
            });
            let value = after_colon.trim_start_matches([' ', '\t']);
            let value_col = col + (body.len() - value.len());
            if value.starts_with('{') {
                index_flow(value, value_col, line_no, &path, &mut entries);
            } else if value.starts_with('|') || value.starts_with('>') {
                block_scalar_indent = Some(indent);
            }
            stack.push((col, key));
        }
        KeyIndex { entries }
    }

    /// The key a problem at (`line`, `column`) belongs to: the last key on that line at or
    /// left of the column, or else the nearest key above that is indented less.
    pub fn entry_at(&self, line: usize, column: usize) -> Option<&KeyEntry> {
        let on_line = self
            .entries
            .iter()
            .rfind(|e| e.line == line && e.column <= column);
        on_line.or_else(|| {
            self.entries
                .iter()
                .rfind(|e| e.line < line && e.column < column.max(2))
        })
    }

    /// The dotted path of [`Self::entry_at`].
    #[cfg(test)]
    pub fn path_at(&self, line: usize, column: usize) -> Option<String> {
        self.entry_at(line, column).map(|e| e.path.join("."))
    }

    /// Line of the key at `path` (dotted), or of its nearest indexed ancestor.
    pub fn line_of(&self, path: &str) -> Option<usize> {
        let parts: Vec<&str> = path.split('.').collect();
        (1..=parts.len()).rev().find_map(|n| {
            self.entries
                .iter()
                .find(|e| e.path.len() == n && e.path.iter().zip(&parts).all(|(a, b)| a == b))
                .map(|e| e.line)
        })
    }
}

/// `text` (a document whose first line is line `first_line` of its file) with the lines of
/// `entry` made empty: its key line and the lines that belong to it (indented deeper, or list
/// items at its own indent). With a `replacement`, the key line stays and holds that value
/// instead. Every other line keeps its number, so a parse can go on past a bad field and still
/// point at the right lines. `None` when the entry cannot be cut out alone: it shares its line
/// with another key (a flow mapping, a `- key:` list item).
pub(crate) fn blank_entry(
    text: &str,
    first_line: usize,
    entry: &KeyEntry,
    replacement: Option<&str>,
) -> Option<String> {
    let start = entry.line.checked_sub(first_line)?;
    let lines: Vec<&str> = text.split_inclusive('\n').collect();
    let indent_of = |l: &str| l.len() - l.trim_start_matches([' ', '\t']).len();
    let key_line = lines.get(start)?;
    let indent = indent_of(key_line);
    if indent + 1 != entry.column {
        return None;
    }
    let replaced = match replacement {
        Some(value) => {
            let body = &key_line[indent..];
            let (_, after_colon) = split_key(body)?;
            let key_end = indent + body.len() - after_colon.len();
            Some(format!("{} {value}\n", &key_line[..key_end]))
        }
        None => None,
    };
    let mut end = start + 1;
    while let Some(l) = lines.get(end) {
        let t = l.trim();
        let ind = indent_of(l);
        let belongs = t.is_empty()
            || t.starts_with('#')
            || ind > indent
            || (ind == indent && (t == "-" || t.starts_with("- ")));
        if !belongs {
            break;
        }
        end += 1;
    }
    let mut out = String::with_capacity(text.len());
    for (i, l) in lines.iter().enumerate() {
        if let Some(line) = replaced.as_deref().filter(|_| i == start) {
            out.push_str(line);
        } else if (start..end).contains(&i) {
            if l.ends_with('\n') {
                out.push('\n');
            }
        } else {
            out.push_str(l);
        }
    }
    Some(out)
}

/// Splits `key: rest` (plain or quoted key). `None` when the line is not a mapping entry.
fn split_key(body: &str) -> Option<(String, &str)> {
    if let Some(q) = body.chars().next().filter(|c| *c == '"' || *c == '\'') {
        let end = body[1..].find(q)? + 1;
        let after = body[end + 1..].strip_prefix(':')?;
        if !(after.is_empty() || after.starts_with([' ', '\t'])) {
            return None;
        }
        return Some((body[1..end].to_string(), after));
    }
    if body.starts_with(['{', '[', '&', '*', '!', '|', '>', '%', '@', '`']) {
        return None;
    }
    let bytes = body.as_bytes();
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b':' if i + 1 == bytes.len() || bytes[i + 1] == b' ' || bytes[i + 1] == b'\t' => {
                let key = body[..i].trim_end();
                if key.is_empty() {
                    return None;
                }
                return Some((key.to_string(), &body[i + 1..]));
            }
            b' ' if bytes.get(i + 1) == Some(&b'#') => return None,
            _ => {}
        }
        i += 1;
    }
    None
}

/// Indexes the keys of a flow mapping (`{a: 1, b: {c: 2}}`) that starts at byte `start_col`
/// (0-based) of a line.
fn index_flow(
    text: &str,
    start_col: usize,
    line: usize,
    parent: &[String],
    out: &mut Vec<KeyEntry>,
) {
    // Stack of open brackets; for `{`, the path of the mapping it opens.
    let mut stack: Vec<(char, Vec<String>)> = Vec::new();
    let mut last_key: Option<Vec<String>> = None;
    let mut token_start: Option<usize> = None;
    let mut chars = text.char_indices().peekable();
    let current = |stack: &Vec<(char, Vec<String>)>| -> Vec<String> {
        stack
            .iter()
            .rev()
            .find(|(c, _)| *c == '{')
            .map(|(_, p)| p.clone())
            .unwrap_or_else(|| parent.to_vec())
    };
    while let Some((i, c)) = chars.next() {
        match c {
            '"' | '\'' => {
                token_start.get_or_insert(i);
                for (_, d) in chars.by_ref() {
                    if d == c {
                        break;
                    }
                }
            }
            '{' => {
                let path = if stack.is_empty() {
                    parent.to_vec()
                } else {
                    last_key.clone().unwrap_or_else(|| current(&stack))
                };
                stack.push(('{', path));
                token_start = None;
            }
            '[' => {
                stack.push(('[', Vec::new()));
                token_start = None;
            }
            '}' | ']' => {
                stack.pop();
                token_start = None;
                if stack.is_empty() {
                    return;
                }
            }
            ',' => token_start = None,
            ':' if matches!(chars.peek(), Some((_, ' ' | '\t' | ',' | '}')) | None) => {
                if let (Some(s), Some(('{', _))) = (token_start, stack.last()) {
                    let key = text[s..i].trim().trim_matches(['"', '\'']).to_string();
                    let mut path = current(&stack);
                    path.push(key);
                    out.push(KeyEntry {
                        path: path.clone(),
                        line,
                        column: start_col + s + 1,
                    });
                    last_key = Some(path);
                }
                token_start = None;
            }
            ' ' | '\t' => {}
            _ => {
                token_start.get_or_insert(i);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const DOC: &str = "\
apiVersion: anamo.dev/v1
kind: Fleet
metadata:
  name: align
spec:
  step: align
  provider:
    ec2:
      launchTemplate: {name: lt, version: \"3\"}
      instanceTypes:
        - m6i.large
  maxInstances: x   # comment
  budget:
    maxHourlyCost: 3
";

    #[test]
    fn paths_of_block_and_flow_keys() {
        let idx = KeyIndex::new(DOC, 1);
        assert_eq!(idx.path_at(4, 3).as_deref(), Some("metadata.name"));
        assert_eq!(idx.path_at(12, 17).as_deref(), Some("spec.maxInstances"));
        assert_eq!(
            idx.path_at(9, 43).as_deref(),
            Some("spec.provider.ec2.launchTemplate.version")
        );
        assert_eq!(
            idx.path_at(11, 11).as_deref(),
            Some("spec.provider.ec2.instanceTypes")
        );
        assert_eq!(idx.line_of("spec.budget.maxHourlyCost"), Some(14));
        assert_eq!(idx.line_of("spec.minInstances"), Some(5));
        assert_eq!(idx.line_of("nothing.here"), None);
    }

    #[test]
    fn entries_are_blanked_with_their_children_only() {
        let idx = KeyIndex::new(DOC, 1);
        let at = |line| idx.entry_at(line, 3).unwrap().clone();
        // `provider:` (line 7) owns lines 7-11; `maxInstances` on line 12 stays.
        let out = blank_entry(DOC, 1, &at(7), None).unwrap();
        assert_eq!(out.lines().count(), DOC.lines().count());
        assert!(!out.contains("ec2") && !out.contains("m6i.large"), "{out}");
        assert!(
            out.lines().nth(11).unwrap().contains("maxInstances"),
            "{out}"
        );
        // Or with a value in place of the old one (and its comment).
        let out = blank_entry(DOC, 1, &at(12), Some("1")).unwrap();
        assert_eq!(out.lines().nth(11), Some("  maxInstances: 1"));
        assert_eq!(out.lines().count(), DOC.lines().count());
        // A key inside a flow mapping shares its line: it cannot be cut out alone.
        let flow = idx.entry_at(9, 30).unwrap().clone();
        assert_eq!(flow.path.last().map(String::as_str), Some("name"));
        assert_eq!(blank_entry(DOC, 1, &flow, None), None);
    }

    #[test]
    fn offsets_and_block_scalars() {
        let idx = KeyIndex::new("---\na: |\n  b: 1\nc: 2\n", 10);
        assert_eq!(idx.line_of("c"), Some(13));
        assert_eq!(idx.line_of("a.b"), Some(11));
        assert_eq!(idx.path_at(12, 1).as_deref(), Some("a"));
    }
}
