//! Progress bars per stage.

use std::collections::HashMap;
use std::sync::Mutex;

use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};

pub struct Bars {
    multi: MultiProgress,
    bars: Mutex<HashMap<String, ProgressBar>>,
}

impl Bars {
    pub fn new(visible: bool) -> Self {
        let target = if visible { ProgressDrawTarget::stderr() } else { ProgressDrawTarget::hidden() };
        Bars { multi: MultiProgress::with_draw_target(target), bars: Mutex::new(HashMap::new()) }
    }
}

impl dftg_pipeline::driver::Progress for Bars {
    fn stage_started(&self, stage: &str, total: u64) {
        let bar = self.multi.add(ProgressBar::new(total));
        let unit = if stage == "diagnose" { "images" } else { "instructions" };
        let style = ProgressStyle::with_template(&format!("{{prefix:>9}} [{{bar:40}}] {{pos}}/{{len}} {unit} {{per_sec}} eta {{eta}}"))
            .unwrap_or_else(|_| ProgressStyle::default_bar())
            .progress_chars("=> ");
        bar.set_style(style);
        bar.set_prefix(stage.to_string());
        if let Ok(mut b) = self.bars.lock() {
            b.insert(stage.to_string(), bar);
        }
    }

    fn advanced(&self, stage: &str, items: u64) {
        if let Some(b) = self.bars.lock().ok().and_then(|b| b.get(stage).cloned()) {
            b.inc(items);
        }
    }

    fn stage_finished(&self, stage: &str) {
        if let Some(b) = self.bars.lock().ok().and_then(|b| b.get(stage).cloned()) {
            b.set_length(b.position());
            b.finish();
        }
    }
}
