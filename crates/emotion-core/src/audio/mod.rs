//! Audio front end: decode → mono → resample → fixed length → log-mel.

pub mod cache;
pub mod decode;
pub mod features;
pub mod mel;
pub mod resample;

pub use decode::{decode_file, Audio};
pub use mel::{MelConfig, MelExtractor};

/// Decodes `path` to mono and, when `sample_rate` is given, resamples to it.
pub fn load(path: &std::path::Path, sample_rate: Option<u32>) -> crate::Result<Audio> {
    let audio = decode_file(path)?;
    match sample_rate {
        Some(0) => Err(crate::Error::invalid("sampleRate", "must be > 0")),
        Some(rate) if rate != audio.sample_rate => Ok(Audio {
            samples: resample::resample(&audio.samples, audio.sample_rate, rate),
            sample_rate: rate,
            channels: audio.channels,
        }),
        _ => Ok(audio),
    }
}
