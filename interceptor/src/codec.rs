//! The protobuf codec for servers: like tonic's, but a request body that
//! does not decode is the caller's mistake, answered `INVALID_ARGUMENT` with
//! the reason `INVALID_REQUEST` and no decoder details (tonic's own codec
//! answers `INTERNAL` with the decoder's message).
//!
//! Use it for generated servers only (`tonic_prost_build::configure()
//! .build_client(false).codec_path("tokend_interceptor::server::RequestCodec")`):
//! for a client, an undecodable response is not the client's mistake.

use std::marker::PhantomData;

use prost::Message;
use tonic::Status;
use tonic::codec::{BufferSettings, Codec, DecodeBuf, Decoder};
use tonic_prost::{ProstCodec, ProstEncoder};

use crate::reason::Reason;

/// The codec for a server's messages.
#[derive(Debug, Clone)]
pub struct RequestCodec<T, U> {
    inner: ProstCodec<T, U>,
}

impl<T, U> Default for RequestCodec<T, U> {
    fn default() -> Self {
        RequestCodec {
            inner: ProstCodec::default(),
        }
    }
}

impl<T, U> Codec for RequestCodec<T, U>
where
    T: Message + Send + 'static,
    U: Message + Default + Send + 'static,
{
    type Encode = T;
    type Decode = U;
    type Encoder = ProstEncoder<T>;
    type Decoder = RequestDecoder<U>;

    fn encoder(&mut self) -> Self::Encoder {
        self.inner.encoder()
    }

    fn decoder(&mut self) -> Self::Decoder {
        RequestDecoder {
            _message: PhantomData,
        }
    }
}

/// Decodes requests; see the module docs.
#[derive(Debug, Clone)]
pub struct RequestDecoder<U> {
    _message: PhantomData<U>,
}

impl<U: Message + Default> Decoder for RequestDecoder<U> {
    type Item = U;
    type Error = Status;

    fn decode(&mut self, buf: &mut DecodeBuf<'_>) -> Result<Option<U>, Status> {
        U::decode(buf).map(Some).map_err(|_| {
            Reason::InvalidRequest
                .status("the request body is not a valid protobuf message of its type")
        })
    }

    fn buffer_settings(&self) -> BufferSettings {
        BufferSettings::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn undecodable_requests_are_the_callers_mistake() {
        let status = Reason::InvalidRequest.status("x");
        assert_eq!(status.code(), tonic::Code::InvalidArgument);
    }
}
