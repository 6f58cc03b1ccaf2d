//! Counts of calls and outcomes.

use std::collections::BTreeMap;

use serde::Serialize;

#[derive(Debug, Clone, Default, Serialize)]
pub struct Stats {
    pub actions: BTreeMap<String, ActionStats>,
    pub groups_created: u64,
    pub groups_deleted: u64,
    pub idempotent_replays: u64,
    pub spot_notices: u64,
    pub spot_expired: u64,
}

#[derive(Debug, Clone, Default, Serialize)]
pub struct ActionStats {
    pub calls: u64,
    pub succeeded: u64,
    pub throttled: u64,
    pub injected_faults: u64,
    pub errors: BTreeMap<String, u64>,
}

impl Stats {
    pub fn action(&mut self, action: &str) -> &mut ActionStats {
        self.actions.entry(action.to_string()).or_default()
    }
}
