//! Progress per stage: bars on a terminal; with stderr redirected (a log file, a pipe), a plain
//! line per running stage at a steady interval and one when the stage ends, so logs carry no
//! escape codes and no carriage-return redraws. Rates and ETAs are computed here from the
//! stage's own clock (items since the stage started over the time since then), so the ETA does
//! not swing with the shard-sized steps the driver reports in.

use std::collections::HashMap;
use std::io::IsTerminal;
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, Instant};

use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};

/// How often a redirected run logs a progress line.
const LINE_INTERVAL: Duration = Duration::from_secs(10);

pub struct Bars {
    clocks: Arc<Clocks>,
    bars: Option<(MultiProgress, Mutex<HashMap<String, ProgressBar>>)>,
}

/// The stages seen so far, in the order they started.
#[derive(Default)]
struct Clocks {
    stages: Mutex<Vec<Clock>>,
}

struct Clock {
    stage: String,
    total: u64,
    done: u64,
    started: Instant,
    finished: Option<Duration>,
}

impl Clock {
    fn rate(&self) -> f64 {
        let secs = self.finished.unwrap_or_else(|| self.started.elapsed()).as_secs_f64();
        if secs > 0.0 {
            self.done as f64 / secs
        } else {
            0.0
        }
    }

    /// Time left at the rate seen so far; none before the first items or without a total.
    fn eta(&self) -> Option<Duration> {
        let rate = self.rate();
        (self.total > 0 && self.done > 0 && rate > 0.0).then(|| Duration::from_secs_f64(self.total.saturating_sub(self.done) as f64 / rate))
    }

    fn line(&self) -> String {
        let unit = unit(&self.stage);
        let of = if self.total > 0 { format!("{}/{}", self.done, self.total) } else { self.done.to_string() };
        match self.finished {
            Some(took) => format!("{}: {of} {unit} in {} ({})", self.stage, duration(took), rate(self.rate())),
            None => {
                let eta = self.eta().map(|d| format!(", eta {}", duration(d))).unwrap_or_default();
                format!("{}: {of} {unit}, {}{eta}", self.stage, rate(self.rate()))
            }
        }
    }
}

fn unit(stage: &str) -> &'static str {
    if stage == "diagnose" {
        "images"
    } else {
        "instructions"
    }
}

impl Clocks {
    fn with<R>(&self, f: impl FnOnce(&mut Vec<Clock>) -> R) -> R {
        let mut g = self.stages.lock().unwrap_or_else(|p| p.into_inner());
        f(&mut g)
    }

    fn log_running(&self) {
        for line in self.with(|s| s.iter().filter(|c| c.finished.is_none()).map(Clock::line).collect::<Vec<_>>()) {
            eprintln!("{line}");
        }
    }
}

impl Bars {
    /// `show`: whether progress is wanted at all (`--quiet` turns it off). Bars are drawn only
    /// when stderr is a terminal; otherwise progress is logged as lines.
    pub fn new(show: bool) -> Self {
        let clocks = Arc::new(Clocks::default());
        if show && std::io::stderr().is_terminal() {
            let multi = MultiProgress::with_draw_target(ProgressDrawTarget::stderr());
            return Bars { clocks, bars: Some((multi, Mutex::new(HashMap::new()))) };
        }
        if show {
            let weak: Weak<Clocks> = Arc::downgrade(&clocks);
            // ends at the first tick after the run let go of its progress
            std::thread::spawn(move || loop {
                std::thread::sleep(LINE_INTERVAL);
                match weak.upgrade() {
                    Some(c) => c.log_running(),
                    None => return,
                }
            });
            return Bars { clocks, bars: None };
        }
        // quiet: nothing drawn, nothing logged
        Bars { clocks, bars: Some((MultiProgress::with_draw_target(ProgressDrawTarget::hidden()), Mutex::new(HashMap::new()))) }
    }

    fn bar(&self, stage: &str) -> Option<ProgressBar> {
        let (_, bars) = self.bars.as_ref()?;
        bars.lock().ok().and_then(|b| b.get(stage).cloned())
    }

    fn message(&self, stage: &str) -> String {
        self.clocks.with(|s| {
            s.iter()
                .rev()
                .find(|c| c.stage == stage)
                .map(|c| {
                    let eta = c.eta().map(|d| format!(" eta {}", duration(d))).unwrap_or_default();
                    format!("{}{eta}", rate(c.rate()))
                })
                .unwrap_or_default()
        })
    }
}

impl dftg_pipeline::job_driver::Progress for Bars {
    fn stage_started(&self, stage: &str, total: u64) {
        self.clocks.with(|s| s.push(Clock { stage: stage.to_string(), total, done: 0, started: Instant::now(), finished: None }));
        if let Some((multi, bars)) = &self.bars {
            let bar = multi.add(ProgressBar::new(total));
            let style = ProgressStyle::with_template(&format!("{{prefix:>9}} [{{bar:40}}] {{pos}}/{{len}} {} {{msg}}", unit(stage)))
                .unwrap_or_else(|_| ProgressStyle::default_bar())
                .progress_chars("=> ");
            bar.set_style(style);
            bar.set_prefix(stage.to_string());
            if let Ok(mut b) = bars.lock() {
                b.insert(stage.to_string(), bar);
            }
        }
    }

    fn advanced(&self, stage: &str, items: u64) {
        self.clocks.with(|s| {
            if let Some(c) = s.iter_mut().rev().find(|c| c.stage == stage) {
                c.done += items;
            }
        });
        if let Some(b) = self.bar(stage) {
            b.inc(items);
            b.set_message(self.message(stage));
        }
    }

    fn stage_finished(&self, stage: &str) {
        let line = self.clocks.with(|s| {
            s.iter_mut().rev().find(|c| c.stage == stage && c.finished.is_none()).map(|c| {
                c.finished = Some(c.started.elapsed());
                c.line()
            })
        });
        match (self.bar(stage), line) {
            (Some(b), _) => {
                b.set_length(b.position());
                b.set_message(self.message(stage));
                b.finish();
            }
            (None, Some(line)) if self.bars.is_none() => eprintln!("{line}"),
            _ => {}
        }
    }
}

/// A rate for people: "3.4/s", "1,234/s", "25.3M/s".
pub fn rate(per_sec: f64) -> String {
    if !per_sec.is_finite() || per_sec < 0.0 {
        return "-/s".into();
    }
    if per_sec < 100.0 {
        format!("{per_sec:.1}/s")
    } else if per_sec < 1e6 {
        format!("{}/s", grouped(per_sec.round() as u64))
    } else if per_sec < 1e9 {
        format!("{:.1}M/s", per_sec / 1e6)
    } else {
        format!("{:.1}G/s", per_sec / 1e9)
    }
}

/// 1234567 → "1,234,567".
pub fn grouped(n: u64) -> String {
    let digits = n.to_string();
    let mut out = String::with_capacity(digits.len() + digits.len() / 3);
    for (i, ch) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(ch);
    }
    out
}

/// A duration for people: "0.4s", "45s", "3m 20s", "2h 05m".
pub fn duration(d: Duration) -> String {
    let secs = d.as_secs_f64();
    if secs < 10.0 {
        return format!("{secs:.1}s");
    }
    let s = secs.round() as u64;
    match s {
        0..=59 => format!("{s}s"),
        60..=3599 => format!("{}m {:02}s", s / 60, s % 60),
        _ => format!("{}h {:02}m", s / 3600, (s % 3600) / 60),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rates_read_like_numbers_people_write() {
        assert_eq!(rate(3.44), "3.4/s");
        assert_eq!(rate(1234.4), "1,234/s");
        assert_eq!(rate(25_339_280.554_7), "25.3M/s");
        assert_eq!(rate(f64::NAN), "-/s");
        assert_eq!(grouped(0), "0");
        assert_eq!(grouped(999), "999");
        assert_eq!(grouped(1_000), "1,000");
        assert_eq!(grouped(12_345_678), "12,345,678");
    }

    #[test]
    fn durations_are_short() {
        assert_eq!(duration(Duration::from_millis(400)), "0.4s");
        assert_eq!(duration(Duration::from_secs(45)), "45s");
        assert_eq!(duration(Duration::from_secs(200)), "3m 20s");
        assert_eq!(duration(Duration::from_secs(7500)), "2h 05m");
    }

    #[test]
    fn the_eta_follows_the_rate_seen_since_the_stage_started() {
        let c = Clock { stage: "diagnose".into(), total: 100, done: 25, started: Instant::now() - Duration::from_secs(10), finished: None };
        let eta = c.eta().expect("an eta").as_secs_f64();
        assert!((eta - 30.0).abs() < 1.0, "eta {eta}");
        assert!(c.line().starts_with("diagnose: 25/100 images, 2.5/s, eta 3"), "{}", c.line());
    }
}
