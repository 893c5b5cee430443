//! Shoal's wire messages and their framing.
//!
//! This is the only crate every other Shoal crate depends on. It holds the
//! prost types generated from `proto/shoal.proto` and the length-prefixed
//! framing used on every stream (Unix socket, TCP, later QUIC): a big-endian
//! `u32` length followed by the encoded message. Keeping framing here means
//! the node and every client agree on limits and on version checks.

pub mod cli;
pub mod client;
pub mod frame;
pub mod json;
pub mod units;

/// Generated protocol types (package `shoal.v1`).
pub mod v1 {
    include!(concat!(env!("OUT_DIR"), "/shoal.v1.rs"));
}

pub use frame::{
    encode_frame, read_frame, read_frame_limited, write_frame, FrameError, MAX_FRAME_BYTES,
};

/// The protocol version this build speaks. Bumped on any incompatible change;
/// a peer receiving another version answers `UNSUPPORTED_VERSION`.
pub const PROTOCOL_VERSION: u32 = 1;

impl v1::Response {
    /// Wraps a response kind with this build's protocol version.
    pub fn new(kind: v1::response::Kind) -> Self {
        Self {
            protocol_version: PROTOCOL_VERSION,
            kind: Some(kind),
        }
    }

    /// An error response.
    pub fn error(code: v1::ErrorCode, message: impl Into<String>) -> Self {
        Self::new(v1::response::Kind::Error(v1::Error {
            code: code as i32,
            message: message.into(),
        }))
    }
}

impl v1::PeerResponse {
    pub fn new(kind: v1::peer_response::Kind) -> Self {
        Self {
            protocol_version: PROTOCOL_VERSION,
            kind: Some(kind),
        }
    }
}

impl v1::PeerRequest {
    pub fn new(kind: v1::peer_request::Kind) -> Self {
        Self {
            protocol_version: PROTOCOL_VERSION,
            kind: Some(kind),
        }
    }
}

impl v1::Request {
    /// Wraps a request kind with this build's protocol version.
    pub fn new(kind: v1::request::Kind) -> Self {
        Self {
            protocol_version: PROTOCOL_VERSION,
            auth_token: String::new(),
            kind: Some(kind),
        }
    }
}
