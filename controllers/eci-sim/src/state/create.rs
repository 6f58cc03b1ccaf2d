//! `CreateContainerGroup`: validation, spec and network choice, and the new group.

use chrono::{DateTime, Utc};
use eci_types::spec;
use eci_types::wire::{CreateContainerGroupRequest, status};
use rand::seq::SliceRandom;

use super::Sim;
use super::group::{ContainerRun, Group};
use crate::error::ApiError;

impl Sim {
    /// Validates and accepts a create; the group starts in `Scheduling`.
    pub fn create(
        &mut self,
        request: CreateContainerGroupRequest,
        now: DateTime<Utc>,
    ) -> Result<String, ApiError> {
        crate::validate::create(&request, &self.config)?;
        let mut auto_match_event = None;
        let candidate_specs: Vec<String> = match &request.instance_type {
            Some(list) if !list.0.is_empty() => {
                for entry in &list.0 {
                    if spec::parse(entry).is_none() {
                        return Err(ApiError::invalid(
                            "InstanceType",
                            format!("unknown instance type {entry}"),
                        ));
                    }
                }
                list.0.clone()
            }
            _ => {
                let (cpu, memory) = match (request.cpu, request.memory) {
                    (Some(cpu), Some(memory)) => {
                        if !spec::is_valid(cpu, memory) {
                            return Err(ApiError::new(
                                400,
                                "InvalidParameter.CPU.Memory",
                                "The specified cpu and memory are not allowed",
                            ));
                        }
                        (cpu, memory)
                    }
                    _ => {
                        let cpu: f64 = request.container.iter().filter_map(|c| c.cpu).sum();
                        let memory: f64 = request.container.iter().filter_map(|c| c.memory).sum();
                        if cpu == 0.0 && memory == 0.0 {
                            (2.0, 4.0)
                        } else {
                            let rounded = spec::round_up(cpu.max(0.25), memory.max(0.5))
                                .ok_or_else(|| {
                                    ApiError::new(
                                        400,
                                        "InvalidParameter.CPU.Memory",
                                        "The specified cpu and memory are not allowed",
                                    )
                                })?;
                            if rounded != (cpu, memory) {
                                auto_match_event = Some(spec::format_spec(rounded.0, rounded.1));
                            }
                            rounded
                        }
                    }
                };
                vec![spec::format_spec(cpu, memory)]
            }
        };
        let is_spot = matches!(
            request.spot_strategy.as_deref(),
            Some("SpotAsPriceGo" | "SpotWithPriceLimit")
        );
        if is_spot
            && candidate_specs
                .iter()
                .filter_map(|s| spec::parse(s))
                .any(|(cpu, _)| cpu < 2.0)
        {
            return Err(ApiError::new(
                400,
                "InvalidSpotCpuMemorySpec",
                "Spot instances need at least 2 vCPU.",
            ));
        }
        let mut candidate_vswitches = match &request.v_switch_id {
            Some(list) if !list.0.is_empty() => list.0.clone(),
            _ => self.config.vswitches.iter().map(|v| v.id.clone()).collect(),
        };
        for vswitch in &candidate_vswitches {
            self.ensure_vswitch(vswitch)?;
        }
        let security_group = match &request.security_group_id {
            Some(sg) => {
                if !self.security_groups.contains(sg) {
                    if !self.config.auto_create_network {
                        return Err(ApiError::new(
                            400,
                            "InvalidSecurityGroupId.NotFound",
                            format!("The specified SecurityGroupId {sg} does not exist."),
                        ));
                    }
                    self.security_groups.insert(sg.clone());
                }
                sg.clone()
            }
            None => self
                .config
                .security_groups
                .first()
                .cloned()
                .unwrap_or_default(),
        };
        let zones: Vec<String> = candidate_vswitches
            .iter()
            .filter_map(|v| self.pools.get(v).map(|p| p.zone.clone()))
            .filter(|zone| request.zone_id.as_ref().is_none_or(|z| z == zone))
            .collect();
        if zones.is_empty() {
            return Err(ApiError::new(
                403,
                "OperationDenied.VswZoneMisMatch",
                "The specified vSwitch is not in the specified zone.",
            ));
        }
        let any_stock = zones
            .iter()
            .any(|zone| candidate_specs.iter().any(|s| self.has_stock(zone, s)));
        if !any_stock {
            return Err(ApiError::new(
                403,
                "OperationDenied.NoStock",
                "Sales of this resource are temporarily suspended in the specified zone; please use a different zone.",
            ));
        }
        if request.dry_run == Some(true) {
            return Err(ApiError::new(
                400,
                "DryRunOperation",
                "Request validation has been passed with DryRun flag set.",
            ));
        }
        if request.schedule_strategy.as_deref() == Some("VSwitchRandom") {
            candidate_vswitches.shuffle(&mut self.rng);
        }
        let id = self.new_id();
        let seq = self.next_seq;
        self.next_seq += 1;
        let schedule_delay = self.draw(self.config.timing.schedule_ms);
        let mut group = Group {
            seq,
            id: id.clone(),
            zone: zones[0].clone(),
            vswitch: candidate_vswitches[0].clone(),
            security_group,
            ip: None,
            instance_type: String::new(),
            cpu: 0.0,
            memory: 0.0,
            status: status::SCHEDULING,
            status_changed_at: now,
            changed_at: now,
            created_at: now,
            finished_at: None,
            release_at: None,
            containers: request.container.iter().map(ContainerRun::new).collect(),
            init_containers: request
                .init_container
                .iter()
                .map(ContainerRun::new)
                .collect(),
            events: Vec::new(),
            candidate_vswitches,
            candidate_specs: candidate_specs.clone(),
            scheduled_due: Some(now + schedule_delay),
            start_due: None,
            terminate_due: None,
            stock_held: None,
            spec: request,
        };
        if let Some((cpu, memory)) = candidate_specs.first().and_then(|s| spec::parse(s)) {
            group.cpu = cpu;
            group.memory = memory;
        }
        if let Some(matched) = auto_match_event {
            let name = group.spec.container_group_name.clone();
            group.event(
                "Normal",
                &name,
                "AutoInstanceTypeMatch",
                format!("The most-matched instanceType for current eci instance is {matched}"),
                now,
            );
        }
        self.groups.insert(id.clone(), Box::new(group));
        self.order.insert(seq, id.clone());
        self.schedule_timer(&id);
        self.stats.groups_created += 1;
        Ok(id)
    }
}
