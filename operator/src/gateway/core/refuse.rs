//! What the gateway refuses before routing: inputs that do not match the function's
//! buffers, and deadlines outside what it will hold a request for.

use super::*;

/// The longest relative deadline a request may ask for. Longer ones are refused rather
/// than held: nothing serverless waits an hour, and deadline arithmetic stays far from
/// overflow.
pub const MAX_DEADLINE: Duration = Duration::from_secs(3600);

pub(super) fn check_inputs(
    def: &proto::FunctionDef,
    inputs: &BTreeMap<String, Bytes>,
) -> Result<(), GatewayError> {
    let buffers =
        def.buffers.iter().map(|b| (b.name.as_str(), b.kind == proto::BufferKind::Input as i32, b.size));
    kaas_executor::model::check_inputs(buffers, inputs).map_err(GatewayError::BadInput)
}

/// The request's relative deadline: as asked (0 or none: the function's), at most
/// [`MAX_DEADLINE`].
pub(super) fn relative_deadline(
    def: &proto::FunctionDef,
    asked: Option<Duration>,
) -> Result<Duration, GatewayError> {
    let rel = asked.filter(|d| !d.is_zero()).unwrap_or(Duration::from_millis(def.deadline_ms as u64));
    if rel > MAX_DEADLINE {
        return Err(GatewayError::BadInput(format!(
            "deadline of {} ms exceeds the maximum of {} ms",
            rel.as_millis(),
            MAX_DEADLINE.as_millis()
        )));
    }
    if rel.is_zero() {
        return Err(GatewayError::BadInput(
            "the function declares no deadline and the request gives none".into(),
        ));
    }
    Ok(rel)
}
