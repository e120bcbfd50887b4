//! CPU twin of `shaders/gather.wgsl`: `dst[r, :] = src[index[r], :]`, run for each table of a
//! batch (features, labels) on its slice of the index.

/// Reference row gather; rows whose index is out of range become zeros.
pub fn gather_rows<T: Copy + Default>(src: &[T], index: &[u32], dst: &mut [T], n: usize, d: usize) {
    for (r, &i) in index.iter().enumerate() {
        let out = &mut dst[r * d..(r + 1) * d];
        if (i as usize) < n {
            out.copy_from_slice(&src[i as usize * d..(i as usize + 1) * d]);
        } else {
            out.fill(T::default());
        }
    }
}
