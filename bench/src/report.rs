use hdrhistogram::Histogram;

/// A two-column table printed at the end of a run.
pub struct Report {
    title: String,
    rows: Vec<(String, String)>,
}

impl Report {
    pub fn new(title: &str) -> Self {
        Self {
            title: title.into(),
            rows: Vec::new(),
        }
    }

    pub fn row(mut self, name: &str, value: impl Into<String>) -> Self {
        self.rows.push((name.into(), value.into()));
        self
    }

    pub fn print(&self) {
        let width = self.rows.iter().map(|(n, _)| n.len()).max().unwrap_or(0);
        println!("\n{}", self.title);
        println!("{}", "-".repeat(self.title.len()));
        for (name, value) in &self.rows {
            println!("{name:<width$}  {value}");
        }
    }
}

/// p50 / p99 / max of a histogram of microseconds, in milliseconds.
/// How many seconds of sending saw a delivery slower than `limit_us`: a tail
/// made of a few such seconds comes from stalls, not from a steady queue.
pub fn slow_seconds(slowest_per_second: &[u64], limit_us: u64) -> String {
    let slow = slowest_per_second.iter().filter(|&&us| us > limit_us).count();
    format!("{slow} of {} s", slowest_per_second.len())
}

pub fn millis(h: &Histogram<u64>) -> String {
    let ms = |us: u64| us as f64 / 1000.0;
    format!(
        "{:.1} / {:.1} / {:.1} ms",
        ms(h.value_at_quantile(0.5)),
        ms(h.value_at_quantile(0.99)),
        ms(h.max())
    )
}

/// A markdown table, one row per size measured, printed as it is filled so
/// that a long run shows its figures as they come.
pub struct Table {
    title: String,
    header: Vec<String>,
    notes: Vec<String>,
    rows: Vec<Vec<String>>,
}

impl Table {
    pub fn new(title: &str, header: &[&str]) -> Self {
        Self {
            title: title.into(),
            header: header.iter().map(|h| h.to_string()).collect(),
            notes: Vec::new(),
            rows: Vec::new(),
        }
    }

    /// A line printed under the table (what was left out, and why).
    pub fn note(&mut self, note: impl Into<String>) {
        self.notes.push(note.into());
    }

    pub fn row(&mut self, cells: Vec<String>) {
        eprintln!("{}: {}", self.title, cells.join(" | "));
        self.rows.push(cells);
    }

    pub fn print(&self) {
        println!("\n{}\n", self.title);
        let line = |cells: &[String]| println!("| {} |", cells.join(" | "));
        line(&self.header);
        line(&vec!["---".to_string(); self.header.len()]);
        for row in &self.rows {
            line(row);
        }
        if !self.notes.is_empty() {
            println!();
        }
        for note in &self.notes {
            println!("{note}");
        }
    }
}

/// p99 of a histogram of microseconds, in milliseconds.
pub fn p99_millis(h: &Histogram<u64>) -> String {
    format!("{:.1} ms", h.value_at_quantile(0.99) as f64 / 1000.0)
}
