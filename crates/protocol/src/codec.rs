//! MessagePack encoding used on both sides of the module boundary.
//!
//! Structs are encoded as maps with field names (`rmp_serde::to_vec_named`), so a JavaScript
//! host can read them without a schema and the bytes are the same from every encoder that
//! follows `ABI.md`.

use serde::{de::DeserializeOwned, Serialize};

/// Failure to encode or decode a wire value.
#[derive(Debug, thiserror::Error)]
pub enum CodecError {
    /// The bytes are not a valid MessagePack encoding of the expected shape.
    #[error("malformed messagepack: {0}")]
    Decode(String),
    /// The value could not be encoded.
    #[error("cannot encode value: {0}")]
    Encode(String),
}

/// Encodes a value as named-field MessagePack.
pub fn encode<T: Serialize + ?Sized>(value: &T) -> Result<Vec<u8>, CodecError> {
    // `write_named` into a `Vec` (the bytes of `to_vec_named`): every value the module
    // encodes (manifest, explanations) goes through this one serializer type, so the module
    // holds one copy of the generic code.
    let mut out = Vec::new();
    rmp_serde::encode::write_named(&mut out, value)
        .map_err(|e| CodecError::Encode(e.to_string()))?;
    Ok(out)
}

/// Decodes named-field MessagePack.
pub fn decode<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, CodecError> {
    rmp_serde::from_slice(bytes).map_err(|e| CodecError::Decode(e.to_string()))
}
