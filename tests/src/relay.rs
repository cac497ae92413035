//! The physical limit the SFU benchmark compares against: a plain UDP relay with no
//! encryption and no WebRTC, forwarding every packet from each member to every other
//! member. It receives in batches (`recvmmsg`, through `quinn-udp`), sends each
//! destination its equal-sized runs of a batch in one call (UDP GSO where the kernel has
//! it) and every packet left over in a few `sendmmsg` calls.
//!
//! Members register by sending one byte; every longer datagram is media to fan out. The
//! driver side ([`drive`]) plays the same pattern the SFU bench plays: each member sends a
//! packet every `interval`, stamped with its send time: an RTP-header-sized prefix and a
//! frame whose size varies as the bots' Opus frames do ([`opus_frame_len`]).

use crate::room_bot::opus_frame_len;
use anyhow::Result;
use quinn_udp::{RecvMeta, Transmit, UdpSockRef, UdpSocketState};
use std::io::IoSliceMut;
use std::net::{SocketAddr, UdpSocket};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// Runs the relay on `socket` forever (run it in its own process, to measure its CPU).
pub fn serve(socket: UdpSocket) -> Result<()> {
    let state = UdpSocketState::new(UdpSockRef::from(&socket))?;
    // quinn-udp makes the socket non-blocking; this loop has nothing else to do but wait.
    socket.set_nonblocking(false)?;
    let _ = state.set_recv_buffer_size(UdpSockRef::from(&socket), 8 << 20);
    let _ = state.set_send_buffer_size(UdpSockRef::from(&socket), 8 << 20);
    let batch = quinn_udp::BATCH_SIZE;
    let gso = state.max_gso_segments().max(1);
    let mut storage = vec![[0u8; 2048]; batch];
    let mut meta = vec![RecvMeta::default(); batch];
    let mut members: Vec<SocketAddr> = Vec::new();
    let mut out: Vec<u8> = Vec::with_capacity(64 * 2048);
    loop {
        let mut bufs: Vec<IoSliceMut<'_>> = storage
            .iter_mut()
            .map(|b| IoSliceMut::new(&mut b[..]))
            .collect();
        let n = match state.recv(UdpSockRef::from(&socket), &mut bufs, &mut meta) {
            Ok(n) => n,
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::Interrupted | std::io::ErrorKind::WouldBlock
                ) =>
            {
                continue;
            }
            Err(e) => return Err(e.into()),
        };
        drop(bufs);
        // Register newcomers; collect the media datagrams of this batch.
        let mut media: Vec<(SocketAddr, &[u8])> = Vec::with_capacity(n);
        for (m, buf) in meta.iter().zip(storage.iter()).take(n) {
            if m.len <= 1 {
                if !members.contains(&m.addr) {
                    members.push(m.addr);
                }
            } else {
                media.push((m.addr, &buf[..m.len]));
            }
        }
        // Each destination gets every packet of the batch that is not its own: runs of
        // equal-sized packets to one destination as one GSO send, and the packets left
        // single (variable-size audio is mostly that) all together in `sendmmsg` calls.
        let mut singles: Vec<(SocketAddr, &[u8])> = Vec::new();
        for &to in &members {
            let mut segments = 0;
            let mut size = 0;
            let mut last: &[u8] = &[];
            out.clear();
            for &(from, data) in &media {
                if from == to {
                    continue;
                }
                if segments > 0 && (data.len() != size || segments == gso) {
                    if segments == 1 {
                        singles.push((to, last));
                    } else {
                        send(&state, &socket, to, &out, size, segments);
                    }
                    out.clear();
                    segments = 0;
                }
                size = data.len();
                last = data;
                out.extend_from_slice(data);
                segments += 1;
            }
            match segments {
                0 => {}
                1 => singles.push((to, last)),
                _ => send(&state, &socket, to, &out, size, segments),
            }
        }
        send_many(&socket, &singles);
    }
}

/// Sends each `(to, datagram)` with as few `sendmmsg` calls as the kernel allows.
fn send_many(socket: &UdpSocket, datagrams: &[(SocketAddr, &[u8])]) {
    use nix::sys::socket::{MsgFlags, MultiHeaders, SockaddrStorage, sendmmsg};
    use std::io::IoSlice;
    use std::os::fd::AsRawFd;
    // The kernel takes at most this many messages a call (UIO_MAXIOV).
    for chunk in datagrams.chunks(1024) {
        let slices: Vec<[IoSlice<'_>; 1]> = chunk.iter().map(|(_, d)| [IoSlice::new(d)]).collect();
        let addrs: Vec<Option<SockaddrStorage>> = chunk
            .iter()
            .map(|(to, _)| Some(SockaddrStorage::from(*to)))
            .collect();
        let mut headers = MultiHeaders::<SockaddrStorage>::preallocate(chunk.len(), None);
        // A full buffer drops, as a network would; the receivers count what arrives.
        let _ = sendmmsg(
            socket.as_raw_fd(),
            &mut headers,
            &slices,
            &addrs,
            [],
            MsgFlags::empty(),
        );
    }
}

fn send(
    state: &UdpSocketState,
    socket: &UdpSocket,
    to: SocketAddr,
    data: &[u8],
    size: usize,
    segments: usize,
) {
    let transmit = Transmit {
        destination: to,
        ecn: None,
        contents: data,
        segment_size: (segments > 1).then_some(size),
        src_ip: None,
    };
    // A full buffer drops, as a network would; the receivers count what arrives.
    let _ = state.try_send(UdpSockRef::from(socket), &transmit);
}

fn now_us() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_micros() as u64)
}

/// What the members of a relay run received.
#[derive(Debug, Default)]
pub struct RelayRun {
    pub received_pps: f64,
    pub delay_us: Vec<u64>,
}

/// Plays the pattern through the relay at `relay`: `members` sockets, each sending a
/// packet of `header` bytes and one Opus frame every `interval`, all receiving; measures for
/// `measure` after a second of warm-up.
pub fn drive(
    relay: SocketAddr,
    members: usize,
    interval: Duration,
    header: usize,
    measure: Duration,
) -> Result<RelayRun> {
    let sockets: Vec<Arc<UdpSocket>> = (0..members)
        .map(|_| -> Result<Arc<UdpSocket>> {
            let s = UdpSocket::bind("127.0.0.1:0")?;
            s.set_read_timeout(Some(Duration::from_millis(100)))?;
            s.send_to(&[0], relay)?;
            Ok(Arc::new(s))
        })
        .collect::<Result<_>>()?;
    let received = Arc::new(AtomicU64::new(0));
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let sampling = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let delays = Arc::new(std::sync::Mutex::new(Vec::<u64>::new()));
    let mut threads = Vec::new();
    for s in &sockets {
        let (s, received, stop, sampling, delays) = (
            s.clone(),
            received.clone(),
            stop.clone(),
            sampling.clone(),
            delays.clone(),
        );
        threads.push(std::thread::spawn(move || {
            let mut buf = [0u8; 2048];
            let mut mine = Vec::new();
            while !stop.load(Ordering::Relaxed) {
                if let Ok((n, _)) = s.recv_from(&mut buf) {
                    received.fetch_add(1, Ordering::Relaxed);
                    if n >= 8 && sampling.load(Ordering::Relaxed) && mine.len() < 20_000 {
                        let mut t = [0u8; 8];
                        t.copy_from_slice(&buf[..8]);
                        mine.push(now_us().saturating_sub(u64::from_be_bytes(t)));
                    }
                }
            }
            if let Ok(mut d) = delays.lock() {
                d.extend(mine);
            }
        }));
    }
    let sender = {
        let (sockets, stop) = (sockets.clone(), stop.clone());
        std::thread::spawn(move || {
            let mut payload = vec![0u8; header + 100];
            let mut next = Instant::now();
            let mut seq = 0u16;
            while !stop.load(Ordering::Relaxed) {
                seq = seq.wrapping_add(1);
                for (member, s) in sockets.iter().enumerate() {
                    // At least the 8-byte send time; a frame is at most 100 bytes.
                    let len = (header + opus_frame_len(member as u32, seq)).clamp(8, header + 100);
                    payload[..8].copy_from_slice(&now_us().to_be_bytes());
                    let _ = s.send_to(&payload[..len], relay);
                }
                next += interval;
                if let Some(wait) = next.checked_duration_since(Instant::now()) {
                    std::thread::sleep(wait);
                }
            }
        })
    };
    std::thread::sleep(Duration::from_secs(1));
    sampling.store(true, Ordering::Relaxed);
    let before = received.load(Ordering::Relaxed);
    let started = Instant::now();
    std::thread::sleep(measure);
    let got = received.load(Ordering::Relaxed) - before;
    let elapsed = started.elapsed().as_secs_f64();
    sampling.store(false, Ordering::Relaxed);
    stop.store(true, Ordering::Relaxed);
    let _ = sender.join();
    for t in threads {
        let _ = t.join();
    }
    let delay_us = delays.lock().map(|d| d.clone()).unwrap_or_default();
    Ok(RelayRun {
        received_pps: got as f64 / elapsed,
        delay_us,
    })
}
