//! Framing: a 4-byte big-endian length, then that many bytes of a
//! postcard-encoded message. The codec lives only here, so it can be swapped
//! in one place.

use std::fmt;
use std::io::{self, Read, Write};

use serde::Serialize;
use serde::de::DeserializeOwned;

/// Largest frame an agent accepts from a client. Requests are tiny; the agent
/// rejects a larger declared length before allocating anything.
pub const MAX_REQUEST_FRAME: u32 = 64 * 1024;

/// Largest frame a client accepts from an agent: 256 MiB, enough for a
/// traced dump of a few million tasks with interned frames.
pub const MAX_RESPONSE_FRAME: u32 = 256 * 1024 * 1024;

/// Why a frame could not be read or written.
#[derive(Debug)]
pub enum FrameError {
    /// The socket failed (includes timeouts, as `WouldBlock`/`TimedOut`).
    Io(io::Error),
    /// The peer closed the connection before a whole frame arrived.
    Closed,
    /// The declared length is over the limit for this direction.
    TooLarge {
        /// Declared length.
        len: u32,
        /// The limit.
        max: u32,
    },
    /// The bytes are not a valid message of the expected type.
    Decode(postcard::Error),
    /// The message could not be encoded (a bug).
    Encode(postcard::Error),
}

impl fmt::Display for FrameError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            FrameError::Io(e) => write!(f, "socket error: {e}"),
            FrameError::Closed => f.write_str("connection closed mid-message"),
            FrameError::TooLarge { len, max } => {
                write!(f, "frame of {len} bytes is over the {max}-byte limit")
            }
            FrameError::Decode(e) => write!(f, "undecodable message: {e}"),
            FrameError::Encode(e) => write!(f, "unencodable message: {e}"),
        }
    }
}

impl std::error::Error for FrameError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            FrameError::Io(e) => Some(e),
            FrameError::Decode(e) | FrameError::Encode(e) => Some(e),
            _ => None,
        }
    }
}

impl From<io::Error> for FrameError {
    fn from(e: io::Error) -> Self {
        if e.kind() == io::ErrorKind::UnexpectedEof {
            FrameError::Closed
        } else {
            FrameError::Io(e)
        }
    }
}

/// `msg` as one whole frame: length prefix and body.
pub fn encode<T: Serialize>(msg: &T) -> Result<Vec<u8>, FrameError> {
    let mut buf = postcard::to_extend(msg, vec![0u8; 4]).map_err(FrameError::Encode)?;
    let len = u32::try_from(buf.len() - 4).map_err(|_| FrameError::TooLarge {
        len: u32::MAX,
        max: u32::MAX,
    })?;
    buf[..4].copy_from_slice(&len.to_be_bytes());
    Ok(buf)
}

/// The body length a frame header declares, checked against `max`.
pub fn body_len(header: [u8; 4], max: u32) -> Result<usize, FrameError> {
    let len = u32::from_be_bytes(header);
    if len > max {
        return Err(FrameError::TooLarge { len, max });
    }
    Ok(len as usize)
}

/// Decodes a frame body (without its length prefix).
pub fn decode<T: DeserializeOwned>(body: &[u8]) -> Result<T, FrameError> {
    postcard::from_bytes(body).map_err(FrameError::Decode)
}

/// Writes `msg` as one frame.
pub fn write<W: Write, T: Serialize>(w: &mut W, msg: &T) -> Result<(), FrameError> {
    w.write_all(&encode(msg)?)?;
    w.flush()?;
    Ok(())
}

/// Reads one frame of at most `max` body bytes and decodes it.
pub fn read<R: Read, T: DeserializeOwned>(r: &mut R, max: u32) -> Result<T, FrameError> {
    let mut header = [0u8; 4];
    r.read_exact(&mut header)?;
    let len = body_len(header, max)?;
    let mut body = Vec::new();
    // Grow as bytes arrive rather than trusting the declared length.
    r.take(len as u64).read_to_end(&mut body)?;
    if body.len() != len {
        return Err(FrameError::Closed);
    }
    decode(&body)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::*;

    #[test]
    fn round_trip() {
        let hello = Hello::new("1.2.3");
        let bytes = encode(&hello).unwrap();
        assert_eq!(
            body_len(bytes[..4].try_into().unwrap(), 100).unwrap(),
            bytes.len() - 4
        );
        let back: Hello = read(&mut &bytes[..], MAX_REQUEST_FRAME).unwrap();
        assert_eq!(back, hello);
    }

    #[test]
    fn oversized_frame_is_rejected_before_reading_the_body() {
        let header = (MAX_REQUEST_FRAME + 1).to_be_bytes();
        let err = read::<_, Hello>(&mut &header[..], MAX_REQUEST_FRAME).unwrap_err();
        assert!(matches!(err, FrameError::TooLarge { .. }), "{err}");
    }

    #[test]
    fn truncated_frame_is_closed() {
        let mut bytes = encode(&Hello::new("1")).unwrap();
        bytes.pop();
        let err = read::<_, Hello>(&mut &bytes[..], MAX_REQUEST_FRAME).unwrap_err();
        assert!(matches!(err, FrameError::Closed), "{err}");
        let err = read::<_, Hello>(&mut &bytes[..2], MAX_REQUEST_FRAME).unwrap_err();
        assert!(matches!(err, FrameError::Closed), "{err}");
    }

    #[test]
    fn garbage_is_a_decode_error() {
        let bytes = [0, 0, 0, 3, 0xff, 0xff, 0xff];
        let err = read::<_, Request>(&mut &bytes[..], MAX_REQUEST_FRAME).unwrap_err();
        assert!(matches!(err, FrameError::Decode(_)), "{err}");
    }

    #[test]
    fn response_round_trip() {
        let resp: Response = Err(AgentError::new(ErrorKind::InProgress, "trace in progress"));
        let back: Response = decode(&encode(&resp).unwrap()[4..]).unwrap();
        assert_eq!(back, resp);
    }

    /// The agent decodes whatever a client sends: random bytes and every
    /// truncation or single-byte corruption of valid messages must give an
    /// error value, never a panic or a huge allocation.
    #[test]
    fn decoder_survives_garbage() {
        let mut state = 0x9e37_79b9_7f4a_7c15u64;
        let mut next = || {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state
        };
        for _ in 0..20_000 {
            let len = (next() % 64) as usize;
            let bytes: Vec<u8> = (0..len).map(|_| next() as u8).collect();
            let _ = decode::<Hello>(&bytes);
            let _ = decode::<Request>(&bytes);
            let _ = decode::<Response>(&bytes);
            let _ = decode::<HelloReply>(&bytes);
        }
        let valid = [
            encode(&Hello::new("0.1.0")).unwrap(),
            encode(&Request {
                deadline_ms: 5000,
                kind: RequestKind::Tasks(TasksMode::WholeRuntime {
                    runtime: Some("io".into()),
                }),
            })
            .unwrap(),
        ];
        for msg in &valid {
            let body = &msg[4..];
            for cut in 0..body.len() {
                let _ = decode::<Request>(&body[..cut]);
                let _ = decode::<Hello>(&body[..cut]);
            }
            for i in 0..body.len() {
                for b in [0x00, 0x7f, 0x80, 0xff] {
                    let mut bad = body.to_vec();
                    bad[i] = b;
                    let _ = decode::<Request>(&bad);
                    let _ = decode::<Hello>(&bad);
                }
            }
        }
    }
}
