//! Reading and writing Hugging Face safetensors weights: a single `model.safetensors` or the
//! shards listed in `model.safetensors.index.json`. Every floating dtype is read and converted
//! to f32; files are written as F32 with `{"format": "pt"}` metadata (what transformers expects),
//! atomically (temporary file in the same folder, then rename).

use std::borrow::Cow;
use std::collections::{BTreeSet, HashMap};
use std::path::{Path, PathBuf};

use candle_core::{DType, Device, Tensor};
use safetensors::tensor::{Dtype, View};
use serde_json::Value;

use super::ModelError;

/// Single-file weights name.
pub const WEIGHTS_FILE: &str = "model.safetensors";
/// Sharded weights index name.
pub const INDEX_FILE: &str = "model.safetensors.index.json";

fn io_err(path: &Path) -> impl FnOnce(std::io::Error) -> ModelError + '_ {
    move |source| ModelError::Io { path: path.to_path_buf(), source }
}

/// Every tensor of the folder's weights, as f32 on `device`, keyed by name.
pub fn read_weights(dir: &Path, device: &Device) -> Result<HashMap<String, Tensor>, ModelError> {
    let single = dir.join(WEIGHTS_FILE);
    let index = dir.join(INDEX_FILE);
    let files: Vec<PathBuf> = if single.is_file() {
        vec![single]
    } else if index.is_file() {
        shard_files(&index)?.into_iter().map(|f| dir.join(f)).collect()
    } else {
        return Err(ModelError::Io {
            path: single,
            source: std::io::Error::new(
                std::io::ErrorKind::NotFound,
                format!("neither {WEIGHTS_FILE} nor {INDEX_FILE} found"),
            ),
        });
    };
    let mut out = HashMap::new();
    for file in files {
        read_file(&file, device, &mut out)?;
    }
    Ok(out)
}

/// The distinct shard file names of an index, in order.
fn shard_files(index: &Path) -> Result<BTreeSet<String>, ModelError> {
    let text = std::fs::read_to_string(index).map_err(io_err(index))?;
    let v: Value =
        serde_json::from_str(&text).map_err(|e| ModelError::Config { path: index.into(), message: e.to_string() })?;
    let map = v["weight_map"]
        .as_object()
        .ok_or_else(|| ModelError::Config { path: index.into(), message: "missing `weight_map`".into() })?;
    map.values()
        .map(|f| {
            f.as_str()
                .map(str::to_owned)
                .ok_or_else(|| ModelError::Config { path: index.into(), message: "non-string shard name".into() })
        })
        .collect()
}

fn read_file(path: &Path, device: &Device, out: &mut HashMap<String, Tensor>) -> Result<(), ModelError> {
    let bytes = std::fs::read(path).map_err(io_err(path))?;
    let bad = |message: String| ModelError::Shape { path: path.to_path_buf(), name: String::new(), message };
    let st = safetensors::SafeTensors::deserialize(&bytes).map_err(|e| bad(e.to_string()))?;
    for (name, view) in st.tensors() {
        let dtype = match view.dtype() {
            Dtype::F32 => DType::F32,
            Dtype::F16 => DType::F16,
            Dtype::BF16 => DType::BF16,
            Dtype::F64 => DType::F64,
            other => {
                return Err(ModelError::Shape {
                    path: path.to_path_buf(),
                    name,
                    message: format!("unsupported dtype {other:?}"),
                })
            }
        };
        let t = Tensor::from_raw_buffer(view.data(), dtype, view.shape(), &Device::Cpu)
            .and_then(|t| t.to_dtype(DType::F32))
            .and_then(|t| t.to_device(device))?;
        out.insert(name, t);
    }
    Ok(())
}

/// An f32 tensor's bytes for the safetensors writer.
struct F32View {
    shape: Vec<usize>,
    bytes: Vec<u8>,
}

impl View for &F32View {
    fn dtype(&self) -> Dtype {
        Dtype::F32
    }
    fn shape(&self) -> &[usize] {
        &self.shape
    }
    fn data(&self) -> Cow<'_, [u8]> {
        Cow::Borrowed(&self.bytes)
    }
    fn data_len(&self) -> usize {
        self.bytes.len()
    }
}

/// Writes `tensors` as one F32 `model.safetensors` in `dir`, atomically.
pub fn write_weights(dir: &Path, tensors: &[(String, Tensor)]) -> Result<(), ModelError> {
    let mut views = Vec::with_capacity(tensors.len());
    for (name, t) in tensors {
        let flat: Vec<f32> = t.to_dtype(DType::F32)?.flatten_all()?.to_vec1()?;
        let bytes = flat.iter().flat_map(|v| v.to_le_bytes()).collect();
        views.push((name.clone(), F32View { shape: t.dims().to_vec(), bytes }));
    }
    let metadata = HashMap::from([("format".to_string(), "pt".to_string())]);
    let path = dir.join(WEIGHTS_FILE);
    let data = safetensors::tensor::serialize(views.iter().map(|(n, v)| (n.as_str(), v)), Some(metadata))
        .map_err(|e| ModelError::Shape { path: path.clone(), name: String::new(), message: e.to_string() })?;
    write_atomic(&path, &data)
}

/// Writes `bytes` to `path` through a temporary sibling and a rename, so a reader never sees a
/// half-written file.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<(), ModelError> {
    use std::io::Write;
    let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("file");
    let tmp = path.with_file_name(format!(".{name}.tmp-{}", std::process::id()));
    let write = || -> std::io::Result<()> {
        let mut f = std::fs::File::create(&tmp)?;
        f.write_all(bytes)?;
        f.sync_all()?;
        std::fs::rename(&tmp, path)
    };
    write().map_err(|source| {
        let _ = std::fs::remove_file(&tmp);
        ModelError::Io { path: path.to_path_buf(), source }
    })
}
