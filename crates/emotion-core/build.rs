include!("link_libtorch.rs");

fn main() {
    link_libtorch();
    build_autocast_shim();
}

/// Compiles csrc/autocast.cpp against the libtorch headers next to the libraries we link.
fn build_autocast_shim() {
    println!("cargo:rerun-if-changed=csrc/autocast.cpp");
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
        .compile("emotion_autocast");
}
