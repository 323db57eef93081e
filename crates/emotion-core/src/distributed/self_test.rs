//! The smallest real run of a process group's collectives, for the tests: a world of one process on a
//! free local port, a group on the backend asked for, then each collective the trainer uses (sum, max,
//! broadcast, and the differentiable sum with its backward). Alone in its world a collective returns
//! its input, so the figures say the shim, the backend's initialisation and its kernels ran; on a GPU
//! host this is the NCCL check a single GPU allows (NCCL cannot put two ranks on one device).

use super::group::{Backend, ProcessGroup, ReduceOp};
use super::{World, WorldOptions};
use crate::error::{Error, Result};
use schemars::JsonSchema;
use serde::Serialize;
use tch::{Device, Kind, Tensor};

#[derive(Debug, Clone, Serialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
/// What `processGroupSelfTest` saw: each collective's output on [1, 2, 3] and the gradient of the
/// differentiable sum of x·x (2x: 2, 4, 6).
pub struct GroupSelfTest {
    pub backend: String,
    pub device: String,
    pub sum: Vec<f32>,
    pub max: Vec<f32>,
    pub broadcast: Vec<f32>,
    pub gradient: Vec<f32>,
}

/// Runs the collectives of a `backend` group on `device` in a world of one.
pub fn self_test(backend: Backend, device: Device) -> Result<GroupSelfTest> {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map_err(|e| Error::Distributed(format!("no free local port for the self-test: {e}")))?
        .port();
    let options = WorldOptions { master_port: port, timeout_seconds: 30.0, ..WorldOptions::default() };
    let world = World::join(options)?;
    let group = ProcessGroup::new(&world, "self-test", backend, device)?;
    let input = || Tensor::f_from_slice(&[1.0f32, 2.0, 3.0])?.f_to_device(group.device);
    let read = |t: &Tensor| -> Result<Vec<f32>> { Ok(Vec::<f32>::try_from(&t.f_to_device(Device::Cpu)?)?) };
    let (sum, max, broadcast) = (input()?, input()?, input()?);
    group.all_reduce(&sum, ReduceOp::Sum)?;
    group.all_reduce(&max, ReduceOp::Max)?;
    group.broadcast(&broadcast, 0)?;
    let x = Tensor::f_from_slice(&[1.0f32, 2.0, 3.0])?.f_to_device(device)?.f_set_requires_grad(true)?;
    let summed = group.all_reduce_sum_differentiable(&x.f_mul(&x)?)?;
    summed.f_sum(Kind::Float)?.f_backward()?;
    let result = GroupSelfTest {
        backend: format!("{backend:?}").to_lowercase(),
        device: crate::device::device_name(device),
        sum: read(&sum)?,
        max: read(&max)?,
        broadcast: read(&broadcast)?,
        gradient: read(&x.grad())?,
    };
    drop(group);
    world.leave()?;
    Ok(result)
}
