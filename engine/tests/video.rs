//! Video between two engines through the real local server over loopback UDP: A publishes the
//! counter pattern (`groupcall_engine::video::pattern`) as a three-layer H.264 camera, B decodes
//! it and reads the counter drawn into every picture, so a test sees exactly which frames came
//! through, in which order and how late; and B records it to a Y4M file that reads back.

mod support;

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use groupcall_engine::video::pattern::{self, QUADRANTS};
use groupcall_engine::video::y4m::Y4mReader;
use groupcall_engine::video::{ReceivedVideo, VideoKind, VideoSink, VideoSource};
use groupcall_engine::{CallConfig, CallEvent, Engine};
use support::e2e::*;
use support::proxy::{relay, Direction, ImpairConfig};

const W: u32 = 640;
const H: u32 = 360;

fn camera() -> CallConfig {
    CallConfig {
        video: Some(VideoSource::pattern(W, H, 30.0).unwrap()),
        ..CallConfig::default()
    }
}

/// What B saw of A's camera over `secs` seconds after its first picture.
struct Seen {
    counters: Vec<u32>,
    unreadable: usize,
    sizes: BTreeSet<(u32, u32)>,
    /// Mean (Y, U, V) of each quadrant's inside in the last full-size picture.
    quadrants: Vec<(f64, f64, f64)>,
}

fn collect(rx: &std::sync::mpsc::Receiver<ReceivedVideo>, source: u32, secs: f64) -> Seen {
    let mut seen = Seen {
        counters: Vec::new(),
        unreadable: 0,
        sizes: BTreeSet::new(),
        quadrants: Vec::new(),
    };
    let first = rx
        .recv_timeout(Duration::from_secs(15))
        .expect("B decodes a picture of A's camera within 15 s");
    let end = Instant::now() + Duration::from_secs_f64(secs);
    let mut next = Some(first);
    while let Some(v) = next.take() {
        assert_eq!(v.source, source, "the picture is tagged with A's source");
        assert_eq!(v.kind, VideoKind::Camera);
        let f = &v.frame;
        seen.sizes.insert((f.width, f.height));
        match pattern::read_counter(f) {
            Some(n) => seen.counters.push(n),
            None => seen.unreadable += 1,
        }
        if (f.width, f.height) == (W, H) {
            let (qw, qh) = (W / 2, H / 2);
            seen.quadrants = (0..4)
                .map(|i| {
                    let (x, y) = ((i % 2) * qw, (i / 2) * qh);
                    // The inside of the quadrant, clear of the counter row and the moving bar.
                    f.mean_yuv(x + qw / 4, y + qh / 2, qw / 2, qh / 4).unwrap()
                })
                .collect();
        }
        let left = end.saturating_duration_since(Instant::now());
        if left.is_zero() {
            break;
        }
        next = rx.recv_timeout(left).ok();
    }
    seen
}

/// Missing counters between the first and the last read, and whether they came in order. A
/// counter may come twice: the server switches a receiver to another layer at that layer's
/// keyframe, which can be the same picture (at another size) as the last one of the old layer.
fn missing_share(counters: &[u32]) -> (f64, bool) {
    let in_order = counters.windows(2).all(|w| w[1] >= w[0]);
    let span = counters.last().unwrap() - counters.first().unwrap() + 1;
    let distinct: BTreeSet<_> = counters.iter().collect();
    (1.0 - distinct.len() as f64 / span as f64, in_order)
}

fn assert_colours(seen: &Seen) {
    assert_eq!(seen.quadrants.len(), 4, "a full-size picture was seen");
    for (i, (got, want)) in seen.quadrants.iter().zip(QUADRANTS).enumerate() {
        let d = [
            (got.0 - f64::from(want.0)).abs(),
            (got.1 - f64::from(want.1)).abs(),
            (got.2 - f64::from(want.2)).abs(),
        ];
        assert!(
            d.iter().all(|&d| d <= 10.0),
            "quadrant {i}: {got:?} against {want:?}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_camera_reaches_another_engine_frame_for_frame_and_is_recorded() {
    let s = Setup::start().await;
    let dir = tempfile::tempdir().unwrap();
    let (sink, rx) = VideoSink::channel(256);
    let mut b = s
        .join(
            2,
            CallConfig {
                video_sink: Some(sink),
                record_video_dir: Some(dir.path().to_path_buf()),
                ..CallConfig::default()
            },
        )
        .await;
    connected(&mut b).await;
    let a = s.join(1, camera()).await;
    let a_source = a.ssrc();
    let event = until(&mut b, 10, "A's camera starts", |e| match e {
        CallEvent::Video {
            source,
            kind,
            state,
            ..
        } => Some((*source, *kind, *state)),
        _ => None,
    })
    .await;
    assert_eq!(
        event,
        (
            a_source,
            VideoKind::Camera,
            groupcall_engine::VideoState::Started
        )
    );
    let seen = tokio::task::spawn_blocking(move || collect(&rx, a_source, 4.0))
        .await
        .unwrap();
    let (missing, in_order) = missing_share(&seen.counters);
    eprintln!(
        "clean: {} pictures, {} unreadable, counters {}..{}, {:.2} % missing, sizes {:?}",
        seen.counters.len(),
        seen.unreadable,
        seen.counters[0],
        seen.counters.last().unwrap(),
        missing * 100.0,
        seen.sizes
    );
    assert!(in_order, "counters in order: {:?}", seen.counters);
    assert!(seen.counters.len() >= 100, "about 30 fps for 4 s");
    assert!(
        missing < 0.01,
        "{:.2} % of the frames missing",
        missing * 100.0
    );
    assert_eq!(
        seen.sizes,
        BTreeSet::from([(W, H)]),
        "the top layer throughout"
    );
    assert_colours(&seen);
    let speakers: Vec<u32> = b.stats().speakers.iter().map(|s| s.ssrc).collect();
    assert!(
        !speakers.contains(&a_source.wrapping_add(1)),
        "A's camera is not a speaker: {speakers:?}"
    );
    let sent = a.stats().video_sent.expect("A publishes a camera");
    eprintln!("sent: {sent:?}");
    assert!(
        sent.frames.iter().all(|&f| f > 0),
        "every layer sent: {sent:?}"
    );
    // The server's transport-cc feedback reaches the estimate, which carries all three layers.
    assert!(
        sent.estimate_bps > 0 && sent.estimate_layers == 3,
        "{sent:?}"
    );

    a.leave().await.unwrap();
    let left = until(&mut b, 10, "A's camera stops", |e| match e {
        CallEvent::Video { state, .. } => Some(*state),
        _ => None,
    })
    .await;
    assert_eq!(left, groupcall_engine::VideoState::Stopped);
    let summary = b.leave().await.unwrap();
    assert_eq!(
        summary.video_recordings.len(),
        1,
        "{:?}",
        summary.video_recordings
    );
    let path = &summary.video_recordings[0];
    assert!(path.to_string_lossy().ends_with("_camera.y4m"), "{path:?}");
    let mut r = Y4mReader::new(std::fs::File::open(path).unwrap(), "recording").unwrap();
    assert_eq!((r.width(), r.height(), r.rate()), (W, H, (30_000, 1000)));
    let mut counters = Vec::new();
    while let Some(f) = r.next_frame().unwrap() {
        counters.extend(pattern::read_counter(&f));
    }
    // Placed on a 30 fps timeline: about as many pictures as were sent, each counter at most
    // twice (a picture repeated over a gap), in order.
    let distinct: BTreeSet<_> = counters.iter().collect();
    assert!(
        distinct.len() >= 100,
        "{} distinct pictures recorded",
        distinct.len()
    );
    assert!(
        counters.windows(2).all(|w| w[1] >= w[0]),
        "recorded in order"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_5_percent_loss_both_ways_nack_and_rtx_keep_at_least_90_percent_of_frames() {
    let s = Setup::start().await;
    let proxy = relay(
        s.server.media_addr(),
        ImpairConfig {
            loss: 0.05,
            seed: 5,
            direction: Direction::Both,
            ..ImpairConfig::default()
        },
    )
    .await;
    let (sink, rx) = VideoSink::channel(256);
    let mut b = Engine::new(s.signaling(2))
        .join(
            s.call.clone(),
            CallConfig {
                video_sink: Some(sink),
                media_via: Some(proxy.local_addr()),
                ..CallConfig::default()
            },
        )
        .await
        .unwrap();
    connected(&mut b).await;
    let a = s.join(1, camera()).await;
    let a_source = a.ssrc();
    let seen = tokio::task::spawn_blocking(move || collect(&rx, a_source, 5.0))
        .await
        .unwrap();
    let (missing, in_order) = missing_share(&seen.counters);
    let stats = b.stats().video_received;
    eprintln!(
        "5 % loss: {} pictures, {} unreadable, {:.2} % missing, {stats:?}",
        seen.counters.len(),
        seen.unreadable,
        missing * 100.0
    );
    assert!(in_order, "counters in order");
    assert!(
        missing <= 0.10,
        "{:.2} % of the frames missing",
        missing * 100.0
    );
    assert!(
        stats.nacks_sent > 0 && stats.rtx_packets > 0,
        "losses were repaired: {stats:?}"
    );
    a.leave().await.unwrap();
    b.leave().await.unwrap();
}

/// A camera and a screen share from one participant at once: B decodes both, each tagged with
/// its kind, each with its counters in order; stopping the share is an event at B, and the
/// camera goes on.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_screen_share_and_a_camera_from_one_participant_arrive_side_by_side() {
    let s = Setup::start().await;
    let (sink, rx) = VideoSink::channel(512);
    let mut b = s
        .join(
            2,
            CallConfig {
                video_sink: Some(sink),
                ..CallConfig::default()
            },
        )
        .await;
    connected(&mut b).await;
    let mut a = s.join(1, camera()).await;
    connected(&mut a).await;
    a.share_screen(VideoSource::pattern(W, H, 15.0).unwrap())
        .await
        .expect("the server takes the share");
    let a_source = a.ssrc();
    let started = until(&mut b, 10, "A's screen starts", |e| match e {
        CallEvent::Video {
            kind: VideoKind::Screen,
            state,
            ..
        } => Some(*state),
        _ => None,
    })
    .await;
    assert_eq!(started, groupcall_engine::VideoState::Started);
    let pictures = tokio::task::spawn_blocking(move || {
        let end = Instant::now() + Duration::from_secs(5);
        let mut by_kind: std::collections::HashMap<VideoKind, Vec<u32>> = Default::default();
        while let Ok(v) = rx.recv_timeout(end.saturating_duration_since(Instant::now())) {
            assert_eq!(v.source, a_source, "both are tagged with A's source");
            if let Some(n) = pattern::read_counter(&v.frame) {
                by_kind.entry(v.kind).or_default().push(n);
            }
            if Instant::now() >= end {
                break;
            }
        }
        by_kind
    })
    .await
    .unwrap();
    for (kind, want) in [(VideoKind::Camera, 60), (VideoKind::Screen, 30)] {
        let got = pictures.get(&kind).map(Vec::as_slice).unwrap_or_default();
        eprintln!("{kind:?}: {} pictures", got.len());
        assert!(got.len() >= want, "{kind:?}: {} pictures", got.len());
        assert!(got.windows(2).all(|w| w[1] >= w[0]), "{kind:?} in order");
    }
    a.stop_screen().await.unwrap();
    let stopped = until(&mut b, 10, "A's screen stops", |e| match e {
        CallEvent::Video {
            kind: VideoKind::Screen,
            state,
            ..
        } => Some(*state),
        _ => None,
    })
    .await;
    assert_eq!(stopped, groupcall_engine::VideoState::Stopped);
    assert!(a.stats().video_sent.is_some(), "the camera goes on");
    a.leave().await.unwrap();
    b.leave().await.unwrap();
}

/// Receivers choose what they get: B asks for everyone at 360 and gets the camera's middle
/// layer (320x180 of a 640x360 camera), then 180 and gets the lowest, then only A's endpoint at
/// full size, then nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_receiver_picks_the_height_and_the_endpoints_it_wants() {
    use groupcall_engine::video::VideoSubscription;
    let s = Setup::start().await;
    let (sink, rx) = VideoSink::channel(512);
    let mut b = s
        .join(
            2,
            CallConfig {
                video_sink: Some(sink),
                video_subscription: Some(VideoSubscription::all(360)),
                ..CallConfig::default()
            },
        )
        .await;
    connected(&mut b).await;
    let _a = s.join(1, camera()).await;
    // Waits for pictures of `size` (a switch happens at the new layer's keyframe) and returns
    // the endpoint they came from.
    let wait_for_size = |rx: std::sync::mpsc::Receiver<ReceivedVideo>, size: (u32, u32)| {
        tokio::task::spawn_blocking(move || {
            let end = Instant::now() + Duration::from_secs(10);
            let mut last = None;
            while Instant::now() < end {
                if let Ok(v) = rx.recv_timeout(Duration::from_millis(500)) {
                    last = Some((v.frame.width, v.frame.height));
                    if last == Some(size) {
                        return (rx, v.endpoint);
                    }
                }
            }
            panic!("no {size:?} picture within 10 s; the last was {last:?}");
        })
    };
    let (rx, endpoint) = wait_for_size(rx, (W / 2, H / 2)).await.unwrap();
    b.subscribe_video(VideoSubscription::all(180)).unwrap();
    let (rx, _) = wait_for_size(rx, (W / 4, H / 4)).await.unwrap();
    b.subscribe_video(VideoSubscription::only([(endpoint, 720)]))
        .unwrap();
    let (rx, _) = wait_for_size(rx, (W, H)).await.unwrap();
    b.subscribe_video(VideoSubscription::all(0)).unwrap();
    let quiet = tokio::task::spawn_blocking(move || {
        // What was on its way when the server heard it is let through first.
        std::thread::sleep(Duration::from_millis(500));
        while rx.try_recv().is_ok() {}
        rx.recv_timeout(Duration::from_secs(1)).is_err()
    })
    .await
    .unwrap();
    assert!(quiet, "pictures still came after asking for none");
}

/// With a server that takes only VP8, the camera goes out as VP8 (libvpx) and comes back
/// decoded, every counter in order.
#[cfg(feature = "vp8")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_that_takes_only_vp8_gets_vp8_and_it_decodes() {
    use groupcall_engine::media::VideoCodec;
    use groupcall_engine::signaling::{CallRef, CreateCall};
    use groupcall_sfu::{LocalServer, LocalServerConfig, VideoOffer};
    let server = LocalServer::start(LocalServerConfig {
        video: VideoOffer {
            codecs: vec![VideoCodec::Vp8],
            ..VideoOffer::default()
        },
        ..LocalServerConfig::default()
    })
    .await
    .unwrap();
    let info = local(&server, 1)
        .create_call(None, &CreateCall::default())
        .await
        .unwrap();
    let call = CallRef::Id(info.id);
    let (sink, rx) = VideoSink::channel(256);
    let mut b = Engine::new(local(&server, 2))
        .join(
            call.clone(),
            CallConfig {
                video_sink: Some(sink),
                ..CallConfig::default()
            },
        )
        .await
        .unwrap();
    connected(&mut b).await;
    let a = Engine::new(local(&server, 1))
        .join(call, camera())
        .await
        .unwrap();
    let a_source = a.ssrc();
    let seen = tokio::task::spawn_blocking(move || collect(&rx, a_source, 3.0))
        .await
        .unwrap();
    let (missing, in_order) = missing_share(&seen.counters);
    eprintln!(
        "vp8: {} pictures, {:.2} % missing, sizes {:?}",
        seen.counters.len(),
        missing * 100.0,
        seen.sizes
    );
    assert!(in_order && missing < 0.01 && seen.counters.len() >= 75);
    assert_colours(&seen);
    a.leave().await.unwrap();
    b.leave().await.unwrap();
}
