//! The UDP socket of one connection, in one of two modes.
//!
//! Registered with tokio's reactor, every datagram wakes the call's task as it lands: joining,
//! video and anything whose timing is measured need that. A call that only plays audio out on
//! its 20 ms clock gains nothing from it, since a packet leaves the jitter buffer at the next
//! tick whenever it came in: it woke twice per packet, once for the datagram and once for the
//! tick (docs/performance.md §1.2.6). Such a call takes its socket out of the reactor
//! ("polled"), so the kernel no longer wakes the thread for it, and reads everything queued at
//! each wake-up in one `recvmmsg`, each datagram with the kernel's receive time so the jitter
//! buffer still measures true arrivals.
//!
//! Polled mode exists on Linux only; elsewhere [`CallSocket::poll`] declines and the call
//! keeps waking per packet.
//!
//! Sending is batched in both modes: what the transport queued since the last pass leaves in
//! one `sendmmsg` per [`SEND_BATCH`] datagrams instead of one `sendto` each
//! ([`CallSocket::send_queued`]). Within it, a run of equal-sized datagrams to one address (a
//! video frame's packets; the last may be shorter) is one message that the kernel cuts into
//! datagrams below the UDP layer (GSO, `UDP_SEGMENT`): the stack is walked once per run, not
//! once per packet. On loopback that made a frame of 8 packets 3.6 times cheaper to send,
//! where `sendmmsg` alone saved nothing measurable (`benches/socket.rs`,
//! docs/performance.md §1.2.7).

use std::io;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;

use groupcall_media::Transmit;

/// Datagrams read by one system call. A listener gets one packet per speaker per tick; more
/// than this in a tick take another call.
pub(crate) const BATCH: usize = 8;
/// Datagrams handed to one `sendmmsg`: a video frame of up to about 35 KB in one call.
/// The room for them grows with what a call queues (an audio call: two).
pub const SEND_BATCH: usize = 32;
/// The largest datagram kept whole (as the registered path's buffer): media packets are
/// below a path MTU; a longer datagram is cut and fails authentication.
pub(crate) const SLOT: usize = 2048;

/// One datagram of a [`RecvBatch`].
#[derive(Debug, Clone, Copy)]
pub(crate) struct Received {
    pub len: usize,
    pub from: SocketAddr,
    /// When the kernel took it in; the read time when the kernel gave none (it starts
    /// stamping a moment after the first socket of the system asks for it).
    pub arrival: Instant,
}

/// Buffers for [`CallSocket::recv_batch`]: `BATCH` slots of `SLOT` bytes. One per thread
/// ([`with_batch`]), shared by the calls that run there: a read never outlives its wake-up.
pub(crate) struct RecvBatch {
    data: Box<[u8]>,
    received: Vec<Received>,
}

impl RecvBatch {
    pub(crate) fn new() -> Self {
        Self {
            data: vec![0; BATCH * SLOT].into_boxed_slice(),
            received: Vec::with_capacity(BATCH),
        }
    }

    /// The `i`th datagram of the last read and its metadata.
    pub(crate) fn get(&self, i: usize) -> (Received, &[u8]) {
        let r = self.received[i];
        (r, &self.data[i * SLOT..i * SLOT + r.len])
    }
}

thread_local! {
    static BATCH_BUFFERS: std::cell::Cell<Option<RecvBatch>> = const { std::cell::Cell::new(None) };
}

/// Runs `f` with this thread's batch buffers (made on first use), so that a process with
/// many polled calls holds one set per thread rather than 16 KiB per call. The buffers are
/// taken out while in use; on a thread that is exiting (its locals gone) a set is made for
/// the one read.
pub(crate) fn with_batch<R>(f: impl FnOnce(&mut RecvBatch) -> R) -> R {
    let kept = BATCH_BUFFERS.try_with(|cell| cell.take()).ok().flatten();
    let mut batch = kept.unwrap_or_else(RecvBatch::new);
    let r = f(&mut batch);
    let _ = BATCH_BUFFERS.try_with(|cell| cell.set(Some(batch)));
    r
}

enum Mode {
    Registered(tokio::net::UdpSocket),
    Polled(std::net::UdpSocket),
    /// Lost in a failed switch; every operation fails until the connection is replaced.
    Gone,
}

/// See the module documentation.
pub(crate) struct CallSocket {
    mode: Mode,
    /// Polling was refused once (no receive timestamps): not tried again on this socket.
    unpollable: bool,
    /// Datagrams taken from the transport for one `sendmmsg`; kept to reuse its room.
    pending: Vec<Transmit>,
    /// Runs of datagrams are sent segmented (GSO) until the kernel refuses one.
    segment: AtomicBool,
}

fn gone() -> io::Error {
    io::Error::other("the media socket was lost switching modes")
}

impl CallSocket {
    pub(crate) fn new(socket: tokio::net::UdpSocket) -> Self {
        Self {
            mode: Mode::Registered(socket),
            unpollable: !cfg!(target_os = "linux"),
            pending: Vec::new(),
            segment: AtomicBool::new(true),
        }
    }

    /// The socket to await datagrams on, unless it is polled.
    pub(crate) fn registered(&self) -> Option<&tokio::net::UdpSocket> {
        match &self.mode {
            Mode::Registered(s) => Some(s),
            _ => None,
        }
    }

    pub(crate) fn is_polled(&self) -> bool {
        matches!(self.mode, Mode::Polled(_))
    }

    pub(crate) fn is_gone(&self) -> bool {
        matches!(self.mode, Mode::Gone)
    }

    /// Takes the socket out of the reactor; `Ok(false)` where that is not possible (not
    /// Linux, or the kernel refused receive timestamps), and the socket stays registered.
    /// An error means the socket is gone and the connection must be replaced.
    pub(crate) fn poll(&mut self) -> io::Result<bool> {
        let Mode::Registered(s) = &self.mode else {
            return Ok(self.is_polled());
        };
        if self.unpollable {
            return Ok(false);
        }
        if let Err(e) = enable_timestamps(s) {
            tracing::debug!("socket stays registered, no receive timestamps: {e}");
            self.unpollable = true;
            return Ok(false);
        }
        let Mode::Registered(s) = std::mem::replace(&mut self.mode, Mode::Gone) else {
            unreachable!("matched above");
        };
        self.mode = Mode::Polled(s.into_std()?);
        Ok(true)
    }

    /// Puts a polled socket back in the reactor. Datagrams queued meanwhile stay queued: a
    /// socket registered with data waiting is reported readable at once. An error means the
    /// socket is gone and the connection must be replaced.
    pub(crate) fn register(&mut self) -> io::Result<()> {
        if !self.is_polled() {
            return Ok(());
        }
        let Mode::Polled(s) = std::mem::replace(&mut self.mode, Mode::Gone) else {
            unreachable!("checked above");
        };
        self.mode = Mode::Registered(tokio::net::UdpSocket::from_std(s)?);
        Ok(())
    }

    pub(crate) async fn send_to(&self, data: &[u8], to: SocketAddr) -> io::Result<usize> {
        match &self.mode {
            Mode::Registered(s) => s.send_to(data, to).await,
            // Non-blocking: a full send buffer drops the datagram, as the network could.
            Mode::Polled(s) => s.send_to(data, to),
            Mode::Gone => Err(gone()),
        }
    }

    /// Sends every datagram `next` yields, [`SEND_BATCH`] to a system call and runs of them
    /// segmented where the kernel offers both (Linux), one by one elsewhere. A datagram that
    /// fails is logged (`label` names the connection) and the others still go: an unreachable
    /// port or a full buffer loses a packet, as the network could, and the transport's
    /// timeouts judge the path. Registered, a full send buffer is waited out; polled, it drops
    /// the datagram.
    pub(crate) async fn send_queued(
        &mut self,
        label: &str,
        mut next: impl FnMut() -> Option<Transmit>,
    ) {
        loop {
            let Some(first) = next() else {
                return;
            };
            let second = if cfg!(target_os = "linux") {
                next()
            } else {
                None
            };
            let Some(second) = second else {
                // One datagram, an audio call's usual pass: a plain send, and no room for a
                // batch held by a call that never needs one.
                if let Err(e) = self.send_to(&first.contents, first.destination).await {
                    tracing::debug!("{label} send to {} failed: {e}", first.destination);
                }
                continue;
            };
            self.pending.clear();
            self.pending.extend([first, second]);
            while self.pending.len() < SEND_BATCH {
                match next() {
                    Some(t) => self.pending.push(t),
                    None => break,
                }
            }
            self.send_pending(label).await;
        }
    }

    /// `pending` in as few `sendmmsg` calls as the kernel takes.
    async fn send_pending(&self, label: &str) {
        let mut from = 0;
        while from < self.pending.len() {
            let rest = &self.pending[from..];
            let segment = self.segment.load(Ordering::Relaxed);
            let sent = match &self.mode {
                Mode::Registered(s) => loop {
                    let r = s.try_io(tokio::io::Interest::WRITABLE, || {
                        sys::send_batch(s, rest, segment)
                    });
                    match r {
                        Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                            if let Err(e) = s.writable().await {
                                break Err(e);
                            }
                        }
                        r => break r,
                    }
                },
                Mode::Polled(s) => sys::send_batch(s, rest, segment),
                Mode::Gone => Err(gone()),
            };
            match sent {
                // The kernel sends at least one message of a non-empty batch or fails.
                Ok(n) => from += n.max(1),
                // A kernel or device without segmentation refuses the message (EIO where the
                // device cannot checksum, EINVAL before Linux 4.18): the socket sends its
                // datagrams one by one from then on, this run included.
                Err(e) if segment && run_length(rest, true) > 1 && sys::refuses_segments(&e) => {
                    tracing::debug!(
                        "{label}: segmented sending refused ({e}); sending unsegmented"
                    );
                    self.segment.store(false, Ordering::Relaxed);
                }
                Err(e) => {
                    tracing::debug!("{label} send to {} failed: {e}", rest[0].destination);
                    if self.is_gone() {
                        return;
                    }
                    from += 1;
                }
            }
        }
    }

    pub(crate) fn try_send_to(&self, data: &[u8], to: SocketAddr) -> io::Result<usize> {
        match &self.mode {
            Mode::Registered(s) => s.try_send_to(data, to),
            Mode::Polled(s) => s.send_to(data, to),
            Mode::Gone => Err(gone()),
        }
    }

    /// Reads up to [`BATCH`] queued datagrams into `batch` without waiting; `WouldBlock`
    /// when none is queued. Only in polled mode.
    pub(crate) fn recv_batch(&self, batch: &mut RecvBatch) -> io::Result<usize> {
        batch.received.clear();
        match &self.mode {
            Mode::Polled(s) => sys::recv_batch(s, batch),
            Mode::Registered(_) => Err(io::Error::other("recv_batch on a registered socket")),
            Mode::Gone => Err(gone()),
        }
    }
}

/// Segments in one GSO message: the kernel's limit (`UDP_MAX_SEGMENTS`).
const MAX_SEGMENTS: usize = 64;
/// Bytes in one GSO message: a UDP datagram's payload before the kernel cuts it.
const MAX_SEGMENTED_BYTES: usize = 65_000;

/// How many datagrams from the start of `d` go as one message: with `segment`, the first and
/// those after it of its size to its address, and one shorter one to end the run (GSO cuts a
/// payload into pieces of the first's size, the last piece may be shorter); else one.
fn run_length(d: &[Transmit], segment: bool) -> usize {
    let Some(first) = d.first() else {
        return 0;
    };
    let size = first.contents.len();
    if !segment || size == 0 || size > usize::from(u16::MAX) {
        return 1;
    }
    let (mut n, mut total) = (1, size);
    for t in &d[1..] {
        let len = t.contents.len();
        if n == MAX_SEGMENTS
            || t.destination != first.destination
            || len == 0
            || len > size
            || total + len > MAX_SEGMENTED_BYTES
        {
            break;
        }
        n += 1;
        total += len;
        if len < size {
            break;
        }
    }
    n
}

/// Sends up to [`SEND_BATCH`] datagrams in one `sendmmsg` (runs of them segmented if
/// `segment`), without waiting; how many datagrams went. The engine's own path is
/// [`CallSocket::send_queued`]; this is exposed for `benches/socket.rs`, which weighs it
/// against one `sendto` per datagram.
#[cfg(target_os = "linux")]
pub fn send_batch(
    socket: &std::net::UdpSocket,
    datagrams: &[Transmit],
    segment: bool,
) -> io::Result<usize> {
    sys::send_batch(socket, datagrams, segment)
}

#[cfg(target_os = "linux")]
fn enable_timestamps(s: &tokio::net::UdpSocket) -> io::Result<()> {
    sys::enable_timestamps(s)
}

#[cfg(not(target_os = "linux"))]
fn enable_timestamps(_: &tokio::net::UdpSocket) -> io::Result<()> {
    Err(io::Error::new(
        io::ErrorKind::Unsupported,
        "reading at the tick needs recvmmsg (Linux)",
    ))
}

#[cfg(target_os = "linux")]
mod sys {
    use std::io;
    use std::mem::{size_of, size_of_val, zeroed};
    use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr, SocketAddrV4, SocketAddrV6};
    use std::os::fd::AsRawFd;
    use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

    use super::{run_length, Received, RecvBatch, Transmit, BATCH, SEND_BATCH, SLOT};

    /// Room for one `SCM_TIMESTAMPNS` message (`CMSG_SPACE` of a timespec is 32 bytes),
    /// in words so it is aligned for `cmsghdr`.
    const CONTROL_WORDS: usize = 8;

    pub(super) fn enable_timestamps(s: &tokio::net::UdpSocket) -> io::Result<()> {
        let on: libc::c_int = 1;
        // SAFETY: a valid descriptor, and an option value of the size given.
        let r = unsafe {
            libc::setsockopt(
                s.as_raw_fd(),
                libc::SOL_SOCKET,
                libc::SO_TIMESTAMPNS,
                (&on as *const libc::c_int).cast(),
                size_of::<libc::c_int>() as libc::socklen_t,
            )
        };
        if r == 0 {
            Ok(())
        } else {
            Err(io::Error::last_os_error())
        }
    }

    pub(super) fn recv_batch(s: &std::net::UdpSocket, batch: &mut RecvBatch) -> io::Result<usize> {
        // SAFETY (all zeroed values): plain C structs for which all-zero is valid.
        let mut names: [libc::sockaddr_storage; BATCH] = unsafe { zeroed() };
        let mut controls = [[0u64; CONTROL_WORDS]; BATCH];
        let mut iovs: [libc::iovec; BATCH] = unsafe { zeroed() };
        let mut msgs: [libc::mmsghdr; BATCH] = unsafe { zeroed() };
        for (i, slot) in batch.data.chunks_exact_mut(SLOT).enumerate() {
            iovs[i] = libc::iovec {
                iov_base: slot.as_mut_ptr().cast(),
                iov_len: SLOT,
            };
        }
        for i in 0..BATCH {
            let h = &mut msgs[i].msg_hdr;
            h.msg_name = (&mut names[i] as *mut libc::sockaddr_storage).cast();
            h.msg_namelen = size_of::<libc::sockaddr_storage>() as libc::socklen_t;
            h.msg_iov = &mut iovs[i];
            h.msg_iovlen = 1;
            h.msg_control = controls[i].as_mut_ptr().cast();
            h.msg_controllen = size_of_val(&controls[i]) as _;
        }
        // SAFETY: every header points into buffers that outlive the call, with their sizes.
        let n = unsafe {
            libc::recvmmsg(
                s.as_raw_fd(),
                msgs.as_mut_ptr(),
                BATCH as libc::c_uint,
                libc::MSG_DONTWAIT,
                std::ptr::null_mut(),
            )
        };
        if n < 0 {
            return Err(io::Error::last_os_error());
        }
        let (now, wall) = (Instant::now(), SystemTime::now());
        for i in 0..n as usize {
            let Some(from) = address(&names[i]) else {
                // Not an IP sender: cannot be ours. Keep the slot, empty.
                batch.received.push(Received {
                    len: 0,
                    from: SocketAddr::from(([0, 0, 0, 0], 0)),
                    arrival: now,
                });
                continue;
            };
            let arrival = kernel_time(&msgs[i].msg_hdr)
                .and_then(|t| wall.duration_since(t).ok())
                .and_then(|ago| now.checked_sub(ago))
                .unwrap_or(now);
            batch.received.push(Received {
                len: (msgs[i].msg_len as usize).min(SLOT),
                from,
                arrival,
            });
        }
        Ok(n as usize)
    }

    /// Room for one `UDP_SEGMENT` message (`CMSG_SPACE` of a u16 is 24 bytes), in words.
    const SEGMENT_WORDS: usize = 3;

    /// Sends up to [`SEND_BATCH`] of `datagrams` in one `sendmmsg`, each run of them
    /// ([`run_length`]) one message; how many datagrams went. An error is the first
    /// message's (the kernel stops at a failing one and reports what went before).
    pub(crate) fn send_batch(
        s: &impl AsRawFd,
        datagrams: &[Transmit],
        segment: bool,
    ) -> io::Result<usize> {
        let datagrams = &datagrams[..datagrams.len().min(SEND_BATCH)];
        // SAFETY (all zeroed values): plain C structs for which all-zero is valid.
        // sockaddr_in6 holds either family (a sockaddr_storage each would be 4 KB to zero).
        let mut names: [libc::sockaddr_in6; SEND_BATCH] = unsafe { zeroed() };
        let mut iovs: [libc::iovec; SEND_BATCH] = unsafe { zeroed() };
        let mut msgs: [libc::mmsghdr; SEND_BATCH] = unsafe { zeroed() };
        let mut controls = [[0u64; SEGMENT_WORDS]; SEND_BATCH];
        let mut runs = [0usize; SEND_BATCH];
        for (iov, t) in iovs.iter_mut().zip(datagrams) {
            *iov = libc::iovec {
                // The kernel only reads from a send's buffers.
                iov_base: t.contents.as_ptr().cast_mut().cast(),
                iov_len: t.contents.len(),
            };
        }
        let (mut i, mut m) = (0, 0);
        while i < datagrams.len() {
            let run = run_length(&datagrams[i..], segment);
            let first = &datagrams[i];
            let len = write_address(&mut names[m], first.destination);
            let h = &mut msgs[m].msg_hdr;
            h.msg_name = (&mut names[m] as *mut libc::sockaddr_in6).cast();
            h.msg_namelen = len;
            // The run's buffers, one after the other: the payload the kernel cuts.
            h.msg_iov = iovs[i..].as_mut_ptr();
            h.msg_iovlen = run;
            if run > 1 {
                h.msg_control = controls[m].as_mut_ptr().cast();
                h.msg_controllen = size_of_val(&controls[m]) as _;
                // SAFETY: the control buffer is aligned and holds one u16 message.
                unsafe {
                    let c = libc::CMSG_FIRSTHDR(h);
                    (*c).cmsg_level = libc::SOL_UDP;
                    (*c).cmsg_type = libc::UDP_SEGMENT;
                    (*c).cmsg_len = libc::CMSG_LEN(size_of::<u16>() as u32) as _;
                    // run_length keeps segments within u16.
                    let size = first.contents.len() as u16;
                    std::ptr::write_unaligned(libc::CMSG_DATA(c).cast::<u16>(), size);
                }
                #[cfg(test)]
                super::tests::SEGMENTED.with(|c| c.set(c.get() + 1));
            }
            runs[m] = run;
            i += run;
            m += 1;
        }
        #[cfg(test)]
        super::tests::SEND_CALLS.with(|c| c.set(c.get() + 1));
        // SAFETY: every header points into buffers that outlive the call, with their sizes.
        let r = unsafe {
            libc::sendmmsg(
                s.as_raw_fd(),
                msgs.as_mut_ptr(),
                m as libc::c_uint,
                libc::MSG_DONTWAIT,
            )
        };
        if r < 0 {
            Err(io::Error::last_os_error())
        } else {
            Ok(runs[..r as usize].iter().sum())
        }
    }

    /// Whether a failed segmented send says the kernel or the device cannot segment, rather
    /// than that this datagram could not go.
    pub(crate) fn refuses_segments(e: &io::Error) -> bool {
        matches!(
            e.raw_os_error(),
            Some(libc::EIO | libc::EINVAL | libc::EOPNOTSUPP | libc::ENOPROTOOPT)
        )
    }

    /// Writes `a` as a C socket address into `s`; its length.
    fn write_address(s: &mut libc::sockaddr_in6, a: SocketAddr) -> libc::socklen_t {
        match a {
            SocketAddr::V4(a) => {
                // SAFETY: sockaddr_in6 is larger than, and aligned for, a sockaddr_in.
                let sin =
                    unsafe { &mut *(s as *mut libc::sockaddr_in6).cast::<libc::sockaddr_in>() };
                sin.sin_family = libc::AF_INET as libc::sa_family_t;
                sin.sin_port = a.port().to_be();
                sin.sin_addr = libc::in_addr {
                    s_addr: u32::from(*a.ip()).to_be(),
                };
                size_of::<libc::sockaddr_in>() as libc::socklen_t
            }
            SocketAddr::V6(a) => {
                let sin6 = s;
                sin6.sin6_family = libc::AF_INET6 as libc::sa_family_t;
                sin6.sin6_port = a.port().to_be();
                sin6.sin6_flowinfo = a.flowinfo();
                sin6.sin6_addr = libc::in6_addr {
                    s6_addr: a.ip().octets(),
                };
                sin6.sin6_scope_id = a.scope_id();
                size_of::<libc::sockaddr_in6>() as libc::socklen_t
            }
        }
    }

    /// The `SCM_TIMESTAMPNS` of a received message, if the kernel gave one.
    fn kernel_time(h: &libc::msghdr) -> Option<SystemTime> {
        // SAFETY: the control buffer was filled by the kernel, `msg_controllen` bytes of it.
        unsafe {
            let mut c = libc::CMSG_FIRSTHDR(h);
            while !c.is_null() {
                if (*c).cmsg_level == libc::SOL_SOCKET && (*c).cmsg_type == libc::SCM_TIMESTAMPNS {
                    let ts: libc::timespec = std::ptr::read_unaligned(libc::CMSG_DATA(c).cast());
                    let since = Duration::new(
                        u64::try_from(ts.tv_sec).ok()?,
                        u32::try_from(ts.tv_nsec).ok()?,
                    );
                    return UNIX_EPOCH.checked_add(since);
                }
                c = libc::CMSG_NXTHDR(h, c);
            }
        }
        None
    }

    fn address(s: &libc::sockaddr_storage) -> Option<SocketAddr> {
        match libc::c_int::from(s.ss_family) {
            libc::AF_INET => {
                // SAFETY: the family says the storage holds a sockaddr_in.
                let a =
                    unsafe { &*(s as *const libc::sockaddr_storage).cast::<libc::sockaddr_in>() };
                let ip = Ipv4Addr::from(u32::from_be(a.sin_addr.s_addr));
                Some(SocketAddr::V4(SocketAddrV4::new(
                    ip,
                    u16::from_be(a.sin_port),
                )))
            }
            libc::AF_INET6 => {
                // SAFETY: the family says the storage holds a sockaddr_in6.
                let a =
                    unsafe { &*(s as *const libc::sockaddr_storage).cast::<libc::sockaddr_in6>() };
                Some(SocketAddr::V6(SocketAddrV6::new(
                    Ipv6Addr::from(a.sin6_addr.s6_addr),
                    u16::from_be(a.sin6_port),
                    a.sin6_flowinfo,
                    a.sin6_scope_id,
                )))
            }
            _ => None,
        }
    }
}

#[cfg(not(target_os = "linux"))]
mod sys {
    use super::{RecvBatch, Transmit};
    use std::io;

    /// Not reached: [`CallSocket::send_queued`](super::CallSocket::send_queued) sends one by
    /// one where there is no `sendmmsg`.
    pub(crate) fn refuses_segments(_: &io::Error) -> bool {
        false
    }

    pub(crate) fn send_batch<S>(_: &S, _: &[Transmit], _: bool) -> io::Result<usize> {
        Err(io::Error::new(
            io::ErrorKind::Unsupported,
            "batched sending needs sendmmsg (Linux)",
        ))
    }

    pub(super) fn recv_batch(_: &std::net::UdpSocket, _: &mut RecvBatch) -> io::Result<usize> {
        Err(io::Error::new(
            io::ErrorKind::Unsupported,
            "reading at the tick needs recvmmsg (Linux)",
        ))
    }
}

#[cfg(all(test, target_os = "linux"))]
mod tests {
    use super::*;
    use std::time::Duration;

    thread_local! {
        /// `sendmmsg` calls made by this thread.
        pub(super) static SEND_CALLS: std::cell::Cell<usize> = const { std::cell::Cell::new(0) };
        /// Segmented (GSO) messages this thread handed to the kernel.
        pub(super) static SEGMENTED: std::cell::Cell<usize> = const { std::cell::Cell::new(0) };
    }

    async fn pair() -> (CallSocket, std::net::UdpSocket, SocketAddr) {
        let s = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let to = s.local_addr().unwrap();
        let peer = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        (CallSocket::new(s), peer, to)
    }

    /// Datagrams that waited in a polled socket come out whole, from their sender, dated
    /// when the kernel took them in rather than when they were read.
    #[tokio::test(flavor = "current_thread")]
    async fn a_polled_socket_reads_a_batch_with_kernel_arrival_times() {
        let (mut s, peer, to) = pair().await;
        assert!(s.poll().unwrap());
        assert!(s.is_polled() && s.registered().is_none());
        let mut batch = RecvBatch::new();
        let empty = s.recv_batch(&mut batch).unwrap_err();
        assert_eq!(empty.kind(), io::ErrorKind::WouldBlock);
        // The kernel turns receive stamping on for the whole system a moment after the first
        // socket asks (deferred work); until then a datagram is dated when it is read.
        std::thread::sleep(Duration::from_millis(100));

        for i in 0..3u8 {
            peer.send_to(&[i; 100], to).unwrap();
        }
        let sent = Instant::now();
        std::thread::sleep(Duration::from_millis(50));
        assert_eq!(s.recv_batch(&mut batch).unwrap(), 3);
        let read = Instant::now();
        for i in 0..3 {
            let (r, data) = batch.get(i);
            assert_eq!(data, &[i as u8; 100][..]);
            assert_eq!(r.from, peer.local_addr().unwrap());
            // Read 50 ms after it was sent; its date is the arrival, within a few ms of the send.
            let waited = read - r.arrival;
            assert!(
                waited >= Duration::from_millis(40),
                "datagram {i} dated {waited:?} before its read"
            );
            assert!(r.arrival + Duration::from_millis(10) >= sent);
        }
    }

    /// More than a batch takes more than one read, and nothing is lost or repeated.
    #[tokio::test(flavor = "current_thread")]
    async fn a_long_queue_takes_several_batches() {
        let (mut s, peer, to) = pair().await;
        s.poll().unwrap();
        let total = BATCH + 3;
        for i in 0..total {
            peer.send_to(&(i as u32).to_be_bytes(), to).unwrap();
        }
        std::thread::sleep(Duration::from_millis(10));
        let mut batch = RecvBatch::new();
        let mut seen = Vec::new();
        loop {
            match s.recv_batch(&mut batch) {
                Ok(n) => {
                    assert!(n <= BATCH);
                    seen.extend((0..n).map(|i| {
                        let (_, d) = batch.get(i);
                        u32::from_be_bytes(d.try_into().unwrap()) as usize
                    }))
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) => panic!("{e}"),
            }
        }
        assert_eq!(seen, (0..total).collect::<Vec<_>>());
    }

    /// A datagram that came while the socket was polled is not lost when it is registered
    /// again: the reactor reports it readable at once. Sending works in both modes.
    #[tokio::test(flavor = "current_thread")]
    async fn registered_again_a_socket_delivers_what_waited() {
        let (mut s, peer, to) = pair().await;
        s.poll().unwrap();
        s.send_to(b"polled", peer.local_addr().unwrap())
            .await
            .unwrap();
        peer.send_to(b"waited", to).unwrap();
        std::thread::sleep(Duration::from_millis(10));
        s.register().unwrap();
        assert!(!s.is_polled());
        let mut buf = [0u8; 64];
        let (n, _) = tokio::time::timeout(
            Duration::from_secs(2),
            s.registered().unwrap().recv_from(&mut buf),
        )
        .await
        .expect("the waiting datagram is reported")
        .unwrap();
        assert_eq!(&buf[..n], b"waited");
        s.send_to(b"registered", peer.local_addr().unwrap())
            .await
            .unwrap();
        peer.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
        for want in [&b"polled"[..], b"registered"] {
            let (n, _) = peer.recv_from(&mut buf).unwrap();
            assert_eq!(&buf[..n], want);
        }
    }

    fn datagram(i: usize, to: SocketAddr) -> Transmit {
        // Sizes from 1 byte to a full video packet, each datagram numbered.
        let mut contents = bytes::BytesMut::from(&(i as u32).to_be_bytes()[..]);
        contents.resize(4 + (i * 97) % 1200, i as u8);
        Transmit {
            destination: to,
            contents,
        }
    }

    /// Reads `count` datagrams (2 s at most) and checks each is the numbered one sent.
    fn expect_datagrams(peer: &std::net::UdpSocket, numbers: impl Iterator<Item = usize>) {
        peer.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
        let mut buf = [0u8; SLOT];
        for i in numbers {
            let n = peer.recv(&mut buf).expect("every datagram arrives");
            let want = datagram(i, peer.local_addr().unwrap());
            assert_eq!(&buf[..n], &want.contents[..], "datagram {i}");
        }
    }

    /// What the transport queued leaves `SEND_BATCH` datagrams to a system call, in both modes,
    /// each whole and in order, to the destination each names.
    #[tokio::test(flavor = "current_thread")]
    async fn queued_datagrams_leave_in_batches_whole_and_in_order() {
        for polled in [false, true] {
            let (mut s, a, _) = pair().await;
            let b = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
            if polled {
                assert!(s.poll().unwrap());
            }
            let total = 2 * SEND_BATCH + 3;
            // Alternating between two destinations, as a call and its screen share's server
            // never do but a batch allows.
            let mut queue: std::collections::VecDeque<Transmit> = (0..total)
                .map(|i| {
                    let peer = if i % 2 == 0 { &a } else { &b };
                    datagram(i, peer.local_addr().unwrap())
                })
                .collect();
            let calls = SEND_CALLS.with(|c| c.get());
            s.send_queued("test", || queue.pop_front()).await;
            let made = SEND_CALLS.with(|c| c.get()) - calls;
            assert_eq!(made, total.div_ceil(SEND_BATCH), "polled: {polled}");
            expect_datagrams(&a, (0..total).step_by(2));
            expect_datagrams(&b, (1..total).step_by(2));
        }
    }

    /// One datagram the kernel refuses (an IPv6 destination on an IPv4 socket) is dropped,
    /// and those after it in the batch still go.
    #[tokio::test(flavor = "current_thread")]
    async fn a_refused_datagram_does_not_stop_the_rest_of_its_batch() {
        let (mut s, peer, _) = pair().await;
        let to = peer.local_addr().unwrap();
        let mut queue: std::collections::VecDeque<Transmit> = (0..5)
            .map(|i| {
                let dest = if i == 2 {
                    "[::1]:9".parse().unwrap()
                } else {
                    to
                };
                datagram(i, dest)
            })
            .collect();
        s.send_queued("test", || queue.pop_front()).await;
        expect_datagrams(&peer, [0, 1, 3, 4].into_iter());
        peer.set_nonblocking(true).unwrap();
        let extra = peer.recv(&mut [0u8; 64]).unwrap_err();
        assert_eq!(extra.kind(), io::ErrorKind::WouldBlock, "nothing more came");
    }

    /// Addresses are written for IPv6 as well, and runs are segmented there too.
    #[tokio::test(flavor = "current_thread")]
    async fn batches_reach_ipv6_peers() {
        let Ok(s) = tokio::net::UdpSocket::bind("[::1]:0").await else {
            eprintln!("no IPv6 loopback here; skipped");
            return;
        };
        let mut s = CallSocket::new(s);
        let peer = std::net::UdpSocket::bind("[::1]:0").unwrap();
        let to = peer.local_addr().unwrap();
        let mut queue: std::collections::VecDeque<Transmit> =
            (0..SEND_BATCH + 1).map(|i| datagram(i, to)).collect();
        s.send_queued("test", || queue.pop_front()).await;
        expect_datagrams(&peer, 0..SEND_BATCH + 1);
        // A run of equal datagrams, segmented.
        let segmented = SEGMENTED.with(|c| c.get());
        let mut queue: std::collections::VecDeque<Transmit> =
            (0..5).map(|_| sized(1000, to)).collect();
        s.send_queued("test", || queue.pop_front()).await;
        assert_eq!(SEGMENTED.with(|c| c.get()) - segmented, 1);
        let mut buf = [0u8; SLOT];
        for _ in 0..5 {
            assert_eq!(peer.recv(&mut buf).unwrap(), 1000);
        }
    }

    fn sized(size: usize, to: SocketAddr) -> Transmit {
        Transmit {
            destination: to,
            contents: bytes::BytesMut::from(&vec![0; size][..]),
        }
    }

    /// A run is the first datagram and those after it of its size to its address, and one
    /// shorter one to end it, within the kernel's limits.
    #[test]
    fn a_run_is_equal_sizes_to_one_address_and_a_shorter_last() {
        let a: SocketAddr = "127.0.0.1:1".parse().unwrap();
        let b: SocketAddr = "127.0.0.1:2".parse().unwrap();
        let run = |sizes: &[(usize, SocketAddr)]| {
            let d: Vec<Transmit> = sizes.iter().map(|&(n, to)| sized(n, to)).collect();
            run_length(&d, true)
        };
        assert_eq!(run(&[]), 0);
        assert_eq!(run(&[(1200, a); 5]), 5);
        assert_eq!(run(&[(1200, a), (1200, a), (700, a), (700, a)]), 3);
        assert_eq!(run(&[(1200, a), (1200, a), (1300, a)]), 2);
        assert_eq!(run(&[(1200, a), (1200, b)]), 1);
        assert_eq!(run(&[(1200, a), (0, a)]), 1);
        assert_eq!(run(&[(0, a), (0, a)]), 1);
        assert_eq!(run(&[(100, a); 70]), MAX_SEGMENTS);
        assert_eq!(run(&[(1500, a); 60]), MAX_SEGMENTED_BYTES / 1500);
        let d: Vec<Transmit> = (0..4).map(|_| sized(1200, a)).collect();
        assert_eq!(
            run_length(&d, false),
            1,
            "unsegmented, every datagram alone"
        );
    }

    /// The packetizer balances a frame's packets (sizes differ by one byte, larger first), so
    /// a frame of any size goes as at most two segmented messages.
    #[test]
    fn a_packetized_frame_is_at_most_two_runs() {
        use groupcall_media::video::{packetize::vp8_payloads, DEFAULT_MAX_PAYLOAD};
        let to: SocketAddr = "127.0.0.1:1".parse().unwrap();
        for frame_len in [1_500, 9_000, 9_001, 20_011, 38_000] {
            let frame = vec![7u8; frame_len];
            let payloads = vp8_payloads(&frame, 1, DEFAULT_MAX_PAYLOAD).unwrap();
            // RTP header, extensions and SRTP tag: the same on every packet of a frame.
            let d: Vec<Transmit> = payloads.iter().map(|p| sized(p.len() + 40, to)).collect();
            let mut messages = 0;
            let mut at = 0;
            while at < d.len() {
                at += run_length(&d[at..], true);
                messages += 1;
            }
            assert!(d.len() > 1, "{frame_len} bytes take several packets");
            assert!(
                messages <= 2,
                "{frame_len} bytes: {} packets in {messages} messages",
                d.len()
            );
        }
    }

    /// A video frame (equal packets, a shorter last) then an audio packet leave in one
    /// system call, the frame as one segmented message; the peer receives every packet whole,
    /// as its own datagram, in order.
    #[tokio::test(flavor = "current_thread")]
    async fn a_frame_leaves_as_one_segmented_message_and_arrives_as_its_packets() {
        for polled in [false, true] {
            let (mut s, peer, _) = pair().await;
            if polled {
                assert!(s.poll().unwrap());
            }
            let to = peer.local_addr().unwrap();
            let sizes = [[1200; 12].as_slice(), &[700, 100]].concat();
            let mut queue: std::collections::VecDeque<Transmit> = sizes
                .iter()
                .enumerate()
                .map(|(i, &n)| {
                    let mut contents = bytes::BytesMut::from(&(i as u32).to_be_bytes()[..]);
                    contents.resize(n, i as u8);
                    Transmit {
                        destination: to,
                        contents,
                    }
                })
                .collect();
            let sent: Vec<Vec<u8>> = queue.iter().map(|t| t.contents.to_vec()).collect();
            let (calls, segmented) = (SEND_CALLS.with(|c| c.get()), SEGMENTED.with(|c| c.get()));
            s.send_queued("test", || queue.pop_front()).await;
            assert_eq!(SEND_CALLS.with(|c| c.get()) - calls, 1);
            assert_eq!(SEGMENTED.with(|c| c.get()) - segmented, 1);
            assert!(
                s.segment.load(Ordering::Relaxed),
                "the kernel took the segmented message"
            );
            peer.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
            let mut buf = [0u8; SLOT];
            for t in &sent {
                let n = peer.recv(&mut buf).expect("every packet arrives");
                assert_eq!(&buf[..n], &t[..], "polled: {polled}");
            }
        }
    }

    /// A kernel that refuses segmentation: a socket with UDP checksums off (`SO_NO_CHECK`)
    /// has every segmented send refused with EINVAL, as a device without checksum offload
    /// refuses it with EIO. The frame still arrives whole, each packet on its own, and the
    /// socket sends unsegmented from then on.
    #[cfg(target_os = "linux")]
    #[tokio::test(flavor = "current_thread")]
    async fn a_refused_segmentation_falls_back_to_datagrams_one_by_one() {
        use std::os::fd::AsRawFd;
        let (s, peer, _) = pair().await;
        let Mode::Registered(udp) = &s.mode else {
            panic!("a new socket is registered")
        };
        let on: libc::c_int = 1;
        // SAFETY: a valid descriptor and an int option of the right size.
        let r = unsafe {
            libc::setsockopt(
                udp.as_raw_fd(),
                libc::SOL_SOCKET,
                libc::SO_NO_CHECK,
                (&on as *const libc::c_int).cast(),
                std::mem::size_of::<libc::c_int>() as libc::socklen_t,
            )
        };
        assert_eq!(r, 0, "{}", std::io::Error::last_os_error());
        let to = peer.local_addr().unwrap();
        let frame = |first: usize| -> std::collections::VecDeque<Transmit> {
            (first..first + 6)
                .map(|i| {
                    let mut contents = bytes::BytesMut::from(&(i as u32).to_be_bytes()[..]);
                    contents.resize(if i == first + 5 { 300 } else { 1100 }, i as u8);
                    Transmit {
                        destination: to,
                        contents,
                    }
                })
                .collect()
        };
        let mut s = s;
        let mut queue = frame(0);
        queue.extend(frame(6));
        let sent: Vec<Vec<u8>> = queue.iter().map(|t| t.contents.to_vec()).collect();
        s.send_queued("test", || queue.pop_front()).await;
        assert!(
            !s.segment.load(Ordering::Relaxed),
            "the refusal turned segmentation off"
        );
        peer.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
        let mut buf = [0u8; SLOT];
        for t in &sent {
            let n = peer.recv(&mut buf).expect("every packet arrives");
            assert_eq!(&buf[..n], &t[..]);
        }
        // Nothing more: no packet went twice.
        peer.set_nonblocking(true).unwrap();
        assert!(peer.recv(&mut buf).is_err());
    }
}
