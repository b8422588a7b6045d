//! The default [`LogStore`]: the log in sled 0.34, snapshots and the acknowledged
//! high-water mark in plain files beside it.
//!
//! ```text
//! <dir>/sled/                 the sled database; tree "log" holds the records
//! <dir>/snapshots/<seq>.snap  one file per snapshot (written to .tmp, fsync'd, renamed)
//! <dir>/ACKED                 the high-water mark: u64 big-endian + CRC-32 of those 8 bytes
//! ```
//!
//! Records are packed into **blocks**: appends wait in memory until the next
//! [`LogStore::sync`], which writes them as one sled value per up to 32 KiB of records
//! (key: the block's first record) — one sled insert for dozens of records instead of
//! one each, which was half the CPU time of a busy server. A block is framed
//! `[0xB7][CRC-32 of the rest][count: u32][per record: key u64, length u32, bytes]`
//! (big-endian); each record inside keeps its own framing and checksum, so damage is
//! still found record by record. [`LogStore::read_from`] yields records one by one
//! (a block whose frame is damaged comes out as one damaged entry at its first key);
//! values written one per key by older builds are read as they are.
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

/// First byte of a block value (a single record's value starts with its format version).
const BLOCK_TAG: u8 = 0xB7;
/// Records are packed into blocks of about this many bytes (a larger record gets a
/// block of its own); well below the size at which sled moves a value to a blob file.
const BLOCK_BYTES: usize = 32 * 1024;

fn encode_block(records: &[(u64, Vec<u8>)]) -> Vec<u8> {
    let size = 9 + records.iter().map(|(_, v)| 12 + v.len()).sum::<usize>();
    let mut out = Vec::with_capacity(size);
    out.push(BLOCK_TAG);
    out.extend_from_slice(&[0; 4]);
    out.extend_from_slice(&(records.len() as u32).to_be_bytes());
    for (key, value) in records {
        out.extend_from_slice(&key.to_be_bytes());
        out.extend_from_slice(&(value.len() as u32).to_be_bytes());
        out.extend_from_slice(value);
    }
    let crc = crc32fast::hash(&out[5..]);
    out[1..5].copy_from_slice(&crc.to_be_bytes());
    out
}

/// A stored value, decoded.
enum Decoded {
    /// Its records (a block's, or the value itself: one record per key, as older builds
    /// wrote). Each record keeps its own checksum, checked by the journal.
    Records(Vec<RawEntry>),
    /// A block whose framing does not parse: the records before the damage, and the key
    /// where the damage starts (sled writes a value whole, so this is never a torn
    /// write: it is refused, not cut).
    Broken {
        records: Vec<RawEntry>,
        at: u64,
        why: String,
    },
}

impl Decoded {
    fn last_key(&self) -> Option<u64> {
        match self {
            Decoded::Records(r) | Decoded::Broken { records: r, .. } => {
                r.last().and_then(|(k, _)| key_of(k))
            }
        }
    }
}

fn decode_value(key: &[u8], value: &[u8]) -> Decoded {
    if value.first() != Some(&BLOCK_TAG) {
        // A block whose tag byte alone was hit still checks out: its checksum covers
        // everything after the tag (a one-record value matches it by chance 1 in 2^32).
        let block_crc = value
            .get(1..5)
            .map(|c| u32::from_be_bytes(c.try_into().expect("4 bytes")));
        if value.len() >= 9 && block_crc == Some(crc32fast::hash(&value[5..])) {
            tracing::warn!(
                key = key_of(key).unwrap_or(0),
                "a log block's tag byte is damaged; the rest checks out and is read"
            );
        } else {
            return Decoded::Records(vec![(key.to_vec(), value.to_vec())]);
        }
    }
    let block_key = key_of(key).unwrap_or(0);
    let broken = |records: Vec<RawEntry>, why: String| {
        let at = records
            .last()
            .and_then(|(k, _)| key_of(k))
            .map_or(block_key, |k| k + 1);
        Decoded::Broken { records, at, why }
    };
    if value.len() < 9 {
        return broken(
            Vec::new(),
            format!("a log block of {} bytes is too short", value.len()),
        );
    }
    let count = u32::from_be_bytes(value[5..9].try_into().expect("4 bytes")) as usize;
    let mut at = 9;
    let mut out: Vec<RawEntry> = Vec::with_capacity(count.min(value.len() / 12));
    for n in 0..count {
        let header = value.get(at..at + 12);
        let Some(header) = header else {
            return broken(
                out,
                format!("record {n} of {count} runs past the block's end"),
            );
        };
        let k = u64::from_be_bytes(header[..8].try_into().expect("8 bytes"));
        let len = u32::from_be_bytes(header[8..].try_into().expect("4 bytes")) as usize;
        let previous = out.last().and_then(|(k, _)| key_of(k));
        if k < block_key || previous.is_some_and(|p| k <= p) {
            return broken(
                out,
                format!("record {n} of the block has key {k}, out of order"),
            );
        }
        let Some(v) = value.get(at + 12..at + 12 + len) else {
            return broken(out, format!("record {k} runs past the block's end"));
        };
        out.push((k.to_be_bytes().to_vec(), v.to_vec()));
        at += 12 + len;
    }
    if at != value.len() {
        return broken(
            out,
            format!(
                "{} bytes follow the block's {count} records",
                value.len() - at
            ),
        );
    }
    // The frame parses; a checksum mismatch is then in bytes each record's own
    // checksum covers (and the journal checks them), or in the checksum itself.
    Decoded::Records(out)
}

/// The number of records a stored value holds, from its header.
fn count_of(value: &[u8]) -> u64 {
    match value {
        [BLOCK_TAG, _, _, _, _, a, b, c, d, ..] => u64::from(u32::from_be_bytes([*a, *b, *c, *d])),
        _ => 1,
    }
}

/// Opens sled. A previous store on the same directory in this process (the data
/// directory lock keeps other processes out) may still be releasing sled's file lock
/// from its background threads: wait for it, up to two seconds.
fn open_sled(path: &Path) -> sled::Result<sled::Db> {
    let mut tries = 0;
    loop {
        let opened = sled::Config::new()
            .path(path)
            .flush_every_ms(None)
            .mode(sled::Mode::HighThroughput)
            .cache_capacity(256 * 1024 * 1024)
            .open();
        match opened {
            Err(sled::Error::Io(e))
                if tries < 100 && e.to_string().contains("could not acquire lock") =>
            {
                tries += 1;
                std::thread::sleep(std::time::Duration::from_millis(20));
            }
            other => return other,
        }
    }
}

fn key_of(raw: &[u8]) -> Option<u64> {
    <[u8; 8]>::try_from(raw).ok().map(u64::from_be_bytes)
}

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
    /// Blob files already fsync'd, with the length they had then.
    synced_blobs: Mutex<std::collections::HashMap<std::ffi::OsString, u64>>,
    /// Records appended since the last sync, in key order: written as blocks by it.
    pending: Mutex<Vec<(u64, Vec<u8>)>>,
    /// The last key written to sled.
    last_written: AtomicU64,
}

/// The high-water mark file and what is to be written to it.
struct Marker {
    file: File,
    /// (on disk, made durable by a sync and waiting to be written). Held only briefly:
    /// the acknowledgement path takes it.
    state: Mutex<(Option<u64>, Option<u64>)>,
    /// Held while the file is written and fdatasync'd.
    writing: Mutex<()>,
    /// Why the mark read at open is unusable, until it is set again.
    damaged: Mutex<Option<String>>,
    stop: std::sync::atomic::AtomicBool,
}

impl Marker {
    fn write(&self, key: u64) -> io::Result<()> {
        let mut raw = [0u8; 12];
        raw[..8].copy_from_slice(&key.to_be_bytes());
        let crc = crc32fast::hash(&raw[..8]);
        raw[8..].copy_from_slice(&crc.to_be_bytes());
        self.file.write_all_at(&raw, 0)?;
        // A longer file (damaged, or hand-edited) would keep failing its length check.
        self.file.set_len(raw.len() as u64)?;
        self.file.sync_data()
    }

    /// Writes the pending mark, if it is ahead of the one on disk.
    fn catch_up(&self) -> io::Result<()> {
        let _writing = self.writing.lock();
        let pending = match *self.state.lock() {
            (written, Some(pending)) if written.is_none_or(|w| w < pending) => pending,
            _ => return Ok(()),
        };
        if self.damaged.lock().is_some() {
            return Ok(()); // kept as found until a repair sets it
        }
        self.write(pending)?;
        let mut state = self.state.lock();
        state.0 = Some(state.0.map_or(pending, |w| w.max(pending)));
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

/// Removes files a crash left half-written: `<prefix>*<suffix>` in `dir`. sled 0.34
/// writes `snap.<lsn>.generating` while it builds its own snapshot at open and renames
/// it when done; an unfinished one left by a crash makes the next open fail with
/// "Read corrupted data" (sled issue #1527). Our snapshot files are written as `.tmp`
/// and renamed likewise.
fn remove_unfinished(dir: &Path, prefix: &str, suffix: &str) -> io::Result<()> {
    let Ok(entries) = fs::read_dir(dir) else {
        return Ok(());
    };
    for entry in entries.flatten() {
        let name = entry.file_name();
        let Some(name) = name.to_str() else { continue };
        if name.starts_with(prefix) && name.ends_with(suffix) {
            tracing::warn!(file = %entry.path().display(), "removing a file a crash left half-written");
            fs::remove_file(entry.path()).map_err(with_path("cannot remove", &entry.path()))?;
        }
    }
    Ok(())
}

fn sync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(with_path("cannot fsync directory", dir))
}

impl SledStore {
    /// Opens (or creates) the store in `dir`, removing files a crash left half-written —
    /// so hold the directory's [`DataDirLock`](super::DataDirLock) first
    /// ([`Journal::open_dir`](super::Journal::open_dir) does). Appends become durable only through
    /// [`LogStore::sync`]; the journal calls it before acknowledging (`sync` mode) or
    /// from its flusher thread (`batched` mode).
    pub fn open(dir: &Path) -> io::Result<SledStore> {
        let path = dir.join("sled");
        remove_unfinished(&path, "snap.", ".generating")?;
        let db = open_sled(&path).map_err(|e| io_err("cannot open the sled database", &path, e))?;
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
        remove_unfinished(&snapshot_dir, "", ".tmp")?;
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
        let repair = format!(
            "restore the data directory from a backup, or accept what the log holds with `omniroute repair --data-dir {} --accept-loss`",
            dir.display()
        );
        let (mark, damaged) = match raw.len() {
            0 => (None, None),
            12 => {
                let value = u64::from_be_bytes(raw[..8].try_into().expect("8 bytes"));
                let crc = u32::from_be_bytes(raw[8..].try_into().expect("4 bytes"));
                if crc32fast::hash(&raw[..8]) == crc {
                    (Some(value), None)
                } else {
                    let why = format!(
                        "the acknowledged high-water mark in {} is damaged (checksum mismatch); {repair}",
                        mark_path.display()
                    );
                    (None, Some(why))
                }
            }
            n => {
                let why = format!(
                    "the acknowledged high-water mark in {} is {n} bytes long, expected 12; {repair}",
                    mark_path.display()
                );
                (None, Some(why))
            }
        };
        sync_dir(dir)?;
        let last = log
            .last()
            .map_err(|e| io_err("cannot read the log", &path, e))?
            .and_then(|(k, v)| decode_value(&k, &v).last_key().or_else(|| key_of(&k)))
            .unwrap_or(0);
        let marker = Arc::new(Marker {
            file: mark_file,
            state: Mutex::new((mark, None)),
            writing: Mutex::new(()),
            damaged: Mutex::new(damaged),
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
            synced_blobs: Mutex::new(Default::default()),
            pending: Mutex::new(Vec::new()),
            last_written: AtomicU64::new(last),
        })
    }

    fn err<'a>(&'a self, what: &'a str) -> impl Fn(sled::Error) -> io::Error + 'a {
        move |e| io_err(what, &self.path, e)
    }

    /// The stored value holding record `key`, if any: (its sled key, its records).
    fn block_of(&self, key: u64) -> io::Result<Option<(sled::IVec, Decoded)>> {
        match self
            .log
            .range(..=key.to_be_bytes())
            .next_back()
            .transpose()
            .map_err(self.err("cannot read the log"))?
        {
            Some((k, v)) => {
                let decoded = decode_value(&k, &v);
                Ok(Some((k, decoded)))
            }
            None => Ok(None),
        }
    }

    /// `records` (in key order) as blocks, added to `batch`.
    fn blocks_into(batch: &mut sled::Batch, records: &[(u64, Vec<u8>)]) {
        let mut start = 0;
        while start < records.len() {
            let mut end = start;
            let mut bytes = 0;
            while end < records.len()
                && (end == start || bytes + records[end].1.len() + 12 <= BLOCK_BYTES)
            {
                bytes += records[end].1.len() + 12;
                end += 1;
            }
            batch.insert(
                &records[start].0.to_be_bytes(),
                encode_block(&records[start..end]),
            );
            start = end;
        }
    }

    /// Writes `records` (in key order) as blocks, atomically.
    fn write_blocks(&self, records: &[(u64, Vec<u8>)]) -> io::Result<()> {
        if records.is_empty() {
            return Ok(());
        }
        let bytes: usize = records.iter().map(|(_, v)| v.len() + 12).sum();
        if bytes <= BLOCK_BYTES || records.len() == 1 {
            // One block: a plain insert (sled writes a value whole; a batch costs more).
            self.log
                .insert(records[0].0.to_be_bytes(), encode_block(records))
                .map_err(self.err("cannot append to the log"))?;
        } else {
            let mut batch = sled::Batch::default();
            Self::blocks_into(&mut batch, records);
            self.log
                .apply_batch(batch)
                .map_err(self.err("cannot append to the log"))?;
        }
        if let Some((last, _)) = records.last() {
            self.last_written.fetch_max(*last, Ordering::AcqRel);
        }
        Ok(())
    }

    /// Replaces the stored value at `old_key` by blocks of `keep`, atomically (a flush
    /// in between never finds the records gone).
    fn rewrite(&self, old_key: &[u8], keep: Vec<RawEntry>) -> io::Result<()> {
        let keep: Vec<(u64, Vec<u8>)> = keep
            .into_iter()
            .filter_map(|(k, v)| key_of(&k).map(|k| (k, v)))
            .collect();
        let mut batch = sled::Batch::default();
        batch.remove(old_key);
        Self::blocks_into(&mut batch, &keep);
        self.log
            .apply_batch(batch)
            .map_err(self.err("cannot rewrite the log"))
    }

    /// Removes every stored value with a sled key in `range`; returns the records they held.
    fn remove_range(&self, range: impl std::ops::RangeBounds<[u8; 8]>) -> io::Result<u64> {
        let mut removed = 0;
        let mut batch = sled::Batch::default();
        let mut in_batch = 0;
        for entry in self.log.range(range) {
            let (k, v) = entry.map_err(self.err("cannot read the log"))?;
            removed += count_of(&v);
            batch.remove(k);
            in_batch += 1;
            if in_batch % 10_000 == 0 {
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

    /// sled writes values larger than about a quarter of a segment (and leaves that
    /// grow that large) to files in `blobs/` with a plain write and close: fsync every
    /// blob file not synced yet, and the directory when there are new ones.
    fn sync_blobs(&self) -> io::Result<()> {
        let blobs = self.path.join("blobs");
        let Ok(entries) = fs::read_dir(&blobs) else {
            return Ok(());
        };
        let mut synced = self.synced_blobs.lock();
        let mut present = std::collections::HashMap::new();
        let mut fresh = false;
        for entry in entries.flatten() {
            let name = entry.file_name();
            // sled writes a blob in several writes without a rename: one seen while
            // still being written (by a sync that does not cover its record) is synced
            // again once its length has changed.
            let Ok(len) = entry.metadata().map(|m| m.len()) else {
                continue; // removed by sled meanwhile
            };
            if synced.get(&name) != Some(&len) {
                match File::open(entry.path()) {
                    Ok(f) => f
                        .sync_data()
                        .map_err(with_path("cannot fsync", &entry.path()))?,
                    Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
                    Err(e) => return Err(with_path("cannot open", &entry.path())(e)),
                }
                fresh = true;
            }
            present.insert(name, len);
        }
        *synced = present;
        if fresh {
            sync_dir(&blobs)?;
        }
        Ok(())
    }

    fn snapshot_path(&self, seq: u64) -> PathBuf {
        self.snapshot_dir.join(format!("{seq:020}.snap"))
    }
}

impl LogStore for SledStore {
    fn append(&self, key: u64, value: &[u8]) -> io::Result<()> {
        if key <= self.last_written.load(Ordering::Acquire) {
            // Replacing a stored record (repairs and damage drills): rewrite its block.
            let Some((block_key, Decoded::Records(mut records))) = self.block_of(key)? else {
                return Err(io::Error::other(format!(
                    "cannot replace log record {key}: the block holding it is missing or damaged"
                )));
            };
            match records.iter_mut().find(|(k, _)| key_of(k) == Some(key)) {
                Some(entry) => entry.1 = value.to_vec(),
                None => {
                    records.push((key.to_be_bytes().to_vec(), value.to_vec()));
                    records.sort_by(|a, b| a.0.cmp(&b.0));
                }
            }
            return self.rewrite(&block_key, records);
        }
        let mut pending = self.pending.lock();
        match pending.last_mut() {
            Some((last, v)) if *last == key => *v = value.to_vec(),
            _ => pending.push((key, value.to_vec())),
        }
        drop(pending);
        self.last_appended.fetch_max(key, Ordering::AcqRel);
        Ok(())
    }

    fn sync(&self) -> io::Result<()> {
        let target = self.last_appended.load(Ordering::Acquire);
        let records = std::mem::take(&mut *self.pending.lock());
        if let Err(e) = self.write_blocks(&records) {
            // Keep them for the next attempt (the journal fails on this error anyway).
            let mut pending = self.pending.lock();
            let later = std::mem::take(&mut *pending);
            *pending = records;
            pending.extend(later);
            return Err(e);
        }
        self.db
            .flush()
            .map_err(self.err("cannot flush the log to disk"))?;
        self.data_file
            .sync_data()
            .map_err(with_path("cannot fsync the log", &self.path))?;
        self.sync_blobs()?;
        let mut state = self.marker.state.lock();
        if state.1.is_none_or(|m| m < target) {
            state.1 = Some(target);
        }
        Ok(())
    }

    fn read_from(&self, from: u64) -> Box<dyn Iterator<Item = io::Result<RawEntry>> + '_> {
        // Start at the value holding `from` (its key is at or before it).
        let start = match self.log.range(..=from.to_be_bytes()).next_back() {
            Some(Ok((k, _))) => k.to_vec(),
            Some(Err(e)) => {
                return Box::new(std::iter::once(Err(io_err(
                    "cannot read the log",
                    &self.path,
                    e,
                ))));
            }
            None => from.to_be_bytes().to_vec(),
        };
        let pending: Vec<RawEntry> = self
            .pending
            .lock()
            .iter()
            .filter(|(k, _)| *k >= from)
            .map(|(k, v)| (k.to_be_bytes().to_vec(), v.clone()))
            .collect();
        let dir = self.path.parent().unwrap_or(&self.path).to_path_buf();
        let stored = self.log.range(start..).flat_map(move |entry| {
            let out: Vec<io::Result<RawEntry>> = match entry {
                Err(e) => vec![Err(io_err("cannot read the log", &self.path, e))],
                Ok((k, v)) => match decode_value(&k, &v) {
                    Decoded::Records(records) if records.len() > 1 || v.first() == Some(&BLOCK_TAG) || records.first().is_some_and(|(rk, _)| rk.as_slice() != k.as_ref()) => records
                        .into_iter()
                        .filter(|(rk, _)| key_of(rk).is_none_or(|n| n >= from))
                        .map(Ok)
                        .collect(),
                    // One value per record (older builds): one before `from` is not
                    // wanted, unless it is not an intact record (a block whose tag byte
                    // was hit, say) — then it is damage at `from`, never skipped.
                    Decoded::Records(records) => records
                        .into_iter()
                        .filter_map(|(rk, rv)| match key_of(&rk) {
                            Some(n) if n >= from => Some(Ok((rk, rv))),
                            Some(n) if super::codec::decode_record(n, &rv).is_ok() => None,
                            Some(_) => Some(Err(io::Error::new(
                                io::ErrorKind::InvalidData,
                                format!(
                                    "log record {from} is damaged: the stored value holding it is neither an intact record nor a log block. Restore the data directory from a backup, or cut the log there — losing it and every record after it — with: omniroute repair --data-dir {} --cut-at {from}",
                                    dir.display()
                                ),
                            ))),
                            None => Some(Ok((rk, rv))),
                        })
                        .collect(),
                    Decoded::Broken { records, at, why } => {
                        let at = at.max(from);
                        let mut out: Vec<io::Result<RawEntry>> = records
                            .into_iter()
                            .filter(|(rk, _)| key_of(rk).is_some_and(|n| n >= from))
                            .map(Ok)
                            .collect();
                        out.push(Err(io::Error::new(
                            io::ErrorKind::InvalidData,
                            format!(
                                "log record {at} is damaged: {why} — the block holding it does not parse (not a torn write: sled writes a block whole). Restore the data directory from a backup, or cut the log at the damaged record — losing it and every record after it — with: omniroute repair --data-dir {} --cut-at {at}",
                                dir.display()
                            ),
                        )));
                        out
                    }
                },
            };
            out
        });
        Box::new(stored.chain(pending.into_iter().map(Ok)))
    }

    fn remove_from(&self, key: u64) -> io::Result<u64> {
        let mut removed = {
            let mut pending = self.pending.lock();
            let before = pending.len();
            pending.retain(|(k, _)| *k < key);
            (before - pending.len()) as u64
        };
        // A value that starts before `key` keeps its records before it (a damaged block
        // keeps what parses before the damage).
        if let Some((block_key, decoded)) = self.block_of(key)?
            && key_of(&block_key).is_some_and(|b| b < key)
        {
            let (records, broken) = match decoded {
                Decoded::Records(r) => (r, false),
                Decoded::Broken { records, .. } => (records, true),
            };
            let (keep, cut): (Vec<_>, Vec<_>) = records
                .into_iter()
                .partition(|(k, _)| key_of(k).is_some_and(|k| k < key));
            if !cut.is_empty() || broken {
                removed += cut.len() as u64 + u64::from(broken);
                self.rewrite(&block_key, keep)?;
            }
        }
        removed += self.remove_range(key.to_be_bytes()..)?;
        self.last_appended
            .fetch_min(key.saturating_sub(1), Ordering::AcqRel);
        self.last_written
            .fetch_min(key.saturating_sub(1), Ordering::AcqRel);
        Ok(removed)
    }

    fn remove_through(&self, key: u64) -> io::Result<u64> {
        // A block holding `key` and later records keeps the later ones (a damaged one is
        // left for recovery to report).
        let mut removed = 0;
        match self.block_of(key)? {
            Some((block_key, Decoded::Records(records)))
                if records
                    .last()
                    .and_then(|(k, _)| key_of(k))
                    .is_some_and(|last| last > key) =>
            {
                let (cut, keep): (Vec<_>, Vec<_>) = records
                    .into_iter()
                    .partition(|(k, _)| key_of(k).is_some_and(|k| k <= key));
                removed += cut.len() as u64;
                self.rewrite(&block_key, keep)?;
            }
            Some((block_key, Decoded::Broken { .. })) => {
                // Where its records end is unknown: keep it whole.
                let before: [u8; 8] = block_key.as_ref().try_into().unwrap_or([0; 8]);
                return self.remove_range(..before);
            }
            _ => {}
        }
        Ok(removed + self.remove_range(..=key.to_be_bytes())?)
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
        if let Some(why) = &*self.marker.damaged.lock() {
            return Err(io::Error::new(io::ErrorKind::InvalidData, why.clone()));
        }
        let state = self.marker.state.lock();
        Ok(state.1.max(state.0))
    }

    fn set_mark(&self, key: u64) -> io::Result<()> {
        let _writing = self.marker.writing.lock();
        self.marker
            .write(key)
            .map_err(with_path("cannot record the high-water mark", &self.path))?;
        *self.marker.state.lock() = (Some(key), Some(key));
        *self.marker.damaged.lock() = None;
        Ok(())
    }
}
