//! dftg-core: the DFTG method as pure functions. No I/O, no async, no clocks.
//!
//! Layout, one file per pipeline step:
//! - `vocab`   — concepts, surface forms, attribute families (data from `configs/vocab`)
//! - `vocab_build` — a detector category list (LVIS, COCO-style, names) → a vocabulary TOML
//! - `truth`   — image information: ground-truth parsers (COCO, JSONL manifest, id → objects)
//! - `extract` — text information extraction: mentions, counts, attributes, negation
//! - `chair`   — the CHAIR-compatible extractor and metric (reproduces the reference exactly)
//! - `detection` — detector boxes → present / absent / uncertain per concept, counts (NMS)
//! - `check`   — hallucination checking: object / count / attribute, CHAIR-style scores
//! - `profile` — mergeable shard summaries and the model's hallucination profile
//! - `generate`— budget allocation and targeted instruction generation (LLaVA format)
//! - `writer`  — the writer's contract (facts, reply schemas, lenient reading), the
//!   verification gate every written item passes, and the offline template writer
//! - `correct` — the model's own description corrected in place
//! - `compare` — how two profiles differ
//! - `before_after` — did a remedy work: two jobs' rates with confidence intervals, a verdict
//! - `pope`    — POPE yes/no answers and metrics, as the benchmark's script defines them
//! - `pope_build` — POPE questions for any corpus: random / popular / adversarial samplers
//! - `english` — number words, articles, capitals, plurals: one copy for every writer
//! - `seed`    — deterministic seeding by key, never by arrival order
//! - `record`  — the records written between stages
//! - `tokens`  — token counts of model calls, by role
//! - `adaptive` — when to stop diagnosing: is the top-k set settled (a pilot wave, weighted pairwise score bounds)

/// Serde through a type's string form: `TryFrom<String>` by its `FromStr`, `Into<String>` by
/// its `Display`. With `#[serde(try_from = "String", into = "String")]` a choice reads and writes
/// as the same string, and a value that is none of its choices is refused by `FromStr`'s error
/// (which names the field, never the value).
#[macro_export]
macro_rules! string_form {
    ($t:ty) => {
        impl TryFrom<String> for $t {
            type Error = <$t as std::str::FromStr>::Err;
            fn try_from(s: String) -> Result<Self, Self::Error> {
                s.parse()
            }
        }
        impl From<$t> for String {
            fn from(choice: $t) -> String {
                choice.to_string()
            }
        }
    };
}

pub mod adaptive;
pub mod before_after;
pub mod chair;
pub mod check;
pub mod compare;
pub mod correct;
pub mod detection;
pub mod english;
pub mod error;
pub mod extract;
pub mod generate;
pub mod llava;
pub mod pope;
pub mod pope_build;
pub mod profile;
pub mod record;
pub mod seed;
pub mod tokens;
pub mod truth;
pub mod vocab;
pub mod vocab_build;
pub mod writer;

pub use error::CoreError;
