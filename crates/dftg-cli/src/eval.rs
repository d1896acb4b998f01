//! `dftg eval chair`: the CHAIR metric over a captions file, with dftg's own extractor or, with
//! `--compat`, reproducing the reference implementation exactly (to compare with papers).

use std::borrow::Cow;
use std::collections::{HashMap, HashSet};
use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::Context;
use clap::{Args, Subcommand};
use serde::de::{IgnoredAny, MapAccess, Visitor};
use serde::Deserialize;

use dftg_core::chair::{ChairScratch, ChairTally};
use dftg_core::extract::{ExtractScratch, Extraction, Extractor};
use dftg_core::vocab::Vocabulary;

#[derive(Subcommand, Debug)]
pub enum EvalCommand {
    /// CHAIR_s, CHAIR_i and recall of captions against ground-truth object sets.
    Chair(ChairArgs),
    /// POPE accuracy, precision, recall, F1 and yes-ratio: ask a model, or score its answers.
    Pope(crate::pope::EvalPopeArgs),
}

#[derive(Args, Debug)]
pub struct ChairArgs {
    /// JSONL, one caption a line: {"image_id", "caption"}.
    #[arg(long)]
    pub captions: PathBuf,
    /// Ground truth {"<image_id>": ["category", ...]} (CHAIR's cache format).
    #[arg(long)]
    pub objects: PathBuf,
    /// Reproduce the reference CHAIR implementation (tokenizer, lemmatizer, quirks included).
    #[arg(long)]
    pub compat: bool,
    /// CHAIR's synonyms.txt and double_words.json (compat mode).
    #[arg(long, env = "DFTG_CHAIR_VOCAB")]
    pub chair_vocab: Option<PathBuf>,
    /// nltk's tagger weights, averaged_perceptron_tagger_eng.*.json (compat mode; default:
    /// $DFTG_DATA/nltk-tagger).
    #[arg(long, env = "DFTG_NLTK_TAGGER")]
    pub nltk_tagger: Option<PathBuf>,
    /// Write one line per caption: {"image_id", "mentioned", "hallucinated"}.
    #[arg(long)]
    pub per_caption: Option<PathBuf>,
}

pub fn main(cmd: EvalCommand) -> anyhow::Result<ExitCode> {
    match cmd {
        EvalCommand::Chair(args) => chair(args),
        EvalCommand::Pope(args) => crate::pope::eval_main(args),
    }
}

#[derive(Deserialize)]
struct CaptionLine<'a> {
    image_id: serde_json::Value,
    #[serde(borrow)]
    caption: Cow<'a, str>,
}

/// Deserializes only the ids we need from a large id → objects map.
struct NeededObjects<'n>(&'n HashSet<String>);

impl<'de, 'n> serde::de::DeserializeSeed<'de> for NeededObjects<'n> {
    type Value = HashMap<String, Vec<String>>;
    fn deserialize<D: serde::Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
        d.deserialize_map(self)
    }
}

impl<'de, 'n> Visitor<'de> for NeededObjects<'n> {
    type Value = HashMap<String, Vec<String>>;
    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str("a map from image id to a list of object names")
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        let mut out = HashMap::with_capacity(self.0.len());
        while let Some(key) = map.next_key::<Cow<'de, str>>()? {
            if self.0.contains(key.as_ref()) {
                out.insert(key.into_owned(), map.next_value::<Vec<String>>()?);
            } else {
                map.next_value::<IgnoredAny>()?;
            }
        }
        Ok(out)
    }
}

/// How far the object-map scanner got in a buffer.
enum Scan {
    /// The closing `}`: every entry seen.
    Done,
    /// The buffer ends inside the entry starting here: read more, keep from here.
    NeedMore(usize),
    /// Not the plain `{"<id>": ["name", ...]}` shape: the full JSON parser decides.
    Bad,
}

/// Entries of CHAIR's cache format in `b` from `i`, keeping only the needed ids; an entry's
/// list is parsed only when its id is needed.
fn scan_entries(b: &[u8], mut i: usize, needed: &ahash::AHashSet<&[u8]>, out: &mut HashMap<String, Vec<String>>) -> Scan {
    let ws = |mut i: usize| {
        while i < b.len() && b[i].is_ascii_whitespace() {
            i += 1;
        }
        i
    };
    loop {
        let entry = i;
        i = ws(i);
        match b.get(i) {
            None => return Scan::NeedMore(entry),
            Some(b'}') => return Scan::Done,
            Some(b',') => {
                i += 1;
                continue;
            }
            Some(b'"') => {}
            Some(_) => return Scan::Bad,
        }
        let Some(q) = memchr::memchr2(b'"', b'\\', &b[i + 1..]) else { return Scan::NeedMore(entry) };
        let key_end = i + 1 + q;
        if b[key_end] != b'"' {
            return Scan::Bad;
        }
        let key = &b[i + 1..key_end];
        i = ws(key_end + 1);
        match b.get(i) {
            None => return Scan::NeedMore(entry),
            Some(b':') => {}
            Some(_) => return Scan::Bad,
        }
        i = ws(i + 1);
        match b.get(i) {
            None => return Scan::NeedMore(entry),
            Some(b'[') => {}
            Some(_) => return Scan::Bad,
        }
        let Some(c) = memchr::memchr(b']', &b[i..]) else { return Scan::NeedMore(entry) };
        let close = i + c;
        if needed.contains(key) {
            // category names hold no ']'; a list that does not parse sends us to the full parser
            let (Ok(names), Ok(key)) = (serde_json::from_slice::<Vec<String>>(&b[i..=close]), std::str::from_utf8(key)) else {
                return Scan::Bad;
            };
            out.insert(key.to_string(), names);
        }
        i = close + 1;
    }
}

/// Fast path for CHAIR's cache format `{"<id>": ["name", ...], ...}`, read in chunks (the file
/// is never held whole) and skipping unneeded entries without parsing them. `None` when the
/// text is not in that plain shape.
fn scan_object_map(mut r: impl std::io::Read, needed: &ahash::AHashSet<&[u8]>) -> std::io::Result<Option<HashMap<String, Vec<String>>>> {
    let mut out = HashMap::with_capacity(needed.len());
    let mut buf = vec![0u8; 256 * 1024];
    let (mut len, mut opened, mut eof) = (0usize, false, false);
    loop {
        if !eof {
            let n = r.read(&mut buf[len..])?;
            eof = n == 0;
            len += n;
        }
        let mut i = 0;
        if !opened {
            while i < len && buf[i].is_ascii_whitespace() {
                i += 1;
            }
            if i == len {
                if eof {
                    return Ok(None);
                }
                continue;
            }
            if buf[i] != b'{' {
                return Ok(None);
            }
            opened = true;
            i += 1;
        }
        match scan_entries(&buf[..len], i, needed, &mut out) {
            Scan::Done => return Ok(Some(out)),
            Scan::Bad => return Ok(None),
            Scan::NeedMore(_) if eof => return Ok(None),
            Scan::NeedMore(keep) => {
                buf.copy_within(keep..len, 0);
                len -= keep;
                if len == buf.len() {
                    // one entry larger than the buffer
                    buf.resize(buf.len() * 2, 0);
                }
            }
        }
    }
}

/// `$DFTG_DATA/<name>`, the shared reference data by default.
fn default_data(name: &str) -> PathBuf {
    let data = std::env::var("DFTG_DATA").unwrap_or_else(|_| "../shared/data".into());
    PathBuf::from(data).join(name)
}

fn chair(args: ChairArgs) -> anyhow::Result<ExitCode> {
    let text = std::fs::read_to_string(&args.captions).with_context(|| format!("cannot read captions {}", args.captions.display()))?;
    let mut lines: Vec<(serde_json::Value, String, CaptionLine)> = Vec::new();
    for (i, line) in text.lines().enumerate().filter(|(_, l)| !l.trim().is_empty()) {
        let c: CaptionLine = serde_json::from_str(line)
            .with_context(|| format!("{} line {}: expected {{\"image_id\", \"caption\"}}", args.captions.display(), i + 1))?;
        let id = dftg_core::truth::image_key(&c.image_id)
            .with_context(|| format!("{} line {}: image_id must be a number or a string", args.captions.display(), i + 1))?;
        lines.push((c.image_id.clone(), id, c));
    }
    let needed: HashSet<String> = lines.iter().map(|l| l.1.clone()).collect();
    let needed_bytes: ahash::AHashSet<&[u8]> = needed.iter().map(|s| s.as_bytes()).collect();
    let cannot_read = || format!("cannot read objects {}", args.objects.display());
    let file = std::fs::File::open(&args.objects).with_context(cannot_read)?;
    let gt: HashMap<String, Vec<String>> = match scan_object_map(file, &needed_bytes).with_context(cannot_read)? {
        Some(gt) => gt,
        None => {
            // not in the plain shape the scanner reads: the full JSON parser decides
            let objects_text = std::fs::read(&args.objects).with_context(cannot_read)?;
            let mut de = serde_json::Deserializer::from_slice(&objects_text);
            serde::de::DeserializeSeed::deserialize(NeededObjects(&needed), &mut de)
                .with_context(|| format!("{} is not an id → objects map", args.objects.display()))?
        }
    };
    if let Some(missing) = lines.iter().find(|l| !gt.contains_key(&l.1)) {
        anyhow::bail!("image {} of {} has no ground truth in {}", missing.1, args.captions.display(), args.objects.display());
    }
    // resolve each caption's truth once
    let lines: Vec<(serde_json::Value, &Vec<String>, CaptionLine)> = lines.into_iter().map(|(raw, id, c)| (raw, &gt[&id], c)).collect();

    let mut out = args
        .per_caption
        .as_ref()
        .map(|p| std::fs::File::create(p).map(std::io::BufWriter::new).with_context(|| format!("cannot write {}", p.display())))
        .transpose()?;
    let mut tally = ChairTally::default();
    let mut hallucinated: Vec<&str> = Vec::new();
    let mut mentioned: Vec<&str> = Vec::new();
    let write_line =
        |out: &mut Option<std::io::BufWriter<std::fs::File>>, id: &serde_json::Value, m: &[&str], h: &[&str]| -> anyhow::Result<()> {
            if let Some(w) = out {
                serde_json::to_writer(&mut *w, &serde_json::json!({"image_id": id, "mentioned": m, "hallucinated": h}))?;
                w.write_all(b"\n")?;
            }
            Ok(())
        };
    let mode;
    if args.compat {
        mode = "compat";
        let dir = args.chair_vocab.clone().unwrap_or_else(|| default_data("chair-vocab"));
        let tagger = args.nltk_tagger.clone().unwrap_or_else(|| default_data("nltk-tagger"));
        let vocab = dftg_pipeline::diagnose::load_chair_vocab(&dir, &tagger).context("compat mode (set --chair-vocab, --nltk-tagger)")?;
        let mut scratch = ChairScratch::default();
        for (raw_id, truth, c) in &lines {
            vocab.mentioned_into(&c.caption, &mut scratch, &mut mentioned);
            hallucinated.clear();
            tally.add(&mentioned, truth, &mut hallucinated);
            write_line(&mut out, raw_id, &mentioned, &hallucinated)?;
        }
    } else {
        mode = "dftg";
        let extractor = Extractor::new(Arc::new(Vocabulary::coco80()));
        let mut scratch = ExtractScratch::default();
        let mut ex = Extraction::default();
        for (raw_id, truth, c) in &lines {
            extractor.extract_into(&c.caption, &mut scratch, &mut ex);
            mentioned.clear();
            mentioned.extend(ex.mentions.iter().map(|m| extractor.vocab().name(m.concept)));
            hallucinated.clear();
            tally.add(&mentioned, truth, &mut hallucinated);
            write_line(&mut out, raw_id, &mentioned, &hallucinated)?;
        }
    }
    if let Some(w) = out.as_mut() {
        w.flush()?;
    }
    outln!(
        "{}",
        serde_json::json!({
            "mode": mode,
            "captions": tally.captions,
            "chair_s": tally.chair_s(),
            "chair_i": tally.chair_i(),
            "recall": tally.recall(),
            "mentions": tally.mentions,
            "hallucinated_mentions": tally.hallucinated_mentions,
        })
    );
    Ok(ExitCode::SUCCESS)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Hands out at most `n` bytes a read, so entries straddle buffer refills.
    struct Trickle<'a>(&'a [u8], usize);

    impl std::io::Read for Trickle<'_> {
        fn read(&mut self, out: &mut [u8]) -> std::io::Result<usize> {
            let n = self.1.min(out.len()).min(self.0.len());
            out[..n].copy_from_slice(&self.0[..n]);
            self.0 = &self.0[n..];
            Ok(n)
        }
    }

    fn needed<'a>(ids: &[&'a str]) -> ahash::AHashSet<&'a [u8]> {
        ids.iter().map(|s| s.as_bytes()).collect()
    }

    #[test]
    fn scanner_keeps_needed_entries_across_reads() {
        let text = br#" { "1": ["dog", "cat"], "22" : [] ,"333":["dining table"], "4": ["person"] } "#;
        for step in [1, 3, 7, 1000] {
            let gt = scan_object_map(Trickle(text, step), &needed(&["333", "1", "9"])).unwrap().expect("plain shape");
            assert_eq!(gt.len(), 2, "step {step}");
            assert_eq!(gt["1"], vec!["dog".to_string(), "cat".to_string()]);
            assert_eq!(gt["333"], vec!["dining table".to_string()]);
        }
    }

    #[test]
    fn scanner_hands_other_shapes_to_the_full_parser() {
        for text in [&br#"{"a\"b": ["x"]}"#[..], br#"{"1": {"x": 1}}"#, br#"["1"]"#, br#"{"1": ["dog"]"#, b""] {
            assert!(scan_object_map(text, &needed(&["1"])).unwrap().is_none(), "{}", String::from_utf8_lossy(text));
        }
    }
}
