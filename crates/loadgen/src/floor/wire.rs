//! The WebSocket framing the floor server needs (RFC 6455 §5), and nothing more: server
//! frames are written unmasked and whole (FIN set, no fragments); client frames are read
//! masked, as the RFC requires of clients, and unmasked in place.

use std::ops::Range;

/// Room a frame's header may need: 2 bytes, 8 more for a 64-bit length (servers never mask).
pub const HEADER_ROOM: usize = 10;

/// The opcodes (RFC 6455 §5.2).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Opcode {
    /// A continuation of a fragmented message.
    Continuation,
    /// UTF-8 text.
    Text,
    /// Binary data.
    Binary,
    /// The closing handshake.
    Close,
    /// A ping, to be answered with a pong of the same payload.
    Ping,
    /// A pong.
    Pong,
}

impl Opcode {
    fn from_bits(bits: u8) -> Option<Self> {
        Some(match bits {
            0x0 => Opcode::Continuation,
            0x1 => Opcode::Text,
            0x2 => Opcode::Binary,
            0x8 => Opcode::Close,
            0x9 => Opcode::Ping,
            0xA => Opcode::Pong,
            _ => return None,
        })
    }

    fn bits(self) -> u8 {
        match self {
            Opcode::Continuation => 0x0,
            Opcode::Text => 0x1,
            Opcode::Binary => 0x2,
            Opcode::Close => 0x8,
            Opcode::Ping => 0x9,
            Opcode::Pong => 0xA,
        }
    }
}

/// Writes the header of a whole, unmasked frame of `opcode` with `len` payload bytes into
/// the end of `room` (which must be [`HEADER_ROOM`] bytes); returns where it starts, so that
/// `room[start..]` followed by the payload is the frame.
pub fn header_into(room: &mut [u8], opcode: Opcode, len: usize) -> usize {
    let first = 0x80 | opcode.bits();
    let start = match len {
        0..=125 => {
            room[HEADER_ROOM - 1] = u8::try_from(len).unwrap_or(0);
            HEADER_ROOM - 2
        }
        126..=0xFFFF => {
            room[HEADER_ROOM - 2..].copy_from_slice(&u16::try_from(len).unwrap_or(0).to_be_bytes());
            room[HEADER_ROOM - 3] = 126;
            HEADER_ROOM - 4
        }
        _ => {
            room[HEADER_ROOM - 8..].copy_from_slice(&(len as u64).to_be_bytes());
            room[HEADER_ROOM - 9] = 127;
            HEADER_ROOM - 10
        }
    };
    room[start] = first;
    start
}

/// A whole server frame of `opcode` carrying `payload`.
pub fn frame(opcode: Opcode, payload: &[u8]) -> Vec<u8> {
    let mut room = [0u8; HEADER_ROOM];
    let start = header_into(&mut room, opcode, payload.len());
    let mut out = Vec::with_capacity(HEADER_ROOM - start + payload.len());
    out.extend_from_slice(&room[start..]);
    out.extend_from_slice(payload);
    out
}

/// A close frame with `code` and `reason`.
pub fn close(code: u16, reason: &str) -> Vec<u8> {
    let mut payload = code.to_be_bytes().to_vec();
    payload.extend_from_slice(reason.as_bytes());
    frame(Opcode::Close, &payload)
}

/// One client frame found at the start of a buffer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientFrame {
    /// Its opcode.
    pub opcode: Opcode,
    /// Whether it is the last frame of its message.
    pub fin: bool,
    /// Where its (unmasked) payload is in the buffer.
    pub payload: Range<usize>,
    /// How many bytes of the buffer it took, header included.
    pub len: usize,
}

/// Why a client's bytes are not a frame this server takes.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FrameError {
    /// RSV bits set, an unknown opcode, or an unmasked client frame.
    #[error("{0}")]
    Protocol(&'static str),
    /// A payload longer than the server takes.
    #[error("a frame of {0} bytes is longer than the {MAX_PAYLOAD} the server takes")]
    TooLong(u64),
}

/// The longest client payload taken (agent-server's default frame limit, times its abuse
/// factor of 4, as the baseline takes).
pub const MAX_PAYLOAD: usize = 4 * 65_536;

/// Reads the client frame at the start of `buf`, unmasking its payload in place; `Ok(None)`
/// while `buf` holds only part of it.
pub fn parse_client(buf: &mut [u8]) -> Result<Option<ClientFrame>, FrameError> {
    let [first, second, ..] = *buf else {
        return Ok(None);
    };
    if first & 0x70 != 0 {
        return Err(FrameError::Protocol(
            "reserved bits set without an extension",
        ));
    }
    let opcode = Opcode::from_bits(first & 0x0F).ok_or(FrameError::Protocol("unknown opcode"))?;
    if second & 0x80 == 0 {
        return Err(FrameError::Protocol("a client frame must be masked"));
    }
    let (len, mut at) = match second & 0x7F {
        126 => match buf.get(2..4) {
            Some(b) => (u64::from(u16::from_be_bytes([b[0], b[1]])), 4),
            None => return Ok(None),
        },
        127 => match buf.get(2..10) {
            Some(b) => (u64::from_be_bytes(b.try_into().unwrap_or([0xFF; 8])), 10),
            None => return Ok(None),
        },
        short => (u64::from(short), 2),
    };
    let len = usize::try_from(len)
        .ok()
        .filter(|l| *l <= MAX_PAYLOAD)
        .ok_or(FrameError::TooLong(len))?;
    let Some(mask) = buf.get(at..at + 4) else {
        return Ok(None);
    };
    let mask = [mask[0], mask[1], mask[2], mask[3]];
    at += 4;
    let Some(payload) = buf.get_mut(at..at + len) else {
        return Ok(None);
    };
    for (i, byte) in payload.iter_mut().enumerate() {
        *byte ^= mask[i % 4];
    }
    Ok(Some(ClientFrame {
        opcode,
        fin: first & 0x80 != 0,
        payload: at..at + len,
        len: at + len,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A client frame as a client writes it: masked with `mask`.
    fn masked(opcode: Opcode, payload: &[u8], mask: [u8; 4]) -> Vec<u8> {
        let server = frame(opcode, payload);
        let header_len = server.len() - payload.len();
        let mut out = server[..header_len].to_vec();
        out[1] |= 0x80;
        out.extend_from_slice(&mask);
        out.extend(payload.iter().enumerate().map(|(i, b)| b ^ mask[i % 4]));
        out
    }

    #[test]
    fn server_frames_have_the_shortest_length_encoding() {
        assert_eq!(frame(Opcode::Text, b"hi"), [0x81, 2, b'h', b'i']);
        let medium = frame(Opcode::Text, &[b'x'; 300]);
        assert_eq!(medium[..4], [0x81, 126, 0x01, 0x2C]);
        assert_eq!(medium.len(), 304);
        let long = frame(Opcode::Binary, &vec![0; 70_000]);
        assert_eq!(long[..2], [0x82, 127]);
        assert_eq!(long[2..10], 70_000u64.to_be_bytes());
        assert_eq!(long.len(), 70_010);
        assert_eq!(close(1000, "bye"), [0x88, 5, 0x03, 0xE8, b'b', b'y', b'e']);
    }

    #[test]
    fn client_frames_are_unmasked_in_place_and_need_all_their_bytes() {
        for size in [0, 5, 125, 126, 300, 70_000] {
            let payload: Vec<u8> = (0..size).map(|i| (i % 251) as u8).collect();
            let mut bytes = masked(Opcode::Text, &payload, [1, 2, 3, 250]);
            bytes.extend_from_slice(b"next");
            let total = bytes.len() - 4;
            for cut in [0, 1, total - 1] {
                assert_eq!(
                    parse_client(&mut bytes[..cut].to_vec()),
                    Ok(None),
                    "{size} cut {cut}"
                );
            }
            let got = parse_client(&mut bytes).expect("valid").expect("whole");
            assert_eq!(got.opcode, Opcode::Text);
            assert!(got.fin);
            assert_eq!(got.len, total);
            assert_eq!(&bytes[got.payload], payload.as_slice());
        }
    }

    #[test]
    fn bad_client_frames_say_why() {
        let mut unmasked = frame(Opcode::Text, b"hi");
        assert_eq!(
            parse_client(&mut unmasked),
            Err(FrameError::Protocol("a client frame must be masked"))
        );
        let mut reserved = masked(Opcode::Text, b"hi", [0; 4]);
        reserved[0] |= 0x40;
        assert!(parse_client(&mut reserved).is_err());
        let mut unknown = masked(Opcode::Text, b"hi", [0; 4]);
        unknown[0] = 0x83;
        assert_eq!(
            parse_client(&mut unknown),
            Err(FrameError::Protocol("unknown opcode"))
        );
        let mut huge = vec![0x81, 0xFF];
        huge.extend_from_slice(&(1u64 << 40).to_be_bytes());
        assert_eq!(parse_client(&mut huge), Err(FrameError::TooLong(1 << 40)));
    }
}
