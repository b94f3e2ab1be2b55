//! The seam between the Telegram protocol logic and the network.
//!
//! [`Invoker`] moves serialized TL: a request's bytes out, the result's bytes (or an RPC error)
//! back. Everything above it (building requests, decoding results, mapping errors, waiting out
//! FLOOD_WAIT, retrying joins) is the same code in production and in tests; only this trait's
//! implementation differs: [`GrammersInvoker`] sends through `grammers_client::Client::invoke`,
//! the tests replay scripted TL bytes.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use grammers_client::sender::InvocationError;
use grammers_client::session::types::PeerId as GrammersPeerId;
use grammers_client::session::Session;
use grammers_client::tl::{self, Deserializable, RemoteCall, Serializable};
use grammers_client::Client;

use super::session::StoredSession;
use crate::types::PeerId;

pub(crate) type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

pub(crate) trait Invoker: Send + Sync + 'static {
    /// Sends one serialized TL function and returns its serialized result.
    fn invoke(&self, request: Vec<u8>) -> BoxFuture<'_, Result<Vec<u8>, InvocationError>>;

    /// The access hash the session has cached for `peer`, if any.
    fn cached_access_hash(&self, peer: PeerId) -> BoxFuture<'_, Option<i64>>;
}

/// A request whose bytes are already serialized.
struct RawRequest(Vec<u8>);

/// A result kept as bytes, to be decoded by the caller that knows its type.
struct RawResult(Vec<u8>);

impl Serializable for RawRequest {
    fn serialize(&self, buf: &mut impl Extend<u8>) {
        buf.extend(self.0.iter().copied());
    }
}

impl Deserializable for RawResult {
    fn deserialize(buf: &mut tl::Cursor<'_>) -> tl::deserialize::Result<Self> {
        let mut out = Vec::new();
        buf.read_to_end(&mut out)?;
        Ok(RawResult(out))
    }
}

impl RemoteCall for RawRequest {
    type Return = RawResult;
}

/// The production invoker: a logged-in grammers client and the session it uses.
pub(crate) struct GrammersInvoker {
    pub client: Client,
    pub session: Arc<StoredSession>,
}

impl Invoker for GrammersInvoker {
    fn invoke(&self, request: Vec<u8>) -> BoxFuture<'_, Result<Vec<u8>, InvocationError>> {
        Box::pin(async move { self.client.invoke(&RawRequest(request)).await.map(|r| r.0) })
    }

    fn cached_access_hash(&self, peer: PeerId) -> BoxFuture<'_, Option<i64>> {
        Box::pin(async move {
            let id = match peer {
                PeerId::User(id) => GrammersPeerId::user(id),
                PeerId::Chat(id) => GrammersPeerId::chat(id),
                PeerId::Channel(id) => GrammersPeerId::channel(id),
            }?;
            let info = self.session.peer(id).await.ok()??;
            info.auth().map(|a| a.hash())
        })
    }
}
