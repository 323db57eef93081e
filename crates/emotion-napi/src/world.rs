//! A joined multi-process world (c10d's TCPStore): barriers that name a dead or hung rank, and a few
//! keys for the TypeScript side's coordination (which rank runs what, results to collect).

use crate::job::spawn;
use crate::system::parse_options;
use emotion_core::distributed::{World, WorldOptions};
use napi::bindgen_prelude::*;
use napi_derive::napi;
use std::sync::Arc;

#[napi]
pub struct NativeWorld {
    pub(crate) inner: Arc<World>,
    pub rank: u32,
    pub world_size: u32,
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
            Ok(NativeWorld { inner: Arc::new(world), rank, world_size })
        },
    )
}

#[napi]
impl NativeWorld {
    /// Resolves when every rank has reached barrier `name`.
    #[napi(ts_return_type = "Promise<void>")]
    pub fn barrier<'env>(&self, env: &'env Env, name: String) -> Result<Object<'env>> {
        let world = Arc::clone(&self.inner);
        spawn(env, "barrier", move || world.barrier(&name), |_, ()| Ok(()))
    }

    /// Sets `key` to `value` in the store.
    #[napi(ts_return_type = "Promise<void>")]
    pub fn set<'env>(&self, env: &'env Env, key: String, value: String) -> Result<Object<'env>> {
        let world = Arc::clone(&self.inner);
        spawn(env, "store set", move || world.set(&key, value.as_bytes()), |_, ()| Ok(()))
    }

    /// The value of `key`, once a rank sets it (a failed or silent rank ends the wait).
    #[napi(ts_return_type = "Promise<string>")]
    pub fn get<'env>(&self, env: &'env Env, key: String) -> Result<Object<'env>> {
        let world = Arc::clone(&self.inner);
        spawn(env, "store get", move || Ok(String::from_utf8_lossy(&world.get(&key)?).into_owned()), |_, text| Ok(text))
    }

    /// A last barrier; rank 0 then waits until the others have left, and the heartbeat stops.
    #[napi(ts_return_type = "Promise<void>")]
    pub fn leave<'env>(&self, env: &'env Env) -> Result<Object<'env>> {
        let world = Arc::clone(&self.inner);
        spawn(env, "leave world", move || world.leave(), |_, ()| Ok(()))
    }

    /// Tells the other ranks this one failed (`why`), so they stop waiting for it, and stops beating.
    #[napi]
    pub fn fail(&self, why: String) {
        self.inner.fail(&why);
    }
}
