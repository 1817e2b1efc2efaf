//! Latency samples, percentiles and the Markdown tables every scenario prints.

use std::fmt::Write;
use std::time::Duration;

/// Latency samples of one measured path.
#[derive(Debug, Clone, Default)]
pub struct Samples {
    v: Vec<Duration>,
}

impl Samples {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn push(&mut self, d: Duration) {
        self.v.push(d);
    }

    pub fn extend(&mut self, other: &Samples) {
        self.v.extend_from_slice(&other.v);
    }

    pub fn len(&self) -> usize {
        self.v.len()
    }

    fn sorted(&self) -> Vec<Duration> {
        let mut s = self.v.clone();
        s.sort_unstable();
        s
    }

    /// The `q`-quantile (0.0–1.0), nearest rank.
    pub fn quantile(&self, q: f64) -> Duration {
        let s = self.sorted();
        if s.is_empty() {
            return Duration::ZERO;
        }
        let rank = ((q * s.len() as f64).ceil() as usize).clamp(1, s.len());
        s[rank - 1]
    }

    pub fn p50(&self) -> Duration {
        self.quantile(0.50)
    }

    pub fn p99(&self) -> Duration {
        self.quantile(0.99)
    }

    pub fn max(&self) -> Duration {
        self.v.iter().copied().max().unwrap_or(Duration::ZERO)
    }

    pub fn mean(&self) -> Duration {
        if self.v.is_empty() {
            return Duration::ZERO;
        }
        self.v.iter().sum::<Duration>() / self.v.len() as u32
    }
}

/// A duration for a table: µs below 1 ms, ms with 2–3 significant digits, s above 10 s.
pub fn fmt_dur(d: Duration) -> String {
    let us = d.as_secs_f64() * 1e6;
    if us < 1000.0 {
        format!("{us:.0} µs")
    } else if us < 10_000.0 {
        format!("{:.2} ms", us / 1000.0)
    } else if us < 10_000_000.0 {
        format!("{:.1} ms", us / 1000.0)
    } else {
        format!("{:.2} s", us / 1e6)
    }
}

pub fn fmt_bytes(b: u64) -> String {
    let b = b as f64;
    if b >= 1024.0 * 1024.0 * 1024.0 {
        format!("{:.2} GiB", b / (1024.0 * 1024.0 * 1024.0))
    } else if b >= 1024.0 * 1024.0 {
        format!("{:.1} MiB", b / (1024.0 * 1024.0))
    } else if b >= 1024.0 {
        format!("{:.1} KiB", b / 1024.0)
    } else {
        format!("{b:.0} B")
    }
}

/// A Markdown table with a title and notes underneath.
#[derive(Debug)]
pub struct Table {
    title: String,
    head: Vec<String>,
    rows: Vec<Vec<String>>,
    notes: Vec<String>,
}

impl Table {
    pub fn new(title: impl Into<String>, head: &[&str]) -> Self {
        Self {
            title: title.into(),
            head: head.iter().map(|s| (*s).to_owned()).collect(),
            rows: Vec::new(),
            notes: Vec::new(),
        }
    }

    /// The usual latency table: what, n, p50, p99, max, mean, and a verdict column.
    pub fn latency(title: impl Into<String>) -> Self {
        Self::new(title, &["path", "n", "p50", "p99", "max", "mean", "target"])
    }

    pub fn row(&mut self, cells: Vec<String>) {
        self.rows.push(cells);
    }

    /// A latency row; `target` is text such as "p50 ≤ 0.3 ms: ok" or "reference".
    pub fn lat(&mut self, what: &str, s: &Samples, target: &str) {
        self.rows.push(vec![
            what.to_owned(),
            s.len().to_string(),
            fmt_dur(s.p50()),
            fmt_dur(s.p99()),
            fmt_dur(s.max()),
            fmt_dur(s.mean()),
            target.to_owned(),
        ]);
    }

    pub fn note(&mut self, n: impl Into<String>) {
        self.notes.push(n.into());
    }

    pub fn render(&self) -> String {
        let mut out = String::new();
        let _ = writeln!(out, "\n### {}\n", self.title);
        let cols = self.head.len();
        let mut width: Vec<usize> = self.head.iter().map(|h| h.chars().count()).collect();
        for r in &self.rows {
            for (i, c) in r.iter().enumerate().take(cols) {
                width[i] = width[i].max(c.chars().count());
            }
        }
        let line = |cells: &[String]| {
            let mut l = String::from("|");
            for (i, w) in width.iter().enumerate() {
                let c = cells.get(i).map(String::as_str).unwrap_or("");
                let pad = w.saturating_sub(c.chars().count());
                let _ = write!(l, " {c}{} |", " ".repeat(pad));
            }
            l
        };
        let _ = writeln!(out, "{}", line(&self.head));
        let mut sep = String::from("|");
        for w in &width {
            let _ = write!(sep, "{}|", "-".repeat(w + 2));
        }
        let _ = writeln!(out, "{sep}");
        for r in &self.rows {
            let _ = writeln!(out, "{}", line(r));
        }
        if !self.notes.is_empty() {
            out.push('\n');
            for n in &self.notes {
                let _ = writeln!(out, "- {n}");
            }
        }
        out
    }

    /// Sort key: the scenario number the title starts with (titles without one sort last).
    pub fn order(&self) -> (u32, String) {
        let digits: String = self
            .title
            .chars()
            .take_while(char::is_ascii_digit)
            .collect();
        (digits.parse().unwrap_or(u32::MAX), self.title.clone())
    }

    pub fn print(&self) {
        println!("{}", self.render());
    }
}

/// "p50 ≤ 0.3 ms: ok (0.14 ms)" or "…: MISSED (0.41 ms)".
pub fn verdict(label: &str, got: Duration, limit: Duration) -> String {
    let ok = if got <= limit { "ok" } else { "MISSED" };
    format!("{label} ≤ {}: {ok}", fmt_dur(limit))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quantiles_nearest_rank() {
        let mut s = Samples::new();
        for i in 1..=100u64 {
            s.push(Duration::from_millis(i));
        }
        assert_eq!(s.p50(), Duration::from_millis(50));
        assert_eq!(s.p99(), Duration::from_millis(99));
        assert_eq!(s.max(), Duration::from_millis(100));
    }

    #[test]
    fn durations_format() {
        assert_eq!(fmt_dur(Duration::from_micros(140)), "140 µs");
        assert_eq!(fmt_dur(Duration::from_micros(1500)), "1.50 ms");
        assert_eq!(fmt_dur(Duration::from_millis(44)), "44.0 ms");
        assert_eq!(fmt_dur(Duration::from_secs(12)), "12.00 s");
    }
}
