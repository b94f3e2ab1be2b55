//! The same transport over real UDP sockets on loopback (IPv4 and IPv6), driven by the tokio
//! driver with the wall clock: three speakers the client never heard of arrive decrypted.

mod common;

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use groupcall_media::driver::UdpDriver;
use groupcall_media::{Event, OutgoingRtp, TransportConfig};
use tokio::net::UdpSocket;

async fn run(ip: &str) {
    let cs = UdpSocket::bind(format!("{ip}:0")).await.unwrap();
    let ss = UdpSocket::bind(format!("{ip}:0")).await.unwrap();
    let p = common::pair(
        cs.local_addr().unwrap(),
        ss.local_addr().unwrap(),
        TransportConfig::default(),
        TransportConfig::server(),
        |a| a,
        None,
        Instant::now(),
    );
    let my_ssrc = p.client_identity.audio_ssrc;
    let mut client = UdpDriver::new(cs, p.client);
    let mut server = UdpDriver::new(ss, p.server);

    let speakers = [11u32, 0x9000_0022, 33];
    let server_task = tokio::spawn(async move {
        let mut from_client = 0;
        let mut sent = false;
        loop {
            match server.next_event().await.unwrap() {
                Event::Connected { .. } if !sent => {
                    sent = true;
                    for seq in 0..50u16 {
                        for ssrc in speakers {
                            let t = server.transport_mut();
                            t.send_rtp(
                                Instant::now(),
                                &OutgoingRtp::new(
                                    ssrc,
                                    seq,
                                    seq as u32 * 960,
                                    111,
                                    &[seq as u8; 60],
                                ),
                            )
                            .unwrap();
                        }
                        server.flush().await.unwrap();
                    }
                }
                Event::Rtp(r) if r.ssrc == my_ssrc => {
                    from_client += 1;
                    if from_client == 10 {
                        return from_client;
                    }
                }
                _ => {}
            }
        }
    });

    let t0 = Instant::now();
    let mut connected_after = None;
    let mut per_ssrc: BTreeMap<u32, usize> = BTreeMap::new();
    while per_ssrc.values().sum::<usize>() < 150 {
        match client.next_event().await.unwrap() {
            Event::Connected { .. } => {
                connected_after = Some(t0.elapsed());
                for seq in 0..10 {
                    client
                        .transport_mut()
                        .send_rtp(
                            Instant::now(),
                            &OutgoingRtp::new(my_ssrc, seq, 0, 111, b"hi"),
                        )
                        .unwrap();
                }
            }
            Event::Rtp(r) => *per_ssrc.entry(r.ssrc).or_default() += 1,
            _ => {}
        }
    }
    assert!(connected_after.is_some());
    assert_eq!(per_ssrc.len(), 3);
    assert!(per_ssrc.values().all(|n| *n == 50), "{per_ssrc:?}");
    let got = tokio::time::timeout(Duration::from_secs(5), async {
        // Keep servicing the client's socket while the server counts what it sent.
        let keep_client_alive = async {
            loop {
                let _ = client.next_event().await;
            }
        };
        tokio::select! {
            n = server_task => n.unwrap(),
            _ = keep_client_alive => unreachable!("the client loop never ends"),
        }
    })
    .await
    .expect("server heard the client");
    assert_eq!(got, 10);
    println!("{ip}: connected in {:?}", connected_after.unwrap());
}

#[tokio::test]
async fn ipv4_loopback() {
    tokio::time::timeout(Duration::from_secs(20), run("127.0.0.1"))
        .await
        .unwrap();
}

#[tokio::test]
async fn ipv6_loopback() {
    if std::net::UdpSocket::bind("[::1]:0").is_err() {
        println!("skipped: this machine has no IPv6 loopback");
        return;
    }
    tokio::time::timeout(Duration::from_secs(20), run("[::1]"))
        .await
        .unwrap();
}
