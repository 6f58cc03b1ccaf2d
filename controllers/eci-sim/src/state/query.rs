//! Listing groups: the Describe* filters and pagination.

use chrono::{DateTime, Utc};
use eci_types::wire::Tag;

use super::Sim;
use super::group::Group;
use crate::error::ApiError;

/// Filters shared by the Describe* actions.
#[derive(Debug, Default, Clone)]
pub struct GroupFilter {
    pub ids: Option<Vec<String>>,
    pub name: Option<String>,
    pub status: Option<String>,
    pub zone: Option<String>,
    pub vswitch: Option<String>,
    pub security_group: Option<String>,
    pub resource_group: Option<String>,
    pub tags: Vec<Tag>,
    pub changed_since: Option<DateTime<Utc>>,
}

impl GroupFilter {
    pub(super) fn matches(&self, group: &Group) -> bool {
        self.ids.as_ref().is_none_or(|ids| ids.contains(&group.id))
            && self
                .name
                .as_ref()
                .is_none_or(|n| *n == group.spec.container_group_name)
            && self.status.as_ref().is_none_or(|s| s == group.status)
            && self.zone.as_ref().is_none_or(|z| *z == group.zone)
            && self.vswitch.as_ref().is_none_or(|v| *v == group.vswitch)
            && self
                .security_group
                .as_ref()
                .is_none_or(|s| *s == group.security_group)
            && self
                .resource_group
                .as_ref()
                .is_none_or(|r| group.spec.resource_group_id.as_ref() == Some(r))
            && self.tags.iter().all(|t| {
                group
                    .tag(&t.key)
                    .is_some_and(|v| t.value.is_empty() || v == t.value)
            })
            && self
                .changed_since
                .is_none_or(|since| group.changed_at >= since)
    }
}

/// A page of matches in creation order.
pub struct Page<'a> {
    pub groups: Vec<&'a Group>,
    pub next_token: String,
    pub total: usize,
}

impl Sim {
    /// A page of matching groups in creation order, from `token` on.
    pub fn page(
        &self,
        filter: &GroupFilter,
        token: Option<&str>,
        limit: usize,
    ) -> Result<Page<'_>, ApiError> {
        let start = match token.filter(|t| !t.is_empty()) {
            None => 0,
            Some(token) => u64::from_str_radix(token, 16)
                .map_err(|_| ApiError::invalid("NextToken", "The token is not valid."))?,
        };
        let mut groups = Vec::new();
        let mut next_token = String::new();
        let mut total = 0;
        for (seq, id) in &self.order {
            let Some(group) = self.groups.get(id) else {
                continue;
            };
            if !filter.matches(group) {
                continue;
            }
            total += 1;
            if *seq < start {
                continue;
            }
            if groups.len() < limit {
                groups.push(&**group);
            } else if next_token.is_empty() {
                next_token = format!("{seq:016x}");
            }
        }
        Ok(Page {
            groups,
            next_token,
            total,
        })
    }
}
