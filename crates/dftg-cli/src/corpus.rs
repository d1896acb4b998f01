//! `dftg corpus`: build corpora.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use clap::Subcommand;

#[derive(Subcommand, Debug)]
pub enum CorpusCommand {
    /// A synthetic corpus: scenes with co-occurring objects, counts, colours, small PNGs.
    Synth {
        /// Images to draw.
        #[arg(long, default_value_t = 300)]
        images: usize,
        /// Directory to write images/ and annotations.json (COCO) into.
        #[arg(long)]
        out: PathBuf,
        /// Seed of the scenes: the same seed gives the same corpus.
        #[arg(long, default_value_t = 1)]
        seed: u64,
    },
    /// A corpus for an id → objects map (CHAIR's format) with a placeholder image per id, so
    /// recorded responses can be replayed through the pipeline (`--model replay:FILE`).
    FromObjectMap {
        /// `{"<image_id>": ["category", ...]}`
        #[arg(long)]
        objects: PathBuf,
        /// Directory to write images/ and manifest.jsonl into.
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
            outln!("wrote {n} images and annotations.json to {}", out.display());
        }
        CorpusCommand::FromObjectMap { objects, out, ids_from } => {
            let text = std::fs::read_to_string(&objects).with_context(|| format!("cannot read {}", objects.display()))?;
            let ids = match ids_from {
                Some(path) => {
                    let t = std::fs::read_to_string(&path).with_context(|| format!("cannot read {}", path.display()))?;
                    Some(dftg_pipeline::synth::image_ids_of_jsonl(&t).with_context(|| path.display().to_string())?)
                }
                None => None,
            };
            let n = dftg_pipeline::synth::write_object_map_corpus(&out, &text, ids.as_deref())?;
            outln!("wrote {n} placeholder images and manifest.jsonl to {}", out.display());
        }
    }
    Ok(ExitCode::SUCCESS)
}
