//! The protobuf codec of every generated client and server (`build.rs` names it): prost's, with
//! a small first buffer per call. tonic's default reserves 8 KiB per response body, and a
//! node holds a TaskStats stream open per task whose samples are a few hundred bytes, so the
//! default was most of the plugin's memory per task; a larger message grows the buffer as
//! needed.

use std::marker::PhantomData;

use tonic::codec::{BufferSettings, Codec};
use tonic_prost::{ProstCodec, ProstDecoder, ProstEncoder};

/// First capacity of a call's encode and decode buffers, in bytes.
pub const BUFFER_SIZE: usize = 1024;
/// tonic's default: how much a streaming body encodes before yielding.
const YIELD_THRESHOLD: usize = 32 * 1024;

/// See the module documentation.
#[derive(Debug, Clone)]
pub struct SmallCodec<T, U>(PhantomData<(T, U)>);

impl<T, U> Default for SmallCodec<T, U> {
    fn default() -> Self {
        Self(PhantomData)
    }
}

fn settings() -> BufferSettings {
    BufferSettings::new(BUFFER_SIZE, YIELD_THRESHOLD)
}

impl<T, U> Codec for SmallCodec<T, U>
where
    T: prost::Message + Send + 'static,
    U: prost::Message + Default + Send + 'static,
{
    type Encode = T;
    type Decode = U;
    type Encoder = ProstEncoder<T>;
    type Decoder = ProstDecoder<U>;

    fn encoder(&mut self) -> Self::Encoder {
        ProstCodec::<T, U>::raw_encoder(settings())
    }

    fn decoder(&mut self) -> Self::Decoder {
        ProstCodec::<T, U>::raw_decoder(settings())
    }
}
