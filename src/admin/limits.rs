//! Limits that keep one admin client from holding the server's memory or
//! connections: request head size (enforced by hyper, see `serve_connection`),
//! request body size, and how long a client may take to send its head and body.

use std::time::Duration;

use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::header;
use axum::middleware::Next;
use axum::response::Response;

use super::AdminState;
use super::error::AdminError;

/// Largest request head (request line and headers), in bytes; past it hyper
/// answers 431 and closes the connection. Browsers send a few hundred bytes to
/// a couple of KiB. (hyper's own limit of 100 header lines also applies.)
pub const MAX_HEADER_BYTES: usize = 16 * 1024;

/// Largest request body, in bytes: the biggest legitimate one (a `newService`
/// with a few hosts, a user with a password) is well under 1 KiB. Past it the
/// answer is 413.
pub const MAX_BODY_BYTES: usize = 64 * 1024;

/// Default of [`AdminSettings::client_timeout`](super::AdminSettings): how long
/// a client may take to send a request head (or, on a kept-alive connection,
/// stay idle before the next one), and then its body.
pub const CLIENT_TIMEOUT: Duration = Duration::from_secs(10);

/// Most admin connections open at once, under a descriptor limit high enough
/// (see [`max_connections`](super::max_connections)).
pub const MAX_CONNECTIONS: usize = 64;

/// Reads the whole request body before the handler runs: at most
/// [`MAX_BODY_BYTES`] (413 beyond) within the settings' `client_timeout`
/// (408 past it), so no handler waits on a slow or endless body.
pub(crate) async fn read_body(
    State(state): State<AdminState>,
    request: Request,
    next: Next,
) -> Response {
    let json = request.uri().path().contains("/api/");
    let fail = |e: AdminError| if json { e.json() } else { e.plain() };
    let declared = request
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > MAX_BODY_BYTES as u64) {
        return fail(AdminError::PayloadTooLarge(MAX_BODY_BYTES));
    }
    let (parts, body) = request.into_parts();
    let read = axum::body::to_bytes(body, MAX_BODY_BYTES);
    let bytes = match tokio::time::timeout(state.settings.client_timeout, read).await {
        Err(_) => {
            tracing::debug!(path = ?parts.uri.path(), "admin request body too slow");
            return fail(AdminError::RequestTimeout);
        }
        Ok(Err(error)) => {
            // Too long without a Content-Length (chunked), or the client went.
            tracing::debug!(path = ?parts.uri.path(), %error, "admin request body refused");
            return fail(AdminError::PayloadTooLarge(MAX_BODY_BYTES));
        }
        Ok(Ok(bytes)) => bytes,
    };
    next.run(Request::from_parts(parts, Body::from(bytes)))
        .await
}

#[cfg(test)]
mod tests {
    use axum::http::StatusCode;

    use super::super::tests::{request, send, test_router};
    use super::*;

    #[tokio::test]
    async fn bodies_past_the_limit_are_refused() {
        let (app, handle, _) = test_router().await;
        let filler = "x".repeat(MAX_BODY_BYTES);
        let body = format!("service=svc&group=g&name=c&ip=127.0.0.1:3&pad={filler}");
        let response = request(&app, "POST", "/addHost", Some(&body)).await;
        assert_eq!(response.status(), StatusCode::PAYLOAD_TOO_LARGE);
        assert!(handle.stats().host("svc", "g", "c").is_none());
        let json = format!("json:{{\"name\":\"c\",\"ip\":\"127.0.0.1:3\",\"pad\":\"{filler}\"}}");
        let (status, text) = send(
            &app,
            "POST",
            "/api/v1/services/svc/groups/g/hosts",
            Some(&json),
        )
        .await;
        assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE);
        assert!(text.contains("payload_too_large"), "{text}");
        // Under the limit, the same call works.
        let (status, text) = send(
            &app,
            "POST",
            "/addHost",
            Some("service=svc&group=g&name=c&ip=127.0.0.1:3"),
        )
        .await;
        assert_eq!(status, StatusCode::OK, "{text}");
    }
}
