//! The on-disk framing of records and snapshots.
//!
//! ```text
//! key:   u64 big-endian (records: the sequence number, 1, 2, 3, …; snapshots: the
//!        sequence number of the last record they include)
//! value: [version: u8 = 1][crc: u32 big-endian][payload: MessagePack]
//!        crc = CRC-32 (IEEE) over the version byte, the 8 key bytes, then the payload
//! ```
//!
//! The payload is `rmp_serde::to_vec` of [`Record`] (or [`Snapshot`]): structs as
//! arrays, enums tagged by name. Covering the key with the checksum catches a valid
//! record stored under the wrong key as well as flipped or missing bytes. A value whose
//! checksum holds but whose version or payload this build cannot read is not damage:
//! recovery refuses it rather than cut it (see [`DecodeError::is_damage`]).

use super::{Record, Snapshot};
use serde::Serialize;
use serde::de::DeserializeOwned;

/// The framing version written by this build.
pub const FORMAT_VERSION: u8 = 1;
const HEADER: usize = 5;

/// Why a stored value could not be read back.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    /// The key is not 8 bytes.
    #[error("key is {0} bytes long, expected 8")]
    BadKey(usize),
    /// Shorter than the header.
    #[error("value is {0} bytes long, shorter than the 5-byte header (torn write?)")]
    Short(usize),
    /// Unknown framing version.
    #[error("unknown format version {0} (this build reads version {FORMAT_VERSION})")]
    Version(u8),
    /// The checksum does not match.
    #[error(
        "checksum mismatch: stored {stored:#010x}, computed {computed:#010x} over {len} payload bytes"
    )]
    Checksum {
        /// Checksum in the frame.
        stored: u32,
        /// Checksum of what is there.
        computed: u32,
        /// Payload length.
        len: usize,
    },
    /// The checksum matches but the payload does not decode.
    #[error("payload does not decode: {0}")]
    Payload(String),
    /// The record's own sequence number differs from its key.
    #[error("record says it is #{inner}, stored under key {key}")]
    Misfiled {
        /// The key.
        key: u64,
        /// The number inside.
        inner: u64,
    },
}

impl DecodeError {
    /// Whether the bytes are damaged (torn, flipped, missing) — as opposed to intact
    /// bytes this build cannot read (another format version or schema), or a record
    /// written under the wrong key, which no crash produces.
    pub fn is_damage(&self) -> bool {
        matches!(
            self,
            DecodeError::BadKey(_) | DecodeError::Short(_) | DecodeError::Checksum { .. }
        )
    }
}

fn checksum(version: u8, key: u64, payload: &[u8]) -> u32 {
    let mut h = crc32fast::Hasher::new();
    h.update(&[version]);
    h.update(&key.to_be_bytes());
    h.update(payload);
    h.finalize()
}

/// Frames `value` for storage under `key`.
pub fn encode<T: Serialize>(key: u64, value: &T) -> Vec<u8> {
    let mut out = Vec::with_capacity(256);
    out.extend_from_slice(&[FORMAT_VERSION, 0, 0, 0, 0]);
    rmp_serde::encode::write(&mut out, value).expect("journal types always encode");
    let crc = checksum(FORMAT_VERSION, key, &out[HEADER..]);
    out[1..HEADER].copy_from_slice(&crc.to_be_bytes());
    out
}

/// Reads a framed value stored under `key`, checking version and checksum.
pub fn decode<T: DeserializeOwned>(key: u64, bytes: &[u8]) -> Result<T, DecodeError> {
    if bytes.len() < HEADER {
        return Err(DecodeError::Short(bytes.len()));
    }
    let stored = u32::from_be_bytes(bytes[1..HEADER].try_into().expect("4 bytes"));
    let payload = &bytes[HEADER..];
    let computed = checksum(bytes[0], key, payload);
    if stored != computed {
        return Err(DecodeError::Checksum {
            stored,
            computed,
            len: payload.len(),
        });
    }
    if bytes[0] != FORMAT_VERSION {
        return Err(DecodeError::Version(bytes[0]));
    }
    rmp_serde::from_slice(payload).map_err(|e| DecodeError::Payload(e.to_string()))
}

/// Parses a stored key.
pub fn key(raw: &[u8]) -> Result<u64, DecodeError> {
    raw.try_into()
        .map(u64::from_be_bytes)
        .map_err(|_| DecodeError::BadKey(raw.len()))
}

/// Encodes a record under its own sequence number.
pub fn encode_record(record: &Record) -> Vec<u8> {
    encode(record.seq, record)
}

/// Decodes the record stored under `key`.
pub fn decode_record(key: u64, bytes: &[u8]) -> Result<Record, DecodeError> {
    let record: Record = decode(key, bytes)?;
    if record.seq != key {
        return Err(DecodeError::Misfiled {
            key,
            inner: record.seq,
        });
    }
    Ok(record)
}

/// Encodes a snapshot under its sequence number.
pub fn encode_snapshot(snapshot: &Snapshot) -> Vec<u8> {
    encode(snapshot.seq, snapshot)
}

/// Decodes the snapshot stored under `key`.
pub fn decode_snapshot(key: u64, bytes: &[u8]) -> Result<Snapshot, DecodeError> {
    let snapshot: Snapshot = decode(key, bytes)?;
    if snapshot.seq != key {
        return Err(DecodeError::Misfiled {
            key,
            inner: snapshot.seq,
        });
    }
    Ok(snapshot)
}
