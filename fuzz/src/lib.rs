//! What the fuzz targets share.

/// Splits a fuzz input laid out as a flags byte, a count `n`, `n` chunk sizes (each the byte
/// plus one) and the data: returns the flags, the chunk sizes and the data. `None` for an
/// input shorter than two bytes.
pub fn chunked_input(bytes: &[u8]) -> Option<(u8, Vec<usize>, &[u8])> {
    let (&flags, rest) = bytes.split_first()?;
    let (&n, rest) = rest.split_first()?;
    let (cuts, data) = rest.split_at(usize::from(n).min(rest.len()));
    Some((
        flags,
        cuts.iter().map(|&c| usize::from(c) + 1).collect(),
        data,
    ))
}
