//! A joined multi-process world (c10d's TCPStore): barriers that name a dead or hung rank, and a few
//! keys for the TypeScript side's coordination (which rank runs what, results to collect).

use crate::job::spawn;
use crate::system::parse_options;
use emotion_core::distributed::{World, WorldOptions};
use emotion_core::Error as CoreError;
use napi::bindgen_prelude::*;
use napi_derive::napi;
use std::sync::{Arc, Mutex};

#[napi]
pub struct NativeWorld {
    inner: Arc<Mutex<Option<World>>>,
    pub rank: u32,
    pub world_size: u32,
}

fn with_world<T>(
    inner: &Mutex<Option<World>>,
    f: impl FnOnce(&World) -> emotion_core::Result<T>,
) -> emotion_core::Result<T> {
    let guard = inner.lock().unwrap_or_else(|p| p.into_inner());
    let world = guard.as_ref().ok_or_else(|| CoreError::Distributed("this process has left the world".into()))?;
    f(world)
}

/// Joins the world `optionsJson` (JSON `WorldOptions`) describes: rank 0 opens the store, every rank
/// waits for the others.
#[napi(ts_return_type = "Promise<NativeWorld>")]
pub fn join_world<'env>(env: &'env Env, options_json: String) -> Result<Object<'env>> {
    let options = parse_options::<WorldOptions>("distributed", Some(options_json));
    spawn(
        env,
        "join world",
        move || World::join(options?),
        |_, world| {
            let (rank, world_size) = (world.options.rank as u32, world.options.world_size as u32);
            Ok(NativeWorld { inner: Arc::new(Mutex::new(Some(world))), rank, world_size })
        },
    )
}

#[napi]
impl NativeWorld {
    /// Resolves when every rank has reached barrier `name`.
    #[napi(ts_return_type = "Promise<void>")]
    pub fn barrier<'env>(&self, env: &'env Env, name: String) -> Result<Object<'env>> {
        let inner = Arc::clone(&self.inner);
        spawn(env, "barrier", move || with_world(&inner, |w| w.barrier(&name)), |_, ()| Ok(()))
    }

    /// Sets `key` to `value` in the store.
    #[napi(ts_return_type = "Promise<void>")]
    pub fn set<'env>(&self, env: &'env Env, key: String, value: String) -> Result<Object<'env>> {
        let inner = Arc::clone(&self.inner);
        spawn(env, "store set", move || with_world(&inner, |w| w.store().set(&key, value.as_bytes())), |_, ()| Ok(()))
    }

    /// The value of `key`, waiting for it up to the world's timeout.
    #[napi(ts_return_type = "Promise<string>")]
    pub fn get<'env>(&self, env: &'env Env, key: String) -> Result<Object<'env>> {
        let inner = Arc::clone(&self.inner);
        spawn(
            env,
            "store get",
            move || with_world(&inner, |w| Ok(String::from_utf8_lossy(&w.store().get(&key)?).into_owned())),
            |_, text| Ok(text),
        )
    }

    /// A last barrier, then the store is released (rank 0 waits until the others have left).
    #[napi(ts_return_type = "Promise<void>")]
    pub fn leave<'env>(&self, env: &'env Env) -> Result<Object<'env>> {
        let inner = Arc::clone(&self.inner);
        spawn(
            env,
            "leave world",
            move || {
                let world = inner.lock().unwrap_or_else(|p| p.into_inner()).take();
                world.map_or(Ok(()), |w| w.leave())
            },
            |_, ()| Ok(()),
        )
    }
}
