//! [`ConvertError`]: why a wire message could not become a core or storage
//! value.

/// Wire input that does not make sense. The receiver drops the message (or
/// refuses the request) and reports this; it never panics on it.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ConvertError {
    #[error("{message}: required field `{field}` is missing")]
    Missing {
        message: &'static str,
        field: &'static str,
    },
    #[error("{message}: field `{field}` has unknown value {value}")]
    UnknownEnum {
        message: &'static str,
        field: &'static str,
        value: i32,
    },
    #[error("{message}: field `{field}` names node 0, which is never a valid node id")]
    ZeroNodeId {
        message: &'static str,
        field: &'static str,
    },
    #[error("{message}: {reason}")]
    Invalid {
        message: &'static str,
        reason: String,
    },
}
