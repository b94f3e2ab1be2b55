//! Random, truncated and oversized datagrams of every class, fed to a connected transport:
//! never a panic, every one counted as received and as exactly one of used or dropped, and the
//! connection still carries media afterwards.

mod common;

use std::net::SocketAddr;
use std::time::Duration;

use groupcall_media::sim::Sim;
use groupcall_media::{Event, OutgoingRtp, Transport, TransportConfig};
use proptest::prelude::*;
use proptest::strategy::ValueTree;

fn connected_pair(seed: u64) -> (Sim, common::Pair) {
    let mut sim = Sim::new(seed);
    let mut p = common::pair(
        "10.0.0.1:5000".parse().unwrap(),
        "10.0.0.2:32000".parse().unwrap(),
        TransportConfig::default(),
        TransportConfig::server(),
        |a| a,
        None,
        sim.now,
    );
    let mut ev: [Vec<Event>; 2] = Default::default();
    let deadline = sim.now + Duration::from_secs(5);
    assert!(sim.run_until(
        &mut [&mut p.client, &mut p.server],
        &mut ev,
        deadline,
        |ts, _| ts.iter().all(|t| t.is_connected())
    ));
    (sim, p)
}

/// A datagram whose first byte puts it in one class (STUN, DTLS, RTP, RTCP or unknown), then
/// random bytes, anywhere from empty to far over an MTU.
fn datagram() -> impl Strategy<Value = Vec<u8>> {
    let first = prop_oneof![
        0u8..=3,
        20u8..=63,
        128u8..=191,
        4u8..=19,
        64u8..=127,
        192u8..=255
    ];
    let second = prop_oneof![any::<u8>(), 64u8..=95, Just(111u8)];
    (
        first,
        second,
        prop::collection::vec(any::<u8>(), 0..3000),
        0usize..3002,
    )
        .prop_map(|(a, b, mut rest, cut)| {
            rest.insert(0, b);
            rest.insert(0, a);
            rest.truncate(cut);
            rest
        })
}

fn check_invariant(t: &Transport, before_rx: u64, before_handled: u64, n: u64) {
    let s = t.stats();
    assert_eq!(s.received.total() - before_rx, n);
    assert_eq!(s.accepted + s.dropped() - before_handled, n, "{s:?}");
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 4000, ..ProptestConfig::default() })]

    #[test]
    fn garbage_never_panics_and_is_counted(batch in prop::collection::vec(datagram(), 1..8)) {
        thread_local! {
            static PAIR: std::cell::RefCell<Option<(Sim, common::Pair)>> = const { std::cell::RefCell::new(None) };
        }
        PAIR.with(|cell| {
            let mut cell = cell.borrow_mut();
            let (sim, p) = cell.get_or_insert_with(|| connected_pair(42));
            let server: SocketAddr = p.server.local_addr();
            for (target, from) in [(0usize, server), (1, p.client.local_addr())] {
                let t = if target == 0 { &mut p.client } else { &mut p.server };
                let s = t.stats();
                let (rx, handled) = (s.received.total(), s.accepted + s.dropped());
                let decrypted_before = s.ssrcs.values().map(|x| x.packets).sum::<u64>();
                for d in &batch {
                    t.handle_datagram(sim.now, from, d);
                }
                check_invariant(t, rx, handled, batch.len() as u64);
                // No forged RTP was ever accepted as media.
                let decrypted = t.stats().ssrcs.values().map(|x| x.packets).sum::<u64>();
                prop_assert_eq!(decrypted, decrypted_before);
                while let Some(e) = t.poll_event() {
                    prop_assert!(!matches!(e, Event::Rtp(_)), "forged RTP accepted");
                }
                while t.poll_transmit().is_some() {}
            }
            // Still connected and still carrying media.
            prop_assert!(p.client.is_connected() && p.server.is_connected());
            Ok(())
        })?;
    }
}

#[test]
fn media_still_flows_after_a_garbage_storm() {
    let (mut sim, mut p) = connected_pair(7);
    let mut runner = proptest::test_runner::TestRunner::deterministic();
    let server = p.server.local_addr();
    let s = p.client.stats();
    let (rx, handled, dropped) = (s.received.total(), s.accepted + s.dropped(), s.dropped());
    for _ in 0..5000 {
        let d = datagram().new_tree(&mut runner).unwrap().current();
        p.client.handle_datagram(sim.now, server, &d);
    }
    check_invariant(&p.client, rx, handled, 5000);
    // Nearly all of it is refused (a few random STUN/DTLS bytes are consumed harmlessly).
    assert!(
        p.client.stats().dropped() - dropped > 4500,
        "{:?}",
        p.client.stats()
    );
    let mut ev: [Vec<Event>; 2] = Default::default();
    while p.client.poll_event().is_some() {}
    p.server
        .send_rtp(sim.now, &OutgoingRtp::new(77, 1, 0, 111, b"after"))
        .unwrap();
    sim.run_for(
        &mut [&mut p.client, &mut p.server],
        &mut ev,
        Duration::from_millis(50),
    );
    assert!(ev[0]
        .iter()
        .any(|e| matches!(e, Event::Rtp(r) if r.payload.as_ref() == b"after")));
}
