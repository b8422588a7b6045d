//! The frame decoder's fuzz checks, shared by the `frame_decoder` fuzz target and by
//! `transport/tests/fuzz_corpus.rs` (which includes this file with `#[path]`, so the
//! checks build and run on stable in CI, over the seed corpus).
//!
//! [`check`] feeds bytes through the path a server session uses: `frame::read_frame`
//! splits the stream into frames (a 4-byte big-endian length, then the body; an oversized
//! frame is skipped, an absurd length or a stream ending inside a frame ends the stream)
//! and each body is decoded with `frame::decode::<ClientMsg>(body, ClientMsg::TYPES)`.
//! It panics when one of these breaks:
//!
//! - `read_frame`, fed the bytes at once and fed one byte per read with a `Pending`
//!   before each read (as a network stream may), splits exactly as [`split`] says, at
//!   [`DEFAULT_MAX_FRAME`] and at [`SMALL_MAX_FRAME`] (so short inputs reach the
//!   oversized-frame paths); a body is never longer than the maximum;
//! - a body that decodes has a `head` with the same `type` and `id`, re-encodes with
//!   `frame::encode` into a frame whose length prefix is right and which decodes to an
//!   equal message, and encoding that again gives the same bytes;
//! - an error has a non-empty message and the documented code for its kind (the same on
//!   a second decode); a decoding error leaves the stream usable; and the `error` reply
//!   the server sends for it is a frame that decodes back to itself.

use std::future::Future;
use std::io;
use std::pin::{Pin, pin};
use std::task::{Context, Poll, Waker};

use omniroute_transport::frame::{self, DEFAULT_MAX_FRAME, DISCARD_LIMIT, ErrorCode, FrameError};
use omniroute_transport::proto::{ClientMsg, ServerMsg};
use tokio::io::{AsyncRead, ReadBuf};

/// A small maximum frame size, so short inputs also reach the oversized-frame paths.
pub const SMALL_MAX_FRAME: usize = 64;

/// The `type`s of the server's replies.
const SERVER_TYPES: &[&str] = &["welcome", "ok", "error"];

/// One step of reading a stream, comparable (a [`FrameError`] is not `PartialEq`).
#[derive(Debug, PartialEq, Eq)]
pub enum Step {
    /// A frame body, at most the maximum long.
    Body(Vec<u8>),
    /// An oversized frame: skipped (the stream goes on) or not (the stream ends).
    TooLarge {
        /// Its length.
        len: usize,
        /// The maximum.
        max: usize,
        /// Whether its bytes were skipped.
        skipped: bool,
    },
    /// The stream ended inside a frame (it ends the stream).
    Truncated {
        /// Bytes there were.
        got: usize,
        /// Bytes the length prefix (4) or the frame needed.
        wanted: usize,
    },
}

/// What [`check`] saw, reading at [`DEFAULT_MAX_FRAME`] as the server does by default.
#[derive(Debug)]
pub struct Summary {
    /// The messages that decoded, in order.
    pub messages: Vec<ClientMsg>,
    /// The code of each frame that could not be read or decoded, in order.
    pub errors: Vec<ErrorCode>,
    /// Whether the stream ended between frames (not on an error that ends it).
    pub clean_end: bool,
}

/// Runs `data`, as the bytes of one client stream, through the checks in the module
/// documentation; panics if one fails.
pub fn check(data: &[u8]) -> Summary {
    for max in [DEFAULT_MAX_FRAME, SMALL_MAX_FRAME] {
        let expected = split(data, max);
        assert_eq!(
            read_all(data, max),
            expected,
            "read_frame, at once, max {max}"
        );
        assert_eq!(
            read_all(Trickle::new(data), max),
            expected,
            "read_frame, a byte per read, max {max}"
        );
    }
    let mut summary = Summary {
        messages: Vec::new(),
        errors: Vec::new(),
        clean_end: true,
    };
    for step in split(data, DEFAULT_MAX_FRAME) {
        match step {
            Step::Body(body) => match check_body(&body) {
                Ok(msg) => summary.messages.push(msg),
                Err(code) => summary.errors.push(code),
            },
            Step::TooLarge { skipped, .. } => {
                summary.errors.push(ErrorCode::FrameTooLarge);
                summary.clean_end = skipped;
            }
            Step::Truncated { .. } => {
                summary.errors.push(ErrorCode::Truncated);
                summary.clean_end = false;
            }
        }
    }
    summary
}

/// How a stream of `data` must split into frames at `max` (what `read_frame` is checked
/// against): a 4-byte big-endian length, then the body; a frame longer than `max` is
/// skipped unless it is also longer than [`DISCARD_LIMIT`], which ends the stream, as
/// does a stream ending inside a frame.
pub fn split(data: &[u8], max: usize) -> Vec<Step> {
    let mut steps = Vec::new();
    let mut rest = data;
    while !rest.is_empty() {
        let Some((len_bytes, after)) = rest.split_first_chunk::<4>() else {
            steps.push(Step::Truncated {
                got: rest.len(),
                wanted: 4,
            });
            break;
        };
        let len = u32::from_be_bytes(*len_bytes) as usize;
        if len > max && len > DISCARD_LIMIT {
            steps.push(Step::TooLarge {
                len,
                max,
                skipped: false,
            });
            break;
        }
        if after.len() < len {
            steps.push(Step::Truncated {
                got: after.len(),
                wanted: len,
            });
            break;
        }
        let (body, next) = after.split_at(len);
        steps.push(if len > max {
            Step::TooLarge {
                len,
                max,
                skipped: true,
            }
        } else {
            Step::Body(body.to_vec())
        });
        rest = next;
    }
    steps
}

/// Reads frames with `frame::read_frame` as the server's session loop does: on until the
/// stream ends or an error leaves it unusable.
fn read_all<R: AsyncRead + Unpin>(mut reader: R, max: usize) -> Vec<Step> {
    let mut steps = Vec::new();
    loop {
        match block_on(frame::read_frame(&mut reader, max)) {
            Ok(None) => return steps,
            Ok(Some(body)) => {
                assert!(body.len() <= max, "a body of {} > {max}", body.len());
                steps.push(Step::Body(body));
            }
            Err(e) => {
                check_error(&e);
                check_reply(None, &e);
                let usable = e.stream_usable();
                let step = match e {
                    FrameError::TooLarge {
                        len,
                        max: m,
                        skipped,
                    } => {
                        assert_eq!(m, max, "{e}");
                        assert!(len > max, "{e}");
                        assert_eq!(usable, skipped, "{e}");
                        Step::TooLarge { len, max, skipped }
                    }
                    FrameError::Truncated { got, wanted } => {
                        assert!(got < wanted, "{e}");
                        assert!(!usable, "{e}");
                        Step::Truncated { got, wanted }
                    }
                    FrameError::Io(e) => panic!("a reader that cannot fail failed: {e}"),
                    other => panic!("read_frame returned a decoding error: {other}"),
                };
                steps.push(step);
                if !usable {
                    return steps;
                }
            }
        }
    }
}

/// Decodes one body as the server does and checks the result; the message, or the
/// error's code.
fn check_body(body: &[u8]) -> Result<ClientMsg, ErrorCode> {
    let head = frame::head(body);
    match frame::decode::<ClientMsg>(body, ClientMsg::TYPES) {
        Ok(msg) => {
            assert!(ClientMsg::TYPES.contains(&msg.kind()), "{msg:?}");
            let (kind, id) = head.unwrap_or_else(|e| panic!("{msg:?} decoded, its head not: {e}"));
            assert_eq!(kind, msg.kind(), "head and message disagree on the type");
            assert_eq!(id, Some(msg.id()), "head and message disagree on the id");
            let bytes = frame::encode(&msg);
            let again = frame::decode::<ClientMsg>(body_of(&bytes), ClientMsg::TYPES)
                .unwrap_or_else(|e| panic!("{msg:?}, re-encoded, does not decode: {e}"));
            assert_eq!(again, msg, "a decoded message does not survive re-encoding");
            assert_eq!(frame::encode(&again), bytes, "encoding is not stable");
            Ok(msg)
        }
        Err(e) => {
            check_error(&e);
            assert!(e.stream_usable(), "a decoding error ends the stream: {e}");
            let head_kind = head.as_ref().ok().map(|(kind, _)| kind.as_str());
            match &e {
                FrameError::Malformed(_) => assert!(head.is_err(), "{e}"),
                FrameError::UnknownType(kind) => {
                    assert!(!ClientMsg::TYPES.contains(&kind.as_str()), "{e}");
                    assert_eq!(head_kind, Some(kind.as_str()), "{e}");
                }
                FrameError::BadField { kind, .. } => {
                    assert!(ClientMsg::TYPES.contains(&kind.as_str()), "{e}");
                    assert_eq!(head_kind, Some(kind.as_str()), "{e}");
                }
                other => panic!("decode returned a reading error: {other}"),
            }
            let Err(again) = frame::decode::<ClientMsg>(body, ClientMsg::TYPES) else {
                panic!("a second decode of a bad frame succeeded");
            };
            assert_eq!(again.code(), e.code(), "the code is not stable");
            assert_eq!(
                again.to_string(),
                e.to_string(),
                "the message is not stable"
            );
            check_reply(head.ok().and_then(|(_, id)| id), &e);
            Err(e.code())
        }
    }
}

/// An error has a non-empty message and the documented code for its kind.
fn check_error(e: &FrameError) {
    assert!(!e.to_string().is_empty(), "an empty message for {e:?}");
    let code = match e {
        FrameError::TooLarge { .. } => ErrorCode::FrameTooLarge,
        FrameError::Truncated { .. } | FrameError::Io(_) => ErrorCode::Truncated,
        FrameError::Malformed(_) => ErrorCode::MalformedFrame,
        FrameError::UnknownType(_) => ErrorCode::UnknownType,
        FrameError::BadField { .. } => ErrorCode::BadField,
    };
    assert_eq!(e.code(), code, "{e:?}");
    // The wire names of docs/PROTOCOL.md.
    let wire = match code {
        ErrorCode::MalformedFrame => "malformed_frame",
        ErrorCode::FrameTooLarge => "frame_too_large",
        ErrorCode::UnknownType => "unknown_type",
        ErrorCode::BadField => "bad_field",
        ErrorCode::Truncated => "truncated",
    };
    assert_eq!(code.as_str(), wire);
}

/// The `error` reply the server sends for `e` is a frame that decodes back to itself.
fn check_reply(id: Option<u64>, e: &FrameError) {
    let reply = ServerMsg::Error {
        id,
        code: e.code().as_str().to_string(),
        message: e.to_string(),
    };
    let bytes = frame::encode(&reply);
    let back = frame::decode::<ServerMsg>(body_of(&bytes), SERVER_TYPES)
        .unwrap_or_else(|e| panic!("the error reply {reply:?} does not decode: {e}"));
    assert_eq!(back, reply);
}

/// The body of one encoded frame, checking its length prefix.
fn body_of(bytes: &[u8]) -> &[u8] {
    let (len, body) = bytes
        .split_first_chunk::<4>()
        .expect("a frame starts with its length");
    assert_eq!(
        u32::from_be_bytes(*len) as usize,
        body.len(),
        "length prefix"
    );
    body
}

/// Runs a future whose reader never waits for anything: polls until it is ready.
fn block_on<F: Future>(future: F) -> F::Output {
    let mut future = pin!(future);
    let mut cx = Context::from_waker(Waker::noop());
    loop {
        if let Poll::Ready(out) = future.as_mut().poll(&mut cx) {
            return out;
        }
    }
}

/// A reader that is `Pending` before each read and then hands out one byte, so
/// `read_frame` must assemble lengths and bodies from pieces and resume after waiting.
struct Trickle<'a> {
    rest: &'a [u8],
    pending: bool,
}

impl<'a> Trickle<'a> {
    fn new(data: &'a [u8]) -> Self {
        Trickle {
            rest: data,
            pending: false,
        }
    }
}

impl AsyncRead for Trickle<'_> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = &mut *self;
        this.pending = !this.pending;
        if this.pending {
            cx.waker().wake_by_ref();
            return Poll::Pending;
        }
        if buf.remaining() > 0
            && let Some((first, rest)) = this.rest.split_first()
        {
            buf.put_slice(&[*first]);
            this.rest = rest;
        }
        Poll::Ready(Ok(()))
    }
}
