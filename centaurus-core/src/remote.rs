//! Kubernetes' remote command protocol (`exec`, `attach`), as frames: what a client asks
//! of a workload ([`StreamRequest`]), and one session with it ([`Session`]), each message
//! a channel byte and its data. The API server relays sessions between clients and node
//! agents; runtimes produce them. Port forwards are byte streams ([`Conn`]).

use std::pin::Pin;

use bytes::Bytes;
use serde::{Deserialize, Serialize};
use serde_json::json;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::sync::mpsc;

/// Channels of the remote command protocol: the first byte of every message.
pub mod channel {
    /// Client to workload: standard input.
    pub const STDIN: u8 = 0;
    /// Workload to client: standard output.
    pub const STDOUT: u8 = 1;
    /// Workload to client: standard error.
    pub const STDERR: u8 = 2;
    /// Workload to client, once at the end: the outcome, a `Status` as JSON.
    pub const ERROR: u8 = 3;
    /// Client to workload: the terminal's size, `{"Width": w, "Height": h}`.
    pub const RESIZE: u8 = 4;
    /// `v5`, client to workload: the client closed the stream named by the next byte.
    pub const CLOSE: u8 = 255;
}

/// One message: a channel byte, then data.
pub type Frame = Bytes;

/// Frames queued per direction before a fast side waits for a slow one.
const DEPTH: usize = 64;

/// What an `exec` or `attach` asks for.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct StreamRequest {
    /// The container (may be omitted for a pod with one workload).
    pub container: Option<String>,
    /// The command to run; empty for an attach.
    pub command: Vec<String>,
    /// The client sends standard input.
    pub stdin: bool,
    /// The client wants standard output.
    pub stdout: bool,
    /// The client wants standard error (merged into output with a terminal).
    pub stderr: bool,
    /// Run with a terminal.
    pub tty: bool,
}

/// One exec or attach, as frames of the remote command protocol.
pub struct Session {
    /// To the workload: `STDIN` data, `RESIZE`, `CLOSE`. Dropped when the client is gone.
    pub input: mpsc::Sender<Bytes>,
    /// From the workload: `STDOUT` and `STDERR` data, then one `ERROR` frame with the
    /// outcome; the channel ends after it.
    pub output: mpsc::Receiver<Bytes>,
}

impl Session {
    /// A session and the workload's ends of it: where its input arrives and where it
    /// sends its output.
    pub fn pair() -> (Self, mpsc::Receiver<Bytes>, mpsc::Sender<Bytes>) {
        let (input, input_rx) = mpsc::channel(DEPTH);
        let (output_tx, output) = mpsc::channel(DEPTH);
        (Self { input, output }, input_rx, output_tx)
    }

    /// A session that has already failed with `message`.
    pub fn failed(message: &str) -> Self {
        let (session, _, out) = Self::pair();
        let _ = out.try_send(outcome(Err(message)));
        session
    }
}

/// A frame: the channel byte, then `data`.
pub fn frame(channel: u8, data: &[u8]) -> Bytes {
    let mut f = Vec::with_capacity(data.len() + 1);
    f.push(channel);
    f.extend_from_slice(data);
    f.into()
}

/// The `ERROR` frame that ends a session: success, a non-zero exit code as Kubernetes
/// reports it (`NonZeroExitCode` with an `ExitCode` cause), or a failure.
pub fn outcome(result: Result<i32, &str>) -> Bytes {
    let status = match result {
        Ok(0) => json!({"metadata": {}, "status": "Success"}),
        Ok(code) => json!({
            "metadata": {}, "status": "Failure",
            "message": format!("command terminated with non-zero exit code: {code}"),
            "reason": "NonZeroExitCode",
            "details": {"causes": [{"reason": "ExitCode", "message": code.to_string()}]},
        }),
        Err(message) => json!({
            "metadata": {}, "status": "Failure", "message": message,
            "reason": "InternalError", "code": 500,
        }),
    };
    frame(channel::ERROR, status.to_string().as_bytes())
}

/// A terminal size from a `RESIZE` frame's data.
pub fn terminal_size(data: &[u8]) -> Option<(u16, u16)> {
    #[derive(Deserialize)]
    #[serde(rename_all = "PascalCase")]
    struct Size {
        width: u16,
        height: u16,
    }
    serde_json::from_slice::<Size>(data)
        .ok()
        .map(|s| (s.width, s.height))
}

/// A byte stream both ways: a port forward's connection.
pub trait Duplex: AsyncRead + AsyncWrite + Send + Unpin {}
impl<T: AsyncRead + AsyncWrite + Send + Unpin> Duplex for T {}

/// A boxed [`Duplex`].
pub type Conn = Pin<Box<dyn Duplex>>;

/// What a workload, pod or node uses now: CPU as a rate, memory as its working set.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Usage {
    /// CPU in use, in billionths of a core.
    pub cpu_nanocores: u64,
    /// Memory in use (the working set), in bytes.
    pub memory_bytes: u64,
}

/// A pod's usage, by workload (its containers, or its VM).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PodUsage {
    /// The pod's tenant.
    pub tenant: String,
    /// Its namespace.
    pub namespace: String,
    /// Its name.
    pub name: String,
    /// Each workload's name and usage.
    pub workloads: Vec<(String, Usage)>,
}

/// A node's usage and its pods', as its agent measures them: the source of the metrics API
/// (`kubectl top`).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct NodeUsage {
    /// The node.
    pub node: String,
    /// When it was measured (RFC 3339).
    pub timestamp: String,
    /// Over how many seconds the CPU rates were taken.
    pub window_seconds: u64,
    /// The whole node.
    pub usage: Usage,
    /// Its running pods.
    pub pods: Vec<PodUsage>,
}
