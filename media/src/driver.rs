//! A small tokio driver that runs one [`Transport`] over a real UDP socket. It is the whole of
//! what the sans-IO core asks of an I/O layer: send what the transport queues, feed it what
//! arrives, and wake it at its timeout. The engine's driver adds audio on top of the same loop.

use std::io;
use std::time::{Duration, Instant};

use tokio::net::UdpSocket;

use crate::transport::{Event, Transport};

/// Largest datagram read; anything longer is truncated by the kernel and then refused as
/// malformed by the transport.
const RECV_BUFFER: usize = 2048;

pub struct UdpDriver {
    socket: UdpSocket,
    transport: Transport,
    buf: Box<[u8]>,
}

impl UdpDriver {
    /// `transport` must have been built with `socket`'s local address.
    pub fn new(socket: UdpSocket, transport: Transport) -> Self {
        UdpDriver {
            socket,
            transport,
            buf: vec![0; RECV_BUFFER].into_boxed_slice(),
        }
    }

    pub fn transport(&self) -> &Transport {
        &self.transport
    }

    /// For sending media; the packets go out at the next [`next_event`](Self::next_event) or
    /// [`flush`](Self::flush).
    pub fn transport_mut(&mut self) -> &mut Transport {
        &mut self.transport
    }

    pub fn socket(&self) -> &UdpSocket {
        &self.socket
    }

    /// Sends everything the transport has queued.
    pub async fn flush(&mut self) -> io::Result<()> {
        while let Some(t) = self.transport.poll_transmit() {
            if let Err(e) = self.socket.send_to(&t.contents, t.destination).await {
                // A send error (no route, ICMP refusal from an earlier send) concerns one
                // datagram; the transport's own timeouts decide whether the path is dead.
                tracing::debug!("send to {} failed: {e}", t.destination);
            }
        }
        Ok(())
    }

    /// Drives the transport until it reports an event. Cancel-safe.
    pub async fn next_event(&mut self) -> io::Result<Event> {
        loop {
            self.flush().await?;
            if let Some(e) = self.transport.poll_event() {
                return Ok(e);
            }
            let wake = self
                .transport
                .poll_timeout()
                .unwrap_or_else(|| Instant::now() + Duration::from_secs(1));
            tokio::select! {
                r = self.socket.recv_from(&mut self.buf) => {
                    match r {
                        Ok((n, from)) => self.transport.handle_datagram(Instant::now(), from, &self.buf[..n]),
                        // ICMP port unreachable from an earlier send surfaces here on Linux.
                        Err(e) if e.kind() == io::ErrorKind::ConnectionRefused => {}
                        Err(e) => return Err(e),
                    }
                }
                _ = tokio::time::sleep_until(tokio::time::Instant::from_std(wake)) => {
                    self.transport.handle_timeout(Instant::now());
                }
            }
        }
    }

    pub fn into_inner(self) -> (UdpSocket, Transport) {
        (self.socket, self.transport)
    }
}
