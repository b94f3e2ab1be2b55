//! Sources against real files made in the test: WAV of other rates, raw PCM, Ogg/Opus muxed
//! with the `ogg` crate from libopus packets, pipes, pushed frames and an ffmpeg stand-in.

mod support;

use std::io::Cursor;
use std::path::{Path, PathBuf};

use groupcall_engine::audio::source::{Frame, Next, RawFormat, Source, SourceOptions};
use groupcall_engine::audio::Channels;
use groupcall_engine::Error;
use support::*;

/// A frame copied out of the source.
#[derive(Debug, Clone, PartialEq)]
enum Owned {
    Pcm(Vec<i16>),
    Opus(Vec<u8>, u32),
}

/// Pulls until the end (or `limit` pulls); returns the frames and how many `End`s were seen
/// across three extra pulls after the first one.
fn drain(src: &mut Source, limit: usize) -> Result<(Vec<Owned>, usize), Error> {
    let mut frames = vec![];
    let mut idle = 0;
    while frames.len() < limit {
        match src.next_frame()? {
            Next::Frame(Frame::Pcm(p)) => frames.push(Owned::Pcm(p.to_vec())),
            Next::Frame(Frame::Opus { packet, samples }) => {
                frames.push(Owned::Opus(packet.to_vec(), samples))
            }
            // Every source that reads is decoded ahead on a thread, which this loop can
            // outrun: wait for it, a little.
            Next::Idle if idle < 2500 => {
                idle += 1;
                std::thread::sleep(std::time::Duration::from_millis(2));
            }
            Next::Idle => panic!("the source stayed idle for 5 s"),
            Next::End => {
                let mut ends = 1;
                for _ in 0..3 {
                    match src.next_frame()? {
                        Next::End => ends += 1,
                        Next::Idle => {}
                        Next::Frame(_) => panic!("a frame after the end"),
                    }
                }
                assert!(src.is_finished());
                return Ok((frames, ends));
            }
        }
    }
    Ok((frames, 0))
}

fn pcm_of(frames: &[Owned]) -> Vec<i16> {
    frames
        .iter()
        .flat_map(|f| match f {
            Owned::Pcm(p) => p.clone(),
            Owned::Opus(..) => panic!("expected PCM"),
        })
        .collect()
}

fn opts(channels: Channels, looping: bool) -> SourceOptions {
    SourceOptions { channels, looping }
}

#[test]
fn wav_at_22050_stereo_is_resampled_to_48k_keeping_its_frequencies() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("in.wav");
    let n = 22050 * 2;
    let (l, r) = (
        sine(1000.0, 10000.0, 22050, 0, n),
        sine(440.0, 10000.0, 22050, 0, n),
    );
    let interleaved: Vec<i16> = l.iter().zip(&r).flat_map(|(&a, &b)| [a, b]).collect();
    write_wav(&path, 22050, 2, &interleaved);

    let mut src = Source::wav(&path, opts(Channels::Stereo, false)).unwrap();
    let (frames, ends) = drain(&mut src, 1000).unwrap();
    assert_eq!(ends, 1, "the end is reported exactly once");
    let out = pcm_of(&frames);
    assert_eq!(out.len(), 96000 * 2, "2 s at 48 kHz, stereo");
    assert_frequency(&channel(&out, 2, 0), 48000, 1000.0, "left");
    assert_frequency(&channel(&out, 2, 1), 48000, 440.0, "right");
    // Amplitude kept (no gain change from resampling).
    let mid = &channel(&out, 2, 0)[24000..72000];
    assert!(
        (rms(mid) - 10000.0 / 32768.0 / 2f64.sqrt()).abs() < 0.01,
        "{}",
        rms(mid)
    );

    // The same file as mono: the two tones are averaged.
    let mut src = Source::wav(&path, opts(Channels::Mono, false)).unwrap();
    let out = pcm_of(&drain(&mut src, 1000).unwrap().0);
    assert_eq!(out.len(), 96000);
    assert!(dominant_frequency(&out, 48000) > 400.0);
}

#[test]
fn wav_of_other_depths_is_read() {
    let dir = tempfile::tempdir().unwrap();
    for (bits, format) in [
        (8, hound::SampleFormat::Int),
        (24, hound::SampleFormat::Int),
        (32, hound::SampleFormat::Float),
    ] {
        let path = dir.path().join(format!("{bits}.wav"));
        let spec = hound::WavSpec {
            channels: 1,
            sample_rate: 48000,
            bits_per_sample: bits,
            sample_format: format,
        };
        let tone = sine(440.0, 16000.0, 48000, 0, 48000);
        let mut w = hound::WavWriter::create(&path, spec).unwrap();
        for &s in &tone {
            match (bits, format) {
                (8, _) => w.write_sample((s >> 8) as i8).unwrap(),
                (24, _) => w.write_sample((s as i32) << 8).unwrap(),
                _ => w.write_sample(s as f32 / 32768.0).unwrap(),
            }
        }
        w.finalize().unwrap();
        let mut src = Source::wav(&path, opts(Channels::Mono, false)).unwrap();
        let out = pcm_of(&drain(&mut src, 100).unwrap().0);
        assert_eq!(out.len(), 48000, "{bits} bits");
        let tolerance = if bits == 8 { 256 } else { 1 };
        assert!(
            out.iter()
                .zip(&tone)
                .all(|(a, b)| (a - b).abs() <= tolerance),
            "{bits} bits"
        );
    }
}

#[test]
fn a_looping_wav_restarts_seamlessly_and_a_plain_one_ends_once() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("ramp.wav");
    // 4000 samples: not a whole number of 960-sample frames, so the loop point is mid-frame.
    let ramp: Vec<i16> = (0..4000).map(|i| i as i16 - 2000).collect();
    write_wav(&path, 48000, 1, &ramp);

    let mut src = Source::wav(&path, opts(Channels::Mono, false)).unwrap();
    let (frames, ends) = drain(&mut src, 100).unwrap();
    assert_eq!((frames.len(), ends), (5, 1));
    let out = pcm_of(&frames);
    assert_eq!(&out[..4000], &ramp[..]);
    assert!(
        out[4000..].iter().all(|&s| s == 0),
        "the last frame is padded with silence"
    );

    let mut src = Source::wav(&path, opts(Channels::Mono, true)).unwrap();
    let mut out = vec![];
    for _ in 0..30 {
        match src.next_frame().unwrap() {
            Next::Frame(Frame::Pcm(p)) => out.extend_from_slice(p),
            other => panic!("a looping source gave {other:?}"),
        }
    }
    assert!(!src.is_finished());
    for (i, &s) in out.iter().enumerate() {
        assert_eq!(s, ramp[i % 4000], "sample {i}");
    }
}

#[test]
fn raw_pcm_from_a_file_a_reader_and_a_named_pipe() {
    let dir = tempfile::tempdir().unwrap();
    let tone = sine(1000.0, 8000.0, 16000, 0, 16000);
    let bytes: Vec<u8> = tone.iter().flat_map(|s| s.to_le_bytes()).collect();
    let format = RawFormat {
        rate: 16000,
        channels: 1,
    };

    let path = dir.path().join("in.raw");
    std::fs::write(&path, &bytes).unwrap();
    let mut src = Source::raw_file(&path, format, opts(Channels::Mono, false)).unwrap();
    let (frames, ends) = drain(&mut src, 100).unwrap();
    assert_eq!(ends, 1);
    let out = pcm_of(&frames);
    assert_eq!(out.len(), 48000);
    assert_frequency(&out, 48000, 1000.0, "raw file");
    let mut looping = Source::raw_file(&path, format, opts(Channels::Mono, true)).unwrap();
    let (frames, ends) = drain(&mut looping, 120).unwrap();
    assert_eq!((frames.len(), ends), (120, 0), "a looping raw file goes on");

    let mut src = Source::reader(
        "test bytes",
        Cursor::new(bytes.clone()),
        format,
        opts(Channels::Stereo, false),
    )
    .unwrap();
    let out = pcm_of(&drain(&mut src, 100).unwrap().0);
    assert_eq!(out.len(), 96000);
    assert_eq!(channel(&out, 2, 0), channel(&out, 2, 1));
    let err = Source::reader(
        "stdin-like",
        Cursor::new(vec![]),
        format,
        opts(Channels::Mono, true),
    )
    .unwrap_err();
    assert!(matches!(err, Error::CannotLoop { .. }), "{err:?}");

    #[cfg(unix)]
    {
        let fifo = dir.path().join("fifo");
        let ok = std::process::Command::new("mkfifo")
            .arg(&fifo)
            .status()
            .map(|s| s.success());
        if ok.unwrap_or(false) {
            let writer_path = fifo.clone();
            let data = bytes.clone();
            let writer = std::thread::spawn(move || {
                use std::io::Write;
                let mut f = std::fs::OpenOptions::new()
                    .write(true)
                    .open(writer_path)
                    .unwrap();
                for chunk in data.chunks(777) {
                    f.write_all(chunk).unwrap();
                }
            });
            let mut src = Source::named_pipe(&fifo, format, opts(Channels::Mono, false)).unwrap();
            let out = pcm_of(&drain(&mut src, 100).unwrap().0);
            writer.join().unwrap();
            assert_eq!(out.len(), 48000);
            assert_frequency(&out, 48000, 1000.0, "named pipe");
        } else {
            panic!("mkfifo is not available to test named pipes");
        }
    }
}

#[test]
fn pushed_frames_are_rechunked_idle_when_empty_and_end_once() {
    let (mut src, pusher) = Source::pushed(4, opts(Channels::Stereo, false)).unwrap();
    assert_eq!(src.next_frame().unwrap(), Next::Idle);
    // 1500 stereo frames in odd chunks: one whole 960-frame and a partial one.
    for (i, len) in [500usize, 700, 300].into_iter().enumerate() {
        pusher.push_blocking(vec![i as i16 + 1; len * 2]).unwrap();
    }
    match src.next_frame().unwrap() {
        Next::Frame(Frame::Pcm(p)) => {
            assert_eq!(p.len(), 1920);
            assert_eq!((p[0], p[999], p[1000], p[1919]), (1, 1, 2, 2));
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(
        src.next_frame().unwrap(),
        Next::Idle,
        "540 frames wait for more"
    );
    assert!(matches!(
        pusher.push_blocking(vec![0; 3]),
        Err(Error::PushedSamples {
            got: 3,
            channels: 2
        })
    ));
    for _ in 0..4 {
        pusher.try_push(vec![9; 2]).unwrap();
    }
    assert!(matches!(
        pusher.try_push(vec![9; 2]),
        Err(Error::PushFull { capacity: 4 })
    ));
    drop(pusher);
    match src.next_frame().unwrap() {
        Next::Frame(Frame::Pcm(p)) => {
            // 240 frames of 2 and 300 of 3 left from before, 4 one-frame chunks, then padding.
            assert_eq!(
                (
                    p[0],
                    p[2 * 239],
                    p[2 * 240],
                    p[2 * 539],
                    p[2 * 540],
                    p[2 * 543]
                ),
                (2, 2, 3, 3, 9, 9)
            );
            assert!(p[2 * 544..].iter().all(|&s| s == 0));
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(src.next_frame().unwrap(), Next::End);
    assert_eq!(src.next_frame().unwrap(), Next::Idle);

    let (src, pusher) = Source::pushed(1, opts(Channels::Mono, false)).unwrap();
    drop(src);
    assert!(matches!(
        pusher.push_blocking(vec![0; 960]),
        Err(Error::SourceClosed)
    ));
    assert!(matches!(
        Source::pushed(1, opts(Channels::Mono, true)),
        Err(Error::CannotLoop { .. })
    ));
}

/// The longest a pull may take: it only looks at a queue (generous for a loaded CI machine;
/// a pull that waited for the input would take the whole stall).
const PULL_BOUND: std::time::Duration = std::time::Duration::from_millis(50);

/// A reader that gives `first`, then blocks until `gate` opens, then gives `second`.
struct Stalling {
    first: Cursor<Vec<u8>>,
    gate: Option<std::sync::mpsc::Receiver<()>>,
    second: Cursor<Vec<u8>>,
}

impl std::io::Read for Stalling {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.first.read(buf)?;
        if n > 0 {
            return Ok(n);
        }
        if let Some(gate) = self.gate.take() {
            let _ = gate.recv();
        }
        self.second.read(buf)
    }
}

#[test]
fn a_stalled_stream_never_blocks_a_pull_and_counts_underruns() {
    let tone = sine(500.0, 8000.0, 48000, 0, 9600); // 10 frames
    let bytes: Vec<u8> = tone.iter().flat_map(|s| s.to_le_bytes()).collect();
    let (open, gate) = std::sync::mpsc::channel();
    let reader = Stalling {
        first: Cursor::new(bytes.clone()),
        gate: Some(gate),
        second: Cursor::new(bytes),
    };
    let format = RawFormat {
        rate: 48000,
        channels: 1,
    };
    let mut src = Source::reader("stalling", reader, format, opts(Channels::Mono, false)).unwrap();
    let start = std::time::Instant::now();
    let mut frames = 0;
    let mut slowest = std::time::Duration::ZERO;
    // 300 ms of pulls while the reader is stuck after its first 10 frames.
    while start.elapsed() < std::time::Duration::from_millis(300) {
        let t = std::time::Instant::now();
        let next = src.next_frame().unwrap();
        slowest = slowest.max(t.elapsed());
        match next {
            Next::Frame(Frame::Pcm(p)) => {
                assert_eq!(p, &tone[frames * 960..(frames + 1) * 960]);
                frames += 1;
            }
            Next::Idle => std::thread::sleep(std::time::Duration::from_millis(1)),
            other => panic!("{other:?} while the reader is stalled"),
        }
    }
    assert!(slowest < PULL_BOUND, "a pull took {slowest:?}");
    assert_eq!(frames, 10, "everything before the stall was played");
    let underruns = src.underruns();
    assert!(underruns >= 50, "only {underruns} underruns counted");
    open.send(()).unwrap();
    let (rest, ends) = drain(&mut src, 100).unwrap();
    assert_eq!((pcm_of(&rest), ends), (tone.clone(), 1), "after the stall");
}

#[tokio::test]
async fn pushing_waits_for_room_and_try_push_says_full() {
    let (mut src, pusher) = Source::pushed(2, opts(Channels::Mono, false)).unwrap();
    assert_eq!(pusher.capacity(), 2);
    pusher.push(vec![1; 960]).await.unwrap();
    pusher.push(vec![2; 960]).await.unwrap();
    assert!(matches!(
        pusher.try_push(vec![3; 960]),
        Err(Error::PushFull { capacity: 2 })
    ));
    // A third push waits (backpressure), and goes in once a frame is taken.
    let waiting = {
        let pusher = pusher.clone();
        tokio::spawn(async move { pusher.push(vec![3; 960]).await })
    };
    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    assert!(!waiting.is_finished(), "a push into a full queue waits");
    match src.next_frame().unwrap() {
        Next::Frame(Frame::Pcm(p)) => assert_eq!(p[0], 1),
        other => panic!("{other:?}"),
    }
    tokio::time::timeout(std::time::Duration::from_secs(5), waiting)
        .await
        .expect("the push completes once there is room")
        .unwrap()
        .unwrap();
    let mut got = vec![];
    for _ in 0..2 {
        match src.next_frame().unwrap() {
            Next::Frame(Frame::Pcm(p)) => got.push(p[0]),
            other => panic!("{other:?}"),
        }
    }
    assert_eq!(got, [2, 3], "nothing lost, nothing reordered");

    // A push waiting when the source goes says so instead of waiting for ever.
    pusher.push(vec![4; 960]).await.unwrap();
    pusher.push(vec![5; 960]).await.unwrap();
    let waiting = {
        let pusher = pusher.clone();
        tokio::spawn(async move { pusher.push(vec![6; 960]).await })
    };
    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    drop(src);
    let r = tokio::time::timeout(std::time::Duration::from_secs(5), waiting)
        .await
        .expect("a waiting push ends when the source is dropped")
        .unwrap();
    assert!(matches!(r, Err(Error::SourceClosed)), "{r:?}");
}

mod ogg_files {
    use super::*;
    use ogg::writing::PacketWriteEndInfo;

    pub fn head(channels: u8, pre_skip: u16) -> Vec<u8> {
        let mut h = b"OpusHead".to_vec();
        h.push(1);
        h.push(channels);
        h.extend_from_slice(&pre_skip.to_le_bytes());
        h.extend_from_slice(&44100u32.to_le_bytes());
        h.extend_from_slice(&0i16.to_le_bytes());
        h.push(0);
        h
    }

    pub fn tags(vendor: &str, comments: &[&str]) -> Vec<u8> {
        let mut t = b"OpusTags".to_vec();
        t.extend_from_slice(&(vendor.len() as u32).to_le_bytes());
        t.extend_from_slice(vendor.as_bytes());
        t.extend_from_slice(&(comments.len() as u32).to_le_bytes());
        for c in comments {
            t.extend_from_slice(&(c.len() as u32).to_le_bytes());
            t.extend_from_slice(c.as_bytes());
        }
        t
    }

    /// Encodes a 1 kHz tone with libopus in frames of the given sizes; returns the packets.
    pub fn encode(frame_sizes: &[usize], bitrate: i32) -> Vec<(Vec<u8>, u32)> {
        let mut enc =
            opus::Encoder::new(48000, opus::Channels::Mono, opus::Application::Audio).unwrap();
        enc.set_bitrate(opus::Bitrate::Bits(bitrate)).unwrap();
        let mut pos = 0;
        let mut buf = vec![0u8; 8000];
        frame_sizes
            .iter()
            .map(|&n| {
                let pcm = sine(1000.0, 12000.0, 48000, pos, n);
                pos += n;
                let len = enc.encode(&pcm, &mut buf).unwrap();
                (buf[..len].to_vec(), n as u32)
            })
            .collect()
    }

    /// Muxes an Ogg/Opus file.
    pub fn mux(head: &[u8], tags: &[u8], packets: &[(Vec<u8>, u32)]) -> Vec<u8> {
        let mut w = ogg::PacketWriter::new(Vec::new());
        let serial = 0x5EED;
        w.write_packet(head.to_vec(), serial, PacketWriteEndInfo::EndPage, 0)
            .unwrap();
        w.write_packet(tags.to_vec(), serial, PacketWriteEndInfo::EndPage, 0)
            .unwrap();
        let mut granule = 0;
        for (i, (p, n)) in packets.iter().enumerate() {
            granule += *n as u64;
            let info = if i + 1 == packets.len() {
                PacketWriteEndInfo::EndStream
            } else if i % 10 == 9 {
                PacketWriteEndInfo::EndPage
            } else {
                PacketWriteEndInfo::NormalPacket
            };
            w.write_packet(p.clone(), serial, info, granule).unwrap();
        }
        w.into_inner()
    }
}

#[test]
fn ogg_opus_packets_pass_through_unchanged() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("tone.opus");
    let sizes: Vec<usize> = [vec![960; 25], vec![2880; 10], vec![480; 4], vec![5760; 2]].concat();
    let packets = ogg_files::encode(&sizes, 32000);
    let file = ogg_files::mux(
        &ogg_files::head(1, 312),
        &ogg_files::tags("groupcall-test", &["TITLE=A tone", "ARTIST=libopus"]),
        &packets,
    );
    std::fs::write(&path, file).unwrap();

    let mut src = Source::ogg_opus(&path, opts(Channels::Mono, false)).unwrap();
    let tags = src.opus_tags().unwrap();
    assert_eq!(tags.vendor, "groupcall-test");
    assert_eq!(tags.get("title"), Some("A tone"));
    let (frames, ends) = drain(&mut src, 1000).unwrap();
    assert_eq!(ends, 1);
    let want: Vec<Owned> = packets
        .iter()
        .map(|(p, n)| Owned::Opus(p.clone(), *n))
        .collect();
    assert_eq!(
        frames, want,
        "every packet, byte for byte, with its duration"
    );

    let mut looping = Source::ogg_opus(&path, opts(Channels::Mono, true)).unwrap();
    let (frames, _) = drain(&mut looping, want.len() * 2 + 1).unwrap();
    assert_eq!(&frames[..want.len()], &want[..]);
    assert_eq!(
        &frames[want.len()..want.len() * 2],
        &want[..],
        "the loop starts over"
    );
}

#[test]
fn oversized_ogg_opus_packets_are_decoded_for_re_encoding() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("big.opus");
    // 60 ms packets at 400 kbit/s are ~3 kB: too large for one datagram.
    let packets = ogg_files::encode(&[2880; 20], 400_000);
    assert!(packets.iter().all(|(p, _)| p.len() > 1000));
    std::fs::write(
        &path,
        ogg_files::mux(
            &ogg_files::head(1, 312),
            &ogg_files::tags("x", &[]),
            &packets,
        ),
    )
    .unwrap();
    let mut src = Source::ogg_opus(&path, opts(Channels::Mono, false)).unwrap();
    let (frames, ends) = drain(&mut src, 1000).unwrap();
    assert_eq!(ends, 1);
    let out = pcm_of(&frames);
    // 1.2 s minus the 312-sample pre-skip, padded to whole frames.
    assert_eq!(out.len(), (57600 - 312usize).div_ceil(960) * 960);
    assert_frequency(&out[4800..], 48000, 1000.0, "decoded Ogg/Opus");
}

#[test]
fn malformed_ogg_files_are_typed_errors_never_panics() {
    let dir = tempfile::tempdir().unwrap();
    let packets = ogg_files::encode(&[960; 30], 32000);
    let good = ogg_files::mux(
        &ogg_files::head(1, 312),
        &ogg_files::tags("v", &["A=b"]),
        &packets,
    );
    let path = dir.path().join("bad.opus");
    let check = |bytes: &[u8], what: &str| {
        std::fs::write(&path, bytes).unwrap();
        let result = Source::ogg_opus(&path, opts(Channels::Mono, false))
            .and_then(|mut s| drain(&mut s, 10_000).map(|_| ()));
        if let Err(e) = result {
            assert!(
                matches!(
                    e,
                    Error::BadOggOpus { .. } | Error::UnsupportedFormat { .. }
                ),
                "{what}: {e:?}"
            );
            assert!(e.to_string().contains("bad.opus"), "{what}: {e}");
        }
    };
    // Every truncation.
    for len in (0..good.len()).step_by(7) {
        check(&good[..len], &format!("truncated to {len}"));
    }
    // Every byte of the first pages corrupted, and a sample of the rest.
    for i in (0..good.len()).filter(|i| *i < 200 || i % 53 == 0) {
        for v in [0x00u8, 0xff, 0x4f] {
            let mut bad = good.clone();
            bad[i] = v;
            check(&bad, &format!("byte {i} = {v:#x}"));
        }
    }
    let expect_err = |bytes: &[u8], what: &str| {
        std::fs::write(&path, bytes).unwrap();
        let r = Source::ogg_opus(&path, opts(Channels::Mono, false));
        assert!(matches!(r, Err(Error::BadOggOpus { .. })), "{what}: {r:?}");
    };
    expect_err(b"", "empty");
    expect_err(b"RIFF\0\0\0\0WAVEfmt not ogg at all", "not Ogg");
    expect_err(
        &ogg_files::mux(b"OpusHeaX", &ogg_files::tags("v", &[]), &packets),
        "not Opus",
    );
    let mut bad_tags = ogg_files::tags("v", &[]);
    bad_tags[8] = 0xff; // vendor length past the end
    expect_err(
        &ogg_files::mux(&ogg_files::head(1, 0), &bad_tags, &packets),
        "bad OpusTags",
    );
    let mut crc = good.clone();
    let last = crc.len() - 10;
    crc[last] ^= 0x55;
    std::fs::write(&path, &crc).unwrap();
    let mut s = Source::ogg_opus(&path, opts(Channels::Mono, false)).unwrap();
    let err = drain(&mut s, 1000).unwrap_err();
    assert!(err.to_string().contains("CRC"), "{err}");
    let surround = {
        let mut h = ogg_files::head(6, 0);
        h[18] = 1;
        h.extend_from_slice(&[4, 2, 0, 4, 1, 2, 3, 5]);
        h
    };
    std::fs::write(
        &path,
        ogg_files::mux(&surround, &ogg_files::tags("v", &[]), &packets),
    )
    .unwrap();
    assert!(matches!(
        Source::ogg_opus(&path, opts(Channels::Mono, false)),
        Err(Error::UnsupportedFormat { .. })
    ));
}

#[test]
fn malformed_wav_files_are_typed_errors_never_panics() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("bad.wav");
    write_wav(&path, 44100, 2, &sine(440.0, 9000.0, 44100, 0, 4000));
    let good = std::fs::read(&path).unwrap();
    let check = |bytes: &[u8], what: &str| -> Option<Error> {
        std::fs::write(&path, bytes).unwrap();
        let result = Source::wav(&path, opts(Channels::Mono, false))
            .and_then(|mut s| drain(&mut s, 10_000).map(|_| ()));
        let e = result.err()?;
        assert!(
            matches!(
                e,
                Error::BadWav { .. }
                    | Error::UnsupportedFormat { .. }
                    | Error::InvalidConfig(_)
                    | Error::Resample { .. }
            ),
            "{what}: {e:?}"
        );
        assert!(e.to_string().contains("bad.wav"), "{what}: {e}");
        Some(e)
    };
    for len in 0..good.len().min(200) {
        let e = check(&good[..len], &format!("truncated to {len}"));
        if len < 44 {
            assert!(e.is_some(), "a {len}-byte header was accepted");
        }
    }
    for i in 0..64 {
        for v in [0x00u8, 0xff, 0x01, 0x80] {
            let mut bad = good.clone();
            bad[i] = v;
            check(&bad, &format!("byte {i} = {v:#x}"));
        }
    }
    assert!(check(b"this is not a wav file, it is just text......", "text").is_some());
    let missing =
        Source::wav(dir.path().join("missing.wav"), opts(Channels::Mono, false)).unwrap_err();
    assert!(matches!(missing, Error::OpenInput { .. }), "{missing:?}");
}

#[cfg(unix)]
mod ffmpeg {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    /// A stand-in for ffmpeg that checks the arguments the engine passes and writes the raw
    /// file named after `-i` to stdout, like `ffmpeg -i X -f s16le -ar 48000 -ac N pipe:1`.
    const FAKE: &str = r#"#!/bin/sh
while [ $# -gt 0 ]; do
  case "$1" in
    -i) shift; in="$1" ;;
    -ar) shift; ar="$1" ;;
    -f) shift; f="$1" ;;
    -ac) shift; ac="$1" ;;
    pipe:1) out=yes ;;
  esac
  shift
done
[ "$ar" = 48000 ] && [ "$f" = s16le ] && [ "$out" = yes ] && [ -n "$ac" ] || { echo "bad arguments" >&2; exit 2; }
[ -f "$in" ] || { echo "$in: No such file or directory" >&2; exit 1; }
cat "$in"
"#;

    fn fake(dir: &Path) -> PathBuf {
        let path = dir.join("fake-ffmpeg");
        std::fs::write(&path, FAKE).unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
        path
    }

    /// Spawning right after writing the script can meet ETXTBSY while another test thread
    /// forks: retry a few times.
    fn spawn(input: &str, bin: &Path, looping: bool) -> Result<Source, Error> {
        let mut last = None;
        for _ in 0..20 {
            match Source::ffmpeg(input, Some(bin), opts(Channels::Mono, looping)) {
                Err(Error::FfmpegSpawn { source, .. }) if source.raw_os_error() == Some(26) => {
                    std::thread::sleep(std::time::Duration::from_millis(20));
                    last = Some(source);
                }
                other => return other,
            }
        }
        panic!("ffmpeg stand-in stays busy: {last:?}");
    }

    /// An ffmpeg that writes its input, says its pid, and then hangs (a URL gone quiet).
    const HANGING: &str = r#"#!/bin/sh
while [ $# -gt 0 ]; do
  case "$1" in
    -i) shift; in="$1" ;;
  esac
  shift
done
cat "$in"
echo $$ > "$in.pid"
exec sleep 60
"#;

    #[test]
    fn a_hanging_ffmpeg_never_blocks_a_pull_and_is_killed_and_reaped_on_drop() {
        let dir = tempfile::tempdir().unwrap();
        let bin = dir.path().join("hanging-ffmpeg");
        std::fs::write(&bin, HANGING).unwrap();
        std::fs::set_permissions(&bin, std::fs::Permissions::from_mode(0o755)).unwrap();
        let tone = sine(440.0, 8000.0, 48000, 0, 1920);
        let input = dir.path().join("song.raw");
        std::fs::write(
            &input,
            tone.iter()
                .flat_map(|s| s.to_le_bytes())
                .collect::<Vec<u8>>(),
        )
        .unwrap();
        let mut src = spawn(input.to_str().unwrap(), &bin, false).unwrap();
        let pid_file = input.with_extension("raw.pid");
        let start = std::time::Instant::now();
        let mut frames = 0;
        let mut slowest = std::time::Duration::ZERO;
        while start.elapsed() < std::time::Duration::from_millis(500) {
            let t = std::time::Instant::now();
            let next = src.next_frame().unwrap();
            slowest = slowest.max(t.elapsed());
            match next {
                Next::Frame(_) => frames += 1,
                Next::Idle => std::thread::sleep(std::time::Duration::from_millis(1)),
                Next::End => panic!("ffmpeg has not ended"),
            }
        }
        assert!(slowest < PULL_BOUND, "a pull took {slowest:?}");
        assert_eq!(frames, 2);
        assert!(src.underruns() > 0);
        let pid: u32 = std::fs::read_to_string(&pid_file)
            .unwrap()
            .trim()
            .parse()
            .unwrap();
        let proc_dir = PathBuf::from(format!("/proc/{pid}"));
        assert!(proc_dir.exists(), "ffmpeg runs");
        let t = std::time::Instant::now();
        drop(src);
        assert!(t.elapsed() < PULL_BOUND, "dropping took {:?}", t.elapsed());
        // Killed and reaped: not even a zombie is left.
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
        while proc_dir.exists() {
            assert!(
                std::time::Instant::now() < deadline,
                "ffmpeg (pid {pid}) still exists 5 s after the source was dropped: {:?}",
                std::fs::read_to_string(proc_dir.join("stat"))
            );
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
    }

    #[test]
    fn missing_ffmpeg_is_a_clear_error() {
        let err = Source::ffmpeg(
            "song.mp3",
            Some(Path::new("/nonexistent/bin/ffmpeg")),
            SourceOptions::default(),
        )
        .unwrap_err();
        assert!(
            matches!(&err, Error::FfmpegMissing { binary } if binary == Path::new("/nonexistent/bin/ffmpeg")),
            "{err:?}"
        );
        assert!(err.to_string().contains("install ffmpeg"), "{err}");
    }

    #[test]
    fn ffmpeg_output_is_read_looped_and_its_failures_reported() {
        let dir = tempfile::tempdir().unwrap();
        let bin = fake(dir.path());
        let tone = sine(440.0, 8000.0, 48000, 0, 4800);
        let input = dir.path().join("song.raw");
        std::fs::write(
            &input,
            tone.iter()
                .flat_map(|s| s.to_le_bytes())
                .collect::<Vec<u8>>(),
        )
        .unwrap();
        let input = input.to_str().unwrap();

        let mut src = spawn(input, &bin, false).unwrap();
        let (frames, ends) = drain(&mut src, 100).unwrap();
        assert_eq!((frames.len(), ends), (5, 1));
        assert_eq!(pcm_of(&frames), tone);

        let mut src = spawn(input, &bin, true).unwrap();
        let out = pcm_of(&drain(&mut src, 12).unwrap().0);
        assert_eq!(&out[4800..9600], &tone[..], "the loop restarts ffmpeg");

        let mut src = spawn("/no/such/song.mp3", &bin, false).unwrap();
        let err = drain(&mut src, 100).unwrap_err();
        match &err {
            Error::FfmpegFailed { input, stderr, .. } => {
                assert_eq!(input, "/no/such/song.mp3");
                assert!(stderr.contains("No such file"), "{stderr}");
            }
            other => panic!("{other:?}"),
        }
        assert!(src.is_finished());
        assert_eq!(
            src.next_frame().unwrap(),
            Next::Idle,
            "an error is reported once too"
        );
    }
}

/// The committed fixtures: file, tone, length in seconds.
const FORMATS: [(&str, f64, f64); 6] = [
    ("tone440.mp3", 440.0, 1.5),
    ("tone550.flac", 550.0, 1.0),
    ("tone660.ogg", 660.0, 1.0),
    ("tone770.m4a", 770.0, 1.0),
    ("tone880.aac", 880.0, 1.0),
    ("tone330_alac.m4a", 330.0, 1.0),
];

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(name)
}

/// MP3 (44.1 kHz stereo), FLAC (48 kHz mono) and Ogg Vorbis (22.05 kHz mono), made with sox,
/// and AAC in MP4 (44.1 kHz stereo), AAC in ADTS (32 kHz mono) and ALAC in MP4 (16 kHz mono),
/// made with ffmpeg, all committed (`tests/fixtures/README.md` says how), decode in-process (no
/// ffmpeg anywhere on this path) to 48 kHz at their tone's frequency, for their whole length,
/// in mono and in stereo.
#[test]
fn every_compressed_format_decodes_in_process_at_the_right_pitch_and_length() {
    for (file, hz, seconds) in FORMATS {
        for channels in [Channels::Mono, Channels::Stereo] {
            let mut src = Source::decoded(fixture(file), opts(channels, false)).unwrap();
            let (frames, ends) = drain(&mut src, 1000).unwrap();
            assert!(ends >= 1, "{file}: the source ends");
            let out = pcm_of(&frames);
            let n = channels.count();
            let secs = out.len() as f64 / n as f64 / 48000.0;
            // MP3 adds an encoder delay and padding (a few ms); the last frame is padded.
            assert!(
                secs >= seconds - 0.03 && secs <= seconds + 0.08,
                "{file}: {secs:.3} s decoded"
            );
            let mono = channel(&out, n, 0);
            let mid = mono.len() / 2;
            assert_frequency(&mono[mid - 12000..mid + 12000], 48000, hz, file);
            if n == 2 {
                // Both sides carry the tone; a lossy codec may code them a little apart, so
                // they agree to within 1 % of the signal's energy, not bit for bit.
                let (l, r) = (channel(&out, 2, 0), channel(&out, 2, 1));
                let energy: f64 = l.iter().map(|&x| (x as f64).powi(2)).sum();
                let apart: f64 = l
                    .iter()
                    .zip(&r)
                    .map(|(&a, &b)| (a as f64 - b as f64).powi(2))
                    .sum();
                assert!(
                    apart < energy * 0.01,
                    "{file}: the sides differ by {:.1} % of the energy",
                    apart / energy * 100.0
                );
            }
        }
    }
}

#[test]
fn a_decoded_file_loops_and_bad_input_is_refused_clearly() {
    let mut src = Source::decoded(fixture("tone550.flac"), opts(Channels::Mono, true)).unwrap();
    // Three times the file's length: it starts over instead of ending.
    let (frames, ends) = drain(&mut src, 150).unwrap();
    assert_eq!((frames.len(), ends), (150, 0));
    let out = pcm_of(&frames);
    assert_frequency(
        &out[48000 + 12000..48000 + 36000],
        48000,
        550.0,
        "second round",
    );

    let dir = tempfile::tempdir().unwrap();
    let junk = dir.path().join("junk.mp3");
    std::fs::write(&junk, b"this is not audio at all, just some text in a file").unwrap();
    let err = Source::decoded(&junk, opts(Channels::Mono, false)).unwrap_err();
    assert!(
        matches!(err, Error::UnsupportedFormat { .. }) && err.to_string().contains("junk.mp3"),
        "{err}"
    );
    let err =
        Source::decoded(dir.path().join("missing.flac"), opts(Channels::Mono, false)).unwrap_err();
    assert!(matches!(err, Error::OpenInput { .. }), "{err}");
}

/// A stepped sweep: second `k` of the file is a tone at 300 + 10 k Hz.
fn sweep(seconds: usize) -> Vec<i16> {
    (0..seconds)
        .flat_map(|k| sine(300.0 + 10.0 * k as f64, 12000.0, 48000, k * 48000, 48000))
        .collect()
}

/// WAV and decoded files go where a seek asks: the position says so at once, the frames
/// that follow are the ones at that time (the step of the sweep that belongs there), and the
/// rest of the file plays to its end. Sources that cannot seek say why.
#[test]
fn files_seek_to_the_asked_time_and_streams_refuse() {
    let dir = tempfile::tempdir().unwrap();
    let wav = dir.path().join("sweep.wav");
    write_wav(&wav, 48000, 1, &sweep(6));
    let mut src = Source::wav(&wav, opts(Channels::Mono, false)).unwrap();
    let (played, _) = drain(&mut src, 10).unwrap();
    assert_eq!(played.len(), 10);
    assert_eq!(src.position(), std::time::Duration::from_millis(200));
    src.seek(std::time::Duration::from_millis(4200)).unwrap();
    assert_eq!(src.position(), std::time::Duration::from_millis(4200));
    let (rest, ends) = drain(&mut src, 1000).unwrap();
    assert!(ends >= 1);
    let out = pcm_of(&rest);
    // 1.8 s were left after 4.2 s; the first 0.7 s of them is second 4 of the sweep.
    assert!(
        (out.len() as i64 - 86_400).abs() <= 960,
        "{} samples",
        out.len()
    );
    assert_frequency(&out[2400..31_200], 48000, 340.0, "second 4 after the seek");
    assert_frequency(&out[43_200..], 48000, 350.0, "second 5");
    assert_eq!(src.position(), std::time::Duration::from_millis(6000));

    let mut flac = Source::decoded(fixture("tone550.flac"), opts(Channels::Mono, false)).unwrap();
    flac.seek(std::time::Duration::from_millis(500)).unwrap();
    let (rest, _) = drain(&mut flac, 1000).unwrap();
    let left = pcm_of(&rest).len() as f64 / 48000.0;
    assert!(
        (0.47..=0.53).contains(&left),
        "{left:.3} s left after seeking to 0.5 s of 1 s"
    );

    let mut mp3 = Source::decoded(fixture("tone440.mp3"), opts(Channels::Mono, false)).unwrap();
    mp3.seek(std::time::Duration::from_millis(1000)).unwrap();
    let (rest, _) = drain(&mut mp3, 1000).unwrap();
    let left = pcm_of(&rest).len() as f64 / 48000.0;
    assert!(
        (0.45..=0.58).contains(&left),
        "{left:.3} s left after seeking to 1 s of 1.5 s"
    );

    let (mut pushed, _pusher) = Source::pushed(4, opts(Channels::Mono, false)).unwrap();
    let err = pushed.seek(std::time::Duration::from_secs(1)).unwrap_err();
    assert!(matches!(err, Error::CannotSeek { .. }), "{err}");
}
