//! Driver errors → gRPC statuses (docs/nomad-contract.md, *Errors*). Never UNAVAILABLE or CANCELLED for
//! application errors; a retryable start failure carries Nomad's RecoverableError detail.

use prost::Message;
use tonic::{Code, Status};

use crate::driver::DriverError;
use crate::proto::structs::RecoverableError;

const RECOVERABLE_TYPE_URL: &str =
    "type.googleapis.com/hashicorp.nomad.plugins.shared.structs.RecoverableError";

/// `google.rpc.Status`, encoded by hand (three fields) to avoid another dependency.
#[derive(Clone, PartialEq, prost::Message)]
struct RpcStatus {
    #[prost(int32, tag = "1")]
    code: i32,
    #[prost(string, tag = "2")]
    message: String,
    #[prost(message, repeated, tag = "3")]
    details: Vec<prost_types::Any>,
}

/// A FAILED_PRECONDITION status whose details mark it recoverable.
pub fn recoverable(message: impl Into<String>) -> Status {
    let message = message.into();
    let details = RpcStatus {
        code: Code::FailedPrecondition as i32,
        message: message.clone(),
        details: vec![prost_types::Any {
            type_url: RECOVERABLE_TYPE_URL.into(),
            value: RecoverableError { recoverable: true }.encode_to_vec(),
        }],
    }
    .encode_to_vec();
    Status::with_details(Code::FailedPrecondition, message, details.into())
}

/// The one mapping from driver errors to statuses.
pub fn to_status(e: DriverError) -> Status {
    if e.is_recoverable() {
        return recoverable(e.to_string());
    }
    let code = match &e {
        DriverError::NotFound => Code::NotFound,
        DriverError::AlreadyExists(_) => Code::AlreadyExists,
        DriverError::InvalidConfig(_)
        | DriverError::InvalidPlan(_)
        | DriverError::InvalidArgument(_)
        | DriverError::State(_) => Code::InvalidArgument,
        DriverError::StillRunning => Code::FailedPrecondition,
        DriverError::Systemd(_) | DriverError::Recover(_) => Code::Internal,
        DriverError::Exec(crate::exec::ExecError::NotRunning) => Code::FailedPrecondition,
        DriverError::Exec(crate::exec::ExecError::EmptyCommand) => Code::InvalidArgument,
        DriverError::Exec(_) => Code::Internal,
    };
    Status::new(code, e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn recoverable_details_are_the_bytes_nomad_decodes() {
        let st = recoverable("systemd: job failed");
        assert_eq!(st.code(), Code::FailedPrecondition);
        let want = "CAkSE3N5c3RlbWQ6IGpvYiBmYWlsZWQaUQpLdHlwZS5nb29nbGVhcGlzLmNvbS9oYXNoaWNvcnAubm9tYWQucGx1Z2lucy5zaGFyZWQuc3RydWN0cy5SZWNvdmVyYWJsZUVycm9yEgIIAQ==";
        assert_eq!(base64(st.details()), want);
    }

    #[test]
    fn not_found_and_transient_errors() {
        assert_eq!(to_status(DriverError::NotFound).code(), Code::NotFound);
        assert_eq!(
            to_status(DriverError::NotFound).message(),
            "task not found for given id"
        );
        let st = to_status(DriverError::Systemd(
            crate::systemd::SystemdError::Unreachable("bus down".into()),
        ));
        assert_eq!(st.code(), Code::FailedPrecondition);
        assert!(!st.details().is_empty());
        let st = to_status(DriverError::InvalidArgument("config.x: bad".into()));
        assert_eq!(st.code(), Code::InvalidArgument);
        assert!(st.details().is_empty());
    }

    fn base64(b: &[u8]) -> String {
        const A: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
        let mut out = String::new();
        for chunk in b.chunks(3) {
            let n = chunk
                .iter()
                .enumerate()
                .fold(0u32, |acc, (i, &x)| acc | u32::from(x) << (16 - 8 * i));
            for i in 0..4 {
                if i <= chunk.len() {
                    out.push(A[((n >> (18 - 6 * i)) & 63) as usize] as char);
                } else {
                    out.push('=');
                }
            }
        }
        out
    }
}
