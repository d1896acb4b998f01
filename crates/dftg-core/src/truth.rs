//! Image information: what is really in each image (stage 1, step 3).
//!
//! Parsers for the three ground-truth formats users have: COCO instances JSON, a streaming
//! JSONL manifest (one image a line), and a map image id → object names (CHAIR's cache format).
//! Parsing is pure; callers stream lines or pass a document they already read.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::error::CoreError;

/// One object category present in an image.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ObjectTruth {
    pub name: String,
    /// Number of instances, when the source knows it (COCO instance annotations do).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub count: Option<u32>,
    /// Known attribute values by family ("color" → ["red"]); an absent family is unknown.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub attributes: BTreeMap<String, Vec<String>>,
}

/// Ground truth of one image.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ImageTruth {
    /// Stable key of the image inside its corpus (COCO id, file stem, …).
    pub image: String,
    /// Path of the image file relative to the corpus root, when the corpus has files.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub file: Option<String>,
    pub objects: Vec<ObjectTruth>,
}

impl ImageTruth {
    pub fn object(&self, name: &str) -> Option<&ObjectTruth> {
        self.objects.iter().find(|o| o.name == name)
    }

    pub fn has(&self, name: &str) -> bool {
        self.object(name).is_some()
    }
}

#[derive(Deserialize)]
#[serde(untagged)]
enum ManifestObject {
    Name(String),
    Full(ObjectTruth),
}

#[derive(Deserialize)]
struct ManifestLine {
    #[serde(alias = "image_id", alias = "id", alias = "key")]
    image: serde_json::Value,
    #[serde(default, alias = "file_name", alias = "path")]
    file: Option<String>,
    #[serde(default)]
    objects: Vec<ManifestObject>,
}

/// One line of a JSONL manifest: `{"image": "k", "file": "images/k.png", "objects":
/// [{"name": "dog", "count": 2, "attributes": {"color": ["brown"]}}, "person"]}`.
pub fn parse_manifest_line(line: &str, line_no: usize) -> Result<ImageTruth, CoreError> {
    let m: ManifestLine = serde_json::from_str(line).map_err(|e| CoreError::invalid(format!("manifest line {line_no}"), e.to_string()))?;
    let image = image_key(&m.image)
        .ok_or_else(|| CoreError::invalid(format!("manifest line {line_no}"), "\"image\" must be a string or a number"))?;
    let mut objects: Vec<ObjectTruth> = Vec::with_capacity(m.objects.len());
    for o in m.objects {
        let o = match o {
            ManifestObject::Name(name) => ObjectTruth { name, count: None, attributes: BTreeMap::new() },
            ManifestObject::Full(o) => o,
        };
        if o.name.trim().is_empty() {
            return Err(CoreError::invalid(format!("manifest line {line_no}"), "an object has an empty name"));
        }
        objects.push(o);
    }
    Ok(ImageTruth { image, file: m.file, objects })
}

/// An image id as written in JSON (`"abc"` or `123`) → the image key; `None` otherwise.
pub fn image_key(v: &serde_json::Value) -> Option<String> {
    match v {
        serde_json::Value::String(s) if !s.is_empty() => Some(s.clone()),
        serde_json::Value::Number(n) => Some(n.to_string()),
        _ => None,
    }
}

#[derive(Deserialize)]
struct CocoFile {
    images: Vec<CocoImage>,
    annotations: Vec<CocoAnnotation>,
    categories: Vec<CocoCategory>,
}

/// One entry of a COCO file's `images`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct CocoImage {
    pub id: serde_json::Value,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub file_name: Option<String>,
}

/// One entry of a COCO file's `annotations` (the fields dftg reads).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct CocoAnnotation {
    pub image_id: serde_json::Value,
    pub category_id: u64,
    #[serde(default)]
    pub iscrowd: u8,
    /// dftg extension: attribute values of this instance, `{"color": "red"}` or lists.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub attributes: BTreeMap<String, AttrValue>,
}

/// An attribute value: one or several.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(untagged)]
pub enum AttrValue {
    One(String),
    Many(Vec<String>),
}

/// One entry of a COCO file's `categories`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct CocoCategory {
    pub id: u64,
    pub name: String,
}

/// Per-category state of one image: instances, crowd seen, attribute values.
type Slot = (u32, bool, BTreeMap<String, Vec<String>>);

/// Builds ground truth from COCO records fed one at a time: all of a set of images first,
/// then the annotations of those images. Parsing a whole file and planning a file too large
/// to hold (split by image into parts) both go through it.
pub struct CocoAccumulator {
    categories: BTreeMap<u64, String>,
    index: ahash::AHashMap<String, usize>,
    truths: Vec<ImageTruth>,
    acc: Vec<BTreeMap<String, Slot>>,
}

impl CocoAccumulator {
    pub fn new(categories: &[CocoCategory]) -> Self {
        CocoAccumulator {
            categories: categories.iter().map(|c| (c.id, c.name.clone())).collect(),
            index: ahash::AHashMap::new(),
            truths: Vec::new(),
            acc: Vec::new(),
        }
    }

    /// `at` is the image's index in the file, for messages.
    pub fn add_image(&mut self, img: &CocoImage, at: usize) -> Result<(), CoreError> {
        let key = image_key(&img.id).ok_or_else(|| CoreError::invalid(format!("coco images[{at}].id"), "must be a string or a number"))?;
        if self.index.insert(key.clone(), self.truths.len()).is_some() {
            return Err(CoreError::invalid(format!("coco images[{at}].id"), format!("duplicate image id {key}")));
        }
        self.truths.push(ImageTruth { image: key, file: img.file_name.clone(), objects: Vec::new() });
        self.acc.push(BTreeMap::new());
        Ok(())
    }

    /// `at` is the annotation's index in the file, for messages.
    pub fn add_annotation(&mut self, a: &CocoAnnotation, at: usize) -> Result<(), CoreError> {
        let key = image_key(&a.image_id)
            .ok_or_else(|| CoreError::invalid(format!("coco annotations[{at}].image_id"), "must be a string or a number"))?;
        let Some(&img) = self.index.get(&key) else {
            return Err(CoreError::invalid(format!("coco annotations[{at}].image_id"), format!("image {key} is not in \"images\"")));
        };
        let name = self.categories.get(&a.category_id).ok_or_else(|| {
            CoreError::invalid(format!("coco annotations[{at}].category_id"), format!("unknown category {}", a.category_id))
        })?;
        let slot = self.acc[img].entry(name.clone()).or_insert_with(|| (0, false, BTreeMap::new()));
        slot.0 += 1;
        slot.1 |= a.iscrowd != 0;
        for (family, v) in &a.attributes {
            let values = slot.2.entry(family.clone()).or_default();
            let new: &[String] = match v {
                AttrValue::One(s) => std::slice::from_ref(s),
                AttrValue::Many(vs) => vs,
            };
            for s in new {
                if !values.contains(s) {
                    values.push(s.clone());
                }
            }
        }
        Ok(())
    }

    /// The images in the order they were added.
    pub fn finish(self) -> Vec<ImageTruth> {
        let mut truths = self.truths;
        for (t, objs) in truths.iter_mut().zip(self.acc) {
            t.objects = objs
                .into_iter()
                .map(|(name, (count, crowd, attributes))| ObjectTruth { name, count: (!crowd).then_some(count), attributes })
                .collect();
        }
        truths
    }
}

/// COCO instances JSON → ground truth per image, in the file's image order. Counts are the
/// number of instance annotations; a crowd annotation makes that category's count unknown.
pub fn parse_coco_instances(text: &str) -> Result<Vec<ImageTruth>, CoreError> {
    let coco: CocoFile =
        serde_json::from_str(text).map_err(|e| CoreError::invalid("coco annotations", format!("not COCO instances JSON: {e}")))?;
    let mut acc = CocoAccumulator::new(&coco.categories);
    for (i, img) in coco.images.iter().enumerate() {
        acc.add_image(img, i)?;
    }
    for (i, a) in coco.annotations.iter().enumerate() {
        acc.add_annotation(a, i)?;
    }
    Ok(acc.finish())
}

/// CHAIR's cache format `{"<image_id>": ["bowl", "broccoli"]}` → ground truth without counts,
/// in ascending id order (numeric ids sort numerically).
pub fn parse_object_map(text: &str) -> Result<Vec<ImageTruth>, CoreError> {
    let map: BTreeMap<String, Vec<String>> =
        serde_json::from_str(text).map_err(|e| CoreError::invalid("object map", format!("expected {{\"<image id>\": [names]}}: {e}")))?;
    let mut out: Vec<ImageTruth> = map
        .into_iter()
        .map(|(image, names)| {
            let mut objects: Vec<ObjectTruth> = Vec::with_capacity(names.len());
            for name in names {
                if !objects.iter().any(|o| o.name == name) {
                    objects.push(ObjectTruth { name, count: None, attributes: BTreeMap::new() });
                }
            }
            ImageTruth { image, file: None, objects }
        })
        .collect();
    out.sort_by(|a, b| match (a.image.parse::<u64>(), b.image.parse::<u64>()) {
        (Ok(x), Ok(y)) => x.cmp(&y),
        _ => a.image.cmp(&b.image),
    });
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn coco_counts_instances_and_marks_crowds_unknown() {
        let text = r#"{"images":[{"id":1,"file_name":"a.jpg"},{"id":2,"file_name":"b.jpg"}],
          "annotations":[{"image_id":1,"category_id":18},{"image_id":1,"category_id":18,"attributes":{"color":"brown"}},
                         {"image_id":2,"category_id":1,"iscrowd":1},{"image_id":2,"category_id":1}],
          "categories":[{"id":1,"name":"person"},{"id":18,"name":"dog"}]}"#;
        let t = parse_coco_instances(text).unwrap();
        assert_eq!(t.len(), 2);
        assert_eq!(t[0].image, "1");
        assert_eq!(t[0].object("dog").unwrap().count, Some(2));
        assert_eq!(t[0].object("dog").unwrap().attributes["color"], vec!["brown".to_string()]);
        assert_eq!(t[1].object("person").unwrap().count, None);
    }

    #[test]
    fn coco_annotation_for_missing_image_names_it() {
        let text = r#"{"images":[{"id":1}],"annotations":[{"image_id":7,"category_id":1}],"categories":[{"id":1,"name":"dog"}]}"#;
        let err = parse_coco_instances(text).unwrap_err().to_string();
        assert!(err.contains("annotations[0].image_id") && err.contains("image 7"), "{err}");
    }

    #[test]
    fn manifest_lines_accept_names_and_full_objects() {
        let t = parse_manifest_line(r#"{"image": 5, "file": "x.png", "objects": ["cat", {"name": "dog", "count": 2}]}"#, 1).unwrap();
        assert_eq!(t.image, "5");
        assert_eq!(t.objects.len(), 2);
        assert_eq!(t.object("dog").unwrap().count, Some(2));
        let err = parse_manifest_line("{not json", 9).unwrap_err().to_string();
        assert!(err.contains("manifest line 9"), "{err}");
    }

    #[test]
    fn object_map_sorts_numerically_and_dedups() {
        let t = parse_object_map(r#"{"10": ["dog", "dog"], "9": ["cat"]}"#).unwrap();
        assert_eq!(t[0].image, "9");
        assert_eq!(t[1].objects.len(), 1);
    }
}
