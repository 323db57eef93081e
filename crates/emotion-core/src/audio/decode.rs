//! Decoding WAV, FLAC, Ogg Vorbis and MP3 to mono f32 with symphonia (pure Rust).

use super::SAMPLE_RATES;
use crate::error::{Error, Result};
use std::path::Path;
use symphonia::core::audio::SampleBuffer;
use symphonia::core::codecs::{CodecParameters, DecoderOptions, CODEC_TYPE_NULL};
use symphonia::core::errors::Error as SymError;
use symphonia::core::formats::{FormatOptions, FormatReader};
use symphonia::core::io::{MediaSourceStream, MediaSourceStreamOptions};
use symphonia::core::meta::MetadataOptions;
use symphonia::core::probe::Hint;

/// Mono audio at its native rate.
#[derive(Debug, Clone)]
pub struct Audio {
    pub samples: Vec<f32>,
    pub sample_rate: u32,
    /// Channel count of the source before the mono downmix.
    pub channels: u32,
}

impl Audio {
    pub fn duration_seconds(&self) -> f64 {
        self.samples.len() as f64 / self.sample_rate as f64
    }
}

/// Decodes a whole file, averaging channels to mono. Fails with `AudioDecode` naming the file on
/// empty, truncated, unsupported or non-finite input.
pub fn decode_file(path: &Path) -> Result<Audio> {
    let bytes = std::fs::read(path).map_err(|e| match e.kind() {
        std::io::ErrorKind::NotFound => Error::decode(path, "file not found"),
        _ => Error::io(path, e),
    })?;
    let hint_ext = path.extension().and_then(|e| e.to_str()).map(str::to_ascii_lowercase);
    decode_bytes(bytes, hint_ext.as_deref()).map_err(|reason| Error::decode(path, reason))
}

/// What a file's header says, without decoding the samples.
#[derive(Debug, Clone, Copy)]
pub struct ProbeInfo {
    pub sample_rate: u32,
    pub channels: u32,
    pub frames: Option<u64>,
}

impl ProbeInfo {
    pub fn duration_seconds(&self) -> Option<f64> {
        self.frames.map(|n| n as f64 / self.sample_rate as f64)
    }
}

/// Opens the container of an in-memory file and finds its first audio track.
fn open(bytes: Vec<u8>, extension: Option<&str>) -> Result<(Box<dyn FormatReader>, u32, CodecParameters), String> {
    if bytes.is_empty() {
        return Err("file is empty (0 bytes)".into());
    }
    let mut hint = Hint::new();
    if let Some(ext) = extension {
        hint.with_extension(ext);
    }
    let source = MediaSourceStream::new(Box::new(std::io::Cursor::new(bytes)), MediaSourceStreamOptions::default());
    let probed = symphonia::default::get_probe()
        .format(&hint, source, &FormatOptions::default(), &MetadataOptions::default())
        .map_err(|e| format!("unsupported or unrecognised format ({})", describe(&e)))?;
    let track =
        probed.format.tracks().iter().find(|t| t.codec_params.codec != CODEC_TYPE_NULL).ok_or("no audio track")?;
    let (id, params) = (track.id, track.codec_params.clone());
    Ok((probed.format, id, params))
}

/// Sample rates a header may declare. Outside this range the file is refused before anything is
/// sized from it (a rate of 1 Hz would make the resampler allocate gigabytes).
const MAX_CHANNELS: usize = 64;
/// Samples preallocated from a header's frame count at most (10 minutes at 48 kHz); the vector
/// still grows past it for real long files, but a lying header cannot request terabytes.
const MAX_PREALLOCATED_FRAMES: u64 = 48_000 * 600;

/// Range-checks what a header declares before any of it is used.
fn check_params(p: &CodecParameters) -> Result<(), String> {
    if let Some(rate) = p.sample_rate {
        if !SAMPLE_RATES.contains(&rate) {
            return Err(format!(
                "header declares a sample rate of {rate} Hz, outside {}–{} Hz",
                SAMPLE_RATES.start(),
                SAMPLE_RATES.end()
            ));
        }
    }
    if let Some(channels) = p.channels {
        if channels.count() == 0 || channels.count() > MAX_CHANNELS {
            return Err(format!("header declares {} channels (1–{MAX_CHANNELS} supported)", channels.count()));
        }
    }
    if let Some(bits) = p.bits_per_sample {
        if !(1..=64).contains(&bits) {
            return Err(format!("header declares {bits} bits per sample"));
        }
    }
    Ok(())
}

/// Runs a decoder step so that a panic inside it (a malformed file reaching an assertion in a codec)
/// fails this file alone with a reason, instead of its thread or the process.
fn guarded<T>(what: impl FnOnce() -> Result<T, String>) -> Result<T, String> {
    std::panic::catch_unwind(std::panic::AssertUnwindSafe(what)).unwrap_or_else(|panic| {
        let why = panic
            .downcast_ref::<&str>()
            .map(|s| s.to_string())
            .or_else(|| panic.downcast_ref::<String>().cloned())
            .unwrap_or_else(|| "unknown".into());
        Err(format!("malformed file: the decoder failed ({why})"))
    })
}

/// Reads only the container header of an in-memory file. The error is a reason without the path.
pub fn probe_bytes(bytes: Vec<u8>, extension: Option<&str>) -> Result<ProbeInfo, String> {
    guarded(|| probe_unguarded(bytes, extension))
}

fn probe_unguarded(bytes: Vec<u8>, extension: Option<&str>) -> Result<ProbeInfo, String> {
    let (_, _, p) = open(bytes, extension)?;
    check_params(&p)?;
    let sample_rate = p.sample_rate.filter(|&r| r > 0).ok_or("sample rate unknown")?;
    if p.n_frames == Some(0) {
        return Err("no audio samples (zero-length audio)".into());
    }
    Ok(ProbeInfo { sample_rate, channels: p.channels.map(|c| c.count() as u32).unwrap_or(0), frames: p.n_frames })
}

/// Decodes an in-memory file. The error is a reason without the path; callers add it.
pub fn decode_bytes(bytes: Vec<u8>, extension: Option<&str>) -> Result<Audio, String> {
    guarded(|| decode_unguarded(bytes, extension))
}

fn decode_unguarded(bytes: Vec<u8>, extension: Option<&str>) -> Result<Audio, String> {
    let (mut format, track_id, params) = open(bytes, extension)?;
    check_params(&params)?;
    let mut decoder = symphonia::default::get_codecs()
        .make(&params, &DecoderOptions::default())
        .map_err(|e| format!("unsupported codec ({})", describe(&e)))?;

    let mut sample_rate = params.sample_rate.unwrap_or(0);
    let mut channels = params.channels.map(|c| c.count() as u32).unwrap_or(0);
    let expected_frames = params.n_frames;
    let mut mono = Vec::with_capacity(expected_frames.unwrap_or(0).min(MAX_PREALLOCATED_FRAMES) as usize);
    let mut interleaved: Option<SampleBuffer<f32>> = None;

    loop {
        let packet = match format.next_packet() {
            Ok(p) => p,
            Err(SymError::IoError(e)) if e.kind() == std::io::ErrorKind::UnexpectedEof => break,
            Err(SymError::ResetRequired) => break,
            Err(e) => return Err(format!("corrupt stream ({})", describe(&e))),
        };
        if packet.track_id() != track_id {
            continue;
        }
        let decoded = match decoder.decode(&packet) {
            Ok(d) => d,
            // A damaged packet in a lossy stream: skip it like other decoders do.
            Err(SymError::DecodeError(_)) => continue,
            Err(e) => return Err(format!("decoder failed ({})", describe(&e))),
        };
        let spec = *decoded.spec();
        if !SAMPLE_RATES.contains(&spec.rate) || spec.channels.count() == 0 || spec.channels.count() > MAX_CHANNELS {
            return Err(format!("stream declares {} Hz and {} channels", spec.rate, spec.channels.count()));
        }
        sample_rate = spec.rate;
        channels = spec.channels.count() as u32;
        let buf = interleaved.get_or_insert_with(|| SampleBuffer::new(decoded.capacity() as u64, spec));
        if buf.capacity() < decoded.capacity() * spec.channels.count() {
            *buf = SampleBuffer::new(decoded.capacity() as u64, spec);
        }
        buf.copy_interleaved_ref(decoded);
        downmix_into(buf.samples(), channels as usize, &mut mono);
    }

    if let Some(n) = expected_frames {
        // WAV and FLAC state their length: fewer frames than stated means the file was cut short.
        if (mono.len() as u64) < n && params.codec != symphonia::core::codecs::CODEC_TYPE_VORBIS {
            return Err(format!("truncated: header promises {n} frames, file holds {}", mono.len()));
        }
    }
    if mono.is_empty() {
        return Err("no audio samples (zero-length audio)".into());
    }
    if sample_rate == 0 {
        return Err("sample rate unknown".into());
    }
    if let Some(i) = mono.iter().position(|x| !x.is_finite()) {
        return Err(format!("non-finite sample (NaN or infinity) at frame {i}"));
    }
    Ok(Audio { samples: mono, sample_rate, channels })
}

fn downmix_into(interleaved: &[f32], channels: usize, out: &mut Vec<f32>) {
    if channels <= 1 {
        out.extend_from_slice(interleaved);
        return;
    }
    let scale = 1.0 / channels as f32;
    out.extend(interleaved.chunks_exact(channels).map(|frame| frame.iter().sum::<f32>() * scale));
}

fn describe(e: &SymError) -> String {
    match e {
        SymError::IoError(io) if io.kind() == std::io::ErrorKind::UnexpectedEof => "unexpected end of file".into(),
        other => other.to_string(),
    }
}
