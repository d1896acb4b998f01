//! A real S3 server for integration tests (feature `s3-test-server`): s3s over s3s-fs on a
//! loopback port, one bucket in a temporary directory, static keys. Tests of every crate speak
//! the S3 protocol to it through the same `object_store` client as production.

use std::path::Path;
use std::sync::Arc;

/// Credentials the server accepts.
pub const ACCESS_KEY: &str = "dftg-test-key";
pub const SECRET_KEY: &str = "dftg-test-secret";
pub const REGION: &str = "us-east-1";

/// Stops serving when dropped; the bucket's files live under [`S3TestServer::root`].
pub struct S3TestServer {
    pub endpoint: String,
    pub bucket: String,
    dir: tempfile::TempDir,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for S3TestServer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl S3TestServer {
    /// Serves `bucket` on 127.0.0.1 at an ephemeral port, at most 64 connections at once.
    pub async fn start(bucket: &str) -> std::io::Result<Self> {
        let dir = tempfile::tempdir()?;
        std::fs::create_dir(dir.path().join(bucket))?;
        let fs = s3s_fs::FileSystem::new(dir.path()).map_err(|e| std::io::Error::other(format!("s3s-fs: {e:?}")))?;
        let mut builder = s3s::service::S3ServiceBuilder::new(fs);
        builder.set_auth(s3s::auth::SimpleAuth::from_single(ACCESS_KEY, SECRET_KEY));
        let service = builder.build();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let endpoint = format!("http://{}", listener.local_addr()?);
        let task = tokio::spawn(async move {
            let http = hyper_util::server::conn::auto::Builder::new(hyper_util::rt::TokioExecutor::new());
            let slots = Arc::new(tokio::sync::Semaphore::new(64));
            loop {
                let Ok(permit) = slots.clone().acquire_owned().await else { return };
                let Ok((socket, _)) = listener.accept().await else { continue };
                let conn = http.serve_connection(hyper_util::rt::TokioIo::new(socket), service.clone()).into_owned();
                tokio::spawn(async move {
                    let _ = conn.await;
                    drop(permit);
                });
            }
        });
        Ok(S3TestServer { endpoint, bucket: bucket.to_string(), dir, task })
    }

    /// The directory whose sub-directory `<bucket>/` holds the bucket's objects as files.
    pub fn root(&self) -> &Path {
        self.dir.path()
    }

    /// An `object_store` builder pointed at this server with its credentials.
    pub fn builder(&self) -> object_store::aws::AmazonS3Builder {
        object_store::aws::AmazonS3Builder::new()
            .with_endpoint(&self.endpoint)
            .with_allow_http(true)
            .with_region(REGION)
            .with_access_key_id(ACCESS_KEY)
            .with_secret_access_key(SECRET_KEY)
    }

    /// The AWS environment a child process needs to reach this server.
    pub fn aws_env(&self) -> Vec<(String, String)> {
        vec![
            ("AWS_ENDPOINT_URL".into(), self.endpoint.clone()),
            ("AWS_ALLOW_HTTP".into(), "true".into()),
            ("AWS_ACCESS_KEY_ID".into(), ACCESS_KEY.into()),
            ("AWS_SECRET_ACCESS_KEY".into(), SECRET_KEY.into()),
            ("AWS_REGION".into(), REGION.into()),
        ]
    }
}
