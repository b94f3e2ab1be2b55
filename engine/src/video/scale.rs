//! Halving pictures, for simulcast: a camera is sent at full, half and quarter size
//! (docs/protocol.md §5.2). A 2x2 box filter per halving: cheap, and enough for the layers a
//! receiver on a small screen or a slow link gets.

use super::frame::Frame;
use crate::error::Result;

/// `frame` halved `times` times (each side rounded down, at least 2 pixels).
pub fn halve(frame: &Frame, times: u32) -> Result<Frame> {
    if times == 0 {
        return Ok(frame.clone());
    }
    let mut out = halve_once(frame)?;
    for _ in 1..times {
        out = halve_once(&out)?;
    }
    Ok(out)
}

fn halve_once(f: &Frame) -> Result<Frame> {
    let (w, h) = (f.width as usize, f.height as usize);
    let (nw, nh) = ((w / 2).max(2), (h / 2).max(2));
    let (cw, ch) = (w.div_ceil(2), h.div_ceil(2));
    let (ncw, nch) = (nw.div_ceil(2), nh.div_ceil(2));
    let src = f.data();
    let mut data = Vec::with_capacity(Frame::size(nw as u32, nh as u32));
    let mut plane = |offset: usize, sw: usize, sh: usize, dw: usize, dh: usize| {
        for row in 0..dh {
            for col in 0..dw {
                let at =
                    |r: usize, c: usize| src[offset + r.min(sh - 1) * sw + c.min(sw - 1)] as u32;
                let (r, c) = (row * 2, col * 2);
                let sum = at(r, c) + at(r, c + 1) + at(r + 1, c) + at(r + 1, c + 1);
                data.push(((sum + 2) / 4) as u8);
            }
        }
    };
    plane(0, w, h, nw, nh);
    plane(w * h, cw, ch, ncw, nch);
    plane(w * h + cw * ch, cw, ch, ncw, nch);
    Frame::from_i420(nw as u32, nh as u32, f.timestamp, data)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::video::pattern;
    use std::time::Duration;

    #[test]
    fn halving_keeps_colours_and_the_counter() {
        let f = pattern::draw(1280, 720, 4321, Duration::from_millis(7)).unwrap();
        for (times, (w, h)) in [(1, (640, 360)), (2, (320, 180))] {
            let s = halve(&f, times).unwrap();
            assert_eq!((s.width, s.height, s.timestamp), (w, h, f.timestamp));
            assert_eq!(pattern::read_counter(&s), Some(4321));
            let (y, u, v) = s.mean_yuv(w * 3 / 4, h * 5 / 6, w / 8, h / 12).unwrap();
            assert_eq!((y, u, v), (220.0, 140.0, 200.0));
        }
        // Odd sizes and tiny pictures stay valid.
        let odd = Frame::filled(5, 3, Duration::ZERO, (9, 9, 9)).unwrap();
        let s = halve(&odd, 3).unwrap();
        assert_eq!((s.width, s.height), (2, 2));
        assert_eq!(s.data().len(), Frame::size(2, 2));
    }
}
