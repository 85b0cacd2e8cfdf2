//! The node's heartbeat clock: one timer for all its connections, each of
//! whose writers sends a heartbeat when it ticks. It owns the timing of the
//! beats and nothing else; what a heartbeat carries is the writer's.
//!
//! An idle node's CPU is mostly its wake-ups, so the clock costs as few as
//! it can: one per interval, in which every connection beats.
//!
//! - One timer, not one per connection: tokio wakes its driver through an
//!   eventfd whenever a timer is armed earlier than the deadline it is
//!   parked on, which a connection's timer re-armed after its tick always
//!   is: a system call and an extra turn of the event loop per peer per
//!   interval, for beats that went out in the same wake-up anyway.
//! - On Linux, a timerfd rather than a tokio timer: tokio's wheel keeps a
//!   deadline more than 64 ms away in a coarser level and wakes at the
//!   start of its 64 ms slot only to move it down, so every beat of a
//!   100 ms interval cost a second wake-up with nothing to do. The kernel
//!   wakes the thread once, at the beat. Elsewhere, or if a timerfd cannot
//!   be had, a tokio interval beats the same grid.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use tokio::sync::watch;

/// Ticks `beats` once per `period`, on the grid of [`until_grid`], until
/// the task is dropped. A late tick is skipped, not shifted, so the beats
/// stay on the grid.
pub(super) async fn run(beats: watch::Sender<()>, period: Duration) {
    #[cfg(target_os = "linux")]
    match kernel::Ticks::new(until_grid(period), period) {
        Ok(mut ticks) => loop {
            match ticks.tick().await {
                Ok(()) => {
                    beats.send_replace(());
                }
                Err(error) => {
                    tracing::warn!(%error, "the heartbeat timerfd failed: beating on tokio's timer");
                    break;
                }
            }
        },
        Err(error) => {
            tracing::debug!(%error, "no timerfd for the heartbeat: beating on tokio's timer");
        }
    }
    let start = tokio::time::Instant::now() + until_grid(period);
    let mut ticks = tokio::time::interval_at(start, period);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    loop {
        ticks.tick().await;
        beats.send_replace(());
    }
}

/// How long until the next instant on a grid of `period` that every node
/// reading the same wall clock shares. A node's connections all beat in
/// one wake-up, and on one host (or hosts kept in step by NTP) its peers'
/// beats arrive together too: a node of n peers wakes a few times per
/// interval, not 2n times. Never zero (a timerfd set to zero is disarmed).
fn until_grid(period: Duration) -> Duration {
    let period_ns = period.as_nanos().max(1);
    let since_epoch = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
        .as_nanos();
    let until_next = period_ns - since_epoch % period_ns;
    Duration::from_nanos(u64::try_from(until_next).unwrap_or(1).max(1))
}

#[cfg(target_os = "linux")]
mod kernel {
    use std::io;
    use std::os::fd::OwnedFd;
    use std::time::Duration;

    use nix::sys::time::TimeSpec;
    use nix::sys::timerfd::{ClockId, Expiration, TimerFd, TimerFlags, TimerSetTimeFlags};
    use tokio::net::unix::pipe;

    /// A periodic timerfd on the monotonic clock (the one tokio's timers
    /// use), read through the runtime's epoll. Tokio's safe way to wait on
    /// a descriptor that is not a socket is its pipe reader, which asks of
    /// its descriptor only what a timerfd is: non-blocking, readable, and
    /// read by `read(2)` (of 8 bytes: the expiries since the last read).
    pub(super) struct Ticks {
        timer: pipe::Receiver,
    }

    impl Ticks {
        pub(super) fn new(first: Duration, period: Duration) -> io::Result<Ticks> {
            let timer = TimerFd::new(
                ClockId::CLOCK_MONOTONIC,
                TimerFlags::TFD_NONBLOCK | TimerFlags::TFD_CLOEXEC,
            )?;
            timer.set(
                Expiration::IntervalDelayed(
                    TimeSpec::from_duration(first),
                    TimeSpec::from_duration(period),
                ),
                TimerSetTimeFlags::empty(),
            )?;
            Ok(Ticks {
                timer: pipe::Receiver::from_owned_fd_unchecked(OwnedFd::from(timer))?,
            })
        }

        /// Waits for the next expiry. Expiries missed meanwhile are one
        /// tick: the read takes their count and resets it.
        pub(super) async fn tick(&mut self) -> io::Result<()> {
            let mut expiries = [0u8; 8];
            loop {
                self.timer.readable().await?;
                match self.timer.try_read(&mut expiries) {
                    Ok(_) => return Ok(()),
                    // Not expired after all (tokio learns so from the
                    // error, and waits on epoll again).
                    Err(e)
                        if matches!(
                            e.kind(),
                            io::ErrorKind::WouldBlock | io::ErrorKind::Interrupted
                        ) => {}
                    Err(e) => return Err(e),
                }
            }
        }
    }
}
