//! Idle connections kept for the next message to the same destination (Postfix's
//! connection cache, in-process: every delivery thread of this agent shares it).

use crate::session::Session;
use crate::settings::Settings;
use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// The most idle connections kept per destination.
const PER_DESTINATION: usize = 32;

/// Idle sessions by destination key (transport + next hop).
#[derive(Default)]
pub struct Cache {
    idle: Mutex<HashMap<String, Vec<(Session, Instant)>>>,
}

impl Cache {
    /// An idle session to `key`, most recently used first.
    pub fn take(&self, key: &str) -> Option<Session> {
        let mut idle = self.idle.lock().unwrap_or_else(|e| e.into_inner());
        let v = idle.get_mut(key)?;
        let s = v.pop().map(|(s, _)| s);
        if v.is_empty() {
            idle.remove(key);
        }
        s
    }

    /// Keeps `s` for reuse, or closes it when there are enough already.
    pub fn put(&self, key: &str, s: Session, settings: &Settings) {
        if settings.cache_time.is_zero() {
            s.quit(settings);
            return;
        }
        let extra = {
            let mut idle = self.idle.lock().unwrap_or_else(|e| e.into_inner());
            let v = idle.entry(key.to_string()).or_default();
            if v.len() >= PER_DESTINATION {
                Some(s)
            } else {
                v.push((s, Instant::now()));
                None
            }
        };
        if let Some(s) = extra {
            s.quit(settings);
        }
    }

    /// Closes sessions idle for longer than the cache time limit.
    pub fn reap(&self, settings: &Settings) {
        let limit = settings.cache_time;
        let mut old = Vec::new();
        {
            let mut idle = self.idle.lock().unwrap_or_else(|e| e.into_inner());
            for v in idle.values_mut() {
                let mut i = 0;
                while i < v.len() {
                    if v[i].1.elapsed() >= limit {
                        old.push(v.remove(i).0);
                    } else {
                        i += 1;
                    }
                }
            }
            idle.retain(|_, v| !v.is_empty());
        }
        for s in old {
            s.quit(settings);
        }
    }

    /// Runs [`Cache::reap`] forever on its own thread.
    pub fn reaper(cache: std::sync::Arc<Cache>, settings: std::sync::Arc<Settings>) {
        let tick =
            (settings.cache_time / 4).clamp(Duration::from_millis(100), Duration::from_secs(1));
        std::thread::spawn(move || loop {
            std::thread::sleep(tick);
            cache.reap(&settings);
        });
    }
}
