//! Training-ready files, written when a job finishes: every instruction shard merged, in shard
//! order, into one file per trainer format under `train/`.
//!
//! - `llava.json`: LLaVA's format (`id`, `image`, `conversations` of `human` / `gpt` turns,
//!   `<image>` in the first human turn), without dftg's `meta`, so strict loaders take it.
//! - `sharegpt.json`: `{"messages": [{"role": "user" | "assistant", "content"}], "images":
//!   [path]}`, the `<image>` token kept in the first user message: LLaMA-Factory's sharegpt
//!   formatting with OpenAI-style tags, and ms-swift's standard format.
//! - `dataset_info.json`: LLaMA-Factory's registration of `sharegpt.json` (`dftg_sharegpt`).
//!   `llava.json` is not registered: LLaMA-Factory documents its `images` column as a list of
//!   paths, and LLaVA's `image` is one string.
//!
//! Image paths are the records' own: relative to the corpus root (`image_folder` in
//! `dataset.json`). The files are built by appending records as the manifest reads each shard,
//! so only the two files and one shard are in memory; they are written create-only, so a
//! resumed finish keeps what an earlier one wrote (the content is the same: shards never change).

use bytes::Bytes;
use serde::{Deserialize, Serialize};

use dftg_core::llava::{LlavaRecord, Turn};
use dftg_runtime::BlobStore;

use crate::error::PipelineError;
use crate::layout;

/// The name `dataset_info.json` gives `sharegpt.json` (`dataset: dftg_sharegpt`).
pub const LLAMA_FACTORY_DATASET: &str = "dftg_sharegpt";

/// `dataset.json`'s `train` block: where the training files are and what they hold.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TrainFiles {
    pub llava: String,
    pub sharegpt: String,
    pub dataset_info: String,
    /// Records in each file.
    pub records: u64,
    /// Instruction records left out because a trainer would refuse them (see
    /// `LlavaRecord::validate`); normally none.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub skipped: u64,
    /// The folder the image paths are relative to: the corpus, as the job names it.
    pub image_folder: String,
}

fn is_zero(n: &u64) -> bool {
    *n == 0
}

/// A LLaVA record as trainers read it (dftg's `meta` left out).
#[derive(Serialize)]
struct LlavaOut<'a> {
    id: &'a str,
    image: &'a str,
    conversations: &'a [Turn],
}

#[derive(Serialize)]
struct Message<'a> {
    role: &'static str,
    content: &'a str,
}

#[derive(Serialize)]
struct ShareGptOut<'a> {
    messages: Vec<Message<'a>>,
    images: [&'a str; 1],
}

/// Builds `llava.json` and `sharegpt.json` one record at a time (JSON arrays, one record a line).
pub struct TrainWriter {
    llava: Vec<u8>,
    sharegpt: Vec<u8>,
    records: u64,
    skipped: u64,
}

impl Default for TrainWriter {
    fn default() -> Self {
        Self::new()
    }
}

impl TrainWriter {
    pub fn new() -> Self {
        TrainWriter { llava: b"[".to_vec(), sharegpt: b"[".to_vec(), records: 0, skipped: 0 }
    }

    /// Appends one record to both files.
    pub fn push(&mut self, r: &LlavaRecord) -> Result<(), PipelineError> {
        // the checks LLaVA trainers rely on also make the role mapping below total
        if let Err(why) = r.validate() {
            tracing::warn!(record = %crate::error::bounded(&why, crate::error::MAX_ERROR_TEXT), "instruction record left out of the training files");
            self.skipped += 1;
            return Ok(());
        }
        let sep: &[u8] = if self.records == 0 { b"\n" } else { b",\n" };
        let encode = |e: serde_json::Error| PipelineError::Encode { what: layout::TRAIN_LLAVA.into(), reason: e.to_string() };
        self.llava.extend_from_slice(sep);
        serde_json::to_writer(&mut self.llava, &LlavaOut { id: &r.id, image: &r.image, conversations: &r.conversations })
            .map_err(encode)?;
        let messages = r
            .conversations
            .iter()
            .map(|t| Message { role: if t.from == "human" { "user" } else { "assistant" }, content: &t.value })
            .collect();
        self.sharegpt.extend_from_slice(sep);
        serde_json::to_writer(&mut self.sharegpt, &ShareGptOut { messages, images: [&r.image] })
            .map_err(|e| PipelineError::Encode { what: layout::TRAIN_SHAREGPT.into(), reason: e.to_string() })?;
        self.records += 1;
        Ok(())
    }

    /// Closes the arrays and writes the three files (create-only).
    pub async fn write(self, store: &dyn BlobStore, image_folder: &str) -> Result<TrainFiles, PipelineError> {
        let TrainWriter { mut llava, mut sharegpt, records, skipped } = self;
        let end: &[u8] = if records == 0 { b"]\n" } else { b"\n]\n" };
        llava.extend_from_slice(end);
        sharegpt.extend_from_slice(end);
        store.put_create(layout::TRAIN_LLAVA, Bytes::from(llava)).await?;
        store.put_create(layout::TRAIN_SHAREGPT, Bytes::from(sharegpt)).await?;
        let info = crate::error::to_json(layout::TRAIN_DATASET_INFO, &dataset_info(), true)?;
        store.put_create(layout::TRAIN_DATASET_INFO, info).await?;
        Ok(TrainFiles {
            llava: layout::TRAIN_LLAVA.into(),
            sharegpt: layout::TRAIN_SHAREGPT.into(),
            dataset_info: layout::TRAIN_DATASET_INFO.into(),
            records,
            skipped,
            image_folder: image_folder.into(),
        })
    }
}

/// LLaMA-Factory's `dataset_info.json` for `sharegpt.json` (the file beside it): sharegpt
/// formatting, the `messages` and `images` columns, OpenAI-style role tags.
pub fn dataset_info() -> serde_json::Value {
    let file = layout::TRAIN_SHAREGPT.rsplit('/').next().unwrap_or(layout::TRAIN_SHAREGPT);
    serde_json::json!({
        LLAMA_FACTORY_DATASET: {
            "file_name": file,
            "formatting": "sharegpt",
            "columns": { "messages": "messages", "images": "images" },
            "tags": { "role_tag": "role", "content_tag": "content", "user_tag": "user", "assistant_tag": "assistant" }
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use dftg_core::llava::{InstructionMeta, InstructionType};
    use dftg_runtime::ObjectBlobStore;

    fn record(id: &str, question: &str) -> LlavaRecord {
        let meta = InstructionMeta { kind: InstructionType::NegativeExistence, concept: Some("dog".into()), why: "w".into(), writer: None };
        LlavaRecord::single_turn(id.into(), format!("images/{id}.png"), question, "No, there is no dog.".into(), meta)
    }

    #[tokio::test]
    async fn files_are_json_arrays_in_push_order_without_meta() {
        let store = ObjectBlobStore::in_memory();
        let mut w = TrainWriter::new();
        w.push(&record("a", "Is there a dog?")).unwrap();
        let mut bad = record("b", "Is there a dog?");
        bad.conversations[0].value = "no image token".into();
        w.push(&bad).unwrap();
        w.push(&record("c", "Is there a \"dog\"?")).unwrap();
        let files = w.write(&store, "examples/corpus").await.unwrap();
        assert_eq!((files.records, files.skipped, files.image_folder.as_str()), (2, 1, "examples/corpus"));
        let llava: serde_json::Value = serde_json::from_slice(&store.get(layout::TRAIN_LLAVA).await.unwrap().unwrap()).unwrap();
        assert_eq!(llava[0]["id"], "a");
        assert_eq!(llava[1]["id"], "c");
        assert!(llava[0].get("meta").is_none());
        assert_eq!(llava[1]["conversations"][0]["value"], "<image>\nIs there a \"dog\"?");
        let sharegpt: serde_json::Value = serde_json::from_slice(&store.get(layout::TRAIN_SHAREGPT).await.unwrap().unwrap()).unwrap();
        assert_eq!(sharegpt.as_array().unwrap().len(), 2);
        assert_eq!(sharegpt[0]["messages"][0]["role"], "user");
        assert_eq!(sharegpt[0]["messages"][1]["role"], "assistant");
        assert_eq!(sharegpt[0]["images"], serde_json::json!(["images/a.png"]));
        let info: serde_json::Value = serde_json::from_slice(&store.get(layout::TRAIN_DATASET_INFO).await.unwrap().unwrap()).unwrap();
        assert_eq!(info[LLAMA_FACTORY_DATASET]["file_name"], "sharegpt.json");
        assert_eq!(info[LLAMA_FACTORY_DATASET]["columns"]["images"], "images");
    }

    #[tokio::test]
    async fn no_records_is_an_empty_array() {
        let store = ObjectBlobStore::in_memory();
        TrainWriter::new().write(&store, "c").await.unwrap();
        let llava: serde_json::Value = serde_json::from_slice(&store.get(layout::TRAIN_LLAVA).await.unwrap().unwrap()).unwrap();
        assert_eq!(llava, serde_json::json!([]));
    }
}
