//! Queue messages: MessagePack with named fields, so fields can be added without breaking
//! older readers; every message type carries a `schema_version`.

use serde::de::DeserializeOwned;
use serde::Serialize;
use thiserror::Error;

#[derive(Debug, Error)]
pub enum CodecError {
    #[error("cannot encode message: {0}")]
    Encode(String),
    /// Not retryable: the message goes to the dead-letter queue.
    #[error("undecodable message ({len} bytes): {reason}")]
    Decode { len: usize, reason: String },
}

pub fn encode<T: Serialize>(msg: &T) -> Result<bytes::Bytes, CodecError> {
    rmp_serde::to_vec_named(msg).map(bytes::Bytes::from).map_err(|e| CodecError::Encode(e.to_string()))
}

pub fn decode<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, CodecError> {
    rmp_serde::from_slice(bytes).map_err(|e| CodecError::Decode { len: bytes.len(), reason: e.to_string() })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde::Deserialize;

    #[derive(Serialize, Deserialize, PartialEq, Debug)]
    struct V1 {
        schema_version: u32,
        shard: u32,
    }

    #[derive(Serialize, Deserialize, PartialEq, Debug)]
    struct V2 {
        schema_version: u32,
        shard: u32,
        #[serde(default)]
        extra: Option<String>,
    }

    #[test]
    fn named_fields_let_old_and_new_readers_coexist() {
        let b = encode(&V2 { schema_version: 2, shard: 3, extra: Some("x".into()) }).unwrap();
        let old: V1 = decode(&b).unwrap();
        assert_eq!(old.shard, 3);
        let b = encode(&V1 { schema_version: 1, shard: 4 }).unwrap();
        let new: V2 = decode(&b).unwrap();
        assert_eq!(new.extra, None);
        assert!(decode::<V1>(b"\xc1garbage").is_err());
    }
}
