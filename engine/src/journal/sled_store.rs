//! The default [`LogStore`]: sled 0.34, two trees (`log`, `snapshots`) in one database.

use super::store::{LogStore, RawEntry};
use std::io;
use std::path::{Path, PathBuf};

/// sled behind [`LogStore`].
pub struct SledStore {
    db: sled::Db,
    log: sled::Tree,
    snapshots: sled::Tree,
    path: PathBuf,
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

impl SledStore {
    /// Opens (or creates) the store in `dir/sled`. With `flush_every_ms` sled flushes
    /// and fsyncs in the background at least that often (the `batched` durability
    /// mode); with `None` only [`LogStore::sync`] makes appends durable.
    pub fn open(dir: &Path, flush_every_ms: Option<u64>) -> io::Result<SledStore> {
        let path = dir.join("sled");
        let db = sled::Config::new()
            .path(&path)
            .flush_every_ms(flush_every_ms)
            .mode(sled::Mode::HighThroughput)
            .cache_capacity(256 * 1024 * 1024)
            .open()
            .map_err(|e| io_err("cannot open the sled database", &path, e))?;
        let log = db
            .open_tree("log")
            .map_err(|e| io_err("cannot open the log tree", &path, e))?;
        let snapshots = db
            .open_tree("snapshots")
            .map_err(|e| io_err("cannot open the snapshot tree", &path, e))?;
        Ok(SledStore {
            db,
            log,
            snapshots,
            path,
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
}

impl LogStore for SledStore {
    fn append(&self, key: u64, value: &[u8]) -> io::Result<()> {
        self.log
            .insert(key.to_be_bytes(), value)
            .map_err(self.err("cannot append to the log"))?;
        Ok(())
    }

    fn sync(&self) -> io::Result<()> {
        self.db
            .flush()
            .map_err(self.err("cannot flush the log to disk"))?;
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
        self.remove_range(key.to_be_bytes()..)
    }

    fn remove_through(&self, key: u64) -> io::Result<u64> {
        self.remove_range(..=key.to_be_bytes())
    }

    fn put_snapshot(&self, seq: u64, value: &[u8]) -> io::Result<()> {
        self.snapshots
            .insert(seq.to_be_bytes(), value)
            .map_err(self.err("cannot store a snapshot"))?;
        Ok(())
    }

    fn snapshots(&self) -> io::Result<Vec<RawEntry>> {
        self.snapshots
            .iter()
            .rev()
            .map(|entry| {
                entry
                    .map(|(k, v)| (k.to_vec(), v.to_vec()))
                    .map_err(self.err("cannot read snapshots"))
            })
            .collect()
    }

    fn remove_snapshot(&self, seq: u64) -> io::Result<()> {
        self.snapshots
            .remove(seq.to_be_bytes())
            .map_err(self.err("cannot remove a snapshot"))?;
        Ok(())
    }

    fn disk_bytes(&self) -> io::Result<u64> {
        self.db
            .size_on_disk()
            .map_err(self.err("cannot measure the database"))
    }
}
