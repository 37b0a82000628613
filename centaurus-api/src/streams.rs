//! Interactive pod subresources as stock kubectl and the official clients speak them:
//! `exec` and `attach` over WebSockets in Kubernetes' remote command protocol
//! (`v5.channel.k8s.io`, and `v4` without close frames), and `portforward` as SPDY/3.1
//! tunnelled in WebSocket messages (`SPDY/3.1+portforward.k8s.io`) or over a plain
//! `Upgrade: SPDY/3.1` (see [`crate::spdy`]).
//!
//! A [`Session`] is one exec or attach: frames in both directions, each a channel byte and
//! its data, exactly as they travel in the protocol. The API server relays a client's
//! frames to the pod's node agent in the same form (a WebSocket to the agent's endpoint,
//! or a call in `centaurus up`), so no hop re-encodes them. A port forward is a byte
//! stream ([`Duplex`]) to a port in the pod's network namespace.

use axum::extract::ws::{Message, WebSocket};
use bytes::Bytes;
use futures::{SinkExt as _, StreamExt as _};
use tokio::io::{AsyncRead, AsyncReadExt as _, AsyncWrite, AsyncWriteExt as _};
use tokio::sync::mpsc;

use crate::error::{ApiError, ApiResult};

/// The remote command protocol with close frames (kubectl 1.30 and later).
pub const V5: &str = "v5.channel.k8s.io";
/// The remote command protocol without close frames (the Python client, older kubectl).
pub const V4: &str = "v4.channel.k8s.io";
/// Port forwarding: SPDY/3.1 frames carried in WebSocket binary messages.
pub const PORT_FORWARD_TUNNEL: &str = "SPDY/3.1+portforward.k8s.io";

/// Frames queued per direction before a fast side waits for a slow one.
const DEPTH: usize = 64;

pub use centaurus_core::remote::{
    Conn, Duplex, Session, StreamRequest, channel, frame, outcome, terminal_size,
};

/// Parses the query of `pods/{name}/exec` (`attach` when `attach`): `command`
/// (repeated), `container`, `stdin`, `stdout`, `stderr`, `tty`.
pub fn parse_request(query: Option<&str>, attach: bool) -> ApiResult<StreamRequest> {
    let mut r = StreamRequest {
        stdout: true,
        stderr: true,
        ..StreamRequest::default()
    };
    let flag = |v: &str| matches!(v, "true" | "1");
    for (k, v) in form_urlencoded::parse(query.unwrap_or("").as_bytes()) {
        match k.as_ref() {
            "command" => r.command.push(v.into_owned()),
            "container" if !v.is_empty() => r.container = Some(v.into_owned()),
            "stdin" => r.stdin = flag(&v),
            "stdout" => r.stdout = flag(&v),
            "stderr" => r.stderr = flag(&v),
            "tty" => r.tty = flag(&v),
            _ => {}
        }
    }
    if attach {
        r.command.clear();
    } else if r.command.is_empty() {
        return Err(ApiError::bad_request(
            "exec needs a command: add command=... to the query",
        ));
    }
    if !(r.stdin || r.stdout || r.stderr) {
        return Err(ApiError::bad_request(
            "at least one of stdin, stdout or stderr must be true",
        ));
    }
    Ok(r)
}

/// The request as a query, for the node agent.
pub fn request_query(r: &StreamRequest) -> String {
    let mut q = form_urlencoded::Serializer::new(String::new());
    for c in &r.command {
        q.append_pair("command", c);
    }
    if let Some(c) = &r.container {
        q.append_pair("container", c);
    }
    for (k, v) in [
        ("stdin", r.stdin),
        ("stdout", r.stdout),
        ("stderr", r.stderr),
        ("tty", r.tty),
    ] {
        q.append_pair(k, if v { "true" } else { "false" });
    }
    q.finish()
}

/// A WebSocket message of either library: axum's (served) or tungstenite's (client).
pub trait WsMessage: Sized + Send + 'static {
    /// A binary message.
    fn binary(data: Bytes) -> Self;
    /// A close message.
    fn close() -> Self;
    /// What the message carries.
    fn data(self) -> Incoming;
}

/// What a WebSocket message carries for a relay.
pub enum Incoming {
    /// A binary message's data.
    Data(Bytes),
    /// The peer closes.
    Close,
    /// Anything else (text, ping, pong).
    Other,
}

impl WsMessage for Message {
    fn binary(data: Bytes) -> Self {
        Message::Binary(data)
    }
    fn close() -> Self {
        // A normal closure: clients take it as the end of every stream (1005, no code,
        // is an error to kubectl).
        Message::Close(Some(axum::extract::ws::CloseFrame {
            code: axum::extract::ws::close_code::NORMAL,
            reason: "".into(),
        }))
    }
    fn data(self) -> Incoming {
        match self {
            Message::Binary(b) => Incoming::Data(b),
            Message::Close(_) => Incoming::Close,
            _ => Incoming::Other,
        }
    }
}

impl WsMessage for tokio_tungstenite::tungstenite::Message {
    fn binary(data: Bytes) -> Self {
        Self::Binary(data)
    }
    fn close() -> Self {
        use tokio_tungstenite::tungstenite::protocol::{CloseFrame, frame::coding::CloseCode};
        Self::Close(Some(CloseFrame {
            code: CloseCode::Normal,
            reason: "".into(),
        }))
    }
    fn data(self) -> Incoming {
        match self {
            Self::Binary(b) => Incoming::Data(b),
            Self::Close(_) => Incoming::Close,
            _ => Incoming::Other,
        }
    }
}

/// Relays frames between a WebSocket and a pair of queues: `to_ws` out as binary
/// messages (a close after the last), binary messages in to `from_ws` when `keep` says
/// so. Ends when `to_ws` ends or the peer is gone; `from_ws` is dropped as soon as the
/// peer stops sending, while `to_ws` may still flow.
async fn relay<W, M, E>(
    ws: W,
    mut to_ws: mpsc::Receiver<Bytes>,
    from_ws: mpsc::Sender<Bytes>,
    keep: impl Fn(&Bytes) -> bool + Send,
) where
    W: futures::Stream<Item = Result<M, E>> + futures::Sink<M> + Send,
    E: Send,
    M: WsMessage,
{
    let (mut sink, mut stream) = ws.split();
    let incoming = async move {
        while let Some(Ok(msg)) = stream.next().await {
            let more = match msg.data() {
                Incoming::Data(b) if !b.is_empty() && keep(&b) => from_ws.send(b).await.is_ok(),
                Incoming::Close => false,
                _ => true,
            };
            if !more {
                break;
            }
        }
        drop(from_ws);
        futures::future::pending::<()>().await;
    };
    let outgoing = async move {
        while let Some(f) = to_ws.recv().await {
            if sink.send(M::binary(f)).await.is_err() {
                return;
            }
        }
        let _ = sink.send(M::close()).await;
    };
    tokio::select! {
        () = outgoing => {}
        () = incoming => {}
    }
}

/// Relays a WebSocket and a byte stream, each way until its side ends.
async fn relay_bytes<W, M, E>(ws: W, conn: impl Duplex)
where
    W: futures::Stream<Item = Result<M, E>> + futures::Sink<M> + Send,
    E: Send,
    M: WsMessage,
{
    let (mut sink, mut stream) = ws.split();
    let (mut rd, mut wr) = tokio::io::split(conn);
    let incoming = async move {
        while let Some(Ok(msg)) = stream.next().await {
            let more = match msg.data() {
                Incoming::Data(b) => wr.write_all(&b).await.is_ok(),
                Incoming::Close => false,
                Incoming::Other => true,
            };
            if !more {
                break;
            }
        }
        let _ = wr.shutdown().await;
    };
    let outgoing = async move {
        let mut buf = vec![0u8; 32 * 1024];
        loop {
            match rd.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => {
                    if sink
                        .send(M::binary(Bytes::copy_from_slice(&buf[..n])))
                        .await
                        .is_err()
                    {
                        return;
                    }
                }
            }
        }
        let _ = sink.send(M::close()).await;
    };
    tokio::join!(incoming, outgoing);
}

/// Serves a session to a client's WebSocket until the session ends (its outcome is the
/// last message) or the client goes away. Only `v5` clients may close standard input.
pub async fn serve_session(socket: WebSocket, session: Session, v5: bool) {
    relay(socket, session.output, session.input, move |b| {
        v5 || b[0] != channel::CLOSE
    })
    .await;
}

/// Serves a byte stream to a WebSocket's binary messages.
pub async fn serve_bytes(socket: WebSocket, conn: Conn) {
    relay_bytes(socket, conn).await;
}

/// The session carried by a WebSocket client connection (an agent's endpoint, seen from
/// the API server); a session the agent leaves without an outcome ends with a failure.
pub fn session_over<S>(ws: tokio_tungstenite::WebSocketStream<S>) -> Session
where
    S: AsyncRead + AsyncWrite + Send + Unpin + 'static,
{
    let (session, input, output) = Session::pair();
    let (relayed, mut from_agent) = mpsc::channel::<Bytes>(DEPTH);
    tokio::spawn(relay(ws, input, relayed, |_| true));
    tokio::spawn(async move {
        let mut ended = false;
        while let Some(f) = from_agent.recv().await {
            ended = f[0] == channel::ERROR;
            if output.send(f).await.is_err() {
                return;
            }
        }
        if !ended {
            let _ = output
                .send(outcome(Err("the node agent closed the session")))
                .await;
        }
    });
    session
}

/// The byte stream carried by a WebSocket's binary messages, as a [`Conn`].
pub fn bytes_of<W, M, E>(ws: W) -> Conn
where
    W: futures::Stream<Item = Result<M, E>> + futures::Sink<M> + Send + 'static,
    E: Send + 'static,
    M: WsMessage,
{
    let (ours, theirs) = tokio::io::duplex(64 * 1024);
    tokio::spawn(relay_bytes(ws, theirs));
    Box::pin(ours)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_parse_as_kubectl_sends_them() {
        let r = parse_request(
            Some("command=sh&command=-c&command=echo+hi&container=c&stdin=true&stdout=true&stderr=true&tty=false"),
            false,
        )
        .unwrap();
        assert_eq!(r.command, ["sh", "-c", "echo hi"]);
        assert_eq!(r.container.as_deref(), Some("c"));
        assert!(r.stdin && r.stdout && r.stderr && !r.tty);
        assert_eq!(parse_request(Some(&request_query(&r)), false).unwrap(), r);
        assert_eq!(
            parse_request(Some("stdout=true"), false).unwrap_err().code,
            400
        );
        let attach = parse_request(Some("command=x&stdin=true&tty=true"), true).unwrap();
        assert!(attach.command.is_empty() && attach.tty);
        let none = parse_request(Some("command=x&stdout=false&stderr=false"), false);
        assert_eq!(none.unwrap_err().code, 400);
    }

    #[test]
    fn outcomes_are_statuses_kubectl_reads() {
        let ok = outcome(Ok(0));
        assert_eq!(ok[0], channel::ERROR);
        let v: serde_json::Value = serde_json::from_slice(&ok[1..]).unwrap();
        assert_eq!(v["status"], "Success");
        let v: serde_json::Value = serde_json::from_slice(&outcome(Ok(3))[1..]).unwrap();
        assert_eq!(v["reason"], "NonZeroExitCode");
        assert_eq!(v["details"]["causes"][0]["message"], "3");
        assert_eq!(
            terminal_size(br#"{"Width":120,"Height":40}"#),
            Some((120, 40))
        );
        assert_eq!(terminal_size(b"nonsense"), None);
    }
}
