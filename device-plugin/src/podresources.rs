//! Who holds a share: the kubelet's PodResources API (`List`), asked when a pod's first
//! call arrives on a share socket. The answer binds that connection to the pod's namespace
//! (see `kaas_executor::share`).

use std::path::PathBuf;
use std::time::Duration;

use kaas_executor::share::ShareOwners;
use tonic::Status;

use crate::kubelet::connect;
use crate::proto::podresources::pod_resources_lister_client::PodResourcesListerClient;
use crate::proto::podresources::{ListPodResourcesRequest, ListPodResourcesResponse};

/// Where the kubelet serves the PodResources API.
pub const DEFAULT_SOCKET: &str = "/var/lib/kubelet/pod-resources/kubelet.sock";
/// Limit of one `List` call.
const LIST_TIMEOUT: Duration = Duration::from_secs(5);
/// The largest `List` answer read (a node with a thousand pods fits many times over).
const MAX_LIST_BYTES: usize = 16 << 20;

/// The kubelet's PodResources API at `socket`.
#[derive(Clone, Debug)]
pub struct PodResources {
    /// The API's unix socket.
    pub socket: PathBuf,
}

/// The namespace holding device `share` of `resource` in a `List` answer.
pub fn owner(list: &ListPodResourcesResponse, resource: &str, share: &str) -> Result<String, Status> {
    let mut holders: Vec<(&str, &str)> = list
        .pod_resources
        .iter()
        .filter(|p| {
            p.containers.iter().any(|c| {
                c.devices
                    .iter()
                    .any(|d| d.resource_name == resource && d.device_ids.iter().any(|id| id == share))
            })
        })
        .map(|p| (p.namespace.as_str(), p.name.as_str()))
        .collect();
    holders.sort_unstable();
    holders.dedup();
    match holders.as_slice() {
        [] => Err(Status::permission_denied(format!(
            "share {share:?} ({resource}) is not allocated to any pod on this node, says the kubelet's PodResources API"
        ))),
        [(ns, _), rest @ ..] if rest.iter().all(|(n, _)| n == ns) => Ok(ns.to_string()),
        several => Err(Status::permission_denied(format!(
            "share {share:?} ({resource}) is listed for pods of several namespaces ({}); refusing until the kubelet settles",
            several.iter().map(|(ns, pod)| format!("{ns}/{pod}")).collect::<Vec<_>>().join(", ")
        ))),
    }
}

#[tonic::async_trait]
impl ShareOwners for PodResources {
    async fn namespace_of(&self, resource: &str, share: &str) -> Result<String, Status> {
        let unavailable = |e: &dyn std::fmt::Display| {
            Status::unavailable(format!(
                "cannot learn which pod holds share {share:?}: kubelet PodResources API at {}: {e}",
                self.socket.display()
            ))
        };
        let channel = connect(&self.socket).await.map_err(|e| unavailable(&e))?;
        let mut client = PodResourcesListerClient::new(channel).max_decoding_message_size(MAX_LIST_BYTES);
        let list = tokio::time::timeout(LIST_TIMEOUT, client.list(ListPodResourcesRequest {}))
            .await
            .map_err(|_| unavailable(&format!("no answer within {LIST_TIMEOUT:?}")))?
            .map_err(|e| unavailable(&e.message()))?
            .into_inner();
        owner(&list, resource, share)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proto::podresources::{ContainerDevices, ContainerResources, PodResources as Pod};

    fn pod(ns: &str, name: &str, resource: &str, ids: &[&str]) -> Pod {
        Pod {
            name: name.into(),
            namespace: ns.into(),
            containers: vec![
                ContainerResources { name: "sidecar".into(), devices: vec![] },
                ContainerResources {
                    name: "main".into(),
                    devices: vec![ContainerDevices {
                        resource_name: resource.into(),
                        device_ids: ids.iter().map(|s| s.to_string()).collect(),
                    }],
                },
            ],
        }
    }

    #[test]
    fn the_pod_holding_the_share_names_the_namespace() {
        let list = ListPodResourcesResponse {
            pod_resources: vec![
                pod("team-a", "a-1", "kaas.dev/cpu-share", &["cpu-s0", "cpu-s1"]),
                pod("team-b", "b-1", "kaas.dev/cpu-share", &["cpu-s2"]),
                // The same ID under another resource is another device.
                pod("team-c", "c-1", "example.com/thing", &["cpu-s3"]),
            ],
        };
        assert_eq!(owner(&list, "kaas.dev/cpu-share", "cpu-s1").unwrap(), "team-a");
        assert_eq!(owner(&list, "kaas.dev/cpu-share", "cpu-s2").unwrap(), "team-b");
        let none = owner(&list, "kaas.dev/cpu-share", "cpu-s3").unwrap_err();
        assert_eq!(none.code(), tonic::Code::PermissionDenied);
        assert!(none.message().contains("not allocated to any pod"), "{}", none.message());
    }

    #[test]
    fn a_share_listed_for_two_namespaces_is_refused() {
        let list = ListPodResourcesResponse {
            pod_resources: vec![
                pod("team-a", "old", "kaas.dev/gpu-share", &["GPU-1-s0"]),
                pod("team-b", "new", "kaas.dev/gpu-share", &["GPU-1-s0"]),
            ],
        };
        let e = owner(&list, "kaas.dev/gpu-share", "GPU-1-s0").unwrap_err();
        assert_eq!(e.code(), tonic::Code::PermissionDenied);
        assert!(e.message().contains("team-a/old") && e.message().contains("team-b/new"), "{}", e.message());
        // Two pods of one namespace (a terminating one and its replacement) agree.
        let list = ListPodResourcesResponse {
            pod_resources: vec![
                pod("team-a", "old", "kaas.dev/gpu-share", &["GPU-1-s0"]),
                pod("team-a", "new", "kaas.dev/gpu-share", &["GPU-1-s0"]),
            ],
        };
        assert_eq!(owner(&list, "kaas.dev/gpu-share", "GPU-1-s0").unwrap(), "team-a");
    }
}
