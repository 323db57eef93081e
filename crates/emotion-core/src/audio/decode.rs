//! Decoding WAV, FLAC, Ogg Vorbis and MP3 to mono f32 with symphonia (pure Rust).

use super::SAMPLE_RATES;
use crate::error::{Error, Result};
use std::path::Path;
use symphonia::core::audio::SampleBuffer;
use symphonia::core::codecs::{CodecParameters, DecoderOptions, CODEC_TYPE_NULL};
use symphonia::core::errors::Error as SymError;
use symphonia::core::formats::{FormatOptions, FormatReader};
use symphonia::core::io::{MediaSource, MediaSourceStream, MediaSourceStreamOptions};
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

/// Longest input a job decodes unless told otherwise (`maxDuration`): 10 minutes. Memory is bounded by
/// it (about 115 MB of mono f32 at 48 kHz), whatever a file's header or frames claim.
pub const DEFAULT_MAX_SECONDS: f64 = 600.0;

/// How much of a file a job decodes.
#[derive(Clone, Copy)]
pub struct Limits<'a> {
    /// Mono frames at the file's own rate after which decoding stops: the job's window (`None`: all).
    pub keep: &'a (dyn Fn(u32) -> Option<usize> + Sync),
    /// Inputs longer than this are refused (`AUDIO_DECODE`), before or while decoding.
    pub max_seconds: f64,
}

impl Limits<'_> {
    /// The whole file, up to [`DEFAULT_MAX_SECONDS`].
    pub fn whole() -> Limits<'static> {
        Limits { keep: &no_window, max_seconds: DEFAULT_MAX_SECONDS }
    }
}

fn no_window(_rate: u32) -> Option<usize> {
    None
}

/// Decoded audio and the length of its source.
#[derive(Debug, Clone)]
pub struct Decoded {
    pub audio: Audio,
    /// The source's length in seconds: from its header, or counted; more than `audio` holds when the
    /// job's window cut it.
    pub source_seconds: f64,
}

/// The file as a stream (never read whole): refused by name when it is missing, not a regular file
/// (a FIFO, a device, a folder) or empty.
fn open_source(path: &Path) -> Result<Box<dyn MediaSource>> {
    let file = std::fs::File::open(path).map_err(|e| match e.kind() {
        std::io::ErrorKind::NotFound => Error::decode(path, "file not found"),
        _ => Error::io(path, e),
    })?;
    let meta = file.metadata().map_err(|e| Error::io(path, e))?;
    if !meta.is_file() {
        return Err(Error::decode(path, "not a regular file"));
    }
    if meta.len() == 0 {
        return Err(Error::decode(path, "file is empty (0 bytes)"));
    }
    Ok(Box::new(file))
}

fn extension(path: &Path) -> Option<String> {
    path.extension().and_then(|e| e.to_str()).map(str::to_ascii_lowercase)
}

/// Decodes a file, averaging channels to mono, streamed from disk within `limits`. Fails with
/// `AudioDecode` naming the file on empty, truncated, unsupported, non-finite or too long input.
pub fn decode_file_limited(path: &Path, limits: Limits) -> Result<Decoded> {
    let source = open_source(path)?;
    let ext = extension(path);
    guarded(|| decode_unguarded(source, ext.as_deref(), limits)).map_err(|reason| Error::decode(path, reason))
}

/// Decodes a whole file (up to [`DEFAULT_MAX_SECONDS`]).
pub fn decode_file(path: &Path) -> Result<Audio> {
    decode_file_limited(path, Limits::whole()).map(|d| d.audio)
}

/// Reads only a file's container header, streamed from disk.
pub fn probe_file(path: &Path) -> Result<ProbeInfo> {
    let source = open_source(path)?;
    let ext = extension(path);
    guarded(|| probe_unguarded(source, ext.as_deref())).map_err(|reason| Error::decode(path, reason))
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

/// Opens the container of a file and finds its first audio track.
fn open(
    source: Box<dyn MediaSource>,
    extension: Option<&str>,
) -> Result<(Box<dyn FormatReader>, u32, CodecParameters), String> {
    let mut hint = Hint::new();
    if let Some(ext) = extension {
        hint.with_extension(ext);
    }
    let source = MediaSourceStream::new(source, MediaSourceStreamOptions::default());
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

fn in_memory(bytes: Vec<u8>) -> Result<Box<dyn MediaSource>, String> {
    if bytes.is_empty() {
        return Err("file is empty (0 bytes)".into());
    }
    Ok(Box::new(std::io::Cursor::new(bytes)))
}

/// Reads only the container header of an in-memory file. The error is a reason without the path.
pub fn probe_bytes(bytes: Vec<u8>, extension: Option<&str>) -> Result<ProbeInfo, String> {
    guarded(|| probe_unguarded(in_memory(bytes)?, extension))
}

fn probe_unguarded(source: Box<dyn MediaSource>, extension: Option<&str>) -> Result<ProbeInfo, String> {
    let (_, _, p) = open(source, extension)?;
    check_params(&p)?;
    let sample_rate = p.sample_rate.filter(|&r| r > 0).ok_or("sample rate unknown")?;
    if p.n_frames == Some(0) {
        return Err("no audio samples (zero-length audio)".into());
    }
    Ok(ProbeInfo { sample_rate, channels: p.channels.map(|c| c.count() as u32).unwrap_or(0), frames: p.n_frames })
}

/// Decodes an in-memory file (up to [`DEFAULT_MAX_SECONDS`]). The error is a reason without the path.
pub fn decode_bytes(bytes: Vec<u8>, extension: Option<&str>) -> Result<Audio, String> {
    guarded(|| decode_unguarded(in_memory(bytes)?, extension, Limits::whole())).map(|d| d.audio)
}

fn too_long(seconds: f64, max: f64) -> String {
    format!("{seconds:.1} s long, more than the {max} s allowed (maxDuration)")
}

/// A container opened and checked, its decoder made: mono chunks come out one packet at a time, so
/// memory is one packet's whatever the stream holds. Refuses a header whose length exceeds `max_seconds`.
struct Packets {
    format: Box<dyn FormatReader>,
    track_id: u32,
    params: CodecParameters,
    decoder: Box<dyn symphonia::core::codecs::Decoder>,
    interleaved: Option<SampleBuffer<f32>>,
    chunk: Vec<f32>,
    sample_rate: u32,
    channels: u32,
}

impl Packets {
    fn open(source: Box<dyn MediaSource>, extension: Option<&str>, max_seconds: f64) -> Result<Packets, String> {
        let (format, track_id, params) = open(source, extension)?;
        check_params(&params)?;
        if let (Some(n), Some(rate)) = (params.n_frames, params.sample_rate.filter(|&r| r > 0)) {
            // The header's length, refused before a frame is decoded.
            if n as f64 / rate as f64 > max_seconds {
                return Err(too_long(n as f64 / rate as f64, max_seconds));
            }
        }
        let decoder = symphonia::default::get_codecs()
            .make(&params, &DecoderOptions::default())
            .map_err(|e| format!("unsupported codec ({})", describe(&e)))?;
        let sample_rate = params.sample_rate.unwrap_or(0);
        let channels = params.channels.map(|c| c.count() as u32).unwrap_or(0);
        Ok(Packets { format, track_id, params, decoder, interleaved: None, chunk: Vec::new(), sample_rate, channels })
    }

    /// The next packet's frames, averaged to mono; `None` at the end of the stream.
    fn next_chunk(&mut self) -> Result<Option<&[f32]>, String> {
        loop {
            let packet = match self.format.next_packet() {
                Ok(p) => p,
                Err(SymError::IoError(e)) if e.kind() == std::io::ErrorKind::UnexpectedEof => return Ok(None),
                Err(SymError::ResetRequired) => return Ok(None),
                Err(e) => return Err(format!("corrupt stream ({})", describe(&e))),
            };
            if packet.track_id() != self.track_id {
                continue;
            }
            let decoded = match self.decoder.decode(&packet) {
                Ok(d) => d,
                // A damaged packet in a lossy stream: skip it like other decoders do.
                Err(SymError::DecodeError(_)) => continue,
                Err(e) => return Err(format!("decoder failed ({})", describe(&e))),
            };
            let spec = *decoded.spec();
            if !SAMPLE_RATES.contains(&spec.rate) || spec.channels.count() == 0 || spec.channels.count() > MAX_CHANNELS
            {
                return Err(format!("stream declares {} Hz and {} channels", spec.rate, spec.channels.count()));
            }
            self.sample_rate = spec.rate;
            self.channels = spec.channels.count() as u32;
            let buf = self.interleaved.get_or_insert_with(|| SampleBuffer::new(decoded.capacity() as u64, spec));
            if buf.capacity() < decoded.capacity() * spec.channels.count() {
                *buf = SampleBuffer::new(decoded.capacity() as u64, spec);
            }
            buf.copy_interleaved_ref(decoded);
            self.chunk.clear();
            downmix_into(buf.samples(), self.channels as usize, &mut self.chunk);
            return Ok(Some(&self.chunk));
        }
    }
}

fn decode_unguarded(source: Box<dyn MediaSource>, extension: Option<&str>, limits: Limits) -> Result<Decoded, String> {
    let mut packets = Packets::open(source, extension, limits.max_seconds)?;
    let expected_frames = packets.params.n_frames;
    let mut mono = Vec::with_capacity(expected_frames.unwrap_or(0).min(MAX_PREALLOCATED_FRAMES) as usize);
    // Set once the job's window is decoded: the rest of the stream is only counted, not decoded.
    let mut window_full = false;
    // Frames decoded when the window filled (the last packet may run past it).
    let mut decoded_frames = 0u64;
    while let Some(chunk) = packets.next_chunk()? {
        mono.extend_from_slice(chunk);
        let sample_rate = packets.sample_rate;
        if mono.len() as f64 > limits.max_seconds * sample_rate as f64 {
            return Err(too_long(mono.len() as f64 / sample_rate as f64, limits.max_seconds));
        }
        if let Some(keep) = (limits.keep)(sample_rate) {
            if mono.len() >= keep {
                decoded_frames = mono.len() as u64;
                mono.truncate(keep);
                window_full = true;
                break;
            }
        }
    }
    let (sample_rate, channels) = (packets.sample_rate, packets.channels);
    let source_frames = if window_full {
        match expected_frames {
            Some(n) => n,
            None => {
                count_remaining(&mut packets.format, packets.track_id, decoded_frames, sample_rate, limits.max_seconds)?
            }
        }
    } else {
        mono.len() as u64
    };

    if let (Some(n), false) = (expected_frames, window_full) {
        // WAV and FLAC state their length: fewer frames than stated means the file was cut short.
        if (mono.len() as u64) < n && packets.params.codec != symphonia::core::codecs::CODEC_TYPE_VORBIS {
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
    let source_seconds = source_frames as f64 / sample_rate as f64;
    Ok(Decoded { audio: Audio { samples: mono, sample_rate, channels }, source_seconds })
}

/// A file or an in-memory file decoded chunk by chunk (mono, at its own rate): memory stays one
/// packet's however long the recording. Errors are reasons; the caller names the input.
pub struct ChunkedDecoder {
    packets: Packets,
    max_seconds: f64,
    frames: u64,
    expected: Option<u64>,
}

impl ChunkedDecoder {
    /// Opens a file (refused by name like [`decode_file_limited`]) or in-memory bytes.
    pub fn open(path: Option<&Path>, bytes: Option<Vec<u8>>, max_seconds: f64) -> Result<ChunkedDecoder, String> {
        let (source, ext) = match (path, bytes) {
            (_, Some(bytes)) => (in_memory(bytes)?, None),
            (Some(path), None) => (
                open_source(path).map_err(|e| match e {
                    Error::AudioDecode { reason, .. } => reason,
                    other => other.to_string(),
                })?,
                extension(path),
            ),
            (None, None) => return Err("no input".into()),
        };
        let packets = guarded(|| Packets::open(source, ext.as_deref(), max_seconds))?;
        let expected = packets.params.n_frames;
        Ok(ChunkedDecoder { packets, max_seconds, frames: 0, expected })
    }

    /// The next mono chunk and its rate; `None` at the end. Non-finite samples, a rate change
    /// mid-stream and more than `max_seconds` are errors.
    pub fn next_chunk(&mut self) -> Result<Option<(u32, &[f32])>, String> {
        let rate = self.packets.sample_rate;
        let packets = &mut self.packets;
        if !guarded(|| Ok(packets.next_chunk()?.is_some()))? {
            if self.frames == 0 {
                return Err("no audio samples (zero-length audio)".into());
            }
            let lossy = self.packets.params.codec == symphonia::core::codecs::CODEC_TYPE_VORBIS;
            if let Some(n) = self.expected.filter(|&n| self.frames < n && !lossy) {
                return Err(format!("truncated: header promises {n} frames, file holds {}", self.frames));
            }
            return Ok(None);
        }
        let chunk = &self.packets.chunk;
        if rate != 0 && self.packets.sample_rate != rate {
            return Err(format!("the sample rate changes mid-stream ({rate} to {} Hz)", self.packets.sample_rate));
        }
        if let Some(i) = chunk.iter().position(|x| !x.is_finite()) {
            return Err(format!("non-finite sample (NaN or infinity) at frame {}", self.frames + i as u64));
        }
        self.frames += chunk.len() as u64;
        if self.frames as f64 > self.max_seconds * self.packets.sample_rate as f64 {
            return Err(too_long(self.frames as f64 / self.packets.sample_rate as f64, self.max_seconds));
        }
        Ok(Some((self.packets.sample_rate, &self.packets.chunk)))
    }
}

/// The length of a stream whose header gives none: `frames` decoded so far plus the rest's packet
/// durations (read, not decoded: time, not memory); refused once past `max_seconds`.
fn count_remaining(
    format: &mut Box<dyn FormatReader>,
    track_id: u32,
    mut frames: u64,
    rate: u32,
    max_seconds: f64,
) -> Result<u64, String> {
    loop {
        match format.next_packet() {
            Ok(p) if p.track_id() == track_id => frames += p.dur(),
            Ok(_) => {}
            Err(_) => return Ok(frames),
        }
        if frames as f64 / rate as f64 > max_seconds {
            return Err(too_long(frames as f64 / rate as f64, max_seconds));
        }
    }
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
