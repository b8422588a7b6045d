//! The default [`LogStore`]: the log in sled 0.34, snapshots and the acknowledged
//! high-water mark in plain files beside it.
//!
//! ```text
//! <dir>/sled/                 the sled database; tree "log" holds the records
//! <dir>/snapshots/<seq>.snap  one file per snapshot (written to .tmp, fsync'd, renamed)
//! <dir>/ACKED                 the high-water mark: u64 big-endian + CRC-32 of those 8 bytes
//! ```
//!
//! sled 0.34's `flush` writes its buffers with `sync_file_range`, which neither flushes
//! the drive's cache nor the file's metadata; [`LogStore::sync`] therefore follows it
//! with an `fdatasync` of sled's data file. The high-water mark is then written by a
//! small background thread (and fdatasync'd) within a few milliseconds, off the
//! acknowledgement's path: it trails the durable log by at most one round of that
//! thread, and is written for good when the store closes. Snapshots live outside sled
//! so a large value neither sits in sled's cache nor goes through its blob files.

use super::store::{LogStore, RawEntry};
use parking_lot::Mutex;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Read};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

/// How often the background thread writes the high-water mark, at most.
const MARK_EVERY_MS: u64 = 5;

/// sled behind [`LogStore`].
pub struct SledStore {
    db: sled::Db,
    log: sled::Tree,
    /// sled's data file, for the fdatasync sled's own flush does not do.
    data_file: File,
    path: PathBuf,
    snapshot_dir: PathBuf,
    marker: Arc<Marker>,
    mark_thread: Option<std::thread::JoinHandle<()>>,
    /// The last key appended.
    last_appended: AtomicU64,
}

/// The high-water mark file and what is to be written to it.
struct Marker {
    file: File,
    /// (on disk, made durable by a sync and waiting to be written).
    state: Mutex<(Option<u64>, Option<u64>)>,
    stop: std::sync::atomic::AtomicBool,
}

impl Marker {
    fn write(&self, key: u64) -> io::Result<()> {
        let mut raw = [0u8; 12];
        raw[..8].copy_from_slice(&key.to_be_bytes());
        let crc = crc32fast::hash(&raw[..8]);
        raw[8..].copy_from_slice(&crc.to_be_bytes());
        self.file.write_all_at(&raw, 0)?;
        self.file.sync_data()
    }

    /// Writes the pending mark, if it is ahead of the one on disk.
    fn catch_up(&self) -> io::Result<()> {
        let mut state = self.state.lock();
        if let (written, Some(pending)) = *state
            && written.is_none_or(|w| w < pending)
        {
            self.write(pending)?;
            state.0 = Some(pending);
        }
        Ok(())
    }
}

impl Drop for SledStore {
    fn drop(&mut self) {
        self.marker.stop.store(true, Ordering::Release);
        if let Some(thread) = self.mark_thread.take() {
            thread.thread().unpark();
            let _ = thread.join();
        }
        if let Err(e) = self.marker.catch_up() {
            tracing::error!(error = %e, "cannot record the high-water mark on close");
        }
    }
}

fn io_err(what: &str, path: &Path, e: sled::Error) -> io::Error {
    match e {
        sled::Error::Io(inner) => io::Error::new(
            inner.kind(),
            format!("{what} ({}): {inner}", path.display()),
        ),
        other => io::Error::other(format!("{what} ({}): {other}", path.display())),
    }
}

fn with_path(what: &str, path: &Path) -> impl Fn(io::Error) -> io::Error {
    let context = format!("{what} ({})", path.display());
    move |e| io::Error::new(e.kind(), format!("{context}: {e}"))
}

fn sync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(with_path("cannot fsync directory", dir))
}

impl SledStore {
    /// Opens (or creates) the store in `dir`. Appends become durable only through
    /// [`LogStore::sync`]; the journal calls it before acknowledging (`sync` mode) or
    /// from its flusher thread (`batched` mode).
    pub fn open(dir: &Path) -> io::Result<SledStore> {
        let path = dir.join("sled");
        let db = sled::Config::new()
            .path(&path)
            .flush_every_ms(None)
            .mode(sled::Mode::HighThroughput)
            .cache_capacity(256 * 1024 * 1024)
            .open()
            .map_err(|e| io_err("cannot open the sled database", &path, e))?;
        let log = db
            .open_tree("log")
            .map_err(|e| io_err("cannot open the log tree", &path, e))?;
        db.flush()
            .map_err(|e| io_err("cannot flush the sled database", &path, e))?;
        let data_path = path.join("db");
        let data_file = File::open(&data_path).map_err(with_path("cannot open", &data_path))?;
        data_file
            .sync_all()
            .map_err(with_path("cannot fsync", &data_path))?;
        sync_dir(&path)?;
        let snapshot_dir = dir.join("snapshots");
        fs::create_dir_all(&snapshot_dir).map_err(with_path("cannot create", &snapshot_dir))?;
        let mark_path = dir.join("ACKED");
        let mut mark_file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&mark_path)
            .map_err(with_path("cannot open", &mark_path))?;
        let mut raw = Vec::new();
        mark_file
            .read_to_end(&mut raw)
            .map_err(with_path("cannot read", &mark_path))?;
        let mark = match raw.len() {
            0 => None,
            12 => {
                let value = u64::from_be_bytes(raw[..8].try_into().expect("8 bytes"));
                let crc = u32::from_be_bytes(raw[8..].try_into().expect("4 bytes"));
                if crc32fast::hash(&raw[..8]) != crc {
                    return Err(io::Error::new(
                        io::ErrorKind::InvalidData,
                        format!(
                            "the acknowledged high-water mark in {} is damaged (checksum mismatch); restore the data directory from a backup, or accept what the log holds with `omniroute repair --data-dir {} --accept-loss`",
                            mark_path.display(),
                            dir.display()
                        ),
                    ));
                }
                Some(value)
            }
            n => {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidData,
                    format!(
                        "the acknowledged high-water mark in {} is {n} bytes long, expected 12; restore the data directory from a backup, or accept what the log holds with `omniroute repair --data-dir {} --accept-loss`",
                        mark_path.display(),
                        dir.display()
                    ),
                ));
            }
        };
        sync_dir(dir)?;
        let last = log
            .last()
            .map_err(|e| io_err("cannot read the log", &path, e))?
            .and_then(|(k, _)| <[u8; 8]>::try_from(k.as_ref()).ok())
            .map_or(0, u64::from_be_bytes);
        let marker = Arc::new(Marker {
            file: mark_file,
            state: Mutex::new((mark, None)),
            stop: std::sync::atomic::AtomicBool::new(false),
        });
        let thread_marker = marker.clone();
        let mark_thread = std::thread::Builder::new()
            .name("omniroute-mark".into())
            .spawn(move || {
                while !thread_marker.stop.load(Ordering::Acquire) {
                    std::thread::park_timeout(std::time::Duration::from_millis(MARK_EVERY_MS));
                    if let Err(e) = thread_marker.catch_up() {
                        tracing::error!(error = %e, "cannot record the high-water mark");
                    }
                }
            })?;
        Ok(SledStore {
            db,
            log,
            data_file,
            path,
            snapshot_dir,
            marker,
            mark_thread: Some(mark_thread),
            last_appended: AtomicU64::new(last),
        })
    }

    fn err<'a>(&'a self, what: &'a str) -> impl Fn(sled::Error) -> io::Error + 'a {
        move |e| io_err(what, &self.path, e)
    }

    fn remove_range(&self, range: impl std::ops::RangeBounds<[u8; 8]>) -> io::Result<u64> {
        let mut removed = 0;
        let mut batch = sled::Batch::default();
        for entry in self.log.range(range) {
            let (k, _) = entry.map_err(self.err("cannot read the log"))?;
            batch.remove(k);
            removed += 1;
            if removed % 10_000 == 0 {
                self.log
                    .apply_batch(std::mem::take(&mut batch))
                    .map_err(self.err("cannot remove log records"))?;
            }
        }
        self.log
            .apply_batch(batch)
            .map_err(self.err("cannot remove log records"))?;
        Ok(removed)
    }

    fn snapshot_path(&self, seq: u64) -> PathBuf {
        self.snapshot_dir.join(format!("{seq:020}.snap"))
    }
}

impl LogStore for SledStore {
    fn append(&self, key: u64, value: &[u8]) -> io::Result<()> {
        self.log
            .insert(key.to_be_bytes(), value)
            .map_err(self.err("cannot append to the log"))?;
        self.last_appended.fetch_max(key, Ordering::AcqRel);
        Ok(())
    }

    fn sync(&self) -> io::Result<()> {
        let target = self.last_appended.load(Ordering::Acquire);
        self.db
            .flush()
            .map_err(self.err("cannot flush the log to disk"))?;
        self.data_file
            .sync_data()
            .map_err(with_path("cannot fsync the log", &self.path))?;
        let mut state = self.marker.state.lock();
        if state.1.is_none_or(|m| m < target) {
            state.1 = Some(target);
        }
        Ok(())
    }

    fn read_from(&self, from: u64) -> Box<dyn Iterator<Item = io::Result<RawEntry>> + '_> {
        Box::new(self.log.range(from.to_be_bytes()..).map(move |entry| {
            entry
                .map(|(k, v)| (k.to_vec(), v.to_vec()))
                .map_err(self.err("cannot read the log"))
        }))
    }

    fn remove_from(&self, key: u64) -> io::Result<u64> {
        let removed = self.remove_range(key.to_be_bytes()..)?;
        self.last_appended
            .fetch_min(key.saturating_sub(1), Ordering::AcqRel);
        Ok(removed)
    }

    fn remove_through(&self, key: u64) -> io::Result<u64> {
        self.remove_range(..=key.to_be_bytes())
    }

    fn put_snapshot(&self, seq: u64, value: &[u8]) -> io::Result<()> {
        let path = self.snapshot_path(seq);
        let tmp = path.with_extension("tmp");
        let file = File::create(&tmp).map_err(with_path("cannot create", &tmp))?;
        file.write_all_at(value, 0)
            .and_then(|()| file.sync_all())
            .map_err(with_path("cannot write", &tmp))?;
        fs::rename(&tmp, &path).map_err(with_path("cannot rename", &tmp))?;
        sync_dir(&self.snapshot_dir)
    }

    fn snapshots(&self) -> io::Result<Vec<RawEntry>> {
        let mut found = Vec::new();
        let entries = fs::read_dir(&self.snapshot_dir)
            .map_err(with_path("cannot list", &self.snapshot_dir))?;
        for entry in entries {
            let entry = entry.map_err(with_path("cannot list", &self.snapshot_dir))?;
            let name = entry.file_name();
            let Some(seq) = name
                .to_str()
                .and_then(|n| n.strip_suffix(".snap"))
                .and_then(|n| n.parse::<u64>().ok())
            else {
                continue; // a .tmp left by a crash mid-write, or a stranger
            };
            let bytes = fs::read(entry.path()).map_err(with_path("cannot read", &entry.path()))?;
            found.push((seq, bytes));
        }
        found.sort_unstable_by_key(|(seq, _)| std::cmp::Reverse(*seq));
        Ok(found
            .into_iter()
            .map(|(seq, bytes)| (seq.to_be_bytes().to_vec(), bytes))
            .collect())
    }

    fn remove_snapshot(&self, seq: u64) -> io::Result<()> {
        let path = self.snapshot_path(seq);
        fs::remove_file(&path).map_err(with_path("cannot remove", &path))?;
        sync_dir(&self.snapshot_dir)
    }

    fn disk_bytes(&self) -> io::Result<u64> {
        let mut total = self
            .db
            .size_on_disk()
            .map_err(self.err("cannot measure the database"))?;
        for entry in fs::read_dir(&self.snapshot_dir)?.flatten() {
            total += entry.metadata().map_or(0, |m| m.len());
        }
        Ok(total)
    }

    fn mark(&self) -> io::Result<Option<u64>> {
        let state = self.marker.state.lock();
        Ok(state.1.max(state.0))
    }

    fn set_mark(&self, key: u64) -> io::Result<()> {
        let mut state = self.marker.state.lock();
        self.marker
            .write(key)
            .map_err(with_path("cannot record the high-water mark", &self.path))?;
        *state = (Some(key), Some(key));
        Ok(())
    }
}
