use crate::errors::{to_js, Code};
use emotion_core::control::CancelFlag;
use emotion_core::device;
use emotion_core::Error as CoreError;
use napi::bindgen_prelude::*;
use napi_derive::napi;

/// What libtorch and CUDA this process sees: a JSON `DeviceInfo`.
#[napi]
pub fn device_info() -> String {
    serde_json::to_string(&device::device_info()).expect("device info serialises")
}

#[napi(object)]
pub struct TensorRoundTrip {
    pub data: Float32Array,
    pub shape: Vec<i64>,
    pub device: String,
    /// Sum computed by libtorch on the device.
    pub sum: f64,
}

/// Copies `data` into a libtorch tensor of `shape` on `device` and back. Proves the chain and
/// surfaces libtorch errors (a shape that does not fit the data) as `TORCH`.
#[napi]
pub fn tensor_round_trip(data: Float32Array, shape: Vec<i64>, device: Option<String>) -> Result<TensorRoundTrip, Code> {
    let values = data.to_vec();
    let device_spec = device.unwrap_or_else(|| "cpu".into());
    let result = emotion_core::error::catch_panic(|| {
        let dev = device::parse_device(&device_spec)?;
        let t = tch::Tensor::f_from_slice(&values)?.f_reshape(shape.as_slice())?.f_to_device(dev)?;
        let sum = t.f_sum(tch::Kind::Double)?.f_double_value(&[])?;
        let back: Vec<f32> = Vec::<f32>::try_from(t.f_to_device(tch::Device::Cpu)?.f_flatten(0, -1)?)?;
        Ok((back, t.size(), device::device_name(dev), sum))
    })
    .map_err(to_js)?;
    Ok(TensorRoundTrip { data: result.0.into(), shape: result.1, device: result.2, sum: result.3 })
}

/// Set from JS (an AbortSignal in TypeScript) to stop a running job at its next step.
#[napi]
pub struct CancelToken {
    pub(crate) flag: CancelFlag,
}

#[napi]
impl CancelToken {
    #[napi(constructor)]
    #[allow(clippy::new_without_default)]
    pub fn new() -> Self {
        CancelToken { flag: CancelFlag::new() }
    }

    #[napi]
    pub fn cancel(&self) {
        self.flag.cancel();
    }

    #[napi(getter)]
    pub fn cancelled(&self) -> bool {
        self.flag.is_cancelled()
    }
}

/// Parses a JSON options object into a core config; a bad field is `INVALID_OPTION` naming it.
pub fn parse_options<T: serde::de::DeserializeOwned + Default>(
    what: &str,
    json: Option<String>,
) -> emotion_core::Result<T> {
    match json {
        None => Ok(T::default()),
        Some(text) => serde_path_to_error::deserialize(&mut serde_json::Deserializer::from_str(&text)).map_err(|e| {
            // Name the field that failed (`amp`, `mel.nMels`, `audio.channels[0]`), not only the object.
            let path = e.path().to_string();
            let field = match (path.as_str(), what.strip_suffix(" options")) {
                (".", _) => what.to_string(),
                (_, Some(_)) => path,
                (_, None) => format!("{what}.{path}"),
            };
            emotion_core::Error::invalid(field, strip_position(&e.into_inner().to_string()))
        }),
    }
}

fn strip_position(message: &str) -> String {
    message.split(" at line ").next().unwrap_or(message).to_string()
}

/// Captures and replays a tiny CUDA graph and lets one capture fail on purpose (a JSON
/// `GraphSelfTest`): the smallest check of the CUDA-graph shim, for the GPU tests.
#[napi]
pub fn cuda_graph_self_test(device: String) -> Result<String, Code> {
    emotion_core::error::catch_panic(|| emotion_core::cuda_graph::self_test(device::parse_device(&device)?))
        .map(|r| serde_json::to_string(&r).expect("a self-test result serialises"))
        .map_err(to_js)
}

/// Runs each collective data-parallel training uses on a process group of `backend` (`gloo` or
/// `nccl`) in a world of one on `device` (a JSON `GroupSelfTest`): the check of the Gloo shim on any
/// machine, and of NCCL on a GPU host.
#[napi(ts_return_type = "Promise<string>")]
pub fn process_group_self_test<'env>(env: &'env Env, backend: String, device: String) -> Result<Object<'env>> {
    use emotion_core::distributed::group::Backend;
    crate::job::spawn(
        env,
        "process group self-test",
        move || {
            let backend = match backend.as_str() {
                "gloo" => Backend::Gloo,
                "nccl" => Backend::Nccl,
                other => return Err(CoreError::invalid("backend", format!("must be 'gloo' or 'nccl', got '{other}'"))),
            };
            let r = emotion_core::distributed::self_test::self_test(backend, device::parse_device(&device)?)?;
            Ok(serde_json::to_string(&r).expect("a self-test result serialises"))
        },
        |_, json| Ok(json),
    )
}

/// Checks the environment variables the core reads (`EMOTION_PIPELINE_CPU_CACHE`); the loader calls it
/// once, so a bad value is refused by name instead of quietly ignored.
#[napi]
pub fn check_environment() -> Result<(), Code> {
    emotion_core::cpu_cache::check_env().map_err(to_js)
}
