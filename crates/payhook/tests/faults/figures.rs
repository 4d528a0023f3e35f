//! What each scenario reports: one `FIGURES` line, which `scripts/faults` collects into its
//! summary and docs/operations.md's "What we test" table quotes.

use std::fmt::Write;
use std::time::Duration;

/// The outcome of one fault scenario.
#[derive(Debug, Default)]
pub struct Figures {
    pub scenario: &'static str,
    /// Callbacks that had to arrive (each reported status, answered 2xx by the API).
    pub expected: usize,
    /// Of those, how many a healthy receiver answered 2xx.
    pub delivered: usize,
    /// Requests beyond the first for a status the receiver had already answered 2xx.
    pub duplicates: usize,
    /// Other notes: a time to recover, a p99, what was refused.
    pub notes: Vec<(String, String)>,
}

impl Figures {
    pub fn new(scenario: &'static str) -> Figures {
        Figures { scenario, ..Figures::default() }
    }

    pub fn lost(&self) -> usize {
        self.expected.saturating_sub(self.delivered)
    }

    pub fn note(&mut self, key: &str, value: impl std::fmt::Display) -> &mut Self {
        self.notes.push((key.to_owned(), value.to_string()));
        self
    }

    pub fn note_duration(&mut self, key: &str, d: Duration) -> &mut Self {
        self.note(key, format!("{:.1}s", d.as_secs_f64()))
    }

    /// Prints the `FIGURES` line.
    pub fn print(&self) {
        let mut line = format!(
            "FIGURES {} expected={} delivered={} duplicates={} lost={}",
            self.scenario,
            self.expected,
            self.delivered,
            self.duplicates,
            self.lost()
        );
        for (k, v) in &self.notes {
            let _ = write!(line, " {k}={v}");
        }
        println!("{line}");
    }
}
