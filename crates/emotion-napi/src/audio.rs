use crate::errors::{to_js, Code};
use crate::job::{emit, spawn, ProgressCallback};
use crate::system::{parse_options, CancelToken};
use emotion_core::audio::{self, features};
use emotion_core::control::Progress;
use emotion_core::encoder;
use napi::bindgen_prelude::*;
use napi_derive::napi;
use std::path::PathBuf;

#[napi(object)]
pub struct DecodedAudio {
    /// Mono samples (channels averaged).
    pub samples: Float32Array,
    pub sample_rate: u32,
    pub duration_seconds: f64,
    /// Channels in the file before the mono downmix.
    pub channels: u32,
}

fn to_decoded(a: audio::Audio) -> DecodedAudio {
    let duration_seconds = a.duration_seconds();
    DecodedAudio { samples: a.samples.into(), sample_rate: a.sample_rate, duration_seconds, channels: a.channels }
}

/// Decodes a WAV, FLAC, Ogg Vorbis or MP3 file to mono, resampled to `sampleRate` when given.
#[napi(ts_return_type = "Promise<DecodedAudio>")]
pub fn decode_audio<'env>(env: &'env Env, path: String, sample_rate: Option<u32>) -> Result<Object<'env>> {
    spawn(env, "decode", move || audio::load(&PathBuf::from(path), sample_rate), |_, a| Ok(to_decoded(a)))
}

#[napi]
pub fn decode_audio_sync(path: String, sample_rate: Option<u32>) -> Result<DecodedAudio, Code> {
    audio::load(&PathBuf::from(path), sample_rate).map(to_decoded).map_err(to_js)
}

#[napi(object)]
pub struct SamplesInput {
    pub samples: Float32Array,
    pub sample_rate: u32,
}

#[napi(object)]
pub struct MelResult {
    /// Row-major `[shape[0], nMels, frames]`.
    pub data: Float32Array,
    /// The rest of the core's `MelFeatures` (shape, indices, failed inputs, device, cache counts) as JSON.
    pub features_json: String,
}

/// Log-mel features of many clips, batched on the device. `optionsJson` is a JSON
/// `ExtractOptions` (`{ mel, device, batchSize, strict, decodeThreads }`).
#[napi(ts_return_type = "Promise<MelResult>")]
pub fn extract_mel<'env>(
    env: &'env Env,
    inputs: Vec<Either<String, SamplesInput>>,
    options_json: Option<String>,
    #[napi(ts_arg_type = "((event: string) => void) | undefined | null")] on_progress: Option<ProgressCallback>,
    cancel: Option<&CancelToken>,
) -> Result<Object<'env>> {
    let options: features::ExtractOptions = match parse_options("extractMel options", options_json) {
        Ok(o) => o,
        Err(e) => return reject_now(env, e),
    };
    let flag = cancel.map(|c| c.flag.clone()).unwrap_or_default();
    let inputs = to_inputs(inputs);
    spawn_rows(env, "mel", on_progress, move |progress| {
        let mut out = features::extract_mel(&inputs, &options, &flag, progress)?;
        Ok((std::mem::take(&mut out.data), out))
    })
}

/// Pooled Whisper-encoder states of many clips (`[n, layers + 1, width]` in `data`; the rest of
/// the core's `Embeddings` as JSON in `featuresJson`). `optionsJson` is a JSON `EmbedOptions`.
#[napi(ts_return_type = "Promise<MelResult>")]
pub fn extract_embeddings<'env>(
    env: &'env Env,
    inputs: Vec<Either<String, SamplesInput>>,
    options_json: String,
    #[napi(ts_arg_type = "((event: string) => void) | undefined | null")] on_progress: Option<ProgressCallback>,
    cancel: Option<&CancelToken>,
) -> Result<Object<'env>> {
    let options: encoder::EmbedOptions = match parse_options("extractEmbeddings options", Some(options_json)) {
        Ok(o) => o,
        Err(e) => return reject_now(env, e),
    };
    let flag = cancel.map(|c| c.flag.clone()).unwrap_or_default();
    let inputs = to_inputs(inputs);
    spawn_rows(env, "embed", on_progress, move |progress| {
        let mut out = encoder::extract_embeddings(&inputs, &options, &flag, progress)?;
        Ok((std::mem::take(&mut out.data), out))
    })
}

/// Runs a feature job on its own thread: its rows cross as a typed array, the rest as JSON.
fn spawn_rows<'env, T, W>(
    env: &'env Env,
    name: &str,
    on_progress: Option<ProgressCallback>,
    work: W,
) -> Result<Object<'env>>
where
    T: serde::Serialize + Send + 'static,
    W: FnOnce(&mut dyn FnMut(Progress)) -> emotion_core::Result<(Vec<f32>, T)> + Send + 'static,
{
    spawn(
        env,
        name,
        move || work(&mut |p: Progress| emit(on_progress.as_ref(), &p)),
        |_, (data, rest)| {
            let features_json = serde_json::to_string(&rest).map_err(|e| napi::Error::from_reason(e.to_string()))?;
            Ok(MelResult { data: data.into(), features_json })
        },
    )
}

/// Log-mel throughput with the waveforms already on the device (a JSON `DeviceMelTiming`), for the
/// benchmark; `melJson` is a JSON `MelConfig`.
#[napi]
pub fn time_mel_on_device(mel_json: Option<String>, device: String, batch: u32, repeats: u32) -> Result<String, Code> {
    let config: audio::MelConfig = parse_options("mel", mel_json).map_err(to_js)?;
    emotion_core::error::catch_panic(|| {
        let device = emotion_core::device::parse_device(&device)?;
        audio::mel::time_on_device(&config, device, batch as i64, repeats as usize)
    })
    .map(|t| serde_json::to_string(&t).expect("timing serialises"))
    .map_err(to_js)
}

/// Typed arrays are copied here, on the JS thread (blocked meanwhile, so their memory stays put), into
/// one buffer on every core before the worker takes them.
pub(crate) fn to_inputs(inputs: Vec<Either<String, SamplesInput>>) -> Vec<features::AudioInput> {
    let arrays: Vec<&[f32]> =
        inputs.iter().filter_map(|i| if let Either::B(s) = i { Some(&*s.samples) } else { None }).collect();
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
    let mut packed = features::Samples::pack(&arrays, threads).into_iter();
    inputs
        .into_iter()
        .map(|input| match input {
            Either::A(path) => features::AudioInput::Path(PathBuf::from(path)),
            Either::B(s) => features::AudioInput::Samples {
                samples: packed.next().expect("one packed clip per samples input"),
                sample_rate: s.sample_rate,
            },
        })
        .collect()
}

/// A promise rejected with `err` (its code kept), for option errors found before any work starts.
fn reject_now(env: &Env, err: emotion_core::Error) -> Result<Object<'_>> {
    spawn(env, "reject", move || Err::<(), _>(err), |_, ()| Ok(()))
}

/// The identity of the encoder in `dir` (the SHA-256 a model records), computed once per process and
/// file identity: resolves to lowercase hex.
#[napi(ts_return_type = "Promise<string>")]
pub fn encoder_sha256(env: &Env, dir: String) -> Result<Object<'_>> {
    spawn(env, "hash", move || encoder::weights_sha256(&PathBuf::from(dir)), |_, sha| Ok(sha))
}
