//! Sending over UDP: the datagrams one pass of a call's loop queued, three ways:
//!
//! - `sendto_each`: one `sendto` per datagram (how the engine sent before);
//! - `sendmmsg`: one `sendmmsg` for the lot, every datagram its own message;
//! - `sendmmsg_gso`: the same with each run of equal-sized datagrams to one address as one
//!   message the kernel segments (`UDP_SEGMENT`): the engine's path (`src/socket.rs`,
//!   `CallSocket::send_queued`).
//!
//! `send/<n>x<size>/...`: `n` datagrams of `size` bytes to a loopback peer that a thread
//! drains. 8 x 1200 is a video frame of about 10 KB (720p at 2.5 Mbit/s and 30 fps), 32 x 1200
//! a slice of a key frame, 2 x 120 an audio packet and a report.
//!
//! Linux only (elsewhere the engine sends one by one). Run:
//! `cargo bench -p groupcall-engine --bench socket`

#[cfg(target_os = "linux")]
mod linux {
    use std::hint::black_box;
    use std::net::UdpSocket;

    use bytes::BytesMut;
    use criterion::{BenchmarkId, Criterion};
    use groupcall_engine::bench::{send_batch, SEND_BATCH};
    use groupcall_engine::media::Transmit;

    fn send_all(socket: &UdpSocket, datagrams: &[Transmit], segment: bool) {
        let mut from = 0;
        while from < datagrams.len() {
            match send_batch(socket, &datagrams[from..], segment) {
                Ok(sent) => from += sent,
                // A send buffer full for a moment (the other path blocks there).
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => std::thread::yield_now(),
                Err(e) => panic!("sendmmsg: {e}"),
            }
        }
    }

    pub fn bench(c: &mut Criterion) {
        let peer = UdpSocket::bind("127.0.0.1:0").unwrap();
        let to = peer.local_addr().unwrap();
        // The peer reads everything, so the sender never meets a full receive queue (where
        // the kernel would drop early and cheaply).
        let drain = peer.try_clone().unwrap();
        std::thread::spawn(move || {
            let mut buf = [0u8; 2048];
            while drain.recv(&mut buf).is_ok() {}
        });
        let socket = UdpSocket::bind("127.0.0.1:0").unwrap();
        let mut group = c.benchmark_group("send");
        for (n, size) in [(8, 1200), (SEND_BATCH, 1200), (2, 120)] {
            let datagrams: Vec<Transmit> = (0..n)
                .map(|i| Transmit {
                    destination: to,
                    contents: BytesMut::from(&vec![i as u8; size][..]),
                })
                .collect();
            let id = format!("{n}x{size}");
            group.bench_function(BenchmarkId::new(&id, "sendto_each"), |b| {
                b.iter(|| {
                    for t in &datagrams {
                        black_box(socket.send_to(&t.contents, t.destination).unwrap());
                    }
                })
            });
            group.bench_function(BenchmarkId::new(&id, "sendmmsg"), |b| {
                b.iter(|| send_all(&socket, &datagrams, false))
            });
            group.bench_function(BenchmarkId::new(&id, "sendmmsg_gso"), |b| {
                b.iter(|| send_all(&socket, &datagrams, true))
            });
        }
        group.finish();
    }
}

#[cfg(target_os = "linux")]
criterion::criterion_group!(benches, linux::bench);
#[cfg(target_os = "linux")]
criterion::criterion_main!(benches);

#[cfg(not(target_os = "linux"))]
fn main() {
    eprintln!("batched sending is Linux only; nothing to measure here");
}
