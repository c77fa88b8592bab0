//! Standard output for every command (through [`out!`] and [`outln!`], never `print!`),
//! plain-text tables and JSON.
//!
//! Like a Unix tool, a command whose reader has gone (`anamo task list | head`) stops quietly:
//! writing to the closed pipe ends the process with status 0 instead of panicking with
//! "failed printing to stdout: Broken pipe". Rust ignores SIGPIPE, and putting its default
//! action back would also let a reset network connection kill the process, so the write
//! error is handled here instead.

use std::io::Write;

use serde::Serialize;

/// Writes to standard output; see the module documentation for a closed pipe.
pub fn write_stdout(args: std::fmt::Arguments<'_>) {
    let result = std::io::stdout().lock().write_fmt(args);
    if let Err(e) = result {
        if e.kind() == std::io::ErrorKind::BrokenPipe {
            std::process::exit(0);
        }
        eprintln!("error: cannot write to standard output: {e}");
        std::process::exit(1);
    }
}

/// `print!` through [`write_stdout`].
macro_rules! out {
    ($($arg:tt)*) => {
        $crate::cli::output::write_stdout(format_args!($($arg)*))
    };
}

/// `println!` through [`write_stdout`].
macro_rules! outln {
    () => {
        $crate::cli::output::write_stdout(format_args!("\n"))
    };
    ($($arg:tt)*) => {
        $crate::cli::output::write_stdout(format_args!("{}\n", format_args!($($arg)*)))
    };
}

pub(crate) use {out, outln};

/// A left-aligned text table with a header row.
pub struct Table {
    header: Vec<String>,
    rows: Vec<Vec<String>>,
}

impl Table {
    pub fn new<I: IntoIterator<Item = S>, S: Into<String>>(header: I) -> Self {
        Table {
            header: header.into_iter().map(Into::into).collect(),
            rows: Vec::new(),
        }
    }

    pub fn row<I: IntoIterator<Item = S>, S: Into<String>>(&mut self, cells: I) {
        self.rows.push(cells.into_iter().map(Into::into).collect());
    }

    pub fn is_empty(&self) -> bool {
        self.rows.is_empty()
    }

    pub fn render(&self) -> String {
        let cols = self.header.len();
        let mut width = vec![0usize; cols];
        for r in std::iter::once(&self.header).chain(&self.rows) {
            for (i, c) in r.iter().enumerate().take(cols) {
                width[i] = width[i].max(c.chars().count());
            }
        }
        let mut out = String::new();
        for r in std::iter::once(&self.header).chain(&self.rows) {
            let mut line = String::new();
            for (i, c) in r.iter().enumerate().take(cols) {
                if i + 1 == cols {
                    line.push_str(c);
                } else {
                    line.push_str(&format!("{c:<w$}  ", w = width[i]));
                }
            }
            out.push_str(line.trim_end());
            out.push('\n');
        }
        out
    }
}

/// Whether to print plain ASCII instead of Unicode symbols (`✓`, `✗`): when standard output
/// is not a terminal, or `NO_COLOR` or `ANAMO_ASCII` is set (not empty). The same rule as for
/// colours ([`crate::telemetry::use_colour`]), plus `ANAMO_ASCII` for terminals without the
/// symbols' font.
pub fn ascii_output() -> bool {
    use std::io::IsTerminal;
    let ascii = std::env::var_os("ANAMO_ASCII");
    !crate::telemetry::use_colour(
        std::io::stdout().is_terminal(),
        std::env::var_os("NO_COLOR").as_deref(),
    ) || ascii.is_some_and(|v| !v.is_empty())
}

pub fn print_json<T: Serialize + ?Sized>(value: &T) -> anyhow::Result<()> {
    outln!("{}", serde_json::to_string_pretty(value)?);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn columns_align() {
        let mut t = Table::new(["a", "bb"]);
        t.row(["xxx", "y"]);
        assert_eq!(t.render(), "a    bb\nxxx  y\n");
    }
}
