//! ClientToken idempotency: a repeated call with the same token replays the first outcome.

use std::hash::{Hash, Hasher};

use super::Sim;
use crate::error::ApiError;

#[derive(Debug, Clone)]
pub(super) struct TokenMemo {
    fingerprint: u64,
    pub(super) result: Result<String, ApiError>,
}

impl Sim {
    fn token_key(action: &str, token: &str) -> u64 {
        let mut hasher = std::collections::hash_map::DefaultHasher::new();
        (action, token).hash(&mut hasher);
        hasher.finish()
    }

    fn fingerprint(params: &[(String, String)]) -> u64 {
        let mut sorted: Vec<&(String, String)> =
            params.iter().filter(|(k, _)| k != "ClientToken").collect();
        sorted.sort();
        let mut hasher = std::collections::hash_map::DefaultHasher::new();
        sorted.hash(&mut hasher);
        hasher.finish()
    }

    /// Looks up a ClientToken: `Some(result)` replays an earlier call with the same token.
    pub fn replay(
        &mut self,
        action: &str,
        token: Option<&str>,
        params: &[(String, String)],
    ) -> Option<Result<String, ApiError>> {
        let token = token?;
        let memo = self.tokens.get(&Self::token_key(action, token))?;
        if memo.fingerprint != Self::fingerprint(params) {
            return Some(Err(ApiError::new(
                400,
                "IdempotentParameterMismatch",
                "The request uses the same client token as a previous, but non-identical request.",
            )));
        }
        self.stats.idempotent_replays += 1;
        Some(memo.result.clone())
    }

    pub fn remember(
        &mut self,
        action: &str,
        token: Option<&str>,
        params: &[(String, String)],
        result: &Result<String, ApiError>,
    ) {
        if let Some(token) = token {
            self.tokens.insert(
                Self::token_key(action, token),
                TokenMemo {
                    fingerprint: Self::fingerprint(params),
                    result: result.clone(),
                },
            );
        }
    }
}
