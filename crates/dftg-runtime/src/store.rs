//! Object storage behind one narrow trait. Outputs are written with create-only puts to
//! deterministic keys: a finished object is the commit record, so redelivered work is
//! harmless (the second put reports `AlreadyExists`).

use std::sync::Arc;

use bytes::Bytes;
use futures::future::BoxFuture;
use futures::stream::BoxStream;
use futures::{FutureExt, StreamExt, TryStreamExt};
use object_store::path::Path;
use object_store::{ObjectStore, PutMode, PutOptions, PutPayload};
use thiserror::Error;

#[derive(Debug, Error)]
pub enum StoreError {
    #[error("invalid store url {url:?}: {reason}")]
    InvalidUrl { url: String, reason: String },
    /// Transient backend failure: retry or requeue.
    #[error("store request for {key:?} failed: {source}")]
    Backend {
        key: String,
        #[source]
        source: object_store::Error,
    },
}

impl StoreError {
    pub fn retryable(&self) -> bool {
        matches!(self, StoreError::Backend { .. })
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PutOutcome {
    Created,
    /// The key already held an object: an earlier attempt finished this work.
    AlreadyExists,
}

/// Chunks of one object's bytes.
pub type ByteStream = BoxStream<'static, Result<Bytes, StoreError>>;

/// What the pipeline needs from object storage.
pub trait BlobStore: Send + Sync + 'static {
    fn get<'a>(&'a self, key: &'a str) -> BoxFuture<'a, Result<Option<Bytes>, StoreError>>;
    /// Create-only put: never overwrites.
    fn put_create<'a>(&'a self, key: &'a str, data: Bytes) -> BoxFuture<'a, Result<PutOutcome, StoreError>>;
    /// Overwriting put, for state documents (job state, progress).
    fn put<'a>(&'a self, key: &'a str, data: Bytes) -> BoxFuture<'a, Result<(), StoreError>>;
    /// Keys under `prefix`, sorted.
    fn list<'a>(&'a self, prefix: &'a str) -> BoxFuture<'a, Result<Vec<String>, StoreError>>;
    /// Keys under `prefix` as the backend pages them (S3: lexicographic, 1,000 a page), without
    /// holding the whole listing: for corpora of millions of objects.
    fn list_stream<'a>(&'a self, prefix: &'a str) -> BoxStream<'a, Result<String, StoreError>> {
        futures::stream::once(self.list(prefix))
            .map(|r| match r {
                Ok(keys) => futures::stream::iter(keys.into_iter().map(Ok)).boxed(),
                Err(e) => futures::stream::once(async move { Err(e) }).boxed(),
            })
            .flatten()
            .boxed()
    }
    /// The object's size in bytes, or `None` when missing.
    fn head<'a>(&'a self, key: &'a str) -> BoxFuture<'a, Result<Option<u64>, StoreError>> {
        async move { Ok(self.get(key).await?.map(|b| b.len() as u64)) }.boxed()
    }
    /// The object's bytes as they arrive, or `None` when missing: reading a large manifest
    /// without holding it.
    fn get_stream<'a>(&'a self, key: &'a str) -> BoxFuture<'a, Result<Option<ByteStream>, StoreError>> {
        async move { Ok(self.get(key).await?.map(|b| futures::stream::once(async move { Ok(b) }).boxed())) }.boxed()
    }
    fn delete<'a>(&'a self, key: &'a str) -> BoxFuture<'a, Result<(), StoreError>>;
    /// Human-readable location of this store, for messages.
    fn describe(&self) -> String;
}

/// [`BlobStore`] over any `object_store` backend, under a key prefix.
#[derive(Clone)]
pub struct ObjectBlobStore {
    inner: Arc<dyn ObjectStore>,
    prefix: String,
    label: String,
}

impl ObjectBlobStore {
    pub fn new(inner: Arc<dyn ObjectStore>, prefix: &str, label: impl Into<String>) -> Self {
        ObjectBlobStore { inner, prefix: prefix.trim_matches('/').to_string(), label: label.into() }
    }

    /// A fresh in-memory store.
    pub fn in_memory() -> Self {
        Self::new(Arc::new(object_store::memory::InMemory::new()), "", "memory://")
    }

    /// A local directory (created when missing).
    pub fn local_dir(dir: &std::path::Path) -> Result<Self, StoreError> {
        let label = dir.display().to_string();
        std::fs::create_dir_all(dir).map_err(|e| StoreError::InvalidUrl { url: label.clone(), reason: e.to_string() })?;
        let fs = object_store::local::LocalFileSystem::new_with_prefix(dir)
            .map_err(|e| StoreError::InvalidUrl { url: label.clone(), reason: e.to_string() })?
            .with_automatic_cleanup(true);
        Ok(Self::new(Arc::new(fs), "", label))
    }

    /// `file:///path`, a plain path, `memory://`, or `s3://bucket/prefix` (endpoint, region,
    /// credentials from the usual AWS environment: `AWS_ENDPOINT_URL` or `AWS_ENDPOINT`,
    /// `AWS_ALLOW_HTTP`, `AWS_REGION`, `AWS_ACCESS_KEY_ID`, `AWS_SECRET_ACCESS_KEY`, …).
    pub fn from_url(url: &str) -> Result<Self, StoreError> {
        if url == "memory://" {
            return Ok(Self::in_memory());
        }
        if let Some(path) = url.strip_prefix("file://") {
            return Self::local_dir(std::path::Path::new(path));
        }
        if url.starts_with("s3://") {
            return Self::s3(object_store::aws::AmazonS3Builder::from_env(), url);
        }
        if url.contains("://") {
            return Err(StoreError::InvalidUrl { url: url.to_string(), reason: "supported schemes: file://, memory://, s3://".into() });
        }
        Self::local_dir(std::path::Path::new(url))
    }

    /// Like [`from_url`](Self::from_url) for stores that are only read (a corpus): a local
    /// directory must already exist; nothing is created.
    pub fn from_url_existing(url: &str) -> Result<Self, StoreError> {
        let local = match url.strip_prefix("file://") {
            Some(path) => Some(path),
            None if !url.contains("://") => Some(url),
            None => None,
        };
        match local {
            Some(path) if !std::path::Path::new(path).is_dir() => {
                Err(StoreError::InvalidUrl { url: url.to_string(), reason: "no such directory".into() })
            }
            _ => Self::from_url(url),
        }
    }

    /// Checks a store URL's form (scheme, bucket) without touching the store.
    pub fn check_url(url: &str) -> Result<(), StoreError> {
        let invalid = |reason: &str| Err(StoreError::InvalidUrl { url: url.to_string(), reason: reason.into() });
        if url.trim().is_empty() {
            return invalid("empty");
        }
        if let Some(rest) = url.strip_prefix("s3://") {
            if rest.split('/').next().unwrap_or("").is_empty() {
                return invalid("the url names no bucket");
            }
            return Ok(());
        }
        if url == "memory://" || url.starts_with("file://") || !url.contains("://") {
            return Ok(());
        }
        invalid("supported schemes: file://, memory://, s3://")
    }

    /// `s3://bucket/prefix` with an explicitly configured builder (endpoint, credentials …);
    /// the bucket comes from the URL. Create-only puts are sent as `If-None-Match: *`
    /// (supported by AWS S3 since 2024, MinIO, R2, s3s), so they are atomic on the server.
    pub fn s3(builder: object_store::aws::AmazonS3Builder, url: &str) -> Result<Self, StoreError> {
        let invalid = |reason: String| StoreError::InvalidUrl { url: url.to_string(), reason };
        let rest = url.strip_prefix("s3://").ok_or_else(|| invalid("expected s3://bucket/prefix".into()))?;
        let (bucket, prefix) = rest.split_once('/').unwrap_or((rest, ""));
        if bucket.is_empty() {
            return Err(invalid("the url names no bucket".into()));
        }
        let s3 = builder
            .with_bucket_name(bucket)
            // dftg's commit protocol needs create-only puts; ETagMatch is object_store's
            // If-None-Match/If-Match support (set explicitly so an env override cannot turn it off)
            .with_conditional_put(object_store::aws::S3ConditionalPut::ETagMatch)
            .build()
            .map_err(|e| invalid(e.to_string()))?;
        Ok(Self::new(Arc::new(s3), prefix, url.trim_end_matches('/')))
    }

    /// The same backend under a deeper prefix.
    pub fn scoped(&self, sub: &str) -> Self {
        let prefix =
            if self.prefix.is_empty() { sub.trim_matches('/').to_string() } else { format!("{}/{}", self.prefix, sub.trim_matches('/')) };
        ObjectBlobStore { inner: self.inner.clone(), prefix, label: format!("{}/{}", self.label.trim_end_matches('/'), sub) }
    }

    fn path(&self, key: &str) -> Path {
        if self.prefix.is_empty() {
            Path::from(key)
        } else {
            Path::from(format!("{}/{}", self.prefix, key))
        }
    }

    fn err(key: &str) -> impl FnOnce(object_store::Error) -> StoreError + '_ {
        move |source| StoreError::Backend { key: key.to_string(), source }
    }
}

impl BlobStore for ObjectBlobStore {
    fn get<'a>(&'a self, key: &'a str) -> BoxFuture<'a, Result<Option<Bytes>, StoreError>> {
        async move {
            match self.inner.get(&self.path(key)).await {
                Ok(r) => Ok(Some(r.bytes().await.map_err(Self::err(key))?)),
                Err(object_store::Error::NotFound { .. }) => Ok(None),
                Err(e) => Err(Self::err(key)(e)),
            }
        }
        .boxed()
    }

    fn put_create<'a>(&'a self, key: &'a str, data: Bytes) -> BoxFuture<'a, Result<PutOutcome, StoreError>> {
        async move {
            let opts = PutOptions { mode: PutMode::Create, ..Default::default() };
            match self.inner.put_opts(&self.path(key), PutPayload::from_bytes(data), opts).await {
                Ok(_) => Ok(PutOutcome::Created),
                Err(object_store::Error::AlreadyExists { .. }) => Ok(PutOutcome::AlreadyExists),
                Err(e) => Err(Self::err(key)(e)),
            }
        }
        .boxed()
    }

    fn put<'a>(&'a self, key: &'a str, data: Bytes) -> BoxFuture<'a, Result<(), StoreError>> {
        async move {
            self.inner.put(&self.path(key), PutPayload::from_bytes(data)).await.map_err(Self::err(key))?;
            Ok(())
        }
        .boxed()
    }

    fn list<'a>(&'a self, prefix: &'a str) -> BoxFuture<'a, Result<Vec<String>, StoreError>> {
        async move {
            let base = self.path(prefix);
            let strip = if self.prefix.is_empty() { 0 } else { self.prefix.len() + 1 };
            let mut keys: Vec<String> = self
                .inner
                .list(Some(&base))
                .map_ok(|m| m.location.as_ref()[strip..].to_string())
                .try_collect()
                .await
                .map_err(Self::err(prefix))?;
            keys.sort();
            Ok(keys)
        }
        .boxed()
    }

    fn list_stream<'a>(&'a self, prefix: &'a str) -> BoxStream<'a, Result<String, StoreError>> {
        let strip = if self.prefix.is_empty() { 0 } else { self.prefix.len() + 1 };
        let base = self.path(prefix);
        self.inner.list(Some(&base)).map(move |r| r.map(|m| m.location.as_ref()[strip..].to_string()).map_err(Self::err(prefix))).boxed()
    }

    fn head<'a>(&'a self, key: &'a str) -> BoxFuture<'a, Result<Option<u64>, StoreError>> {
        async move {
            match self.inner.head(&self.path(key)).await {
                Ok(meta) => Ok(Some(meta.size)),
                Err(object_store::Error::NotFound { .. }) => Ok(None),
                Err(e) => Err(Self::err(key)(e)),
            }
        }
        .boxed()
    }

    fn get_stream<'a>(&'a self, key: &'a str) -> BoxFuture<'a, Result<Option<ByteStream>, StoreError>> {
        async move {
            match self.inner.get(&self.path(key)).await {
                Ok(r) => {
                    let key = key.to_string();
                    Ok(Some(r.into_stream().map_err(move |source| StoreError::Backend { key: key.clone(), source }).boxed()))
                }
                Err(object_store::Error::NotFound { .. }) => Ok(None),
                Err(e) => Err(Self::err(key)(e)),
            }
        }
        .boxed()
    }

    fn delete<'a>(&'a self, key: &'a str) -> BoxFuture<'a, Result<(), StoreError>> {
        async move {
            match self.inner.delete(&self.path(key)).await {
                Ok(()) | Err(object_store::Error::NotFound { .. }) => Ok(()),
                Err(e) => Err(Self::err(key)(e)),
            }
        }
        .boxed()
    }

    fn describe(&self) -> String {
        self.label.clone()
    }
}

/// The behaviour every [`BlobStore`] must have; run against each implementation.
/// Feature `testing`: for the tests of each implementation.
#[cfg(any(test, feature = "testing"))]
pub async fn conformance_suite(store: &dyn BlobStore) {
    assert_eq!(store.get("a/missing").await.expect("get"), None);
    assert_eq!(store.put_create("a/x.json", Bytes::from_static(b"1")).await.expect("put"), PutOutcome::Created);
    assert_eq!(store.put_create("a/x.json", Bytes::from_static(b"2")).await.expect("put"), PutOutcome::AlreadyExists);
    assert_eq!(store.get("a/x.json").await.expect("get").as_deref(), Some(&b"1"[..]), "create-only put never overwrites");
    store.put("a/state.json", Bytes::from_static(b"s1")).await.expect("put");
    store.put("a/state.json", Bytes::from_static(b"s2")).await.expect("put");
    assert_eq!(store.get("a/state.json").await.expect("get").as_deref(), Some(&b"s2"[..]));
    store.put_create("b/y", Bytes::from_static(b"y")).await.expect("put");
    assert_eq!(store.list("a/").await.expect("list"), vec!["a/state.json".to_string(), "a/x.json".to_string()]);
    let mut streamed: Vec<String> = store.list_stream("a/").try_collect().await.expect("list_stream");
    streamed.sort();
    assert_eq!(streamed, vec!["a/state.json".to_string(), "a/x.json".to_string()]);
    let chunks: Vec<Bytes> =
        store.get_stream("a/state.json").await.expect("get_stream").expect("present").try_collect().await.expect("chunks");
    assert_eq!(chunks.concat(), b"s2");
    assert!(store.get_stream("a/missing").await.expect("get_stream").is_none());
    assert_eq!(store.head("a/state.json").await.expect("head"), Some(2));
    assert_eq!(store.head("a/missing").await.expect("head"), None);
    store.delete("a/x.json").await.expect("delete");
    store.delete("a/x.json").await.expect("deleting a missing key is fine");
    assert_eq!(store.list("a/").await.expect("list"), vec!["a/state.json".to_string()]);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn in_memory_store_conforms() {
        conformance_suite(&ObjectBlobStore::in_memory()).await;
        conformance_suite(&ObjectBlobStore::in_memory().scoped("job-1")).await;
    }

    #[tokio::test]
    async fn local_directory_store_conforms() {
        let dir = tempfile::tempdir().unwrap();
        conformance_suite(&ObjectBlobStore::local_dir(dir.path()).unwrap()).await;
        let scoped = ObjectBlobStore::from_url(&format!("file://{}", dir.path().display())).unwrap().scoped("job-2");
        conformance_suite(&scoped).await;
        assert!(dir.path().join("job-2/b/y").is_file());
    }

    #[test]
    fn unknown_scheme_is_refused_with_the_url() {
        let err = ObjectBlobStore::from_url("ftp://x").err().unwrap().to_string();
        assert!(err.contains("ftp://x"), "{err}");
    }

    #[test]
    fn check_url_matches_what_from_url_accepts() {
        for ok in ["s3://b/p", "s3://b", "file:///tmp/x", "memory://", "relative/dir"] {
            assert!(ObjectBlobStore::check_url(ok).is_ok(), "{ok}");
        }
        for bad in ["", "s3:///p", "gs://b/p"] {
            assert!(ObjectBlobStore::check_url(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn s3_url_needs_a_bucket() {
        let err = ObjectBlobStore::from_url("s3:///prefix").err().unwrap().to_string();
        assert!(err.contains("s3:///prefix") && err.contains("bucket"), "{err}");
        let store = ObjectBlobStore::s3(object_store::aws::AmazonS3Builder::new().with_region("us-east-1"), "s3://b/jobs/").unwrap();
        assert_eq!(store.describe(), "s3://b/jobs");
        assert_eq!(store.prefix, "jobs");
    }
}
