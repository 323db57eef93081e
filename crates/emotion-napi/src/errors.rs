//! One place that turns core errors into JS errors with a stable `code`.

use emotion_core::Error as CoreError;
use napi::bindgen_prelude::*;

/// Error status whose string becomes the JS `err.code` for synchronous calls.
pub struct Code(pub String);

impl AsRef<str> for Code {
    fn as_ref(&self) -> &str {
        &self.0
    }
}

impl From<Status> for Code {
    fn from(status: Status) -> Self {
        Code(if status == Status::InvalidArg { "INVALID_OPTION".into() } else { "INTERNAL".into() })
    }
}

pub fn to_js(e: CoreError) -> napi::Error<Code> {
    napi::Error::new(Code(e.code().to_string()), e.to_string())
}

/// Builds a JS `Error` with `code` on the JS thread, for rejecting a deferred promise: napi's
/// deferred rejection carries only `Status`, so the error object is made here and passed by reference.
pub fn rejection(env: &Env, e: &CoreError) -> napi::Error {
    let made = (|| -> napi::Result<napi::Error> {
        let mut object = env.create_error(napi::Error::new(Status::GenericFailure, e.to_string()))?;
        object.set_named_property("code", e.code().to_string())?;
        Ok(napi::Error::from(object.into_unknown(env)?))
    })();
    made.unwrap_or_else(|err| err)
}
