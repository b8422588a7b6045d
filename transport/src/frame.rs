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
    check_shape(body)?;
    match rmp_serde::from_slice::<Head>(body) {
        Ok(h) => Ok((h.kind, h.id)),
        Err(e) => Err(FrameError::Malformed(e.to_string())),
    }
}

/// How deeply arrays and maps may nest in a frame (the deepest message, a whole
/// configuration, nests 6 levels).
pub const MAX_DEPTH: usize = 32;

/// Walks a body's MessagePack without recursion: exactly one value, nesting at most
/// [`MAX_DEPTH`] deep, every length inside the body. The decoders recurse, so a frame
/// of a few hundred nested arrays would otherwise exhaust a thread's stack.
pub fn check_shape(body: &[u8]) -> Result<(), FrameError> {
    let bad = |what: String| Err(FrameError::Malformed(what));
    let mut at = 0usize;
    // Values still to read at each open level (the outermost: one value).
    let mut pending: Vec<u64> = vec![1];
    let take = |at: &mut usize, n: usize| -> Option<usize> {
        let start = *at;
        let end = start.checked_add(n)?;
        (end <= body.len()).then(|| {
            *at = end;
            start
        })
    };
    let uint = |bytes: &[u8]| bytes.iter().fold(0u64, |n, b| (n << 8) | u64::from(*b));
    while let Some(left) = pending.last_mut() {
        if *left == 0 {
            pending.pop();
            continue;
        }
        *left -= 1;
        let Some(m) = take(&mut at, 1).map(|i| body[i]) else {
            return bad(format!("the MessagePack ends early, at byte {at}"));
        };
        // (payload bytes to skip, values opened)
        let sized = |at: &mut usize, width: usize| -> Option<u64> {
            take(at, width).map(|i| uint(&body[i..i + width]))
        };
        let (skip, open): (u64, u64) = match m {
            0x00..=0x7f | 0xe0..=0xff | 0xc0 | 0xc2 | 0xc3 => (0, 0),
            0x80..=0x8f => (0, 2 * u64::from(m & 0x0f)),
            0x90..=0x9f => (0, u64::from(m & 0x0f)),
            0xa0..=0xbf => (u64::from(m & 0x1f), 0),
            0xcc | 0xd0 => (1, 0),
            0xcd | 0xd1 => (2, 0),
            0xce | 0xd2 | 0xca => (4, 0),
            0xcf | 0xd3 | 0xcb => (8, 0),
            0xd4 => (2, 0),
            0xd5 => (3, 0),
            0xd6 => (5, 0),
            0xd7 => (9, 0),
            0xd8 => (17, 0),
            0xc4 | 0xd9 => (sized(&mut at, 1).unwrap_or(u64::MAX), 0),
            0xc5 | 0xda => (sized(&mut at, 2).unwrap_or(u64::MAX), 0),
            0xc6 | 0xdb => (sized(&mut at, 4).unwrap_or(u64::MAX), 0),
            0xc7 => (sized(&mut at, 1).map_or(u64::MAX, |n| n + 1), 0),
            0xc8 => (sized(&mut at, 2).map_or(u64::MAX, |n| n + 1), 0),
            0xc9 => (sized(&mut at, 4).map_or(u64::MAX, |n| n + 1), 0),
            0xdc => (0, sized(&mut at, 2).unwrap_or(u64::MAX)),
            0xdd => (0, sized(&mut at, 4).unwrap_or(u64::MAX)),
            0xde => (0, sized(&mut at, 2).map_or(u64::MAX, |n| 2 * n)),
            0xdf => (0, sized(&mut at, 4).map_or(u64::MAX, |n| 2 * n)),
            0xc1 => return bad(format!("byte {}: 0xc1 is not a MessagePack marker", at - 1)),
        };
        if skip > 0
            && usize::try_from(skip)
                .ok()
                .and_then(|n| take(&mut at, n))
                .is_none()
        {
            return bad(format!("the MessagePack ends early, at byte {at}"));
        }
        if open > 0 {
            // Every value takes at least a byte: more than the rest of the body cannot be.
            if open > (body.len() - at) as u64 {
                return bad(format!(
                    "an array or map at byte {} claims more values than the body holds",
                    at
                ));
            }
            if pending.len() > MAX_DEPTH {
                return bad(format!("arrays and maps nest more than {MAX_DEPTH} deep"));
            }
            pending.push(open);
        }
    }
    if at != body.len() {
        return bad(format!(
            "{} bytes follow the message inside the frame",
            body.len() - at
        ));
    }
    Ok(())
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

    #[test]
    fn deep_nesting_is_refused_before_any_recursive_decoder_sees_it() {
        // {"type": "hello", "id": 1, "x": [[[…]]]} 100,000 levels deep.
        let mut body = vec![0x83];
        body.extend(rmp_serde::to_vec(&"type").unwrap());
        body.extend(rmp_serde::to_vec(&"hello").unwrap());
        body.extend(rmp_serde::to_vec(&"id").unwrap());
        body.push(0x01);
        body.extend(rmp_serde::to_vec(&"x").unwrap());
        body.extend(std::iter::repeat_n(0x91, 100_000));
        body.push(0xc0);
        let e = decode::<Msg>(&body, KNOWN).unwrap_err();
        assert_eq!(e.code(), ErrorCode::MalformedFrame, "{e}");
        assert!(e.to_string().contains("nest more than"), "{e}");
        // Trailing bytes and short bodies are malformed too; a good body passes.
        let good = rmp_serde::to_vec_named(&Msg::Bye { id: 7 }).unwrap();
        assert!(check_shape(&good).is_ok());
        let mut trailing = good.clone();
        trailing.push(0xc0);
        assert!(check_shape(&trailing).is_err());
        assert!(check_shape(&good[..good.len() - 1]).is_err());
        assert!(check_shape(&[0xdd, 0xff, 0xff, 0xff, 0xff]).is_err());
    }

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
