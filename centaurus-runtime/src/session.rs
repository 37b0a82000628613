//! Interactive sessions with workloads: a [`Process`] a runtime started or attached to,
//! turned into a remote command [`Session`] ([`session_of`]); terminals (the pseudo
//! terminal runc hands over on its console socket); connections made inside a pod's
//! network namespace.

use std::os::fd::{AsFd as _, OwnedFd};
use std::os::unix::ffi::OsStrExt as _;
use std::os::unix::fs::OpenOptionsExt as _;
use std::path::Path;
use std::pin::Pin;
use std::sync::Arc;

use centaurus_core::remote::{
    Frame, Session, StreamRequest, channel, frame, outcome, terminal_size,
};
use futures::future::BoxFuture;
use tokio::io::{AsyncRead, AsyncReadExt as _, AsyncWrite, AsyncWriteExt as _};
use tokio::sync::mpsc;

use crate::{Result, RuntimeError};

/// A process in a workload (or its console): its standard streams and how it ends.
pub struct Process {
    /// Its standard input, when it reads one.
    pub stdin: Option<Pin<Box<dyn AsyncWrite + Send>>>,
    /// Its standard output (with a terminal: everything the terminal shows).
    pub stdout: Pin<Box<dyn AsyncRead + Send>>,
    /// Its standard error; none with a terminal.
    pub stderr: Option<Pin<Box<dyn AsyncRead + Send>>>,
    /// Sets its terminal's size (width, height), with a terminal.
    pub resize: Option<Box<dyn Fn(u16, u16) + Send + Sync>>,
    /// Its exit code once it ends; `None` for a console, which ends when the client
    /// leaves or the workload closes it. Dropping it gives up on (and kills) the process.
    pub exit: Option<BoxFuture<'static, i32>>,
}

/// Sends what `from` yields as frames of `ch` until it ends; false when the client is
/// gone.
async fn pump(
    mut from: Pin<Box<dyn AsyncRead + Send>>,
    ch: u8,
    to: &mpsc::Sender<Frame>,
    forward: bool,
) -> bool {
    let mut buf = vec![0u8; 32 * 1024];
    loop {
        match from.read(&mut buf).await {
            Ok(0) | Err(_) => return true,
            Ok(n) if forward => {
                if to.send(frame(ch, &buf[..n])).await.is_err() {
                    return false;
                }
            }
            Ok(_) => {}
        }
    }
}

/// The session of `process` for `request`: standard input, resizes and closes in;
/// output and error out, then the outcome (the exit code). A session ends when the
/// process ends, or, for a console, when the client leaves.
pub fn session_of(process: Process, request: &StreamRequest) -> Session {
    let (session, mut input, output) = Session::pair();
    let Process {
        stdin,
        stdout,
        stderr,
        resize,
        exit,
    } = process;
    let (gone_tx, gone) = tokio::sync::oneshot::channel::<()>();
    tokio::spawn(async move {
        let mut stdin = stdin;
        while let Some(f) = input.recv().await {
            match (f[0], f.get(1)) {
                (channel::STDIN, _) => {
                    if let Some(w) = &mut stdin
                        && (w.write_all(&f[1..]).await.is_err() || w.flush().await.is_err())
                    {
                        stdin = None;
                    }
                }
                (channel::RESIZE, _) => {
                    if let (Some(r), Some((w, h))) = (&resize, terminal_size(&f[1..])) {
                        r(w, h);
                    }
                }
                (channel::CLOSE, Some(&channel::STDIN)) => {
                    if let Some(mut w) = stdin.take() {
                        let _ = w.shutdown().await;
                    }
                }
                _ => {}
            }
        }
        if let Some(mut w) = stdin.take() {
            let _ = w.shutdown().await;
        }
        let _ = gone_tx.send(());
    });
    let (want_out, want_err) = (request.stdout, request.stderr);
    tokio::spawn(async move {
        let streams = async {
            let out = pump(stdout, channel::STDOUT, &output, want_out);
            match stderr {
                Some(err) => {
                    let (a, b) = tokio::join!(out, pump(err, channel::STDERR, &output, want_err));
                    a && b
                }
                None => out.await,
            }
        };
        let result = match exit {
            Some(exit) => {
                let (client_here, code) = tokio::join!(streams, exit);
                client_here.then_some(code)
            }
            None => tokio::select! {
                here = streams => here.then_some(0),
                _ = gone => None,
            },
        };
        if let Some(code) = result {
            let _ = output.send(outcome(Ok(code))).await;
        }
    });
    session
}

/// A pseudo terminal made on the host: the master the agent reads and writes, and the
/// other side, which becomes a process' standard streams (runc then proxies it into a
/// terminal of the container's own and follows its size on `SIGWINCH`). Reads wait on
/// the blocking pool (tokio cannot poll a terminal without unsafe registration), so
/// reads and writes go through separate handles.
pub struct Terminal {
    /// What the terminal shows; ends when the process on it has ended.
    pub output: tokio::fs::File,
    /// What is typed into it.
    pub input: tokio::fs::File,
    master: Arc<OwnedFd>,
}

impl Terminal {
    /// A new terminal of `width` x `height` and the standard streams for its process.
    pub fn open(width: u16, height: u16) -> std::io::Result<(Self, [std::process::Stdio; 3])> {
        use rustix::pty::OpenptFlags;
        let master =
            rustix::pty::openpt(OpenptFlags::RDWR | OpenptFlags::NOCTTY | OpenptFlags::CLOEXEC)?;
        rustix::pty::grantpt(&master)?;
        rustix::pty::unlockpt(&master)?;
        let name = rustix::pty::ptsname(&master, Vec::new())?;
        let slave = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .custom_flags(rustix::fs::OFlags::NOCTTY.bits() as i32)
            .open(std::ffi::OsStr::from_bytes(name.as_bytes()))?;
        // Raw, as runc would set it: no echo or line editing on the host's side; the
        // container's terminal does that.
        let mut modes = rustix::termios::tcgetattr(&slave)?;
        modes.make_raw();
        rustix::termios::tcsetattr(&slave, rustix::termios::OptionalActions::Now, &modes)?;
        let terminal = Self {
            output: tokio::fs::File::from_std(std::fs::File::from(master.try_clone()?)),
            input: tokio::fs::File::from_std(std::fs::File::from(master.try_clone()?)),
            master: Arc::new(master),
        };
        terminal.set_size(width, height);
        let stdio = [
            slave.try_clone()?.into(),
            slave.try_clone()?.into(),
            slave.into(),
        ];
        Ok((terminal, stdio))
    }

    fn set_size(&self, width: u16, height: u16) {
        let size = rustix::termios::Winsize {
            ws_row: height,
            ws_col: width,
            ws_xpixel: 0,
            ws_ypixel: 0,
        };
        let _ = rustix::termios::tcsetwinsize(&*self.master, size);
    }

    /// Sets the terminal's size (width, height) and tells `pid` (the process proxying
    /// it) with `SIGWINCH`.
    pub fn resizer(&self, pid: Option<u32>) -> Box<dyn Fn(u16, u16) + Send + Sync> {
        let master = self.master.clone();
        Box::new(move |width, height| {
            let size = rustix::termios::Winsize {
                ws_row: height,
                ws_col: width,
                ws_xpixel: 0,
                ws_ypixel: 0,
            };
            let _ = rustix::termios::tcsetwinsize(&*master, size);
            if let Some(pid) = pid.and_then(|p| rustix::process::Pid::from_raw(p as i32)) {
                let _ = rustix::process::kill_process(pid, rustix::process::Signal::WINCH);
            }
        })
    }
}

/// Connects to `port` on the loopback of the network namespace at `netns` (a thread
/// enters the namespace; the socket stays in it).
pub async fn connect_in(netns: &Path, port: u16) -> Result<tokio::net::TcpStream> {
    let ns = std::fs::File::open(netns)?;
    let stream = tokio::task::spawn_blocking(move || -> std::io::Result<std::net::TcpStream> {
        // A thread of its own: it never serves anything else from inside the namespace.
        std::thread::spawn(move || {
            rustix::thread::move_into_link_name_space(
                ns.as_fd(),
                Some(rustix::thread::LinkNameSpaceType::Network),
            )?;
            std::net::TcpStream::connect_timeout(
                &std::net::SocketAddr::from(([127, 0, 0, 1], port)),
                std::time::Duration::from_secs(5),
            )
        })
        .join()
        .map_err(|_| std::io::Error::other("the namespace thread panicked"))?
    })
    .await
    .map_err(|e| RuntimeError::Io(std::io::Error::other(e.to_string())))?
    .map_err(|e| RuntimeError::NotFound(format!("port {port} in the pod: {e}")))?;
    stream.set_nonblocking(true)?;
    Ok(tokio::net::TcpStream::from_std(stream)?)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request() -> StreamRequest {
        StreamRequest {
            command: vec!["x".into()],
            stdin: true,
            stdout: true,
            stderr: true,
            ..Default::default()
        }
    }

    #[tokio::test]
    async fn a_process_session_carries_input_output_and_the_exit_code() {
        let mut child = tokio::process::Command::new("sh")
            .args(["-c", "read line; echo \"out:$line\"; echo err >&2; exit 3"])
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        let process = Process {
            stdin: Some(Box::pin(child.stdin.take().unwrap())),
            stdout: Box::pin(child.stdout.take().unwrap()),
            stderr: Some(Box::pin(child.stderr.take().unwrap())),
            resize: None,
            exit: Some(Box::pin(async move {
                child.wait().await.unwrap().code().unwrap()
            })),
        };
        let mut s = session_of(process, &request());
        s.input
            .send(frame(channel::STDIN, b"hello\n"))
            .await
            .unwrap();
        s.input
            .send(frame(channel::CLOSE, &[channel::STDIN]))
            .await
            .unwrap();
        let (mut out, mut err, mut end) = (Vec::new(), Vec::new(), None);
        while let Some(f) = s.output.recv().await {
            match f[0] {
                channel::STDOUT => out.extend_from_slice(&f[1..]),
                channel::STDERR => err.extend_from_slice(&f[1..]),
                channel::ERROR => {
                    end = Some(serde_json::from_slice::<serde_json::Value>(&f[1..]).unwrap())
                }
                c => panic!("channel {c}"),
            }
        }
        assert_eq!((&out[..], &err[..]), (&b"out:hello\n"[..], &b"err\n"[..]));
        let end = end.unwrap();
        assert_eq!(end["reason"], "NonZeroExitCode");
        assert_eq!(end["details"]["causes"][0]["message"], "3");
    }

    #[tokio::test]
    async fn a_console_session_ends_when_the_client_leaves() {
        let (ours, _theirs) = tokio::io::duplex(64);
        let (rd, wr) = tokio::io::split(ours);
        let process = Process {
            stdin: Some(Box::pin(wr)),
            stdout: Box::pin(rd),
            stderr: None,
            resize: None,
            exit: None,
        };
        let Session { input, mut output } = session_of(process, &request());
        drop(input);
        // No outcome: the client is gone; the output just ends.
        assert_eq!(output.recv().await, None);
    }
}
