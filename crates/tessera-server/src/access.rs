//! Who may call what: `/health` and `/ready` are open, `/metrics` is open or
//! behind its own key, everything else needs an API key when keys are set and
//! counts against its caller's request rate limit.

use std::net::IpAddr;

use axum::http::HeaderMap;

use crate::auth::{authenticate, Caller};
use crate::error::ApiError;
use crate::state::AppState;

/// The access rule of a path.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Rule {
    /// Probes: never authenticated, never limited.
    Open,
    /// `/metrics`: `--metrics-key` when set.
    Metrics,
    /// The management API (`/v2/repository/...`): an admin key, and off
    /// (404) when none is set.
    Admin,
    /// The API (and unknown paths, so that they do not reveal what exists).
    Api,
}

/// The rule for `path`.
pub fn rule(path: &str) -> Rule {
    match path {
        "/health" | "/ready" => Rule::Open,
        "/metrics" => Rule::Metrics,
        _ if path == "/v2/repository" || path.starts_with("/v2/repository/") => Rule::Admin,
        _ => Rule::Api,
    }
}

/// The caller of a request whose client is at `addr`, before any key is seen.
pub fn anonymous(addr: Option<IpAddr>) -> Caller {
    addr.map_or(Caller::Unknown, Caller::Addr)
}

/// Lets a request in or refuses it (401, 429); returns who it counts against.
pub fn check(
    state: &AppState,
    path: &str,
    headers: &HeaderMap,
    addr: Option<IpAddr>,
) -> Result<Caller, ApiError> {
    let caller = anonymous(addr);
    match rule(path) {
        Rule::Open => Ok(caller),
        Rule::Metrics => {
            if state.metrics_key.is_enabled() {
                authenticate(&state.metrics_key, headers).map_err(ApiError::unauthorized)?;
            }
            Ok(caller)
        }
        Rule::Admin => {
            if !state.admin_keys.is_enabled() {
                return Err(ApiError::route_not_found("", path).with_message(
                    "The management API is off: start the server with --admin-api-key to use it.",
                ));
            }
            authenticate(&state.admin_keys, headers).map_err(ApiError::unauthorized)?;
            Ok(caller)
        }
        Rule::Api => {
            let caller = if state.api_keys.is_enabled() {
                Caller::Key(authenticate(&state.api_keys, headers).map_err(ApiError::unauthorized)?)
            } else {
                caller
            };
            state
                .limiter
                .check_request(caller)
                .map_err(|l| ApiError::rate_limited(&l))?;
            Ok(caller)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn probes_are_open_and_the_rest_is_api() {
        assert_eq!(rule("/health"), Rule::Open);
        assert_eq!(rule("/ready"), Rule::Open);
        assert_eq!(rule("/metrics"), Rule::Metrics);
        assert_eq!(rule("/v1/models"), Rule::Api);
        assert_eq!(rule("/anything"), Rule::Api);
        assert_eq!(rule("/v2/repository/index"), Rule::Admin);
        assert_eq!(rule("/v2/repository/models/a/load"), Rule::Admin);
        assert_eq!(rule("/v2/repositoryx"), Rule::Api);
    }
}
