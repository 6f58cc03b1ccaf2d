//! Stock: how many instances of a spec (or of any spec) a zone has left.

use chrono::{DateTime, Utc};

use super::Sim;
use super::group::Group;

pub(super) type StockKey = (String, Option<String>);

impl Sim {
    pub(super) fn stock_key(&self, zone: &str, spec: &str) -> Option<StockKey> {
        let exact = (zone.to_string(), Some(spec.to_string()));
        if self.stock.contains_key(&exact) {
            return Some(exact);
        }
        let any = (zone.to_string(), None);
        self.stock.contains_key(&any).then_some(any)
    }

    pub(super) fn has_stock(&self, zone: &str, spec: &str) -> bool {
        self.stock_key(zone, spec)
            .is_none_or(|key| self.stock.get(&key).copied().unwrap_or(0) > 0)
    }

    /// Takes one of `zone`'s stock of `spec_name` for `group`, if that stock is counted,
    /// warning the group (`StockExhaust`) when little is left.
    pub(super) fn take_stock(
        &mut self,
        group: &mut Group,
        zone: &str,
        spec_name: &str,
        at: DateTime<Utc>,
    ) {
        let key = self.stock_key(zone, spec_name);
        if let Some(key) = &key
            && let Some(left) = self.stock.get_mut(key)
        {
            *left -= 1;
            if *left <= self.config.stock_exhaust_warning_at {
                let name = group.spec.container_group_name.clone();
                group.event(
                    "Warning",
                    &name,
                    "StockExhaust",
                    format!("The stock of the specified zones will be used up. zone: {zone}"),
                    at,
                );
            }
        }
        group.stock_held = key;
    }

    /// Sets the remaining stock of a zone (and spec); `None` makes it unlimited.
    pub fn set_stock(&mut self, zone: &str, spec: Option<&str>, count: Option<u64>) {
        let key = (zone.to_string(), spec.map(str::to_string));
        match count {
            Some(count) => {
                self.stock.insert(key, count);
            }
            None => {
                self.stock.remove(&key);
            }
        }
    }

    pub fn stock(&self) -> Vec<(String, Option<String>, u64)> {
        let mut out: Vec<_> = self
            .stock
            .iter()
            .map(|((zone, spec), count)| (zone.clone(), spec.clone(), *count))
            .collect();
        out.sort();
        out
    }
}
