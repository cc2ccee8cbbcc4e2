//! What a long-running command (the guard, autosnap) did, as one event with
//! its numbers. The pool layer says what happened; a front end chooses how
//! to print it (the human sentence, key=value for journald, or JSON), so
//! monitoring can read the figures without parsing sentences.

use serde::ser::{Serialize, SerializeMap, Serializer};

#[derive(Debug, Clone, PartialEq)]
pub enum Field {
    Int(u64),
    Float(f64),
    Text(String),
}

#[derive(Debug, Clone, PartialEq)]
pub struct Event {
    /// What happened, one word: `start`, `freeze`, `thaw`, `react`,
    /// `room`, `harden`, `trim`, `prune`, `cap_restored`, `busy`,
    /// `snapshot`, `warning`, `error`.
    pub kind: &'static str,
    pub subvolume: Option<String>,
    /// The numbers, named with their unit (`_bytes`, `_ms`, `_per_second`).
    pub fields: Vec<(&'static str, Field)>,
    /// The same, as a sentence for people.
    pub message: String,
}

impl Event {
    pub fn new(kind: &'static str, message: impl Into<String>) -> Event {
        Event { kind, subvolume: None, fields: Vec::new(), message: message.into() }
    }

    pub fn on(mut self, subvolume: &str) -> Event {
        self.subvolume = Some(subvolume.to_string());
        self
    }

    pub fn int(mut self, name: &'static str, v: u64) -> Event {
        self.fields.push((name, Field::Int(v)));
        self
    }

    pub fn float(mut self, name: &'static str, v: f64) -> Event {
        self.fields.push((name, Field::Float(v)));
        self
    }

    pub fn text(mut self, name: &'static str, v: impl Into<String>) -> Event {
        self.fields.push((name, Field::Text(v.into())));
        self
    }
}

impl Serialize for Event {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut m = s.serialize_map(None)?;
        m.serialize_entry("event", self.kind)?;
        if let Some(n) = &self.subvolume {
            m.serialize_entry("subvolume", n)?;
        }
        for (k, v) in &self.fields {
            match v {
                Field::Int(i) => m.serialize_entry(k, i)?,
                Field::Float(f) => m.serialize_entry(k, f)?,
                Field::Text(t) => m.serialize_entry(k, t)?,
            }
        }
        m.serialize_entry("message", &self.message)?;
        m.end()
    }
}
