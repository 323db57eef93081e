fn main() {
    link_libtorch();
    build_shims();
    generate_onnx_messages();
}

/// Rust types for ONNX's protobuf messages, from the `onnx.proto` that scripts/onnx-proto.mjs takes out
/// of the PyPI onnx wheel (every cargo and napi build runs with `EMOTION_ONNX_PROTO_DIR` set by
/// scripts/libtorch.mjs `buildEnv`). Compiled by protox, so no `protoc` binary is needed.
fn generate_onnx_messages() {
    println!("cargo:rerun-if-env-changed=EMOTION_ONNX_PROTO_DIR");
    let Ok(dir) = std::env::var("EMOTION_ONNX_PROTO_DIR") else {
        panic!("EMOTION_ONNX_PROTO_DIR is not set: build through `npm run setup` or `node scripts/cargo.mjs`, which fetch onnx.proto from the PyPI onnx wheel");
    };
    let proto = std::path::Path::new(&dir).join("onnx.proto");
    println!("cargo:rerun-if-changed={}", proto.display());
    let descriptors = protox::compile([&proto], [std::path::Path::new(&dir)]).expect("onnx.proto compiles");
    prost_build::Config::new().compile_fds(descriptors).expect("ONNX messages generate");
}

/// Compiles the C++ shims (csrc/) against the libtorch headers next to the libraries we link.
fn build_shims() {
    println!("cargo:rerun-if-changed=csrc/autocast.cpp");
    println!("cargo:rerun-if-changed=csrc/cpu_cache.cpp");
    println!("cargo:rerun-if-changed=csrc/memory_format.cpp");
    println!("cargo:rerun-if-changed=csrc/optim.cpp");
    println!("cargo:rerun-if-changed=csrc/store.cpp");
    println!("cargo:rerun-if-changed=csrc/buckets.cpp");
    println!("cargo:rerun-if-changed=csrc/guarded.hpp");
    let Ok(lib_dir) = std::env::var("DEP_TCH_LIBTORCH_LIB") else { return };
    let include = std::path::Path::new(&lib_dir).parent().expect("libtorch lib/ has a parent").join("include");
    cc::Build::new()
        .cpp(true)
        .std("c++17")
        .define("_GLIBCXX_USE_CXX11_ABI", "1")
        .include(&include)
        .include(include.join("torch/csrc/api/include"))
        .warnings(false)
        .flag_if_supported("-w")
        .file("csrc/autocast.cpp")
        .file("csrc/cpu_cache.cpp")
        .file("csrc/memory_format.cpp")
        .file("csrc/optim.cpp")
        .file("csrc/store.cpp")
        .file("csrc/buckets.cpp")
        .compile("emotion_shims");
}

/// For this crate's own test binaries and tools only (`rustc-link-arg` does not reach dependents, so
/// the shipped addon is unaffected): rustc passes `--as-needed`, so the linker would drop
/// libtorch_cuda.so (nothing references its symbols) and CUDA would vanish from `cargo test` on a GPU
/// host; an rpath to the libtorch we built against lets the tests run without LD_LIBRARY_PATH.
fn link_libtorch() {
    println!("cargo:rerun-if-env-changed=DEP_TCH_LIBTORCH_LIB");
    let Ok(lib_dir) = std::env::var("DEP_TCH_LIBTORCH_LIB") else {
        println!("cargo:warning=DEP_TCH_LIBTORCH_LIB not set; libtorch rpath not added");
        return;
    };
    println!("cargo:rustc-link-arg=-Wl,-rpath,{lib_dir}");
    println!("cargo:rustc-link-arg=-Wl,--no-as-needed");
    for lib in ["torch_cuda", "torch_cpu", "torch", "c10_cuda", "c10"] {
        let file = std::path::Path::new(&lib_dir).join(format!("lib{lib}.so"));
        if file.exists() {
            println!("cargo:rustc-link-arg=-l{lib}");
        }
    }
    println!("cargo:rustc-link-arg=-Wl,--as-needed");
}
