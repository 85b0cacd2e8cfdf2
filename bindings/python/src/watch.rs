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
        state.watchers.push((token, watcher));
        if !state.thread_running {
            let watch = self.clone();
            std::thread::Builder::new()
                .name(format!("minishard-watch-{}", cluster.name()))
                .spawn(move || watch.run(cluster))?;
            state.thread_running = true;
        }
        Ok(token)
    }

    /// Removes a watcher; unknown tokens are ignored.
    pub(crate) fn remove(&self, token: u64) -> Option<Py<PyAny>> {
        let mut state = self.state();
        let at = state.watchers.iter().position(|(t, _)| *t == token)?;
        Some(state.watchers.swap_remove(at).1)
    }

    fn run(&self, cluster: Arc<Cluster>) {
        let mut last = cluster.health();
        loop {
            // The health that woke the wait: a later snapshot may already
            // have changed it back, and the watchers should hear of it.
            let seen = Cell::new(last);
            let waited = cluster.wait_for(
                |snapshot| {
                    seen.set(snapshot.health);
                    snapshot.health != last
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
