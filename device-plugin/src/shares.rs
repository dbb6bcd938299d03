//! What a node advertises: every device split into shares with IDs that stay the same
//! across restarts (they are derived from the device's stable ID), and the packing of
//! preferred allocations onto the fewest devices.

use std::collections::{BTreeMap, BTreeSet};

use kaas_executor::Share;
use kaas_executor::backend::DeviceInfo;

/// Extended resource of GPU shares.
pub const GPU_RESOURCE: &str = "kaas.dev/gpu-share";
/// Extended resource of CPU (WebAssembly) shares.
pub const CPU_RESOURCE: &str = "kaas.dev/cpu-share";

/// One advertised share.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ShareEntry {
    /// Device ID as the kubelet sees it, also the executor's share ID.
    pub id: String,
    /// Index of the device in the executor's device list.
    pub device: usize,
    /// Stable ID of the device (GPU UUID or `cpu`).
    pub device_id: String,
}

/// One extended resource and its shares.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ResourcePlan {
    /// Extended resource name.
    pub resource: String,
    /// File name of the plugin's socket in the plugin directory.
    pub socket_name: String,
    /// Shares in ID order.
    pub shares: Vec<ShareEntry>,
}

impl ResourcePlan {
    /// The share with this ID.
    pub fn get(&self, id: &str) -> Option<&ShareEntry> {
        self.shares.iter().find(|s| s.id == id)
    }
}

/// ID of share `i` of a device. Stable: a function of the device's own stable ID.
pub fn share_id(device_id: &str, i: u32) -> String {
    format!("{device_id}-s{i}")
}

/// The resources of a node and the executor shares behind them: `gpu_shares` per GPU and
/// `cpu_shares` for each CPU device, each share with weight 1 and an equal slice of its
/// device's memory as quota. A resource with no shares is not advertised.
pub fn plan(devices: &[DeviceInfo], gpu_shares: u32, cpu_shares: u32) -> (Vec<ResourcePlan>, Vec<Share>) {
    let mut gpu = ResourcePlan {
        resource: GPU_RESOURCE.into(),
        socket_name: "kaas-gpu-share.sock".into(),
        shares: Vec::new(),
    };
    let mut cpu = ResourcePlan {
        resource: CPU_RESOURCE.into(),
        socket_name: "kaas-cpu-share.sock".into(),
        shares: Vec::new(),
    };
    let mut exec = Vec::new();
    for (device, info) in devices.iter().enumerate() {
        let (target, n) = if info.kind == "gpu" { (&mut gpu, gpu_shares) } else { (&mut cpu, cpu_shares) };
        for i in 0..n {
            let id = share_id(&info.id, i);
            target.shares.push(ShareEntry { id: id.clone(), device, device_id: info.id.clone() });
            exec.push(Share { id, device, weight: 1, memory_quota: info.memory_bytes / u64::from(n) });
        }
    }
    let plans = [gpu, cpu].into_iter().filter(|p| !p.shares.is_empty()).collect();
    (plans, exec)
}

/// Why a preferred allocation cannot be made.
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub enum PackError {
    /// An ID that is not one of this resource's shares.
    #[error("unknown share {0:?}")]
    Unknown(String),
    /// More must-include IDs than the size, or fewer available than the size.
    #[error("cannot pick {size} shares from {available} available ({must} must be included)")]
    Size {
        /// Requested allocation size.
        size: usize,
        /// Distinct available IDs.
        available: usize,
        /// Distinct must-include IDs.
        must: usize,
    },
}

/// Picks `size` shares out of `available`, including every one of `must_include`, on as
/// few devices as possible: first the rest of the devices already used by the
/// must-include shares, then the devices with the most available shares. Greedy largest
/// first is optimal here because shares of a device are interchangeable.
pub fn pack(
    plan: &ResourcePlan,
    available: &[String],
    must_include: &[String],
    size: usize,
) -> Result<Vec<String>, PackError> {
    let device_of =
        |id: &String| plan.get(id).map(|s| s.device).ok_or_else(|| PackError::Unknown(id.clone()));
    let must: BTreeSet<&String> = must_include.iter().collect();
    let avail: BTreeSet<&String> = available.iter().chain(must_include).collect();
    if must.len() > size || avail.len() < size {
        return Err(PackError::Size { size, available: avail.len(), must: must.len() });
    }
    let mut picked: Vec<String> = must.iter().map(|s| s.to_string()).collect();
    let used: BTreeSet<usize> = must.iter().map(|id| device_of(id)).collect::<Result<_, _>>()?;
    let mut free: BTreeMap<usize, Vec<&String>> = BTreeMap::new();
    for id in avail.iter().filter(|id| !must.contains(*id)) {
        free.entry(device_of(id)?).or_default().push(id);
    }
    let mut order: Vec<(usize, Vec<&String>)> = free.into_iter().collect();
    // Used devices first, then by available shares descending; device index breaks ties.
    order.sort_by_key(|(d, ids)| (!used.contains(d), std::cmp::Reverse(ids.len()), *d));
    for (_, ids) in order {
        for id in ids {
            if picked.len() == size {
                break;
            }
            picked.push(id.clone());
        }
    }
    picked.sort();
    Ok(picked)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dev(id: &str, kind: &str) -> DeviceInfo {
        DeviceInfo { id: id.into(), kind: kind.into(), model: "m".into(), memory_bytes: 8 << 30, slots: 4 }
    }

    fn ids(v: &[&str]) -> Vec<String> {
        v.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn plan_splits_devices_into_stable_shares_with_memory_quotas() {
        let devices = [dev("GPU-aaa", "gpu"), dev("GPU-bbb", "gpu"), dev("cpu", "cpu")];
        let (plans, exec) = plan(&devices, 2, 3);
        assert_eq!(plans.len(), 2);
        assert_eq!(plans[0].resource, GPU_RESOURCE);
        let gpu: Vec<_> = plans[0].shares.iter().map(|s| s.id.as_str()).collect();
        assert_eq!(gpu, ["GPU-aaa-s0", "GPU-aaa-s1", "GPU-bbb-s0", "GPU-bbb-s1"]);
        assert_eq!(plans[1].resource, CPU_RESOURCE);
        assert_eq!(plans[1].shares.len(), 3);
        assert_eq!(exec.len(), 7);
        assert_eq!(exec[0].memory_quota, 4 << 30);
        assert_eq!(exec[6], Share { id: "cpu-s2".into(), device: 2, weight: 1, memory_quota: (8 << 30) / 3 });
        // Same devices, same IDs: what the kubelet checkpointed stays valid after a restart.
        assert_eq!(plan(&devices, 2, 3).0, plans);
        // No GPUs: no GPU resource at all.
        assert_eq!(plan(&[dev("cpu", "cpu")], 8, 2).0.len(), 1);
    }

    #[test]
    fn pack_uses_the_fewest_devices() {
        let (plans, _) = plan(&[dev("A", "gpu"), dev("B", "gpu"), dev("C", "gpu")], 4, 0);
        let p = &plans[0];
        // A has 1 free, B has 3 free, C has 4 free: 4 shares fit on C alone.
        let avail = ids(&["A-s0", "B-s0", "B-s1", "B-s2", "C-s0", "C-s1", "C-s2", "C-s3"]);
        assert_eq!(pack(p, &avail, &[], 4).unwrap(), ids(&["C-s0", "C-s1", "C-s2", "C-s3"]));
        // 5 need two devices: C then B.
        assert_eq!(pack(p, &avail, &[], 5).unwrap(), ids(&["B-s0", "C-s0", "C-s1", "C-s2", "C-s3"]));
        // A must-include share pins its device first.
        assert_eq!(
            pack(p, &avail, &ids(&["B-s1"]), 3).unwrap(),
            ids(&["B-s0", "B-s1", "B-s2"]),
            "the rest of B before opening C"
        );
        assert_eq!(pack(p, &avail, &[], 9), Err(PackError::Size { size: 9, available: 8, must: 0 }));
        assert_eq!(pack(p, &ids(&["Z-s0"]), &[], 1), Err(PackError::Unknown("Z-s0".into())));
    }
}
