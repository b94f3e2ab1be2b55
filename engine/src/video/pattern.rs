//! A test picture that says which frame it is.
//!
//! Four flat quadrants of distinct colours (a receiver can check colour and orientation), a
//! bar that moves one step a frame (an encoder has motion to code), and along the top a row of
//! black and white cells that spell the frame's number with a check. The cells are a fortieth
//! of the picture's width, so the number still reads after a simulcast layer's scaling to a
//! half or a quarter and after lossy coding; a picture whose check fails reads as nothing.

use std::time::Duration;

use super::frame::Frame;
use crate::error::Result;

/// The quadrants' colours (Y, U, V): top left, top right, bottom left, bottom right.
pub const QUADRANTS: [(u8, u8, u8); 4] = [
    (60, 90, 160),
    (120, 200, 100),
    (170, 60, 120),
    (220, 140, 200),
];

/// Cells across the counter row: a start mark (white, black), 24 bits of the number, 6 check bits.
const CELLS: u32 = 32;
const NUMBER_BITS: u32 = 24;
/// A cell is this fraction of the picture's width.
const CELLS_PER_WIDTH: u32 = 40;
const WHITE: u8 = 235;
const BLACK: u8 = 16;

/// The largest number the row holds.
pub const MAX_COUNTER: u32 = (1 << NUMBER_BITS) - 1;

fn check_bits(n: u32) -> u32 {
    (n ^ (n >> 6) ^ (n >> 12) ^ (n >> 18) ^ 0x2a) & 0x3f
}

fn cell_bits(n: u32) -> [bool; CELLS as usize] {
    let mut bits = [false; CELLS as usize];
    bits[0] = true;
    bits[1] = false;
    for i in 0..NUMBER_BITS {
        bits[2 + i as usize] = n >> (NUMBER_BITS - 1 - i) & 1 == 1;
    }
    let c = check_bits(n);
    for i in 0..6 {
        bits[2 + NUMBER_BITS as usize + i] = c >> (5 - i) & 1 == 1;
    }
    bits
}

/// The side of a counter cell in a picture `width` wide.
fn cell_side(width: u32) -> u32 {
    (width / CELLS_PER_WIDTH).max(1)
}

/// Frame number `index` of the pattern, at `width` x `height` (the counter row needs the picture
/// at least 40 pixels wide, and reads best from 160; it wraps past [`MAX_COUNTER`]).
pub fn draw(width: u32, height: u32, index: u32, timestamp: Duration) -> Result<Frame> {
    Frame::check_size(width, height)?;
    let (w, h) = (width as usize, height as usize);
    let (cw, ch) = (w.div_ceil(2), h.div_ceil(2));
    let mut data = vec![0u8; Frame::size(width, height)];
    let (luma, chroma) = data.split_at_mut(w * h);
    let (u, v) = chroma.split_at_mut(cw * ch);
    for row in 0..h {
        for col in 0..w {
            let q = (row >= h / 2) as usize * 2 + (col >= w / 2) as usize;
            luma[row * w + col] = QUADRANTS[q].0;
        }
    }
    for row in 0..ch {
        for col in 0..cw {
            let q = (row >= ch / 2) as usize * 2 + (col >= cw / 2) as usize;
            u[row * cw + col] = QUADRANTS[q].1;
            v[row * cw + col] = QUADRANTS[q].2;
        }
    }
    // The moving bar: a sixteenth of the width, in the middle band, away from the cells.
    let bar = (w / 16).max(1);
    let x0 = (index as usize * 4) % w.saturating_sub(bar).max(1);
    for row in h * 3 / 8..h * 5 / 8 {
        for col in x0..(x0 + bar).min(w) {
            luma[row * w + col] = WHITE;
        }
    }
    // The counter row, from one cell in from the top left.
    let side = cell_side(width) as usize;
    for (i, bit) in cell_bits(index & MAX_COUNTER).iter().enumerate() {
        let x = side + i * side;
        for row in side..(2 * side).min(h) {
            for col in x..(x + side).min(w) {
                luma[row * w + col] = if *bit { WHITE } else { BLACK };
            }
        }
    }
    Frame::from_i420(width, height, timestamp, data)
}

/// The frame number the pattern drew into `frame` (at any scale), or `None` when the row is not
/// there or does not check.
pub fn read_counter(frame: &Frame) -> Option<u32> {
    let (w, h) = (frame.width as usize, frame.height as usize);
    let side = cell_side(frame.width) as usize;
    let luma = frame.y();
    let row = side + side / 2;
    if row >= h || side * (CELLS as usize + 1) > w {
        return None;
    }
    let bit = |i: usize| {
        let col = side + i * side + side / 2;
        luma[row * w + col] > 128
    };
    if !bit(0) || bit(1) {
        return None;
    }
    let mut n = 0u32;
    for i in 0..NUMBER_BITS as usize {
        n = n << 1 | bit(2 + i) as u32;
    }
    let mut c = 0u32;
    for i in 0..6 {
        c = c << 1 | bit(2 + NUMBER_BITS as usize + i) as u32;
    }
    (c == check_bits(n)).then_some(n)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Box-filters a frame down by `k` (what a simulcast layer's scaler roughly does).
    fn downscale(f: &Frame, k: u32) -> Frame {
        let (w, h) = (f.width / k, f.height / k);
        let mut out = Frame::filled(w, h, f.timestamp, (0, 128, 128)).unwrap();
        let src = f.y();
        let fw = f.width as usize;
        let y = out.y_mut();
        for row in 0..h as usize {
            for col in 0..w as usize {
                let mut sum = 0u32;
                for dy in 0..k as usize {
                    for dx in 0..k as usize {
                        sum += src[(row * k as usize + dy) * fw + col * k as usize + dx] as u32;
                    }
                }
                y[row * w as usize + col] = (sum / (k * k)) as u8;
            }
        }
        out
    }

    #[test]
    fn the_counter_reads_back_at_every_scale_and_through_noise() {
        for n in [0, 1, 2, 255, 256, 65_535, 1_000_000, MAX_COUNTER] {
            let f = draw(640, 360, n, Duration::ZERO).unwrap();
            assert_eq!(read_counter(&f), Some(n), "full size");
            assert_eq!(read_counter(&downscale(&f, 2)), Some(n), "half");
            assert_eq!(read_counter(&downscale(&f, 4)), Some(n), "quarter");
            // ±40 of noise on every luma sample, as heavy coding might leave.
            let mut noisy = f.clone();
            for (i, v) in noisy.y_mut().iter_mut().enumerate() {
                let d = ((i as u32).wrapping_mul(2_654_435_761) >> 24) as i32 % 81 - 40;
                *v = (*v as i32 + d).clamp(0, 255) as u8;
            }
            assert_eq!(read_counter(&noisy), Some(n), "noisy");
        }
        // Wraps past the largest number.
        let f = draw(640, 360, MAX_COUNTER + 3, Duration::ZERO).unwrap();
        assert_eq!(read_counter(&f), Some(2));
    }

    #[test]
    fn a_picture_without_the_row_or_with_a_damaged_row_reads_as_nothing() {
        let flat = Frame::filled(640, 360, Duration::ZERO, (128, 128, 128)).unwrap();
        assert_eq!(read_counter(&flat), None);
        let mut f = draw(640, 360, 12_345, Duration::ZERO).unwrap();
        // Flip one number cell: the check fails.
        let side = cell_side(640) as usize;
        let (row, col) = (side + side / 2, side + 10 * side + side / 2);
        let y = f.y_mut();
        for r in row - side / 2..row + side / 2 {
            for c in col - side / 2..col + side / 2 {
                y[r * 640 + c] = 255 - y[r * 640 + c];
            }
        }
        assert_eq!(read_counter(&f), None);
        // Too small to hold the row.
        let tiny = draw(20, 20, 5, Duration::ZERO).unwrap();
        assert_eq!(read_counter(&tiny), None);
    }

    #[test]
    fn the_quadrants_keep_their_colours_and_the_bar_moves() {
        let f0 = draw(640, 360, 0, Duration::ZERO).unwrap();
        let f1 = draw(640, 360, 1, Duration::ZERO).unwrap();
        // Bottom-right quadrant's inner part, away from the bar and the counter row.
        let (y, u, v) = f0.mean_yuv(480, 300, 100, 40).unwrap();
        assert_eq!((y, u, v), (220.0, 140.0, 200.0));
        assert_ne!(f0.y(), f1.y(), "the bar moved");
    }
}
