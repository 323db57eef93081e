//! Audio front end: decode → mono → resample → fixed length → log-mel.

pub mod cache;
pub mod decode;
pub mod features;
pub mod mel;
pub mod resample;
pub mod samples;

pub use decode::{decode_file, Audio};
pub use mel::{MelConfig, MelExtractor};

/// Decodes `path` to mono and, when `sample_rate` is given, resamples to it.
pub fn load(path: &std::path::Path, sample_rate: Option<u32>) -> crate::Result<Audio> {
    if let Some(rate) = sample_rate {
        check_sample_rate("sampleRate", rate)?;
    }
    let audio = decode_file(path)?;
    match sample_rate {
        Some(rate) if rate != audio.sample_rate => Ok(Audio {
            samples: resample::resample(&audio.samples, audio.sample_rate, rate),
            sample_rate: rate,
            channels: audio.channels,
        }),
        _ => Ok(audio),
    }
}

/// The sample rates the library accepts, in files and in options.
pub const SAMPLE_RATES: std::ops::RangeInclusive<u32> = 1_000..=768_000;

/// `INVALID_OPTION` naming `option` when `rate` is outside [`SAMPLE_RATES`].
pub fn check_sample_rate(option: &str, rate: u32) -> crate::Result<()> {
    if SAMPLE_RATES.contains(&rate) {
        Ok(())
    } else {
        Err(crate::Error::invalid(
            option,
            format!("must be {}–{} Hz, got {rate}", SAMPLE_RATES.start(), SAMPLE_RATES.end()),
        ))
    }
}
