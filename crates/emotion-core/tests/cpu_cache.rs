//! The caching CPU allocator, in a test process of its own (the allocator is process-wide, so other
//! tests running in parallel threads would change its counters).

use emotion_core::cpu_cache::{self, JobCache};
use tch::{Device, Kind, Tensor};

#[test]
fn large_cpu_tensors_reuse_freed_blocks_small_ones_do_not_and_an_idle_process_gives_the_cache_back() {
    if !cpu_cache::enabled() {
        eprintln!("SKIPPED: EMOTION_PIPELINE_CPU_CACHE is off");
        return;
    }
    let job = JobCache::enter();
    let _ = cpu_cache::stats(true);
    let numel = (16 << 20) / 4 + 12_345; // a little over 16 MiB of f32
    let mut pointers = Vec::new();
    for round in 0..3 {
        let t = Tensor::full([numel], round as f64, (Kind::Float, Device::Cpu));
        assert_eq!(t.double_value(&[numel - 1]), round as f64, "values are the tensor's own");
        pointers.push(t.data_ptr() as usize);
    }
    assert!(pointers.iter().all(|&p| p == pointers[0]), "one block reused: {pointers:?}");
    let s = cpu_cache::stats(false);
    assert_eq!((s.misses, s.hits), (1, 2), "{s:?}");
    assert!(s.cached_bytes > 16 << 20 && s.live_bytes == 0, "{s:?}");
    assert_eq!(pointers[0] % (2 << 20), 0, "blocks of 4 MiB and more are 2 MiB aligned");

    // Small tensors go to libtorch's default allocator.
    let _small = Tensor::zeros([1000], (Kind::Float, Device::Cpu));
    let s = cpu_cache::stats(false);
    assert_eq!((s.misses, s.hits), (1, 2), "{s:?}");

    // A block at most 1/8 larger is reused; a much larger request is not served by it.
    let bigger = Tensor::zeros([numel * 2], (Kind::Float, Device::Cpu));
    assert_ne!(bigger.data_ptr() as usize, pointers[0]);
    drop(bigger);

    drop(job);
    assert!(cpu_cache::stats(false).cached_bytes > 0, "kept for the next job for a moment");
    let job = JobCache::enter();
    let again = Tensor::zeros([numel], (Kind::Float, Device::Cpu));
    assert_eq!(again.data_ptr() as usize, pointers[0], "the next job reuses the block");
    drop(again);
    drop(job);
    std::thread::sleep(std::time::Duration::from_millis(2500));
    assert_eq!(cpu_cache::stats(false).cached_bytes, 0, "2 s after the last job the cache is empty");
}
