// Shared by the build scripts of every crate that links libtorch (included with `include!`).
//
// Why: rustc passes `--as-needed`, so the linker drops libtorch_cuda.so (nothing references its
// symbols directly) and CUDA silently disappears at run time. We also bake an rpath to the libtorch
// we built against so the addon and test binaries load without LD_LIBRARY_PATH.
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
