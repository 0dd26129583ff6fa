//! A fingerprint of the files a model's scores depend on (config, tokenizer, weights, adapter), so
//! that anything cached under a model (evaluation scores) is recomputed when the model changes, e.g.
//! when a training run writes new weights into the same folder.
//!
//! Per file: its size, its modification time, and a hash of three 1 MiB samples (start, middle, end).
//! The header of a safetensors file is in the first sample and every rewrite changes the time, so a
//! retrained model always changes the fingerprint; the samples also catch a copy that kept the old
//! time. Hashing every byte would cost a second or more per GB on these machines (for a 10 GB LLM,
//! longer than scoring a small evaluation), so it is sampled.

use std::io::{Read, Seek, SeekFrom};
use std::path::Path;

use crate::error::{Error, Result};

const SAMPLE: u64 = 1 << 20;

/// The fingerprint of `paths` (missing files are skipped: an optional file that is absent is part of
/// what the folder is), as a hex string.
pub fn of_files(paths: &[&Path]) -> Result<String> {
    let mut hash = Fnv64::default();
    for path in paths {
        let Ok(meta) = std::fs::metadata(path) else {
            continue;
        };
        hash.write(path.to_string_lossy().as_bytes());
        hash.write(&meta.len().to_le_bytes());
        let modified = meta
            .modified()
            .ok()
            .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
            .map_or(0, |d| d.as_nanos());
        hash.write(&modified.to_le_bytes());
        let io = |e: std::io::Error| Error::Io {
            path: path.to_path_buf(),
            error: e,
        };
        let mut file = std::fs::File::open(path).map_err(io)?;
        let len = meta.len();
        let mut buffer = vec![0u8; SAMPLE as usize];
        for start in [0, len / 2, len.saturating_sub(SAMPLE)] {
            file.seek(SeekFrom::Start(start)).map_err(io)?;
            let n = read_up_to(&mut file, &mut buffer).map_err(io)?;
            hash.write(&buffer[..n]);
        }
    }
    Ok(format!("{:016x}", hash.finish()))
}

fn read_up_to(file: &mut std::fs::File, buffer: &mut [u8]) -> std::io::Result<usize> {
    let mut filled = 0;
    while filled < buffer.len() {
        match file.read(&mut buffer[filled..])? {
            0 => break,
            n => filled += n,
        }
    }
    Ok(filled)
}

/// FNV-1a, 64 bits: stable across builds and platforms (unlike `DefaultHasher`), for fingerprints
/// and cache file names.
pub struct Fnv64(u64);

impl Default for Fnv64 {
    fn default() -> Self {
        Self(0xcbf2_9ce4_8422_2325)
    }
}

impl Fnv64 {
    pub fn write(&mut self, bytes: &[u8]) {
        for &byte in bytes {
            self.0 = (self.0 ^ u64::from(byte)).wrapping_mul(0x0000_0100_0000_01b3);
        }
    }

    pub fn finish(&self) -> u64 {
        self.0
    }

    /// The hash of one text.
    pub fn of(text: &str) -> u64 {
        let mut hash = Self::default();
        hash.write(text.as_bytes());
        hash.finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rewriting_a_file_changes_the_fingerprint() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("model.safetensors");
        std::fs::write(&path, vec![7u8; 3 << 20]).unwrap();
        let before = of_files(&[&path]).unwrap();
        assert_eq!(before, of_files(&[&path]).unwrap(), "stable");
        // Same size, a byte changed in the middle sample, time set back to what it was.
        let modified = std::fs::metadata(&path).unwrap().modified().unwrap();
        let mut bytes = std::fs::read(&path).unwrap();
        bytes[(3 << 20) / 2 + 10] = 8;
        std::fs::write(&path, bytes).unwrap();
        std::fs::File::options()
            .write(true)
            .open(&path)
            .unwrap()
            .set_modified(modified)
            .unwrap();
        assert_ne!(before, of_files(&[&path]).unwrap());
        // A new file in the set changes it too.
        let adapter = dir.path().join("adapter_model.safetensors");
        let without = of_files(&[&path, &adapter]).unwrap();
        std::fs::write(&adapter, b"x").unwrap();
        assert_ne!(without, of_files(&[&path, &adapter]).unwrap());
    }
}
