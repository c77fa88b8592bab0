//! Error mapping (one function over every SDK error) and the request-counting interceptor.

use std::error::Error as StdError;
use std::sync::Arc;

use aws_sdk_dynamodb::config::http::HttpResponse;
use aws_sdk_dynamodb::config::interceptors::BeforeTransmitInterceptorContextRef;
use aws_sdk_dynamodb::config::{ConfigBag, Intercept, RuntimeComponents};
use aws_sdk_dynamodb::error::{DisplayErrorContext, ProvideErrorMetadata, SdkError};

use crate::store::{RequestCounter, StoreError};

pub(crate) type SdkErr<E> = SdkError<E, HttpResponse>;

const THROTTLING: &[&str] = &[
    "ProvisionedThroughputExceededException",
    "ThrottlingException",
    "RequestLimitExceeded",
    "Throttling",
    "TooManyRequestsException",
    "LimitExceededException",
    "InternalServerError",
    "InternalFailure",
    "ServiceUnavailable",
    "TransactionInProgressException",
    // A plain write to an item a transaction (a fenced controller write) holds at that moment.
    "TransactionConflictException",
];

pub(crate) const NOT_FOUND: &str = "ResourceNotFoundException";
pub(crate) const IN_USE: &str = "ResourceInUseException";

/// True when the service answered with this error code.
pub(crate) fn has_code<E: ProvideErrorMetadata>(err: &SdkErr<E>, code: &str) -> bool {
    err.code() == Some(code)
}

/// True when the request was rejected because its condition expression did not hold.
pub(crate) fn is_condition_failed<E: ProvideErrorMetadata>(err: &SdkErr<E>) -> bool {
    has_code(err, "ConditionalCheckFailedException")
}

/// Maps an SDK error to a [`StoreError`]. Conditional-check failures are handled at the call
/// sites before this is reached.
pub(crate) fn map_sdk_err<E>(op: &str, table: &str, err: SdkErr<E>) -> StoreError
where
    E: ProvideErrorMetadata + StdError + Send + Sync + 'static,
{
    match &err {
        SdkError::TimeoutError(_) | SdkError::DispatchFailure(_) | SdkError::ResponseError(_) => {
            StoreError::unavailable(op, DisplayErrorContext(&err))
        }
        SdkError::ServiceError(service) => {
            let code = err.code().unwrap_or("Unknown");
            let message = err.message().unwrap_or("").to_string();
            let status = service.raw().status().as_u16();
            if code == NOT_FOUND {
                StoreError::NoTable(table.to_string())
            } else if THROTTLING.contains(&code) || status >= 500 {
                StoreError::unavailable(op, format!("{code}: {message} (HTTP {status})"))
            } else {
                StoreError::backend(op, format!("{code}: {message}"))
            }
        }
        _ => StoreError::backend(op, DisplayErrorContext(&err)),
    }
}

/// Counts every HTTP attempt the client makes (pages, batches, our retries and the SDK's).
#[derive(Debug)]
pub(crate) struct CountRequests(pub(crate) Arc<RequestCounter>);

impl Intercept for CountRequests {
    fn name(&self) -> &'static str {
        "anamo::CountRequests"
    }

    fn read_before_transmit(
        &self,
        _context: &BeforeTransmitInterceptorContextRef<'_>,
        _runtime_components: &RuntimeComponents,
        _cfg: &mut ConfigBag,
    ) -> Result<(), aws_sdk_dynamodb::error::BoxError> {
        self.0.add(1);
        Ok(())
    }
}
