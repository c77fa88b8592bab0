//! Text read from users' files: bytes become a `String` only if they are UTF-8, and a file
//! that is not says on which line and at which byte, so that task files (`import`) and
//! manifests (`manifest`) report it the same way. It sits below both. Also text cut for
//! display ([`shorten`]), shared by the CLI and the status page.

/// Where a file stops being UTF-8.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NotUtf8 {
    /// 1-based line of the first invalid sequence.
    pub line: usize,
    /// What is wrong and how to fix it.
    pub message: String,
}

/// The text of `bytes`, or the line and byte where the first invalid UTF-8 sequence is.
pub fn utf8(bytes: Vec<u8>) -> Result<String, NotUtf8> {
    String::from_utf8(bytes).map_err(|e| {
        let at = e.utf8_error().valid_up_to();
        let bytes = e.as_bytes();
        let before = &bytes[..at];
        let line = before.iter().filter(|b| **b == b'\n').count() + 1;
        let line_start = before
            .iter()
            .rposition(|b| *b == b'\n')
            .map_or(0, |p| p + 1);
        NotUtf8 {
            line,
            message: format!(
                "not valid UTF-8 (byte {} of the line is 0x{:02x}); save the file as UTF-8",
                at - line_start + 1,
                bytes.get(at).copied().unwrap_or(0)
            ),
        }
    })
}

/// `s` cut to at most `max` characters, with an ellipsis when cut.
pub fn shorten(s: &str, max: usize) -> String {
    if s.chars().count() <= max {
        s.to_string()
    } else {
        let mut out: String = s.chars().take(max.saturating_sub(1)).collect();
        out.push('…');
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_the_line_and_byte_of_the_first_invalid_sequence() {
        let e = utf8(b"ok\nab\xffc\n".to_vec()).unwrap_err();
        assert_eq!(e.line, 2);
        assert!(
            e.message.contains("byte 3 of the line is 0xff"),
            "{}",
            e.message
        );
        assert_eq!(utf8(b"fine\n".to_vec()).unwrap(), "fine\n");
    }
}
