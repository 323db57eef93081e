//! The fan-out of per-file work (decoding, resampling, probing, copying) over a bounded number of
//! threads, on rayon: results in input order, and a panic in one item fails that item, not the job
//! or the process. One pool per thread count is kept for the process.

use rayon::prelude::*;
use std::collections::HashMap;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::{Arc, Mutex, OnceLock};

fn pool(threads: usize) -> Arc<rayon::ThreadPool> {
    static POOLS: OnceLock<Mutex<HashMap<usize, Arc<rayon::ThreadPool>>>> = OnceLock::new();
    let threads = threads.max(1);
    let mut pools = POOLS.get_or_init(Default::default).lock().unwrap_or_else(|p| p.into_inner());
    pools
        .entry(threads)
        .or_insert_with(|| {
            let built = rayon::ThreadPoolBuilder::new()
                .num_threads(threads)
                .thread_name(|i| format!("emotion-io-{i}"))
                .build()
                .expect("a thread pool (threads could not be started)");
            Arc::new(built)
        })
        .clone()
}

/// `f(index, item)` for every item on up to `threads` threads; `Err(())` for an item whose call panicked.
pub fn map_in_order<'a, T, R, F>(items: &'a [T], threads: usize, f: F) -> Vec<Result<R, ()>>
where
    T: Sync,
    R: Send,
    F: Fn(usize, &'a T) -> R + Sync,
{
    pool(threads).install(|| {
        items
            .par_iter()
            .enumerate()
            .map(|(i, item)| catch_unwind(AssertUnwindSafe(|| f(i, item))).map_err(|_| ()))
            .collect()
    })
}

/// Runs `f` on every job on up to `threads` threads (jobs that own their data, e.g. disjoint slices).
pub fn for_each<J: Send, F: Fn(J) + Sync>(jobs: Vec<J>, threads: usize, f: F) {
    pool(threads).install(|| jobs.into_par_iter().for_each(&f));
}
