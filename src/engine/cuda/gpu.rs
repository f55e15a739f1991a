//! One CUDA device as the engine uses it: the context, one stream, the compiled kernels,
//! device buffers, copies, timing events and graph capture, over cudarc's driver API.
//!
//! cudarc loads the driver and NVRTC dynamically and panics when they are missing, so
//! [`probe`] checks for both (and for a device) first; nothing here is touched on a machine
//! without CUDA.

use std::collections::HashMap;
use std::ffi::c_void;
use std::sync::{Arc, OnceLock};

use cudarc::driver::{
    result, sys, CudaContext, CudaEvent, CudaFunction, CudaGraph, CudaStream, DriverError,
};

use super::compile::{arch_name, cached_ptx, KERNELS};
use super::CudaError;

impl From<DriverError> for CudaError {
    fn from(e: DriverError) -> Self {
        CudaError::Driver(e.to_string())
    }
}

/// Loads CUDA libraries from the directories in `SUPERNET_CUDA_LIB_DIRS` (colon-separated)
/// by full path, before cudarc looks them up by name: the dynamic loader then finds the
/// already loaded library by its soname. This lets a worker use a pip-installed NVRTC
/// (`nvidia-cuda-nvrtc`) without `LD_LIBRARY_PATH`.
pub fn preload_libraries() {
    static LOADED: OnceLock<Vec<libloading::Library>> = OnceLock::new();
    LOADED.get_or_init(|| {
        let dirs = std::env::var("SUPERNET_CUDA_LIB_DIRS").unwrap_or_default();
        let mut libs = Vec::new();
        for dir in dirs.split(':').filter(|d| !d.is_empty()) {
            // NVRTC opens its builtins library by soname too, so that goes first.
            let mut names: Vec<String> = std::fs::read_dir(dir)
                .into_iter()
                .flatten()
                .filter_map(|e| e.ok()?.file_name().into_string().ok())
                .filter(|n| n.starts_with("libnvrtc-builtins.so.") && !n.contains(".alt."))
                .collect();
            names.extend(["libcuda.so.1", "libnvrtc.so.13", "libnvrtc.so.12"].map(String::from));
            for name in names {
                let path = std::path::Path::new(dir).join(name);
                if path.exists() {
                    // SAFETY: these are the CUDA libraries cudarc would load by name anyway.
                    match unsafe { libloading::Library::new(&path) } {
                        Ok(l) => libs.push(l),
                        Err(e) => tracing::warn!("could not load {}: {e}", path.display()),
                    }
                }
            }
        }
        libs
    });
}

/// Whether NVRTC can be loaded (all the kernel compile needs; no device required).
pub fn nvrtc_present() -> bool {
    preload_libraries();
    // SAFETY: only tries to open the library.
    unsafe { cudarc::nvrtc::sys::is_culib_present() }
}

/// Checks, without panicking, that a CUDA driver, NVRTC and at least one device are there.
pub fn probe() -> Result<(), CudaError> {
    preload_libraries();
    // SAFETY: only tries to open the library.
    if !unsafe { sys::is_culib_present() } {
        return Err(CudaError::Unavailable(
            "no CUDA driver library (libcuda.so.1) found".into(),
        ));
    }
    if !nvrtc_present() {
        return Err(CudaError::Unavailable("no NVRTC library (libnvrtc.so.13 or .12) found; set SUPERNET_CUDA_LIB_DIRS or LD_LIBRARY_PATH".into()));
    }
    match std::panic::catch_unwind(CudaContext::device_count) {
        Ok(Ok(n)) if n > 0 => Ok(()),
        Ok(Ok(_)) => Err(CudaError::Unavailable(
            "the CUDA driver sees no device".into(),
        )),
        Ok(Err(e)) => Err(CudaError::Unavailable(format!(
            "the CUDA driver failed to start: {e}"
        ))),
        Err(_) => Err(CudaError::Unavailable(
            "the CUDA driver panicked while counting devices".into(),
        )),
    }
}

/// A kernel argument: device pointers, 32-bit ints and floats, 64-bit ints.
#[derive(Clone, Copy, Debug)]
pub enum Arg {
    P(u64),
    I(i32),
    F(f32),
    L(i64),
}

/// Device memory, freed on drop.
pub struct DevBuf {
    ctx: Arc<CudaContext>,
    pub ptr: u64,
    pub bytes: usize,
}

impl DevBuf {
    /// The address `off` bytes in.
    pub fn at(&self, off: usize) -> u64 {
        debug_assert!(off <= self.bytes);
        self.ptr + off as u64
    }
}

impl Drop for DevBuf {
    fn drop(&mut self) {
        if self.bytes > 0 && self.ctx.bind_to_thread().is_ok() {
            // SAFETY: allocated by `Gpu::alloc`, freed once, and no kernel is in flight
            // (every user synchronizes before dropping its buffers).
            let _ = unsafe { result::free_sync(self.ptr) };
        }
    }
}

pub struct Gpu {
    ctx: Arc<CudaContext>,
    stream: Arc<CudaStream>,
    fns: HashMap<&'static str, CudaFunction>,
    pub name: String,
    pub sms: usize,
    pub capability: (i32, i32),
}

impl Gpu {
    /// Opens device `ordinal`, compiles (or loads the cached) kernels for it.
    pub fn open(ordinal: usize) -> Result<Self, CudaError> {
        probe()?;
        let ctx = CudaContext::new(ordinal)?;
        // One stream, no cross-stream events: nothing for cudarc to track, and graph capture
        // must not wait on events recorded outside it.
        // SAFETY: all work goes to the one stream below.
        unsafe { ctx.disable_event_tracking() };
        let stream = ctx.new_stream()?;
        let capability = ctx.compute_capability()?;
        let ptx = cached_ptx(arch_name(capability.0, capability.1))?;
        let module = ctx.load_module(ptx)?;
        let mut fns = HashMap::new();
        for name in KERNELS {
            fns.insert(name, module.load_function(name)?);
        }
        let sms = ctx
            .attribute(sys::CUdevice_attribute::CU_DEVICE_ATTRIBUTE_MULTIPROCESSOR_COUNT)?
            as usize;
        let name = ctx.name()?;
        Ok(Self {
            ctx,
            stream,
            fns,
            name,
            sms,
            capability,
        })
    }

    pub fn describe(&self) -> String {
        format!(
            "cuda ({}, sm_{}{}, {} SMs)",
            self.name, self.capability.0, self.capability.1, self.sms
        )
    }

    /// Lets kernel `name` use up to `bytes` of dynamic shared memory.
    pub fn allow_shared(&self, name: &str, bytes: usize) -> Result<(), CudaError> {
        let f = self.function(name)?;
        f.set_attribute(
            sys::CUfunction_attribute::CU_FUNC_ATTRIBUTE_MAX_DYNAMIC_SHARED_SIZE_BYTES,
            bytes as i32,
        )?;
        Ok(())
    }

    fn function(&self, name: &str) -> Result<&CudaFunction, CudaError> {
        self.fns
            .get(name)
            .ok_or_else(|| CudaError::Driver(format!("no kernel named {name}")))
    }

    /// `bytes` of device memory, zeroed.
    pub fn alloc(&self, bytes: usize) -> Result<DevBuf, CudaError> {
        self.ctx.bind_to_thread()?;
        let bytes = bytes.max(1);
        // SAFETY: a plain allocation, zeroed before use.
        let ptr = unsafe { result::malloc_sync(bytes)? };
        let buf = DevBuf {
            ctx: Arc::clone(&self.ctx),
            ptr,
            bytes,
        };
        self.fill(&buf, 0)?;
        Ok(buf)
    }

    /// A device copy of `data`.
    pub fn upload<T: Copy>(&self, data: &[T]) -> Result<DevBuf, CudaError> {
        let buf = self.alloc(std::mem::size_of_val(data))?;
        self.write(buf.ptr, data)?;
        Ok(buf)
    }

    /// Copies `data` to device address `dst`.
    pub fn write<T: Copy>(&self, dst: u64, data: &[T]) -> Result<(), CudaError> {
        if data.is_empty() {
            return Ok(());
        }
        self.ctx.bind_to_thread()?;
        // SAFETY: callers pass an address inside a live buffer with room for `data`; a
        // pageable source is copied before the call returns.
        unsafe { result::memcpy_htod_async(dst, data, self.stream.cu_stream())? };
        Ok(())
    }

    /// `n` values from device address `src`, after everything queued before.
    pub fn read<T: Copy + Default>(&self, src: u64, n: usize) -> Result<Vec<T>, CudaError> {
        let mut out = vec![T::default(); n];
        if n > 0 {
            self.ctx.bind_to_thread()?;
            // SAFETY: callers pass an address inside a live buffer holding `n` values.
            unsafe { result::memcpy_dtoh_async(&mut out, src, self.stream.cu_stream())? };
        }
        self.sync()?;
        Ok(out)
    }

    /// Sets every byte of `buf` (0xFF poisons f32 data with NaN).
    pub fn fill(&self, buf: &DevBuf, byte: u8) -> Result<(), CudaError> {
        // SAFETY: the whole of a live buffer.
        unsafe { result::memset_d8_async(buf.ptr, byte, buf.bytes, self.stream.cu_stream())? };
        Ok(())
    }

    /// Device-to-device copy (the bandwidth probe).
    pub fn copy(&self, dst: u64, src: u64, bytes: usize) -> Result<(), CudaError> {
        // SAFETY: both ranges lie in live buffers.
        unsafe { result::memcpy_dtod_async(dst, src, bytes, self.stream.cu_stream())? };
        Ok(())
    }

    pub fn sync(&self) -> Result<(), CudaError> {
        self.stream.synchronize()?;
        Ok(())
    }

    /// Queues kernel `name`; errors in the kernel itself surface at the next sync.
    pub fn launch(
        &self,
        name: &str,
        grid: (u32, u32, u32),
        block: u32,
        shared: u32,
        args: &[Arg],
    ) -> Result<(), CudaError> {
        let f = self.function(name)?;
        let mut vals: Vec<u64> = args
            .iter()
            .map(|a| match *a {
                Arg::P(p) => p,
                Arg::I(i) => i as u32 as u64,
                Arg::F(f) => f.to_bits() as u64,
                Arg::L(l) => l as u64,
            })
            .collect();
        let mut params: Vec<*mut c_void> = vals
            .iter_mut()
            .map(|v| v as *mut u64 as *mut c_void)
            .collect();
        // SAFETY: the argument list matches the kernel's parameters (each wrapper in `ops`
        // passes them in the kernel's order and widths; 4-byte values sit in the low bytes).
        unsafe {
            result::launch_kernel(
                f.cu_function(),
                grid,
                (block, 1, 1),
                shared,
                self.stream.cu_stream(),
                &mut params,
            )?
        };
        Ok(())
    }

    /// Runs `body` under stream capture and returns the graph it recorded.
    pub fn capture(
        &self,
        body: impl FnOnce() -> Result<(), CudaError>,
    ) -> Result<CudaGraph, CudaError> {
        self.stream
            .begin_capture(sys::CUstreamCaptureMode::CU_STREAM_CAPTURE_MODE_THREAD_LOCAL)?;
        let ran = body();
        let graph = self.stream.end_capture(sys::CUgraphInstantiate_flags(0));
        ran?;
        let graph =
            graph?.ok_or_else(|| CudaError::Driver("the captured graph is empty".into()))?;
        graph.upload()?;
        Ok(graph)
    }

    /// An event recorded now on the stream (for timing).
    pub fn mark(&self) -> Result<CudaEvent, CudaError> {
        Ok(self
            .stream
            .record_event(Some(sys::CUevent_flags::CU_EVENT_DEFAULT))?)
    }
}

/// Milliseconds between two recorded events (waits for the second).
pub fn elapsed_ms(start: &CudaEvent, end: &CudaEvent) -> Result<f32, CudaError> {
    end.synchronize()?;
    Ok(start.elapsed_ms(end)?)
}
