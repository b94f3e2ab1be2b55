//! Growth of buffers that hold input from outside (a server's event stream, the stdio
//! protocol's lines) under a hard bound on their capacity, not only on their length.

/// How much to reserve (with `reserve_exact`) before appending `extra` bytes to a buffer of
/// `len` bytes and `capacity`: doubling as `Vec` does, so appends stay amortised O(1), but never
/// past `cap` (unless the append itself needs more, which callers refuse beforehand).
pub(crate) fn reserve_capped(len: usize, capacity: usize, extra: usize, cap: usize) -> usize {
    let needed = len + extra;
    if needed <= capacity {
        return 0;
    }
    needed.max(capacity * 2).min(cap).max(needed) - len
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn growth_doubles_up_to_the_cap_and_never_past_it() {
        assert_eq!(reserve_capped(10, 16, 4, 100), 0);
        assert_eq!(reserve_capped(10, 16, 10, 100), 22); // to 32
        assert_eq!(reserve_capped(60, 64, 10, 100), 40); // to 100, not 128
        assert_eq!(reserve_capped(95, 100, 10, 100), 10); // over the cap: exactly what is needed
        let mut v: Vec<u8> = Vec::new();
        let mut reallocations = 0;
        for _ in 0..700 {
            let want = reserve_capped(v.len(), v.capacity(), 7, 5000);
            reallocations += usize::from(want > 0);
            v.reserve_exact(want);
            v.extend_from_slice(&[0; 7]);
            assert!(v.capacity() <= 5000, "{}", v.capacity());
        }
        assert!(
            reallocations < 12,
            "{reallocations} reallocations for 700 appends"
        );
    }
}
