//! Changes to existing groups: delete, restart and update.

use chrono::{DateTime, TimeDelta, Utc};
use eci_types::wire::{self, status};

use super::Sim;
use super::group::{ContainerRun, Group};
use crate::error::ApiError;

impl Sim {
    pub fn delete(&mut self, id: &str, force: bool, now: DateTime<Utc>) -> Result<(), ApiError> {
        let Some(group) = self.groups.get_mut(id) else {
            return Err(ApiError::not_found(format!(
                "The specified ContainerGroupId {id} is not found."
            )));
        };
        if group.status == status::TERMINATING {
            return Ok(());
        }
        let live = matches!(
            group.status,
            status::RUNNING | status::RESTARTING | status::UPDATING
        );
        if live
            && !force
            && group
                .spec
                .container
                .iter()
                .any(wire::Container::has_pre_stop)
        {
            let grace_ms = group
                .spec
                .termination_grace_period_seconds
                .unwrap_or(30)
                .max(0)
                .saturating_mul(1000) as u64;
            let wait = grace_ms.min(self.config.timing.max_terminating_ms);
            group.set_status(status::TERMINATING, now);
            group.release_at = None;
            group.terminate_due = Some(now + TimeDelta::milliseconds(wait as i64));
            for name in group
                .containers
                .iter()
                .map(|c| c.name.clone())
                .collect::<Vec<_>>()
            {
                group.event(
                    "Normal",
                    &name,
                    "Killing",
                    format!("Stopping container {name}"),
                    now,
                );
            }
            self.schedule_timer(id);
            return Ok(());
        }
        if let Some(mut group) = self.groups.remove(id) {
            self.release_resources(&mut group);
            self.order.remove(&group.seq);
            self.stats.groups_deleted += 1;
        }
        Ok(())
    }

    fn live_group(&mut self, id: &str) -> Result<&mut Group, ApiError> {
        let group = self.groups.get_mut(id).ok_or_else(|| {
            ApiError::not_found(format!("The specified ContainerGroupId {id} is not found."))
        })?;
        if !matches!(group.status, status::PENDING | status::RUNNING) {
            return Err(ApiError::incorrect_status(id, group.status));
        }
        Ok(group)
    }

    pub fn restart(&mut self, id: &str, now: DateTime<Utc>) -> Result<(), ApiError> {
        let delay = self.draw(self.config.timing.restart_ms);
        let group = self.live_group(id)?;
        group.restart(status::RESTARTING, now + delay, now);
        self.schedule_timer(id);
        Ok(())
    }

    pub fn update(
        &mut self,
        request: wire::UpdateContainerGroupRequest,
        now: DateTime<Utc>,
    ) -> Result<(), ApiError> {
        let delay = self.draw(self.config.timing.restart_ms);
        let id = request.container_group_id.clone();
        let group = self.live_group(&id)?;
        let incremental = request.update_type.as_deref() == Some("IncrementalUpdate");
        if let Some(policy) = request.restart_policy {
            group.spec.restart_policy = Some(policy);
        }
        if !request.tag.is_empty() {
            if incremental {
                for tag in request.tag {
                    group.spec.tag.retain(|t| t.key != tag.key);
                    group.spec.tag.push(tag);
                }
            } else {
                group.spec.tag = request.tag;
            }
        }
        let containers_changed = !request.container.is_empty();
        if containers_changed {
            group.containers = request.container.iter().map(ContainerRun::new).collect();
            group.spec.container = request.container;
        }
        if !request.image_registry_credential.is_empty() {
            group.spec.image_registry_credential = request.image_registry_credential;
        }
        if containers_changed || request.cpu.is_some() || request.memory.is_some() {
            group.restart(status::UPDATING, now + delay, now);
        }
        self.schedule_timer(&id);
        Ok(())
    }
}
