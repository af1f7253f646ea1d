//! The figures of a run: a summary (written to `target/bench/summary.json`)
//! and a table for humans.

use std::collections::BTreeMap;
use std::error::Error;

/// Figures by key, and the table rows.
#[derive(Default)]
pub struct Report {
    summary: BTreeMap<&'static str, f64>,
    rows: Vec<(String, String, String)>,
}

impl Report {
    /// Records a figure.
    pub fn set(&mut self, key: &'static str, value: f64) {
        self.summary.insert(key, value);
    }

    /// A figure, if measured.
    pub fn get(&self, key: &str) -> Option<f64> {
        self.summary.get(key).copied()
    }

    /// A figure as table text.
    pub fn show(&self, key: &str) -> String {
        self.get(key)
            .map_or("n/a".to_owned(), |value| format!("{value:.2}"))
    }

    /// Adds a table row showing `key`.
    pub fn row(&mut self, name: &str, key: &str, note: impl Into<String>) {
        let value = self.show(key);
        self.rows.push((name.to_owned(), value, note.into()));
    }

    /// Prints the table and writes the summary.
    pub fn finish(&self) -> Result<(), Box<dyn Error>> {
        println!("\n{:<42} {:>12}  notes", "metric", "value");
        for (name, value, note) in &self.rows {
            println!("{name:<42} {value:>12}  {note}");
        }
        let dir = testkit::workspace_dir().join("target/bench");
        std::fs::create_dir_all(&dir)?;
        let path = dir.join("summary.json");
        std::fs::write(&path, serde_json::to_string_pretty(&self.summary)? + "\n")?;
        println!("\nwrote {}", path.display());
        Ok(())
    }
}
