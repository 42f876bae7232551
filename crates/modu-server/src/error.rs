//! Errors in OpenAI's schema: `{"error": {"message", "type", "param", "code"}}`, with the status
//! the `openai` SDK maps to its exception types. Client faults are always 4xx.

use axum::http::{HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};

#[derive(Debug, Clone)]
pub struct ApiError {
    pub status: StatusCode,
    pub kind: &'static str,
    pub message: String,
    pub param: Option<String>,
    pub code: Option<&'static str>,
    pub retry_after: Option<u64>,
}

impl ApiError {
    pub fn invalid(param: &str, message: impl Into<String>) -> Self {
        Self {
            status: StatusCode::BAD_REQUEST,
            kind: "invalid_request_error",
            message: message.into(),
            param: (!param.is_empty()).then(|| param.to_string()),
            code: None,
            retry_after: None,
        }
    }

    pub fn code(mut self, code: &'static str) -> Self {
        self.code = Some(code);
        self
    }

    pub fn status(mut self, status: StatusCode) -> Self {
        self.status = status;
        self
    }

    pub fn model_not_found(model: &str) -> Self {
        Self::invalid("model", format!("The model `{model}` does not exist or you do not have access to it."))
            .status(StatusCode::NOT_FOUND)
            .code("model_not_found")
    }

    pub fn unauthorized() -> Self {
        Self {
            status: StatusCode::UNAUTHORIZED,
            kind: "authentication_error",
            message: "Invalid or missing API key (send Authorization: Bearer <key>).".into(),
            param: None,
            code: Some("invalid_api_key"),
            retry_after: None,
        }
    }

    pub fn forbidden(message: impl Into<String>) -> Self {
        Self { status: StatusCode::FORBIDDEN, kind: "permission_error", message: message.into(), param: None, code: None, retry_after: None }
    }

    pub fn too_large(limit: usize) -> Self {
        Self::invalid("", format!("The request body is larger than the limit of {limit} bytes."))
            .status(StatusCode::PAYLOAD_TOO_LARGE)
            .code("request_too_large")
    }

    pub fn overloaded() -> Self {
        Self {
            status: StatusCode::TOO_MANY_REQUESTS,
            kind: "rate_limit_error",
            message: "The server is busy: the request queue is full. Retry later.".into(),
            param: None,
            code: Some("rate_limit_exceeded"),
            retry_after: Some(1),
        }
    }

    pub fn engine_down() -> Self {
        Self {
            status: StatusCode::SERVICE_UNAVAILABLE,
            kind: "server_error",
            message: "The model engine is not running.".into(),
            param: None,
            code: Some("engine_unavailable"),
            retry_after: None,
        }
    }

    pub fn internal(message: impl Into<String>) -> Self {
        Self { status: StatusCode::INTERNAL_SERVER_ERROR, kind: "server_error", message: message.into(), param: None, code: None, retry_after: None }
    }

    pub fn body(&self) -> serde_json::Value {
        serde_json::json!({"error": {"message": self.message, "type": self.kind, "param": self.param, "code": self.code}})
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut r = (self.status, axum::Json(self.body())).into_response();
        let h = r.headers_mut();
        if let Some(s) = self.retry_after {
            h.insert("retry-after", HeaderValue::from(s));
        }
        if self.status.is_server_error() && self.retry_after.is_none() {
            // Retrying a request the engine cannot serve will not help.
            h.insert("x-should-retry", HeaderValue::from_static("false"));
        }
        r
    }
}
