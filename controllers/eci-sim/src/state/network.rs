//! The network: each vSwitch's zone and IP pool, and vSwitches created on first use.

use std::net::Ipv4Addr;

use super::Sim;
use crate::error::ApiError;

#[derive(Debug)]
pub(super) struct IpPool {
    pub(super) zone: String,
    base: u32,
    size: u32,
    next_offset: u32,
    free: Vec<u32>,
}

impl IpPool {
    pub(super) fn parse(zone: &str, cidr: &str) -> Option<Self> {
        let (addr, prefix) = cidr.split_once('/')?;
        let addr: Ipv4Addr = addr.parse().ok()?;
        let prefix: u32 = prefix.parse().ok().filter(|p| (8..=29).contains(p))?;
        let size = 1u32 << (32 - prefix);
        Some(Self {
            zone: zone.to_string(),
            base: u32::from(addr) & !(size - 1),
            size,
            // The first addresses are the network and reserved gateway addresses.
            next_offset: 3,
            free: Vec::new(),
        })
    }

    pub(super) fn allocate(&mut self) -> Option<Ipv4Addr> {
        if let Some(offset) = self.free.pop() {
            return Some(Ipv4Addr::from(self.base + offset));
        }
        // The last address is the broadcast address.
        if self.next_offset >= self.size - 1 {
            return None;
        }
        let offset = self.next_offset;
        self.next_offset += 1;
        Some(Ipv4Addr::from(self.base + offset))
    }

    pub(super) fn release(&mut self, ip: Ipv4Addr) {
        let offset = u32::from(ip).wrapping_sub(self.base);
        if offset < self.size {
            self.free.push(offset);
        }
    }
}

impl Sim {
    pub(super) fn ensure_vswitch(&mut self, id: &str) -> Result<(), ApiError> {
        if self.pools.contains_key(id) {
            return Ok(());
        }
        if !self.config.auto_create_network {
            return Err(ApiError::new(
                400,
                "InvalidVSwitchId.NotFound",
                format!("The specified VSwitchId {id} does not exist."),
            ));
        }
        let zones: Vec<String> = {
            let mut zones: Vec<String> = self
                .config
                .vswitches
                .iter()
                .map(|v| v.zone.clone())
                .collect();
            zones.dedup();
            zones
        };
        let index = self.pools.len();
        let zone = zones[index % zones.len()].clone();
        let cidr = format!("172.{}.{}.0/20", 16 + (index / 16) % 16, (index % 16) * 16);
        let pool = IpPool::parse(&zone, &cidr).ok_or_else(ApiError::internal)?;
        self.pools.insert(id.to_string(), pool);
        Ok(())
    }
}
