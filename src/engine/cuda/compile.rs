//! NVRTC compilation of the embedded kernel sources for the device's architecture, with the
//! PTX cached on disk under the hash of the sources and the architecture, so a worker pays
//! the compile (a few seconds) once per build and GPU kind, not at every start.

use std::path::PathBuf;

use cudarc::nvrtc::{compile_ptx_with_opts, CompileError, CompileOptions, Ptx};
use sha2::{Digest, Sha256};

use super::ops::MATVEC_KERNELS;
use super::CudaError;

/// The kernel sources, in the order NVRTC sees them (one translation unit; headers first).
const SOURCES: [(&str, &str); 6] = [
    ("common.cuh", include_str!("kernels/common.cuh")),
    ("quant.cuh", include_str!("kernels/quant.cuh")),
    ("matvec.cu", include_str!("kernels/matvec.cu")),
    ("attention.cu", include_str!("kernels/attention.cu")),
    ("ops.cu", include_str!("kernels/ops.cu")),
    ("sample.cu", include_str!("kernels/sample.cu")),
];

/// Every kernel the engine launches, by name.
pub const KERNELS: [&str; 14] = [
    MATVEC_KERNELS[0],
    MATVEC_KERNELS[1],
    MATVEC_KERNELS[2],
    MATVEC_KERNELS[3],
    MATVEC_KERNELS[4],
    MATVEC_KERNELS[5],
    "attention",
    "embed",
    "qkv_post",
    "gather_rows",
    "swiglu",
    "noop",
    "argmax_rows",
    "topk_rows",
];

/// The whole translation unit.
pub fn source() -> String {
    let mut s = String::new();
    for (name, text) in SOURCES {
        s.push_str(&format!("// ---- {name}\n{text}\n"));
    }
    s
}

/// `compute_XY` for a compute capability.
pub fn arch_name(major: i32, minor: i32) -> &'static str {
    // NVRTC keeps the string for the life of the options; a handful of distinct values.
    Box::leak(format!("compute_{major}{minor}").into_boxed_str())
}

/// Compiles the sources for `arch` (e.g. `compute_90`), without looking at the cache.
pub fn compile(arch: &'static str) -> Result<Ptx, CudaError> {
    let opts = CompileOptions {
        arch: Some(arch),
        options: vec!["--std=c++17".into()],
        ..Default::default()
    };
    compile_ptx_with_opts(source(), opts).map_err(|e| match e {
        CompileError::CompileError { log, .. } => {
            CudaError::Compile(log.to_string_lossy().into_owned())
        }
        other => CudaError::Compile(format!("{other:?}")),
    })
}

/// The cached PTX for `arch`, compiled and stored first if it is not there. A cache that
/// cannot be written only costs the next start another compile.
pub fn cached_ptx(arch: &'static str) -> Result<Ptx, CudaError> {
    let mut h = Sha256::new();
    h.update(source().as_bytes());
    h.update(arch.as_bytes());
    let hash: String = h
        .finalize()
        .iter()
        .take(8)
        .map(|b| format!("{b:02x}"))
        .collect();
    let path = cache_dir().map(|d| d.join(format!("kernels-{hash}-{arch}.ptx")));
    if let Some(p) = &path {
        if let Ok(text) = std::fs::read_to_string(p) {
            return Ok(Ptx::from_src(text));
        }
    }
    let ptx = compile(arch)?;
    if let Some(p) = &path {
        let tmp = p.with_extension(format!("tmp{}", std::process::id()));
        let written = p
            .parent()
            .map(std::fs::create_dir_all)
            .transpose()
            .and_then(|_| std::fs::write(&tmp, ptx.to_src()))
            .and_then(|_| std::fs::rename(&tmp, p));
        if let Err(e) = written {
            tracing::warn!(
                "could not cache the compiled kernels at {}: {e}",
                p.display()
            );
        }
    }
    Ok(ptx)
}

/// `$SUPERNET_CACHE_DIR`, else `$XDG_CACHE_HOME/supernet`, else `~/.cache/supernet`.
fn cache_dir() -> Option<PathBuf> {
    let env = |k: &str| {
        std::env::var_os(k)
            .filter(|v| !v.is_empty())
            .map(PathBuf::from)
    };
    env("SUPERNET_CACHE_DIR")
        .or_else(|| env("XDG_CACHE_HOME").map(|d| d.join("supernet")))
        .or_else(|| env("HOME").map(|d| d.join(".cache/supernet")))
        .map(|d| d.join("ptx"))
}
