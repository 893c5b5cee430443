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

/// Reads one frame; `Ok(None)` on a clean end of stream before a length.
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
    let len = match reader.read_u32().await {
        Ok(len) => len,
        Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => return Ok(None),
        Err(e) => return Err(e.into()),
    };
    if len > max.min(MAX_FRAME_BYTES) {
        return Err(FrameError::TooLarge(len));
    }
    // Memory grows with the bytes that actually arrived (a peer announcing
    // a large frame and sending nothing costs nothing), is never zero-filled
    // first, and `bytes` fields decode as slices of it, not copies.
    let len = len as usize;
    let mut buf = BytesMut::new();
    while buf.len() < len {
        let want = (len - buf.len()).min(READ_STEP);
        buf.reserve(want);
        let n = reader.read_buf(&mut (&mut buf).limit(want)).await?;
        if n == 0 {
            return Err(std::io::Error::from(std::io::ErrorKind::UnexpectedEof).into());
        }
    }
    Ok(Some(M::decode(buf.freeze())?))
}

/// Bytes a frame read asks for at a time.
const READ_STEP: usize = 4 << 20;

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
