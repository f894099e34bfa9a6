//! Buffers whose memory satisfies the alignment that `O_DIRECT` asks for.

use bytes::BytesMut;

/// Returns an empty `BytesMut` whose capacity is exactly `len` bytes and whose memory starts at an
/// address that is a multiple of `align`.
///
/// Files opened with [`OpenOptions::direct`](crate::OpenOptions::direct) need buffers (and offsets
/// and lengths) aligned to the device's logical block size, usually 512 or 4096 bytes. A read into
/// the returned buffer fills its whole capacity, so `len` must itself be a multiple of that block
/// size. Freeze a filled buffer (`BytesMut::freeze`) to write it.
///
/// # Panics
///
/// Panics if `align` is not a power of two.
pub fn aligned_bytes_mut(len: usize, align: usize) -> BytesMut {
    assert!(
        align.is_power_of_two(),
        "alignment {align} is not a power of two"
    );
    // The capacity is split off, never initialized: a buffer filled by a read or a copy is
    // written once, not zeroed first (4 MiB of memset per bulk write otherwise).
    let mut raw = BytesMut::with_capacity(len + align);
    let pad = raw.as_ptr().align_offset(align);
    let mut exact = raw.split_off(pad);
    // Bounds the capacity at `len`, so a read cannot run past it.
    drop(exact.split_off(len));
    debug_assert_eq!(exact.as_ptr() as usize % align, 0);
    debug_assert_eq!(exact.capacity(), len);
    debug_assert!(exact.is_empty());
    exact
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn aligned_buffers_have_exact_capacity_and_alignment() {
        for align in [512, 4096] {
            for len in [0, 512, 4096, 3 * 4096] {
                let buf = aligned_bytes_mut(len, align);
                assert_eq!(buf.len(), 0);
                assert_eq!(buf.capacity(), len);
                assert_eq!(buf.as_ptr() as usize % align, 0);
            }
        }
    }
}
