//! YUV4MPEG2 (`.y4m`) files: raw I420 frames behind a one-line header that gives the size and
//! the rate, so a bot can play a video without ffmpeg (`ffmpeg -i IN -pix_fmt yuv420p OUT.y4m`
//! makes one). Read as a stream: one frame in memory at a time, whatever the file's length.

use std::io::{BufRead, BufReader, Read, Write};
use std::time::Duration;

use super::frame::Frame;
use crate::error::{Error, Result};

/// The longest header or frame-header line taken (real ones are under 100 bytes).
const MAX_LINE: usize = 1024;

/// A Y4M stream being read.
pub struct Y4mReader<R> {
    input: BufReader<R>,
    name: String,
    width: u32,
    height: u32,
    rate: (u32, u32),
    frames: u64,
}

impl<R: Read> Y4mReader<R> {
    /// Reads the header of `input`; `name` (a path) goes into error messages.
    pub fn new(input: R, name: &str) -> Result<Self> {
        let mut input = BufReader::new(input);
        let bad = |reason: String| Error::BadY4m {
            input: name.to_owned(),
            reason,
        };
        let line = read_line(&mut input)
            .map_err(&bad)?
            .ok_or_else(|| bad("the file is empty".into()))?;
        let mut words = line.split(' ');
        if words.next() != Some("YUV4MPEG2") {
            return Err(bad("it does not start with YUV4MPEG2".into()));
        }
        let (mut width, mut height, mut rate) = (None, None, None);
        for w in words.filter(|w| !w.is_empty()) {
            let (tag, value) = w.split_at(1);
            match tag {
                "W" => width = value.parse::<u32>().ok(),
                "H" => height = value.parse::<u32>().ok(),
                "F" => {
                    rate = value
                        .split_once(':')
                        .and_then(|(n, d)| Some((n.parse::<u32>().ok()?, d.parse::<u32>().ok()?)))
                        .filter(|(n, d)| *n > 0 && *d > 0);
                    if rate.is_none() {
                        return Err(bad(format!("frame rate {value:?} is not N:D")));
                    }
                }
                "I" if !matches!(value, "p" | "?") => {
                    return Err(bad(format!(
                        "interlaced video (I{value}) is not supported; deinterlace it"
                    )));
                }
                "C" if !matches!(value, "420" | "420jpeg" | "420paldv" | "420mpeg2") => {
                    return Err(bad(format!("colour space C{value} is not 4:2:0 8-bit")));
                }
                _ => {}
            }
        }
        let (Some(width), Some(height)) = (width, height) else {
            return Err(bad("the header has no W and H".into()));
        };
        Frame::check_size(width, height).map_err(|e| bad(e.to_string()))?;
        Ok(Y4mReader {
            input,
            name: name.to_owned(),
            width,
            height,
            rate: rate.unwrap_or((25, 1)),
            frames: 0,
        })
    }

    pub fn width(&self) -> u32 {
        self.width
    }

    pub fn height(&self) -> u32 {
        self.height
    }

    /// Frames per second as the header gives it (numerator, denominator); 25:1 when absent.
    pub fn rate(&self) -> (u32, u32) {
        self.rate
    }

    /// The next frame, or `None` at the end of the file. A frame cut short is an error.
    pub fn next_frame(&mut self) -> Result<Option<Frame>> {
        let bad = |reason: String| Error::BadY4m {
            input: self.name.clone(),
            reason,
        };
        let Some(line) = read_line(&mut self.input).map_err(&bad)? else {
            return Ok(None);
        };
        if line != "FRAME" && !line.starts_with("FRAME ") {
            return Err(bad(format!(
                "frame {} does not start with FRAME",
                self.frames
            )));
        }
        let mut data = vec![0u8; Frame::size(self.width, self.height)];
        self.input
            .read_exact(&mut data)
            .map_err(|e| bad(format!("frame {} is cut short ({e})", self.frames)))?;
        let (n, d) = self.rate;
        let timestamp = Duration::from_nanos(self.frames * d as u64 * 1_000_000_000 / n as u64);
        self.frames += 1;
        Frame::from_i420(self.width, self.height, timestamp, data).map(Some)
    }
}

/// Writes I420 frames as a YUV4MPEG2 file (what `ffplay`, `mpv` and VLC open, and
/// [`Y4mReader`] reads back), at a fixed size and a nominal rate.
pub struct Y4mWriter<W: Write> {
    out: W,
    width: u32,
    height: u32,
    frames: u64,
}

impl<W: Write> Y4mWriter<W> {
    /// Writes the header for `width` x `height` at `fps` (rounded to a thousandth).
    pub fn new(mut out: W, width: u32, height: u32, fps: f32) -> std::io::Result<Self> {
        let rate = (f64::from(fps) * 1000.0).round().max(1.0) as u64;
        writeln!(
            out,
            "YUV4MPEG2 W{width} H{height} F{rate}:1000 Ip A1:1 C420jpeg"
        )?;
        Ok(Y4mWriter {
            out,
            width,
            height,
            frames: 0,
        })
    }

    pub fn size(&self) -> (u32, u32) {
        (self.width, self.height)
    }

    pub fn frames(&self) -> u64 {
        self.frames
    }

    /// Appends `frame`, which must be of the writer's size.
    pub fn write(&mut self, frame: &Frame) -> std::io::Result<()> {
        if (frame.width, frame.height) != (self.width, self.height) {
            return Err(std::io::Error::other(format!(
                "a {}x{} frame in a {}x{} file",
                frame.width, frame.height, self.width, self.height
            )));
        }
        self.out.write_all(b"FRAME\n")?;
        self.out.write_all(frame.data())?;
        self.frames += 1;
        Ok(())
    }

    pub fn flush(&mut self) -> std::io::Result<()> {
        self.out.flush()
    }
}

/// One `\n`-terminated line, at most [`MAX_LINE`] bytes, ASCII; `None` at a clean end.
fn read_line<R: BufRead>(input: &mut R) -> std::result::Result<Option<String>, String> {
    let mut line = Vec::new();
    let n = input
        .by_ref()
        .take(MAX_LINE as u64 + 1)
        .read_until(b'\n', &mut line)
        .map_err(|e| format!("read failed: {e}"))?;
    if n == 0 {
        return Ok(None);
    }
    if line.last() != Some(&b'\n') {
        return Err(if line.len() > MAX_LINE {
            format!("a header line is longer than {MAX_LINE} bytes")
        } else {
            "the file ends inside a header line".into()
        });
    }
    line.pop();
    String::from_utf8(line)
        .map(Some)
        .map_err(|_| "a header line is not text".into())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::video::pattern;

    fn file(header: &str, frames: &[Frame]) -> Vec<u8> {
        let mut out = format!("{header}\n").into_bytes();
        for f in frames {
            out.extend(b"FRAME\n");
            out.extend(f.data());
        }
        out
    }

    #[test]
    fn frames_come_back_with_their_size_rate_and_times() {
        let frames: Vec<Frame> = (0..5)
            .map(|i| pattern::draw(320, 180, i, Duration::ZERO).unwrap())
            .collect();
        let bytes = file(
            "YUV4MPEG2 W320 H180 F30000:1001 Ip A1:1 C420jpeg XYSCSS=420JPEG",
            &frames,
        );
        let mut r = Y4mReader::new(&bytes[..], "clip.y4m").unwrap();
        assert_eq!((r.width(), r.height(), r.rate()), (320, 180, (30000, 1001)));
        let mut n = 0;
        while let Some(f) = r.next_frame().unwrap() {
            assert_eq!(pattern::read_counter(&f), Some(n));
            assert_eq!(
                f.timestamp,
                Duration::from_nanos(n as u64 * 1001 * 1_000_000_000 / 30000)
            );
            n += 1;
        }
        assert_eq!(n, 5);
    }

    #[test]
    fn written_files_read_back_frame_for_frame() {
        let mut bytes = Vec::new();
        let mut w = Y4mWriter::new(&mut bytes, 160, 90, 30.0).unwrap();
        for i in 0..4 {
            w.write(&pattern::draw(160, 90, i, Duration::ZERO).unwrap())
                .unwrap();
        }
        assert!(w
            .write(&pattern::draw(80, 90, 9, Duration::ZERO).unwrap())
            .is_err());
        assert_eq!(w.frames(), 4);
        let mut r = Y4mReader::new(&bytes[..], "out.y4m").unwrap();
        assert_eq!((r.width(), r.height(), r.rate()), (160, 90, (30000, 1000)));
        let mut read = Vec::new();
        while let Some(f) = r.next_frame().unwrap() {
            read.push(pattern::read_counter(&f));
        }
        assert_eq!(read, vec![Some(0), Some(1), Some(2), Some(3)]);
    }

    #[test]
    fn malformed_files_are_clear_errors_never_panics() {
        let f = pattern::draw(64, 32, 0, Duration::ZERO).unwrap();
        let good = file("YUV4MPEG2 W64 H32 F25:1", std::slice::from_ref(&f));
        let cases: Vec<(Vec<u8>, &str)> = vec![
            (vec![], "empty"),
            (b"RIFF....".to_vec(), "YUV4MPEG2"),
            (b"YUV4MPEG2 W64 F25:1\n".to_vec(), "no W and H"),
            (b"YUV4MPEG2 W64 H32 F25\n".to_vec(), "N:D"),
            (b"YUV4MPEG2 W64 H32 F0:1\n".to_vec(), "N:D"),
            (b"YUV4MPEG2 W64 H32 C444\n".to_vec(), "4:2:0"),
            (b"YUV4MPEG2 W64 H32 It\n".to_vec(), "interlaced"),
            (b"YUV4MPEG2 W99999 H32\n".to_vec(), "99999"),
            (vec![b'Y'; 5000], "longer than"),
            (good[..good.len() - 10].to_vec(), "cut short"),
            ([&good[..24], b"FRAMX\n"].concat(), "FRAME"),
        ];
        for (bytes, want) in cases {
            let err = Y4mReader::new(&bytes[..], "in.y4m")
                .and_then(|mut r| {
                    while r.next_frame()?.is_some() {}
                    Ok(())
                })
                .expect_err(want);
            let msg = err.to_string();
            assert!(
                msg.contains(want) && msg.contains("in.y4m"),
                "{want}: {msg}"
            );
        }
    }
}
