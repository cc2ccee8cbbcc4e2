//! Printing: aligned tables for people, JSON for scripts. (The exit codes
//! are the library's: `ErrorKind::exit_code`.)

use serde::Serialize;
use std::io::Write;

/// Writes to stdout; a closed pipe (`subvol list | head`) ends quietly.
pub fn emit(text: &str) {
    let mut out = std::io::stdout().lock();
    if out.write_all(text.as_bytes()).and_then(|_| out.flush()).is_err() {
        std::process::exit(0);
    }
}

pub fn json<T: Serialize>(value: &T) {
    let mut s = serde_json::to_string_pretty(value).unwrap_or_else(|_| "null".into());
    s.push('\n');
    emit(&s);
}

/// `value` as JSON with an `outcome` field added (`done`, or
/// `already_done` for a retried call that found the pool as asked).
pub fn json_with_outcome<T: Serialize>(value: &T, outcome: subvol_pool::Outcome) {
    let mut v = serde_json::to_value(value).unwrap_or(serde_json::Value::Null);
    if let Some(map) = v.as_object_mut() {
        map.insert("outcome".into(), serde_json::to_value(outcome).unwrap_or_default());
    }
    json(&v);
}

/// A table with a header row; columns padded to their widest cell.
pub struct Table {
    rows: Vec<Vec<String>>,
}

impl Table {
    pub fn new(header: &[&str]) -> Self {
        Table { rows: vec![header.iter().map(|s| s.to_string()).collect()] }
    }

    /// Adds a row; anything non-printable in a cell is escaped, so stored
    /// strings cannot forge rows or drive the terminal.
    pub fn row(&mut self, cells: Vec<String>) {
        self.rows.push(cells.into_iter().map(|c| subvol_core::text::escape(&c).into_owned()).collect());
    }

    pub fn render(&self) -> String {
        let cols = self.rows.iter().map(Vec::len).max().unwrap_or(0);
        let widths: Vec<usize> = (0..cols)
            .map(|c| self.rows.iter().filter_map(|r| r.get(c)).map(|s| s.chars().count()).max().unwrap_or(0))
            .collect();
        let mut out = String::new();
        for row in &self.rows {
            let mut line = String::new();
            for (i, cell) in row.iter().enumerate() {
                if i + 1 == row.len() {
                    line.push_str(cell);
                } else {
                    line.push_str(&format!("{cell:<w$}  ", w = widths[i]));
                }
            }
            out.push_str(line.trim_end());
            out.push('\n');
        }
        out
    }
}

/// A duration for people, in its two largest units: `45s`, `12m`,
/// `3h 20m`, `4d 6h`.
pub fn format_age(secs: u64) -> String {
    let (d, h, m, s) = (secs / 86_400, secs / 3600 % 24, secs / 60 % 60, secs % 60);
    match (d, h, m) {
        (0, 0, 0) => format!("{s}s"),
        (0, 0, _) => format!("{m}m"),
        (0, _, 0) => format!("{h}h"),
        (0, _, _) => format!("{h}h {m}m"),
        (_, 0, _) => format!("{d}d"),
        _ => format!("{d}d {h}h"),
    }
}

/// `key: value` lines, keys aligned.
pub fn fields(pairs: &[(&str, String)]) -> String {
    let w = pairs.iter().map(|(k, _)| k.len()).max().unwrap_or(0);
    pairs
        .iter()
        .map(|(k, v)| format!("{:<w$}  {}\n", format!("{k}:"), subvol_core::text::escape(v), w = w + 1))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ages_read_in_their_two_largest_units() {
        let cases =
            [(0, "0s"), (59, "59s"), (60, "1m"), (754, "12m"), (3600, "1h"), (12_000, "3h 20m"), (86_400, "1d")];
        for (secs, text) in cases {
            assert_eq!(format_age(secs), text, "{secs}");
        }
        assert_eq!(format_age(4 * 86_400 + 6 * 3600 + 59), "4d 6h");
    }

    #[test]
    fn tables_and_fields_escape_what_a_terminal_would_act_on() {
        let mut t = Table::new(&["NAME", "ORIGIN"]);
        t.row(vec!["web@s1".into(), "web\n\u{1b}[2Jfake  row".into()]);
        let out = t.render();
        assert_eq!(out.lines().count(), 2, "a stored string forged a row: {out:?}");
        assert!(!out.contains('\u{1b}') && out.contains("\\u{1b}[2J"), "{out:?}");
        let f = fields(&[("tags", "a\u{202e}b\nc".into())]);
        assert_eq!(f.lines().count(), 1, "{f:?}");
        assert!(f.contains("a\\u{202e}b\\nc"), "{f:?}");
    }
}
