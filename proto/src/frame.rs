//! Length-prefixed framing of prost messages over any async byte stream.

use bytes::{BufMut, Bytes, BytesMut};
use prost::Message;
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
}

/// Reads one frame; `Ok(None)` on a clean end of stream between frames
/// (a stream that ends inside a length prefix was cut off: an error).
pub async fn read_frame<M, R>(reader: &mut R) -> Result<Option<M>, FrameError>
where
    M: Message + Default,
    R: AsyncRead + Unpin,
{
    read_frame_limited(reader, MAX_FRAME_BYTES).await
}

/// [`read_frame`] refusing frames over `max` bytes before reading them
/// (for peers not yet authenticated).
pub async fn read_frame_limited<M, R>(reader: &mut R, max: u32) -> Result<Option<M>, FrameError>
where
    M: Message + Default,
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
    Ok(Some(M::decode(Bytes::from(buf))?))
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
