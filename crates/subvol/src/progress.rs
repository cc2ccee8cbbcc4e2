//! Progress bars for long copies, shown only on a terminal.

use indicatif::{ProgressBar, ProgressStyle};
use std::cell::RefCell;
use std::io::IsTerminal;

/// A bar created on the first update (so quick operations print nothing).
pub struct Bar {
    label: &'static str,
    bar: RefCell<Option<ProgressBar>>,
    enabled: bool,
}

impl Bar {
    pub fn new(label: &'static str) -> Self {
        Bar { label, bar: RefCell::new(None), enabled: std::io::stderr().is_terminal() }
    }

    pub fn update(&self, done: u64, total: u64) {
        if !self.enabled {
            return;
        }
        let mut slot = self.bar.borrow_mut();
        let bar = slot.get_or_insert_with(|| {
            let b = ProgressBar::new(total);
            b.set_style(
                ProgressStyle::with_template("{msg} {bar:30} {bytes}/{total_bytes} {bytes_per_sec} ETA {eta}")
                    .unwrap_or_else(|_| ProgressStyle::default_bar()),
            );
            b.set_message(self.label);
            b
        });
        bar.set_length(total);
        bar.set_position(done);
    }

    pub fn finish(&self) {
        if let Some(b) = self.bar.borrow_mut().take() {
            b.finish_and_clear();
        }
    }
}
