//! The impairment relay of the local server's crate (`groupcall_sfu::impair`), started on
//! loopback in front of a test's server. A call goes through it with
//! `CallConfig::media_via = Some(relay.local_addr())`.

use std::net::SocketAddr;

#[allow(unused_imports)] // each test crate uses some of them
pub use groupcall_sfu::impair::{Direction, ImpairConfig, Relay};

/// A relay in front of `server`'s media address.
pub async fn relay(server: SocketAddr, config: ImpairConfig) -> Relay {
    Relay::start("127.0.0.1:0".parse().unwrap(), server, config)
        .await
        .expect("the relay binds a loopback port")
}
