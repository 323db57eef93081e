//! The CUDA-graph shim through the core's wrapper, in a process that opened it as the package's loader
//! does (RTLD_GLOBAL). Without a GPU its calls must fail with a message, not abort the process; with
//! one, `npm run test:gpu` checks capture and replay (`cudaGraphSelfTest`, graphed training).

use emotion_core::cuda_graph::{self, Graph, SideStream, SHIM_FILE};
use libloading::os::unix::{Library, RTLD_GLOBAL, RTLD_NOW};
use std::path::Path;

#[test]
fn the_shim_is_found_by_name_and_without_a_gpu_fails_with_a_message() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../bindings").join(SHIM_FILE);
    assert!(cuda_graph::available().is_err(), "not loaded yet: unavailable");
    if !path.exists() {
        eprintln!("SKIPPED: {} was not built (CPU-only libtorch; npm run setup builds it)", path.display());
        return;
    }
    // SAFETY: the shim's initialisers only register nothing; it needs libtorch_cuda, which this test
    // binary links (build.rs).
    let _shim = unsafe { Library::open(Some(&path), RTLD_NOW | RTLD_GLOBAL) }.expect("the shim loads");
    cuda_graph::available().expect("its functions are found in the global scope");
    if tch::Cuda::is_available() {
        eprintln!("a GPU is present: npm run test:gpu checks capture and replay");
        return;
    }
    let err = SideStream::enter(0).err().expect("no side stream without a GPU");
    assert!(err.to_string().to_lowercase().contains("cuda"), "{err}");
    // libtorch's graph object already asks for the current CUDA stream: no graph without a GPU.
    let err = Graph::new().err().expect("no graph without a GPU");
    assert!(err.to_string().contains("CUDA graph create: CUDA error"), "{err}");
    assert!(!err.to_string().contains("frame #"), "libtorch's C++ backtrace is cut from the message: {err}");
}
