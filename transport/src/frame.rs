//! Framing: every message is a 4-byte big-endian length, then that many bytes of
//! MessagePack — a map with named fields (rmp-serde's named encoding, so any language's
//! MessagePack library reads it) and a string field `type` naming the message.
//!
//! Reading is split so each bad input gets its own stable error code and the stream stays
//! usable where that is safe: an oversized frame is skipped (its bytes read and thrown
//! away, never buffered) up to [`DISCARD_LIMIT`]; a frame that is not MessagePack, has no
//! `type`, names an unknown type or has a missing or mistyped field is reported and the
//! next frame is read normally. Only a stream that ends inside a frame, or an absurd
//! length, ends it.

use serde::Serialize;
use serde::de::DeserializeOwned;
use tokio::io::{AsyncRead, AsyncReadExt};

/// Default largest frame body accepted (1 MiB).
pub const DEFAULT_MAX_FRAME: usize = 1 << 20;

/// Larger than this, an oversized frame is not skipped: the stream is closed.
pub const DISCARD_LIMIT: usize = 64 << 20;

/// Stable error codes (also sent to clients in `error` frames; see docs/PROTOCOL.md).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ErrorCode {
    /// The bytes are not a MessagePack map with a string `type` field.
    MalformedFrame,
    /// The frame is longer than the server's maximum.
    FrameTooLarge,
    /// `type` names no message this server knows.
    UnknownType,
    /// A field is missing or has the wrong type.
    BadField,
    /// The stream ended inside a frame.
    Truncated,
}

impl ErrorCode {
    /// The code as sent on the wire.
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorCode::MalformedFrame => "malformed_frame",
            ErrorCode::FrameTooLarge => "frame_too_large",
            ErrorCode::UnknownType => "unknown_type",
            ErrorCode::BadField => "bad_field",
            ErrorCode::Truncated => "truncated",
        }
    }
}

/// Why a frame could not be read or decoded.
#[derive(Debug, thiserror::Error)]
pub enum FrameError {
    /// Longer than allowed. `skipped`: its bytes were read and discarded, the stream is
    /// still usable.
    #[error("frame of {len} bytes is larger than the maximum of {max} bytes")]
    TooLarge {
        /// Its length.
        len: usize,
        /// The maximum.
        max: usize,
        /// Whether the stream is still in step (the body was discarded).
        skipped: bool,
    },
    /// The stream ended inside a frame (after `got` of `wanted` bytes).
    #[error("stream ended inside a frame ({got} of {wanted} bytes)")]
    Truncated {
        /// Bytes read.
        got: usize,
        /// Bytes the frame needed.
        wanted: usize,
    },
    /// Not a MessagePack map with a string `type`.
    #[error("not a MessagePack map with a string `type` field: {0}")]
    Malformed(String),
    /// `type` is not a known message.
    #[error("unknown message type `{0}`")]
    UnknownType(String),
    /// A field is missing or mistyped, in a message of this type.
    #[error("bad `{kind}` message: {detail}")]
    BadField {
        /// The message's `type`.
        kind: String,
        /// What serde said (names the field and what was expected).
        detail: String,
    },
    /// Reading failed.
    #[error("reading the stream: {0}")]
    Io(#[from] std::io::Error),
}

impl FrameError {
    /// The stable code to report.
    pub fn code(&self) -> ErrorCode {
        match self {
            FrameError::TooLarge { .. } => ErrorCode::FrameTooLarge,
            FrameError::Truncated { .. } | FrameError::Io(_) => ErrorCode::Truncated,
            FrameError::Malformed(_) => ErrorCode::MalformedFrame,
            FrameError::UnknownType(_) => ErrorCode::UnknownType,
            FrameError::BadField { .. } => ErrorCode::BadField,
        }
    }

    /// Whether the stream can go on after this error (the next frame is in step).
    pub fn stream_usable(&self) -> bool {
        match self {
            FrameError::TooLarge { skipped, .. } => *skipped,
            FrameError::Malformed(_) | FrameError::UnknownType(_) | FrameError::BadField { .. } => {
                true
            }
            FrameError::Truncated { .. } | FrameError::Io(_) => false,
        }
    }
}

/// Encodes a message as one frame: length, then named-field MessagePack.
pub fn encode<T: Serialize>(message: &T) -> Vec<u8> {
    let body = rmp_serde::to_vec_named(message).expect("messages always serialise");
    let mut out = Vec::with_capacity(4 + body.len());
    out.extend_from_slice(&(body.len() as u32).to_be_bytes());
    out.extend_from_slice(&body);
    out
}

/// Reads one frame body. `Ok(None)`: the stream ended cleanly between frames.
pub async fn read_frame<R: AsyncRead + Unpin>(
    reader: &mut R,
    max: usize,
) -> Result<Option<Vec<u8>>, FrameError> {
    let mut len_bytes = [0u8; 4];
    let mut got = 0;
    while got < 4 {
        let n = reader.read(&mut len_bytes[got..]).await?;
        if n == 0 {
            return if got == 0 {
                Ok(None)
            } else {
                Err(FrameError::Truncated { got, wanted: 4 })
            };
        }
        got += n;
    }
    let len = u32::from_be_bytes(len_bytes) as usize;
    if len > max {
        if len > DISCARD_LIMIT {
            return Err(FrameError::TooLarge {
                len,
                max,
                skipped: false,
            });
        }
        // Read and throw away the body in pieces: the stream stays in step.
        let mut left = len;
        let mut sink = [0u8; 8192];
        while left > 0 {
            let take = left.min(sink.len());
            let n = reader.read(&mut sink[..take]).await?;
            if n == 0 {
                return Err(FrameError::Truncated {
                    got: len - left,
                    wanted: len,
                });
            }
            left -= n;
        }
        return Err(FrameError::TooLarge {
            len,
            max,
            skipped: true,
        });
    }
    let mut body = vec![0u8; len];
    let mut got = 0;
    while got < len {
        let n = reader.read(&mut body[got..]).await?;
        if n == 0 {
            return Err(FrameError::Truncated { got, wanted: len });
        }
        got += n;
    }
    Ok(Some(body))
}

/// Just the `type` of a frame (and its `id`, when it has one).
#[derive(serde::Deserialize)]
struct Head {
    #[serde(rename = "type")]
    kind: String,
    #[serde(default)]
    id: Option<u64>,
}

/// A frame's `type` and `id`, for error reports about a frame that may not decode.
pub fn head(body: &[u8]) -> Result<(String, Option<u64>), FrameError> {
    match rmp_serde::from_slice::<Head>(body) {
        Ok(h) => Ok((h.kind, h.id)),
        Err(e) => Err(FrameError::Malformed(e.to_string())),
    }
}

/// Decodes a frame body into one of a set of message types: a malformed frame, an
/// unknown `type` (not in `known`) and a bad field are told apart.
pub fn decode<T: DeserializeOwned>(body: &[u8], known: &[&str]) -> Result<T, FrameError> {
    let (kind, _) = head(body)?;
    if !known.contains(&kind.as_str()) {
        return Err(FrameError::UnknownType(kind));
    }
    rmp_serde::from_slice(body).map_err(|e| FrameError::BadField {
        kind,
        detail: e.to_string(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde::Deserialize;

    #[derive(Debug, PartialEq, Serialize, Deserialize)]
    #[serde(tag = "type", rename_all = "snake_case")]
    enum Msg {
        Hello { id: u64, token: String },
        Bye { id: u64 },
    }

    const KNOWN: &[&str] = &["hello", "bye"];

    async fn read_all(bytes: &[u8], max: usize) -> Vec<Result<Msg, FrameError>> {
        let mut r = bytes;
        let mut out = Vec::new();
        loop {
            match read_frame(&mut r, max).await {
                Ok(None) => return out,
                Ok(Some(body)) => out.push(decode::<Msg>(&body, KNOWN)),
                Err(e) => {
                    let usable = e.stream_usable();
                    out.push(Err(e));
                    if !usable {
                        return out;
                    }
                }
            }
        }
    }

    fn raw(body: &[u8]) -> Vec<u8> {
        let mut out = (body.len() as u32).to_be_bytes().to_vec();
        out.extend_from_slice(body);
        out
    }

    #[tokio::test]
    async fn frames_round_trip_with_named_fields() {
        let hello = Msg::Hello {
            id: 7,
            token: "t".into(),
        };
        let bytes = encode(&hello);
        // A map with named fields: the field names are in the bytes.
        assert!(bytes.windows(5).any(|w| w == b"token"));
        assert!(bytes.windows(4).any(|w| w == b"type"));
        let got = read_all(&[bytes, encode(&Msg::Bye { id: 8 })].concat(), 1024).await;
        assert_eq!(got.len(), 2);
        assert_eq!(got[0].as_ref().unwrap(), &hello);
    }

    #[tokio::test]
    async fn each_bad_frame_gets_its_code_and_the_stream_goes_on() {
        let mut bytes = Vec::new();
        bytes.extend(raw(&[0xc1])); // never valid MessagePack
        bytes.extend(encode(&Typed { kind: "nope" }));
        bytes.extend(raw(
            &rmp_serde::to_vec_named(&Missing { kind: "hello" }).unwrap()
        ));
        bytes.extend(raw(&vec![0u8; 5000])); // too large for 1,024
        bytes.extend(encode(&Msg::Bye { id: 9 }));
        let got = read_all(&bytes, 1024).await;
        let codes: Vec<_> = got
            .iter()
            .map(|r| r.as_ref().err().map(FrameError::code))
            .collect();
        assert_eq!(
            codes,
            vec![
                Some(ErrorCode::MalformedFrame),
                Some(ErrorCode::UnknownType),
                Some(ErrorCode::BadField),
                Some(ErrorCode::FrameTooLarge),
                None
            ]
        );
        let Err(FrameError::BadField { detail, .. }) = &got[2] else {
            panic!()
        };
        assert!(
            detail.contains("id") || detail.contains("token"),
            "{detail}"
        );
        assert_eq!(got[4].as_ref().unwrap(), &Msg::Bye { id: 9 });
    }

    #[test]
    fn the_worked_example_in_protocol_md_is_byte_exact() {
        #[derive(Serialize)]
        #[serde(tag = "type", rename_all = "snake_case")]
        enum Example {
            Ping { id: u64, text: String },
        }
        let bytes = encode(&Example::Ping {
            id: 1,
            text: "hi".into(),
        });
        let mut expected = vec![0, 0, 0, 0x17, 0x83, 0xa4];
        expected.extend_from_slice(b"type");
        expected.push(0xa4);
        expected.extend_from_slice(b"ping");
        expected.push(0xa2);
        expected.extend_from_slice(b"id");
        expected.extend_from_slice(&[0x01, 0xa4]);
        expected.extend_from_slice(b"text");
        expected.push(0xa2);
        expected.extend_from_slice(b"hi");
        assert_eq!(bytes, expected);
    }

    #[tokio::test]
    async fn a_stream_ending_inside_a_frame_is_truncated() {
        let mut bytes = encode(&Msg::Bye { id: 1 });
        bytes.truncate(bytes.len() - 1);
        let got = read_all(&bytes, 1024).await;
        assert!(matches!(got[0], Err(FrameError::Truncated { .. })));
        let got = read_all(&[0, 0], 1024).await;
        assert!(matches!(
            got[0],
            Err(FrameError::Truncated { got: 2, wanted: 4 })
        ));
    }

    #[derive(Serialize)]
    struct Missing {
        #[serde(rename = "type")]
        kind: &'static str,
    }

    #[derive(Serialize)]
    struct Typed {
        #[serde(rename = "type")]
        kind: &'static str,
    }

    proptest::proptest! {
        #[test]
        fn random_bytes_never_panic_and_each_frame_consumes_its_length(bytes in proptest::collection::vec(proptest::num::u8::ANY, 0..600)) {
            let rt = tokio::runtime::Builder::new_current_thread().build().unwrap();
            let got = rt.block_on(read_all(&bytes, 256));
            // Each frame (good or bad) takes at least its 4-byte length.
            proptest::prop_assert!(got.len() <= bytes.len() / 4 + 1);
        }
    }
}
