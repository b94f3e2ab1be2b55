//! One I420 picture.

use std::time::Duration;

use crate::error::{Error, Result};

/// The largest picture taken, per side: 4K is 3840x2160; past this a header is nonsense, and
/// an allocation of its size would be the damage.
pub const MAX_DIMENSION: u32 = 4096;

/// An I420 picture: a full-size luma plane, then two chroma planes at half width and height
/// (rounded up), stored back to back without padding.
#[derive(Clone, PartialEq, Eq)]
pub struct Frame {
    pub width: u32,
    pub height: u32,
    /// When it should be shown, from the start of its stream.
    pub timestamp: Duration,
    data: Vec<u8>,
}

impl std::fmt::Debug for Frame {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Frame")
            .field("width", &self.width)
            .field("height", &self.height)
            .field("timestamp", &self.timestamp)
            .finish_non_exhaustive()
    }
}

impl Frame {
    /// The size in bytes of an I420 picture of `width` x `height`.
    pub fn size(width: u32, height: u32) -> usize {
        let (w, h) = (width as usize, height as usize);
        let (cw, ch) = (w.div_ceil(2), h.div_ceil(2));
        w * h + 2 * cw * ch
    }

    /// Checks a picture size: both sides at least 2 and at most [`MAX_DIMENSION`].
    pub fn check_size(width: u32, height: u32) -> Result<()> {
        if !(2..=MAX_DIMENSION).contains(&width) || !(2..=MAX_DIMENSION).contains(&height) {
            return Err(Error::BadVideoSize {
                width,
                height,
                max: MAX_DIMENSION,
            });
        }
        Ok(())
    }

    /// A picture from its bytes, which must be exactly [`Frame::size`] long.
    pub fn from_i420(width: u32, height: u32, timestamp: Duration, data: Vec<u8>) -> Result<Self> {
        Self::check_size(width, height)?;
        let want = Self::size(width, height);
        if data.len() != want {
            return Err(Error::BadVideoFrame {
                width,
                height,
                expected: want,
                got: data.len(),
            });
        }
        Ok(Frame {
            width,
            height,
            timestamp,
            data,
        })
    }

    /// A picture of one flat colour.
    pub fn filled(width: u32, height: u32, timestamp: Duration, yuv: (u8, u8, u8)) -> Result<Self> {
        Self::check_size(width, height)?;
        let luma = width as usize * height as usize;
        let chroma = (Self::size(width, height) - luma) / 2;
        let mut data = vec![yuv.0; luma];
        data.extend(std::iter::repeat_n(yuv.1, chroma));
        data.extend(std::iter::repeat_n(yuv.2, chroma));
        Ok(Frame {
            width,
            height,
            timestamp,
            data,
        })
    }

    pub fn data(&self) -> &[u8] {
        &self.data
    }

    pub fn into_data(self) -> Vec<u8> {
        self.data
    }

    /// The luma plane (row stride = width).
    pub fn y(&self) -> &[u8] {
        &self.data[..self.width as usize * self.height as usize]
    }

    pub fn y_mut(&mut self) -> &mut [u8] {
        let n = self.width as usize * self.height as usize;
        &mut self.data[..n]
    }

    /// The mean of each plane over a rectangle of the luma plane (chroma over the matching
    /// half-size rectangle): what a test compares after lossy coding.
    pub fn mean_yuv(&self, x: u32, y: u32, w: u32, h: u32) -> Option<(f64, f64, f64)> {
        if w == 0 || h == 0 || x + w > self.width || y + h > self.height {
            return None;
        }
        let (fw, fh) = (self.width as usize, self.height as usize);
        let (cw, ch) = (fw.div_ceil(2), fh.div_ceil(2));
        let mean = |plane: &[u8], stride: usize, x0: usize, y0: usize, x1: usize, y1: usize| {
            let mut sum = 0u64;
            for row in y0..y1 {
                sum += plane[row * stride + x0..row * stride + x1]
                    .iter()
                    .map(|v| *v as u64)
                    .sum::<u64>();
            }
            sum as f64 / ((x1 - x0) * (y1 - y0)).max(1) as f64
        };
        let (x, y, w, h) = (x as usize, y as usize, w as usize, h as usize);
        let luma = &self.data[..fw * fh];
        let u = &self.data[fw * fh..fw * fh + cw * ch];
        let v = &self.data[fw * fh + cw * ch..];
        let (cx0, cy0) = (x / 2, y / 2);
        let (cx1, cy1) = (
            (x + w).div_ceil(2).max(cx0 + 1),
            (y + h).div_ceil(2).max(cy0 + 1),
        );
        Some((
            mean(luma, fw, x, y, x + w, y + h),
            mean(u, cw, cx0, cy0, cx1, cy1),
            mean(v, cw, cx0, cy0, cx1, cy1),
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_round_chroma_up_and_bad_sizes_are_errors() {
        assert_eq!(Frame::size(640, 360), 640 * 360 * 3 / 2);
        assert_eq!(Frame::size(3, 3), 9 + 2 * 4);
        assert!(Frame::from_i420(0, 10, Duration::ZERO, vec![]).is_err());
        assert!(Frame::from_i420(5000, 10, Duration::ZERO, vec![]).is_err());
        let e = Frame::from_i420(4, 4, Duration::ZERO, vec![0; 23]).unwrap_err();
        assert!(e.to_string().contains("24"), "{e}");
        let f = Frame::filled(4, 4, Duration::ZERO, (10, 20, 30)).unwrap();
        assert_eq!(f.mean_yuv(0, 0, 4, 4), Some((10.0, 20.0, 30.0)));
        assert_eq!(f.mean_yuv(2, 2, 4, 4), None);
    }
}
