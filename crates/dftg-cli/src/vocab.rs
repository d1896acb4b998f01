//! `dftg vocab`: build vocabulary files.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use clap::{Subcommand, ValueEnum};
use dftg_core::vocab_build::{self, BuildOptions, CategoryFormat};

#[derive(Subcommand, Debug)]
pub enum VocabCommand {
    /// Turn a detector's category list (LVIS, Objects365 / COCO-style JSON, plain names) into a
    /// vocabulary TOML for `--vocabulary`. Parenthesised disambiguations stay in the concept
    /// name only; a word two categories share names no object unless one category is named
    /// exactly that; words in `--exclude` name no object.
    FromCategories {
        /// The category list.
        #[arg(long)]
        input: PathBuf,
        /// The list's format (see the values below).
        #[arg(long, value_enum, default_value_t = Format::Lvis)]
        format: Format,
        /// Where to write the vocabulary TOML.
        #[arg(long)]
        out: PathBuf,
        /// The vocabulary's name (default: the output file's stem).
        #[arg(long)]
        name: Option<String>,
        /// Words that name no object: one a line, `# reason` after it.
        #[arg(long)]
        exclude: Option<PathBuf>,
        /// Do not copy the attribute families and no-object phrases of the bundled coco80.
        #[arg(long)]
        no_base: bool,
        /// A line for the file's header comment (source, licence, attribution); repeatable.
        #[arg(long)]
        note: Vec<String>,
    },
}

#[derive(ValueEnum, Clone, Copy, Debug)]
pub enum Format {
    /// JSON lines `{"name", "synonyms": [...]}` (LVIS v1 categories).
    Lvis,
    /// A JSON document with `"categories": [{"name", "supercategory"}]` (Objects365, COCO).
    Objects365,
    /// One category a line, synonyms after it `,`-separated.
    Names,
}

pub fn main(cmd: VocabCommand) -> anyhow::Result<ExitCode> {
    let VocabCommand::FromCategories { input, format, out, name, exclude, no_base, note } = cmd;
    let text = std::fs::read_to_string(&input).with_context(|| format!("cannot read {}", input.display()))?;
    let fmt = match format {
        Format::Lvis => CategoryFormat::Lvis,
        Format::Objects365 => CategoryFormat::Coco,
        Format::Names => CategoryFormat::Names,
    };
    let cats = vocab_build::parse_categories(&text, fmt).with_context(|| input.display().to_string())?;
    let exclude_set = match &exclude {
        Some(p) => vocab_build::parse_exclusions(&std::fs::read_to_string(p).with_context(|| format!("cannot read {}", p.display()))?),
        None => Default::default(),
    };
    let name = match name {
        Some(n) => n,
        None => out.file_stem().and_then(|s| s.to_str()).context("give --name: the output file has no usable stem")?.to_string(),
    };
    let file_name = |p: &PathBuf| p.file_name().map(|f| f.to_string_lossy().into_owned()).unwrap_or_default();
    let mut command = format!("dftg vocab from-categories --input {} --format {}", file_name(&input), format_name(format));
    if let Some(p) = &exclude {
        command.push_str(&format!(" --exclude {}", file_name(p)));
    }
    let mut header = vec![format!("dftg vocabulary {name:?}: generated, do not edit by hand."), format!("command: {command}")];
    header.extend(note);
    header.push(format!("{} categories; edit the exclusion list and regenerate to change which words count.", cats.len()));
    let opts = BuildOptions { name: &name, header, exclude: exclude_set, base: (!no_base).then_some(dftg_core::vocab::COCO80_TOML) };
    let (toml, report) = vocab_build::build_vocabulary_toml(&cats, &opts)?;
    std::fs::write(&out, toml).with_context(|| format!("cannot write {}", out.display()))?;
    outln!(
        "wrote {}: {} concepts, {} surfaces; {} ambiguous and {} excluded words name no object",
        out.display(),
        report.concepts,
        report.surfaces,
        report.ambiguous.len(),
        report.excluded.len()
    );
    for (word, who) in &report.ambiguous {
        outln!("  ambiguous {word:?}: {}", who.join(", "));
    }
    if !report.unused_exclusions.is_empty() {
        eprintln!("warning: excluded words no category uses: {}", report.unused_exclusions.join(", "));
    }
    Ok(ExitCode::SUCCESS)
}

fn format_name(f: Format) -> &'static str {
    match f {
        Format::Lvis => "lvis",
        Format::Objects365 => "objects365",
        Format::Names => "names",
    }
}
