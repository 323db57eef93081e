//! Jobs over several processes, on libtorch's c10d: the `TCPStore` rendezvous (`store`), the world a
//! process belongs to (from the variables torchrun and our launcher set), heartbeats, and barriers that
//! name the rank they wait for when it dies or hangs. docs/DISTRIBUTED.md.

pub mod group;
pub mod self_test;
pub mod store;
pub mod sync_bn;

use crate::error::{Error, Result};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
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
    /// Longest wait for the rendezvous, and for a rank that never joined; ranks that keep beating are
    /// waited for without limit (seconds).
    pub timeout_seconds: f64,
    /// A rank whose heartbeat counter has not moved for this long is reported dead (seconds).
    pub heartbeat_seconds: f64,
    /// Every rank is a client of a store someone else serves (torchrun's agent store,
    /// `TORCHELASTIC_USE_AGENT_STORE`); otherwise rank 0 serves it.
    pub agent_store: bool,
    /// The job's attempt (torchrun's `TORCHELASTIC_RESTART_COUNT`): keys are scoped to it, so a restarted
    /// job never reads what an earlier attempt left in the agent's store.
    pub attempt: u32,
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
            attempt: 0,
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

/// A joined world: this rank's store connection (prefixed per job attempt), and a thread with a
/// connection of its own that counts this rank's heartbeat (a blocking wait on the main connection
/// holds c10d's client lock, so it must not share it).
pub struct World {
    pub options: WorldOptions,
    pub(crate) store: Store,
    /// `<attempt>/`: keys of an earlier attempt (torchrun `--max-restarts`) are never read.
    prefix: String,
    beating: Arc<AtomicBool>,
    barriers: Mutex<HashMap<String, u64>>,
}

impl World {
    /// Opens (rank 0, unless an agent serves it) or reaches the store, starts the heartbeat, then waits
    /// for every rank to arrive (`join`).
    pub fn join(options: WorldOptions) -> Result<World> {
        options.validate()?;
        let timeout = Duration::from_secs_f64(options.timeout_seconds);
        let server = options.rank == 0 && !options.agent_store;
        let (host, port) = (&options.master_addr, options.master_port);
        let store = Store::connect(host, port, server, options.world_size, timeout)?;
        let heart = Store::connect(host, port, false, options.world_size, timeout)?;
        let prefix = format!("ep/{}/", options.attempt);
        let beating = Arc::new(AtomicBool::new(true));
        let world = World { options, store, prefix, beating, barriers: Mutex::new(HashMap::new()) };
        world.spawn_heartbeat(heart)?;
        world.barrier("join")?;
        Ok(world)
    }

    pub(crate) fn key(&self, key: &str) -> String {
        format!("{}{key}", self.prefix)
    }

    fn spawn_heartbeat(&self, heart: Store) -> Result<()> {
        let period = Duration::from_secs_f64((self.options.heartbeat_seconds / 4.0).clamp(0.05, 5.0));
        let (beating, key) = (Arc::clone(&self.beating), self.key(&format!("heartbeat/{}", self.options.rank)));
        heart.add(&key, 1)?;
        std::thread::Builder::new()
            .name(format!("heartbeat-{}", self.options.rank))
            .spawn(move || {
                while beating.load(Ordering::Relaxed) && heart.add(&key, 1).is_ok() {
                    std::thread::sleep(period);
                }
            })
            .map_err(|e| Error::Distributed(format!("cannot start the heartbeat thread: {e}")))?;
        Ok(())
    }

    /// Sets `key` (under this attempt's prefix).
    pub fn set(&self, key: &str, value: &[u8]) -> Result<()> {
        self.store.set(&self.key(key), value)
    }

    /// The value of `key`, waiting for it like a barrier: a rank that reported a failure or stopped
    /// beating ends the wait, by name.
    pub fn get(&self, key: &str) -> Result<Vec<u8>> {
        let full = self.key(key);
        self.wait_until(&format!("`{key}`"), |w| w.store.check(&full))?;
        self.store.get(&full)
    }

    /// Tells the other ranks this one failed (they stop waiting for it at once), and stops its heartbeat.
    pub fn fail(&self, why: &str) {
        let _ = self.set(&format!("failed/{}", self.options.rank), why.as_bytes());
        self.close();
    }

    /// Stops the heartbeat; the store connection closes on drop.
    pub fn close(&self) {
        self.beating.store(false, Ordering::Relaxed);
    }

    /// Waits until every rank has reached barrier `name` (each call of a name is a new generation). A
    /// rank that reported a failure, or whose heartbeat stopped for `heartbeatSeconds`, ends the wait
    /// at once, by rank; ranks still beating are waited for without limit (a long fold is not a hang);
    /// a rank never seen ends it after `timeoutSeconds`.
    pub fn barrier(&self, name: &str) -> Result<()> {
        let generation = {
            let mut seen = self.barriers.lock().unwrap_or_else(|p| p.into_inner());
            let g = seen.entry(name.to_string()).or_insert(0);
            *g += 1;
            *g
        };
        let base = self.key(&format!("barrier/{name}/{generation}"));
        self.store.set(&format!("{base}/{}", self.options.rank), b"1")?;
        let ranks = self.options.world_size;
        self.wait_until(&format!("barrier `{name}`"), |w| {
            for rank in 0..ranks {
                if !w.store.check(&format!("{base}/{rank}"))? {
                    return Ok(false);
                }
            }
            Ok(true)
        })
    }

    /// The next number of a sequence `name` (1, 2, …): every rank counting the same calls gets the
    /// same numbers, so jobs made one after another in a world get keys of their own.
    pub fn next(&self, name: &str) -> u64 {
        let mut seen = self.barriers.lock().unwrap_or_else(|p| p.into_inner());
        let n = seen.entry(format!("seq/{name}")).or_insert(0);
        *n += 1;
        *n
    }

    /// After a collective failed: the rank that reported a failure or stopped beating, watched for
    /// `heartbeatSeconds` (a dead peer's heartbeat goes silent within that); `None` when every rank
    /// still looks alive (a hang, or a fault of this rank's own).
    pub fn culprit(&self) -> Option<Error> {
        let started = Instant::now();
        let limit = Duration::from_secs_f64(self.options.heartbeat_seconds * 1.5 + 0.5);
        self.wait_until("the collective that failed", |_| Ok(started.elapsed() > limit)).err()
    }

    /// Polls `done` every 50 ms, watching every other rank's failure key and heartbeat counter (timed
    /// on this machine's clock, so clocks of other machines do not matter).
    fn wait_until(&self, what: &str, mut done: impl FnMut(&World) -> Result<bool>) -> Result<()> {
        let started = Instant::now();
        let silent_limit = Duration::from_secs_f64(self.options.heartbeat_seconds);
        let never_limit = Duration::from_secs_f64(self.options.timeout_seconds);
        let mut last: Vec<(i64, Instant)> = vec![(-1, Instant::now()); self.options.world_size];
        loop {
            if done(self)? {
                return Ok(());
            }
            for rank in (0..self.options.world_size).filter(|&r| r != self.options.rank) {
                let failed = self.key(&format!("failed/{rank}"));
                if self.store.check(&failed)? {
                    let why = String::from_utf8_lossy(&self.store.get(&failed)?).into_owned();
                    return Err(self.error(format!("rank {rank} failed ({why}) while this rank waited for {what}")));
                }
                let beats = self.store.add(&self.key(&format!("heartbeat/{rank}")), 0)?;
                if beats != last[rank].0 {
                    last[rank] = (beats, Instant::now());
                } else if beats > 0 && last[rank].1.elapsed() > silent_limit {
                    let silent = last[rank].1.elapsed().as_secs_f64();
                    return Err(
                        self.error(format!("rank {rank} stopped (no heartbeat for {silent:.1} s) before {what}"))
                    );
                } else if beats == 0 && started.elapsed() > never_limit {
                    return Err(self.error(format!(
                        "rank {rank} never joined before {what} within {} s (distributed.timeoutSeconds)",
                        self.options.timeout_seconds
                    )));
                }
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    fn error(&self, message: String) -> Error {
        Error::Distributed(format!("{message}; this is rank {}", self.options.rank))
    }

    /// Leaves the world after a last barrier; rank 0 (which serves the store) waits until every other
    /// rank has passed it, so none loses the store while it still reads it.
    pub fn leave(&self) -> Result<()> {
        self.barrier("leave")?;
        self.set(&format!("left/{}", self.options.rank), b"1")?;
        if self.options.rank == 0 && !self.options.agent_store {
            for rank in 1..self.options.world_size {
                self.store.wait(&self.key(&format!("left/{rank}")), Duration::from_secs(10))?;
            }
        }
        self.close();
        Ok(())
    }
}

impl Drop for World {
    fn drop(&mut self) {
        self.close();
    }
}
