//! Long work runs on a thread of its own (never Node's pool) and settles a promise; progress goes
//! to JS through a non-blocking thread-safe callback as JSON text that TypeScript types.

use crate::errors::rejection;
use emotion_core::error::catch_panic;
use emotion_core::Result as CoreResult;
use napi::bindgen_prelude::*;
use napi::threadsafe_function::{ThreadsafeFunction, ThreadsafeFunctionCallMode};

/// `(event: string) => void`, called from worker threads without blocking them.
pub type ProgressCallback = ThreadsafeFunction<String, (), String, Status, false>;

type Resolver<D> = Box<dyn FnOnce(Env) -> napi::Result<D> + Send>;

/// Runs `work` on a new thread; `convert` turns its output into a JS value on the JS thread.
/// A panic or core error rejects the promise with an `Error` whose `code` is the core error's code.
pub fn spawn<'env, Out, Data, W, C>(env: &'env Env, name: &str, work: W, convert: C) -> napi::Result<Object<'env>>
where
    Out: Send + 'static,
    Data: ToNapiValue + 'static,
    W: FnOnce() -> CoreResult<Out> + Send + 'static,
    C: FnOnce(Env, Out) -> napi::Result<Data> + Send + 'static,
{
    let (deferred, promise) = env.create_deferred::<Data, Resolver<Data>>()?;
    std::thread::Builder::new()
        .name(format!("emotion-{name}"))
        .spawn(move || {
            let resolver: Resolver<Data> = match catch_panic(work) {
                Ok(out) => Box::new(move |env| convert(env, out)),
                Err(e) => Box::new(move |env| Err(rejection(&env, &e))),
            };
            deferred.resolve(resolver);
        })
        .map_err(|e| napi::Error::from_reason(format!("cannot start worker thread: {e}")))?;
    Ok(promise)
}

/// Sends one progress event (any serialisable value) if a callback was given.
pub fn emit<T: serde::Serialize>(callback: Option<&ProgressCallback>, event: &T) {
    if let Some(cb) = callback {
        if let Ok(text) = serde_json::to_string(event) {
            cb.call(text, ThreadsafeFunctionCallMode::NonBlocking);
        }
    }
}
