//! The one error type of the HTTP surface: every failure becomes OpenAI's envelope
//! `{"error":{"message","type","param","code"}}` with the right status, so clients' error
//! handling works unchanged.

use serde_json::{json, Value};

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiError {
    pub status: u16,
    pub message: String,
    /// OpenAI's error type (`invalid_request_error`, `authentication_error`, ...).
    pub kind: &'static str,
    /// The request field at fault, as a path (`messages[2].role`).
    pub param: Option<String>,
    pub code: Option<&'static str>,
    /// Seconds a client should wait before retrying (429, 503).
    pub retry_after: Option<u64>,
}

impl ApiError {
    fn new(
        status: u16,
        kind: &'static str,
        code: Option<&'static str>,
        message: impl Into<String>,
    ) -> Self {
        Self {
            status,
            message: message.into(),
            kind,
            param: None,
            code,
            retry_after: None,
        }
    }

    /// 400, naming the field at fault.
    pub fn invalid(param: impl Into<String>, message: impl Into<String>) -> Self {
        Self {
            param: Some(param.into()),
            ..Self::new(400, "invalid_request_error", None, message)
        }
    }

    /// 400 for a body that is not a JSON object at all.
    pub fn bad_body(message: impl Into<String>) -> Self {
        Self::new(400, "invalid_request_error", None, message)
    }

    /// 403: a signed media URL that is bad or expired.
    pub fn forbidden(message: impl Into<String>) -> Self {
        Self::new(403, "permission_error", Some("forbidden"), message)
    }

    /// The Sogni-native envelope of this error (`{status:"error", message, errorCode}`),
    /// for the routes Sogni's SDKs call.
    pub fn sogni_envelope(&self) -> Value {
        let mut v = json!({ "status": "error", "message": self.message, "errorCode": self.status });
        if let Some(s) = self.retry_after {
            v["retryAfter"] = s.into();
        }
        v
    }

    pub fn unauthorized(message: impl Into<String>) -> Self {
        Self::new(
            401,
            "authentication_error",
            Some("invalid_api_key"),
            message,
        )
    }

    pub fn insufficient_balance(message: impl Into<String>) -> Self {
        Self::new(
            402,
            "insufficient_quota",
            Some("insufficient_balance"),
            message,
        )
    }

    pub fn not_found(message: impl Into<String>) -> Self {
        Self::new(404, "invalid_request_error", Some("not_found"), message)
    }

    /// 409: the request no longer fits the resource's state (a stale cost preview).
    pub fn conflict(message: impl Into<String>) -> Self {
        Self::new(409, "invalid_request_error", Some("conflict"), message)
    }

    pub fn model_not_found(model: &str) -> Self {
        Self {
            param: Some("model".into()),
            ..Self::new(
                404,
                "invalid_request_error",
                Some("model_not_found"),
                format!("The model `{model}` does not exist"),
            )
        }
    }

    pub fn unsupported_media(message: impl Into<String>) -> Self {
        Self::new(
            415,
            "invalid_request_error",
            Some("unsupported_media_type"),
            message,
        )
    }

    pub fn too_large(limit: usize) -> Self {
        Self::new(
            413,
            "invalid_request_error",
            Some("request_too_large"),
            format!("The request body is larger than {limit} bytes"),
        )
    }

    pub fn rate_limited(message: impl Into<String>, retry_after: u64) -> Self {
        Self {
            retry_after: Some(retry_after),
            ..Self::new(
                429,
                "rate_limit_error",
                Some("rate_limit_exceeded"),
                message,
            )
        }
    }

    pub fn unavailable(message: impl Into<String>) -> Self {
        Self {
            retry_after: Some(1),
            ..Self::new(503, "service_unavailable", Some("no_worker"), message)
        }
    }

    /// 408 for a body that stopped arriving.
    pub fn body_timeout(secs: u64) -> Self {
        Self::new(
            408,
            "invalid_request_error",
            Some("request_timeout"),
            format!("The request body stopped arriving for {secs} s; send all of it (and a Content-Length that matches)"),
        )
    }

    /// 503 for a server too busy to take the request now.
    pub fn busy(message: impl Into<String>) -> Self {
        Self {
            retry_after: Some(1),
            ..Self::new(503, "service_unavailable", Some("server_busy"), message)
        }
    }

    /// 500: the details go to the log, never to the client.
    pub fn internal() -> Self {
        Self::new(
            500,
            "server_error",
            None,
            "The server had an error while processing the request",
        )
    }

    /// 500 for `error`, which is logged with what failed.
    pub fn logged(what: &str, error: impl std::fmt::Display) -> Self {
        tracing::error!("{what}: {error}");
        Self::internal()
    }

    /// The JSON body.
    pub fn envelope(&self) -> Value {
        json!({ "error": { "message": self.message, "type": self.kind, "param": self.param, "code": self.code } })
    }
}

impl std::fmt::Display for ApiError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} {}: {}", self.status, self.kind, self.message)
    }
}

impl std::error::Error for ApiError {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_envelope_has_all_four_fields() {
        let e = ApiError::invalid("messages[0].role", "unknown role `robot`").envelope();
        assert_eq!(
            e,
            json!({"error": {"message": "unknown role `robot`", "type": "invalid_request_error", "param": "messages[0].role", "code": null}})
        );
        let e = ApiError::internal().envelope();
        assert_eq!(e["error"]["param"], Value::Null);
        assert_eq!(e["error"]["code"], Value::Null);
    }
}
