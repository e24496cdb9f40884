//! [`AdminError`]: why an admin request or the admin server failed, and how each
//! failure is shown: a one-line plain-text reason for the legacy web API and pages,
//! a stable JSON body for `/api/v1/`.

use std::net::SocketAddr;

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};

use crate::control::ControlError;
use crate::ops::{Kind, OpError};

/// Why an admin request was refused, or the admin server could not start.
///
/// Messages never carry internals (paths of the machine, system errors of hooks):
/// those are logged where they happen and replaced by a generic message.
#[derive(Debug, thiserror::Error)]
pub enum AdminError {
    /// A required parameter is absent or empty.
    #[error("missing parameter {0:?}")]
    MissingParameter(&'static str),
    /// A parameter has a value that cannot be used.
    #[error("bad parameter {name:?}: {reason}")]
    BadParameter {
        /// The parameter's name.
        name: &'static str,
        /// What is wrong with it.
        reason: String,
    },
    /// The request as a whole cannot be read (body, encoding).
    #[error("bad request: {0}")]
    BadRequest(String),
    /// No such service, group, host, listener or user.
    #[error("{0}")]
    NotFound(String),
    /// The change is refused by a rule of the model (last host of the enabled
    /// group, the enabled group itself, a duplicate name, a port in use, …).
    #[error("{0}")]
    Conflict(String),
    /// Credentials are missing or wrong.
    #[error("{0}")]
    Unauthorized(&'static str),
    /// The user may not do this (read-only access, cross-site request).
    #[error("{0}")]
    Forbidden(String),
    /// The request's `Host` is none of this server's names (DNS rebinding).
    #[error("{0}")]
    MisdirectedHost(String),
    /// A change sent with a method this server does not take changes by
    /// (`changesRequirePost`).
    #[error("{0}")]
    MethodNotAllowed(String),
    /// The request body is larger than the given number of bytes.
    #[error("request body larger than {0} bytes")]
    PayloadTooLarge(usize),
    /// The client took too long to send its request.
    #[error("request not received in time")]
    RequestTimeout,
    /// Too many failed logins from this address; retry after the given seconds.
    #[error("too many failed logins; retry in {0} s")]
    TooManyRequests(u64),
    /// A feature this server was not set up with (no log file, no save hook).
    #[error("{0}")]
    NotConfigured(&'static str),
    /// The balancer is shutting down.
    #[error("the balancer is shutting down")]
    ShuttingDown,
    /// Something the change needs cannot be reached now (fleet mode: etcd);
    /// nothing was changed.
    #[error("{0}")]
    Unavailable(String),
    /// Something failed inside; the details were logged.
    #[error("internal error: {0}")]
    Internal(&'static str),
    /// The admin server has no users and its address is not loopback.
    #[error(
        "no admin users are configured: the admin web server on {0} would be open to \
         anyone; add a <user> or listen on a loopback address"
    )]
    NoUsersOnPublicAddress(SocketAddr),
    /// The admin address could not be bound.
    #[error("cannot listen on {listen} for the admin web server: {source}")]
    Bind {
        /// The address as configured.
        listen: String,
        /// What the system said.
        source: std::io::Error,
    },
    /// The TLS certificate or key could not be loaded or created.
    #[error("admin TLS: {0}")]
    Tls(String),
}

impl AdminError {
    /// The HTTP status this error is answered with.
    pub fn status(&self) -> StatusCode {
        match self {
            AdminError::MissingParameter(_)
            | AdminError::BadParameter { .. }
            | AdminError::BadRequest(_) => StatusCode::BAD_REQUEST,
            AdminError::NotFound(_) => StatusCode::NOT_FOUND,
            AdminError::Conflict(_) => StatusCode::CONFLICT,
            AdminError::Unauthorized(_) => StatusCode::UNAUTHORIZED,
            AdminError::Forbidden(_) => StatusCode::FORBIDDEN,
            AdminError::MisdirectedHost(_) => StatusCode::MISDIRECTED_REQUEST,
            AdminError::MethodNotAllowed(_) => StatusCode::METHOD_NOT_ALLOWED,
            AdminError::TooManyRequests(_) => StatusCode::TOO_MANY_REQUESTS,
            AdminError::PayloadTooLarge(_) => StatusCode::PAYLOAD_TOO_LARGE,
            AdminError::RequestTimeout => StatusCode::REQUEST_TIMEOUT,
            AdminError::NotConfigured(_) => StatusCode::NOT_IMPLEMENTED,
            AdminError::ShuttingDown | AdminError::Unavailable(_) => {
                StatusCode::SERVICE_UNAVAILABLE
            }
            AdminError::Internal(_)
            | AdminError::NoUsersOnPublicAddress(_)
            | AdminError::Bind { .. }
            | AdminError::Tls(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    /// A stable machine-readable code for the JSON body.
    pub fn code(&self) -> &'static str {
        match self {
            AdminError::MissingParameter(_) => "missing_parameter",
            AdminError::BadParameter { .. } => "bad_parameter",
            AdminError::BadRequest(_) => "bad_request",
            AdminError::NotFound(_) => "not_found",
            AdminError::Conflict(_) => "conflict",
            AdminError::Unauthorized(_) => "unauthorized",
            AdminError::Forbidden(_) => "forbidden",
            AdminError::MisdirectedHost(_) => "misdirected_request",
            AdminError::MethodNotAllowed(_) => "method_not_allowed",
            AdminError::TooManyRequests(_) => "too_many_requests",
            AdminError::PayloadTooLarge(_) => "payload_too_large",
            AdminError::RequestTimeout => "request_timeout",
            AdminError::NotConfigured(_) => "not_configured",
            AdminError::ShuttingDown => "shutting_down",
            AdminError::Unavailable(_) => "unavailable",
            _ => "internal",
        }
    }

    /// The error as a plain-text response: the legacy web API and the pages.
    pub(crate) fn plain(&self) -> Response {
        let mut response = (self.status(), format!("{self}\n")).into_response();
        self.add_headers(&mut response);
        response
    }

    /// The error as `{"error": {"code": …, "message": …}}`: the JSON API.
    pub(crate) fn json(&self) -> Response {
        let body = serde_json::json!({
            "error": { "code": self.code(), "message": self.to_string() }
        });
        let mut response = (self.status(), axum::Json(body)).into_response();
        self.add_headers(&mut response);
        response
    }

    fn add_headers(&self, response: &mut Response) {
        let headers = response.headers_mut();
        match self {
            AdminError::Unauthorized(_) => {
                headers.insert(
                    header::WWW_AUTHENTICATE,
                    HeaderValue::from_static("Basic realm=\"txlb\", charset=\"UTF-8\""),
                );
            }
            AdminError::TooManyRequests(secs) => {
                if let Ok(v) = HeaderValue::from_str(&secs.to_string()) {
                    headers.insert(header::RETRY_AFTER, v);
                }
            }
            AdminError::MethodNotAllowed(_) => {
                headers.insert(header::ALLOW, HeaderValue::from_static("POST"));
            }
            // The rest of the request may still be on its way: close rather
            // than read it.
            AdminError::PayloadTooLarge(_) | AdminError::RequestTimeout => {
                headers.insert(header::CONNECTION, HeaderValue::from_static("close"));
            }
            _ => {}
        }
    }
}

/// Legacy and page handlers answer errors as plain text.
impl IntoResponse for AdminError {
    fn into_response(self) -> Response {
        self.plain()
    }
}

/// An [`AdminError`] answered as the JSON API's error body.
#[derive(Debug)]
pub(crate) struct ApiError(pub AdminError);

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        self.0.json()
    }
}

impl<E: Into<AdminError>> From<E> for ApiError {
    fn from(e: E) -> Self {
        ApiError(e.into())
    }
}

impl From<OpError> for AdminError {
    fn from(e: OpError) -> Self {
        let message = e.to_string();
        match (e.kind(), e) {
            (_, OpError::Missing { name, .. }) => AdminError::MissingParameter(name),
            (_, OpError::Bad { name, reason, .. }) => AdminError::BadParameter { name, reason },
            (_, OpError::NotConfigured(what)) => AdminError::NotConfigured(what),
            (_, OpError::Internal(what)) => AdminError::Internal(what),
            (Kind::Invalid, _) => AdminError::BadRequest(message),
            (Kind::NotFound, _) => AdminError::NotFound(message),
            (Kind::ShuttingDown, _) => AdminError::ShuttingDown,
            (Kind::Unavailable, _) => AdminError::Unavailable(message),
            (Kind::Conflict | Kind::NotConfigured | Kind::Internal, _) => {
                AdminError::Conflict(message)
            }
        }
    }
}

impl From<ControlError> for AdminError {
    fn from(e: ControlError) -> Self {
        OpError::from(e).into()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn json_body_is_stable() {
        let r = AdminError::MissingParameter("service").json();
        assert_eq!(r.status(), StatusCode::BAD_REQUEST);
        let body = axum::body::to_bytes(r.into_body(), 1 << 16).await.unwrap();
        let v: serde_json::Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(v["error"]["code"], "missing_parameter");
        assert_eq!(v["error"]["message"], "missing parameter \"service\"");
    }

    #[test]
    fn control_errors_map_to_statuses() {
        let e: AdminError = ControlError::UnknownService("x".into()).into();
        assert_eq!(e.status(), StatusCode::NOT_FOUND);
        let e: AdminError = ControlError::LastHostOfEnabledGroup {
            service: "s".into(),
            group: "g".into(),
        }
        .into();
        assert_eq!(e.status(), StatusCode::CONFLICT);
        let e: AdminError = ControlError::BindListener {
            listen: "127.0.0.1:1".into(),
            source: std::io::Error::from(std::io::ErrorKind::AddrInUse),
        }
        .into();
        assert_eq!(
            e.to_string(),
            "cannot listen on 127.0.0.1:1: address already in use"
        );
    }

    #[test]
    fn unauthorized_asks_for_basic_auth() {
        let r = AdminError::Unauthorized("credentials required").plain();
        assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
        assert!(
            r.headers()[header::WWW_AUTHENTICATE]
                .to_str()
                .unwrap()
                .starts_with("Basic")
        );
    }
}
