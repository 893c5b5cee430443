//! Length-prefixed framing of prost messages over any async byte stream.

use std::collections::HashMap;
use std::sync::OnceLock;

use bytes::{BufMut, Bytes, BytesMut};
use prost::{Message, Name};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

/// Largest frame accepted, so a corrupt or hostile length cannot make the
/// reader allocate without bound. Reads are split by clients well below this.
pub const MAX_FRAME_BYTES: u32 = 80 << 20;

/// Errors while reading or writing a frame.
#[derive(Debug, thiserror::Error)]
pub enum FrameError {
    #[error("connection i/o: {0}")]
    Io(#[from] std::io::Error),
    #[error("frame of {0} bytes exceeds the limit")]
    TooLarge(u32),
    #[error("malformed message: {0}")]
    Decode(#[from] prost::DecodeError),
    #[error(
        "frame of {len} bytes would decode to about {estimate} bytes (at most {limit}): refused"
    )]
    TooComplex {
        len: usize,
        estimate: usize,
        limit: usize,
    },
}

/// Reads one frame; `Ok(None)` on a clean end of stream between frames
/// (a stream that ends inside a length prefix was cut off: an error).
pub async fn read_frame<M, R>(reader: &mut R) -> Result<Option<M>, FrameError>
where
    M: Message + Default + Name,
    R: AsyncRead + Unpin,
{
    read_frame_limited(reader, MAX_FRAME_BYTES).await
}

/// [`read_frame`] refusing frames over `max` bytes before reading them
/// (for peers not yet authenticated).
pub async fn read_frame_limited<M, R>(reader: &mut R, max: u32) -> Result<Option<M>, FrameError>
where
    M: Message + Default + Name,
    R: AsyncRead + Unpin,
{
    let mut head = [0u8; 4];
    let mut got = 0;
    while got < head.len() {
        match reader.read(&mut head[got..]).await? {
            0 if got == 0 => return Ok(None),
            0 => return Err(std::io::Error::from(std::io::ErrorKind::UnexpectedEof).into()),
            n => got += n,
        }
    }
    let len = u32::from_be_bytes(head);
    if len > max.min(MAX_FRAME_BYTES) {
        return Err(FrameError::TooLarge(len));
    }
    // Memory grows with the bytes that actually arrived, by exact steps: a
    // peer announcing a large frame and sending little costs at most one
    // step, and a whole frame costs its size (a doubling buffer would cost
    // up to twice that, kept alive by the `bytes` fields decoded as slices
    // of it, not copies). It is never zero-filled first.
    let len = len as usize;
    let mut buf: Vec<u8> = Vec::new();
    while buf.len() < len {
        if buf.len() == buf.capacity() {
            buf.reserve_exact((len - buf.len()).min(READ_STEP));
        }
        let room = buf.capacity() - buf.len();
        let n = reader.read_buf(&mut (&mut buf).limit(room)).await?;
        if n == 0 {
            return Err(std::io::Error::from(std::io::ErrorKind::UnexpectedEof).into());
        }
    }
    check_decoded_size(&buf, M::NAME)?;
    Ok(Some(M::decode(Bytes::from(buf))?))
}

/// What one nested message may take once decoded: at least the largest
/// message struct of the protocol (a test holds every type to it).
pub const DECODED_MESSAGE_BYTES: usize = 384;
/// What one map entry (two strings in a hash map) may take decoded.
const DECODED_MAP_ENTRY_BYTES: usize = 96;
/// What a string or bytes field takes decoded beyond its own bytes (its
/// header, when it is an element of a repeated field).
const DECODED_FIELD_BYTES: usize = 24;
/// Decoded memory allowed per byte of frame, and the floor every frame may
/// use whatever its size.
const DECODED_PER_FRAME_BYTE: usize = 16;
const DECODED_FLOOR: usize = 64 << 20;
/// Nesting followed (the protocol nests five deep and has no recursion).
const MAX_NESTING: u32 = 16;

/// What a field holds, where it decodes to more than its wire bytes.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Field {
    /// A nested message of this type (full name).
    Message(&'static str),
    /// An entry of a `map<string, string>`.
    MapEntry,
    /// Packed repeated numbers (8 bytes each decoded, 1 or more on the wire).
    Packed,
}

mod shape {
    use super::Field;
    include!(concat!(env!("OUT_DIR"), "/shape.rs"));
}

/// The shape table by (message, field number).
fn shapes() -> &'static HashMap<(&'static str, u32), Field> {
    static SHAPES: OnceLock<HashMap<(&'static str, u32), Field>> = OnceLock::new();
    SHAPES.get_or_init(|| {
        shape::SHAPE
            .iter()
            .map(|&(msg, number, field)| ((msg, number), field))
            .collect()
    })
}

/// Refuses a frame whose message would decode to far more memory than its
/// size. Decoding is where a small frame can become large: an empty nested
/// message is 2 bytes on the wire and a few hundred in memory, so 80 MiB
/// of them decoded to about 18 GiB. The estimate walks the wire format
/// guided by the schema (`build.rs` generates the table from the
/// descriptors): nested messages, map entries and packed numbers cost
/// what they may decode to, strings and bytes their header (their bytes
/// were paid for), so user data in a `bytes` field is never read as
/// messages. Frames may decode to 16 times their size or 64 MiB, whichever
/// is more: real messages estimate at about 5 times (a listing of file
/// entries, tested), and the worst a hostile frame can do is about 30
/// times (nested messages just large enough to pass, in vectors at their
/// growth slack): about 2.3 GiB for 80 MiB.
fn check_decoded_size(buf: &[u8], message: &str) -> Result<(), FrameError> {
    let limit = buf
        .len()
        .saturating_mul(DECODED_PER_FRAME_BYTE)
        .max(DECODED_FLOOR);
    match decoded_estimate(buf, message, 0) {
        Some(estimate) if estimate > limit => Err(FrameError::TooComplex {
            len: buf.len(),
            estimate,
            limit,
        }),
        // Not a valid encoding: the decoder says why.
        _ => Ok(()),
    }
}

/// Memory message `message` encoded in `buf` may take decoded beyond its
/// own bytes, if `buf` parses. Linear in `buf`.
fn decoded_estimate(buf: &[u8], message: &str, depth: u32) -> Option<usize> {
    let shapes = shapes();
    let mut cost = 0usize;
    let mut rest = buf;
    while !rest.is_empty() {
        let (key, after) = varint(rest)?;
        rest = after;
        let number = u32::try_from(key >> 3).ok()?;
        match key & 7 {
            0 => rest = varint(rest)?.1,
            1 => rest = rest.get(8..)?,
            5 => rest = rest.get(4..)?,
            2 => {
                let (len, after) = varint(rest)?;
                let len = usize::try_from(len).ok()?;
                let payload = after.get(..len)?;
                rest = &after[len..];
                let field = match shapes.get(&(message, number)) {
                    Some(Field::Message(nested)) if depth < MAX_NESTING => DECODED_MESSAGE_BYTES
                        .saturating_add(decoded_estimate(payload, nested, depth + 1)?),
                    Some(Field::Message(_)) => return None,
                    Some(Field::MapEntry) => DECODED_MAP_ENTRY_BYTES,
                    Some(Field::Packed) => len.saturating_mul(8),
                    None => DECODED_FIELD_BYTES,
                };
                cost = cost.saturating_add(field);
            }
            // Groups (proto2) and invalid wire types: not our messages.
            _ => return None,
        }
    }
    Some(cost)
}

/// One base-128 varint and the bytes after it.
fn varint(buf: &[u8]) -> Option<(u64, &[u8])> {
    let mut v = 0u64;
    for (i, &b) in buf.iter().enumerate().take(10) {
        v |= u64::from(b & 0x7f) << (7 * i);
        if b < 0x80 {
            return Some((v, &buf[i + 1..]));
        }
    }
    None
}

/// Bytes a frame read allocates at a time, and so the most a frame costs
/// beyond the bytes that arrived. A default 4 MiB chunk with its framing
/// fits in one step; larger frames grow by whole steps.
pub const READ_STEP: usize = (4 << 20) + (64 << 10);

/// Encodes one frame (length prefix and message) into one buffer, for
/// transports that take owned buffers without copying them again.
pub fn encode_frame<M: Message>(msg: &M) -> Result<Bytes, FrameError> {
    let len = msg.encoded_len();
    let len32 = u32::try_from(len).map_err(|_| FrameError::TooLarge(u32::MAX))?;
    if len32 > MAX_FRAME_BYTES {
        return Err(FrameError::TooLarge(len32));
    }
    let mut buf = BytesMut::with_capacity(4 + len);
    buf.put_u32(len32);
    msg.encode(&mut buf).expect("buffer has capacity");
    Ok(buf.freeze())
}

/// Writes one frame and flushes it.
pub async fn write_frame<M, W>(writer: &mut W, msg: &M) -> Result<(), FrameError>
where
    M: Message,
    W: AsyncWrite + Unpin,
{
    let buf = encode_frame(msg)?;
    writer.write_all(&buf).await?;
    writer.flush().await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::v1;

    /// Every message type (`build.rs` lists them all) fits the estimate's
    /// cost of a nested message (a new field or type that grows past it
    /// must raise the constant).
    #[test]
    fn every_message_fits_the_decoded_message_cost() {
        let over: Vec<String> = shape::SIZES
            .iter()
            .filter(|(_, size)| *size > DECODED_MESSAGE_BYTES)
            .map(|(name, size)| format!("v1::{name} ({size} bytes)"))
            .collect();
        assert!(
            over.is_empty(),
            "larger than DECODED_MESSAGE_BYTES: {over:?}"
        );
    }

    /// Empty nested messages are 2 bytes on the wire and hundreds decoded:
    /// an 8 MiB gossip of them would have decoded to about 1 GiB.
    #[tokio::test]
    async fn frames_that_would_decode_far_larger_are_refused() {
        let members = 4usize << 20;
        let mut gossip = Vec::with_capacity(2 * members);
        for _ in 0..members {
            gossip.extend_from_slice(&[0x12, 0x00]); // Gossip.members = {}
        }
        let mut body = vec![0x52]; // PeerRequest.gossip (field 10, bytes)
        let mut n = gossip.len();
        while n >= 0x80 {
            body.push((n as u8) | 0x80);
            n >>= 7;
        }
        body.push(n as u8);
        body.extend_from_slice(&gossip);
        let gossip_bytes = gossip;
        let frame_len = body.len();
        let (mut a, mut b) = tokio::io::duplex(1 << 16);
        let w = tokio::spawn(async move {
            a.write_all(&(body.len() as u32).to_be_bytes())
                .await
                .unwrap();
            a.write_all(&body).await.unwrap();
        });
        let err = read_frame::<v1::PeerRequest, _>(&mut b).await.unwrap_err();
        w.await.unwrap();
        match err {
            FrameError::TooComplex {
                len,
                estimate,
                limit,
            } => {
                assert_eq!(len, frame_len);
                assert_eq!(
                    limit,
                    (frame_len * DECODED_PER_FRAME_BYTE).max(DECODED_FLOOR)
                );
                // One nested message per member, each counted.
                assert!(estimate >= members * DECODED_MESSAGE_BYTES, "{estimate}");
            }
            e => panic!("not refused as too complex: {e}"),
        }

        // The same bytes as a file's contents (a `bytes` field) are data,
        // never read as messages: they decode.
        let data = v1::ReadData {
            data: bytes::Bytes::from(gossip_bytes),
            ..Default::default()
        };
        let (mut a, mut b) = tokio::io::duplex(1 << 16);
        let sent = data.clone();
        let w = tokio::spawn(async move { write_frame(&mut a, &sent).await.unwrap() });
        let got: v1::ReadData = read_frame(&mut b).await.unwrap().unwrap();
        w.await.unwrap();
        assert_eq!(got, data);

        // A real large message still decodes: 100,000 file entries.
        let entry = |i: u32| v1::FileEntry {
            path: format!("data/shard-{i:06}/part.bin"),
            size: u64::from(i) * 4096,
            chunk_size: 4 << 20,
            file_version: bytes::Bytes::from(vec![7u8; 16]),
            etag: format!("{i:032x}"),
            ..Default::default()
        };
        let listing = v1::DirListing {
            entries: (0..100_000).map(entry).collect(),
            ..Default::default()
        };
        let wire = listing.encode_to_vec();
        let estimate = decoded_estimate(&wire, v1::DirListing::NAME, 0).unwrap();
        assert!(
            estimate <= 8 * wire.len(),
            "a real listing estimates at {estimate} bytes for {} on the wire",
            wire.len()
        );
        let (mut a, mut b) = tokio::io::duplex(1 << 16);
        let sent = listing.clone();
        let w = tokio::spawn(async move { write_frame(&mut a, &sent).await.unwrap() });
        let got: v1::DirListing = read_frame(&mut b).await.unwrap().unwrap();
        w.await.unwrap();
        assert_eq!(got, listing);
    }

    #[tokio::test]
    async fn round_trip_and_clean_eof() {
        let (mut a, mut b) = tokio::io::duplex(1 << 16);
        let req = v1::Request::new(v1::request::Kind::Get(v1::DatasetRef { name: "x".into() }));
        write_frame(&mut a, &req).await.unwrap();
        drop(a);
        let got: v1::Request = read_frame(&mut b).await.unwrap().unwrap();
        assert_eq!(got, req);
        let eof: Option<v1::Request> = read_frame(&mut b).await.unwrap();
        assert!(eof.is_none());
    }

    #[tokio::test]
    async fn large_bytes_fields_and_truncated_frames() {
        let (mut a, mut b) = tokio::io::duplex(1 << 16);
        let data = bytes::Bytes::from((0..(9 << 20)).map(|i| i as u8).collect::<Vec<u8>>());
        let msg = v1::ChunkData {
            data: data.clone(),
            hash: bytes::Bytes::from_static(b"h"),
        };
        let w = tokio::spawn(async move {
            write_frame(&mut a, &msg).await.unwrap();
            // A frame that announces more than it sends.
            a.write_all(&100u32.to_be_bytes()).await.unwrap();
            a.write_all(&[1, 2, 3]).await.unwrap();
        });
        let got: v1::ChunkData = read_frame(&mut b).await.unwrap().unwrap();
        assert_eq!(got.data, data);
        w.await.unwrap();
        let err = read_frame::<v1::ChunkData, _>(&mut b).await.unwrap_err();
        assert!(matches!(err, FrameError::Io(e) if e.kind() == std::io::ErrorKind::UnexpectedEof));
    }

    #[tokio::test]
    async fn oversized_length_is_refused() {
        let (mut a, mut b) = tokio::io::duplex(64);
        a.write_all(&(MAX_FRAME_BYTES + 1).to_be_bytes())
            .await
            .unwrap();
        let err = read_frame::<v1::Request, _>(&mut b).await.unwrap_err();
        assert!(matches!(err, FrameError::TooLarge(_)));
    }
}
