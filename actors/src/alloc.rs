//! The binaries' global allocator: mimalloc, called the way its plain `malloc` is fast.
//!
//! The `mimalloc` crate hands every allocation to `mi_malloc_aligned(size, align)`; in
//! mimalloc 3 that path costs ≈ 80 instructions an allocation against ≈ 40 for
//! `mi_malloc` (callgrind over a simulated peak: 3 % of all instructions, ≈ 3.5 % of
//! the run's time; docs/BENCHMARKS.md). `mi_malloc`'s blocks follow one another at
//! their size class's stride from a 16-byte-aligned start, and on 64-bit targets every
//! class past 8 bytes is a multiple of 16 bytes: a block is aligned to 16 bytes, or to
//! 8 for the smallest. Layouts aligned to at most 16 bytes whose size is a multiple of
//! the alignment (every Rust type's) take `mi_malloc`, which is more than enough; odd
//! raw layouts and larger alignments go to the aligned calls.
//!
//! ```ignore
//! #[global_allocator]
//! static GLOBAL: omniroute_actors::alloc::MiMalloc = omniroute_actors::alloc::MiMalloc;
//! ```

use libmimalloc_sys as mi;
use std::alloc::{GlobalAlloc, Layout};
use std::ffi::c_void;

/// The largest alignment `mi_malloc` gives (a page's first block's).
const MALLOC_ALIGN: usize = 16;

/// mimalloc as a global allocator (see the module's documentation).
pub struct MiMalloc;

/// Whether `mi_malloc` of `size` bytes is aligned enough for `align` (a power of two).
#[inline]
fn plain(size: usize, align: usize) -> bool {
    align <= MALLOC_ALIGN && size & (align - 1) == 0
}

/// `plain_call(size)` where its alignment suffices for `layout`, else
/// `aligned_call(size, align)`.
///
/// # Safety
/// As for [`GlobalAlloc::alloc`]: `layout`'s size is not zero.
#[inline]
unsafe fn allocate(
    layout: Layout,
    plain_call: unsafe extern "C" fn(usize) -> *mut c_void,
    aligned_call: unsafe extern "C" fn(usize, usize) -> *mut c_void,
) -> *mut u8 {
    // SAFETY: FFI calls with a size and a power-of-two alignment from `layout`.
    unsafe {
        if plain(layout.size(), layout.align()) {
            plain_call(layout.size()) as *mut u8
        } else {
            aligned_call(layout.size(), layout.align()) as *mut u8
        }
    }
}

// SAFETY: every block comes from mimalloc and goes back to it (`mi_free` takes blocks of
// either call); a plain call is used only where its alignment suffices (above).
unsafe impl GlobalAlloc for MiMalloc {
    #[inline]
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        // SAFETY: the caller's contract, passed on.
        unsafe { allocate(layout, mi::mi_malloc, mi::mi_malloc_aligned) }
    }

    #[inline]
    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        // SAFETY: the caller's contract, passed on.
        unsafe { allocate(layout, mi::mi_zalloc, mi::mi_zalloc_aligned) }
    }

    #[inline]
    unsafe fn dealloc(&self, ptr: *mut u8, _layout: Layout) {
        // SAFETY: `ptr` came from this allocator (the caller's contract).
        unsafe { mi::mi_free(ptr as *mut c_void) }
    }

    #[inline]
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        // SAFETY: `ptr` came from this allocator with `layout` (the caller's contract);
        // the new block keeps the layout's alignment either way.
        unsafe {
            if plain(new_size, layout.align()) {
                mi::mi_realloc(ptr as *mut c_void, new_size) as *mut u8
            } else {
                mi::mi_realloc_aligned(ptr as *mut c_void, new_size, layout.align()) as *mut u8
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_calls_only_where_their_alignment_suffices() {
        // Every Rust type: size a multiple of an alignment of at most 16.
        assert!(plain(1, 1) && plain(8, 8) && plain(24, 8) && plain(32, 16));
        // Raw layouts whose size is not a multiple, and larger alignments: aligned calls.
        assert!(!plain(8, 16) && !plain(24, 16) && !plain(64, 32) && !plain(4096, 4096));
    }

    #[test]
    fn a_realloc_across_the_plain_and_aligned_calls_keeps_the_alignment_and_bytes() {
        // The new size decides the call: (32, 16) shrunk to 8 must not come back from a
        // plain 8-byte class; (8, 16) grown to 32 may; and so on.
        let a = MiMalloc;
        for (size, align, new_size) in [
            (32, 16, 8),
            (8, 16, 32),
            (48, 16, 24),
            (24, 16, 48),
            (16, 16, 1),
            (4_096, 16, 8),
            (64, 8, 4),
            (8, 8, 4),
        ] {
            let layout = Layout::from_size_align(size, align).unwrap();
            // Several at once: a later block of a class is where a stride would show.
            // SAFETY: non-zero sizes; each block freed once, with its current layout.
            unsafe {
                let blocks: Vec<*mut u8> = (0..16)
                    .map(|i| {
                        let p = a.alloc(layout);
                        std::ptr::write_bytes(p, 0x40 | i as u8, size);
                        a.realloc(p, layout, new_size)
                    })
                    .collect();
                let new_layout = Layout::from_size_align(new_size, align).unwrap();
                for (i, p) in blocks.into_iter().enumerate() {
                    assert_eq!(p as usize % align, 0, "{size} → {new_size}, align {align}");
                    let kept = size.min(new_size);
                    assert!((0..kept).all(|k| *p.add(k) == 0x40 | i as u8), "kept");
                    a.dealloc(p, new_layout);
                }
            }
        }
    }

    #[test]
    fn every_block_is_aligned_as_asked_zeroed_when_asked_and_keeps_its_bytes() {
        let a = MiMalloc;
        // Several blocks of each layout at once (a size class's later blocks are where
        // a stride would show), written, moved and freed; then zeroed ones, which
        // reuse the freed (dirty) blocks.
        const HELD: usize = 8;
        for align in [1, 2, 4, 8, 16, 32, 64, 4096] {
            for size in (1..=300).chain([511, 512, 1_000, 4_096, 70_000, 1 << 21]) {
                let Ok(layout) = Layout::from_size_align(size, align) else {
                    continue;
                };
                let bigger = Layout::from_size_align(size * 3, align).unwrap();
                let check = |p: *mut u8, what: &str| {
                    assert!(!p.is_null(), "{what}: size {size} align {align}");
                    assert_eq!(p as usize % align, 0, "{what}: size {size} align {align}");
                };
                // The first and last bytes (a block may be megabytes).
                let probe = |n: usize| (0..n.min(64)).chain(n.saturating_sub(64)..n);
                // SAFETY: non-zero sizes; every block is freed once, with its layout.
                unsafe {
                    let blocks: Vec<*mut u8> = (0..HELD)
                        .map(|i| {
                            let p = a.alloc(layout);
                            check(p, "alloc");
                            std::ptr::write_bytes(p, 0x80 | i as u8, size);
                            p
                        })
                        .collect();
                    for (i, p) in blocks.into_iter().enumerate() {
                        let grown = a.realloc(p, layout, size * 3);
                        check(grown, "realloc up");
                        assert!(probe(size).all(|k| *grown.add(k) == 0x80 | i as u8));
                        let back = a.realloc(grown, bigger, size);
                        check(back, "realloc down");
                        assert!(probe(size).all(|k| *back.add(k) == 0x80 | i as u8));
                        a.dealloc(back, layout);
                    }
                    let zeroed: Vec<*mut u8> = (0..HELD)
                        .map(|_| {
                            let z = a.alloc_zeroed(layout);
                            check(z, "alloc_zeroed");
                            assert!(probe(size).all(|k| *z.add(k) == 0), "zeroed");
                            z
                        })
                        .collect();
                    for z in zeroed {
                        a.dealloc(z, layout);
                    }
                }
            }
        }
    }
}
