//! Where a published video comes from: the generated pattern, a Y4M file read natively, raw
//! I420 on a pipe or standard input, any other file decoded by an ffmpeg child process, or
//! frames the application pushes.
//!
//! A source is read on the call's encoder thread (`publish.rs`), never on the call's task: a
//! file or a pipe may block. Sources with a rate are paced by that thread at their frame rate
//! (frame n leaves at start + n/fps whatever the reads cost); pushed frames leave as they come.

use std::ffi::OsString;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::Child;
use std::sync::mpsc;
use std::time::Duration;

use super::frame::Frame;
use super::pattern;
use super::y4m::Y4mReader;
use crate::error::{Error, Result};

/// The highest frame rate taken: more is a typo, and would cost an encoder thread its CPU.
pub const MAX_FPS: f32 = 60.0;
/// The pattern's and ffmpeg's size when none is given: a camera's top layer in Telegram.
pub const DEFAULT_SIZE: (u32, u32) = (1280, 720);
pub const DEFAULT_FPS: f32 = 30.0;
/// Frames a pushed source holds before `push` refuses (about 130 ms at 30 fps).
pub const PUSH_CAPACITY: usize = 4;

trait Input: Send {
    /// The next picture, `None` at the end. The timestamp is set by the caller.
    fn next(&mut self) -> Result<Option<Frame>>;

    /// [`Input::next`], giving up after `wait` where the input can (pushed frames), so the
    /// reader can check whether it is still wanted.
    fn next_within(&mut self, wait: Duration) -> Result<Next> {
        let _ = wait;
        Ok(match self.next()? {
            Some(f) => Next::Frame(f),
            None => Next::End,
        })
    }
}

/// What a source gave within a wait.
pub(crate) enum Next {
    Frame(Frame),
    End,
    /// Nothing yet.
    Nothing,
}

/// A video to publish: what it is called, its size and rate, and how to read it.
pub struct VideoSource {
    name: String,
    width: u32,
    height: u32,
    fps: f32,
    /// Frames come when the application pushes them, not on the source's clock.
    pushed: bool,
    input: Box<dyn Input>,
}

impl std::fmt::Debug for VideoSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("VideoSource")
            .field("name", &self.name)
            .field("width", &self.width)
            .field("height", &self.height)
            .field("fps", &self.fps)
            .finish_non_exhaustive()
    }
}

fn check_fps(fps: f32) -> Result<()> {
    if !(1.0..=MAX_FPS).contains(&fps) {
        return Err(Error::InvalidConfig(format!(
            "a frame rate of {fps} is not usable; give 1 to {MAX_FPS} frames per second"
        )));
    }
    Ok(())
}

struct PatternInput {
    width: u32,
    height: u32,
    index: u32,
    /// Frames left, `None` for endless.
    left: Option<u64>,
}

impl Input for PatternInput {
    fn next(&mut self) -> Result<Option<Frame>> {
        if let Some(left) = self.left.as_mut() {
            if *left == 0 {
                return Ok(None);
            }
            *left -= 1;
        }
        let f = pattern::draw(self.width, self.height, self.index, Duration::ZERO)?;
        self.index = (self.index + 1) % (pattern::MAX_COUNTER + 1);
        Ok(Some(f))
    }
}

struct Y4mInput<R: Read + Send>(Y4mReader<R>);

impl<R: Read + Send> Input for Y4mInput<R> {
    fn next(&mut self) -> Result<Option<Frame>> {
        self.0.next_frame()
    }
}

/// Raw I420 frames back to back; a short last frame is an error, a clean end is the end.
struct RawInput<R: Read + Send> {
    input: R,
    name: String,
    width: u32,
    height: u32,
    /// A child process whose output this is (ffmpeg), killed when the source is dropped, and
    /// the thread that reads its error output.
    child: Option<(Child, std::thread::JoinHandle<String>)>,
}

impl<R: Read + Send> Input for RawInput<R> {
    fn next(&mut self) -> Result<Option<Frame>> {
        let mut data = vec![0u8; Frame::size(self.width, self.height)];
        let mut got = 0;
        while got < data.len() {
            match self.input.read(&mut data[got..]) {
                Ok(0) => break,
                Ok(n) => got += n,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(source) => {
                    return Err(Error::ReadInput {
                        input: self.name.clone(),
                        source,
                    })
                }
            }
        }
        if got == 0 {
            if let Some((mut child, drain)) = self.child.take() {
                let status = child.wait().ok();
                let stderr = drain.join().unwrap_or_default();
                if status.is_some_and(|s| !s.success()) {
                    return Err(Error::FfmpegFailed {
                        input: self.name.clone(),
                        status: status.map(|s| s.to_string()).unwrap_or_default(),
                        stderr: stderr.lines().last().unwrap_or("").to_owned(),
                    });
                }
            }
            return Ok(None);
        }
        if got < data.len() {
            return Err(Error::BadVideoFrame {
                width: self.width,
                height: self.height,
                expected: data.len(),
                got,
            });
        }
        Frame::from_i420(self.width, self.height, Duration::ZERO, data).map(Some)
    }
}

impl<R: Read + Send> Drop for RawInput<R> {
    fn drop(&mut self) {
        if let Some((mut c, _)) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

struct PushedInput {
    frames: mpsc::Receiver<Frame>,
}

impl Input for PushedInput {
    fn next(&mut self) -> Result<Option<Frame>> {
        // The application's handle dropped: the end of the source.
        Ok(self.frames.recv().ok())
    }

    fn next_within(&mut self, wait: Duration) -> Result<Next> {
        Ok(match self.frames.recv_timeout(wait) {
            Ok(f) => Next::Frame(f),
            Err(mpsc::RecvTimeoutError::Timeout) => Next::Nothing,
            Err(mpsc::RecvTimeoutError::Disconnected) => Next::End,
        })
    }
}

/// The application's end of [`VideoSource::pushed`].
#[derive(Clone)]
pub struct VideoPusher {
    frames: mpsc::SyncSender<Frame>,
    width: u32,
    height: u32,
}

impl VideoPusher {
    /// Queues one picture of the source's size. Refused when [`PUSH_CAPACITY`] frames wait
    /// (push at the frame rate), or when the call is gone.
    pub fn push(&self, frame: Frame) -> Result<()> {
        if (frame.width, frame.height) != (self.width, self.height) {
            return Err(Error::InvalidConfig(format!(
                "a {}x{} frame was pushed to a {}x{} video source; scale it first",
                frame.width, frame.height, self.width, self.height
            )));
        }
        self.frames.try_send(frame).map_err(|e| match e {
            mpsc::TrySendError::Full(_) => Error::PushFull {
                capacity: PUSH_CAPACITY,
            },
            mpsc::TrySendError::Disconnected(_) => Error::SourceClosed,
        })
    }
}

impl VideoSource {
    /// The generated test pattern (`pattern.rs`): quadrants, a moving bar and a frame counter.
    pub fn pattern(width: u32, height: u32, fps: f32) -> Result<Self> {
        Self::pattern_frames(width, height, fps, None)
    }

    /// The pattern for `frames` frames, then the end.
    pub fn pattern_frames(width: u32, height: u32, fps: f32, frames: Option<u64>) -> Result<Self> {
        Frame::check_size(width, height)?;
        check_fps(fps)?;
        Ok(VideoSource {
            name: "pattern".into(),
            width,
            height,
            fps,
            pushed: false,
            input: Box::new(PatternInput {
                width,
                height,
                index: 0,
                left: frames,
            }),
        })
    }

    /// A YUV4MPEG2 file, at its own size and rate.
    pub fn y4m(path: impl AsRef<Path>) -> Result<Self> {
        let path = path.as_ref();
        let name = path.display().to_string();
        let file = open(path)?;
        let reader = Y4mReader::new(file, &name)?;
        let (n, d) = reader.rate();
        let fps = n as f32 / d as f32;
        check_fps(fps)?;
        Ok(VideoSource {
            name,
            width: reader.width(),
            height: reader.height(),
            fps,
            pushed: false,
            input: Box::new(Y4mInput(reader)),
        })
    }

    /// Raw I420 frames of `width` x `height` at `fps` from any reader (a pipe, a socket).
    pub fn raw_i420(
        input: impl Read + Send + 'static,
        name: &str,
        width: u32,
        height: u32,
        fps: f32,
    ) -> Result<Self> {
        Frame::check_size(width, height)?;
        check_fps(fps)?;
        Ok(VideoSource {
            name: name.into(),
            width,
            height,
            fps,
            pushed: false,
            input: Box::new(RawInput {
                input,
                name: name.into(),
                width,
                height,
                child: None,
            }),
        })
    }

    /// Any file ffmpeg reads, decoded by an `ffmpeg` child process to I420 at `width` x
    /// `height` and `fps` (scaled and resampled in time by ffmpeg).
    pub fn ffmpeg(path: impl AsRef<Path>, width: u32, height: u32, fps: f32) -> Result<Self> {
        Self::ffmpeg_with(Path::new("ffmpeg"), path.as_ref(), width, height, fps)
    }

    fn ffmpeg_with(binary: &Path, path: &Path, width: u32, height: u32, fps: f32) -> Result<Self> {
        Frame::check_size(width, height)?;
        check_fps(fps)?;
        let name = path.display().to_string();
        if !path.exists() {
            return Err(Error::NoSuchInput { input: name });
        }
        let mut args: Vec<OsString> = ["-hide_banner", "-loglevel", "error", "-nostdin", "-i"]
            .into_iter()
            .map(Into::into)
            .collect();
        args.push(path.into());
        args.extend(
            ["-an", "-f", "rawvideo", "-pix_fmt", "yuv420p", "-vf"]
                .into_iter()
                .map(Into::into),
        );
        args.push(format!(
            "scale={width}:{height}:force_original_aspect_ratio=decrease,pad={width}:{height}:(ow-iw)/2:(oh-ih)/2,fps={fps}"
        ).into());
        args.push("-".into());
        let (child, stdout, stderr) = crate::audio::source::ffmpeg::spawn(binary, &args)?;
        Ok(VideoSource {
            name: name.clone(),
            width,
            height,
            fps,
            pushed: false,
            input: Box::new(RawInput {
                input: stdout,
                name,
                width,
                height,
                child: Some((child, stderr)),
            }),
        })
    }

    /// Frames the application pushes through the returned [`VideoPusher`], at `width` x
    /// `height`; `fps` is what the encoder is set up for. Dropping every pusher ends the source.
    pub fn pushed(width: u32, height: u32, fps: f32) -> Result<(Self, VideoPusher)> {
        Frame::check_size(width, height)?;
        check_fps(fps)?;
        let (tx, rx) = mpsc::sync_channel(PUSH_CAPACITY);
        Ok((
            VideoSource {
                name: "pushed frames".into(),
                width,
                height,
                fps,
                pushed: true,
                input: Box::new(PushedInput { frames: rx }),
            },
            VideoPusher {
                frames: tx,
                width,
                height,
            },
        ))
    }

    /// What the command line's `--video SPEC` names: `pattern`, `-` (raw I420 on standard
    /// input, which needs `size` and `fps`), a `.y4m` file, or any other file through ffmpeg.
    pub fn open(spec: &str, size: Option<(u32, u32)>, fps: Option<f32>) -> Result<Self> {
        let (w, h) = size.unwrap_or(DEFAULT_SIZE);
        let rate = fps.unwrap_or(DEFAULT_FPS);
        match spec {
            "pattern" => Self::pattern(w, h, rate),
            "-" => {
                let (Some((w, h)), Some(rate)) = (size, fps) else {
                    return Err(Error::InvalidConfig(
                        "raw I420 on standard input needs its size and rate: give --video-size WxH and --fps N".into(),
                    ));
                };
                Self::raw_i420(std::io::stdin(), "standard input", w, h, rate)
            }
            path if path.to_ascii_lowercase().ends_with(".y4m") => {
                let s = Self::y4m(path)?;
                if size.is_some_and(|s2| s2 != (s.width, s.height)) {
                    return Err(Error::InvalidConfig(format!(
                        "{path} is {}x{}; a Y4M file plays at its own size (drop --video-size, or play it through ffmpeg by converting it)",
                        s.width, s.height
                    )));
                }
                Ok(s)
            }
            path => Self::ffmpeg(path, w, h, rate),
        }
    }

    pub fn name(&self) -> &str {
        &self.name
    }
    pub fn width(&self) -> u32 {
        self.width
    }
    pub fn height(&self) -> u32 {
        self.height
    }
    pub fn fps(&self) -> f32 {
        self.fps
    }
    pub(crate) fn is_pushed(&self) -> bool {
        self.pushed
    }

    /// The next picture (blocking on a file, a pipe or the application), `None` at the end.
    #[cfg(test)]
    pub(crate) fn next_frame(&mut self) -> Result<Option<Frame>> {
        let f = self.input.next()?;
        match f {
            Some(f) => self.checked(f).map(Some),
            None => Ok(None),
        }
    }

    /// [`VideoSource::next_frame`] waiting at most `wait` for pushed frames.
    pub(crate) fn next_frame_within(&mut self, wait: Duration) -> Result<Next> {
        match self.input.next_within(wait)? {
            Next::Frame(f) => self.checked(f).map(Next::Frame),
            other => Ok(other),
        }
    }

    fn checked(&self, f: Frame) -> Result<Frame> {
        if (f.width, f.height) != (self.width, self.height) {
            return Err(Error::InvalidConfig(format!(
                "{}: a {}x{} frame in a {}x{} video",
                self.name, f.width, f.height, self.width, self.height
            )));
        }
        Ok(f)
    }
}

fn open(path: &Path) -> Result<std::fs::File> {
    std::fs::File::open(path).map_err(|source| {
        if source.kind() == std::io::ErrorKind::NotFound {
            Error::NoSuchInput {
                input: path.display().to_string(),
            }
        } else {
            Error::OpenInput {
                path: PathBuf::from(path),
                source,
            }
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_pattern_counts_and_ends_when_told() {
        let mut s = VideoSource::pattern_frames(320, 180, 30.0, Some(3)).unwrap();
        let counters: Vec<_> = std::iter::from_fn(|| s.next_frame().unwrap())
            .map(|f| pattern::read_counter(&f))
            .collect();
        assert_eq!(counters, vec![Some(0), Some(1), Some(2)]);
    }

    #[test]
    fn raw_i420_reads_whole_frames_and_refuses_a_short_one() {
        let one = pattern::draw(64, 48, 7, Duration::ZERO).unwrap();
        let mut bytes = one.data().to_vec();
        bytes.extend_from_slice(&one.data()[..100]);
        let mut s =
            VideoSource::raw_i420(std::io::Cursor::new(bytes), "pipe", 64, 48, 30.0).unwrap();
        let f = s.next_frame().unwrap().unwrap();
        assert_eq!(pattern::read_counter(&f), Some(7));
        let e = s.next_frame().unwrap_err();
        assert!(matches!(e, Error::BadVideoFrame { got: 100, .. }), "{e}");
    }

    #[test]
    fn bad_settings_and_missing_files_are_clear_errors() {
        let e = VideoSource::pattern(1, 180, 30.0).unwrap_err();
        assert!(matches!(e, Error::BadVideoSize { .. }), "{e}");
        let e = VideoSource::pattern(320, 180, 0.0).unwrap_err();
        assert!(e.to_string().contains("frame rate"), "{e}");
        let e = VideoSource::pattern(320, 180, f32::NAN).unwrap_err();
        assert!(e.to_string().contains("frame rate"), "{e}");
        let e = VideoSource::open("/nonexistent/clip.y4m", None, None).unwrap_err();
        assert!(matches!(e, Error::NoSuchInput { .. }), "{e}");
        let e = VideoSource::open("/nonexistent/clip.mp4", None, None).unwrap_err();
        assert!(matches!(e, Error::NoSuchInput { .. }), "{e}");
        let e = VideoSource::open("-", None, Some(30.0)).unwrap_err();
        assert!(e.to_string().contains("--video-size"), "{e}");
        let e = VideoSource::ffmpeg_with(
            Path::new("/nonexistent/ffmpeg"),
            Path::new("Cargo.toml"),
            64,
            48,
            30.0,
        )
        .unwrap_err();
        assert!(matches!(e, Error::FfmpegMissing { .. }), "{e}");
    }

    #[test]
    fn pushed_frames_arrive_and_the_queue_is_bounded() {
        let (mut s, pusher) = VideoSource::pushed(64, 48, 30.0).unwrap();
        let f = pattern::draw(64, 48, 3, Duration::ZERO).unwrap();
        for _ in 0..PUSH_CAPACITY {
            pusher.push(f.clone()).unwrap();
        }
        assert!(matches!(
            pusher.push(f.clone()),
            Err(Error::PushFull { .. })
        ));
        let wrong = pattern::draw(32, 48, 3, Duration::ZERO).unwrap();
        assert!(pusher.push(wrong).is_err());
        assert_eq!(
            pattern::read_counter(&s.next_frame().unwrap().unwrap()),
            Some(3)
        );
        drop(pusher);
        for _ in 1..PUSH_CAPACITY {
            assert!(s.next_frame().unwrap().is_some());
        }
        assert!(s.next_frame().unwrap().is_none());
    }

    /// A stand-in for ffmpeg: checks the arguments the source passes and writes the file named
    /// after `-i` (raw I420 frames) to standard output; `fail` makes it fail after that.
    fn fake_ffmpeg(dir: &Path, fail: bool) -> std::path::PathBuf {
        use std::os::unix::fs::PermissionsExt;
        let script = format!(
            r#"#!/bin/sh
while [ $# -gt 0 ]; do
  case "$1" in
    -i) shift; in="$1" ;;
    -f) shift; f="$1" ;;
    -pix_fmt) shift; pix="$1" ;;
    -vf) shift; vf="$1" ;;
  esac
  shift
done
[ "$f" = rawvideo ] && [ "$pix" = yuv420p ] || {{ echo "bad arguments" >&2; exit 2; }}
case "$vf" in *scale=64:48*fps=30*) ;; *) echo "bad filter $vf" >&2; exit 2 ;; esac
cat "$in"
{}
"#,
            if fail {
                "echo 'Invalid data found when processing input' >&2; exit 1"
            } else {
                ""
            }
        );
        let path = dir.join(if fail { "ffmpeg-fails" } else { "ffmpeg-works" });
        std::fs::write(&path, script).unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
        path
    }

    fn open_fake(bin: &Path, input: &Path) -> VideoSource {
        // Spawning right after writing the script can meet ETXTBSY while another test forks.
        for _ in 0..50 {
            match VideoSource::ffmpeg_with(bin, input, 64, 48, 30.0) {
                Err(Error::FfmpegSpawn { source, .. }) if source.raw_os_error() == Some(26) => {
                    std::thread::sleep(Duration::from_millis(20))
                }
                other => return other.unwrap(),
            }
        }
        panic!("the ffmpeg stand-in stays busy");
    }

    #[test]
    fn ffmpeg_output_is_read_frame_by_frame_and_its_failure_reported() {
        let dir = tempfile::tempdir().unwrap();
        let input = dir.path().join("clip.raw");
        let mut raw = Vec::new();
        for i in 0..3 {
            raw.extend_from_slice(pattern::draw(64, 48, i, Duration::ZERO).unwrap().data());
        }
        std::fs::write(&input, raw).unwrap();
        let mut s = open_fake(&fake_ffmpeg(dir.path(), false), &input);
        assert_eq!((s.width(), s.height()), (64, 48));
        let counters: Vec<_> = std::iter::from_fn(|| s.next_frame().unwrap())
            .map(|f| pattern::read_counter(&f))
            .collect();
        assert_eq!(counters, vec![Some(0), Some(1), Some(2)]);
        let mut s = open_fake(&fake_ffmpeg(dir.path(), true), &input);
        for _ in 0..3 {
            assert!(s.next_frame().unwrap().is_some());
        }
        let e = s.next_frame().unwrap_err();
        assert!(
            matches!(&e, Error::FfmpegFailed { stderr, .. } if stderr.contains("Invalid data")),
            "{e}"
        );
    }
}
