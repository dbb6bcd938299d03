//! Node status as executors report it, and requests re-routed when their node fails.

use super::*;

impl Actor {
    pub(super) fn node_status(&mut self, name: &str, status: Option<proto::NodeStatus>) {
        let Some(ni) = self.nodes.iter().position(|n| n.name == name) else { return };
        let changed = match status {
            None => {
                let was = self.nodes[ni].up;
                self.nodes[ni].up = false;
                // A restarted executor has forgotten its functions.
                self.nodes[ni].registered.clear();
                if was {
                    warn!(node = name, "node executor unreachable");
                    self.metrics.node_failures.inc();
                }
                was
            }
            Some(s) => {
                let n = &mut self.nodes[ni];
                let shape = |d: &[proto::DeviceStatus]| -> Vec<(String, bool, u32)> {
                    d.iter().map(|x| (x.id.clone(), x.healthy, x.slots)).collect()
                };
                let changed = !n.up || shape(&n.devices) != shape(&s.devices);
                if !n.up {
                    info!(node = name, devices = s.devices.len(), "node executor up");
                }
                n.up = true;
                n.devices = s.devices;
                // What the node says is resident is warm in the model.
                let resident: Vec<(String, String)> = s
                    .resident
                    .iter()
                    .map(|r| (format!("{}/{}", r.namespace, r.name), r.device.clone()))
                    .collect();
                if changed {
                    let _ = self.rebuild();
                }
                let now = self.now();
                for (key, dev) in resident {
                    let Some(&fid) = self.fids.get(&key) else { continue };
                    if let Some(slot) = self.slots.iter().position(|(n2, d)| *n2 == ni && *d == dev) {
                        let sched = self.sched.as_mut().expect("built");
                        if !sched.is_resident(fid, DeviceId(slot as u32)) {
                            sched.preload(now, fid, DeviceId(slot as u32));
                        }
                    }
                }
                false
            }
        };
        if changed {
            let _ = self.rebuild();
        }
    }

    pub(super) fn resubmit(&mut self, gid: u64, mut p: Pending, now: Nanos) {
        let Some(&fid) = self.fids.get(&p.key) else {
            let e = GatewayError::NotFound(format!("function {} was removed", p.key));
            self.answer(p, Err(e));
            return;
        };
        let left = p.deadline.saturating_duration_since(Instant::now());
        let req = Request { function: fid, arrival: now, deadline: now + left.as_nanos() as Nanos };
        match self.sched().submit(now, req) {
            Ok(id) => {
                p.req = Some(id);
                p.dispatched = false;
                self.by_req.insert(id, gid);
                self.pending.insert(gid, p);
            }
            Err(r) => {
                let e = rejection(r);
                self.answer(p, Err(e));
            }
        }
    }
}
