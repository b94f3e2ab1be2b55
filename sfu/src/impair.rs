//! A loopback UDP relay that makes a bad network on purpose: clients send their media to the
//! relay instead of the server, and the relay drops, delays, reorders and duplicates the RTP it
//! carries (loss random or in bursts, after Gilbert–Elliott). Tests, `groupcall impair` and
//! `scripts/compare-receive.sh` use it to put receivers behind the same bad path.
//!
//! Only RTP is impaired (RFC 7983 and RFC 5761 tell it from STUN, DTLS and RTCP), so the
//! connection itself comes up and the comparison is about audio. Every decision is a function
//! of the seed, of which sender the packet is from (numbered in the order senders first
//! appear) and of its sequence number counted from the first packet seen of that sender; never
//! of the order the rest arrive in, nor of which client it goes to. So two listeners behind one
//! relay lose exactly the same packets of a sender, with the same delays, which is what makes
//! a side-by-side score fair; and a run repeats with its seed, although senders pick random
//! SSRCs and sequence numbers.
//!
//! [`Impairer`] is the decision (sans-IO, unit tested); [`Relay`] the tokio driver around it.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::net::UdpSocket;
use tokio::task::JoinHandle;

/// Which way packets are impaired.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Direction {
    /// Server to client (what a listener receives). The default: it is the receive side that
    /// copes with the network.
    #[default]
    Down,
    /// Client to server (what a speaker sends).
    Up,
    Both,
}

impl Direction {
    fn down(self) -> bool {
        matches!(self, Direction::Down | Direction::Both)
    }
    fn up(self) -> bool {
        matches!(self, Direction::Up | Direction::Both)
    }
}

impl std::str::FromStr for Direction {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "down" => Ok(Direction::Down),
            "up" => Ok(Direction::Up),
            "both" => Ok(Direction::Both),
            _ => Err(format!("direction must be down, up or both, not {s:?}")),
        }
    }
}

/// What the relay does to RTP.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct ImpairConfig {
    /// Long-run share of RTP packets lost (0.0..1.0).
    pub loss: f64,
    /// Mean length of a loss burst, in packets. At 1 or below, losses are independent; above,
    /// they come in bursts (a two-state Gilbert–Elliott chain: no loss in the good state, all
    /// lost in the bad one, with the same long-run `loss`).
    pub burst: f64,
    /// Each packet is delayed by a uniform random time in `0..jitter` (which also reorders).
    pub jitter: Duration,
    /// Share of packets held back an extra `reorder_delay`, so later ones overtake them.
    pub reorder: f64,
    pub reorder_delay: Duration,
    /// Share of packets sent twice (the copy a little later).
    pub duplicate: f64,
    pub seed: u64,
    pub direction: Direction,
}

impl Default for ImpairConfig {
    fn default() -> Self {
        ImpairConfig {
            loss: 0.0,
            burst: 1.0,
            jitter: Duration::ZERO,
            reorder: 0.0,
            reorder_delay: Duration::from_millis(30),
            duplicate: 0.0,
            seed: 1,
            direction: Direction::Down,
        }
    }
}

impl ImpairConfig {
    /// Refuses settings that make no sense, naming the one at fault.
    pub fn validate(&self) -> Result<(), String> {
        for (name, p) in [
            ("loss", self.loss),
            ("reorder", self.reorder),
            ("duplicate", self.duplicate),
        ] {
            if !(0.0..1.0).contains(&p) {
                return Err(format!("{name} must be a share in 0.0..1.0, not {p}"));
            }
        }
        if !self.burst.is_finite() || self.burst < 0.0 {
            return Err(format!(
                "burst must be a mean length in packets (1 or more for bursts), not {}",
                self.burst
            ));
        }
        Ok(())
    }
}

/// What happens to one datagram.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Fate {
    /// Forwarded now, untouched (not RTP, or RTP in a direction that is not impaired).
    Pass,
    Drop,
    /// Forwarded after `delay`, and a second time after `copy` when duplicated.
    Delay {
        delay: Duration,
        copy: Option<Duration>,
    },
}

/// Senders numbered in order of appearance (a bound on the relay's memory).
const MAX_SENDERS: usize = 1024;

/// Steps of history the Gilbert–Elliott chain is run over for each packet. Driven by the same
/// draws, chains from any start state meet after a step or two (see [`Impairer::bad`]), so 64
/// steps make the state a function of the sequence number alone.
const CHAIN_HISTORY: u16 = 64;

/// The decisions of [`ImpairConfig`], per packet. Holds no state: see the module documentation.
#[derive(Debug)]
pub struct Impairer {
    config: ImpairConfig,
    /// Per SSRC: its number in order of appearance and its first sequence number.
    anchors: Mutex<HashMap<u32, (u32, u16)>>,
    /// Gilbert–Elliott transition probabilities: good→bad and bad→good.
    to_bad: f64,
    to_good: f64,
}

/// A 64-bit mix (splitmix64's finaliser): adjacent inputs give unrelated outputs.
fn mix(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// A uniform draw in [0, 1) for one purpose of one packet.
fn draw(seed: u64, ssrc: u32, seq: u16, purpose: u64) -> f64 {
    let key = mix(seed ^ mix(u64::from(ssrc) << 20 ^ u64::from(seq) << 4 ^ purpose));
    (key >> 11) as f64 / (1u64 << 53) as f64
}

const LOSS: u64 = 1;
const DELAY: u64 = 2;
const REORDER: u64 = 3;
const DUPLICATE: u64 = 4;
const COPY_DELAY: u64 = 5;

/// The SSRC and sequence number of an RTP packet; `None` for STUN, DTLS, RTCP and junk.
pub fn rtp_key(datagram: &[u8]) -> Option<(u32, u16)> {
    // RFC 7983: 128..=191 is RTP or RTCP; RFC 5761: payload types 64..=95 (after the marker
    // bit) are RTCP's packet types 192..=223.
    if datagram.len() < 12 || !(128..=191).contains(&datagram[0]) {
        return None;
    }
    if (64..=95).contains(&(datagram[1] & 0x7f)) {
        return None;
    }
    let seq = u16::from_be_bytes([datagram[2], datagram[3]]);
    let ssrc = u32::from_be_bytes([datagram[8], datagram[9], datagram[10], datagram[11]]);
    Some((ssrc, seq))
}

impl Impairer {
    pub fn new(config: ImpairConfig) -> Self {
        let loss = config.loss.clamp(0.0, 0.999);
        let to_good = 1.0 / config.burst.max(1.0);
        // Stationary share of the bad state: to_bad / (to_bad + to_good) = loss.
        let to_bad = loss * to_good / (1.0 - loss);
        Impairer {
            config,
            anchors: Mutex::new(HashMap::new()),
            to_bad,
            to_good,
        }
    }

    pub fn config(&self) -> &ImpairConfig {
        &self.config
    }

    /// The sender's number and the packet's sequence number counted from its first.
    fn anchor(&self, ssrc: u32, seq: u16) -> (u32, u16) {
        let mut anchors = self.anchors.lock().unwrap_or_else(|p| p.into_inner());
        let next = anchors.len() as u32;
        if anchors.len() >= MAX_SENDERS && !anchors.contains_key(&ssrc) {
            // Past the bound, senders are told apart by SSRC alone.
            return (ssrc, seq);
        }
        let (stream, first) = *anchors.entry(ssrc).or_insert((next, seq));
        (stream, seq.wrapping_sub(first))
    }

    /// Whether packet `seq` (counted from the first) of sender number `stream` is lost.
    pub fn lost(&self, sender: u32, seq: u16) -> bool {
        let c = &self.config;
        if c.loss <= 0.0 {
            return false;
        }
        if c.burst <= 1.0 {
            return draw(c.seed, sender, seq, LOSS) < c.loss;
        }
        self.bad(sender, seq)
    }

    /// The Gilbert–Elliott state at `seq`, run from `CHAIN_HISTORY` packets earlier. Each step
    /// uses one draw `u`: from good, bad when `u < to_bad`; from bad, still bad when
    /// `u < 1 - to_good`. Since `to_bad < 1 - to_good` for any loss below 50 % per burst
    /// packet, a draw below `to_bad` puts both states in bad and one above `1 - to_good` puts
    /// both in good: chains started anywhere agree from then on.
    fn bad(&self, sender: u32, seq: u16) -> bool {
        let c = &self.config;
        let mut bad = false;
        for back in (0..=CHAIN_HISTORY).rev() {
            let s = seq.wrapping_sub(back);
            let u = draw(c.seed, sender, s, LOSS);
            bad = if bad {
                u < 1.0 - self.to_good
            } else {
                u < self.to_bad
            };
        }
        bad
    }

    /// The fate of one datagram going towards the client (`down`) or the server.
    pub fn judge(&self, datagram: &[u8], down: bool) -> Fate {
        let c = &self.config;
        let impaired = if down {
            c.direction.down()
        } else {
            c.direction.up()
        };
        let Some((ssrc, seq)) = rtp_key(datagram).filter(|_| impaired) else {
            return Fate::Pass;
        };
        let (ssrc, seq) = self.anchor(ssrc, seq);
        if self.lost(ssrc, seq) {
            return Fate::Drop;
        }
        let mut delay = c.jitter.mul_f64(draw(c.seed, ssrc, seq, DELAY));
        if draw(c.seed, ssrc, seq, REORDER) < c.reorder {
            delay += c.reorder_delay;
        }
        let copy = (draw(c.seed, ssrc, seq, DUPLICATE) < c.duplicate).then(|| {
            delay + Duration::from_millis(1) + c.jitter.mul_f64(draw(c.seed, ssrc, seq, COPY_DELAY))
        });
        Fate::Delay { delay, copy }
    }
}

/// Counters of a [`Relay`], shared with its tasks.
#[derive(Debug, Default)]
pub struct RelayStats {
    /// Datagrams forwarded (a duplicated one counts once).
    pub passed: AtomicU64,
    /// RTP packets dropped by the impairment, and datagrams dropped during a blackout.
    pub dropped: AtomicU64,
    pub duplicated: AtomicU64,
    /// STUN datagrams passed towards the server (checks, keepalives) and towards clients.
    pub stun_up: AtomicU64,
    pub stun_down: AtomicU64,
    /// Datagrams from clients past [`MAX_CLIENTS`], dropped.
    pub refused: AtomicU64,
}

impl RelayStats {
    /// One line for people: what the relay did.
    pub fn summary(&self) -> String {
        let g = |a: &AtomicU64| a.load(Ordering::Relaxed);
        format!(
            "passed {}, dropped {}, duplicated {}, refused {}",
            g(&self.passed),
            g(&self.dropped),
            g(&self.duplicated),
            g(&self.refused)
        )
    }
}

/// Clients one relay serves (each holds a socket towards the server).
pub const MAX_CLIENTS: usize = 64;

/// The running relay. Dropping it stops it.
pub struct Relay {
    addr: SocketAddr,
    blackout: Arc<AtomicBool>,
    stats: Arc<RelayStats>,
    task: JoinHandle<()>,
}

struct Shared {
    impairer: Impairer,
    blackout: Arc<AtomicBool>,
    stats: Arc<RelayStats>,
}

impl Relay {
    /// Binds `listen` and relays between the clients that send to it and `server`: each client
    /// gets its own socket towards the server, whose answers go back to that client.
    pub async fn start(
        listen: SocketAddr,
        server: SocketAddr,
        config: ImpairConfig,
    ) -> std::io::Result<Relay> {
        config
            .validate()
            .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidInput, e))?;
        let front = Arc::new(UdpSocket::bind(listen).await?);
        let addr = front.local_addr()?;
        let blackout = Arc::new(AtomicBool::new(false));
        let stats = Arc::new(RelayStats::default());
        let shared = Arc::new(Shared {
            impairer: Impairer::new(config),
            blackout: blackout.clone(),
            stats: stats.clone(),
        });
        let bind_back: SocketAddr = if server.is_ipv6() {
            "[::1]:0".parse().expect("literal")
        } else {
            "127.0.0.1:0".parse().expect("literal")
        };
        let task = tokio::spawn(async move {
            let mut backs: HashMap<SocketAddr, (Arc<UdpSocket>, JoinHandle<()>)> = HashMap::new();
            let mut buf = vec![0u8; 65_536];
            loop {
                let Ok((n, client)) = front.recv_from(&mut buf).await else {
                    break;
                };
                let back = match backs.get(&client) {
                    Some((b, _)) => b.clone(),
                    None if backs.len() >= MAX_CLIENTS => {
                        shared.stats.refused.fetch_add(1, Ordering::Relaxed);
                        continue;
                    }
                    None => {
                        let Ok(b) = UdpSocket::bind(bind_back).await else {
                            shared.stats.refused.fetch_add(1, Ordering::Relaxed);
                            continue;
                        };
                        let b = Arc::new(b);
                        let (front, b2, shared) = (front.clone(), b.clone(), shared.clone());
                        let answers = tokio::spawn(async move {
                            let mut buf = vec![0u8; 65_536];
                            while let Ok((n, _)) = b2.recv_from(&mut buf).await {
                                relay(&shared, &front, client, &buf[..n], true).await;
                            }
                        });
                        backs.insert(client, (b.clone(), answers));
                        b
                    }
                };
                relay(&shared, &back, server, &buf[..n], false).await;
            }
            for (_, (_, task)) in backs {
                task.abort();
            }
        });
        Ok(Relay {
            addr,
            blackout,
            stats,
            task,
        })
    }

    /// Where clients send their media.
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// While on, every datagram both ways is dropped: the path is gone.
    pub fn set_blackout(&self, on: bool) {
        self.blackout.store(on, Ordering::SeqCst);
    }

    pub fn stats(&self) -> &Arc<RelayStats> {
        &self.stats
    }
}

impl Drop for Relay {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn relay(
    shared: &Arc<Shared>,
    socket: &Arc<UdpSocket>,
    to: SocketAddr,
    data: &[u8],
    down: bool,
) {
    let stats = &shared.stats;
    if shared.blackout.load(Ordering::SeqCst) {
        stats.dropped.fetch_add(1, Ordering::Relaxed);
        return;
    }
    let fate = shared.impairer.judge(data, down);
    if fate == Fate::Drop {
        stats.dropped.fetch_add(1, Ordering::Relaxed);
        return;
    }
    stats.passed.fetch_add(1, Ordering::Relaxed);
    // RFC 7983: a first byte of 0..=3 is STUN.
    if data.first().is_some_and(|&b| b <= 3) {
        let stun = if down {
            &stats.stun_down
        } else {
            &stats.stun_up
        };
        stun.fetch_add(1, Ordering::Relaxed);
    }
    match fate {
        Fate::Delay { delay, copy } if !delay.is_zero() || copy.is_some() => {
            if copy.is_some() {
                stats.duplicated.fetch_add(1, Ordering::Relaxed);
            }
            let (socket, data) = (socket.clone(), data.to_vec());
            tokio::spawn(async move {
                tokio::time::sleep(delay).await;
                let _ = socket.send_to(&data, to).await;
                if let Some(copy) = copy {
                    tokio::time::sleep(copy.saturating_sub(delay)).await;
                    let _ = socket.send_to(&data, to).await;
                }
            });
        }
        _ => {
            // Nothing to wait for: in order, now.
            let _ = socket.send_to(data, to).await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rtp(ssrc: u32, seq: u16) -> Vec<u8> {
        let mut p = vec![0x80, 111];
        p.extend_from_slice(&seq.to_be_bytes());
        p.extend_from_slice(&0u32.to_be_bytes());
        p.extend_from_slice(&ssrc.to_be_bytes());
        p.extend_from_slice(&[0xfc, 1, 2, 3]);
        p
    }

    fn losses(imp: &Impairer, ssrc: u32, n: u16) -> Vec<bool> {
        (0..n)
            .map(|s| imp.judge(&rtp(ssrc, s), true) == Fate::Drop)
            .collect()
    }

    fn longest_run(lost: &[bool]) -> usize {
        let (mut best, mut run) = (0, 0);
        for &l in lost {
            run = if l { run + 1 } else { 0 };
            best = best.max(run);
        }
        best
    }

    fn mean_burst(lost: &[bool]) -> f64 {
        let bursts = lost.windows(2).filter(|w| !w[0] && w[1]).count() + usize::from(lost[0]);
        lost.iter().filter(|&&l| l).count() as f64 / bursts.max(1) as f64
    }

    #[test]
    fn random_loss_has_the_asked_rate_and_short_bursts() {
        let imp = Impairer::new(ImpairConfig {
            loss: 0.2,
            seed: 9,
            ..ImpairConfig::default()
        });
        let lost = losses(&imp, 77, 50_000);
        let rate = lost.iter().filter(|&&l| l).count() as f64 / lost.len() as f64;
        assert!((rate - 0.2).abs() < 0.01, "rate {rate}");
        // Independent losses: mean burst 1 / (1 - p) = 1.25.
        assert!(
            (mean_burst(&lost) - 1.25).abs() < 0.05,
            "{}",
            mean_burst(&lost)
        );
    }

    #[test]
    fn gilbert_elliott_keeps_the_rate_and_makes_bursts_of_the_asked_length() {
        let imp = Impairer::new(ImpairConfig {
            loss: 0.1,
            burst: 4.0,
            seed: 3,
            ..ImpairConfig::default()
        });
        let lost = losses(&imp, 5, 60_000);
        let rate = lost.iter().filter(|&&l| l).count() as f64 / lost.len() as f64;
        assert!((rate - 0.1).abs() < 0.015, "rate {rate}");
        let burst = mean_burst(&lost);
        assert!((burst - 4.0).abs() < 0.4, "mean burst {burst}");
        assert!(longest_run(&lost) > 10, "geometric bursts have a long tail");
    }

    /// Two relays (two listeners) decide the same for the same packet, whatever else they saw
    /// and in whatever order; another sender or another seed gets another pattern.
    #[test]
    fn the_same_packet_gets_the_same_fate_everywhere() {
        let config = ImpairConfig {
            loss: 0.15,
            burst: 3.0,
            jitter: Duration::from_millis(40),
            reorder: 0.05,
            duplicate: 0.05,
            seed: 11,
            ..ImpairConfig::default()
        };
        let (a, b) = (Impairer::new(config), Impairer::new(config));
        let forward: Vec<Fate> = (0..2000u16).map(|s| a.judge(&rtp(1, s), true)).collect();
        // The other sees the first packet first, then the rest backwards.
        let first = b.judge(&rtp(1, 0), true);
        let mut backward: Vec<Fate> = (1..2000u16)
            .rev()
            .map(|s| b.judge(&rtp(1, s), true))
            .collect();
        backward.push(first);
        assert!(forward.iter().eq(backward.iter().rev()));
        // Another sender gets another pattern; the same sender starting at another sequence
        // number and SSRC (another run) gets the same.
        let other_ssrc: Vec<Fate> = (0..2000u16).map(|s| a.judge(&rtp(2, s), true)).collect();
        assert_ne!(forward, other_ssrc);
        let rerun = Impairer::new(config);
        let again: Vec<Fate> = (0..2000u16)
            .map(|s| rerun.judge(&rtp(99, s.wrapping_add(60_000)), true))
            .collect();
        assert_eq!(forward, again);
        let reseeded = Impairer::new(ImpairConfig { seed: 12, ..config });
        let other_seed: Vec<Fate> = (0..2000u16)
            .map(|s| reseeded.judge(&rtp(1, s), true))
            .collect();
        assert_ne!(forward, other_seed);
        // Delays stay within the jitter (plus the reorder hold), and some are duplicated.
        let mut copies = 0;
        for f in &forward {
            if let Fate::Delay { delay, copy } = f {
                assert!(*delay < Duration::from_millis(70), "{delay:?}");
                copies += usize::from(copy.is_some());
            }
        }
        assert!((50..150).contains(&copies), "{copies} duplicates of ~1700");
    }

    #[test]
    fn only_rtp_in_the_impaired_direction_is_touched() {
        let imp = Impairer::new(ImpairConfig {
            loss: 0.99,
            direction: Direction::Down,
            ..ImpairConfig::default()
        });
        let stun = [0u8, 1, 0, 0, 0x21, 0x12, 0xa4, 0x42, 0, 0, 0, 0, 0, 0, 0, 0];
        let dtls = [22u8, 0xfe, 0xfd, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0];
        let mut rtcp = rtp(1, 1);
        rtcp[1] = 201; // receiver report
        for d in [&stun[..], &dtls[..], &rtcp[..]] {
            assert_eq!(imp.judge(d, true), Fate::Pass);
        }
        assert_eq!(imp.judge(&rtp(1, 1), false), Fate::Pass, "uplink untouched");
        let dropped = (0..100u16)
            .filter(|&s| imp.judge(&rtp(1, s), true) == Fate::Drop)
            .count();
        assert!(dropped > 90);
    }

    #[test]
    fn nonsense_settings_are_refused_by_name() {
        let bad = ImpairConfig {
            loss: 1.5,
            ..ImpairConfig::default()
        };
        assert!(bad.validate().unwrap_err().contains("loss"));
        let bad = ImpairConfig {
            burst: f64::NAN,
            ..ImpairConfig::default()
        };
        assert!(bad.validate().unwrap_err().contains("burst"));
    }

    /// Over real loopback UDP: a client's RTP reaches the "server" minus the lost packets
    /// (uplink impaired here), the server's answers reach the client, and a blackout drops all.
    #[tokio::test]
    async fn relays_both_ways_over_loopback() {
        let server = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let config = ImpairConfig {
            loss: 0.3,
            direction: Direction::Up,
            seed: 5,
            ..ImpairConfig::default()
        };
        let relay = Relay::start(
            "127.0.0.1:0".parse().unwrap(),
            server.local_addr().unwrap(),
            config,
        )
        .await
        .unwrap();
        let client = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let imp = Impairer::new(config);
        let expect: Vec<u16> = (0..200u16).filter(|&s| !imp.lost(0, s)).collect();
        for s in 0..200u16 {
            client
                .send_to(&rtp(7, s), relay.local_addr())
                .await
                .unwrap();
        }
        let mut got = Vec::new();
        let mut buf = [0u8; 1500];
        let mut from = None;
        while got.len() < expect.len() {
            let (n, addr) =
                tokio::time::timeout(Duration::from_secs(5), server.recv_from(&mut buf))
                    .await
                    .unwrap_or_else(|_| {
                        panic!(
                            "relayed in time: got {} of {}: {got:?}",
                            got.len(),
                            expect.len()
                        )
                    })
                    .unwrap();
            from = Some(addr);
            got.push(rtp_key(&buf[..n]).unwrap().1);
        }
        assert_eq!(got, expect);
        server
            .send_to(b"\x00\x01answer-ish", from.unwrap())
            .await
            .unwrap();
        let (n, _) = tokio::time::timeout(Duration::from_secs(5), client.recv_from(&mut buf))
            .await
            .expect("answer relayed")
            .unwrap();
        assert_eq!(&buf[..n], b"\x00\x01answer-ish");
        relay.set_blackout(true);
        let before = relay.stats().dropped.load(Ordering::Relaxed);
        client
            .send_to(&rtp(7, 500), relay.local_addr())
            .await
            .unwrap();
        tokio::time::sleep(Duration::from_millis(100)).await;
        assert_eq!(relay.stats().dropped.load(Ordering::Relaxed), before + 1);
    }
}
