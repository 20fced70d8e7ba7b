//! Where a model's tensors come from ([`WeightSource`]) and Hugging Face safetensors weights:
//! [`MmapSafetensors`] maps a single `model.safetensors` or the shards listed in
//! `model.safetensors.index.json` and converts one tensor at a time to f32, so loading never holds
//! a second copy of a whole file. Files are written as F32 with `{"format": "pt"}` metadata (what
//! transformers expects), atomically (temporary file in the same folder, then rename).

use std::borrow::Cow;
use std::collections::{BTreeSet, HashMap};
use std::path::{Path, PathBuf};

use candle_core::safetensors::MmapedSafetensors;
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

/// Shape and stored element type of one tensor of a [`WeightSource`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TensorInfo {
    /// Dimensions, outermost first, in the Hugging Face layout (`[out, in]` for a linear weight).
    pub shape: Vec<usize>,
    /// The element type as the file names it (`F32`, `BF16`, …);
    /// [`WeightSource::load_f32`] converts from it.
    pub dtype: String,
}

/// The tensors of a model by Hugging Face name (`model.layers.0.self_attn.q_proj.weight`, …),
/// whatever their file format. `CausalLm::from_spec` asks for each parameter's [`TensorInfo`]
/// and loads it only when the shape fits.
pub trait WeightSource {
    /// The file (or index) the tensors come from, named in errors.
    fn origin(&self) -> &Path;
    /// Every tensor name, sorted, without repeats.
    fn names(&self) -> Vec<String>;
    /// Shape and stored type of `name`; `None` when there is no such tensor.
    fn info(&self, name: &str) -> Option<TensorInfo>;
    /// Tensor `name` as f32 on `device`, in the shape [`WeightSource::info`] reports. Errors:
    /// `MissingTensor`, `Shape` for an element type that is not a float, `Candle` when the
    /// device cannot take it.
    fn load_f32(&self, name: &str, device: &Device) -> Result<Tensor, ModelError>;
}

/// Memory-mapped safetensors: one file or the shards of an index. Opening reads only the
/// headers; each [`WeightSource::load_f32`] copies one tensor out of the map.
pub struct MmapSafetensors {
    origin: PathBuf,
    files: MmapedSafetensors,
}

impl MmapSafetensors {
    /// The weights of a Hugging Face folder: `model.safetensors`, else the shards of
    /// `model.safetensors.index.json`. Errors: `Io` when neither exists or a file cannot be
    /// opened, `Config` for a malformed index, `Shape` for an unreadable safetensors header.
    pub fn in_dir(dir: &Path) -> Result<MmapSafetensors, ModelError> {
        let single = dir.join(WEIGHTS_FILE);
        let index = dir.join(INDEX_FILE);
        if single.is_file() {
            MmapSafetensors::open(&single)
        } else if index.is_file() {
            MmapSafetensors::open_index(&index)
        } else {
            Err(ModelError::Io {
                path: single,
                source: std::io::Error::new(
                    std::io::ErrorKind::NotFound,
                    format!("neither {WEIGHTS_FILE} nor {INDEX_FILE} found"),
                ),
            })
        }
    }

    /// One `.safetensors` file. Errors as [`MmapSafetensors::in_dir`].
    pub fn open(file: &Path) -> Result<MmapSafetensors, ModelError> {
        MmapSafetensors::map(file, &[file.to_path_buf()])
    }

    /// The shards an index's `weight_map` names, relative to the index's folder. Errors as
    /// [`MmapSafetensors::in_dir`].
    pub fn open_index(index: &Path) -> Result<MmapSafetensors, ModelError> {
        let dir = index.parent().unwrap_or(Path::new("."));
        let shards: Vec<PathBuf> = shard_files(index)?.iter().map(|f| dir.join(f)).collect();
        MmapSafetensors::map(index, &shards)
    }

    fn map(origin: &Path, files: &[PathBuf]) -> Result<MmapSafetensors, ModelError> {
        // Opened here first so that a missing or unreadable file is an `Io` error naming it.
        for file in files {
            std::fs::File::open(file).map_err(io_err(file))?;
        }
        // SAFETY: a memory map is undefined behaviour if the file changes while mapped. The map
        // lives only while a model is built (each tensor is copied out), and this crate replaces
        // weight files by renaming a new file over them (`write_atomic`), which leaves mapped
        // contents intact; only another program rewriting the file in place could break that.
        let files = unsafe { MmapedSafetensors::multi(files) }.map_err(|e| ModelError::Shape {
            path: origin.to_path_buf(),
            name: String::new(),
            message: e.to_string(),
        })?;
        Ok(MmapSafetensors { origin: origin.to_path_buf(), files })
    }
}

impl WeightSource for MmapSafetensors {
    fn origin(&self) -> &Path {
        &self.origin
    }

    fn names(&self) -> Vec<String> {
        let names: BTreeSet<String> = self.files.tensors().into_iter().map(|(name, _)| name).collect();
        names.into_iter().collect()
    }

    fn info(&self, name: &str) -> Option<TensorInfo> {
        let view = self.files.get(name).ok()?;
        Some(TensorInfo { shape: view.shape().to_vec(), dtype: format!("{:?}", view.dtype()) })
    }

    fn load_f32(&self, name: &str, device: &Device) -> Result<Tensor, ModelError> {
        let missing = || ModelError::MissingTensor { path: self.origin.clone(), name: name.to_string() };
        let info = self.info(name).ok_or_else(missing)?;
        let t = self.files.load(name, device)?;
        match t.dtype() {
            DType::F32 | DType::F16 | DType::BF16 | DType::F64 => Ok(t.to_dtype(DType::F32)?),
            _ => Err(ModelError::Shape {
                path: self.origin.clone(),
                name: name.to_string(),
                message: format!("unsupported dtype {}", info.dtype),
            }),
        }
    }
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
