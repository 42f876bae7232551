//! The checks every request passes before a handler: Host allow-list (DNS rebinding), CORS
//! allow-list, Bearer key.

use std::sync::Arc;

use axum::body::Body;
use axum::extract::State;
use axum::http::{header, HeaderValue, Method, Request, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use crate::error::ApiError;
use crate::AppState;

fn host_allowed(state: &AppState, host: &str) -> bool {
    // Strip the port: "[::1]:8080", "localhost:8080", "127.0.0.1".
    let name = if let Some(rest) = host.strip_prefix('[') {
        rest.split(']').next().map(|h| format!("[{h}]")).unwrap_or_default()
    } else {
        host.rsplit_once(':').map(|(h, _)| h.to_string()).unwrap_or_else(|| host.to_string())
    };
    let name = name.to_ascii_lowercase();
    if name.is_empty() {
        return false;
    }
    ["localhost", "127.0.0.1", "[::1]"].contains(&name.as_str()) || state.config.allowed_hosts.iter().any(|h| h.eq_ignore_ascii_case(&name))
}

/// Constant-time comparison, so the key cannot be guessed byte by byte from timings.
fn same(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

fn needs_key(path: &str) -> bool {
    !(path == "/health" || path == "/v1/models" || path.starts_with("/v1/models/"))
}

pub async fn guard(State(state): State<Arc<AppState>>, req: Request<Body>, next: Next) -> Response {
    let host = req.headers().get(header::HOST).and_then(|h| h.to_str().ok()).unwrap_or("");
    if !host_allowed(&state, host) {
        return ApiError::forbidden("The Host header is not one this server answers to (DNS rebinding protection).").into_response();
    }
    let origin = req.headers().get(header::ORIGIN).and_then(|o| o.to_str().ok()).map(str::to_string);
    let allowed_origin = origin.as_ref().filter(|o| state.config.cors_origins.iter().any(|a| a == *o)).cloned();
    if req.method() == Method::OPTIONS {
        let Some(o) = allowed_origin else {
            return ApiError::forbidden("CORS: this origin is not allowed.").into_response();
        };
        let mut r = StatusCode::NO_CONTENT.into_response();
        let h = r.headers_mut();
        h.insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, HeaderValue::from_str(&o).unwrap_or(HeaderValue::from_static("null")));
        h.insert(header::ACCESS_CONTROL_ALLOW_METHODS, HeaderValue::from_static("GET, POST, OPTIONS"));
        h.insert(header::ACCESS_CONTROL_ALLOW_HEADERS, HeaderValue::from_static("authorization, content-type"));
        h.insert(header::VARY, HeaderValue::from_static("Origin"));
        return r;
    }
    if let Some(key) = &state.config.api_key {
        if needs_key(req.uri().path()) {
            let given = req
                .headers()
                .get(header::AUTHORIZATION)
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.strip_prefix("Bearer "))
                .unwrap_or("");
            if given.is_empty() || !same(given.as_bytes(), key.as_bytes()) {
                return ApiError::unauthorized().into_response();
            }
        }
    }
    let mut r = next.run(req).await;
    if let Some(o) = allowed_origin {
        if let Ok(v) = HeaderValue::from_str(&o) {
            r.headers_mut().insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, v);
            r.headers_mut().insert(header::VARY, HeaderValue::from_static("Origin"));
        }
    }
    r
}
