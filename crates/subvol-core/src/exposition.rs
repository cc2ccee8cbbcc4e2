//! The Prometheus text exposition format (version 0.0.4), written by hand
//! because it is small and subvol must control every byte a scraper reads:
//! a `# HELP` and a `# TYPE` line per family, then one line per sample.
//! Label values are escaped (backslash, double quote, newline), as is help
//! text (backslash, newline); names are checked against the format's rule,
//! so a name or label from a pool (a subvolume name, a path) can never
//! break a line or forge a sample.

use std::fmt::Write;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Gauge,
    Counter,
}

/// One metric family: a name, its help, its type and its samples.
#[derive(Debug, Clone, PartialEq)]
pub struct Family {
    pub name: &'static str,
    pub help: &'static str,
    pub kind: Kind,
    pub samples: Vec<Sample>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Sample {
    pub labels: Vec<(&'static str, String)>,
    pub value: f64,
}

impl Family {
    pub fn gauge(name: &'static str, help: &'static str) -> Family {
        Family { name, help, kind: Kind::Gauge, samples: Vec::new() }
    }

    /// Adds a sample with `labels`.
    pub fn push(&mut self, labels: &[(&'static str, &str)], value: f64) {
        self.samples.push(Sample { labels: labels.iter().map(|(k, v)| (*k, v.to_string())).collect(), value });
    }
}

/// Whether `name` is a valid metric or label name (`[a-zA-Z_:][a-zA-Z0-9_:]*`;
/// label names may not contain `:`, which subvol never uses).
pub fn valid_name(name: &str) -> bool {
    let mut chars = name.chars();
    matches!(chars.next(), Some(c) if c.is_ascii_alphabetic() || c == '_' || c == ':')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':')
}

/// A label value as the format wants it between double quotes.
pub fn escape_label_value(v: &str) -> String {
    let mut out = String::with_capacity(v.len());
    for c in v.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '"' => out.push_str("\\\""),
            '\n' => out.push_str("\\n"),
            c => out.push(c),
        }
    }
    out
}

fn escape_help(v: &str) -> String {
    v.replace('\\', "\\\\").replace('\n', "\\n")
}

/// Go's float formatting as Prometheus reads it: integers without a
/// fraction, `NaN`, `+Inf`, `-Inf`.
fn value(v: f64) -> String {
    if v.is_nan() {
        "NaN".into()
    } else if v.is_infinite() {
        if v > 0.0 { "+Inf" } else { "-Inf" }.into()
    } else if v.fract() == 0.0 && v.abs() < 1e15 {
        format!("{}", v as i64)
    } else {
        format!("{v}")
    }
}

/// Renders `families`; a family without samples is left out (the format
/// allows it, but it says nothing). Panics on an invalid metric or label
/// name: those are constants in subvol's code, so it is a bug.
pub fn render(families: &[Family]) -> String {
    let mut out = String::new();
    for f in families.iter().filter(|f| !f.samples.is_empty()) {
        assert!(valid_name(f.name), "invalid metric name {:?}", f.name);
        let kind = match f.kind {
            Kind::Gauge => "gauge",
            Kind::Counter => "counter",
        };
        let _ = writeln!(out, "# HELP {} {}", f.name, escape_help(f.help));
        let _ = writeln!(out, "# TYPE {} {kind}", f.name);
        for s in &f.samples {
            out.push_str(f.name);
            if !s.labels.is_empty() {
                out.push('{');
                for (i, (k, v)) in s.labels.iter().enumerate() {
                    assert!(valid_name(k) && !k.contains(':') && !k.starts_with("__"), "invalid label name {k:?}");
                    let _ = write!(out, "{}{k}=\"{}\"", if i > 0 { "," } else { "" }, escape_label_value(v));
                }
                out.push('}');
            }
            let _ = writeln!(out, " {}", value(s.value));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// Reads one escaped label value back (the inverse of the escaping).
    fn unescape(v: &str) -> String {
        let mut out = String::new();
        let mut chars = v.chars();
        while let Some(c) = chars.next() {
            if c == '\\' {
                match chars.next() {
                    Some('n') => out.push('\n'),
                    Some(o) => out.push(o),
                    None => out.push('\\'),
                }
            } else {
                out.push(c);
            }
        }
        out
    }

    #[test]
    fn renders_help_type_and_samples() {
        let mut f = Family::gauge("subvol_pool_free_bytes", "Free bytes.\nSecond line");
        f.push(&[("pool", "/p")], 1024.0);
        f.push(&[("pool", "/q\"x")], 0.5);
        let empty = Family::gauge("subvol_unused", "never shown");
        assert_eq!(
            render(&[f, empty]),
            "# HELP subvol_pool_free_bytes Free bytes.\\nSecond line\n# TYPE subvol_pool_free_bytes gauge\n\
             subvol_pool_free_bytes{pool=\"/p\"} 1024\nsubvol_pool_free_bytes{pool=\"/q\\\"x\"} 0.5\n"
        );
        assert_eq!(value(f64::NAN), "NaN");
        assert_eq!(value(f64::INFINITY), "+Inf");
        assert_eq!(value(1e20), "100000000000000000000");
    }

    proptest! {
        /// Whatever a label value holds, its sample stays one line, the
        /// value ends at the first unescaped quote, and it reads back intact.
        #[test]
        fn any_label_value_stays_in_its_quotes(v in any::<String>()) {
            let mut f = Family::gauge("subvol_test", "t");
            f.push(&[("name", &v)], 1.0);
            let text = render(&[f]);
            let line = text.lines().nth(2).unwrap();
            prop_assert_eq!(text.lines().count(), 3);
            let inner = line.strip_prefix("subvol_test{name=\"").unwrap().strip_suffix("\"} 1").unwrap();
            let mut escaped = false;
            for c in inner.chars() {
                prop_assert!(escaped || c != '"', "an unescaped quote in {:?}", inner);
                escaped = !escaped && c == '\\';
            }
            prop_assert_eq!(unescape(inner), v);
        }

        #[test]
        fn names_follow_the_format(n in "[a-zA-Z_:][a-zA-Z0-9_:]{0,20}", bad in "[0-9 .{}\"-][a-z]{0,5}") {
            prop_assert!(valid_name(&n));
            prop_assert!(!valid_name(&bad));
        }
    }
}
