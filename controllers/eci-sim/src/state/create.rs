//! `CreateContainerGroup`: validation, spec and network choice, and the new group.

use chrono::{DateTime, Utc};
use eci_types::spec;
use eci_types::wire::{CreateContainerGroupRequest, status};
use rand::seq::SliceRandom;

use super::Sim;
use super::group::{ContainerRun, Group};
use crate::error::ApiError;

/// The specs a create may be placed on, and the spec its sizes were rounded up to, if they
/// were (ECI says so in an `AutoInstanceTypeMatch` event).
struct Specs {
    candidates: Vec<String>,
    rounded_to: Option<String>,
}

/// Where a create may go: its vSwitches (in the order to try them), the zones among them, and
/// its security group.
struct Placement {
    vswitches: Vec<String>,
    zones: Vec<String>,
    security_group: String,
}

fn cpu_memory_not_allowed() -> ApiError {
    ApiError::new(
        400,
        "InvalidParameter.CPU.Memory",
        "The specified cpu and memory are not allowed",
    )
}

/// `InstanceType` as given, or the group's `Cpu`/`Memory`, or its containers' sizes rounded up
/// to a sold spec (2 vCPU / 4 GiB when none is given).
fn specs(request: &CreateContainerGroupRequest) -> Result<Specs, ApiError> {
    if let Some(list) = &request.instance_type
        && !list.0.is_empty()
    {
        for entry in &list.0 {
            if spec::parse(entry).is_none() {
                return Err(ApiError::invalid(
                    "InstanceType",
                    format!("unknown instance type {entry}"),
                ));
            }
        }
        return Ok(Specs {
            candidates: list.0.clone(),
            rounded_to: None,
        });
    }
    let mut rounded_to = None;
    let (cpu, memory) = match (request.cpu, request.memory) {
        (Some(cpu), Some(memory)) => {
            if !spec::is_valid(cpu, memory) {
                return Err(cpu_memory_not_allowed());
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
                    .ok_or_else(cpu_memory_not_allowed)?;
                if rounded != (cpu, memory) {
                    rounded_to = Some(spec::format_spec(rounded.0, rounded.1));
                }
                rounded
            }
        }
    };
    Ok(Specs {
        candidates: vec![spec::format_spec(cpu, memory)],
        rounded_to,
    })
}

/// Spot instances are sold from 2 vCPU up.
fn check_spot_size(request: &CreateContainerGroupRequest, specs: &Specs) -> Result<(), ApiError> {
    let is_spot = matches!(
        request.spot_strategy.as_deref(),
        Some("SpotAsPriceGo" | "SpotWithPriceLimit")
    );
    if is_spot
        && specs
            .candidates
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
    Ok(())
}

impl Sim {
    /// Validates and accepts a create; the group starts in `Scheduling`.
    pub fn create(
        &mut self,
        request: CreateContainerGroupRequest,
        now: DateTime<Utc>,
    ) -> Result<String, ApiError> {
        crate::validate::create(&request, &self.config)?;
        let specs = specs(&request)?;
        check_spot_size(&request, &specs)?;
        let mut placement = self.placement(&request)?;
        self.check_stock(&placement, &specs)?;
        if request.dry_run == Some(true) {
            return Err(ApiError::new(
                400,
                "DryRunOperation",
                "Request validation has been passed with DryRun flag set.",
            ));
        }
        if request.schedule_strategy.as_deref() == Some("VSwitchRandom") {
            placement.vswitches.shuffle(&mut self.rng);
        }
        Ok(self.admit(request, specs, placement, now))
    }

    /// The request's vSwitches (or the configured ones) and security group (or the first
    /// configured), created on first use unless `auto_create_network` is off, and the zones
    /// among the vSwitches that `ZoneId` allows.
    fn placement(&mut self, request: &CreateContainerGroupRequest) -> Result<Placement, ApiError> {
        let vswitches = match &request.v_switch_id {
            Some(list) if !list.0.is_empty() => list.0.clone(),
            _ => self.config.vswitches.iter().map(|v| v.id.clone()).collect(),
        };
        for vswitch in &vswitches {
            self.ensure_vswitch(vswitch)?;
        }
        let security_group = self.security_group(request)?;
        let zones: Vec<String> = vswitches
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
        Ok(Placement {
            vswitches,
            zones,
            security_group,
        })
    }

    fn security_group(
        &mut self,
        request: &CreateContainerGroupRequest,
    ) -> Result<String, ApiError> {
        let Some(sg) = &request.security_group_id else {
            return Ok(self
                .config
                .security_groups
                .first()
                .cloned()
                .unwrap_or_default());
        };
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
        Ok(sg.clone())
    }

    /// Refuses synchronously when no zone has stock of any candidate spec.
    fn check_stock(&self, placement: &Placement, specs: &Specs) -> Result<(), ApiError> {
        let any_stock = placement
            .zones
            .iter()
            .any(|zone| specs.candidates.iter().any(|s| self.has_stock(zone, s)));
        if any_stock {
            return Ok(());
        }
        Err(ApiError::new(
            403,
            "OperationDenied.NoStock",
            "Sales of this resource are temporarily suspended in the specified zone; please use a different zone.",
        ))
    }

    /// Records the accepted group in `Scheduling` and sets its scheduling due.
    fn admit(
        &mut self,
        request: CreateContainerGroupRequest,
        specs: Specs,
        placement: Placement,
        now: DateTime<Utc>,
    ) -> String {
        let id = self.new_id();
        let seq = self.next_seq;
        self.next_seq += 1;
        let schedule_delay = self.draw(self.config.timing.schedule_ms);
        let (cpu, memory) = specs
            .candidates
            .first()
            .and_then(|s| spec::parse(s))
            .unwrap_or((0.0, 0.0));
        let mut group = Group {
            seq,
            id: id.clone(),
            zone: placement.zones[0].clone(),
            vswitch: placement.vswitches[0].clone(),
            security_group: placement.security_group,
            ip: None,
            instance_type: String::new(),
            cpu,
            memory,
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
            candidate_vswitches: placement.vswitches,
            candidate_specs: specs.candidates,
            scheduled_due: Some(now + schedule_delay),
            start_due: None,
            terminate_due: None,
            stock_held: None,
            spec: request,
        };
        if let Some(matched) = specs.rounded_to {
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
        id
    }
}
