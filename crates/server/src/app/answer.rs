//! What a use case answers with: what it just did, or an answer given before (the first
//! outcome of a retried request, or a cached copy), kept as the wire module recorded it.

use std::marker::PhantomData;

/// The answer of a use case whose result is recorded for replays.
#[derive(Clone)]
pub enum Answer<T> {
    /// What this call did.
    Fresh(T),
    /// An answer given before, exactly as it was sent.
    Recorded(Recorded<T>),
}

/// The recorded answer of a request, as `wire::record` encoded a `T`. Opaque here: only the
/// wire module reads it.
pub struct Recorded<T> {
    bytes: Vec<u8>,
    of: PhantomData<fn() -> T>,
}

impl<T> Recorded<T> {
    pub fn new(bytes: Vec<u8>) -> Self {
        Self {
            bytes,
            of: PhantomData,
        }
    }

    pub fn bytes(&self) -> &[u8] {
        &self.bytes
    }
}

impl<T> Clone for Recorded<T> {
    fn clone(&self) -> Self {
        Self::new(self.bytes.clone())
    }
}
