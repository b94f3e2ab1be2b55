//! What a published camera costs per frame: making the simulcast layers' pictures (halving), and
//! encoding a 1280x720 picture on all three layers, with OpenH264's complexity settings side by
//! side. `cargo bench -p groupcall-engine --bench video`.

use std::time::Duration;

use criterion::{criterion_group, criterion_main, Criterion};
use groupcall_engine::media::VideoCodec;
use groupcall_engine::video::simulcast::SimulcastEncoder;
use groupcall_engine::video::{pattern, scale};

/// A 720p picture with texture in it (the pattern plus noise on luma), so the encoder has work.
fn picture(index: u32) -> groupcall_engine::video::Frame {
    let mut f = pattern::draw(1280, 720, index, Duration::ZERO).unwrap();
    let mut x: u32 = 0x9e37_79b9 ^ index;
    for y in f.y_mut().iter_mut().skip(1280 * 200).take(1280 * 300) {
        x ^= x << 13;
        x ^= x >> 17;
        x ^= x << 5;
        *y = y.saturating_add((x % 24) as u8);
    }
    f
}

fn bench(c: &mut Criterion) {
    let frames: Vec<_> = (0..30).map(picture).collect();
    c.bench_function("halve_720p_to_360p", |b| {
        b.iter(|| scale::halve(&frames[0], 1).unwrap())
    });
    c.bench_function("halve_720p_to_180p", |b| {
        b.iter(|| scale::halve(&frames[0], 2).unwrap())
    });
    let mut g = c.benchmark_group("simulcast_encode_720p_3_layers");
    g.sample_size(20);
    let mut enc = SimulcastEncoder::new(
        VideoCodec::H264,
        1280,
        720,
        30.0,
        &[140_000, 550_000, 2_200_000],
        false,
    )
    .unwrap();
    let mut i = 0;
    g.bench_function("h264", |b| {
        b.iter(|| {
            i = (i + 1) % frames.len();
            enc.encode(&frames[i], 3).unwrap()
        })
    });
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
