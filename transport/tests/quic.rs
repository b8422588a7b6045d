//! Real QUIC on loopback: the self-signed identity is generated once and kept, a client
//! that trusts it connects with ALPN `omniroute/1` and exchanges frames on a
//! bidirectional stream; a client that does not trust it, or speaks another protocol,
//! is refused.

use omniroute_transport::frame::{self, DEFAULT_MAX_FRAME, ErrorCode, FrameError};
use omniroute_transport::tls::{self, SELF_SIGNED_NAME, ServerIdentity};
use serde::{Deserialize, Serialize};
use std::net::SocketAddr;

#[derive(Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
enum Msg {
    Ping {
        id: u64,
        text: String,
    },
    Pong {
        id: u64,
        text: String,
    },
    Error {
        id: Option<u64>,
        code: ErrorCode,
        message: String,
    },
}

fn loopback() -> SocketAddr {
    "127.0.0.1:0".parse().unwrap()
}

/// Answers each `ping` with a `pong`, and each bad frame with an `error`, until the
/// stream ends or cannot go on.
async fn serve_one(endpoint: quinn::Endpoint) {
    let conn = endpoint.accept().await.unwrap().await.unwrap();
    let (mut send, mut recv) = conn.accept_bi().await.unwrap();
    loop {
        let reply = match frame::read_frame(&mut recv, 1024).await {
            Ok(None) => break,
            Ok(Some(body)) => match frame::decode::<Msg>(&body, &["ping"]) {
                Ok(Msg::Ping { id, text }) => Msg::Pong { id, text },
                Ok(_) => unreachable!(),
                Err(e) => Msg::Error {
                    id: frame::head(&body).ok().and_then(|(_, id)| id),
                    code: e.code(),
                    message: e.to_string(),
                },
            },
            Err(e) => {
                let usable = e.stream_usable();
                send.write_all(&frame::encode(&Msg::Error {
                    id: None,
                    code: e.code(),
                    message: e.to_string(),
                }))
                .await
                .unwrap();
                if !usable {
                    break;
                }
                continue;
            }
        };
        send.write_all(&frame::encode(&reply)).await.unwrap();
    }
    send.finish().unwrap();
    // Keep the connection until the client has read everything.
    conn.closed().await;
}

#[tokio::test]
async fn frames_cross_a_real_quic_connection_and_bad_ones_get_error_frames() {
    let dir = tempfile::tempdir().unwrap();
    let identity = ServerIdentity::self_signed(dir.path()).unwrap();
    assert!(identity.generated);
    assert_eq!(identity.fingerprint.len(), 32 * 3 - 1);
    // The second start keeps it.
    let again = ServerIdentity::self_signed(dir.path()).unwrap();
    assert!(!again.generated);
    assert_eq!(again.fingerprint, identity.fingerprint);

    let server = identity.server(loopback()).unwrap();
    let addr = server.local_addr().unwrap();
    let served = tokio::spawn(serve_one(server));

    let client = tls::client(loopback(), &identity.chain).unwrap();
    let conn = client
        .connect(addr, SELF_SIGNED_NAME)
        .unwrap()
        .await
        .unwrap();
    assert_eq!(
        conn.handshake_data()
            .unwrap()
            .downcast::<quinn::crypto::rustls::HandshakeData>()
            .unwrap()
            .protocol
            .unwrap(),
        tls::ALPN
    );
    let (mut send, mut recv) = conn.open_bi().await.unwrap();
    let mut out = frame::encode(&Msg::Ping {
        id: 1,
        text: "hi".into(),
    });
    out.extend_from_slice(&[0, 0, 0, 1, 0xc1]); // not MessagePack
    out.extend_from_slice(&frame::encode(&Msg::Pong {
        id: 2,
        text: "wrong way".into(),
    })); // a type the server does not take
    out.extend_from_slice(&(5000u32).to_be_bytes());
    out.extend_from_slice(&[0u8; 5000]); // over the server's 1,024
    out.extend_from_slice(&frame::encode(&Msg::Ping {
        id: 3,
        text: "still here".into(),
    }));
    send.write_all(&out).await.unwrap();
    send.finish().unwrap();
    let mut replies = Vec::new();
    while let Some(body) = frame::read_frame(&mut recv, DEFAULT_MAX_FRAME)
        .await
        .unwrap()
    {
        replies.push(frame::decode::<Msg>(&body, &["pong", "error"]).unwrap());
    }
    let codes: Vec<_> = replies
        .iter()
        .map(|m| match m {
            Msg::Error { code, .. } => Some(*code),
            _ => None,
        })
        .collect();
    assert_eq!(
        codes,
        vec![
            None,
            Some(ErrorCode::MalformedFrame),
            Some(ErrorCode::UnknownType),
            Some(ErrorCode::FrameTooLarge),
            None
        ]
    );
    assert_eq!(
        replies[2],
        Msg::Error {
            id: Some(2),
            code: ErrorCode::UnknownType,
            message: "unknown message type `pong`".into()
        }
    );
    assert_eq!(
        replies[4],
        Msg::Pong {
            id: 3,
            text: "still here".into()
        }
    );
    conn.close(0u32.into(), b"done");
    served.await.unwrap();
}

#[tokio::test]
async fn a_client_that_does_not_trust_the_certificate_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let identity = ServerIdentity::self_signed(dir.path()).unwrap();
    let server = identity.server(loopback()).unwrap();
    let addr = server.local_addr().unwrap();
    tokio::spawn(async move {
        if let Some(incoming) = server.accept().await {
            let _ = incoming.await;
        }
    });
    let other = ServerIdentity::self_signed(tempfile::tempdir().unwrap().path()).unwrap();
    let client = tls::client(loopback(), &other.chain).unwrap();
    let refused = client.connect(addr, SELF_SIGNED_NAME).unwrap().await;
    assert!(refused.is_err(), "connected to an untrusted server");
}

#[test]
fn a_missing_or_bad_certificate_file_is_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    let cert = dir.path().join("cert.pem");
    std::fs::write(&cert, "not a certificate").unwrap();
    let err = ServerIdentity::load(&cert, &dir.path().join("key.pem"))
        .err()
        .unwrap();
    assert!(err.to_string().contains("cert.pem"), "{err}");
    let _ = FrameError::Malformed(String::new()); // the error type is public
}
