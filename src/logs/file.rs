//! Logs in a directory (`file://DIR`), e.g. a shared file system mounted on every instance.
//! A log is replaced whole: written to a temporary file beside it and renamed, so a reader
//! never sees a half-written copy.

use std::io::SeekFrom;
use std::path::{Path, PathBuf};

use tokio::io::{AsyncReadExt, AsyncSeekExt};

use super::{LogEnd, LogError};

#[derive(Debug, Clone)]
pub(crate) struct FileLogs {
    dir: PathBuf,
}

impl FileLogs {
    pub(crate) fn new(dir: PathBuf) -> Self {
        FileLogs { dir }
    }

    /// Copies the first `len(path)` bytes of `path` (none when it is missing) to `key`.
    pub(crate) async fn put_file(&self, key: &str, path: &Path) -> Result<u64, LogError> {
        let dest = self.dir.join(key);
        let io = |operation, path: &Path| {
            let path = path.to_path_buf();
            move |source| LogError::Io {
                operation,
                path,
                source,
            }
        };
        if let Some(parent) = dest.parent() {
            tokio::fs::create_dir_all(parent)
                .await
                .map_err(io("create the log directory", parent))?;
        }
        let data = super::read_prefix(path, None)
            .await
            .map_err(io("read the task log", path))?;
        let tmp = dest.with_extension(format!("log.{}.tmp", uuid::Uuid::new_v4().simple()));
        tokio::fs::write(&tmp, &data)
            .await
            .map_err(io("write the log copy", &tmp))?;
        if let Err(e) = tokio::fs::rename(&tmp, &dest).await {
            let _ = tokio::fs::remove_file(&tmp).await;
            return Err(io("store the log as", &dest)(e));
        }
        Ok(data.len() as u64)
    }

    pub(crate) async fn read_from(
        &self,
        key: &str,
        offset: u64,
    ) -> Result<Option<Vec<u8>>, LogError> {
        let end = self.read_at(key, |_| offset).await?;
        Ok(end.map(|e| e.bytes))
    }

    /// The last `max` bytes of `key` and its whole length.
    pub(crate) async fn read_last(&self, key: &str, max: u64) -> Result<Option<LogEnd>, LogError> {
        self.read_at(key, |len| len.saturating_sub(max)).await
    }

    /// `key` from the offset `start` gives for its length, to its end; `None` when missing.
    async fn read_at(
        &self,
        key: &str,
        start: impl FnOnce(u64) -> u64,
    ) -> Result<Option<LogEnd>, LogError> {
        let path = self.dir.join(key);
        let err = |source| LogError::Io {
            operation: "read the log",
            path: path.clone(),
            source,
        };
        let mut file = match tokio::fs::File::open(&path).await {
            Ok(f) => f,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(err(e)),
        };
        let start = start(file.metadata().await.map_err(err)?.len());
        file.seek(SeekFrom::Start(start)).await.map_err(err)?;
        let mut bytes = Vec::new();
        file.read_to_end(&mut bytes).await.map_err(err)?;
        let len = start + bytes.len() as u64;
        Ok(Some(LogEnd { bytes, len }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn stores_replaces_and_reads_from_an_offset() {
        let dir = tempfile::tempdir().unwrap();
        let logs = FileLogs::new(dir.path().join("store"));
        let src = dir.path().join("task.log");
        assert_eq!(logs.read_from("s/i/1.log", 0).await.unwrap(), None);
        // A task that printed nothing has no local file: its log is empty.
        assert_eq!(logs.put_file("s/i/1.log", &src).await.unwrap(), 0);
        assert_eq!(
            logs.read_from("s/i/1.log", 0).await.unwrap(),
            Some(Vec::new())
        );
        std::fs::write(&src, "one\ntwo\n").unwrap();
        assert_eq!(logs.put_file("s/i/1.log", &src).await.unwrap(), 8);
        assert_eq!(
            logs.read_from("s/i/1.log", 4).await.unwrap().unwrap(),
            b"two\n"
        );
        let leftovers: Vec<_> = std::fs::read_dir(dir.path().join("store/s/i"))
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(leftovers, vec![std::ffi::OsString::from("1.log")]);
        let end = logs.read_last("s/i/1.log", 3).await.unwrap().unwrap();
        assert_eq!((end.bytes.as_slice(), end.len), (&b"wo\n"[..], 8));
        let all = logs.read_last("s/i/1.log", 100).await.unwrap().unwrap();
        assert_eq!((all.bytes.as_slice(), all.len), (&b"one\ntwo\n"[..], 8));
        assert_eq!(logs.read_last("s/i/2.log", 3).await.unwrap(), None);
    }
}
