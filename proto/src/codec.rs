//! The gRPC codec of every Strait service: prost's, except that a message's buffer is
//! sized to the whole encoded message before encoding.
//!
//! tonic encodes into a growing buffer. With prost's own codec, a produce request's
//! record batch (hundreds of KiB) grows the buffer to just its size, and the next small
//! field after it doubles the buffer, copying the batch once more. Reserving
//! `encoded_len` first makes the batch's copy into the request the only one.

use std::marker::PhantomData;

use prost::Message;
use tonic::Status;
use tonic::codec::{Codec, EncodeBuf, Encoder};
use tonic_prost::ProstDecoder;

/// prost's codec with encode buffers sized up front (see the module documentation).
#[derive(Debug, Clone)]
pub struct PresizedCodec<T, U>(PhantomData<(T, U)>);

impl<T, U> Default for PresizedCodec<T, U> {
    fn default() -> Self {
        PresizedCodec(PhantomData)
    }
}

impl<T, U> Codec for PresizedCodec<T, U>
where
    T: Message + Send + 'static,
    U: Message + Default + Send + 'static,
{
    type Encode = T;
    type Decode = U;
    type Encoder = PresizedEncoder<T>;
    type Decoder = ProstDecoder<U>;

    fn encoder(&mut self) -> Self::Encoder {
        PresizedEncoder(PhantomData)
    }

    fn decoder(&mut self) -> Self::Decoder {
        ProstDecoder::default()
    }
}

/// Encodes `T` into a buffer first grown to the message's encoded length.
#[derive(Debug, Clone)]
pub struct PresizedEncoder<T>(PhantomData<T>);

impl<T: Message> Encoder for PresizedEncoder<T> {
    type Item = T;
    type Error = Status;

    fn encode(&mut self, item: T, buf: &mut EncodeBuf<'_>) -> Result<(), Status> {
        buf.reserve(item.encoded_len());
        item.encode(buf)
            .map_err(|err| Status::internal(format!("cannot encode a message: {err}")))
    }
}
