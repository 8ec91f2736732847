//! Blob store for uploads and MP3s: `object_store` over a local directory by default,
//! S3 when the configured URL starts with `s3://`.
//!
//! Every transfer is streamed in bounded chunks: uploads go through a multipart put,
//! downloads are ranged GETs handed to the HTTP layer as a stream, and the worker moves
//! blobs to and from temp files. Nothing here holds a whole blob in memory.
//!
//! Contact points: the gateway (`put_stream`, `get_range`, `delete`) and the worker
//! (`fetch_to_file`, `put_file`); the outbox of notification mail ([`outbox`]).

pub mod outbox;

pub use outbox::{Outbox, OutboxCap, OutboxMessage};

use std::ops::Range;
use std::os::unix::fs::DirBuilderExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use bytes::Bytes;
use futures::stream::BoxStream;
use futures::{Stream, StreamExt, TryStreamExt};
use object_store::local::LocalFileSystem;
use object_store::path::Path as ObjectPath;
use object_store::{GetOptions, GetRange, ObjectStore, WriteMultipart};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// Size of one multipart part (S3's minimum is 5 MiB); also the most an upload buffers.
const PART_BYTES: usize = 5 * 1024 * 1024;
/// Parts in flight at once per upload.
const PARTS_IN_FLIGHT: usize = 2;

#[derive(Debug, thiserror::Error)]
pub enum StorageError {
    #[error("blob not found: {0}")]
    NotFound(String),
    #[error("blob store: {0}")]
    Store(#[from] object_store::Error),
    #[error("blob store I/O: {0}")]
    Io(#[from] std::io::Error),
    #[error("invalid blob store URL {0}: {1}")]
    BadUrl(String, String),
}

/// Why a streamed put stopped early.
#[derive(Debug, thiserror::Error)]
pub enum PutStreamError<E> {
    /// The source stream failed (e.g. the client went away).
    #[error("upload stream: {0}")]
    Source(E),
    /// The body grew past `max_bytes`; the partial blob was discarded.
    #[error("upload exceeds {0} bytes")]
    TooLarge(u64),
    #[error(transparent)]
    Storage(#[from] StorageError),
}

/// A ranged read of one blob, ready to stream.
pub struct BlobRange {
    /// Bytes of the requested range, in order.
    pub stream: BoxStream<'static, Result<Bytes, StorageError>>,
    /// The byte range served.
    pub range: Range<u64>,
    /// Size of the whole blob.
    pub total: u64,
}

/// Bytes per read when streaming a local blob.
const LOCAL_READ_BYTES: usize = 1024 * 1024;

/// Streams `range` of an open local file in [`LOCAL_READ_BYTES`] chunks.
async fn local_file_stream(
    file: std::fs::File,
    range: Range<u64>,
) -> Result<BoxStream<'static, Result<Bytes, StorageError>>, StorageError> {
    use tokio::io::AsyncSeekExt;
    let mut file = tokio::fs::File::from_std(file);
    file.seek(std::io::SeekFrom::Start(range.start)).await?;
    let limited = file.take(range.end - range.start);
    Ok(
        tokio_util::io::ReaderStream::with_capacity(limited, LOCAL_READ_BYTES)
            .map_err(StorageError::from)
            .boxed(),
    )
}

/// Handle to the blob store shared by every task of a process.
#[derive(Clone)]
pub struct BlobStore {
    /// The backing store (local filesystem or S3).
    store: Arc<dyn ObjectStore>,
    /// Root directory when the store is local: lets the worker read inputs in place.
    local_root: Option<PathBuf>,
}

impl std::fmt::Debug for BlobStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BlobStore")
            .field("store", &self.store.to_string())
            .finish()
    }
}

impl BlobStore {
    /// Opens `url`: `s3://bucket[/prefix]` (credentials and endpoint from the usual
    /// `AWS_*` variables) or a local directory, created if missing.
    pub fn open(url: &str) -> Result<Self, StorageError> {
        if let Some(location) = url.strip_prefix("s3://") {
            let store = object_store::aws::AmazonS3Builder::from_env()
                .with_url(url)
                .build()
                .map_err(|e| StorageError::BadUrl(url.into(), e.to_string()))?;
            // The builder takes the bucket from the URL but ignores its path: that is the
            // key prefix every blob goes under.
            let prefix = location
                .split_once('/')
                .map(|(_, p)| p.trim_matches('/'))
                .unwrap_or("");
            let store: Arc<dyn ObjectStore> = if prefix.is_empty() {
                Arc::new(store)
            } else {
                Arc::new(object_store::prefix::PrefixStore::new(store, prefix))
            };
            return Ok(Self {
                store,
                local_root: None,
            });
        }
        let dir = url.strip_prefix("file://").unwrap_or(url);
        // Uploads and MP3s are the tenants' private data: no other local user may list
        // them (files inside are created 0600 under the service's umask).
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)?;
        let root = std::fs::canonicalize(dir)?;
        let store = LocalFileSystem::new_with_prefix(&root)?;
        Ok(Self {
            store: Arc::new(store),
            local_root: Some(root),
        })
    }

    /// Streams `body` into blob `key`, refusing (and discarding the partial blob) once
    /// more than `max_bytes` arrive. Returns the blob's size.
    pub async fn put_stream<S, E>(
        &self,
        key: &str,
        body: S,
        max_bytes: u64,
    ) -> Result<u64, PutStreamError<E>>
    where
        S: Stream<Item = Result<Bytes, E>>,
    {
        let upload = self
            .store
            .put_multipart(&ObjectPath::from(key))
            .await
            .map_err(StorageError::from)?;
        let mut writer = WriteMultipart::new_with_chunk_size(upload, PART_BYTES);
        let mut body = std::pin::pin!(body);
        let mut size = 0u64;
        let outcome = loop {
            let chunk = match body.next().await {
                None => break Ok(()),
                Some(Err(e)) => break Err(PutStreamError::Source(e)),
                Some(Ok(chunk)) => chunk,
            };
            size += chunk.len() as u64;
            if size > max_bytes {
                break Err(PutStreamError::TooLarge(max_bytes));
            }
            if let Err(e) = writer.wait_for_capacity(PARTS_IN_FLIGHT).await {
                break Err(StorageError::from(e).into());
            }
            writer.put(chunk);
        };
        match outcome {
            Ok(()) => {
                writer.finish().await.map_err(StorageError::from)?;
                Ok(size)
            }
            Err(e) => {
                if let Err(abort) = writer.abort().await {
                    tracing::warn!(key, error = %abort, "could not abort a partial upload");
                }
                Err(e)
            }
        }
    }

    /// Copies a local file into blob `key` in bounded parts. Returns the blob's size.
    pub async fn put_file(&self, key: &str, path: &Path) -> Result<u64, StorageError> {
        let mut file = tokio::fs::File::open(path).await?;
        let upload = self.store.put_multipart(&ObjectPath::from(key)).await?;
        let mut writer = WriteMultipart::new_with_chunk_size(upload, PART_BYTES);
        let mut size = 0u64;
        let mut buf = vec![0u8; 256 * 1024];
        loop {
            let n = file.read(&mut buf).await?;
            if n == 0 {
                break;
            }
            size += n as u64;
            writer.wait_for_capacity(PARTS_IN_FLIGHT).await?;
            writer.write(&buf[..n]);
        }
        writer.finish().await?;
        Ok(size)
    }

    /// The blob as a local file: its own path for the local store, else a download into
    /// `scratch`.
    pub async fn fetch_to_file(&self, key: &str, scratch: &Path) -> Result<PathBuf, StorageError> {
        if let Some(root) = &self.local_root {
            let path = root.join(key);
            if tokio::fs::try_exists(&path).await? {
                return Ok(path);
            }
            return Err(StorageError::NotFound(key.into()));
        }
        let result = self
            .store
            .get(&ObjectPath::from(key))
            .await
            .map_err(|e| not_found(key, e))?;
        let mut stream = result.into_stream();
        let mut file = tokio::fs::File::create(scratch).await?;
        while let Some(chunk) = stream.try_next().await? {
            file.write_all(&chunk).await?;
        }
        file.flush().await?;
        Ok(scratch.to_path_buf())
    }

    /// Streams `range` of blob `key` (the whole blob when `None`).
    /// `len` bytes of blob `key` from `offset` (the caller keeps within its size): for
    /// reading a container's box headers without fetching the blob.
    pub async fn read_at(&self, key: &str, offset: u64, len: u64) -> Result<Bytes, StorageError> {
        self.store
            .get_range(&ObjectPath::from(key), offset..offset.saturating_add(len))
            .await
            .map_err(|e| not_found(key, e))
    }

    pub async fn get_range(
        &self,
        key: &str,
        range: Option<GetRange>,
    ) -> Result<BlobRange, StorageError> {
        let options = GetOptions {
            range,
            ..GetOptions::default()
        };
        let result = self
            .store
            .get_opts(&ObjectPath::from(key), options)
            .await
            .map_err(|e| not_found(key, e))?;
        let total = result.meta.size;
        let range = result.range.clone();
        let stream = match result.payload {
            // object_store reads local files 8 KiB per blocking task (~240 MB/s here);
            // bigger reads keep up with nginx's sendfile (bench/RESULTS.md).
            object_store::GetResultPayload::File(file, _) => {
                local_file_stream(file, range.clone()).await?
            }
            object_store::GetResultPayload::Stream(stream) => {
                stream.map_err(StorageError::from).boxed()
            }
        };
        Ok(BlobRange {
            stream,
            range,
            total,
        })
    }

    /// Size of blob `key`.
    pub async fn size(&self, key: &str) -> Result<u64, StorageError> {
        let meta = self
            .store
            .head(&ObjectPath::from(key))
            .await
            .map_err(|e| not_found(key, e))?;
        Ok(meta.size)
    }

    /// Removes blob `key`; a missing blob is not an error.
    pub async fn delete(&self, key: &str) -> Result<(), StorageError> {
        match self.store.delete(&ObjectPath::from(key)).await {
            Ok(()) | Err(object_store::Error::NotFound { .. }) => Ok(()),
            Err(e) => Err(e.into()),
        }
    }

    /// Removes every blob under `prefix` (a folder, e.g. `in/acme`); returns how many.
    pub async fn delete_prefix(&self, prefix: &str) -> Result<u64, StorageError> {
        use futures::StreamExt;
        let prefix = ObjectPath::from(prefix);
        let mut listing = self.store.list(Some(&prefix));
        let mut n = 0;
        while let Some(meta) = listing.next().await {
            match self.store.delete(&meta?.location).await {
                Ok(()) | Err(object_store::Error::NotFound { .. }) => n += 1,
                Err(e) => return Err(e.into()),
            }
        }
        if let Some(root) = &self.local_root {
            // The local store leaves the emptied folders behind.
            let dir = root.join(prefix.as_ref());
            if dir.is_dir() {
                std::fs::remove_dir_all(&dir).ok();
            }
        }
        Ok(n)
    }

    /// Writes and reads back a small probe blob (readiness check).
    pub async fn probe(&self) -> Result<(), StorageError> {
        let key = ObjectPath::from("probe/readyz");
        self.store
            .put(&key, Bytes::from_static(b"ok").into())
            .await?;
        Ok(())
    }
}

fn not_found(key: &str, e: object_store::Error) -> StorageError {
    match e {
        object_store::Error::NotFound { .. } => StorageError::NotFound(key.into()),
        other => other.into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn chunks(n: usize, size: usize) -> impl Stream<Item = Result<Bytes, std::io::Error>> {
        futures::stream::iter((0..n).map(move |i| Ok(Bytes::from(vec![i as u8; size]))))
    }

    #[tokio::test]
    async fn put_get_range_and_delete() {
        let dir = tempfile::tempdir().unwrap();
        let blobs = BlobStore::open(dir.path().to_str().unwrap()).unwrap();
        let size = blobs
            .put_stream("a/b.bin", chunks(3, 1000), 10_000)
            .await
            .unwrap();
        assert_eq!(size, 3000);
        assert_eq!(blobs.size("a/b.bin").await.unwrap(), 3000);
        let got = blobs
            .get_range("a/b.bin", Some(GetRange::Bounded(999..1001)))
            .await
            .unwrap();
        assert_eq!((got.range.clone(), got.total), (999..1001, 3000));
        let bytes: Vec<Bytes> = got.stream.try_collect().await.unwrap();
        assert_eq!(bytes.concat(), vec![0, 1]);
        let path = blobs
            .fetch_to_file("a/b.bin", &dir.path().join("x"))
            .await
            .unwrap();
        assert_eq!(std::fs::metadata(path).unwrap().len(), 3000);
        blobs.delete("a/b.bin").await.unwrap();
        blobs.delete("a/b.bin").await.unwrap();
        assert!(matches!(
            blobs.size("a/b.bin").await,
            Err(StorageError::NotFound(_))
        ));
    }

    #[tokio::test]
    async fn oversize_stream_is_refused_and_discarded() {
        let dir = tempfile::tempdir().unwrap();
        let blobs = BlobStore::open(dir.path().to_str().unwrap()).unwrap();
        let err = blobs
            .put_stream("big", chunks(20, 1000), 5000)
            .await
            .unwrap_err();
        assert!(matches!(err, PutStreamError::TooLarge(5000)));
        assert!(matches!(
            blobs.size("big").await,
            Err(StorageError::NotFound(_))
        ));
    }
}
