use eci_types::wire::{Container, CreateContainerGroupRequest, EnvironmentVar, Tag, status};

use super::query::GroupFilter;
use super::*;
use crate::config::StockConfig;

fn t(seconds: i64) -> DateTime<Utc> {
    DateTime::from_timestamp(1_700_000_000 + seconds, 0).unwrap()
}

fn config() -> SimConfig {
    SimConfig {
        timing: TimingConfig {
            schedule_ms: MillisRange::fixed(1_000),
            start_ms: MillisRange::fixed(2_000),
            restart_ms: MillisRange::fixed(1_000),
            max_terminating_ms: 5_000,
        },
        ..SimConfig::default()
    }
}

fn container(name: &str, env: &[(&str, &str)]) -> Container {
    Container {
        name: name.into(),
        image: "nginx".into(),
        environment_var: env
            .iter()
            .map(|(k, v)| EnvironmentVar {
                key: (*k).into(),
                value: Some((*v).into()),
                field_ref: None,
            })
            .collect(),
        ..Container::default()
    }
}

fn request(name: &str) -> CreateContainerGroupRequest {
    CreateContainerGroupRequest {
        region_id: "cn-hangzhou".into(),
        container_group_name: name.into(),
        container: vec![container("app", &[])],
        ..CreateContainerGroupRequest::default()
    }
}

fn spot(name: &str) -> CreateContainerGroupRequest {
    CreateContainerGroupRequest {
        spot_strategy: Some("SpotAsPriceGo".into()),
        ..request(name)
    }
}

#[test]
fn lifecycle_scheduling_pending_running_with_ip_and_events() {
    let mut sim = Sim::new(config()).unwrap();
    let id = sim.create(request("web"), t(0)).unwrap();
    assert!(id.starts_with("eci-") && id.len() == 24);
    assert_eq!(sim.group(&id).unwrap().status, status::SCHEDULING);
    sim.advance(t(1));
    let group = sim.group(&id).unwrap();
    assert_eq!(group.status, status::PENDING);
    let ip = group.ip.unwrap();
    assert!(ip.to_string().starts_with("10.1."), "{ip}");
    sim.advance(t(3));
    let group = sim.group(&id).unwrap();
    assert_eq!(group.status, status::RUNNING);
    assert!(group.containers[0].ready);
    let reasons: Vec<&str> = group.events.iter().map(|e| e.reason).collect();
    assert_eq!(reasons, ["Pulling", "Pulled", "Created", "Started"]);
    assert_eq!(group.cpu, 2.0);
    assert_eq!(group.memory, 4.0);
}

#[test]
fn containers_exit_per_restart_policy() {
    let mut sim = Sim::new(config()).unwrap();
    let mut job = request("job");
    job.restart_policy = Some("Never".into());
    job.container = vec![container(
        "work",
        &[(behaviour_env::EXIT_AFTER_SECONDS, "5")],
    )];
    let job = sim.create(job, t(0)).unwrap();

    let mut failing = request("failing");
    failing.restart_policy = Some("OnFailure".into());
    failing.container = vec![container(
        "work",
        &[
            (behaviour_env::EXIT_AFTER_SECONDS, "5"),
            (behaviour_env::EXIT_CODE, "3"),
        ],
    )];
    let failing = sim.create(failing, t(0)).unwrap();

    let mut broken = request("broken");
    broken.restart_policy = Some("Never".into());
    broken.container = vec![container(
        "work",
        &[
            (behaviour_env::EXIT_AFTER_SECONDS, "1"),
            (behaviour_env::EXIT_CODE, "1"),
        ],
    )];
    let broken = sim.create(broken, t(0)).unwrap();

    sim.advance(t(9));
    assert_eq!(sim.group(&job).unwrap().status, status::SUCCEEDED);
    assert!(
        sim.group(&job).unwrap().ip.is_none(),
        "IP released at the end"
    );
    let failing = sim.group(&failing).unwrap();
    assert_eq!(failing.status, status::RUNNING);
    assert_eq!(failing.containers[0].restart_count, 1);
    assert_eq!(failing.containers[0].previous.exit_code, 3);
    let broken = sim.group(&broken).unwrap();
    assert_eq!(broken.status, status::FAILED);
    assert_eq!(broken.containers[0].current.exit_code, 1);
}

#[test]
fn stock_is_refused_synchronously_when_gone_and_asynchronously_when_taken() {
    let mut config = config();
    config.vswitches.truncate(1);
    config.stock = vec![StockConfig {
        zone: "cn-hangzhou-h".into(),
        spec: None,
        count: 1,
    }];
    let mut sim = Sim::new(config).unwrap();
    let first = sim.create(request("first"), t(0)).unwrap();
    let second = sim.create(request("second"), t(0)).unwrap();
    sim.advance(t(1));
    assert_eq!(sim.group(&first).unwrap().status, status::PENDING);
    let second_group = sim.group(&second).unwrap();
    assert_eq!(second_group.status, status::SCHEDULE_FAILED);
    assert!(second_group.events.iter().any(|e| e.reason == "NoStock"));
    assert!(
        sim.group(&first)
            .unwrap()
            .events
            .iter()
            .any(|e| e.reason == "StockExhaust")
    );
    let refused = sim.create(request("third"), t(2)).unwrap_err();
    assert_eq!(
        (refused.status, refused.code.as_str()),
        (403, "OperationDenied.NoStock")
    );
    sim.delete(&first, false, t(3)).unwrap();
    assert!(
        sim.create(request("fourth"), t(3)).is_ok(),
        "deleting returns stock"
    );
}

#[test]
fn multi_zone_falls_through_to_a_zone_with_stock() {
    let mut config = config();
    config.stock = vec![StockConfig {
        zone: "cn-hangzhou-h".into(),
        spec: None,
        count: 0,
    }];
    let mut sim = Sim::new(config).unwrap();
    let mut req = request("mz");
    req.v_switch_id = Some(eci_types::params::CommaList(vec![
        "vsw-sim-a".into(),
        "vsw-sim-b".into(),
    ]));
    let id = sim.create(req, t(0)).unwrap();
    sim.advance(t(1));
    let group = sim.group(&id).unwrap();
    assert_eq!(group.zone, "cn-hangzhou-i");
    assert!(group.ip.unwrap().to_string().starts_with("10.2."));
}

#[test]
fn changed_since_sees_readiness_and_notices_not_only_status() {
    let mut sim = Sim::new(config()).unwrap();
    let mut late_ready = spot("late-ready");
    late_ready.container = vec![container(
        "app",
        &[(behaviour_env::READY_AFTER_SECONDS, "100")],
    )];
    let id = sim.create(late_ready, t(0)).unwrap();
    sim.advance(t(3));
    assert_eq!(sim.group(&id).unwrap().status, status::RUNNING);
    let changed_since = |sim: &Sim, since: i64| {
        let filter = GroupFilter {
            changed_since: Some(t(since)),
            ..GroupFilter::default()
        };
        sim.page(&filter, None, 10).unwrap().total
    };
    assert_eq!(changed_since(&sim, 50), 0);
    sim.advance(t(103));
    assert!(sim.group(&id).unwrap().containers[0].ready);
    assert_eq!(changed_since(&sim, 50), 1, "readiness is a change");
    assert_eq!(changed_since(&sim, 150), 0);
    sim.spot_release(std::slice::from_ref(&id), 180.0, t(200));
    assert_eq!(changed_since(&sim, 150), 1, "a spot notice is a change");
}

#[test]
fn spot_release_warns_then_expires() {
    let mut sim = Sim::new(config()).unwrap();
    let id = sim.create(spot("spot"), t(0)).unwrap();
    let regular = sim.create(request("regular"), t(0)).unwrap();
    sim.advance(t(3));
    let outcome = sim.spot_release(&[id.clone(), regular.clone()], 180.0, t(10));
    assert_eq!(outcome.released, vec![id.clone()]);
    assert_eq!(outcome.skipped, vec![regular]);
    let notice = sim
        .group(&id)
        .unwrap()
        .events
        .iter()
        .find(|e| e.reason == "SpotToBeReleased")
        .cloned()
        .unwrap();
    assert_eq!(&*notice.message, "Spot ECI will be released in 3 minutes");
    assert!(notice.warning);
    sim.advance(t(189));
    assert_eq!(sim.group(&id).unwrap().status, status::RUNNING);
    sim.advance(t(190));
    let group = sim.group(&id).unwrap();
    assert_eq!(group.status, status::EXPIRED);
    assert_eq!(group.containers[0].current.phase, RunPhase::Terminated);

    let short = sim.create(spot("short"), t(200)).unwrap();
    sim.advance(t(203));
    sim.spot_release(std::slice::from_ref(&short), 20.0, t(203));
    let message = &sim.group(&short).unwrap().events.last().unwrap().message;
    assert_eq!(&**message, "Spot ECI will be released in 0.33 minutes");
}

#[test]
fn pagination_walks_every_match_once() {
    let mut sim = Sim::new(config()).unwrap();
    for i in 0..45 {
        let mut req = request(&format!("g-{i}"));
        req.tag = vec![Tag::new(
            "cluster",
            if i % 3 == 0 { "other" } else { "mine" },
        )];
        sim.create(req, t(0)).unwrap();
    }
    let filter = GroupFilter {
        tags: vec![Tag::new("cluster", "mine")],
        ..GroupFilter::default()
    };
    let mut token: Option<String> = None;
    let mut seen = Vec::new();
    loop {
        let page = sim.page(&filter, token.as_deref(), 20).unwrap();
        assert_eq!(page.total, 30);
        seen.extend(
            page.groups
                .iter()
                .map(|g| g.spec.container_group_name.clone()),
        );
        if page.next_token.is_empty() {
            break;
        }
        token = Some(page.next_token);
    }
    assert_eq!(seen.len(), 30);
    seen.dedup();
    assert_eq!(seen.len(), 30);
    assert!(sim.page(&filter, Some("not-a-token"), 20).is_err());
}

#[test]
fn client_token_replays_and_detects_mismatch() {
    let mut sim = Sim::new(config()).unwrap();
    let params = vec![("ContainerGroupName".to_string(), "a".to_string())];
    assert!(
        sim.replay("CreateContainerGroup", Some("tok"), &params)
            .is_none()
    );
    let result = sim.create(request("a"), t(0));
    sim.remember("CreateContainerGroup", Some("tok"), &params, &result);
    assert_eq!(
        sim.replay("CreateContainerGroup", Some("tok"), &params),
        Some(result)
    );
    let other = vec![("ContainerGroupName".to_string(), "b".to_string())];
    let mismatch = sim
        .replay("CreateContainerGroup", Some("tok"), &other)
        .unwrap()
        .unwrap_err();
    assert_eq!(mismatch.code, "IdempotentParameterMismatch");
}

#[test]
fn delete_with_pre_stop_passes_terminating() {
    let mut sim = Sim::new(config()).unwrap();
    let mut req = request("graceful");
    req.container[0].lifecycle_pre_stop_handler_exec = vec!["sleep".into(), "1".into()];
    req.termination_grace_period_seconds = Some(2);
    let id = sim.create(req, t(0)).unwrap();
    sim.advance(t(3));
    sim.delete(&id, false, t(4)).unwrap();
    assert_eq!(sim.group(&id).unwrap().status, status::TERMINATING);
    sim.advance(t(6));
    assert!(sim.group(&id).is_none());
    assert_eq!(sim.delete(&id, false, t(7)).unwrap_err().status, 404);
}

#[test]
fn terminal_groups_are_pruned_after_retention() {
    let mut config = config();
    config.retention.full_seconds = 60;
    config.retention.keep_latest = 2;
    let mut sim = Sim::new(config).unwrap();
    for i in 0..5 {
        let mut req = request(&format!("job-{i}"));
        req.restart_policy = Some("Never".into());
        req.container = vec![container("w", &[(behaviour_env::EXIT_AFTER_SECONDS, "1")])];
        sim.create(req, t(i)).unwrap();
    }
    sim.advance(t(30));
    assert_eq!(sim.len(), 5);
    sim.advance(t(200));
    assert_eq!(sim.len(), 2);
    let names: Vec<String> = sim
        .groups()
        .map(|g| g.spec.container_group_name.clone())
        .collect();
    assert_eq!(names, ["job-3", "job-4"]);
}

#[test]
fn odd_container_sizes_round_up_with_an_event() {
    let mut sim = Sim::new(config()).unwrap();
    let mut req = request("odd");
    req.container[0].cpu = Some(1.5);
    req.container[0].memory = Some(3.0);
    let id = sim.create(req, t(0)).unwrap();
    let group = sim.group(&id).unwrap();
    assert_eq!((group.cpu, group.memory), (2.0, 4.0));
    assert!(
        group
            .events
            .iter()
            .any(|e| e.reason == "AutoInstanceTypeMatch" && e.message.ends_with("2-4Gi"))
    );
    let mut bad = request("bad");
    bad.cpu = Some(3.0);
    bad.memory = Some(5.0);
    assert_eq!(
        sim.create(bad, t(0)).unwrap_err().code,
        "InvalidParameter.CPU.Memory"
    );
}

#[test]
fn same_seed_same_run() {
    let ids = |seed| {
        let mut sim = Sim::new(SimConfig { seed, ..config() }).unwrap();
        (0..3)
            .map(|i| sim.create(request(&format!("s-{i}")), t(0)).unwrap())
            .collect::<Vec<_>>()
    };
    assert_eq!(ids(9), ids(9));
    assert_ne!(ids(9), ids(10));
}
