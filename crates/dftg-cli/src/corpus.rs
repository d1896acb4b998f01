//! `dftg corpus`: build corpora.

use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use clap::Subcommand;

#[derive(Subcommand, Debug)]
pub enum CorpusCommand {
    /// A synthetic corpus: scenes with co-occurring objects, counts, colours, small PNGs.
    Synth {
        #[arg(long, default_value_t = 300)]
        images: usize,
        #[arg(long)]
        out: PathBuf,
        #[arg(long, default_value_t = 1)]
        seed: u64,
    },
    /// A corpus for an id → objects map (CHAIR's format) with a placeholder image per id, so
    /// recorded responses can be replayed through the pipeline (`--model replay:FILE`).
    FromObjectMap {
        /// `{"<image_id>": ["category", ...]}`
        #[arg(long)]
        objects: PathBuf,
        #[arg(long)]
        out: PathBuf,
        /// Keep only the ids that appear in this JSONL file (`{"image_id", ...}` lines), in its order.
        #[arg(long)]
        ids_from: Option<PathBuf>,
    },
}

pub fn main(cmd: CorpusCommand) -> anyhow::Result<ExitCode> {
    match cmd {
        CorpusCommand::Synth { images, out, seed } => {
            let n = dftg_pipeline::synth::write_corpus_dir(&out, images, seed)?;
            println!("wrote {n} images and annotations.json to {}", out.display());
        }
        CorpusCommand::FromObjectMap { objects, out, ids_from } => {
            let text = std::fs::read_to_string(&objects).with_context(|| format!("cannot read {}", objects.display()))?;
            let all = dftg_core::truth::parse_object_map(&text).with_context(|| objects.display().to_string())?;
            let truths = match ids_from {
                None => all,
                Some(path) => {
                    let by_id: std::collections::HashMap<String, dftg_core::truth::ImageTruth> =
                        all.into_iter().map(|t| (t.image.clone(), t)).collect();
                    let text = std::fs::read_to_string(&path).with_context(|| format!("cannot read {}", path.display()))?;
                    let mut seen = std::collections::HashSet::new();
                    let mut out = Vec::new();
                    for (i, line) in text.lines().enumerate().filter(|(_, l)| !l.trim().is_empty()) {
                        let v: serde_json::Value = serde_json::from_str(line).with_context(|| format!("{} line {}", path.display(), i + 1))?;
                        let id = match &v["image_id"] {
                            serde_json::Value::Number(n) => n.to_string(),
                            serde_json::Value::String(s) => s.clone(),
                            _ => anyhow::bail!("{} line {}: no image_id", path.display(), i + 1),
                        };
                        if seen.insert(id.clone()) {
                            if let Some(t) = by_id.get(&id) {
                                out.push(t.clone());
                            }
                        }
                    }
                    out
                }
            };
            std::fs::create_dir_all(out.join("images"))?;
            let mut manifest = std::io::BufWriter::new(std::fs::File::create(out.join("manifest.jsonl"))?);
            for mut t in truths.iter().cloned() {
                let file = format!("images/{}.png", t.image);
                let names: Vec<&str> = t.objects.iter().map(|o| o.name.as_str()).collect();
                std::fs::write(out.join(&file), dftg_pipeline::synth::placeholder_png(&t.image, &names)?)?;
                t.file = Some(file);
                serde_json::to_writer(&mut manifest, &t)?;
                manifest.write_all(b"\n")?;
            }
            manifest.flush()?;
            println!("wrote {} placeholder images and manifest.jsonl to {}", truths.len(), out.display());
        }
    }
    Ok(ExitCode::SUCCESS)
}
