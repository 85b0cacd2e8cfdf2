//! Health changes pushed to Python as they happen, for `wait_until_async`
//! (and the blocking waits that run callbacks on the event loop's thread).
//!
//! While anyone watches a handle, one thread of its own sleeps on the
//! engine's wait (woken by every snapshot the engine publishes, not on a
//! timer) and calls each watcher with the new health's name, or with `None`
//! once the handle has stopped. Watchers are called attached, without the
//! lock held, and must only hand the news over (e.g. with
//! `loop.call_soon_threadsafe`).

use std::cell::Cell;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use minishard::{Cluster, Error, Health};
use pyo3::prelude::*;

/// How long the watch thread lingers without watchers before it ends; it
/// notices new health sooner, when the engine publishes it.
const IDLE: Duration = Duration::from_secs(1);

#[derive(Default)]
struct Watching {
    next: u64,
    watchers: Vec<(u64, Py<PyAny>)>,
    thread_running: bool,
}

/// The watchers of one handle.
#[derive(Default)]
pub(crate) struct HealthWatch {
    state: Mutex<Watching>,
    /// A watcher was added: the next look reports the health even if it
    /// equals the last reported one, since the new watcher may have seen
    /// another in between (a change and its undoing between two looks).
    added: AtomicBool,
}

impl HealthWatch {
    fn state(&self) -> MutexGuard<'_, Watching> {
        // Nothing panics while holding the lock; a poisoned one is still whole.
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Adds `watcher` (called with the health's name, or `None` once the
    /// handle has stopped) and returns its token for [`HealthWatch::remove`].
    pub(crate) fn add(
        self: &Arc<Self>,
        cluster: Arc<Cluster>,
        watcher: Py<PyAny>,
    ) -> std::io::Result<u64> {
        let mut state = self.state();
        state.next += 1;
        let token = state.next;
        if !state.thread_running {
            // Read before the watcher is added: any change the caller has
            // not seen yet (it looks at the health after this returns)
            // differs from it, so the new thread reports it.
            let since = cluster.health();
            let watch = self.clone();
            std::thread::Builder::new()
                .name(format!("minishard-watch-{}", cluster.name()))
                .spawn(move || watch.run(cluster, since))?;
            state.thread_running = true;
        }
        state.watchers.push((token, watcher));
        self.added.store(true, Ordering::Release);
        Ok(token)
    }

    /// Removes a watcher; unknown tokens are ignored.
    pub(crate) fn remove(&self, token: u64) -> Option<Py<PyAny>> {
        let mut state = self.state();
        let at = state.watchers.iter().position(|(t, _)| *t == token)?;
        Some(state.watchers.swap_remove(at).1)
    }

    /// Reports every health other than the last reported, starting from
    /// `since`.
    fn run(&self, cluster: Arc<Cluster>, since: Health) {
        let mut last = since;
        loop {
            // The health that woke the wait: a later snapshot may already
            // have changed it back, and the watchers should hear of it.
            let seen = Cell::new(last);
            let waited = cluster.wait_for(
                |snapshot| {
                    seen.set(snapshot.health);
                    self.added.swap(false, Ordering::AcqRel) || snapshot.health != last
                },
                IDLE,
            );
            let news: Option<Option<Health>> = match waited {
                Ok(()) => Some(Some(seen.get())),
                Err(Error::Closed) => Some(None),
                Err(_) => None,
            };
            if let Some(Some(health)) = news {
                last = health;
            }
            if news.is_none() {
                let mut state = self.state();
                if state.watchers.is_empty() {
                    state.thread_running = false;
                    return;
                }
                continue;
            }
            let delivered = Python::try_attach(|py| {
                let watchers: Vec<Py<PyAny>> = self
                    .state()
                    .watchers
                    .iter()
                    .map(|(_, w)| w.clone_ref(py))
                    .collect();
                let name = news.flatten().map(Health::as_str);
                for watcher in watchers {
                    if let Err(err) = watcher.call1(py, (name,)) {
                        err.write_unraisable(py, None);
                    }
                }
            });
            if delivered.is_none() || news == Some(None) {
                let mut state = self.state();
                state.thread_running = false;
                // A watcher added after this point starts a new thread,
                // which finds the handle stopped and tells it at once.
                return;
            }
        }
    }
}
