//! A bounded, concurrent cache of service answers inside one job, so an image asked about
//! twice (a redelivered shard, a concept claimed in two prompts) costs one request.
//!
//! Keys are (image key, service, item): the item is one detector label or one judge question.
//! The job holds one [`CallCache`] per kind of answer (`CallCache<Vec<Detection>>` for the
//! detector, `CallCache<JudgeAnswer<bool>>` for the judge …) and drops it with the job.
//! Errors are never cached: the next ask tries the service again.
//!
//! Eviction is first-in first-out: within a job each image is asked about in one burst, so
//! recency adds little, and FIFO needs no bookkeeping on reads.

use std::collections::VecDeque;
use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;

use ahash::AHashMap;

/// What an answer is about.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct CacheKey {
    /// The image's key in its corpus.
    pub image: String,
    /// Which service answered (e.g. [`crate::detect::Detector::service`], the judge's model).
    pub service: String,
    /// The label or question.
    pub item: String,
}

impl CacheKey {
    pub fn new(image: impl Into<String>, service: impl Into<String>, item: impl Into<String>) -> Self {
        CacheKey { image: image.into(), service: service.into(), item: item.into() }
    }
}

/// Counters for a metrics exporter.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CacheStats {
    pub hits: u64,
    pub misses: u64,
    pub evictions: u64,
    pub entries: usize,
}

/// Bounded map from [`CacheKey`] to answers; see the module docs. Cheap to share behind an
/// `Arc`; every method takes `&self`.
#[derive(Debug)]
pub struct CallCache<V> {
    capacity: usize,
    inner: Mutex<Inner<V>>,
    hits: AtomicU64,
    misses: AtomicU64,
    evictions: AtomicU64,
}

#[derive(Debug)]
struct Inner<V> {
    map: AHashMap<CacheKey, V>,
    order: VecDeque<CacheKey>,
}

impl<V: Clone> CallCache<V> {
    /// Holds at most `capacity` answers (at least one).
    pub fn new(capacity: usize) -> Self {
        CallCache {
            capacity: capacity.max(1),
            inner: Mutex::new(Inner { map: AHashMap::new(), order: VecDeque::new() }),
            hits: AtomicU64::new(0),
            misses: AtomicU64::new(0),
            evictions: AtomicU64::new(0),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner<V>> {
        // a panic while holding the lock leaves a consistent map (every update is one call)
        self.inner.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// The cached answer, counting a hit or a miss.
    pub fn get(&self, key: &CacheKey) -> Option<V> {
        let found = self.lock().map.get(key).cloned();
        let counter = if found.is_some() { &self.hits } else { &self.misses };
        counter.fetch_add(1, Ordering::Relaxed);
        found
    }

    /// Stores an answer; a new key evicts the oldest one when the cache is full.
    pub fn insert(&self, key: CacheKey, value: V) {
        let mut inner = self.lock();
        if let Some(slot) = inner.map.get_mut(&key) {
            *slot = value;
            return;
        }
        while inner.map.len() >= self.capacity {
            let Some(oldest) = inner.order.pop_front() else {
                break;
            };
            inner.map.remove(&oldest);
            self.evictions.fetch_add(1, Ordering::Relaxed);
        }
        inner.order.push_back(key.clone());
        inner.map.insert(key, value);
    }

    /// The cached answer, or `ask()`'s, which is cached when it succeeds. Two concurrent
    /// misses of one key both ask (the cache holds no lock across `ask`).
    pub async fn get_or_try_insert_with<E, F, Fut>(&self, key: CacheKey, ask: F) -> Result<V, E>
    where
        F: FnOnce() -> Fut,
        Fut: Future<Output = Result<V, E>>,
    {
        if let Some(v) = self.get(&key) {
            return Ok(v);
        }
        let v = ask().await?;
        self.insert(key, v.clone());
        Ok(v)
    }

    pub fn len(&self) -> usize {
        self.lock().map.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    pub fn capacity(&self) -> usize {
        self.capacity
    }

    pub fn stats(&self) -> CacheStats {
        CacheStats {
            hits: self.hits.load(Ordering::Relaxed),
            misses: self.misses.load(Ordering::Relaxed),
            evictions: self.evictions.load(Ordering::Relaxed),
            entries: self.len(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(image: &str, item: &str) -> CacheKey {
        CacheKey::new(image, "svc", item)
    }

    #[test]
    fn hits_misses_and_fifo_eviction() {
        let c: CallCache<u32> = CallCache::new(2);
        assert_eq!(c.get(&key("a", "dog")), None);
        c.insert(key("a", "dog"), 1);
        c.insert(key("a", "cat"), 2);
        c.insert(key("a", "dog"), 3); // replaces, no eviction
        assert_eq!(c.get(&key("a", "dog")), Some(3));
        c.insert(key("b", "dog"), 4); // evicts the oldest key, ("a", "dog")
        assert_eq!(c.get(&key("a", "dog")), None);
        assert_eq!(c.get(&key("a", "cat")), Some(2));
        assert_eq!(c.get(&key("b", "dog")), Some(4));
        assert_eq!(c.stats(), CacheStats { hits: 3, misses: 2, evictions: 1, entries: 2 });
        // the service is part of the key
        assert_eq!(c.get(&CacheKey::new("b", "other", "dog")), None);
        assert_eq!(CallCache::<u8>::new(0).capacity(), 1);
    }

    #[tokio::test]
    async fn answers_are_cached_and_errors_are_not() {
        let c: CallCache<String> = CallCache::new(8);
        let failed: Result<String, &str> = c.get_or_try_insert_with(key("a", "q"), || async { Err("down") }).await;
        assert_eq!(failed, Err("down"));
        assert!(c.is_empty());
        let first = c.get_or_try_insert_with(key("a", "q"), || async { Ok::<_, &str>("yes".to_string()) }).await;
        assert_eq!(first.as_deref(), Ok("yes"));
        let second = c.get_or_try_insert_with(key("a", "q"), || async { Ok::<_, &str>("no".to_string()) }).await;
        assert_eq!(second.as_deref(), Ok("yes"));
        assert_eq!(c.len(), 1);
    }
}
