//! Jobs over several processes, on libtorch's c10d: the `TCPStore` rendezvous (`store`), the world a
//! process belongs to (from the variables torchrun and our launcher set), heartbeats, and barriers that
//! name the rank they wait for when it dies or hangs. docs/DISTRIBUTED.md.

pub mod store;

use crate::error::{Error, Result};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};
use store::Store;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", default, deny_unknown_fields)]
/// Where this process sits in a job of several (torchrun's variables: `RANK`, `WORLD_SIZE`,
/// `LOCAL_RANK`, `LOCAL_WORLD_SIZE`, `MASTER_ADDR`, `MASTER_PORT`).
pub struct WorldOptions {
    pub rank: usize,
    pub world_size: usize,
    pub local_rank: usize,
    pub local_world_size: usize,
    pub master_addr: String,
    pub master_port: u16,
    /// Longest wait for the other ranks at a barrier, and for the rendezvous, in seconds.
    pub timeout_seconds: f64,
    /// A rank whose heartbeat is older than this is reported dead (seconds).
    pub heartbeat_seconds: f64,
    /// Every rank is a client of a store someone else serves (torchrun's agent store,
    /// `TORCHELASTIC_USE_AGENT_STORE`); otherwise rank 0 serves it.
    pub agent_store: bool,
}

impl Default for WorldOptions {
    fn default() -> Self {
        WorldOptions {
            rank: 0,
            world_size: 1,
            local_rank: 0,
            local_world_size: 1,
            master_addr: "127.0.0.1".into(),
            master_port: 29500,
            timeout_seconds: 300.0,
            heartbeat_seconds: 30.0,
            agent_store: false,
        }
    }
}

impl WorldOptions {
    pub fn validate(&self) -> Result<()> {
        if self.world_size < 1 || self.rank >= self.world_size {
            return Err(Error::invalid(
                "distributed.rank",
                format!("must be below WORLD_SIZE {}, got {}", self.world_size, self.rank),
            ));
        }
        if self.local_world_size < 1 || self.local_rank >= self.local_world_size {
            return Err(Error::invalid(
                "distributed.localRank",
                format!("must be below LOCAL_WORLD_SIZE {}, got {}", self.local_world_size, self.local_rank),
            ));
        }
        if !(self.timeout_seconds > 0.0 && self.heartbeat_seconds > 0.0) {
            return Err(Error::invalid("distributed.timeoutSeconds", "timeouts must be > 0"));
        }
        Ok(())
    }
}

fn now_ms() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_millis() as i64)
}

/// A joined world: this rank's store connection, and a thread that beats its heart in the store.
pub struct World {
    pub options: WorldOptions,
    store: Arc<Store>,
    beating: Arc<AtomicBool>,
}

impl World {
    /// Opens (rank 0, unless an agent serves it) or reaches the store, then waits for every rank to
    /// arrive (`join`).
    pub fn join(options: WorldOptions) -> Result<World> {
        options.validate()?;
        let timeout = Duration::from_secs_f64(options.timeout_seconds);
        let server = options.rank == 0 && !options.agent_store;
        let store =
            Arc::new(Store::connect(&options.master_addr, options.master_port, server, options.world_size, timeout)?);
        let beating = Arc::new(AtomicBool::new(true));
        let world = World { options, store, beating };
        world.beat()?;
        world.spawn_heartbeat()?;
        world.barrier("join")?;
        Ok(world)
    }

    fn beat(&self) -> Result<()> {
        self.store.set(&format!("heartbeat/{}", self.options.rank), now_ms().to_string().as_bytes())
    }

    fn spawn_heartbeat(&self) -> Result<()> {
        let period = Duration::from_secs_f64((self.options.heartbeat_seconds / 4.0).clamp(0.05, 5.0));
        let (store, beating, rank) = (Arc::clone(&self.store), Arc::clone(&self.beating), self.options.rank);
        std::thread::Builder::new()
            .name(format!("heartbeat-{rank}"))
            .spawn(move || {
                while beating.load(Ordering::Relaxed) {
                    if store.set(&format!("heartbeat/{rank}"), now_ms().to_string().as_bytes()).is_err() {
                        break;
                    }
                    std::thread::sleep(period);
                }
            })
            .map_err(|e| Error::Distributed(format!("cannot start the heartbeat thread: {e}")))?;
        Ok(())
    }

    pub fn store(&self) -> &Store {
        &self.store
    }

    /// Milliseconds since `rank` last beat, if it ever did.
    fn silence_ms(&self, rank: usize) -> Result<Option<i64>> {
        let key = format!("heartbeat/{rank}");
        if !self.store.check(&key)? {
            return Ok(None);
        }
        let text = String::from_utf8_lossy(&self.store.get(&key)?).into_owned();
        Ok(text.parse::<i64>().ok().map(|t| now_ms() - t))
    }

    /// Waits until every rank has reached barrier `name`. A rank whose heartbeat stopped (it died or
    /// hangs without its heartbeat thread) fails the wait at once, by rank; otherwise the wait gives up
    /// after `timeoutSeconds`, naming the ranks that did not arrive.
    pub fn barrier(&self, name: &str) -> Result<()> {
        let arrived = format!("barrier/{name}/{}", self.options.rank);
        self.store.set(&arrived, b"1")?;
        let started = Instant::now();
        let limit = Duration::from_secs_f64(self.options.timeout_seconds);
        let dead_after = (self.options.heartbeat_seconds * 1000.0) as i64;
        loop {
            let mut missing = Vec::new();
            for rank in 0..self.options.world_size {
                if !self.store.check(&format!("barrier/{name}/{rank}"))? {
                    missing.push(rank);
                }
            }
            if missing.is_empty() {
                return Ok(());
            }
            for &rank in &missing {
                if let Some(silent) = self.silence_ms(rank)? {
                    if silent > dead_after {
                        return Err(Error::Distributed(format!(
                            "rank {rank} stopped (no heartbeat for {:.1} s) before barrier `{name}`; this is rank {}",
                            silent as f64 / 1000.0,
                            self.options.rank
                        )));
                    }
                }
            }
            if started.elapsed() > limit {
                return Err(Error::Distributed(format!(
                    "rank(s) {missing:?} did not reach barrier `{name}` within {} s (distributed.timeoutSeconds); this is rank {}",
                    self.options.timeout_seconds, self.options.rank
                )));
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl World {
    /// Leaves the world after a last barrier; rank 0 (which serves the store) waits until every other
    /// rank has passed it, so none loses the store while it still reads it.
    pub fn leave(self) -> Result<()> {
        self.barrier("leave")?;
        self.store.set(&format!("left/{}", self.options.rank), b"1")?;
        if self.options.rank == 0 && !self.options.agent_store {
            let limit = Duration::from_secs(10);
            for rank in 1..self.options.world_size {
                self.store.wait(&format!("left/{rank}"), limit)?;
            }
        }
        Ok(())
    }
}

impl Drop for World {
    fn drop(&mut self) {
        self.beating.store(false, Ordering::Relaxed);
    }
}
