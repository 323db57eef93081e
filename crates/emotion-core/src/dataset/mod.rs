//! Corpora: indexing (RAVDESS names, label folders, manifests), validation, duplicates, splits.

pub mod index;
pub mod ravdess;
pub mod rng;
pub mod split;

pub use index::{index_dataset, DatasetIndex, IndexOptions, Item};
pub use split::{split_dataset, Split, SplitOptions, Strategy};
