//! Per-participant outputs, and what happens to audio from an SSRC the roster has not named yet.
//!
//! Telegram forwards a new speaker's audio before the client learns who it is (the SSRC is
//! looked up with `phone.getGroupParticipants`, one round trip or more). tgcalls buffers 50
//! packets and then drops them; here the decoded frames are held, up to a bound, and released
//! with the peer once it is known. If the roster takes longer than the bound, the frames are
//! released without a peer rather than lost, and later frames carry the peer once it comes.

use std::borrow::Cow;
use std::collections::{HashMap, HashSet, VecDeque};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use super::app::{AppSink, PeerId, ReceivedFrame};
use super::file::{FileFormat, FileSink};
use super::writer::{Closing, RecordingWriter, FINISH_WAIT};
use crate::audio::{Channels, FrameKind, FRAME_SAMPLES, SAMPLE_RATE};
use crate::error::{Error, Result};

struct Stream {
    peer: Option<PeerId>,
    /// Gave up waiting for the roster: frames flow without a peer.
    anonymous: bool,
    held: VecDeque<(FrameKind, Vec<i16>)>,
    file: Option<FileSink>,
    /// Silent frames in a row (for [`ParticipantSinks::trim_silence`]).
    silent_run: usize,
}

/// Routes each speaker's frames to their own file and/or to the application.
pub struct ParticipantSinks {
    channels: Channels,
    hold_frames: usize,
    files: Option<(PathBuf, FileFormat)>,
    app: Option<AppSink>,
    streams: HashMap<u32, Stream>,
    /// Started with the first file unless given ([`ParticipantSinks::with_writer`]).
    writer: Option<RecordingWriter>,
    /// Files of speakers who left, being finalized on the writer thread.
    closing: Vec<Closing>,
    /// Silent frames in a row kept in a file before the rest of the run is left out; `None`
    /// keeps every one, so the file keeps the call's timeline.
    trim_silence: Option<usize>,
    /// File names used in this call (bounded by the senders a call keeps over its life; a
    /// name is a few dozen bytes).
    names: HashSet<String>,
}

impl std::fmt::Debug for ParticipantSinks {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ParticipantSinks")
            .field("channels", &self.channels)
            .field("hold_frames", &self.hold_frames)
            .field("files", &self.files)
            .field("streams", &self.streams.len())
            .finish_non_exhaustive()
    }
}

impl ParticipantSinks {
    /// `hold` bounds how much audio of an unnamed SSRC waits for the roster (per SSRC).
    pub fn new(channels: Channels, hold: Duration) -> Self {
        let frame_ms = (FRAME_SAMPLES as u64 * 1000 / SAMPLE_RATE as u64).max(1);
        ParticipantSinks {
            channels,
            hold_frames: (hold.as_millis() as u64 / frame_ms) as usize,
            files: None,
            app: None,
            streams: HashMap::new(),
            writer: None,
            closing: Vec::new(),
            trim_silence: None,
            names: HashSet::new(),
        }
    }

    /// Leaves silences longer than `keep` out of the files (the timeline is then lost: a file
    /// no longer lines up with the mix and the other speakers' files).
    pub fn trim_silence(mut self, keep: Duration) -> Self {
        let frame_ms = (FRAME_SAMPLES as u64 * 1000 / SAMPLE_RATE as u64).max(1);
        self.trim_silence = Some((keep.as_millis() as u64 / frame_ms) as usize);
        self
    }

    /// One file per SSRC in `dir`: `peer<PEER>_ssrc<SSRC>.<ext>`, or `ssrc<SSRC>.<ext>` when
    /// the peer was not known when the first frame was written.
    pub fn with_files(mut self, dir: impl Into<PathBuf>, format: FileFormat) -> Self {
        self.files = Some((dir.into(), format));
        self
    }

    /// Starts a file per speaker mid-call: each begins with the speaker's next frame. An
    /// error if files are already being written.
    pub fn start_files(&mut self, dir: PathBuf, format: FileFormat) -> Result<()> {
        if let Some((current, _)) = &self.files {
            return Err(Error::InvalidConfig(format!(
                "the call already records each speaker into {}",
                current.display()
            )));
        }
        self.files = Some((dir, format));
        Ok(())
    }

    /// Writes the files on `writer`'s thread: one thread for all of a call's recordings (the
    /// mix's included, with [`super::MixRecorder::writer`]). Without it, a thread is started
    /// with the first file.
    pub fn with_writer(mut self, writer: RecordingWriter) -> Self {
        self.writer = Some(writer);
        self
    }

    /// Uses `writer` for files opened from now on, unless a writer is already in use.
    pub fn share_writer(&mut self, writer: RecordingWriter) {
        self.writer.get_or_insert(writer);
    }

    pub fn with_app(mut self, app: AppSink) -> Self {
        self.app = Some(app);
        self
    }

    /// Whether any frame goes anywhere (files or the application).
    pub fn has_outputs(&self) -> bool {
        self.files.is_some() || self.app.is_some()
    }

    /// The file an SSRC is recorded to, once it has been created.
    pub fn file_path(&self, ssrc: u32) -> Option<&Path> {
        self.streams.get(&ssrc)?.file.as_ref().map(FileSink::path)
    }

    /// Frames of `ssrc` waiting for the roster.
    pub fn held(&self, ssrc: u32) -> usize {
        self.streams.get(&ssrc).map_or(0, |s| s.held.len())
    }

    /// The roster named the owner of `ssrc`: held frames go out now, with the peer.
    pub fn identify(&mut self, ssrc: u32, peer: PeerId) -> Result<()> {
        let stream = self.streams.entry(ssrc).or_insert_with(new_stream);
        stream.peer = Some(peer);
        self.release(ssrc)
    }

    /// One 20 ms frame of `ssrc`.
    pub fn write(&mut self, ssrc: u32, kind: FrameKind, pcm: &[i16]) -> Result<()> {
        if pcm.len() != self.channels.frame_len() {
            return Err(Error::FrameSize {
                expected: self.channels.frame_len(),
                got: pcm.len(),
            });
        }
        if self.files.is_none() && self.app.is_none() {
            return Ok(());
        }
        // A speaker's recording starts with their first sound; from then on it has their
        // silences too.
        if kind == FrameKind::Silence && !self.streams.contains_key(&ssrc) {
            return Ok(());
        }
        let hold = self.hold_frames;
        let stream = self.streams.entry(ssrc).or_insert_with(new_stream);
        if stream.peer.is_none() && !stream.anonymous {
            if stream.held.len() < hold {
                stream.held.push_back((kind, pcm.to_vec()));
                return Ok(());
            }
            stream.anonymous = true;
            self.release(ssrc)?;
        }
        let delivered = self.deliver(ssrc, kind, Cow::Borrowed(pcm));
        delivered.and(self.poll_closing())
    }

    /// The answers about files closed earlier: the first failure, without waiting.
    fn poll_closing(&mut self) -> Result<()> {
        if self.closing.is_empty() {
            return Ok(());
        }
        let mut first = Ok(());
        self.closing.retain_mut(|c| match c.poll() {
            None => true,
            Some(r) => {
                if first.is_ok() {
                    first = r;
                }
                false
            }
        });
        first
    }

    /// The participant left: held frames go out (without a peer if still unknown) and the
    /// file is closed on the writer thread without waiting; a failure to finalize it is the
    /// error of a later [`ParticipantSinks::write`], or of [`ParticipantSinks::finish`].
    pub fn remove(&mut self, ssrc: u32) -> Result<()> {
        let released = self.release(ssrc);
        if let Some(f) = self.streams.remove(&ssrc).and_then(|s| s.file) {
            self.closing.push(f.close());
        }
        released.and(self.poll_closing())
    }

    /// Closes everything and waits for the writer to finalize every file, for a bounded time
    /// (the end of a call, not its packet loop). The first error is returned, after every
    /// file has been tried.
    pub fn finish(mut self) -> Result<()> {
        let ssrcs: Vec<u32> = self.streams.keys().copied().collect();
        let mut first = Ok(());
        for ssrc in ssrcs {
            let r = self.release(ssrc);
            if first.is_ok() {
                first = r;
            }
            if let Some(f) = self.streams.remove(&ssrc).and_then(|s| s.file) {
                self.closing.push(f.close());
            }
        }
        let deadline = Instant::now() + FINISH_WAIT;
        for closing in self.closing.drain(..) {
            let r = closing.wait(deadline);
            if first.is_ok() {
                first = r;
            }
        }
        first
    }

    fn release(&mut self, ssrc: u32) -> Result<()> {
        let Some(stream) = self.streams.get_mut(&ssrc) else {
            return Ok(());
        };
        let held = std::mem::take(&mut stream.held);
        let mut first = Ok(());
        for (kind, pcm) in held {
            let r = self.deliver(ssrc, kind, Cow::Owned(pcm));
            if first.is_ok() {
                first = r;
            }
        }
        first
    }

    /// Borrowed on the 20 ms path: only the application's frames need a copy of their own.
    fn deliver(&mut self, ssrc: u32, kind: FrameKind, pcm: Cow<'_, [i16]>) -> Result<()> {
        let Some(stream) = self.streams.get_mut(&ssrc) else {
            return Ok(());
        };
        let silent = kind == FrameKind::Silence;
        stream.silent_run = if silent { stream.silent_run + 1 } else { 0 };
        let trimmed = silent
            && self
                .trim_silence
                .is_some_and(|keep| stream.silent_run > keep);
        let mut file_result = Ok(());
        if let Some((dir, format)) = self.files.as_ref().filter(|_| !trimmed) {
            if stream.file.is_none() {
                let base = match stream.peer {
                    Some(peer) => format!("peer{peer}_ssrc{ssrc}"),
                    None => format!("ssrc{ssrc}"),
                };
                // A speaker forgotten after a long silence who speaks again gets a file of
                // their own rather than overwriting the one closed earlier in this call.
                let mut name = format!("{base}.{}", format.extension());
                let mut part = 1;
                while !self.names.insert(name.clone()) {
                    part += 1;
                    name = format!("{base}_part{part}.{}", format.extension());
                }
                if self.writer.is_none() {
                    self.writer = Some(RecordingWriter::new()?);
                }
                if let Some(writer) = &self.writer {
                    // Created on the writer thread: a failure is the error of a later write.
                    stream.file = Some(writer.open(dir.join(name), *format, self.channels));
                }
            }
            if let Some(file) = stream.file.as_mut() {
                file_result = file.write(&pcm);
            }
        }
        // The application gets sound only: it has the clock, and frames carry their kind.
        let app_result = match self.app.as_mut().filter(|_| !silent) {
            Some(app) => app.deliver(ReceivedFrame {
                ssrc,
                peer: stream.peer,
                kind,
                channels: self.channels,
                pcm: pcm.into_owned(),
            }),
            None => Ok(()),
        };
        file_result.and(app_result)
    }
}

fn new_stream() -> Stream {
    Stream {
        peer: None,
        anonymous: false,
        held: VecDeque::new(),
        file: None,
        silent_run: 0,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frame(v: i16) -> Vec<i16> {
        vec![v; 960]
    }

    #[test]
    fn unknown_ssrc_is_held_then_released_with_its_peer() {
        let (app, rx) = AppSink::channel(100);
        let mut s = ParticipantSinks::new(Channels::Mono, Duration::from_millis(200)).with_app(app);
        for i in 0..5 {
            s.write(7, FrameKind::Decoded, &frame(i)).unwrap();
        }
        assert!(
            rx.try_recv().is_err(),
            "nothing before the roster names SSRC 7"
        );
        assert_eq!(s.held(7), 5);
        s.identify(7, 4242).unwrap();
        s.write(7, FrameKind::Concealed, &frame(5)).unwrap();
        let got: Vec<_> = rx.try_iter().collect();
        assert_eq!(got.len(), 6);
        for (i, f) in got.iter().enumerate() {
            assert_eq!((f.ssrc, f.peer, f.pcm[0]), (7, Some(4242), i as i16));
        }
        assert_eq!(got[5].kind, FrameKind::Concealed);
    }

    #[test]
    fn a_slow_roster_gets_frames_without_a_peer_not_a_loss() {
        let (app, rx) = AppSink::channel(100);
        let mut s = ParticipantSinks::new(Channels::Mono, Duration::from_millis(100)).with_app(app);
        for i in 0..8 {
            s.write(9, FrameKind::Decoded, &frame(i)).unwrap();
        }
        let got: Vec<_> = rx.try_iter().collect();
        assert_eq!(
            got.iter().map(|f| f.pcm[0]).collect::<Vec<_>>(),
            (0..8).collect::<Vec<_>>()
        );
        assert!(got.iter().all(|f| f.peer.is_none()));
        s.identify(9, 1).unwrap();
        s.write(9, FrameKind::Decoded, &frame(8)).unwrap();
        assert_eq!(rx.try_recv().unwrap().peer, Some(1));
    }

    #[test]
    fn files_are_named_by_peer_and_hold_every_frame() {
        let dir = tempfile::tempdir().unwrap();
        let mut s = ParticipantSinks::new(Channels::Mono, Duration::from_secs(1))
            .with_files(dir.path(), FileFormat::Wav);
        s.write(1, FrameKind::Decoded, &frame(1)).unwrap();
        s.identify(1, -100123).unwrap();
        s.write(1, FrameKind::Decoded, &frame(2)).unwrap();
        s.write(2, FrameKind::Decoded, &frame(3)).unwrap();
        assert_eq!(
            s.file_path(1),
            Some(dir.path().join("peer-100123_ssrc1.wav").as_path())
        );
        s.remove(2).unwrap(); // left before being named: written anonymously
        s.finish().unwrap();
        let (anonymous, _) = read(&dir.path().join("ssrc2.wav"));
        assert_eq!(anonymous, frame(3));
        let (back, _) = read(&dir.path().join("peer-100123_ssrc1.wav"));
        assert_eq!(back.len(), 1920);
        assert_eq!((back[0], back[1919]), (1, 2));
    }

    fn read(path: &Path) -> (Vec<i16>, u16) {
        let mut r = hound::WavReader::open(path).unwrap();
        let channels = r.spec().channels;
        (r.samples::<i16>().map(|x| x.unwrap()).collect(), channels)
    }

    #[test]
    fn sink_errors_surface() {
        let mut s = ParticipantSinks::new(Channels::Mono, Duration::ZERO)
            .with_files("/nonexistent/groupcall/dir", FileFormat::Raw);
        // The file is created on the writer thread: the failure is the error of a later write.
        let deadline = Instant::now() + Duration::from_secs(5);
        let err = loop {
            match s.write(3, FrameKind::Decoded, &frame(0)) {
                Err(e) => break e,
                Ok(()) => {
                    assert!(Instant::now() < deadline, "no create error within 5 s");
                    std::thread::sleep(Duration::from_millis(1));
                }
            }
        };
        assert!(matches!(err, Error::CreateSink { .. }), "{err:?}");
        assert!(
            err.to_string()
                .contains("/nonexistent/groupcall/dir/ssrc3.raw"),
            "{err}"
        );
        // Reported once; later frames are refused too, and closing does not repeat it.
        assert!(s.write(3, FrameKind::Decoded, &frame(0)).is_err());
        s.finish().unwrap();

        let (app, rx) = AppSink::channel(1);
        let mut s = ParticipantSinks::new(Channels::Mono, Duration::ZERO).with_app(app);
        s.write(3, FrameKind::Decoded, &frame(0)).unwrap();
        let err = s.write(3, FrameKind::Decoded, &frame(0)).unwrap_err();
        assert!(
            matches!(
                err,
                Error::AppSinkFull {
                    capacity: 1,
                    ssrc: 3
                }
            ),
            "{err:?}"
        );
        drop(rx);
        let err = s.write(3, FrameKind::Decoded, &frame(0)).unwrap_err();
        assert!(matches!(err, Error::AppSinkClosed { ssrc: 3 }), "{err:?}");
        assert!(matches!(
            s.write(3, FrameKind::Decoded, &[0; 100]),
            Err(Error::FrameSize { .. })
        ));
    }

    /// A speaker whose file was closed (forgotten after a silence) and who comes back gets a
    /// second file; the first keeps what it had.
    #[test]
    fn a_speaker_who_comes_back_does_not_overwrite_their_first_file() {
        let dir = tempfile::tempdir().unwrap();
        let mut s = ParticipantSinks::new(Channels::Mono, Duration::ZERO)
            .with_files(dir.path(), FileFormat::Wav);
        for _ in 0..5 {
            s.write(9, FrameKind::Decoded, &frame(100)).unwrap();
        }
        let first = s.file_path(9).unwrap().to_path_buf();
        s.remove(9).unwrap();
        for _ in 0..3 {
            s.write(9, FrameKind::Decoded, &frame(200)).unwrap();
        }
        let second = s.file_path(9).unwrap().to_path_buf();
        s.finish().unwrap();
        assert_ne!(first, second);
        let len = |p: &Path| hound::WavReader::open(p).unwrap().len();
        assert_eq!(len(&first), 5 * 960, "{}", first.display());
        assert_eq!(len(&second), 3 * 960, "{}", second.display());
    }
}
