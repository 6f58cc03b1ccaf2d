//! What the status sync lists and how it compares it with what it applied. A full listing
//! (every group of the node) runs as its own task beside the incremental passes: at 50,000
//! groups its 500 pages take tens of seconds, and the one-second polls waiting behind it
//! were the status lag of a large node. Because the two overlap, every listing carries a
//! number in the order the listings began, and what a later listing said of a group wins.

use std::collections::hash_map::DefaultHasher;
use std::collections::{BTreeSet, HashMap, HashSet};
use std::hash::{Hash, Hasher};
use std::sync::Arc;
use std::time::Duration;

use eci_client::EciError;
use eci_types::wire::{
    ContainerGroupStatus, DescribeContainerGroupEventsRequest, DescribeContainerGroupStatusRequest,
    status,
};
use tokio::task::{JoinError, JoinHandle};

use crate::runtime::context::Context;

/// What was last applied for a group.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub(super) struct Seen {
    pub status: u64,
    pub events: u64,
    pub transitioning: bool,
    /// The [`Listing::number`] this came from.
    pub listing: u32,
}

pub(super) fn fingerprint<T: serde::Serialize>(value: &T) -> u64 {
    let mut hasher = DefaultHasher::new();
    serde_json::to_vec(value)
        .unwrap_or_default()
        .hash(&mut hasher);
    hasher.finish()
}

/// What a pass keeps of a listed status record: a full pass lists every group of the node,
/// and the records whole (conditions, container statuses) would be its memory peak.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Listed {
    pub id: String,
    pub fingerprint: u64,
    pub transitioning: bool,
}

impl Listed {
    fn of(record: ContainerGroupStatus) -> Self {
        Self {
            fingerprint: fingerprint(&record),
            transitioning: transitioning(&record.status),
            id: record.container_group_id,
        }
    }
}

pub(super) fn transitioning(eci_status: &str) -> bool {
    matches!(
        eci_status,
        status::SCHEDULING
            | status::PENDING
            | status::RESTARTING
            | status::UPDATING
            | status::TERMINATING
    )
}

/// The status records and event fingerprints of one listing.
#[derive(Debug, Default)]
pub(super) struct Listing {
    /// Listings are numbered in the order they began.
    pub number: u32,
    /// Every group of the node, not only the changed ones.
    pub full: bool,
    pub records: Vec<Listed>,
    /// A fingerprint of each group's events, by group id.
    pub events: HashMap<String, u64>,
}

/// Lists the status records and events `filter` selects, page by page; the two listings run
/// at once, as neither needs the other and a pass waits for both.
pub(super) async fn list(
    ctx: &Context,
    filter: &DescribeContainerGroupStatusRequest,
    number: u32,
) -> Result<Listing, EciError> {
    let records = async {
        let records = ctx
            .eci
            .describe_all_container_group_status(filter, Listed::of)
            .await;
        ctx.observe_eci(&records);
        records
    };
    let (records, events) = futures::try_join!(records, event_fingerprints(ctx, filter))?;
    Ok(Listing {
        number,
        full: filter.since_second.is_none(),
        records,
        events,
    })
}

/// A fingerprint of the events of each group `filter` selects, by group id.
async fn event_fingerprints(
    ctx: &Context,
    filter: &DescribeContainerGroupStatusRequest,
) -> Result<HashMap<String, u64>, EciError> {
    let mut request = DescribeContainerGroupEventsRequest {
        filter: filter.clone(),
        event_source: None,
    };
    let mut events = HashMap::new();
    loop {
        let page = ctx.eci.call(&request).await?;
        for group in page.data {
            events.insert(group.container_group_id, fingerprint(&group.events));
        }
        if page.next_token.is_empty() {
            return Ok(events);
        }
        request.filter.next_token = Some(page.next_token);
    }
}

#[derive(Debug, thiserror::Error)]
pub(super) enum FullListingError {
    #[error("ECI: {0}")]
    Eci(#[from] EciError),
    #[error("the full listing did not finish within {0:?}")]
    TimedOut(Duration),
    #[error("the full listing's task ended: {0}")]
    Ended(#[from] JoinError),
}

/// A full listing under way; dropping it stops it.
pub(super) struct FullListing(JoinHandle<Result<Listing, FullListingError>>);

impl FullListing {
    /// Starts listing every group `filter` selects, given up after `timeout`.
    pub fn start(
        ctx: Arc<Context>,
        filter: DescribeContainerGroupStatusRequest,
        number: u32,
        timeout: Duration,
    ) -> Self {
        Self(tokio::spawn(async move {
            tokio::time::timeout(timeout, list(&ctx, &filter, number))
                .await
                .map_err(|_| FullListingError::TimedOut(timeout))?
                .map_err(FullListingError::from)
        }))
    }

    /// The listing, once it has finished.
    pub async fn finished(&mut self) -> Option<Result<Listing, FullListingError>> {
        if !self.0.is_finished() {
            return None;
        }
        Some(
            (&mut self.0)
                .await
                .unwrap_or_else(|ended| Err(ended.into())),
        )
    }
}

impl Drop for FullListing {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// What a listing changes against what was last applied.
#[derive(Debug, Default, PartialEq, Eq)]
pub(super) struct Changes {
    /// Groups to fetch and apply.
    pub changed: BTreeSet<String>,
    /// What each listed group's record becomes once applied (the unchanged ones at once).
    pub pending: HashMap<String, Seen>,
}

/// Compares `listing` with `seen`. A group a later listing already reported is left out: a
/// full listing's pages can be older than the incremental polls that ran beside it, and
/// whatever changed since it began is in those polls' one-minute window.
pub(super) fn changes(seen: &HashMap<String, Seen>, listing: &Listing) -> Changes {
    let reported_later = |id: &str| seen.get(id).is_some_and(|s| s.listing > listing.number);
    let mut changes = Changes::default();
    for record in &listing.records {
        if reported_later(&record.id) {
            continue;
        }
        let before = seen.get(&record.id).copied().unwrap_or_default();
        let next = Seen {
            status: record.fingerprint,
            transitioning: record.transitioning,
            listing: listing.number,
            ..before
        };
        if next.status != before.status {
            changes.changed.insert(record.id.clone());
        }
        changes.pending.insert(record.id.clone(), next);
    }
    for (id, events) in &listing.events {
        if reported_later(id) {
            continue;
        }
        let before = seen.get(id).copied().unwrap_or_default();
        let base = changes.pending.get(id).copied().unwrap_or(Seen {
            listing: listing.number,
            ..before
        });
        if *events != before.events {
            changes.changed.insert(id.clone());
        }
        changes.pending.insert(
            id.clone(),
            Seen {
                events: *events,
                ..base
            },
        );
    }
    changes
}

/// After a full listing: forgets the groups it did not show, unless a later listing did.
pub(super) fn forget_unlisted(seen: &mut HashMap<String, Seen>, listing: &Listing) {
    let present: HashSet<&str> = listing.records.iter().map(|r| r.id.as_str()).collect();
    seen.retain(|id, s| present.contains(id.as_str()) || s.listing > listing.number);
}

/// The groups known to exist after a full listing: those it showed, and those a later
/// listing reported. At 20 creates/s a full listing of 50,000 groups misses hundreds made while
/// its pages were read; describing each of them again, 20 to a call, held up the polls.
pub(super) fn known_present<'a>(
    seen: &'a HashMap<String, Seen>,
    listing: &'a Listing,
) -> HashSet<&'a str> {
    let reported_later = seen
        .iter()
        .filter(|(_, s)| s.listing > listing.number)
        .map(|(id, _)| id.as_str());
    listing
        .records
        .iter()
        .map(|r| r.id.as_str())
        .chain(reported_later)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn listed(id: &str, fingerprint: u64) -> Listed {
        Listed {
            id: id.into(),
            fingerprint,
            transitioning: false,
        }
    }

    fn seen(status: u64, events: u64, listing: u32) -> Seen {
        Seen {
            status,
            events,
            transitioning: false,
            listing,
        }
    }

    #[test]
    fn a_changed_status_or_event_is_fetched_an_unchanged_record_is_only_remembered() {
        let before = HashMap::from([
            ("same".to_string(), seen(1, 10, 3)),
            ("status".to_string(), seen(2, 20, 3)),
            ("events".to_string(), seen(3, 30, 3)),
        ]);
        let listing = Listing {
            number: 4,
            full: false,
            records: vec![listed("same", 1), listed("status", 22), listed("new", 5)],
            events: HashMap::from([("events".to_string(), 33), ("same".to_string(), 10)]),
        };
        let changes = changes(&before, &listing);
        assert_eq!(
            changes.changed,
            BTreeSet::from(["events".into(), "new".into(), "status".into()])
        );
        assert_eq!(changes.pending["same"], seen(1, 10, 4));
        assert_eq!(changes.pending["status"], seen(22, 20, 4));
        assert_eq!(changes.pending["events"], seen(3, 33, 4));
        assert_eq!(changes.pending["new"], seen(5, 0, 4));
    }

    #[test]
    fn a_full_listing_yields_to_the_polls_that_began_after_it() {
        // The full listing began as number 7; poll 8 ran beside it and applied "polled".
        let before = HashMap::from([
            ("polled".to_string(), seen(80, 81, 8)),
            ("quiet".to_string(), seen(1, 2, 5)),
        ]);
        let full = Listing {
            number: 7,
            full: true,
            records: vec![listed("polled", 70), listed("quiet", 3)],
            events: HashMap::from([("polled".to_string(), 71)]),
        };
        let changes = changes(&before, &full);
        assert_eq!(changes.changed, BTreeSet::from(["quiet".into()]));
        assert!(!changes.pending.contains_key("polled"));
        assert_eq!(changes.pending["quiet"], seen(3, 2, 7));
    }

    #[test]
    fn a_full_listing_forgets_unlisted_groups_but_not_those_a_later_poll_saw() {
        let mut seen_groups = HashMap::from([
            ("listed".to_string(), seen(1, 1, 5)),
            ("gone".to_string(), seen(1, 1, 5)),
            ("created-since".to_string(), seen(1, 1, 8)),
        ]);
        let full = Listing {
            number: 7,
            full: true,
            records: vec![listed("listed", 1)],
            events: HashMap::new(),
        };
        forget_unlisted(&mut seen_groups, &full);
        let mut kept: Vec<&str> = seen_groups.keys().map(String::as_str).collect();
        kept.sort_unstable();
        assert_eq!(kept, ["created-since", "listed"]);
    }

    #[test]
    fn groups_a_later_poll_reported_are_known_present_after_a_full_listing() {
        let seen_groups = HashMap::from([
            ("listed".to_string(), seen(1, 1, 7)),
            ("created-since".to_string(), seen(1, 1, 8)),
            ("reported-before".to_string(), seen(1, 1, 6)),
        ]);
        let full = Listing {
            number: 7,
            full: true,
            records: vec![listed("listed", 1), listed("not-yet-applied", 2)],
            events: HashMap::new(),
        };
        let present = known_present(&seen_groups, &full);
        assert_eq!(
            present,
            HashSet::from(["listed", "not-yet-applied", "created-since"])
        );
    }
}
