//! Log lines of the long-running commands (the guard, autosnap): one line
//! per event, as the sentence people read (`text`), as `key=value` pairs
//! for journald and log shippers (`kv`), or as one JSON object (`json`).
//!
//! A line is never lost to a closed pipe: when the log stream fails (the
//! journal restarted, `subvol guard | head` ended), the line and every one
//! after it go to the kernel log (/dev/kmsg, which journald also reads), and
//! the guard keeps guarding; a log line must never be what stops it.

use std::io::Write;
use subvol_core::text::escape;
use subvol_pool::{Event, Field};

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    Text,
    Kv,
    Json,
}

/// Where the lines go first.
pub enum Stream {
    Stdout,
    Stderr,
}

pub struct LogSink {
    format: LogFormat,
    stream: Stream,
    /// Set once the stream failed: from then on, the kernel log.
    kmsg: Option<std::fs::File>,
    /// Lines neither could take.
    pub lost: u64,
}

impl LogSink {
    pub fn new(format: LogFormat, stream: Stream) -> LogSink {
        LogSink { format, stream, kmsg: None, lost: 0 }
    }

    pub fn emit(&mut self, ev: &Event) {
        let line = render(self.format, ev, &chrono::Utc::now());
        if self.kmsg.is_none() {
            let ok = match self.stream {
                Stream::Stdout => std::io::stdout().lock().write_all(format!("{line}\n").as_bytes()),
                Stream::Stderr => std::io::stderr().lock().write_all(format!("{line}\n").as_bytes()),
            };
            if ok.is_ok() {
                return;
            }
            self.kmsg = std::fs::OpenOptions::new().write(true).open("/dev/kmsg").ok();
        }
        let written = self.kmsg.as_mut().map(|k| k.write_all(kmsg_record(ev, &line).as_bytes()));
        if !matches!(written, Some(Ok(()))) {
            self.lost += 1;
        }
    }
}

/// A kernel log record: `<level>subvol[pid]: line`, cut to what one record
/// holds. Warnings and errors at level 4, the rest at 6 (info).
fn kmsg_record(ev: &Event, line: &str) -> String {
    let level = if matches!(ev.kind, "warning" | "error") { 4 } else { 6 };
    let mut text = format!("<{level}>subvol[{}]: {line}", std::process::id());
    if text.len() > 960 {
        let mut cut = 960;
        while !text.is_char_boundary(cut) {
            cut -= 1;
        }
        text.truncate(cut);
    }
    text.push('\n');
    text
}

/// One event as one line (no newline inside, whatever its strings hold).
pub fn render(format: LogFormat, ev: &Event, now: &chrono::DateTime<chrono::Utc>) -> String {
    match format {
        LogFormat::Text => escape(&ev.message).into_owned(),
        LogFormat::Json => {
            let mut v = serde_json::to_value(ev).unwrap_or_default();
            if let Some(m) = v.as_object_mut() {
                m.insert("ts".into(), now.to_rfc3339_opts(chrono::SecondsFormat::Millis, true).into());
            }
            v.to_string()
        }
        LogFormat::Kv => {
            let mut out = format!("ts={} event={}", now.to_rfc3339_opts(chrono::SecondsFormat::Millis, true), ev.kind);
            if let Some(s) = &ev.subvolume {
                out.push_str(&format!(" subvolume={}", kv_value(s)));
            }
            for (k, v) in &ev.fields {
                let v = match v {
                    Field::Int(i) => i.to_string(),
                    Field::Float(f) => format!("{f:.1}"),
                    Field::Text(t) => kv_value(t),
                };
                out.push_str(&format!(" {k}={v}"));
            }
            out.push_str(&format!(" msg={}", kv_value(&ev.message)));
            out
        }
    }
}

/// A value bare when it is one plain word, else double-quoted with `\` and
/// `"` escaped and anything non-printable shown escaped.
fn kv_value(v: &str) -> String {
    let plain = !v.is_empty() && v.chars().all(|c| c.is_ascii_graphic() && c != '"' && c != '=' && c != '\\');
    if plain {
        return v.to_string();
    }
    format!("\"{}\"", escape(v).replace('\\', "\\\\").replace('"', "\\\""))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Event {
        Event::new("freeze", "guard: froze a at /p/mnt/a in 1.5 ms (pause)")
            .on("a")
            .float("freeze_ms", 1.5)
            .int("free_bytes", 1024)
            .text("until", "pause")
    }

    #[test]
    fn each_format_is_one_line_with_the_numbers() {
        let now = chrono::DateTime::parse_from_rfc3339("2026-12-01T00:00:00Z").unwrap().with_timezone(&chrono::Utc);
        let ev = sample();
        assert_eq!(render(LogFormat::Text, &ev, &now), "guard: froze a at /p/mnt/a in 1.5 ms (pause)");
        assert_eq!(
            render(LogFormat::Kv, &ev, &now),
            "ts=2026-12-01T00:00:00.000Z event=freeze subvolume=a freeze_ms=1.5 free_bytes=1024 until=pause \
             msg=\"guard: froze a at /p/mnt/a in 1.5 ms (pause)\""
        );
        let j: serde_json::Value = serde_json::from_str(&render(LogFormat::Json, &ev, &now)).unwrap();
        assert_eq!(
            (j["event"].as_str(), j["subvolume"].as_str(), j["free_bytes"].as_u64()),
            (Some("freeze"), Some("a"), Some(1024))
        );
        assert_eq!(j["ts"], "2026-12-01T00:00:00.000Z");
    }

    #[test]
    fn hostile_strings_stay_on_their_line() {
        let now = chrono::Utc::now();
        let ev = Event::new("error", "bad\nline \u{1b}[2J \"q\"").text("path", "/x y\n=z");
        for f in [LogFormat::Text, LogFormat::Kv, LogFormat::Json] {
            let l = render(f, &ev, &now);
            assert!(!l.contains('\n') && !l.contains('\u{1b}'), "{f:?}: {l:?}");
        }
        assert!(kmsg_record(&ev, &"x".repeat(5000)).len() <= 961);
    }
}
