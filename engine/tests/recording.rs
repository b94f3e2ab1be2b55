//! Recordings are written off the call's task: a panicking task still leaves finalized WAV
//! files, and a disk slower than real time costs dropped (and reported) blocks, never a wait.

mod support;

use std::path::Path;
use std::time::{Duration, Instant};

use groupcall_engine::audio::{
    Channels, FileFormat, FileSink, FrameKind, MixRecorder, ParticipantSinks, RecordingWriter,
};
use groupcall_engine::Error;
use support::sine;

/// Waits (5 s at most) until hound reads the whole WAV: a file whose header was never
/// finalized says it holds no samples.
fn finalized_wav(path: &Path, samples: usize) -> (Vec<i16>, u16) {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let read = hound::WavReader::open(path).map(|mut r| {
            let channels = r.spec().channels;
            let data: Result<Vec<i16>, _> = r.samples::<i16>().collect();
            (data, channels, r.spec().sample_rate)
        });
        if let Ok((Ok(data), channels, rate)) = read {
            if data.len() == samples {
                assert_eq!(rate, 48000);
                return (data, channels);
            }
        }
        assert!(
            Instant::now() < deadline,
            "{} is not a finalized WAV of {samples} samples 5 s after its task panicked",
            path.display()
        );
        std::thread::sleep(Duration::from_millis(10));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wav_files_are_finalized_when_the_task_that_owns_them_panics() {
    let dir = tempfile::tempdir().unwrap();
    let (single, mix, speakers) = (
        dir.path().join("single.wav"),
        dir.path().join("mix.wav"),
        dir.path().join("speakers"),
    );
    std::fs::create_dir(&speakers).unwrap();
    let tone = sine(700.0, 9000.0, 48000, 0, 960 * 50);
    let task = {
        let (single, mix, speakers, tone) =
            (single.clone(), mix.clone(), speakers.clone(), tone.clone());
        tokio::spawn(async move {
            // What a call's task owns: a file, the mix and the per-speaker files, the last two
            // on one writer thread.
            let mut file = FileSink::create(&single, FileFormat::Wav, Channels::Stereo).unwrap();
            let mut recorder = MixRecorder::create(&mix, FileFormat::Wav, Channels::Mono).unwrap();
            let mut sinks = ParticipantSinks::new(Channels::Mono, Duration::ZERO)
                .with_files(&speakers, FileFormat::Wav)
                .with_writer(recorder.writer());
            for frame in tone.chunks(960) {
                let stereo: Vec<i16> = frame.iter().flat_map(|&s| [s, -s]).collect();
                file.write(&stereo).unwrap();
                recorder.add(frame, 1.0).unwrap();
                recorder.write_tick().unwrap();
                sinks.write(42, FrameKind::Decoded, frame).unwrap();
                tokio::task::yield_now().await;
            }
            panic!("the call's task fails with its recordings open");
        })
    };
    let err = task.await.unwrap_err();
    assert!(err.is_panic());

    let (data, channels) = finalized_wav(&single, tone.len() * 2);
    assert_eq!(channels, 2);
    assert!(data
        .chunks(2)
        .zip(&tone)
        .all(|(lr, &s)| lr[0] == s && lr[1] == -s));
    let (data, channels) = finalized_wav(&mix, tone.len());
    assert_eq!((channels, data), (1, tone.clone()));
    let (data, _) = finalized_wav(&speakers.join("ssrc42.wav"), tone.len());
    assert_eq!(data, tone);
}

/// A disk that stops taking data: a named pipe whose reader does not read until told to.
#[cfg(unix)]
#[test]
fn a_disk_slower_than_real_time_drops_blocks_and_says_so_but_never_blocks() {
    use std::io::Read;

    let dir = tempfile::tempdir().unwrap();
    let fifo = dir.path().join("slow.raw");
    let made = std::process::Command::new("mkfifo")
        .arg(&fifo)
        .status()
        .expect("mkfifo runs");
    assert!(made.success());
    let (go, wait) = std::sync::mpsc::channel::<()>();
    let disk = {
        let fifo = fifo.clone();
        std::thread::spawn(move || {
            let mut f = std::fs::File::open(fifo).unwrap();
            wait.recv().unwrap();
            let mut all = Vec::new();
            f.read_to_end(&mut all).unwrap();
            all
        })
    };
    let writer = RecordingWriter::with_capacity(100).unwrap();
    let mut sink = writer
        .create(&fifo, FileFormat::Raw, Channels::Mono)
        .unwrap();
    let (mut accepted, mut behind) = (Vec::new(), 0u64);
    let mut slowest = Duration::ZERO;
    let start = Instant::now();
    for i in 0..1000u32 {
        let frame = vec![i as i16; 960];
        let t = Instant::now();
        let r = sink.write(&frame);
        slowest = slowest.max(t.elapsed());
        match r {
            Ok(()) => accepted.push(i as i16),
            Err(Error::RecordingBehind {
                path,
                dropped,
                capacity,
            }) => {
                behind += 1;
                assert_eq!(
                    (path.as_path(), dropped, capacity),
                    (fifo.as_path(), behind, 100)
                );
            }
            Err(e) => panic!("{e:?}"),
        }
    }
    assert!(
        slowest < Duration::from_millis(50) && start.elapsed() < Duration::from_secs(2),
        "writes waited for the disk: slowest {slowest:?}, all {:?}",
        start.elapsed()
    );
    // The queue (100) plus what the pipe and the buffers took before the disk stopped.
    assert!(
        (100..300).contains(&accepted.len()),
        "{} blocks accepted",
        accepted.len()
    );
    assert_eq!(sink.dropped_blocks(), behind);
    assert_eq!(accepted.len() as u64 + behind, 1000);
    let err = Error::RecordingBehind {
        path: fifo.clone(),
        dropped: behind,
        capacity: 100,
    };
    assert!(err.to_string().contains("slow.raw"), "{err}");

    // The disk catches up: every accepted block is in the file, in order, and nothing else.
    go.send(()).unwrap();
    sink.finish().unwrap();
    let bytes = disk.join().unwrap();
    let samples: Vec<i16> = bytes
        .chunks_exact(2)
        .map(|b| i16::from_le_bytes([b[0], b[1]]))
        .collect();
    let want: Vec<i16> = accepted.iter().flat_map(|&v| [v; 960]).collect();
    assert!(samples == want, "the file holds {} samples", samples.len());
}
