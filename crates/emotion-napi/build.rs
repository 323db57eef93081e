fn main() {
    napi_build::setup();
    // Deliberately no rpath and no `--no-as-needed` (unlike emotion-core's test binaries): the addon
    // records `libtorch_cpu.so` and `libc10.so` by SONAME only, rustc's default `--as-needed` drops the
    // `-ltorch_cuda -ltorch` that torch-sys emits, and the loader (crates/emotion-loader) preloads the
    // libtorch it finds at run time, with `libtorch_cuda` when it loads. See docs/DESIGN.md.
}
