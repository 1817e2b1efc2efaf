//! Human output: aligned tables, state colours only on a terminal (and never with `NO_COLOR`),
//! relative times. `-o json` bypasses all of this.

use std::io::IsTerminal;

use chrono::{DateTime, Utc};

/// A row of the fleet in JSON: a value with the agent it is on.
#[derive(serde::Serialize)]
pub struct OnAgent<'a, T: serde::Serialize> {
    pub agent: &'a str,
    #[serde(flatten)]
    pub value: &'a T,
}

/// Prints `v` as pretty JSON. A closed stdout (`| head`) is not an error worth a panic, so write
/// errors are ignored (`println!` panics on them).
pub fn print_json(v: &impl serde::Serialize) {
    use std::io::Write;
    let text = serde_json::to_string_pretty(v).unwrap_or_default();
    let _ = writeln!(std::io::stdout().lock(), "{text}");
}

/// Whether to colour stdout.
pub fn color() -> bool {
    std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty()) && std::io::stdout().is_terminal()
}

/// A state word in its colour: green running, yellow paused/restarting, red exited/dead.
pub fn paint_state(state: &str, color: bool) -> String {
    if !color {
        return state.to_owned();
    }
    let code = match state {
        "running" | "online" => "32",
        "paused" | "restarting" | "created" => "33",
        "exited" | "dead" | "offline" | "removing" => "31",
        _ => return state.to_owned(),
    };
    format!("\x1b[{code}m{state}\x1b[0m")
}

/// Visible width, ignoring ANSI colour sequences.
fn width(s: &str) -> usize {
    let mut w = 0;
    let mut in_esc = false;
    for ch in s.chars() {
        match (in_esc, ch) {
            (false, '\x1b') => in_esc = true,
            (true, 'm') => in_esc = false,
            (true, _) => {}
            (false, _) => w += 1,
        }
    }
    w
}

/// Renders rows under headers, columns separated by three spaces, like `docker ps`.
pub fn table(headers: &[&str], rows: &[Vec<String>]) -> String {
    let mut widths: Vec<usize> = headers.iter().map(|h| h.len()).collect();
    for r in rows {
        for (i, c) in r.iter().enumerate() {
            if i < widths.len() {
                widths[i] = widths[i].max(width(c));
            }
        }
    }
    let line = |cells: Vec<&str>| {
        let mut s = String::new();
        for (i, c) in cells.iter().enumerate() {
            s.push_str(c);
            if i + 1 < cells.len() {
                s.push_str(&" ".repeat(widths[i] - width(c) + 3));
            }
        }
        s.trim_end().to_owned()
    };
    let mut out = line(headers.to_vec());
    out.push('\n');
    for r in rows {
        out.push_str(&line(r.iter().map(String::as_str).collect()));
        out.push('\n');
    }
    out
}

/// "5 seconds ago", "3 minutes ago", "2 days ago".
pub fn ago(t: DateTime<Utc>, now: DateTime<Utc>) -> String {
    let s = (now - t).num_seconds();
    if s < 0 {
        return "just now".into();
    }
    let (n, unit) = match s {
        0..=1 => return "just now".into(),
        2..=59 => (s, "second"),
        60..=3599 => (s / 60, "minute"),
        3600..=86_399 => (s / 3600, "hour"),
        86_400..=2_591_999 => (s / 86_400, "day"),
        2_592_000..=31_535_999 => (s / 2_592_000, "month"),
        _ => (s / 31_536_000, "year"),
    };
    format!("{n} {unit}{} ago", if n == 1 { "" } else { "s" })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tables_align_even_with_colour() {
        let t = table(
            &["NAME", "STATE"],
            &[
                vec!["web-1".into(), paint_state("running", true)],
                vec!["db".into(), "exited".into()],
            ],
        );
        let lines: Vec<&str> = t.lines().collect();
        assert_eq!(lines[0], "NAME    STATE");
        assert!(lines[1].starts_with("web-1   \x1b[32mrunning"));
        assert_eq!(lines[2], "db      exited");
    }

    #[test]
    fn relative_times() {
        let now = Utc::now();
        assert_eq!(ago(now, now), "just now");
        assert_eq!(
            ago(now - chrono::Duration::seconds(90), now),
            "1 minute ago"
        );
        assert_eq!(ago(now - chrono::Duration::hours(5), now), "5 hours ago");
    }
}
