//! One safetensors file read tensor by tensor with positioned reads, not memory-mapped: a mapping's
//! pages count as the process's memory for as long as the mapping lives, so mapping a 1 GB file and
//! copying each tensor out of it doubled the peak. Reading each tensor straight into the buffer the
//! model keeps (or packs from) holds one copy at a time.

use std::collections::HashMap;
use std::fs::File;
use std::io::{Read, Seek, SeekFrom};
use std::path::Path;
use std::sync::Mutex;

use candle_core::{DType, Device, Tensor};

/// Where one tensor's bytes are and what they hold.
#[derive(Debug, Clone)]
pub struct Entry {
    /// The safetensors dtype name ("F32", "BF16", ...).
    pub dtype_name: String,
    pub shape: Vec<usize>,
    /// Byte range in the file.
    start: u64,
    len: usize,
}

impl Entry {
    /// The dtype as candle names it, if candle has it.
    pub fn dtype(&self) -> Result<DType, String> {
        Ok(match self.dtype_name.as_str() {
            "F32" => DType::F32,
            "F16" => DType::F16,
            "BF16" => DType::BF16,
            "F64" => DType::F64,
            "I64" => DType::I64,
            "U32" => DType::U32,
            "U8" | "BOOL" => DType::U8,
            // int8 values keep their bits in a U8 tensor (candle has no i8); only the readers of
            // saved int8 weights (`ops::saved_int8`) ask for them, and reinterpret them.
            "I8" => DType::U8,
            other => return Err(format!("dtype {other} is not supported")),
        })
    }
}

#[derive(Debug)]
pub struct SafetensorsFile {
    file: Mutex<File>,
    entries: HashMap<String, Entry>,
}

#[derive(serde::Deserialize)]
struct HeaderEntry {
    dtype: String,
    shape: Vec<usize>,
    data_offsets: (u64, u64),
}

impl SafetensorsFile {
    /// Opens the file and reads its header; errors say what is wrong with it.
    pub fn open(path: &Path) -> Result<Self, String> {
        let mut file = File::open(path).map_err(|e| e.to_string())?;
        let size = file.metadata().map_err(|e| e.to_string())?.len();
        let mut prefix = [0u8; 8];
        file.read_exact(&mut prefix)
            .map_err(|_| format!("not a safetensors file: {size} bytes, no header"))?;
        let header_len = u64::from_le_bytes(prefix);
        if header_len > size.saturating_sub(8) || header_len > 100 << 20 {
            return Err(format!(
                "not a safetensors file: a header of {header_len} bytes in a file of {size}"
            ));
        }
        let mut header = vec![0u8; header_len as usize];
        file.read_exact(&mut header).map_err(|e| e.to_string())?;
        let mut raw: HashMap<String, serde_json::Value> = serde_json::from_slice(&header)
            .map_err(|e| format!("not a safetensors file: bad header ({e})"))?;
        raw.remove("__metadata__");
        let data_start = 8 + header_len;
        let mut entries = HashMap::with_capacity(raw.len());
        for (name, value) in raw {
            let entry: HeaderEntry = serde_json::from_value(value)
                .map_err(|e| format!("tensor `{name}`: bad header entry ({e})"))?;
            let (from, to) = entry.data_offsets;
            if from > to || data_start + to > size {
                return Err(format!(
                    "tensor `{name}`: bytes {from}..{to} lie beyond the end of the file \
                     ({size} bytes): the file is truncated"
                ));
            }
            entries.insert(
                name,
                Entry {
                    dtype_name: entry.dtype,
                    shape: entry.shape,
                    start: data_start + from,
                    len: (to - from) as usize,
                },
            );
        }
        Ok(Self {
            file: Mutex::new(file),
            entries,
        })
    }

    pub fn entries(&self) -> &HashMap<String, Entry> {
        &self.entries
    }

    pub fn entry(&self, name: &str) -> Option<&Entry> {
        self.entries.get(name)
    }

    /// Reads one tensor into a buffer of its own dtype.
    pub fn load(&self, name: &str, device: &Device) -> Result<Tensor, String> {
        let entry = self
            .entries
            .get(name)
            .ok_or_else(|| format!("tensor `{name}` is missing"))?;
        let dtype = entry.dtype()?;
        let elements: usize = entry.shape.iter().product();
        if elements * dtype.size_in_bytes() != entry.len {
            return Err(format!(
                "{} bytes for a {} tensor of shape {:?}",
                entry.len, entry.dtype_name, entry.shape
            ));
        }
        let tensor = match dtype {
            DType::F32 => self.read_typed::<f32>(entry, elements)?,
            DType::BF16 => self.read_typed::<half::bf16>(entry, elements)?,
            DType::F16 => self.read_typed::<half::f16>(entry, elements)?,
            _ => {
                let mut bytes = vec![0u8; entry.len];
                self.read_at(entry.start, &mut bytes)?;
                Tensor::from_raw_buffer(&bytes, dtype, &entry.shape, &Device::Cpu)
                    .map_err(|e| e.to_string())?
            }
        };
        let tensor = tensor
            .reshape(entry.shape.as_slice())
            .map_err(|e| e.to_string())?;
        tensor.to_device(device).map_err(|e| e.to_string())
    }

    /// One tensor's bytes as stored, with its safetensors dtype name and shape.
    pub fn raw(&self, name: &str) -> Result<(String, Vec<usize>, Vec<u8>), String> {
        let entry = self
            .entries
            .get(name)
            .ok_or_else(|| format!("tensor `{name}` is missing"))?;
        let mut bytes = vec![0u8; entry.len];
        self.read_at(entry.start, &mut bytes)?;
        Ok((entry.dtype_name.clone(), entry.shape.clone(), bytes))
    }

    /// Reads the values straight into the vector the tensor will own (little-endian files on a
    /// little-endian machine: the bytes are the values).
    fn read_typed<T: candle_core::WithDType + Default>(
        &self,
        entry: &Entry,
        elements: usize,
    ) -> Result<Tensor, String> {
        let mut values = vec![T::default(); elements];
        // SAFETY: the element types here are plain numbers (f32, bf16, f16) for which every bit
        // pattern is valid, and the byte view covers exactly the vector's initialised elements.
        let bytes = unsafe {
            std::slice::from_raw_parts_mut(
                values.as_mut_ptr().cast::<u8>(),
                elements * std::mem::size_of::<T>(),
            )
        };
        self.read_at(entry.start, bytes)?;
        if cfg!(target_endian = "big") {
            return Err("safetensors are little-endian; this machine is not".into());
        }
        Tensor::from_vec(values, elements, &Device::Cpu).map_err(|e| e.to_string())
    }

    fn read_at(&self, offset: u64, buf: &mut [u8]) -> Result<(), String> {
        let mut file = self
            .file
            .lock()
            .map_err(|_| "a reader panicked".to_string())?;
        file.seek(SeekFrom::Start(offset))
            .and_then(|_| file.read_exact(buf))
            .map_err(|e| e.to_string())
    }
}

/// Writes tensors as a safetensors file whose mode follows the umask, as every other file we write
/// does: the safetensors crate creates its files 0600, so a model trained by one user could not be
/// served by another.
pub fn save(tensors: &HashMap<String, Tensor>, path: &Path) -> crate::Result<()> {
    candle_core::safetensors::save(tensors, path).map_err(|e| crate::Error::Safetensors {
        path: path.to_path_buf(),
        message: e.to_string(),
    })?;
    set_umask_mode(path)
}

/// Tensors given as raw little-endian bytes with their safetensors dtype (`I8` included, which
/// candle's tensors cannot hold), written as a safetensors file as `save` writes one.
pub fn save_raw(tensors: Vec<RawTensor>, path: &Path) -> crate::Result<()> {
    let error = |message: String| crate::Error::Safetensors {
        path: path.to_path_buf(),
        message,
    };
    let named = tensors
        .into_iter()
        .map(|t| (t.name.clone(), t))
        .collect::<Vec<_>>();
    safetensors::serialize_to_file(named, None, path).map_err(|e| error(e.to_string()))?;
    set_umask_mode(path)
}

/// One tensor of `save_raw`.
pub struct RawTensor {
    pub name: String,
    pub dtype: safetensors::Dtype,
    pub shape: Vec<usize>,
    pub bytes: Vec<u8>,
}

impl safetensors::View for RawTensor {
    fn dtype(&self) -> safetensors::Dtype {
        self.dtype
    }

    fn shape(&self) -> &[usize] {
        &self.shape
    }

    fn data(&self) -> std::borrow::Cow<'_, [u8]> {
        std::borrow::Cow::Borrowed(&self.bytes)
    }

    fn data_len(&self) -> usize {
        self.bytes.len()
    }
}

/// Gives a written file the mode of the process's umask (0666 masked).
fn set_umask_mode(path: &Path) -> crate::Result<()> {
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = 0o666 & !process_umask();
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))
            .map_err(|e| crate::Error::io(path, e))?;
    }
    Ok(())
}

/// The process's umask (Linux reports it in /proc/self/status; elsewhere the common 022).
#[cfg(unix)]
fn process_umask() -> u32 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|status| {
            let line = status.lines().find(|l| l.starts_with("Umask:"))?;
            u32::from_str_radix(line.split_whitespace().nth(1)?, 8).ok()
        })
        .unwrap_or(0o022)
}
