//! The supervisor's control protocol, over a unix socket in the container's state directory. A client
//! sends one JSON request line. Simple requests get one JSON response line; `attach` and `exec` switch the
//! connection to binary frames (`kind: u8`, `len: u32 le`, payload) carrying stdio, resizes and the exit.

use std::io::{BufRead, BufReader, Read, Write};
use std::os::fd::AsRawFd;
use std::os::unix::net::UnixStream;
use std::path::Path;

use serde::{Deserialize, Serialize};

use super::error::{Result, RuntimeError};

/// A request to a supervisor.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(tag = "op", rename_all = "snake_case")]
pub enum Request {
    /// Liveness check; answers `Ok`.
    Ping,
    /// Send a signal to the container's first process.
    Kill {
        /// Signal number.
        signal: i32,
    },
    /// Send `signal`, wait `timeout` seconds, then SIGKILL; answers when the process is gone.
    Stop {
        /// Signal number.
        signal: i32,
        /// Grace period in seconds.
        timeout: u64,
    },
    /// Answers with the exit code once the process has exited (and will not be restarted).
    Wait,
    /// Freeze the container's cgroup.
    Pause,
    /// Thaw it.
    Unpause,
    /// Start streaming the container's stdio over this connection.
    Attach {
        /// Forward stdin frames to the process.
        stdin: bool,
    },
    /// Run another process in the container and stream its stdio.
    Exec(ExecRequest),
}

/// What `exec` runs.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct ExecRequest {
    /// argv.
    pub args: Vec<String>,
    /// Extra environment, `KEY=value`, over the container's.
    pub env: Vec<String>,
    /// User, or the container's.
    pub user: Option<String>,
    /// Working directory, or the container's.
    pub working_dir: Option<String>,
    /// Allocate a pseudo-terminal.
    pub tty: bool,
    /// Forward stdin.
    pub stdin: bool,
    /// All capabilities, no seccomp.
    pub privileged: bool,
    /// Answer once started instead of streaming.
    pub detach: bool,
}

/// A one-line answer.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(tag = "result", rename_all = "snake_case")]
pub enum Response {
    /// Done.
    Ok,
    /// The process exited with this code.
    Exited {
        /// Exit code.
        code: i32,
    },
    /// The exec process started (detached exec).
    Started {
        /// Host pid.
        pid: i32,
    },
    /// The request failed.
    Error {
        /// Why.
        message: String,
    },
}

/// Frame kinds of the streaming mode.
pub mod frame {
    /// Client → supervisor: bytes for the process's stdin.
    pub const STDIN: u8 = 0;
    /// Supervisor → client: bytes the process wrote to stdout.
    pub const STDOUT: u8 = 1;
    /// Supervisor → client: bytes the process wrote to stderr.
    pub const STDERR: u8 = 2;
    /// Supervisor → client: the process exited; payload is the code (i32 le) then a message.
    pub const EXIT: u8 = 3;
    /// Client → supervisor: stdin reached EOF.
    pub const STDIN_EOF: u8 = 4;
    /// Client → supervisor: the terminal's size; payload is rows and columns (u16 le each).
    pub const RESIZE: u8 = 5;
    /// Supervisor → client: the process started; payload is its pid (i32 le).
    pub const STARTED: u8 = 6;
}

/// Encodes one frame.
pub fn encode_frame(kind: u8, payload: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(5 + payload.len());
    out.push(kind);
    out.extend_from_slice(&(payload.len() as u32).to_le_bytes());
    out.extend_from_slice(payload);
    out
}

/// Splits complete frames off the front of `buf`.
pub fn decode_frames(buf: &mut Vec<u8>) -> Vec<(u8, Vec<u8>)> {
    let mut out = Vec::new();
    let mut at = 0;
    while buf.len() - at >= 5 {
        let len = u32::from_le_bytes([buf[at + 1], buf[at + 2], buf[at + 3], buf[at + 4]]) as usize;
        if buf.len() - at - 5 < len {
            break;
        }
        out.push((buf[at], buf[at + 5..at + 5 + len].to_vec()));
        at += 5 + len;
    }
    buf.drain(..at);
    out
}

/// Connects to the socket at `path`, through `/proc/self/fd` so long state roots still fit in sun_path.
pub fn connect(path: &Path) -> std::io::Result<UnixStream> {
    let dir = path.parent().unwrap_or(Path::new("."));
    let name = path.file_name().unwrap_or_default();
    let d = std::fs::File::open(dir)?;
    UnixStream::connect(Path::new(&format!("/proc/self/fd/{}", d.as_raw_fd())).join(name))
}

/// Binds a listening socket at `path`, replacing a stale one.
pub fn bind(path: &Path) -> std::io::Result<std::os::unix::net::UnixListener> {
    let _ = std::fs::remove_file(path);
    let dir = path.parent().unwrap_or(Path::new("."));
    let name = path.file_name().unwrap_or_default();
    let d = std::fs::File::open(dir)?;
    std::os::unix::net::UnixListener::bind(Path::new(&format!("/proc/self/fd/{}", d.as_raw_fd())).join(name))
}

/// A connection to one supervisor.
pub struct Client {
    stream: UnixStream,
    id: String,
}

impl Client {
    /// Connects to the supervisor of container `id` whose socket is at `path`.
    pub fn connect(path: &Path, id: &str) -> Result<Client> {
        let stream = connect(path).map_err(|e| RuntimeError::Supervisor {
            id: id.to_string(),
            message: format!("cannot connect to {}: {e}", path.display()),
        })?;
        Ok(Client {
            stream,
            id: id.to_string(),
        })
    }

    fn err(&self, message: impl std::fmt::Display) -> RuntimeError {
        RuntimeError::Supervisor {
            id: self.id.clone(),
            message: message.to_string(),
        }
    }

    /// Sends a request line.
    pub fn send(&mut self, req: &Request) -> Result<()> {
        let mut line = serde_json::to_vec(req).map_err(|e| self.err(e))?;
        line.push(b'\n');
        self.stream.write_all(&line).map_err(|e| self.err(e))
    }

    /// Sends a request and reads its one-line answer.
    pub fn call(mut self, req: &Request) -> Result<Response> {
        self.send(req)?;
        let mut line = String::new();
        BufReader::new(&self.stream)
            .read_line(&mut line)
            .map_err(|e| self.err(e))?;
        if line.is_empty() {
            return Err(self.err("closed the connection without answering"));
        }
        serde_json::from_str(&line).map_err(|e| self.err(format!("bad answer {line:?}: {e}")))
    }

    /// The underlying stream, for streaming mode.
    pub fn into_stream(self) -> UnixStream {
        self.stream
    }
}

/// Reads one frame from a blocking stream; `None` at EOF.
pub fn read_frame(r: &mut impl Read) -> std::io::Result<Option<(u8, Vec<u8>)>> {
    let mut head = [0u8; 5];
    match r.read_exact(&mut head) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => return Ok(None),
        Err(e) => return Err(e),
    }
    let len = u32::from_le_bytes([head[1], head[2], head[3], head[4]]) as usize;
    let mut payload = vec![0u8; len];
    r.read_exact(&mut payload)?;
    Ok(Some((head[0], payload)))
}

/// Encodes an exit: the code (i32 le), then a message. The payload of EXIT frames, and what a child
/// whose setup failed writes on its error pipe.
pub fn encode_exit(code: i32, message: &str) -> Vec<u8> {
    let mut out = code.to_le_bytes().to_vec();
    out.extend_from_slice(message.as_bytes());
    out
}

/// An EXIT frame.
pub fn exit_frame(code: i32, message: &str) -> Vec<u8> {
    encode_frame(frame::EXIT, &encode_exit(code, message))
}

/// Decodes what `encode_exit` wrote.
pub fn exit_payload(p: &[u8]) -> (i32, String) {
    if p.len() < 4 {
        return (-1, String::new());
    }
    (
        i32::from_le_bytes([p[0], p[1], p[2], p[3]]),
        String::from_utf8_lossy(&p[4..]).into_owned(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_round_trip_across_partial_reads() {
        let mut wire = encode_frame(frame::STDOUT, b"hello");
        wire.extend(encode_frame(frame::EXIT, &7i32.to_le_bytes()));
        let mut buf = wire[..7].to_vec();
        assert!(decode_frames(&mut buf).is_empty());
        buf.extend_from_slice(&wire[7..]);
        let frames = decode_frames(&mut buf);
        assert_eq!(frames.len(), 2);
        assert_eq!(frames[0], (frame::STDOUT, b"hello".to_vec()));
        assert_eq!(exit_payload(&frames[1].1), (7, String::new()));
        assert!(buf.is_empty());
    }

    #[test]
    fn requests_are_one_json_line() {
        let r = Request::Stop { signal: 15, timeout: 3 };
        let s = serde_json::to_string(&r).unwrap();
        assert_eq!(s, r#"{"op":"stop","signal":15,"timeout":3}"#);
        assert_eq!(serde_json::from_str::<Request>(&s).unwrap(), r);
    }
}
