//! SPDY/3.1 as kubectl's `port-forward` speaks it (its `portforward.k8s.io` protocol), on
//! either transport it uses: SPDY frames tunnelled in WebSocket binary messages
//! (`SPDY/3.1+portforward.k8s.io`, the default since kubectl 1.31) or a connection
//! upgraded to `SPDY/3.1`.
//!
//! Each forwarded connection is a pair of streams the client opens with headers
//! `streamtype` (`error`, then `data`), `port` and `requestid`. The server answers each
//! with a reply, connects the data stream to the port in the pod's network namespace,
//! and reports a failure as text on the error stream. Header blocks are zlib streams
//! (one per direction) primed with the dictionary of the SPDY/3 specification.

use std::collections::HashMap;
use std::future::Future;

use bytes::{Buf as _, Bytes};
use flate2::{Compress, Compression, Decompress, FlushCompress, FlushDecompress};
use tokio::io::{AsyncRead, AsyncReadExt as _, AsyncWrite, AsyncWriteExt as _};
use tokio::sync::mpsc;

use crate::pods::StreamError;
use crate::streams::Conn;

/// The protocol named in the upgrade (`X-Stream-Protocol-Version`).
pub const PORT_FORWARD_PROTOCOL: &str = "portforward.k8s.io";

/// Frames larger than this are refused (SPDY allows 16 MiB; kubectl sends 32 KiB).
const MAX_FRAME: usize = 1 << 20;
/// A decompressed header block larger than this is refused.
const MAX_HEADERS: usize = 64 * 1024;
/// Streams open at once on one session.
const MAX_STREAMS: usize = 1024;

const SYN_STREAM: u16 = 1;
const SYN_REPLY: u16 = 2;
const RST_STREAM: u16 = 3;
const PING: u16 = 6;
const GOAWAY: u16 = 7;
const FLAG_FIN: u8 = 1;
/// RST_STREAM status: the stream is refused.
const REFUSED_STREAM: u32 = 3;

/// The SPDY/3 header dictionary (specification §2.6.10.1): length-prefixed header
/// words, then common values.
fn dictionary() -> Vec<u8> {
    const WORDS: &[&str] = &[
        "options",
        "head",
        "post",
        "put",
        "delete",
        "trace",
        "accept",
        "accept-charset",
        "accept-encoding",
        "accept-language",
        "accept-ranges",
        "age",
        "allow",
        "authorization",
        "cache-control",
        "connection",
        "content-base",
        "content-encoding",
        "content-language",
        "content-length",
        "content-location",
        "content-md5",
        "content-range",
        "content-type",
        "date",
        "etag",
        "expect",
        "expires",
        "from",
        "host",
        "if-match",
        "if-modified-since",
        "if-none-match",
        "if-range",
        "if-unmodified-since",
        "last-modified",
        "location",
        "max-forwards",
        "pragma",
        "proxy-authenticate",
        "proxy-authorization",
        "range",
        "referer",
        "retry-after",
        "server",
        "te",
        "trailer",
        "transfer-encoding",
        "upgrade",
        "user-agent",
        "vary",
        "via",
        "warning",
        "www-authenticate",
        "method",
        "get",
        "status",
        "200 OK",
        "version",
        "HTTP/1.1",
        "url",
        "public",
        "set-cookie",
        "keep-alive",
        "origin",
    ];
    const TAIL: &str = concat!(
        "100101201202205206300302303304305306307402405406407408409410411412413414415416417",
        "502504505203 Non-Authoritative Information204 No Content301 Moved Permanently",
        "400 Bad Request401 Unauthorized403 Forbidden404 Not Found500 Internal Server Error",
        "501 Not Implemented503 Service UnavailableJan Feb Mar Apr May Jun Jul Aug Sept Oct ",
        "Nov Dec 00:00:00 Mon, Tue, Wed, Thu, Fri, Sat, Sun, GMTchunked,text/html,image/png,",
        "image/jpg,image/gif,application/xml,application/xhtml+xml,text/plain,",
        "text/javascript,publicprivatemax-age=gzip,deflate,sdchcharset=utf-8",
        "charset=iso-8859-1,utf-,*,enq=0.",
    );
    let mut d = Vec::with_capacity(1423);
    for w in WORDS {
        d.extend_from_slice(&(w.len() as u32).to_be_bytes());
        d.extend_from_slice(w.as_bytes());
    }
    d.extend_from_slice(TAIL.as_bytes());
    d
}

/// A protocol error: the session ends.
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
#[error("SPDY: {0}")]
pub struct ProtocolError(String);

fn bad(why: impl Into<String>) -> ProtocolError {
    ProtocolError(why.into())
}

/// One frame, as read.
#[derive(Debug, PartialEq, Eq)]
pub enum Frame {
    /// Data for a stream.
    Data {
        /// The stream.
        stream: u32,
        /// The sender is done with the stream.
        fin: bool,
        /// The data.
        data: Bytes,
    },
    /// A control frame: its type, flags and payload.
    Control {
        /// SYN_STREAM, SYN_REPLY, ...
        kind: u16,
        /// Its flags.
        flags: u8,
        /// Its payload.
        payload: Bytes,
    },
}

/// Reads one frame from the front of `buf`: `Ok(None)` until a whole frame is there.
pub fn parse_frame(buf: &mut bytes::BytesMut) -> Result<Option<Frame>, ProtocolError> {
    if buf.len() < 8 {
        return Ok(None);
    }
    let len = (usize::from(buf[5]) << 16) | (usize::from(buf[6]) << 8) | usize::from(buf[7]);
    if len > MAX_FRAME {
        return Err(bad(format!("a frame of {len} bytes")));
    }
    if buf.len() < 8 + len {
        return Ok(None);
    }
    let head = buf.split_to(8);
    let payload = buf.split_to(len).freeze();
    let flags = head[4];
    if head[0] & 0x80 != 0 {
        let version = u16::from_be_bytes([head[0] & 0x7f, head[1]]);
        if version != 3 {
            return Err(bad(format!("version {version}")));
        }
        Ok(Some(Frame::Control {
            kind: u16::from_be_bytes([head[2], head[3]]),
            flags,
            payload,
        }))
    } else {
        Ok(Some(Frame::Data {
            stream: u32::from_be_bytes([head[0], head[1], head[2], head[3]]),
            fin: flags & FLAG_FIN != 0,
            data: payload,
        }))
    }
}

/// The header blocks of one direction: a zlib stream over the whole session.
pub struct HeaderReader {
    z: Decompress,
    dictionary: Vec<u8>,
}

impl Default for HeaderReader {
    fn default() -> Self {
        Self {
            z: Decompress::new(true),
            dictionary: dictionary(),
        }
    }
}

impl HeaderReader {
    /// The name-value pairs of one compressed block (names lower-cased).
    pub fn read(&mut self, block: &[u8]) -> Result<Vec<(String, String)>, ProtocolError> {
        let mut out = Vec::with_capacity(1024);
        let mut input = block;
        loop {
            let before = self.z.total_in();
            let result = self
                .z
                .decompress_vec(input, &mut out, FlushDecompress::Sync);
            let used = usize::try_from(self.z.total_in() - before).unwrap_or(usize::MAX);
            input = input.get(used..).unwrap_or_default();
            match result {
                Err(e) if e.needs_dictionary().is_some() => {
                    self.z
                        .set_dictionary(&self.dictionary)
                        .map_err(|e| bad(format!("header dictionary: {e}")))?;
                    continue;
                }
                Err(e) => return Err(bad(format!("header block: {e}"))),
                Ok(_) => {}
            }
            let full = out.len() == out.capacity();
            if input.is_empty() && !full {
                break;
            }
            if out.len() >= MAX_HEADERS {
                return Err(bad("a header block too large"));
            }
            if full {
                out.reserve(out.len());
            } else if used == 0 {
                return Err(bad("a header block that does not decompress"));
            }
        }
        let mut b = &out[..];
        let mut pairs = Vec::new();
        let next = |b: &mut &[u8]| -> Result<Vec<u8>, ProtocolError> {
            if b.len() < 4 {
                return Err(bad("a truncated header block"));
            }
            let n = b.get_u32() as usize;
            if b.len() < n {
                return Err(bad("a truncated header block"));
            }
            let v = b[..n].to_vec();
            b.advance(n);
            Ok(v)
        };
        if b.len() < 4 {
            return Err(bad("a truncated header block"));
        }
        let count = b.get_u32();
        for _ in 0..count {
            let name = String::from_utf8_lossy(&next(&mut b)?).to_ascii_lowercase();
            let value = String::from_utf8_lossy(&next(&mut b)?).into_owned();
            pairs.push((name, value));
        }
        Ok(pairs)
    }
}

/// Writes frames, compressing header blocks in one zlib stream.
struct FrameWriter {
    z: Compress,
}

impl FrameWriter {
    fn new() -> Self {
        let mut z = Compress::new(Compression::default(), true);
        z.set_dictionary(&dictionary())
            .expect("a zlib stream takes a dictionary before any data");
        Self { z }
    }

    fn control(kind: u16, flags: u8, payload: &[u8]) -> Vec<u8> {
        let mut f = Vec::with_capacity(8 + payload.len());
        f.extend_from_slice(&[0x80, 3]);
        f.extend_from_slice(&kind.to_be_bytes());
        f.push(flags);
        f.extend_from_slice(&(payload.len() as u32).to_be_bytes()[1..]);
        f.extend_from_slice(payload);
        f
    }

    fn data(stream: u32, fin: bool, data: &[u8]) -> Vec<u8> {
        let mut f = Vec::with_capacity(8 + data.len());
        f.extend_from_slice(&stream.to_be_bytes());
        f.push(if fin { FLAG_FIN } else { 0 });
        f.extend_from_slice(&(data.len() as u32).to_be_bytes()[1..]);
        f.extend_from_slice(data);
        f
    }

    /// A reply to `stream` with no headers.
    fn reply(&mut self, stream: u32) -> Vec<u8> {
        let block = 0u32.to_be_bytes();
        let start = self.z.total_in();
        let mut payload = stream.to_be_bytes().to_vec();
        payload.reserve(128);
        loop {
            let done = usize::try_from(self.z.total_in() - start).unwrap_or(block.len());
            self.z
                .compress_vec(
                    &block[done.min(block.len())..],
                    &mut payload,
                    FlushCompress::Sync,
                )
                .expect("compressing into a growing buffer");
            let done = usize::try_from(self.z.total_in() - start).unwrap_or(block.len());
            if done >= block.len() && payload.len() < payload.capacity() {
                break;
            }
            payload.reserve(128);
        }
        Self::control(SYN_REPLY, 0, &payload)
    }
}

/// What the session's writer sends.
enum Out {
    Reply(u32),
    Data(u32, Bytes, bool),
    Ping(Bytes),
    Reset(u32, u32),
}

/// A forwarded connection: its error stream and where its data stream's bytes go.
#[derive(Default)]
struct Pair {
    error: Option<u32>,
    data: Option<u32>,
    port: u16,
}

/// Serves one port-forward session on `io` until the client ends it. `connect` opens a
/// connection to a port of the pod.
pub async fn serve_port_forward<IO, F, Fut>(io: IO, connect: F)
where
    IO: AsyncRead + AsyncWrite + Send + 'static,
    F: Fn(u16) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Result<Conn, StreamError>> + Send + 'static,
{
    let (mut rd, mut wr) = tokio::io::split(io);
    let (out_tx, mut out_rx) = mpsc::channel::<Out>(256);
    let writer = tokio::spawn(async move {
        let mut w = FrameWriter::new();
        while let Some(o) = out_rx.recv().await {
            let bytes = match o {
                Out::Reply(s) => w.reply(s),
                Out::Data(s, d, fin) => FrameWriter::data(s, fin, &d),
                Out::Ping(p) => FrameWriter::control(PING, 0, &p),
                Out::Reset(s, status) => {
                    let mut p = s.to_be_bytes().to_vec();
                    p.extend_from_slice(&status.to_be_bytes());
                    FrameWriter::control(RST_STREAM, 0, &p)
                }
            };
            if wr.write_all(&bytes).await.is_err() {
                break;
            }
        }
        let _ = wr.shutdown().await;
    });
    let connect = std::sync::Arc::new(connect);
    let mut headers = HeaderReader::default();
    let mut pairs: HashMap<String, Pair> = HashMap::new();
    // Where each data stream's bytes go: to its connection's writer.
    let mut sinks: HashMap<u32, mpsc::Sender<Bytes>> = HashMap::new();
    let mut buf = bytes::BytesMut::with_capacity(64 * 1024);
    'session: loop {
        let frame = loop {
            match parse_frame(&mut buf) {
                Ok(Some(f)) => break f,
                Ok(None) => {}
                Err(e) => {
                    tracing::debug!(error = %e, "port forward ended");
                    break 'session;
                }
            }
            match rd.read_buf(&mut buf).await {
                Ok(0) | Err(_) => break 'session,
                Ok(_) => {}
            }
        };
        match frame {
            Frame::Data { stream, fin, data } => {
                if let Some(sink) = sinks.get(&stream) {
                    if !data.is_empty() && sink.send(data).await.is_err() {
                        sinks.remove(&stream);
                    }
                    if fin {
                        sinks.remove(&stream);
                    }
                }
            }
            Frame::Control { kind, payload, .. } => match kind {
                SYN_STREAM => {
                    if payload.len() < 10 {
                        break 'session;
                    }
                    let stream =
                        u32::from_be_bytes([payload[0], payload[1], payload[2], payload[3]])
                            & 0x7fff_ffff;
                    let Ok(h) = headers.read(&payload[10..]) else {
                        break 'session;
                    };
                    let get = |n: &str| h.iter().find(|(k, _)| k == n).map(|(_, v)| v.clone());
                    let port = get("port").and_then(|p| p.parse::<u16>().ok());
                    let (Some(port), Some(kind)) = (port.filter(|p| *p > 0), get("streamtype"))
                    else {
                        let _ = out_tx.send(Out::Reset(stream, REFUSED_STREAM)).await;
                        continue;
                    };
                    if sinks.len() >= MAX_STREAMS || pairs.len() >= MAX_STREAMS {
                        let _ = out_tx.send(Out::Reset(stream, REFUSED_STREAM)).await;
                        continue;
                    }
                    let id = get("requestid").unwrap_or_else(|| format!("port-{port}"));
                    let _ = out_tx.send(Out::Reply(stream)).await;
                    let pair = pairs.entry(id.clone()).or_default();
                    pair.port = port;
                    match kind.as_str() {
                        "error" => pair.error = Some(stream),
                        "data" => pair.data = Some(stream),
                        _ => {
                            let _ = out_tx.send(Out::Reset(stream, REFUSED_STREAM)).await;
                            continue;
                        }
                    }
                    if let (Some(error), Some(data)) = (pair.error, pair.data) {
                        pairs.remove(&id);
                        let (sink, source) = mpsc::channel(64);
                        sinks.insert(data, sink);
                        tokio::spawn(forward(
                            connect.clone(),
                            port,
                            error,
                            data,
                            source,
                            out_tx.clone(),
                        ));
                    }
                }
                RST_STREAM if payload.len() >= 4 => {
                    let stream =
                        u32::from_be_bytes([payload[0], payload[1], payload[2], payload[3]])
                            & 0x7fff_ffff;
                    sinks.remove(&stream);
                }
                PING => {
                    let _ = out_tx.send(Out::Ping(payload)).await;
                }
                GOAWAY => break 'session,
                // SETTINGS, WINDOW_UPDATE, HEADERS, NOOP: nothing to do for port forwards.
                _ => {}
            },
        }
    }
    drop(sinks);
    drop(out_tx);
    let _ = writer.await;
}

/// One forwarded connection: the pod's port to the data stream and back; a failure to
/// connect is reported on the error stream. Both streams end with the connection.
async fn forward<F, Fut>(
    connect: std::sync::Arc<F>,
    port: u16,
    error: u32,
    data: u32,
    mut from_client: mpsc::Receiver<Bytes>,
    out: mpsc::Sender<Out>,
) where
    F: Fn(u16) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Result<Conn, StreamError>> + Send + 'static,
{
    let conn = match connect(port).await {
        Ok(c) => c,
        Err(e) => {
            let msg = format!("error forwarding port {port} to pod: {e}");
            let _ = out
                .send(Out::Data(error, msg.into_bytes().into(), true))
                .await;
            let _ = out.send(Out::Data(data, Bytes::new(), true)).await;
            return;
        }
    };
    let (mut rd, mut wr) = tokio::io::split(conn);
    let up = async {
        while let Some(b) = from_client.recv().await {
            if wr.write_all(&b).await.is_err() {
                break;
            }
        }
        let _ = wr.shutdown().await;
    };
    let down = async {
        let mut buf = vec![0u8; 32 * 1024];
        loop {
            match rd.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => {
                    if out
                        .send(Out::Data(data, Bytes::copy_from_slice(&buf[..n]), false))
                        .await
                        .is_err()
                    {
                        return;
                    }
                }
            }
        }
        let _ = out.send(Out::Data(data, Bytes::new(), true)).await;
    };
    tokio::join!(up, down);
    let _ = out.send(Out::Data(error, Bytes::new(), true)).await;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_dictionary_is_the_specifications() {
        let d = dictionary();
        assert_eq!(d.len(), 1423);
        let (mut a, mut b) = (1u32, 0u32);
        for x in &d {
            a = (a + u32::from(*x)) % 65521;
            b = (b + a) % 65521;
        }
        // The Adler-32 every SPDY/3 header stream names in its zlib header.
        assert_eq!((b << 16) | a, 3_821_447_106);
    }

    /// A header block as a client compresses it: with the dictionary, sync-flushed.
    fn client_block(z: &mut Compress, pairs: &[(&str, &str)]) -> Vec<u8> {
        let mut raw = (pairs.len() as u32).to_be_bytes().to_vec();
        for (k, v) in pairs {
            raw.extend_from_slice(&(k.len() as u32).to_be_bytes());
            raw.extend_from_slice(k.as_bytes());
            raw.extend_from_slice(&(v.len() as u32).to_be_bytes());
            raw.extend_from_slice(v.as_bytes());
        }
        let mut out = Vec::with_capacity(raw.len() + 64);
        z.compress_vec(&raw, &mut out, FlushCompress::Sync).unwrap();
        out
    }

    #[test]
    fn header_blocks_read_across_one_zlib_stream() {
        let mut z = Compress::new(Compression::default(), true);
        z.set_dictionary(&dictionary()).unwrap();
        let mut reader = HeaderReader::default();
        let first = client_block(
            &mut z,
            &[
                ("streamType", "error"),
                ("port", "8080"),
                ("requestID", "0"),
            ],
        );
        let second = client_block(
            &mut z,
            &[("streamtype", "data"), ("port", "8080"), ("requestid", "0")],
        );
        let h = reader.read(&first).unwrap();
        assert_eq!(h[0], ("streamtype".into(), "error".into()));
        let h = reader.read(&second).unwrap();
        assert_eq!(h[1], ("port".into(), "8080".into()));
        assert!(HeaderReader::default().read(b"\x78\x01garbage").is_err());
    }

    #[test]
    fn frames_parse_whole_or_wait() {
        let f = FrameWriter::data(5, true, b"hello");
        let mut buf = bytes::BytesMut::from(&f[..4]);
        assert_eq!(parse_frame(&mut buf).unwrap(), None);
        buf.extend_from_slice(&f[4..]);
        assert_eq!(
            parse_frame(&mut buf).unwrap(),
            Some(Frame::Data {
                stream: 5,
                fin: true,
                data: Bytes::from_static(b"hello")
            })
        );
        let ping = FrameWriter::control(PING, 0, &7u32.to_be_bytes());
        let mut buf = bytes::BytesMut::from(&ping[..]);
        assert!(matches!(
            parse_frame(&mut buf).unwrap(),
            Some(Frame::Control { kind: PING, .. })
        ));
        let mut huge = bytes::BytesMut::from(&[0x80, 3, 0, 1, 0, 0xff, 0xff, 0xff][..]);
        assert!(parse_frame(&mut huge).is_err());
        let mut v2 = bytes::BytesMut::from(&[0x80, 2, 0, 1, 0, 0, 0, 0][..]);
        assert!(parse_frame(&mut v2).is_err());
    }

    /// A whole session as kubectl drives it: SYN_STREAMs for the error and data streams,
    /// data both ways through an echo "pod", FIN, then GOAWAY.
    #[tokio::test]
    async fn a_port_forward_session_relays_bytes() {
        let (client, server) = tokio::io::duplex(64 * 1024);
        let session = tokio::spawn(serve_port_forward(server, |port: u16| async move {
            if port != 8080 {
                return Err(StreamError::BadRequest(format!(
                    "nothing listens on {port}"
                )));
            }
            let (pod, far) = tokio::io::duplex(1024);
            tokio::spawn(async move {
                let (mut r, mut w) = tokio::io::split(far);
                let _ = tokio::io::copy(&mut r, &mut w).await;
            });
            Ok(Box::pin(pod) as Conn)
        }));
        let (mut rd, mut wr) = tokio::io::split(client);
        let mut z = Compress::new(Compression::default(), true);
        z.set_dictionary(&dictionary()).unwrap();
        let syn = |z: &mut Compress, id: u32, kind: &str, port: &str| {
            let mut p = id.to_be_bytes().to_vec();
            p.extend_from_slice(&[0, 0, 0, 0, 0, 0]);
            p.extend(client_block(
                z,
                &[("streamtype", kind), ("port", port), ("requestid", "1")],
            ));
            FrameWriter::control(SYN_STREAM, 0, &p)
        };
        wr.write_all(&syn(&mut z, 1, "error", "8080"))
            .await
            .unwrap();
        wr.write_all(&syn(&mut z, 3, "data", "8080")).await.unwrap();
        wr.write_all(&FrameWriter::data(3, false, b"ping!"))
            .await
            .unwrap();
        let mut buf = bytes::BytesMut::new();
        let mut got = Vec::new();
        let mut replies = 0;
        while got.len() < 5 {
            while let Some(f) = parse_frame(&mut buf).unwrap() {
                match f {
                    Frame::Control {
                        kind: SYN_REPLY, ..
                    } => replies += 1,
                    Frame::Data {
                        stream: 3, data, ..
                    } => got.extend_from_slice(&data),
                    other => panic!("unexpected {other:?}"),
                }
            }
            if got.len() < 5 {
                rd.read_buf(&mut buf).await.unwrap();
            }
        }
        assert_eq!((replies, &got[..]), (2, &b"ping!"[..]));
        // A port nothing listens on: the error stream says so.
        wr.write_all(&syn(&mut z, 5, "error", "9")).await.unwrap();
        wr.write_all(&syn(&mut z, 7, "data", "9")).await.unwrap();
        let mut error = Vec::new();
        loop {
            match parse_frame(&mut buf).unwrap() {
                Some(Frame::Data {
                    stream: 5,
                    data,
                    fin,
                }) => {
                    error.extend_from_slice(&data);
                    if fin {
                        break;
                    }
                }
                Some(_) => {}
                None => {
                    rd.read_buf(&mut buf).await.unwrap();
                }
            }
        }
        assert!(String::from_utf8_lossy(&error).contains("nothing listens on 9"));
        wr.write_all(&FrameWriter::control(GOAWAY, 0, &[0; 8]))
            .await
            .unwrap();
        session.await.unwrap();
    }
}
