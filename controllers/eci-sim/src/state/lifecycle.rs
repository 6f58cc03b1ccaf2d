//! The lifecycle: due transitions from `Scheduling` to `Running` and on to the end, stock
//! and IPs taken and given back, and terminal groups pruned.

use std::cmp::Reverse;

use chrono::{DateTime, Utc};
use eci_types::spec;
use eci_types::wire::status;

use super::Sim;
use super::group::{ContainerRun, EXPIRED_REASON, Group, RunPhase, RunState};
use super::network::IpPool;

impl Sim {
    pub(super) fn schedule_timer(&mut self, id: &str) {
        if let Some(group) = self.groups.get(id)
            && let Some(due) = group.next_due()
        {
            self.timers.push(Reverse((due, group.seq, id.to_string())));
        }
    }

    /// Applies every transition due up to `now`.
    pub fn advance(&mut self, now: DateTime<Utc>) {
        while let Some(Reverse((due, _, _))) = self.timers.peek() {
            if *due > now {
                break;
            }
            let Some(Reverse((_, _, id))) = self.timers.pop() else {
                break;
            };
            self.advance_group(&id, now);
        }
        if self
            .last_prune
            .is_none_or(|at| (now - at).num_seconds() >= 10)
        {
            self.prune(now);
            self.last_prune = Some(now);
        }
    }

    fn advance_group(&mut self, id: &str, now: DateTime<Utc>) {
        let mut stepped = false;
        while let Some(due) = self.groups.get(id).and_then(|g| g.next_due()) {
            if due > now {
                break;
            }
            self.step(id, due);
            stepped = true;
        }
        if stepped {
            self.schedule_timer(id);
        }
    }

    fn step(&mut self, id: &str, due: DateTime<Utc>) {
        let Some(mut group) = self.groups.remove(id) else {
            return;
        };
        if group.terminate_due == Some(due) {
            self.release_resources(&mut group);
            self.order.remove(&group.seq);
            self.stats.groups_deleted += 1;
            return;
        }
        group.changed_at = due;
        if group.release_at == Some(due) {
            group.release_at = None;
            self.expire(&mut group, due);
        } else if group.scheduled_due == Some(due) {
            group.scheduled_due = None;
            self.schedule(&mut group, due);
        } else if group.start_due == Some(due) {
            group.start_due = None;
            self.start(&mut group, due);
        } else if let Some(index) = group
            .containers
            .iter()
            .position(|c| c.ready_due == Some(due))
        {
            group.containers[index].ready = true;
            group.containers[index].ready_due = None;
        } else if let Some(index) = group
            .containers
            .iter()
            .position(|c| c.exit_due == Some(due))
        {
            self.container_exit(&mut group, index, due);
        }
        self.groups.insert(id.to_string(), group);
    }

    /// Places a `Scheduling` group on the first of its vSwitches and specs with stock and a
    /// free IP, or fails it (`ScheduleFailed`), saying which of the two was missing.
    fn schedule(&mut self, group: &mut Group, at: DateTime<Utc>) {
        let mut saw_stock = false;
        let candidate_vswitches = std::mem::take(&mut group.candidate_vswitches);
        let candidate_specs = std::mem::take(&mut group.candidate_specs);
        for vswitch in &candidate_vswitches {
            let Some(zone) = self.pools.get(vswitch).map(|p| p.zone.clone()) else {
                continue;
            };
            if group.spec.zone_id.as_ref().is_some_and(|z| *z != zone) {
                continue;
            }
            for spec_name in &candidate_specs {
                if !self.has_stock(&zone, spec_name) {
                    continue;
                }
                saw_stock = true;
                let Some(ip) = self.pools.get_mut(vswitch).and_then(IpPool::allocate) else {
                    continue;
                };
                self.take_stock(group, &zone, spec_name, at);
                group.ip = Some(ip);
                group.zone = zone.clone();
                group.vswitch = vswitch.clone();
                self.pull(group, spec_name, at);
                return;
            }
        }
        let name = group.spec.container_group_name.clone();
        if saw_stock {
            group.event(
                "Warning",
                &name,
                "ResourceInsufficient",
                format!(
                    "vSwitch ip not enough for {}.",
                    candidate_vswitches.join(",")
                ),
                at,
            );
        } else {
            group.event(
                "Warning",
                &name,
                "NoStock",
                format!(
                    "Create ECI failed because the specified instance is out of stock. specs: {}",
                    candidate_specs.join(",")
                ),
                at,
            );
        }
        group.set_status(status::SCHEDULE_FAILED, at);
        group.finished_at = Some(at);
    }

    /// A group placed on `spec_name`: `Pending`, pulling its images, started after a draw of
    /// `start_ms`.
    fn pull(&mut self, group: &mut Group, spec_name: &str, at: DateTime<Utc>) {
        if let Some((cpu, memory)) = spec::parse(spec_name) {
            group.cpu = cpu;
            group.memory = memory;
        }
        group.instance_type = spec_name.to_string();
        group.set_status(status::PENDING, at);
        for run in group
            .init_containers
            .iter()
            .chain(&group.containers)
            .cloned()
            .collect::<Vec<_>>()
        {
            group.event(
                "Normal",
                &run.name,
                "Pulling",
                format!("pulling image \"{}\"", run.image),
                at,
            );
        }
        let delay = self.draw(self.config.timing.start_ms);
        group.start_due = Some(at + delay);
    }

    pub(super) fn start(&mut self, group: &mut Group, at: DateTime<Utc>) {
        let restarting = matches!(group.status, status::RESTARTING | status::UPDATING);
        for index in 0..group.init_containers.len() {
            let run = &mut group.init_containers[index];
            let (name, image, code) =
                (run.name.clone(), run.image.clone(), run.behaviour.exit_code);
            run.start(at);
            run.current = run.terminate(at, code, if code == 0 { "Completed" } else { "Error" });
            group.container_started_events(&name, &image, at);
            if code != 0 {
                for run in &mut group.containers {
                    run.current.reason = "PodInitializing";
                }
                self.finish(group, at);
                return;
            }
        }
        for run in &mut group.containers {
            if restarting && run.current.phase != RunPhase::Waiting {
                run.previous = RunState {
                    phase: RunPhase::Terminated,
                    reason: "Restarted",
                    finished: Some(at),
                    ..run.current.clone()
                };
                run.restart_count += 1;
            }
            run.start(at);
        }
        for (name, image) in group
            .containers
            .iter()
            .map(|r| (r.name.clone(), r.image.clone()))
            .collect::<Vec<_>>()
        {
            group.container_started_events(&name, &image, at);
        }
        group.set_status(status::RUNNING, at);
    }

    fn container_exit(&mut self, group: &mut Group, index: usize, at: DateTime<Utc>) {
        let restart_policy = group.restart_policy().to_string();
        let run = &mut group.containers[index];
        let code = run.behaviour.exit_code;
        let terminated = run.terminate(at, code, if code == 0 { "Completed" } else { "Error" });
        let restart = restart_policy == "Always" || (restart_policy == "OnFailure" && code != 0);
        if restart {
            run.previous = terminated;
            run.restart_count += 1;
            run.start(at);
            let name = run.name.clone();
            group.event(
                "Normal",
                &name,
                "Started",
                format!("Started container {name}"),
                at,
            );
        } else {
            run.current = terminated;
            if group.containers.iter().all(ContainerRun::is_terminated) {
                self.finish(group, at);
            }
        }
    }

    /// All containers have ended: Succeeded when every exit code was 0, else Failed.
    pub(super) fn finish(&mut self, group: &mut Group, at: DateTime<Utc>) {
        let all_zero = group
            .init_containers
            .iter()
            .chain(&group.containers)
            .all(|c| !c.is_terminated() || c.current.exit_code == 0)
            && group.containers.iter().all(ContainerRun::is_terminated);
        group.set_status(
            if all_zero {
                status::SUCCEEDED
            } else {
                status::FAILED
            },
            at,
        );
        group.finished_at = Some(at);
        for run in &mut group.containers {
            run.ready = false;
            run.ready_due = None;
            run.exit_due = None;
        }
        group.release_at = None;
        self.release_resources(group);
    }

    fn expire(&mut self, group: &mut Group, at: DateTime<Utc>) {
        if group.is_terminal() || group.status == status::TERMINATING {
            return;
        }
        for run in &mut group.containers {
            if run.current.phase == RunPhase::Running {
                run.current = run.terminate(at, 137, EXPIRED_REASON);
            }
        }
        group.set_status(status::EXPIRED, at);
        group.finished_at = Some(at);
        self.stats.spot_expired += 1;
        self.release_resources(group);
    }

    pub(super) fn release_resources(&mut self, group: &mut Group) {
        if let Some(ip) = group.ip.take()
            && let Some(pool) = self.pools.get_mut(&group.vswitch)
        {
            pool.release(ip);
        }
        if let Some(key) = group.stock_held.take()
            && let Some(left) = self.stock.get_mut(&key)
        {
            *left += 1;
        }
    }

    /// Keeps terminal groups visible for the retention period, then only the newest few;
    /// removes `ScheduleFailed` groups after their own (longer) period.
    fn prune(&mut self, now: DateTime<Utc>) {
        let retention = self.config.retention.clone();
        let mut terminal: Vec<(DateTime<Utc>, u64, String)> = Vec::new();
        let mut drop = Vec::new();
        for group in self.groups.values() {
            let Some(finished) = group.finished_at else {
                continue;
            };
            let age = (now - finished).num_seconds();
            if group.status == status::SCHEDULE_FAILED {
                if age > retention.schedule_failed_seconds {
                    drop.push(group.id.clone());
                }
            } else if age > retention.full_seconds {
                terminal.push((finished, group.seq, group.id.clone()));
            }
        }
        let kept_recent = self
            .groups
            .values()
            .filter(|g| g.is_terminal() && g.status != status::SCHEDULE_FAILED)
            .count()
            .saturating_sub(terminal.len());
        terminal.sort_unstable_by(|a, b| b.cmp(a));
        let keep_old = retention.keep_latest.saturating_sub(kept_recent);
        drop.extend(terminal.into_iter().skip(keep_old).map(|(_, _, id)| id));
        for id in drop {
            if let Some(group) = self.groups.remove(&id) {
                self.order.remove(&group.seq);
            }
        }
    }
}
