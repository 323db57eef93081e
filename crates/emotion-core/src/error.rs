use std::path::PathBuf;

/// Every failure the core can report. The Node binding maps each variant, once, to a stable
/// `err.code` string (see [`Error::code`]); messages always name the file or option involved.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("invalid option `{option}`: {reason}")]
    InvalidOption { option: String, reason: String },

    #[error("cannot decode audio {}: {reason}", path.display())]
    AudioDecode { path: PathBuf, reason: String },

    #[error("dataset error{}: {reason}", path.as_ref().map(|p| format!(" at {}", p.display())).unwrap_or_default())]
    Dataset { path: Option<PathBuf>, reason: String },

    #[error("CUDA unavailable: {0}")]
    CudaUnavailable(String),

    #[error("out of memory on {device}: {reason}")]
    OutOfMemory { device: String, reason: String },

    #[error("cancelled")]
    Cancelled,

    #[error("non-finite value: {0}")]
    NonFinite(String),

    /// A libtorch failure; `source` keeps tch's error where there was one (`std::error::Error::source`).
    #[error("libtorch error: {message}")]
    Torch {
        message: String,
        #[source]
        source: Option<Box<tch::TchError>>,
    },

    #[error("I/O error on {}: {source}", path.display())]
    Io { path: PathBuf, source: std::io::Error },

    #[error("cannot use model {}: {reason}", path.display())]
    ModelNotFound { path: PathBuf, reason: String },

    /// A multi-process job failed: a rank died or hung, the store cannot be reached, a port is in use.
    #[error("distributed job: {0}")]
    Distributed(String),

    #[error("internal error: {0}")]
    Internal(String),
}

/// The `code` of every error the library throws or rejects with, in Rust and in TypeScript.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, schemars::JsonSchema)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum ErrorCode {
    /// An option or argument is invalid; the message names it.
    InvalidOption,
    /// An audio file cannot be decoded; the message names it.
    AudioDecode,
    /// The dataset folder, manifest or split cannot be used.
    Dataset,
    /// CUDA was asked for and is not usable.
    CudaUnavailable,
    /// The device ran out of memory.
    OutOfMemory,
    /// The job was cancelled (an `AbortSignal`).
    Cancelled,
    /// Training diverged (NaN or infinite values), or saved weights are not finite.
    NonFinite,
    /// libtorch reported an error.
    Torch,
    /// A file could not be read or written; the message names it.
    Io,
    /// A model (Whisper, a trained model) is missing; the message says how to get it.
    ModelNotFound,
    /// A bug: please report it.
    Internal,
    /// No libtorch was found (raised by the TypeScript loader before the core is loaded).
    LibtorchNotFound,
    /// A libtorch of another version was found (raised by the TypeScript loader).
    LibtorchVersion,
    /// A download (an encoder, a dataset) failed: the server was unreachable or refused, or the file's
    /// size or checksum is not the one published; the message names the URL (raised by TypeScript).
    Download,
    /// A job over several processes failed: a rank died or hung (the message names it), the rendezvous
    /// store cannot be reached, or its port is in use.
    Distributed,
}

impl std::fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The serde name is the one definition of the string.
        let quoted = serde_json::to_string(self).map_err(|_| std::fmt::Error)?;
        f.write_str(quoted.trim_matches('"'))
    }
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    /// Stable machine-readable code, identical to the JS `err.code`.
    pub fn code(&self) -> ErrorCode {
        match self {
            Error::InvalidOption { .. } => ErrorCode::InvalidOption,
            Error::AudioDecode { .. } => ErrorCode::AudioDecode,
            Error::Dataset { .. } => ErrorCode::Dataset,
            Error::CudaUnavailable(_) => ErrorCode::CudaUnavailable,
            Error::OutOfMemory { .. } => ErrorCode::OutOfMemory,
            Error::Cancelled => ErrorCode::Cancelled,
            Error::NonFinite(_) => ErrorCode::NonFinite,
            Error::Torch { .. } => ErrorCode::Torch,
            Error::Io { .. } => ErrorCode::Io,
            Error::ModelNotFound { .. } => ErrorCode::ModelNotFound,
            Error::Distributed(_) => ErrorCode::Distributed,
            Error::Internal(_) => ErrorCode::Internal,
        }
    }

    pub fn invalid(option: impl Into<String>, reason: impl Into<String>) -> Self {
        Error::InvalidOption { option: option.into(), reason: reason.into() }
    }

    pub fn decode(path: impl Into<PathBuf>, reason: impl Into<String>) -> Self {
        Error::AudioDecode { path: path.into(), reason: reason.into() }
    }

    pub fn model_not_found(path: impl Into<PathBuf>, reason: impl Into<String>) -> Self {
        Error::ModelNotFound { path: path.into(), reason: reason.into() }
    }

    /// A libtorch failure known only by its message (a shim's or a panic's text).
    pub fn torch(message: impl Into<String>) -> Self {
        Error::Torch { message: message.into(), source: None }
    }

    pub fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        Error::Io { path: path.into(), source }
    }
}

impl From<tch::TchError> for Error {
    fn from(e: tch::TchError) -> Self {
        let text = e.to_string();
        // libtorch reports allocation failures as plain errors; classify them so callers can react.
        if text.contains("out of memory") || text.contains("CUDA out of memory") {
            Error::OutOfMemory { device: device_in_message(&text), reason: first_line(&text) }
        } else {
            Error::Torch { message: first_line(&text), source: Some(Box::new(e)) }
        }
    }
}

/// A libtorch message without the C++ backtrace libtorch appends ("Exception raised from …" and the
/// frames: not for users), as C++ gives it or escaped inside a tch `unwrap` panic.
pub fn without_backtrace(text: &str) -> &str {
    let text = text.split("\nException raised from").next().unwrap_or(text);
    text.split("\\nException raised from").next().unwrap_or(text).trim_end()
}

/// The message of a panic, without libtorch's backtrace or the `unwrap` wrapper around it.
fn first_line(text: &str) -> String {
    let text = without_backtrace(text);
    let text = text.strip_prefix("called `Result::unwrap()` on an `Err` value: Torch(\"").unwrap_or(text);
    text.lines().next().unwrap_or(text).trim().to_string()
}

fn device_in_message(text: &str) -> String {
    text.find("GPU ")
        .map(|i| text[i..].split_whitespace().take(2).collect::<Vec<_>>().join(" "))
        .unwrap_or_else(|| "device".to_string())
}

/// Runs `f`, turning a panic (tch's non-`f_` ops panic on libtorch errors) into [`Error`].
pub fn catch_panic<T>(f: impl FnOnce() -> Result<T>) -> Result<T> {
    match std::panic::catch_unwind(std::panic::AssertUnwindSafe(f)) {
        Ok(result) => result,
        Err(payload) => {
            // A panic that carries our own error (raised inside a module's forward) keeps its code.
            let payload = match payload.downcast::<Error>() {
                Ok(error) => return Err(*error),
                Err(other) => other,
            };
            let text = payload
                .downcast_ref::<String>()
                .cloned()
                .or_else(|| payload.downcast_ref::<&str>().map(|s| s.to_string()))
                .unwrap_or_else(|| "panic without message".to_string());
            if text.contains("out of memory") {
                Err(Error::OutOfMemory { device: device_in_message(&text), reason: first_line(&text) })
            } else if text.contains("Torch(") || text.contains("libtorch") || text.contains("TchError") {
                Err(Error::torch(first_line(&text)))
            } else {
                Err(Error::Internal(first_line(&text)))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::error::Error as _;

    #[test]
    fn a_libtorch_error_keeps_tch_s_error_as_its_source() {
        let e = Error::from(tch::TchError::Torch("shape mismatch\nbacktrace…".into()));
        assert_eq!(e.code(), ErrorCode::Torch);
        assert_eq!(e.to_string(), "libtorch error: Internal torch error: shape mismatch");
        assert!(e.source().is_some_and(|s| s.to_string().contains("shape mismatch")));
        assert!(Error::torch("from a shim").source().is_none());
    }

    #[test]
    fn a_panic_keeps_our_error_and_loses_libtorch_s_backtrace() {
        let ours = catch_panic::<()>(|| std::panic::panic_any(Error::Distributed("rank 1 stopped".into())));
        assert!(matches!(ours, Err(Error::Distributed(m)) if m == "rank 1 stopped"));
        let tch = catch_panic::<()>(|| {
            let _ = tch::Tensor::zeros([0], (tch::Kind::Float, tch::Device::Cpu)).view([0, -1]);
            Ok(())
        });
        let message = tch.expect_err("an ambiguous view fails").to_string();
        assert!(message.contains("cannot reshape tensor of 0 elements"), "{message}");
        assert!(!message.contains("Exception raised from") && !message.contains("unwrap"), "{message}");
    }
}
