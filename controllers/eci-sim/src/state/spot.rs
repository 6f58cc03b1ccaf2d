//! Spot releases: the admin API's announcements, and picking which spot groups to release.

use chrono::{DateTime, Utc};
use eci_types::wire::{Tag, status};
use rand::seq::SliceRandom;
use serde::Serialize;

use super::query::GroupFilter;
use super::{Sim, after, format_time};

/// Outcome of an admin spot release.
#[derive(Debug, Default, Serialize)]
pub struct SpotReleaseOutcome {
    pub released: Vec<String>,
    pub skipped: Vec<String>,
    pub release_at: String,
}

impl Sim {
    /// Announces a spot release: event now, `Expired` after `lead_seconds`.
    pub fn spot_release(
        &mut self,
        ids: &[String],
        lead_seconds: f64,
        now: DateTime<Utc>,
    ) -> SpotReleaseOutcome {
        let release_at = after(now, lead_seconds.max(0.0));
        let minutes = lead_seconds.max(0.0) / 60.0;
        let minutes_text = if minutes.fract() == 0.0 {
            format!("{}", minutes as i64)
        } else {
            let text = format!("{minutes:.2}");
            text.trim_end_matches('0').trim_end_matches('.').to_string()
        };
        let mut outcome = SpotReleaseOutcome {
            release_at: format_time(release_at),
            ..SpotReleaseOutcome::default()
        };
        for id in ids {
            let Some(group) = self.groups.get_mut(id) else {
                outcome.skipped.push(id.clone());
                continue;
            };
            let eligible = group.is_spot()
                && group.release_at.is_none()
                && matches!(
                    group.status,
                    status::PENDING | status::RUNNING | status::RESTARTING | status::UPDATING
                );
            if !eligible {
                outcome.skipped.push(id.clone());
                continue;
            }
            let name = group.spec.container_group_name.clone();
            group.event(
                "Warning",
                &name,
                "SpotToBeReleased",
                format!("Spot ECI will be released in {minutes_text} minutes"),
                now,
            );
            group.release_at = Some(release_at);
            self.stats.spot_notices += 1;
            outcome.released.push(id.clone());
            self.schedule_timer(id);
        }
        outcome
    }

    /// Picks `fraction` of the running spot groups matching `tags`, in seeded random order.
    pub fn pick_spot_fraction(&mut self, fraction: f64, tags: &[Tag]) -> Vec<String> {
        let filter = GroupFilter {
            tags: tags.to_vec(),
            ..GroupFilter::default()
        };
        let mut eligible: Vec<String> = self
            .groups()
            .filter(|g| {
                g.is_spot()
                    && g.status == status::RUNNING
                    && g.release_at.is_none()
                    && filter.matches(g)
            })
            .map(|g| g.id.clone())
            .collect();
        eligible.shuffle(&mut self.rng);
        let count = ((eligible.len() as f64) * fraction.clamp(0.0, 1.0)).round() as usize;
        eligible.truncate(count);
        eligible
    }
}
