//! What the gateway answers for a request it does not send: admission's rejections as
//! errors, and inputs that do not match the function's buffers.

use super::*;

pub(super) fn rejection(r: Rejection) -> GatewayError {
    match r {
        Rejection::RateLimited { retry_after } => GatewayError::Rejected {
            reason: format!("reserved rate exceeded; {}", Rejection::RateLimited { retry_after }),
            retry_after_ms: (retry_after / 1_000_000).max(1),
        },
        Rejection::Warming { retry_after, .. } => {
            GatewayError::Rejected { reason: r.to_string(), retry_after_ms: (retry_after / 1_000_000).max(1) }
        }
        Rejection::DeadlineUnmeetable { .. } => {
            GatewayError::Rejected { reason: r.to_string(), retry_after_ms: 100 }
        }
        Rejection::NoCapacity => GatewayError::Unavailable("no healthy device can run this function".into()),
        Rejection::Refused(why) => GatewayError::Unavailable(why),
        Rejection::UnknownFunction => GatewayError::NotFound("unknown function".into()),
    }
}

pub(super) fn check_inputs(
    def: &proto::FunctionDef,
    inputs: &BTreeMap<String, Vec<u8>>,
) -> Result<(), GatewayError> {
    let buffers =
        def.buffers.iter().map(|b| (b.name.as_str(), b.kind == proto::BufferKind::Input as i32, b.size));
    kaas_executor::model::check_inputs(buffers, inputs).map_err(GatewayError::BadInput)
}
