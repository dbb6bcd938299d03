//! From the `SchedulingPolicy` resource to the scheduler's configuration.

use kaas_crds::{AdmissionMode, CacheEviction, Granularity, Isolation, PolicyName, SchedulingPolicySpec};
use kaas_scheduler::policy::{ParamValue, PartitionEntry};
use kaas_scheduler::{PolicyConfig, Registry, SchedulerConfig};

/// The scheduler configuration a `SchedulingPolicy` spec describes; parameters the
/// policy does not take are left out, and the result is checked by building the policy.
pub fn scheduler_config(spec: &SchedulingPolicySpec) -> Result<SchedulerConfig, kaas_scheduler::ConfigError> {
    let name = match spec.policy {
        PolicyName::Balance => "balance",
        PolicyName::Exclusive => "exclusive",
        PolicyName::Static => "static",
        PolicyName::CfsAffinity => "cfs-affinity",
        PolicyName::Edf => "edf",
        PolicyName::SloAware => "slo-aware",
        PolicyName::MqfqSticky => "mqfq-sticky",
    };
    let p = &spec.parameters;
    let mut policy = PolicyConfig::named(name);
    let mut set = |k: &str, v: Option<f64>| {
        if let Some(v) = v {
            policy.params.insert(k.into(), ParamValue::Number(v));
        }
    };
    match name {
        "cfs-affinity" => set("affinityPenalty", p.affinity_penalty),
        "mqfq-sticky" => {
            set("throttleMs", p.throttle_ms);
            set("keepAliveMs", p.keep_alive_ms);
        }
        "static" => {
            let parts = p
                .partitions
                .iter()
                .map(|x| PartitionEntry { function: x.function.clone(), devices: x.devices })
                .collect();
            policy.params.insert("partitions".into(), ParamValue::Partitions(parts));
        }
        _ => {}
    }
    Registry::builtin().build(&policy)?;
    Ok(SchedulerConfig {
        policy,
        admission: match spec.admission {
            AdmissionMode::None => kaas_scheduler::AdmissionMode::None,
            AdmissionMode::Deadline => kaas_scheduler::AdmissionMode::Deadline,
            AdmissionMode::TokenBucket => kaas_scheduler::AdmissionMode::TokenBucket,
        },
        token_bucket_burst: p.token_bucket_burst.unwrap_or(10.0),
        deadline_headroom: p.deadline_headroom.unwrap_or(0.1),
        eviction: match spec.cache_eviction {
            CacheEviction::Lru => kaas_scheduler::Eviction::Lru,
            CacheEviction::Gdsf => kaas_scheduler::Eviction::Gdsf,
        },
        granularity: match spec.granularity {
            Granularity::Request => kaas_scheduler::Granularity::Request,
            Granularity::Kernel => kaas_scheduler::Granularity::Kernel,
        },
        isolation: match spec.isolation {
            Isolation::Namespace => kaas_scheduler::Isolation::Namespace,
            Isolation::Shared => kaas_scheduler::Isolation::Shared,
        },
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn isolation_defaults_to_namespace_and_reaches_the_executor_config() {
        let spec: SchedulingPolicySpec = serde_json::from_str(r#"{"policy":"edf"}"#).unwrap();
        assert_eq!(scheduler_config(&spec).unwrap().isolation, kaas_scheduler::Isolation::Namespace);
        let spec: SchedulingPolicySpec =
            serde_json::from_str(r#"{"policy":"edf","isolation":"shared"}"#).unwrap();
        let config = scheduler_config(&spec).unwrap();
        assert_eq!(config.isolation, kaas_scheduler::Isolation::Shared);
        // What SetPolicy carries to every executor.
        assert!(serde_json::to_string(&config).unwrap().contains(r#""isolation":"shared""#));
        assert!(serde_json::from_str::<SchedulingPolicySpec>(r#"{"isolation":"none"}"#).is_err());
    }
}
