//! NumPy `.npz` archives (what `np.savez` writes: a zip of `.npy` files,
//! stored uncompressed, with zip64 fields), read in place. Only what
//! dictionaries need: little-endian f32 / f64 / f16 arrays in C order.
//! `np.savez_compressed` (deflate) is refused with a message saying so.
//!
//! Everything is bounds-checked against the bytes given: sizes and shapes
//! from the file never allocate by themselves.

use std::borrow::Cow;

type Res<T> = Result<T, String>;

/// One array of an archive: its shape, NumPy dtype (`f4`, `f8`, `f2`) and bytes.
#[derive(Debug)]
pub struct NpyArray<'a> {
    pub shape: Vec<usize>,
    pub dtype: &'static str,
    pub data: &'a [u8],
}

fn u16_at(b: &[u8], at: usize) -> Option<u16> {
    b.get(at..at + 2).map(|s| u16::from_le_bytes([s[0], s[1]]))
}
fn u32_at(b: &[u8], at: usize) -> Option<u32> {
    b.get(at..at + 4).map(|s| u32::from_le_bytes([s[0], s[1], s[2], s[3]]))
}
fn u64_at(b: &[u8], at: usize) -> Option<u64> {
    b.get(at..at + 8).map(|s| u64::from_le_bytes(s.try_into().expect("8 bytes")))
}

/// The `.npy` entries of a zip archive, by name without `.npy`.
pub fn read_npz<'a>(name: &str, bytes: &'a [u8]) -> Res<Vec<(String, NpyArray<'a>)>> {
    let bad = |what: &str| format!("{name}: not a readable .npz archive ({what})");
    if !bytes.starts_with(b"PK") {
        return Err(bad("no zip signature"));
    }
    // End of central directory: the last "PK\x05\x06" within 64 KiB + 22 of the end.
    let lo = bytes.len().saturating_sub(22 + 65535);
    let eocd = (lo..bytes.len().saturating_sub(21))
        .rev()
        .find(|&i| bytes[i..].starts_with(b"PK\x05\x06"))
        .ok_or_else(|| bad("no end-of-central-directory record"))?;
    let mut n_entries = u16_at(bytes, eocd + 10).ok_or_else(|| bad("truncated"))? as u64;
    let mut cd_offset = u32_at(bytes, eocd + 16).ok_or_else(|| bad("truncated"))? as u64;
    if n_entries == 0xFFFF || cd_offset == 0xFFFF_FFFF {
        // zip64: the locator sits just before the EOCD record.
        let loc = eocd.checked_sub(20).filter(|&l| bytes[l..].starts_with(b"PK\x06\x07")).ok_or_else(|| bad("zip64 locator missing"))?;
        let rec = u64_at(bytes, loc + 8).ok_or_else(|| bad("truncated"))? as usize;
        if !bytes.get(rec..).is_some_and(|s| s.starts_with(b"PK\x06\x06")) {
            return Err(bad("zip64 end record missing"));
        }
        n_entries = u64_at(bytes, rec + 32).ok_or_else(|| bad("truncated"))?;
        cd_offset = u64_at(bytes, rec + 48).ok_or_else(|| bad("truncated"))?;
    }
    if n_entries > 4096 {
        return Err(bad(&format!("{n_entries} entries")));
    }
    let mut at = usize::try_from(cd_offset).map_err(|_| bad("offset"))?;
    let mut out = Vec::new();
    for _ in 0..n_entries {
        if !bytes.get(at..).is_some_and(|s| s.starts_with(b"PK\x01\x02")) {
            return Err(bad("central directory entry missing"));
        }
        let method = u16_at(bytes, at + 10).ok_or_else(|| bad("truncated"))?;
        let mut csize = u32_at(bytes, at + 20).ok_or_else(|| bad("truncated"))? as u64;
        let mut usize_ = u32_at(bytes, at + 24).ok_or_else(|| bad("truncated"))? as u64;
        let name_len = u16_at(bytes, at + 28).ok_or_else(|| bad("truncated"))? as usize;
        let extra_len = u16_at(bytes, at + 30).ok_or_else(|| bad("truncated"))? as usize;
        let comment_len = u16_at(bytes, at + 32).ok_or_else(|| bad("truncated"))? as usize;
        let mut local = u32_at(bytes, at + 42).ok_or_else(|| bad("truncated"))? as u64;
        let fname = bytes.get(at + 46..at + 46 + name_len).ok_or_else(|| bad("truncated"))?;
        let fname: Cow<str> = String::from_utf8_lossy(fname);
        let extra = bytes.get(at + 46 + name_len..at + 46 + name_len + extra_len).ok_or_else(|| bad("truncated"))?;
        // zip64 extended information: the fields that are 0xFFFFFFFF, in order.
        let mut e = 0;
        while e + 4 <= extra.len() {
            let id = u16_at(extra, e).unwrap_or(0);
            let len = u16_at(extra, e + 2).unwrap_or(0) as usize;
            if id == 1 {
                let mut f = e + 4;
                for field in [&mut usize_, &mut csize, &mut local] {
                    if *field == 0xFFFF_FFFF {
                        *field = u64_at(extra, f).ok_or_else(|| bad("truncated zip64 field"))?;
                        f += 8;
                    }
                }
            }
            e += 4 + len;
        }
        at += 46 + name_len + extra_len + comment_len;
        if method != 0 {
            return Err(format!(
                "{name}: entry '{fname}' is compressed (zip method {method}; np.savez_compressed); \
                 only np.savez archives (stored) are read: re-save with np.savez or as safetensors"
            ));
        }
        if csize != usize_ {
            return Err(bad(&format!("entry '{fname}' sizes differ")));
        }
        let local = usize::try_from(local).map_err(|_| bad("offset"))?;
        if !bytes.get(local..).is_some_and(|s| s.starts_with(b"PK\x03\x04")) {
            return Err(bad(&format!("local header of '{fname}' missing")));
        }
        let lname = u16_at(bytes, local + 26).ok_or_else(|| bad("truncated"))? as usize;
        let lextra = u16_at(bytes, local + 28).ok_or_else(|| bad("truncated"))? as usize;
        let start = local + 30 + lname + lextra;
        let len = usize::try_from(csize).map_err(|_| bad("size"))?;
        let data = start.checked_add(len).and_then(|end| bytes.get(start..end)).ok_or_else(|| bad(&format!("entry '{fname}' is truncated")))?;
        let Some(key) = fname.strip_suffix(".npy") else {
            return Err(format!("{name}: entry '{fname}' is not a .npy array"));
        };
        let arr = read_npy(&format!("{name}: '{fname}'"), data)?;
        out.push((key.to_owned(), arr));
    }
    Ok(out)
}

/// One `.npy` file: header dict, then the raw data (checked to be exactly
/// the shape's size).
pub fn read_npy<'a>(name: &str, b: &'a [u8]) -> Res<NpyArray<'a>> {
    if !b.starts_with(b"\x93NUMPY") || b.len() < 10 {
        return Err(format!("{name}: not a .npy array (no magic)"));
    }
    let (hlen, hstart) = match b[6] {
        1 => (u16_at(b, 8).unwrap_or(0) as usize, 10usize),
        2 | 3 => (u32_at(b, 8).ok_or_else(|| format!("{name}: truncated header"))? as usize, 12),
        v => return Err(format!("{name}: .npy version {v} is not supported")),
    };
    let header = b.get(hstart..hstart.saturating_add(hlen)).ok_or_else(|| format!("{name}: truncated header"))?;
    let header = std::str::from_utf8(header).map_err(|_| format!("{name}: header is not text"))?;
    let field = |key: &str| -> Res<&str> {
        let pat = format!("'{key}':");
        let i = header.find(&pat).ok_or_else(|| format!("{name}: header has no '{key}'"))?;
        Ok(header[i + pat.len()..].trim_start())
    };
    let descr = field("descr")?;
    let descr = descr.strip_prefix('\'').and_then(|d| d.split('\'').next()).ok_or_else(|| format!("{name}: bad 'descr'"))?;
    let (dtype, size) = match descr {
        "<f4" => ("f4", 4),
        "<f8" => ("f8", 8),
        "<f2" => ("f2", 2),
        other => return Err(format!("{name}: dtype '{other}' is not supported (little-endian float16/32/64: <f2, <f4, <f8)")),
    };
    if !field("fortran_order")?.starts_with("False") {
        return Err(format!("{name}: Fortran-order arrays are not supported"));
    }
    let shape_s = field("shape")?;
    let shape_s = shape_s.strip_prefix('(').and_then(|s| s.split(')').next()).ok_or_else(|| format!("{name}: bad 'shape'"))?;
    let shape = shape_s
        .split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(|s| s.trim_end_matches('L').parse::<usize>().map_err(|_| format!("{name}: bad shape entry '{s}'")))
        .collect::<Res<Vec<usize>>>()?;
    if shape.len() > 4 {
        return Err(format!("{name}: {} dimensions", shape.len()));
    }
    let n = shape.iter().try_fold(1usize, |a, &d| a.checked_mul(d)).and_then(|n| n.checked_mul(size));
    let data = &b[hstart + hlen..];
    if n != Some(data.len()) {
        return Err(format!("{name}: shape {shape:?} ({descr}) needs {} bytes but the array has {}", n.map_or("too many".into(), |n| n.to_string()), data.len()));
    }
    Ok(NpyArray { shape, dtype, data })
}

/// Writes a `.npz` the way `np.savez` does (stored entries), for tests and seeds.
pub fn write_npz(arrays: &[(&str, &[usize], &[f32])]) -> Vec<u8> {
    let mut out = Vec::new();
    let mut central = Vec::new();
    for (key, shape, values) in arrays {
        let dims: Vec<String> = shape.iter().map(|d| d.to_string()).collect();
        let shape_s = if dims.len() == 1 { format!("({},)", dims[0]) } else { format!("({})", dims.join(", ")) };
        let mut header = format!("{{'descr': '<f4', 'fortran_order': False, 'shape': {shape_s}, }}");
        while (10 + header.len() + 1) % 64 != 0 {
            header.push(' ');
        }
        header.push('\n');
        let mut npy = b"\x93NUMPY\x01\x00".to_vec();
        npy.extend_from_slice(&(header.len() as u16).to_le_bytes());
        npy.extend_from_slice(header.as_bytes());
        for v in *values {
            npy.extend_from_slice(&v.to_le_bytes());
        }
        let fname = format!("{key}.npy");
        let offset = out.len() as u32;
        let crc = crc32(&npy);
        let size = npy.len() as u32;
        out.extend_from_slice(b"PK\x03\x04");
        out.extend_from_slice(&[20, 0, 0, 0, 0, 0, 0, 0, 0x21, 0]);
        out.extend_from_slice(&crc.to_le_bytes());
        out.extend_from_slice(&size.to_le_bytes());
        out.extend_from_slice(&size.to_le_bytes());
        out.extend_from_slice(&(fname.len() as u16).to_le_bytes());
        out.extend_from_slice(&0u16.to_le_bytes());
        out.extend_from_slice(fname.as_bytes());
        out.extend_from_slice(&npy);
        central.extend_from_slice(b"PK\x01\x02");
        central.extend_from_slice(&[20, 0, 20, 0, 0, 0, 0, 0, 0, 0, 0x21, 0]);
        central.extend_from_slice(&crc.to_le_bytes());
        central.extend_from_slice(&size.to_le_bytes());
        central.extend_from_slice(&size.to_le_bytes());
        central.extend_from_slice(&(fname.len() as u16).to_le_bytes());
        central.extend_from_slice(&[0; 12]);
        central.extend_from_slice(&offset.to_le_bytes());
        central.extend_from_slice(fname.as_bytes());
    }
    let cd_offset = out.len() as u32;
    out.extend_from_slice(&central);
    out.extend_from_slice(b"PK\x05\x06\0\0\0\0");
    out.extend_from_slice(&(arrays.len() as u16).to_le_bytes());
    out.extend_from_slice(&(arrays.len() as u16).to_le_bytes());
    out.extend_from_slice(&(central.len() as u32).to_le_bytes());
    out.extend_from_slice(&cd_offset.to_le_bytes());
    out.extend_from_slice(&0u16.to_le_bytes());
    out
}

fn crc32(data: &[u8]) -> u32 {
    let mut c = 0xFFFF_FFFFu32;
    for &b in data {
        c ^= b as u32;
        for _ in 0..8 {
            c = if c & 1 != 0 { 0xEDB8_8320 ^ (c >> 1) } else { c >> 1 };
        }
    }
    !c
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn npz_round_trip_and_refusals() {
        let bytes = write_npz(&[("W_enc", &[2, 3], &[1.0, 2.0, 3.0, 4.0, 5.0, 6.0]), ("b_dec", &[3], &[0.5, 0.0, -1.0])]);
        let arrays = read_npz("p.npz", &bytes).unwrap();
        assert_eq!(arrays.len(), 2);
        assert_eq!(arrays[0].0, "W_enc");
        assert_eq!(arrays[0].1.shape, vec![2, 3]);
        assert_eq!(arrays[1].1.shape, vec![3]);
        assert_eq!(arrays[1].1.data.len(), 12);
        // Truncations anywhere give errors, never panics.
        for cut in 0..bytes.len() {
            let _ = read_npz("p.npz", &bytes[..cut]);
        }
        assert!(read_npz("p.npz", b"hello").unwrap_err().contains("p.npz"));
        let mut compressed = bytes.clone();
        let cd = compressed.windows(4).position(|w| w == b"PK\x01\x02").unwrap();
        compressed[cd + 10] = 8;
        assert!(read_npz("p.npz", &compressed).unwrap_err().contains("np.savez_compressed"));
        let h = "{'descr': '>f4', 'fortran_order': False, 'shape': (1,), }\n";
        let mut npy = b"\x93NUMPY\x01\x00".to_vec();
        npy.extend_from_slice(&(h.len() as u16).to_le_bytes());
        npy.extend_from_slice(h.as_bytes());
        npy.extend_from_slice(&[0; 4]);
        let npy = &npy[..];
        assert!(read_npy("a", npy).unwrap_err().contains(">f4"));
    }
}
