//! A synthetic corpus generator: scenes with realistic co-occurrence (streets have cars and
//! traffic lights, dinners have tables and forks), instance counts and attributes, and a small
//! PNG per image whose pixels depend on its content and key (so every image is distinct and a
//! simulator can recognise it). Ground truth is COCO instances JSON with dftg's attribute
//! extension. Used for the bundled example corpus, tests and benchmarks.

use std::collections::BTreeMap;

use rand::Rng;
use serde_json::json;

use dftg_core::seed::rng_for;

use crate::error::PipelineError;

/// (concept, probability of appearing, max instances, colours it may have)
type Slot = (&'static str, f64, u32, &'static [&'static str]);

const VEHICLE: &[&str] = &["red", "blue", "white", "black", "silver", "yellow", "gray"];
const ANIMAL: &[&str] = &["brown", "black", "white", "gray"];
const THING: &[&str] = &["red", "blue", "green", "yellow", "white", "black", "pink", "purple", "orange"];
const NONE: &[&str] = &[];

const SCENES: &[(&str, &[Slot])] = &[
    (
        "street",
        &[
            ("person", 0.9, 4, NONE),
            ("car", 0.85, 3, VEHICLE),
            ("bus", 0.3, 1, VEHICLE),
            ("truck", 0.3, 2, VEHICLE),
            ("traffic light", 0.55, 2, NONE),
            ("bicycle", 0.3, 2, VEHICLE),
            ("motorcycle", 0.2, 2, VEHICLE),
            ("stop sign", 0.2, 1, NONE),
            ("fire hydrant", 0.2, 1, &["red", "yellow"]),
            ("handbag", 0.2, 1, THING),
            ("backpack", 0.2, 1, THING),
            ("umbrella", 0.15, 2, THING),
        ],
    ),
    (
        "kitchen",
        &[
            ("oven", 0.6, 1, &["white", "black", "silver"]),
            ("sink", 0.7, 1, NONE),
            ("refrigerator", 0.6, 1, &["white", "silver"]),
            ("microwave", 0.45, 1, &["white", "black"]),
            ("bowl", 0.5, 3, THING),
            ("cup", 0.4, 3, THING),
            ("bottle", 0.4, 3, NONE),
            ("knife", 0.25, 2, NONE),
            ("spoon", 0.2, 2, NONE),
            ("person", 0.3, 2, NONE),
            ("potted plant", 0.2, 1, NONE),
            ("clock", 0.2, 1, NONE),
        ],
    ),
    (
        "dinner",
        &[
            ("dining table", 0.95, 1, &["brown", "white"]),
            ("pizza", 0.4, 2, NONE),
            ("sandwich", 0.3, 2, NONE),
            ("cake", 0.2, 1, &["white", "brown", "pink"]),
            ("cup", 0.5, 3, THING),
            ("fork", 0.5, 3, NONE),
            ("knife", 0.4, 2, NONE),
            ("wine glass", 0.4, 3, NONE),
            ("bottle", 0.3, 2, NONE),
            ("bowl", 0.4, 3, THING),
            ("person", 0.6, 4, NONE),
            ("chair", 0.6, 4, &["brown", "black", "white"]),
            ("spoon", 0.2, 2, NONE),
            ("donut", 0.1, 6, NONE),
            ("hot dog", 0.1, 3, NONE),
        ],
    ),
    (
        "living room",
        &[
            ("couch", 0.9, 1, &["brown", "gray", "red", "blue", "white"]),
            ("tv", 0.7, 1, &["black"]),
            ("chair", 0.5, 2, &["brown", "black"]),
            ("potted plant", 0.5, 2, NONE),
            ("book", 0.5, 5, NONE),
            ("clock", 0.3, 1, NONE),
            ("remote", 0.4, 2, &["black", "white"]),
            ("vase", 0.3, 1, THING),
            ("person", 0.4, 3, NONE),
            ("dog", 0.2, 1, ANIMAL),
            ("cat", 0.2, 1, ANIMAL),
            ("laptop", 0.2, 1, &["silver", "black"]),
            ("teddy bear", 0.1, 1, &["brown", "white"]),
        ],
    ),
    (
        "office",
        &[
            ("laptop", 0.8, 2, &["silver", "black"]),
            ("keyboard", 0.6, 2, &["black", "white"]),
            ("mouse", 0.6, 1, &["black", "white"]),
            ("tv", 0.5, 2, &["black"]),
            ("cell phone", 0.4, 1, &["black", "white"]),
            ("chair", 0.6, 2, &["black"]),
            ("book", 0.4, 4, NONE),
            ("cup", 0.4, 2, THING),
            ("person", 0.5, 2, NONE),
        ],
    ),
    (
        "beach",
        &[
            ("person", 0.9, 5, NONE),
            ("surfboard", 0.6, 3, THING),
            ("boat", 0.4, 2, VEHICLE),
            ("umbrella", 0.4, 3, THING),
            ("kite", 0.4, 2, THING),
            ("bird", 0.3, 4, &["white", "gray"]),
            ("dog", 0.1, 1, ANIMAL),
        ],
    ),
    ("snow", &[("person", 0.95, 4, NONE), ("skis", 0.7, 3, NONE), ("snowboard", 0.3, 2, THING), ("backpack", 0.2, 1, THING)]),
    (
        "farm",
        &[
            ("cow", 0.5, 6, ANIMAL),
            ("sheep", 0.5, 8, &["white", "black"]),
            ("horse", 0.4, 3, ANIMAL),
            ("person", 0.4, 2, NONE),
            ("dog", 0.3, 1, ANIMAL),
            ("bird", 0.2, 3, NONE),
            ("truck", 0.15, 1, VEHICLE),
        ],
    ),
    (
        "safari",
        &[
            ("elephant", 0.5, 5, &["gray"]),
            ("giraffe", 0.5, 4, NONE),
            ("zebra", 0.5, 6, NONE),
            ("bird", 0.2, 3, NONE),
            ("car", 0.1, 1, &["white", "green"]),
        ],
    ),
    (
        "park",
        &[
            ("person", 0.8, 4, NONE),
            ("dog", 0.5, 2, ANIMAL),
            ("frisbee", 0.4, 1, THING),
            ("bench", 0.5, 2, &["brown", "green", "black"]),
            ("sports ball", 0.3, 1, THING),
            ("bicycle", 0.2, 1, VEHICLE),
            ("kite", 0.2, 1, THING),
            ("bird", 0.2, 3, NONE),
        ],
    ),
    (
        "ballgame",
        &[
            ("person", 1.0, 6, NONE),
            ("baseball bat", 0.5, 1, NONE),
            ("baseball glove", 0.5, 2, &["brown", "black"]),
            ("sports ball", 0.6, 1, &["white"]),
            ("tennis racket", 0.3, 2, NONE),
        ],
    ),
    (
        "bathroom",
        &[
            ("toilet", 0.8, 1, &["white"]),
            ("sink", 0.9, 2, &["white"]),
            ("toothbrush", 0.3, 2, THING),
            ("hair drier", 0.1, 1, NONE),
            ("bottle", 0.3, 3, NONE),
            ("cup", 0.2, 1, NONE),
        ],
    ),
    (
        "bedroom",
        &[
            ("bed", 0.95, 1, &["white", "blue", "brown"]),
            ("teddy bear", 0.2, 2, &["brown", "white"]),
            ("book", 0.4, 4, NONE),
            ("clock", 0.3, 1, NONE),
            ("laptop", 0.2, 1, &["silver"]),
            ("cat", 0.2, 1, ANIMAL),
            ("person", 0.2, 1, NONE),
        ],
    ),
    (
        "station",
        &[
            ("train", 0.6, 1, VEHICLE),
            ("airplane", 0.4, 2, &["white", "blue"]),
            ("person", 0.5, 5, NONE),
            ("truck", 0.2, 1, VEHICLE),
            ("car", 0.3, 2, VEHICLE),
            ("bus", 0.2, 1, VEHICLE),
            ("suitcase", 0.3, 2, THING),
        ],
    ),
    (
        "market",
        &[
            ("banana", 0.5, 6, &["yellow", "green"]),
            ("apple", 0.5, 8, &["red", "green"]),
            ("orange", 0.5, 8, NONE),
            ("broccoli", 0.3, 3, NONE),
            ("carrot", 0.3, 6, NONE),
            ("person", 0.5, 3, NONE),
            ("bowl", 0.3, 2, THING),
        ],
    ),
];

pub struct SynthImage {
    pub key: String,
    pub file: String,
    pub png: Vec<u8>,
}

pub struct SynthCorpus {
    pub images: Vec<SynthImage>,
    /// COCO instances JSON.
    pub annotations: String,
}

/// `n` images, reproducible from `seed`.
pub fn synthesize(n: usize, seed: u64) -> Result<SynthCorpus, PipelineError> {
    let vocab = dftg_core::vocab::Vocabulary::coco80();
    let categories: Vec<serde_json::Value> =
        vocab.concepts().iter().enumerate().map(|(i, c)| json!({"id": i + 1, "name": c.name, "supercategory": c.supercategory})).collect();
    let cat_id = |name: &str| vocab.lookup(name).map(|id| id as usize + 1);
    let mut images = Vec::with_capacity(n);
    let mut coco_images = Vec::with_capacity(n);
    let mut annotations = Vec::new();
    for i in 0..n {
        let key = format!("{:06}", i + 1);
        let mut rng = rng_for(seed, &["synth", &key]);
        let (scene, slots) = SCENES[rng.gen_range(0..SCENES.len())];
        let mut objects: BTreeMap<&str, Vec<Option<&str>>> = BTreeMap::new();
        for &(concept, p, max, colours) in slots {
            if rng.gen_bool(p) {
                let count = rng.gen_range(1..=max);
                let colour = if !colours.is_empty() && rng.gen_bool(0.6) { Some(colours[rng.gen_range(0..colours.len())]) } else { None };
                objects.insert(concept, (0..count).map(|_| colour).collect());
            }
        }
        if objects.is_empty() {
            let (concept, _, _, _) = slots[0];
            objects.insert(concept, vec![None]);
        }
        let file = format!("images/{key}.png");
        let mut boxes = Vec::new();
        for (concept, instances) in &objects {
            let id =
                cat_id(concept).ok_or_else(|| PipelineError::invalid("synth", format!("scene concept {concept} not in the vocabulary")))?;
            for colour in instances {
                let bbox =
                    [rng.gen_range(0..80) as f64, rng.gen_range(0..48) as f64, rng.gen_range(8..40) as f64, rng.gen_range(8..24) as f64];
                let mut ann = json!({"id": annotations.len() + 1, "image_id": i + 1, "category_id": id, "bbox": bbox, "area": bbox[2] * bbox[3], "iscrowd": 0});
                if let Some(c) = colour {
                    ann["attributes"] = json!({"color": c});
                }
                boxes.push((bbox, colour.map(rgb).unwrap_or_else(|| hash_rgb(concept))));
                annotations.push(ann);
            }
        }
        coco_images.push(json!({"id": i + 1, "file_name": file, "width": WIDTH, "height": HEIGHT, "scene": scene}));
        let png = draw_png(&key, scene, &boxes)?;
        images.push(SynthImage { key: (i + 1).to_string(), file, png });
    }
    let doc = json!({
        "info": {"description": "dftg synthetic example corpus", "version": "1", "seed": seed},
        "images": coco_images,
        "annotations": annotations,
        "categories": categories,
    });
    let annotations =
        serde_json::to_string(&doc).map_err(|e| PipelineError::Encode { what: "synthetic annotations".into(), reason: e.to_string() })?;
    Ok(SynthCorpus { images, annotations })
}

const WIDTH: u32 = 96;
const HEIGHT: u32 = 64;

fn rgb(colour: &str) -> [u8; 3] {
    match colour {
        "red" => [220, 40, 40],
        "orange" => [240, 150, 30],
        "yellow" => [240, 220, 40],
        "green" => [40, 170, 60],
        "blue" => [40, 80, 220],
        "purple" => [140, 60, 180],
        "pink" => [240, 150, 190],
        "brown" => [130, 80, 40],
        "black" => [20, 20, 20],
        "white" => [245, 245, 245],
        "gray" => [128, 128, 128],
        "silver" => [190, 190, 200],
        _ => [100, 100, 100],
    }
}

fn hash_rgb(s: &str) -> [u8; 3] {
    let h = dftg_core::seed::stable_hash(1, &[s]);
    [(h >> 8) as u8, (h >> 16) as u8, (h >> 24) as u8]
}

fn draw_png(key: &str, scene: &str, boxes: &[([f64; 4], [u8; 3])]) -> Result<Vec<u8>, PipelineError> {
    let bg = hash_rgb(scene);
    let mut px = vec![0u8; (WIDTH * HEIGHT * 3) as usize];
    for (i, p) in px.chunks_mut(3).enumerate() {
        let y = i as u32 / WIDTH;
        let shade = (y * 40 / HEIGHT) as u8;
        p.copy_from_slice(&[bg[0].saturating_sub(shade), bg[1].saturating_sub(shade), bg[2].saturating_sub(shade)]);
    }
    for ([x, y, w, h], c) in boxes {
        for yy in (*y as u32)..((*y + *h) as u32).min(HEIGHT) {
            for xx in (*x as u32)..((*x + *w) as u32).min(WIDTH) {
                let o = ((yy * WIDTH + xx) * 3) as usize;
                px[o..o + 3].copy_from_slice(c);
            }
        }
    }
    // the key as a bar code on the first row: distinct bytes for every image
    let h = dftg_core::seed::stable_hash(2, &[key]);
    for bit in 0..64u32 {
        let o = (bit * 3) as usize;
        let v = if h >> bit & 1 == 1 { 255 } else { 0 };
        px[o..o + 3].copy_from_slice(&[v, v, v]);
    }
    let mut out = Vec::new();
    {
        let mut enc = png::Encoder::new(&mut out, WIDTH, HEIGHT);
        enc.set_color(png::ColorType::Rgb);
        enc.set_depth(png::BitDepth::Eight);
        let mut w = enc.write_header().map_err(|e| PipelineError::invalid("synth", e.to_string()))?;
        w.write_image_data(&px).map_err(|e| PipelineError::invalid("synth", e.to_string()))?;
    }
    Ok(out)
}

/// A distinct small PNG for an image that exists only as ground truth (replayed corpora).
pub fn placeholder_png(key: &str, objects: &[&str]) -> Result<Vec<u8>, PipelineError> {
    let boxes: Vec<([f64; 4], [u8; 3])> = objects
        .iter()
        .enumerate()
        .map(|(i, o)| ([(i as f64 * 11.0) % 80.0, 8.0 + (i as f64 * 7.0) % 40.0, 14.0, 12.0], hash_rgb(o)))
        .collect();
    draw_png(key, "placeholder", &boxes)
}

/// A corpus for an id → objects map (CHAIR's format) with a placeholder image per id, so
/// recorded model outputs can be replayed through the pipeline: `manifest.jsonl` and
/// `images/<id>.png`. `ids` keeps only those ids, in that order.
pub fn write_object_map_corpus(dir: &std::path::Path, objects_json: &str, ids: Option<&[String]>) -> Result<usize, PipelineError> {
    let all = dftg_core::truth::parse_object_map(objects_json).map_err(|e| PipelineError::invalid("objects", e.to_string()))?;
    let truths: Vec<dftg_core::truth::ImageTruth> = match ids {
        None => all,
        Some(ids) => {
            let mut by_id: std::collections::HashMap<String, dftg_core::truth::ImageTruth> =
                all.into_iter().map(|t| (t.image.clone(), t)).collect();
            ids.iter().filter_map(|id| by_id.remove(id)).collect()
        }
    };
    let io = |e: std::io::Error| PipelineError::invalid("corpus.path", format!("{}: {e}", dir.display()));
    std::fs::create_dir_all(dir.join("images")).map_err(io)?;
    let mut manifest = String::new();
    for mut t in truths.iter().cloned() {
        let file = format!("images/{}.png", t.image);
        let names: Vec<&str> = t.objects.iter().map(|o| o.name.as_str()).collect();
        std::fs::write(dir.join(&file), placeholder_png(&t.image, &names)?).map_err(io)?;
        t.file = Some(file);
        manifest.push_str(
            &serde_json::to_string(&t).map_err(|e| PipelineError::Encode { what: "manifest line".into(), reason: e.to_string() })?,
        );
        manifest.push('\n');
    }
    std::fs::write(dir.join("manifest.jsonl"), manifest).map_err(io)?;
    Ok(truths.len())
}

/// Image ids of a JSONL file of `{"image_id", ...}` lines, first occurrence order.
pub fn image_ids_of_jsonl(text: &str) -> Result<Vec<String>, PipelineError> {
    let mut seen = std::collections::HashSet::new();
    let mut out = Vec::new();
    for (i, line) in text.lines().enumerate().filter(|(_, l)| !l.trim().is_empty()) {
        let v: serde_json::Value =
            serde_json::from_str(line).map_err(|e| PipelineError::invalid(format!("line {}", i + 1), e.to_string()))?;
        let id =
            dftg_core::truth::image_key(&v["image_id"]).ok_or_else(|| PipelineError::invalid(format!("line {}", i + 1), "no image_id"))?;
        if seen.insert(id.clone()) {
            out.push(id);
        }
    }
    Ok(out)
}

/// Writes a synthetic corpus to a directory: `annotations.json` and `images/*.png`.
pub fn write_corpus_dir(dir: &std::path::Path, n: usize, seed: u64) -> Result<usize, PipelineError> {
    let corpus = synthesize(n, seed)?;
    let io = |e: std::io::Error| PipelineError::invalid("corpus.path", format!("{}: {e}", dir.display()));
    std::fs::create_dir_all(dir.join("images")).map_err(io)?;
    std::fs::write(dir.join("annotations.json"), &corpus.annotations).map_err(io)?;
    for img in &corpus.images {
        std::fs::write(dir.join(&img.file), &img.png).map_err(io)?;
    }
    Ok(corpus.images.len())
}

/// A corpus of `n` images over the scenes of `distinct` synthetic ones, for tests and
/// benchmarks that need many images fast: drawing PNGs is the slow part of [`synthesize`], so
/// the images reuse the drawn pixels, each made distinct by a `tEXt` chunk naming it (the
/// simulator knows an image by its bytes' hash and seeds its choices by image).
pub fn write_replicated_corpus_dir(dir: &std::path::Path, n: usize, distinct: usize, seed: u64) -> Result<usize, PipelineError> {
    let synth = synthesize(distinct.clamp(1, n.max(1)), seed)?;
    let bad = |what: &str| PipelineError::invalid("synth", format!("synthetic annotations lack {what}"));
    let doc: serde_json::Value = serde_json::from_str(&synth.annotations)
        .map_err(|e| PipelineError::invalid("synth", format!("synthetic annotations do not parse: {e}")))?;
    let src_images = doc["images"].as_array().ok_or_else(|| bad("images"))?;
    let mut by_image: BTreeMap<u64, Vec<&serde_json::Value>> = BTreeMap::new();
    for a in doc["annotations"].as_array().ok_or_else(|| bad("annotations"))? {
        by_image.entry(a["image_id"].as_u64().unwrap_or(0)).or_default().push(a);
    }
    let io = |e: std::io::Error| PipelineError::invalid("corpus.path", format!("{}: {e}", dir.display()));
    std::fs::create_dir_all(dir.join("images")).map_err(io)?;
    let mut images = Vec::with_capacity(n);
    let mut annotations = Vec::new();
    for i in 0..n {
        let j = i % synth.images.len();
        let src = &src_images[j];
        let file = format!("images/{:06}.png", i + 1);
        std::fs::write(dir.join(&file), with_text_chunk(&synth.images[j].png, &file)).map_err(io)?;
        let mut img = src.clone();
        img["id"] = json!(i + 1);
        img["file_name"] = json!(file);
        images.push(img);
        for a in by_image.get(&src["id"].as_u64().unwrap_or(0)).into_iter().flatten() {
            let mut a = (*a).clone();
            a["id"] = json!(annotations.len() + 1);
            a["image_id"] = json!(i + 1);
            annotations.push(a);
        }
    }
    let out = json!({"info": doc["info"], "images": images, "annotations": annotations, "categories": doc["categories"]});
    let text =
        serde_json::to_vec(&out).map_err(|e| PipelineError::Encode { what: "synthetic annotations".into(), reason: e.to_string() })?;
    std::fs::write(dir.join("annotations.json"), text).map_err(io)?;
    Ok(n)
}

/// `png` with a `tEXt` chunk (keyword `dftg`) before its `IEND` chunk.
fn with_text_chunk(png: &[u8], text: &str) -> Vec<u8> {
    let crc32 = |bytes: &[u8]| {
        let mut c = 0xffff_ffffu32;
        for &b in bytes {
            c ^= u32::from(b);
            for _ in 0..8 {
                c = if c & 1 == 1 { 0xedb8_8320 ^ (c >> 1) } else { c >> 1 };
            }
        }
        !c
    };
    let mut body = b"tEXt".to_vec();
    body.extend_from_slice(b"dftg\0");
    body.extend_from_slice(text.as_bytes());
    // IEND is the last 12 bytes of every PNG the encoder writes
    let (head, iend) = png.split_at(png.len().saturating_sub(12));
    let mut out = head.to_vec();
    out.extend_from_slice(&((body.len() - 4) as u32).to_be_bytes());
    out.extend_from_slice(&body);
    out.extend_from_slice(&crc32(&body).to_be_bytes());
    out.extend_from_slice(iend);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn synthetic_corpus_is_reproducible_distinct_and_valid() {
        let a = synthesize(30, 7).unwrap();
        let b = synthesize(30, 7).unwrap();
        assert_eq!(a.annotations, b.annotations);
        let mut hashes: Vec<&[u8]> = a.images.iter().map(|i| i.png.as_slice()).collect();
        hashes.sort();
        hashes.dedup();
        assert_eq!(hashes.len(), 30, "every image has distinct bytes");
        assert_eq!(crate::corpus::sniff_image(&a.images[0].png), Ok("image/png"));
        let truth = dftg_core::truth::parse_coco_instances(&a.annotations).unwrap();
        assert_eq!(truth.len(), 30);
        assert!(truth.iter().all(|t| !t.objects.is_empty() && t.objects.iter().all(|o| o.count.is_some())));
        assert!(truth.iter().any(|t| t.objects.iter().any(|o| !o.attributes.is_empty())));
    }
}
