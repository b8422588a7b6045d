//! The narrow interface the journal needs from an embedded store.

use parking_lot::Mutex;
use std::collections::BTreeMap;
use std::io;

/// A stored entry: the raw key bytes (8 big-endian bytes when intact) and the value.
pub type RawEntry = (Vec<u8>, Vec<u8>);

/// An ordered key-value log with a separate area for snapshots. Keys are `u64`,
/// stored big-endian so the store's byte order is numeric order. Implementations must
/// make everything appended before a successful [`LogStore::sync`] survive a crash or a
/// power loss (a real fsync); appends after it may be lost (the journal never
/// acknowledges them before a sync in `sync` mode).
///
/// A store also keeps an acknowledged *high-water mark*, outside the log itself: the
/// last key made durable by a sync. Recovery compares it with the last record it can
/// read, so a log that silently lost acknowledged records (damage the store absorbed)
/// is refused instead of served.
///
/// Concurrency the journal relies on and provides: `append` runs under its sequencer
/// (one at a time, keys in order); `sync` runs one at a time (group commit, the batched
/// flusher); `remove_through` runs on the snapshot writer concurrently with both, on
/// keys older than any unsynced record; `read_from`, `remove_from` and `set_mark` run
/// only in recovery and repair, when nothing else does.
pub trait LogStore: Send + Sync + 'static {
    /// Appends one record value under `key` (greater than every key appended before).
    fn append(&self, key: u64, value: &[u8]) -> io::Result<()>;
    /// Makes everything appended so far durable (fsync).
    fn sync(&self) -> io::Result<()>;
    /// Every record entry with a key at or after `from`, in key order. Entries whose
    /// raw key is malformed are returned as they are, for the caller to report.
    fn read_from(&self, from: u64) -> Box<dyn Iterator<Item = io::Result<RawEntry>> + '_>;
    /// Removes every record at or after `key` (cutting a bad tail). Returns how many.
    fn remove_from(&self, key: u64) -> io::Result<u64>;
    /// Removes every record at or before `key` (truncation behind a snapshot).
    fn remove_through(&self, key: u64) -> io::Result<u64>;
    /// Stores a snapshot taken after record `seq`.
    fn put_snapshot(&self, seq: u64, value: &[u8]) -> io::Result<()>;
    /// Every stored snapshot, newest first.
    fn snapshots(&self) -> io::Result<Vec<RawEntry>>;
    /// Removes a snapshot.
    fn remove_snapshot(&self, seq: u64) -> io::Result<()>;
    /// Bytes the store occupies on disk (0 for memory).
    fn disk_bytes(&self) -> io::Result<u64>;
    /// The high-water mark: the last key a sync made durable (`None`: never synced, or
    /// the store keeps none).
    fn mark(&self) -> io::Result<Option<u64>>;
    /// Lowers (or sets) the high-water mark, durably: after a tail cut or a repair.
    fn set_mark(&self, key: u64) -> io::Result<()>;
}

/// An in-memory [`LogStore`] for tests and the simulator: nothing survives the process.
/// It can lose its unsynced tail on demand ([`MemoryStore::crash`]), like a power cut.
#[derive(Default)]
pub struct MemoryStore {
    inner: Mutex<MemoryInner>,
}

#[derive(Default, Clone)]
struct MemoryInner {
    records: BTreeMap<Vec<u8>, Vec<u8>>,
    snapshots: BTreeMap<u64, Vec<u8>>,
    synced: BTreeMap<Vec<u8>, Vec<u8>>,
    synced_snapshots: BTreeMap<u64, Vec<u8>>,
    mark: Option<u64>,
}

impl MemoryStore {
    /// An empty store.
    pub fn new() -> Self {
        Self::default()
    }

    /// Simulates a power cut: everything not synced is gone.
    pub fn crash(&self) {
        let mut g = self.inner.lock();
        g.records = g.synced.clone();
        g.snapshots = g.synced_snapshots.clone();
    }

    /// Loses every record from `key` on without touching the high-water mark: what a
    /// store that absorbed damage to its files does (corruption tests).
    pub fn lose_from(&self, key: u64) {
        self.drop_from(key);
    }

    /// Removes every record from `key` on, synced or not; returns how many.
    fn drop_from(&self, key: u64) -> u64 {
        let mut g = self.inner.lock();
        let doomed: Vec<_> = g
            .records
            .range(key.to_be_bytes().to_vec()..)
            .map(|(k, _)| k.clone())
            .collect();
        for k in &doomed {
            g.records.remove(k);
            g.synced.remove(k);
        }
        doomed.len() as u64
    }

    /// Overwrites a stored record's raw bytes (corruption tests).
    pub fn put_raw(&self, key: Vec<u8>, value: Vec<u8>) {
        let mut g = self.inner.lock();
        g.records.insert(key.clone(), value.clone());
        g.synced.insert(key, value);
    }

    /// A stored record's raw bytes.
    pub fn get_raw(&self, key: u64) -> Option<Vec<u8>> {
        self.inner
            .lock()
            .records
            .get(&key.to_be_bytes()[..])
            .cloned()
    }

    /// Number of records held.
    pub fn len(&self) -> usize {
        self.inner.lock().records.len()
    }

    /// Whether no record is held.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

impl LogStore for MemoryStore {
    fn append(&self, key: u64, value: &[u8]) -> io::Result<()> {
        self.inner
            .lock()
            .records
            .insert(key.to_be_bytes().to_vec(), value.to_vec());
        Ok(())
    }

    fn sync(&self) -> io::Result<()> {
        let mut g = self.inner.lock();
        g.synced = g.records.clone();
        g.synced_snapshots = g.snapshots.clone();
        let last = g
            .records
            .keys()
            .next_back()
            .and_then(|k| <[u8; 8]>::try_from(k.as_slice()).ok())
            .map(u64::from_be_bytes);
        if last > g.mark {
            g.mark = last;
        }
        Ok(())
    }

    fn read_from(&self, from: u64) -> Box<dyn Iterator<Item = io::Result<RawEntry>> + '_> {
        let entries: Vec<_> = self
            .inner
            .lock()
            .records
            .range(from.to_be_bytes().to_vec()..)
            .map(|(k, v)| Ok((k.clone(), v.clone())))
            .collect();
        Box::new(entries.into_iter())
    }

    fn remove_from(&self, key: u64) -> io::Result<u64> {
        Ok(self.drop_from(key))
    }

    fn remove_through(&self, key: u64) -> io::Result<u64> {
        let mut g = self.inner.lock();
        let doomed: Vec<_> = g
            .records
            .range(..=key.to_be_bytes().to_vec())
            .map(|(k, _)| k.clone())
            .collect();
        for k in &doomed {
            g.records.remove(k);
        }
        Ok(doomed.len() as u64)
    }

    fn put_snapshot(&self, seq: u64, value: &[u8]) -> io::Result<()> {
        self.inner.lock().snapshots.insert(seq, value.to_vec());
        Ok(())
    }

    fn snapshots(&self) -> io::Result<Vec<RawEntry>> {
        Ok(self
            .inner
            .lock()
            .snapshots
            .iter()
            .rev()
            .map(|(k, v)| (k.to_be_bytes().to_vec(), v.clone()))
            .collect())
    }

    fn remove_snapshot(&self, seq: u64) -> io::Result<()> {
        self.inner.lock().snapshots.remove(&seq);
        Ok(())
    }

    fn disk_bytes(&self) -> io::Result<u64> {
        Ok(0)
    }

    fn mark(&self) -> io::Result<Option<u64>> {
        Ok(self.inner.lock().mark)
    }

    fn set_mark(&self, key: u64) -> io::Result<()> {
        self.inner.lock().mark = Some(key);
        Ok(())
    }
}

/// A [`LogStore`] that keeps nothing: for the simulator, whose runs are never
/// recovered. Records are still encoded (by the journal); reads find nothing.
#[derive(Default)]
pub struct DiscardStore;

impl DiscardStore {
    /// An empty store.
    pub fn new() -> Self {
        DiscardStore
    }
}

impl LogStore for DiscardStore {
    fn append(&self, _key: u64, _value: &[u8]) -> io::Result<()> {
        Ok(())
    }
    fn sync(&self) -> io::Result<()> {
        Ok(())
    }
    fn read_from(&self, _from: u64) -> Box<dyn Iterator<Item = io::Result<RawEntry>> + '_> {
        Box::new(std::iter::empty())
    }
    fn remove_from(&self, _key: u64) -> io::Result<u64> {
        Ok(0)
    }
    fn remove_through(&self, _key: u64) -> io::Result<u64> {
        Ok(0)
    }
    fn put_snapshot(&self, _seq: u64, _value: &[u8]) -> io::Result<()> {
        Ok(())
    }
    fn snapshots(&self) -> io::Result<Vec<RawEntry>> {
        Ok(Vec::new())
    }
    fn remove_snapshot(&self, _seq: u64) -> io::Result<()> {
        Ok(())
    }
    fn disk_bytes(&self) -> io::Result<u64> {
        Ok(0)
    }
    fn mark(&self) -> io::Result<Option<u64>> {
        Ok(None)
    }
    fn set_mark(&self, _key: u64) -> io::Result<()> {
        Ok(())
    }
}

impl<T: LogStore> LogStore for std::sync::Arc<T> {
    fn append(&self, key: u64, value: &[u8]) -> io::Result<()> {
        (**self).append(key, value)
    }
    fn sync(&self) -> io::Result<()> {
        (**self).sync()
    }
    fn read_from(&self, from: u64) -> Box<dyn Iterator<Item = io::Result<RawEntry>> + '_> {
        (**self).read_from(from)
    }
    fn remove_from(&self, key: u64) -> io::Result<u64> {
        (**self).remove_from(key)
    }
    fn remove_through(&self, key: u64) -> io::Result<u64> {
        (**self).remove_through(key)
    }
    fn put_snapshot(&self, seq: u64, value: &[u8]) -> io::Result<()> {
        (**self).put_snapshot(seq, value)
    }
    fn snapshots(&self) -> io::Result<Vec<RawEntry>> {
        (**self).snapshots()
    }
    fn remove_snapshot(&self, seq: u64) -> io::Result<()> {
        (**self).remove_snapshot(seq)
    }
    fn disk_bytes(&self) -> io::Result<u64> {
        (**self).disk_bytes()
    }
    fn mark(&self) -> io::Result<Option<u64>> {
        (**self).mark()
    }
    fn set_mark(&self, key: u64) -> io::Result<()> {
        (**self).set_mark(key)
    }
}
