//! What a prediction reads: a file, an encoded file in memory, or samples, each opened as a source
//! of mono chunks at its own rate (files are decoded a packet at a time: memory does not grow with
//! the recording).

use crate::audio::decode::ChunkedDecoder;
use crate::audio::SAMPLE_RATES;
use std::path::PathBuf;

/// One input of `predict`, `timeline` or a stream.
#[derive(Debug, Clone)]
pub enum InferInput {
    Path(PathBuf),
    /// An encoded file (WAV, FLAC, Ogg Vorbis, MP3) in memory.
    Encoded(Vec<u8>),
    Samples {
        samples: Vec<f32>,
        sample_rate: u32,
    },
}

impl InferInput {
    /// How errors name it: its path, or its position.
    pub fn label(&self, index: usize) -> String {
        match self {
            InferInput::Path(p) => p.display().to_string(),
            InferInput::Encoded(_) => format!("<buffer #{index}>"),
            InferInput::Samples { .. } => format!("<samples #{index}>"),
        }
    }
}

/// Frames of in-memory samples handed out at once (a second at 64 kHz).
const MEMORY_CHUNK: usize = 65_536;

/// Mono chunks of one input.
pub enum Source<'a> {
    Decoder(Box<ChunkedDecoder>),
    /// Handed out in chunks of at most [`MEMORY_CHUNK`] frames, so windows are scored batch by batch.
    Memory {
        samples: &'a [f32],
        sample_rate: u32,
        at: usize,
    },
}

impl<'a> Source<'a> {
    /// Opens `input`, refusing inputs longer than `max_seconds` (from a header's claim, or while reading).
    pub fn open(input: &'a InferInput, max_seconds: f64) -> Result<Source<'a>, String> {
        match input {
            InferInput::Path(path) => {
                Ok(Source::Decoder(Box::new(ChunkedDecoder::open(Some(path), None, max_seconds)?)))
            }
            InferInput::Encoded(bytes) => {
                Ok(Source::Decoder(Box::new(ChunkedDecoder::open(None, Some(bytes.clone()), max_seconds)?)))
            }
            InferInput::Samples { samples, sample_rate } => {
                if !SAMPLE_RATES.contains(sample_rate) {
                    return Err(format!(
                        "sampleRate must be {}–{} Hz, got {sample_rate}",
                        SAMPLE_RATES.start(),
                        SAMPLE_RATES.end()
                    ));
                }
                if samples.is_empty() {
                    return Err("no audio samples (zero-length audio)".into());
                }
                if let Some(i) = samples.iter().position(|x| !x.is_finite()) {
                    return Err(format!("non-finite sample (NaN or infinity) at frame {i}"));
                }
                let seconds = samples.len() as f64 / *sample_rate as f64;
                if seconds > max_seconds {
                    return Err(format!("{seconds:.1} s long, more than the {max_seconds} s allowed (maxDuration)"));
                }
                Ok(Source::Memory { samples, sample_rate: *sample_rate, at: 0 })
            }
        }
    }

    /// The next chunk and the rate it is at; `None` at the end.
    pub fn next_chunk(&mut self) -> Result<Option<(u32, &[f32])>, String> {
        match self {
            Source::Decoder(d) => d.next_chunk(),
            Source::Memory { samples, sample_rate, at } => {
                if *at >= samples.len() {
                    return Ok(None);
                }
                let end = (*at + MEMORY_CHUNK).min(samples.len());
                let chunk = &samples[*at..end];
                *at = end;
                Ok(Some((*sample_rate, chunk)))
            }
        }
    }
}
