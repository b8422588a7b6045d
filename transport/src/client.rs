//! The typed async Rust client: connect, `hello`, requests answered by `id`, and the
//! stream of pushes.

use crate::frame;
use crate::proto::{ClientMsg, Role, ServerMsg, ServerPush};
use crate::tls;
use omniroute_actors::conversation::ConversationView;
use omniroute_actors::engine::InteractionId;
use omniroute_actors::{InboundOutcome, Push};
use rustls::pki_types::CertificateDer;
use serde::de::DeserializeOwned;
use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use tokio::sync::{Mutex, mpsc, oneshot};

/// Why a request failed.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// The server refused it: its stable code and message.
    #[error("{code}: {message}")]
    Refused {
        /// Stable code (docs/PROTOCOL.md).
        code: String,
        /// What was wrong.
        message: String,
    },
    /// The connection failed or closed.
    #[error("connection: {0}")]
    Connection(String),
    /// The reply did not have the expected shape.
    #[error("unexpected reply: {0}")]
    Unexpected(String),
}

type Pending = Arc<std::sync::Mutex<HashMap<u64, oneshot::Sender<ServerMsg>>>>;

/// One session with the server.
pub struct Client {
    _endpoint: quinn::Endpoint,
    connection: quinn::Connection,
    send: Mutex<quinn::SendStream>,
    pending: Pending,
    next_id: AtomicU64,
    pushes: Option<mpsc::UnboundedReceiver<Push>>,
    server_pushes: Option<mpsc::UnboundedReceiver<ServerPush>>,
    /// The role the server granted.
    pub role: Role,
    /// The agent, for an agent session.
    pub agent: Option<String>,
}

impl Client {
    /// Connects to `addr` (trusting `trust`, as `server_name`) and says hello.
    pub async fn connect(
        addr: SocketAddr,
        server_name: &str,
        trust: &[CertificateDer<'static>],
        token: &str,
    ) -> Result<Client, ClientError> {
        let conn_err = |e: &dyn std::fmt::Display| ClientError::Connection(e.to_string());
        // Any local address: the route to the server picks the interface.
        let bind: SocketAddr = if addr.is_ipv6() {
            "[::]:0".parse().expect("address")
        } else {
            "0.0.0.0:0".parse().expect("address")
        };
        let endpoint = tls::client(bind, trust).map_err(|e| conn_err(&e))?;
        let connection = endpoint
            .connect(addr, server_name)
            .map_err(|e| conn_err(&e))?
            .await
            .map_err(|e| conn_err(&e))?;
        let (send, mut recv) = connection.open_bi().await.map_err(|e| conn_err(&e))?;
        let pending: Pending = Arc::default();
        let (push_tx, push_rx) = mpsc::unbounded_channel();
        let (server_push_tx, server_push_rx) = mpsc::unbounded_channel();
        let reader_pending = pending.clone();
        tokio::spawn(async move {
            // The server's replies are not limited by the frame limit it applies to
            // requests (a whole configuration or a long history can be large).
            while let Ok(Some(body)) = frame::read_frame(&mut recv, frame::DISCARD_LIMIT).await {
                let Ok((kind, id)) = frame::head(&body) else {
                    continue;
                };
                if matches!(kind.as_str(), "welcome" | "ok" | "error") {
                    let Ok(msg) = rmp_serde::from_slice::<ServerMsg>(&body) else {
                        continue;
                    };
                    let waiter = id.and_then(|id| reader_pending.lock().expect("lock").remove(&id));
                    if let Some(w) = waiter {
                        let _ = w.send(msg);
                    }
                } else if matches!(
                    kind.as_str(),
                    "stats" | "event" | "events_lagged" | "outbound" | "conversation_ended"
                ) {
                    if let Ok(push) = rmp_serde::from_slice::<ServerPush>(&body) {
                        let _ = server_push_tx.send(push);
                    }
                } else if let Ok(push) = rmp_serde::from_slice::<Push>(&body) {
                    let _ = push_tx.send(push);
                }
            }
            // The session ended: fail everyone still waiting.
            reader_pending.lock().expect("lock").clear();
        });
        let mut client = Client {
            _endpoint: endpoint,
            connection,
            send: Mutex::new(send),
            pending,
            next_id: AtomicU64::new(1),
            pushes: Some(push_rx),
            server_pushes: Some(server_push_rx),
            role: Role::Channel,
            agent: None,
        };
        let id = client.next_id.fetch_add(1, Ordering::Relaxed);
        match client
            .exchange(ClientMsg::Hello {
                id,
                token: token.to_string(),
            })
            .await?
        {
            ServerMsg::Welcome { role, agent, .. } => {
                client.role = role;
                client.agent = agent;
                Ok(client)
            }
            other => Err(ClientError::Unexpected(format!("{other:?}"))),
        }
    }

    /// A fresh request id.
    pub fn id(&self) -> u64 {
        self.next_id.fetch_add(1, Ordering::Relaxed)
    }

    async fn exchange(&self, msg: ClientMsg) -> Result<ServerMsg, ClientError> {
        let (tx, rx) = oneshot::channel();
        self.pending.lock().expect("lock").insert(msg.id(), tx);
        self.send
            .lock()
            .await
            .write_all(&frame::encode(&msg))
            .await
            .map_err(|e| ClientError::Connection(e.to_string()))?;
        match rx.await {
            Ok(ServerMsg::Error { code, message, .. }) => {
                Err(ClientError::Refused { code, message })
            }
            Ok(reply) => Ok(reply),
            Err(_) => Err(ClientError::Connection(
                match self.connection.close_reason() {
                    // The server closed the connection: say why (`busy: …` past its limit).
                    Some(quinn::ConnectionError::ApplicationClosed(close)) => format!(
                        "the server closed the connection (code {}): {}",
                        close.error_code,
                        String::from_utf8_lossy(&close.reason)
                    ),
                    Some(other) => format!("the connection ended: {other}"),
                    None => "the session ended".into(),
                },
            )),
        }
    }

    /// Sends a request; its result's data, if any.
    pub async fn request(&self, msg: ClientMsg) -> Result<Option<rmpv::Value>, ClientError> {
        match self.exchange(msg).await? {
            ServerMsg::Ok { data, .. } => Ok(data),
            other => Err(ClientError::Unexpected(format!("{other:?}"))),
        }
    }

    /// Sends a request and decodes its result.
    pub async fn request_as<T: DeserializeOwned>(&self, msg: ClientMsg) -> Result<T, ClientError> {
        let data = self
            .request(msg)
            .await?
            .ok_or_else(|| ClientError::Unexpected("no data in the reply".into()))?;
        let bytes = {
            let mut b = Vec::new();
            rmpv::encode::write_value(&mut b, &data).expect("into a Vec");
            b
        };
        rmp_serde::from_slice(&bytes).map_err(|e| ClientError::Unexpected(e.to_string()))
    }

    /// Agent: sets its own presence.
    pub async fn set_presence(
        &self,
        presence: crate::proto::PresenceArg,
    ) -> Result<(), ClientError> {
        self.request(ClientMsg::SetPresence {
            id: self.id(),
            presence,
            reason: None,
            agent: None,
        })
        .await
        .map(|_| ())
    }

    /// Agent: accepts an offer.
    pub async fn accept(&self, interaction: InteractionId) -> Result<(), ClientError> {
        self.request(ClientMsg::Accept {
            id: self.id(),
            interaction,
        })
        .await
        .map(|_| ())
    }

    /// Agent: a message to the customer, on the channel they last used.
    pub async fn send_message(
        &self,
        interaction: InteractionId,
        text: &str,
    ) -> Result<(), ClientError> {
        self.request(ClientMsg::SendMessage {
            id: self.id(),
            interaction,
            text: text.to_string(),
            channel: None,
        })
        .await
        .map(|_| ())
    }

    /// Channel: a customer's message (see `inbound` in docs/PROTOCOL.md).
    pub async fn inbound(
        &self,
        channel: &str,
        customer: &str,
        text: &str,
        queue: Option<&str>,
    ) -> Result<InboundOutcome, ClientError> {
        self.request_as(ClientMsg::Inbound {
            id: self.id(),
            channel: channel.to_string(),
            customer: customer.to_string(),
            text: text.to_string(),
            attributes: Default::default(),
            queue: queue.map(String::from),
            virtual_agent: None,
            interaction: None,
        })
        .await
    }

    /// A conversation with its transcript.
    pub async fn conversation(
        &self,
        interaction: InteractionId,
    ) -> Result<ConversationView, ClientError> {
        self.request_as(ClientMsg::Conversation {
            id: self.id(),
            interaction,
        })
        .await
    }

    /// Sends raw bytes on the session (tests of bad input).
    pub async fn send_raw(&self, bytes: &[u8]) -> Result<(), ClientError> {
        self.send
            .lock()
            .await
            .write_all(bytes)
            .await
            .map_err(|e| ClientError::Connection(e.to_string()))
    }

    /// The pushes (offers, messages, presence…), once.
    pub fn pushes(&mut self) -> Option<mpsc::UnboundedReceiver<Push>> {
        self.pushes.take()
    }

    /// The supervisor pushes (`stats`, `event`, `events_lagged`) once subscribed (the
    /// receiver, once: later calls give `None`).
    pub fn server_pushes(&mut self) -> Option<mpsc::UnboundedReceiver<ServerPush>> {
        self.server_pushes.take()
    }

    /// Closes the connection.
    pub fn close(&self) {
        self.connection.close(0u32.into(), b"bye");
    }
}
