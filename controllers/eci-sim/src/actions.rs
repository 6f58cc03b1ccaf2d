//! The ECI actions: typed request in, state change, typed response out.

use chrono::{DateTime, TimeDelta, Utc};
use eci_types::params::{JsonList, from_params};
use eci_types::wire::*;
use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::Value;

use crate::error::ApiError;
use crate::render;
use crate::state::Sim;
use crate::state::group::{ContainerRun, Group, RunPhase};
use crate::state::query::GroupFilter;
use crate::telemetry;
use crate::validate;

/// Everything an action handler needs besides the state.
pub struct Call<'a> {
    pub action: &'a str,
    pub params: &'a [(String, String)],
    pub now: DateTime<Utc>,
    pub host: &'a str,
    pub request_id: String,
}

fn parse<T: DeserializeOwned>(call: &Call<'_>) -> Result<T, ApiError> {
    Ok(from_params(
        call.params.iter().map(|(k, v)| (k.as_str(), v.as_str())),
    )?)
}

fn respond<T: Serialize>(response: &T) -> Result<Value, ApiError> {
    serde_json::to_value(response).map_err(|_| ApiError::internal())
}

type Handler = fn(&mut Sim, &Call<'_>) -> Result<Value, ApiError>;

/// Every action the simulator serves: its wire name and its handler.
const ACTIONS: &[(&str, Handler)] = &[
    ("CreateContainerGroup", create),
    ("DescribeContainerGroups", describe),
    ("DescribeContainerGroupStatus", describe_status),
    ("DescribeContainerGroupEvents", describe_events),
    ("DeleteContainerGroup", delete),
    ("UpdateContainerGroup", update),
    ("RestartContainerGroup", restart),
    ("DescribeContainerLog", logs),
    ("ExecContainerCommand", exec),
    ("DescribeContainerGroupMetric", metric),
    ("DescribeMultiContainerGroupMetric", multi_metric),
];

fn handler(action: &str) -> Option<Handler> {
    ACTIONS
        .iter()
        .find(|(name, _)| *name == action)
        .map(|(_, handler)| *handler)
}

/// Whether the simulator serves `action`.
pub fn serves(action: &str) -> bool {
    handler(action).is_some()
}

/// Runs `call` against `sim`. Unknown actions are `InvalidAction.NotFound`.
pub fn dispatch(sim: &mut Sim, call: &Call<'_>) -> Result<Value, ApiError> {
    match handler(call.action) {
        Some(run) => run(sim, call),
        None => Err(ApiError::unknown_action()),
    }
}

/// Replays a ClientToken'd call, or runs it and remembers the outcome.
fn idempotent(
    sim: &mut Sim,
    call: &Call<'_>,
    token: Option<&str>,
    run: impl FnOnce(&mut Sim) -> Result<String, ApiError>,
) -> Result<String, ApiError> {
    if let Some(result) = sim.replay(call.action, token, call.params) {
        return result;
    }
    let result = run(sim);
    let retryable = result
        .as_ref()
        .err()
        .is_some_and(|e| e.status >= 500 || e.code.starts_with("Throttling"));
    if !retryable {
        sim.remember(call.action, token, call.params, &result);
    }
    result
}

fn create(sim: &mut Sim, call: &Call<'_>) -> Result<Value, ApiError> {
    let request: CreateContainerGroupRequest = parse(call)?;
    let token = request.client_token.clone();
    let now = call.now;
    let id = idempotent(sim, call, token.as_deref(), |sim| sim.create(request, now))?;
    respond(&CreateContainerGroupResponse {
        request_id: call.request_id.clone(),
        container_group_id: id,
    })
}

fn ids_filter(ids: Option<JsonList>) -> Result<Option<Vec<String>>, ApiError> {
    match ids {
        Some(JsonList(ids)) if ids.len() > 20 => Err(ApiError::invalid(
            "ContainerGroupIds",
            "At most 20 ids per call.",
        )),
        Some(JsonList(ids)) if !ids.is_empty() => Ok(Some(ids)),
        _ => Ok(None),
    }
}

fn tags_filter(tags: Vec<Tag>) -> Result<Vec<Tag>, ApiError> {
    if tags.len() > 10 {
        return Err(ApiError::invalid("Tag", "At most 10 tags per call."));
    }
    Ok(tags)
}

fn limit(value: Option<i64>, default: i64, max: i64) -> Result<usize, ApiError> {
    let limit = value.unwrap_or(default);
    if !(1..=max).contains(&limit) {
        return Err(ApiError::invalid(
            "Limit",
            format!("It must be between 1 and {max}."),
        ));
    }
    Ok(limit as usize)
}

fn describe(sim: &mut Sim, call: &Call<'_>) -> Result<Value, ApiError> {
    let request: DescribeContainerGroupsRequest = parse(call)?;
    validate::region(&request.region_id, sim.config())?;
    if let Some(status) = &request.status
        && !status::ALL.contains(&status.as_str())
    {
        return Err(ApiError::invalid(
            "Status",
            format!("Unknown status {status}."),
        ));
    }
    let filter = GroupFilter {
        ids: ids_filter(request.container_group_ids)?,
        name: request.container_group_name,
        status: request.status,
        zone: request.zone_id,
        vswitch: request.v_switch_id,
        security_group: request.security_group_id,
        resource_group: request.resource_group_id,
        tags: tags_filter(request.tag)?,
        changed_since: None,
    };
    let limit = limit(request.limit, 20, 20)?;
    let with_events = request.with_event.unwrap_or(false);
    let region = sim.config().region.clone();
    let vpc = sim.config().vpc_id.clone();
    let page = sim.page(&filter, request.next_token.as_deref(), limit)?;
    respond(&DescribeContainerGroupsResponse {
        request_id: call.request_id.clone(),
        next_token: page.next_token,
        total_count: page.total as i64,
        container_groups: page
            .groups
            .into_iter()
            .map(|g| render::container_group(g, &region, &vpc, with_events))
            .collect(),
    })
}

fn status_filter(
    sim: &Sim,
    request: DescribeContainerGroupStatusRequest,
    now: DateTime<Utc>,
) -> Result<(GroupFilter, usize, Option<String>), ApiError> {
    validate::region(&request.region_id, sim.config())?;
    let changed_since = match request.since_second {
        None => None,
        Some(seconds) if (60..=3600).contains(&seconds) => Some(now - TimeDelta::seconds(seconds)),
        Some(_) => {
            return Err(ApiError::invalid(
                "SinceSecond",
                "It must be between 60 and 3600.",
            ));
        }
    };
    let filter = GroupFilter {
        ids: ids_filter(request.container_group_ids)?,
        zone: request.zone_id,
        vswitch: request.v_switch_id,
        resource_group: request.resource_group_id,
        tags: tags_filter(request.tag)?,
        changed_since,
        ..GroupFilter::default()
    };
    Ok((filter, limit(request.limit, 50, 200)?, request.next_token))
}

fn describe_status(sim: &mut Sim, call: &Call<'_>) -> Result<Value, ApiError> {
    let request: DescribeContainerGroupStatusRequest = parse(call)?;
    let (filter, limit, token) = status_filter(sim, request, call.now)?;
    let page = sim.page(&filter, token.as_deref(), limit)?;
    respond(&DescribeContainerGroupStatusResponse {
        request_id: call.request_id.clone(),
        next_token: page.next_token,
        total_count: page.total as i64,
        data: page.groups.into_iter().map(render::group_status).collect(),
    })
}

fn describe_events(sim: &mut Sim, call: &Call<'_>) -> Result<Value, ApiError> {
    let request: DescribeContainerGroupEventsRequest = parse(call)?;
    if let Some(source) = &request.event_source
        && !matches!(source.as_str(), "" | "EciService" | "K8sAgent")
    {
        return Err(ApiError::invalid("EventSource", "EciService or K8sAgent."));
    }
    let agent_only = request.event_source.as_deref() == Some("K8sAgent");
    let (filter, limit, token) = status_filter(sim, request.filter, call.now)?;
    let page = sim.page(&filter, token.as_deref(), limit)?;
    respond(&DescribeContainerGroupEventsResponse {
        request_id: call.request_id.clone(),
        next_token: page.next_token,
        total_count: page.total as i64,
        data: page
            .groups
            .into_iter()
            .map(|g| {
                let mut events = render::group_events(g, call.host);
                if agent_only {
                    events.events.clear();
                }
                events
            })
            .collect(),
    })
}

fn require_id(id: &str) -> Result<(), ApiError> {
    if id.is_empty() {
        Err(ApiError::missing("ContainerGroupId"))
    } else {
        Ok(())
    }
}

fn delete(sim: &mut Sim, call: &Call<'_>) -> Result<Value, ApiError> {
    let request: DeleteContainerGroupRequest = parse(call)?;
    validate::region(&request.region_id, sim.config())?;
    require_id(&request.container_group_id)?;
    let now = call.now;
    let force = request.force.unwrap_or(false);
    idempotent(sim, call, request.client_token.as_deref(), |sim| {
        sim.delete(&request.container_group_id, force, now)
            .map(|()| String::new())
    })?;
    respond(&EmptyResponse {
        request_id: call.request_id.clone(),
    })
}

fn update(sim: &mut Sim, call: &Call<'_>) -> Result<Value, ApiError> {
    let request: UpdateContainerGroupRequest = parse(call)?;
    validate::region(&request.region_id, sim.config())?;
    require_id(&request.container_group_id)?;
    if let Some(kind) = &request.update_type
        && !matches!(kind.as_str(), "RenewUpdate" | "IncrementalUpdate")
    {
        return Err(ApiError::invalid(
            "UpdateType",
            "RenewUpdate or IncrementalUpdate.",
        ));
    }
    let now = call.now;
    let token = request.client_token.clone();
    idempotent(sim, call, token.as_deref(), |sim| {
        sim.update(request, now).map(|()| String::new())
    })?;
    respond(&EmptyResponse {
        request_id: call.request_id.clone(),
    })
}

fn restart(sim: &mut Sim, call: &Call<'_>) -> Result<Value, ApiError> {
    let request: RestartContainerGroupRequest = parse(call)?;
    validate::region(&request.region_id, sim.config())?;
    require_id(&request.container_group_id)?;
    let now = call.now;
    idempotent(sim, call, request.client_token.as_deref(), |sim| {
        sim.restart(&request.container_group_id, now)
            .map(|()| String::new())
    })?;
    respond(&EmptyResponse {
        request_id: call.request_id.clone(),
    })
}

fn find_run<'a>(
    sim: &'a Sim,
    id: &str,
    container: &str,
) -> Result<(&'a Group, &'a ContainerRun), ApiError> {
    require_id(id)?;
    let group = sim.group(id).ok_or_else(|| {
        ApiError::not_found(format!("The specified ContainerGroupId {id} is not found."))
    })?;
    let run = group
        .containers
        .iter()
        .chain(&group.init_containers)
        .find(|c| *c.name == *container)
        .ok_or_else(|| {
            ApiError::invalid("ContainerName", format!("No container named {container}."))
        })?;
    Ok((group, run))
}

fn parse_time(name: &str, text: Option<&str>) -> Result<Option<DateTime<Utc>>, ApiError> {
    match text {
        None | Some("") => Ok(None),
        Some(text) => DateTime::parse_from_rfc3339(text)
            .map(|t| Some(t.with_timezone(&Utc)))
            .map_err(|_| ApiError::invalid(name, "It must be an RFC 3339 time.")),
    }
}

fn logs(sim: &mut Sim, call: &Call<'_>) -> Result<Value, ApiError> {
    let request: DescribeContainerLogRequest = parse(call)?;
    validate::region(&request.region_id, sim.config())?;
    let tail = request.tail.unwrap_or(500);
    if !(1..=2000).contains(&tail) {
        return Err(ApiError::invalid("Tail", "It must be between 1 and 2000."));
    }
    let limit_bytes = request.limit_bytes.unwrap_or(1_048_576);
    if !(1..=1_048_576).contains(&limit_bytes) {
        return Err(ApiError::invalid(
            "LimitBytes",
            "It must be between 1 and 1048576.",
        ));
    }
    let since = match request.since_seconds {
        Some(seconds) if seconds < 1 => {
            return Err(ApiError::invalid("SinceSeconds", "It must be at least 1."));
        }
        Some(seconds) => Some(call.now - TimeDelta::seconds(seconds.min(100 * 365 * 86_400))),
        None => parse_time("StartTime", request.start_time.as_deref())?,
    };
    let interval = TimeDelta::milliseconds(sim.config().telemetry.log_interval_ms.max(1) as i64);
    let (group, run) = find_run(sim, &request.container_group_id, &request.container_name)?;
    let state = if request.last_time == Some(true) {
        &run.previous
    } else {
        &run.current
    };
    let query = telemetry::LogQuery {
        tail: tail as usize,
        since,
        timestamps: request.timestamps == Some(true),
        limit_bytes: limit_bytes as usize,
    };
    let content = telemetry::log_content(&group.id, run, state, interval, call.now, &query);
    respond(&DescribeContainerLogResponse {
        request_id: call.request_id.clone(),
        container_name: request.container_name,
        content,
    })
}

fn exec(sim: &mut Sim, call: &Call<'_>) -> Result<Value, ApiError> {
    let request: ExecContainerCommandRequest = parse(call)?;
    validate::region(&request.region_id, sim.config())?;
    let command = &request.command.0;
    if command.is_empty() {
        return Err(ApiError::missing("Command"));
    }
    if command.len() > 20 || command.iter().any(|c| c.len() > 256) {
        return Err(ApiError::new(
            400,
            "InvalidParameter.ValueExceeded",
            "Command has at most 20 entries of at most 256 characters.",
        ));
    }
    let sync = request.sync.unwrap_or(false);
    if sync && request.tty == Some(true) {
        return Err(ApiError::invalid(
            "TTY",
            "TTY must be false when Sync is true.",
        ));
    }
    let (group, run) = find_run(sim, &request.container_group_id, &request.container_name)?;
    if run.current.phase != RunPhase::Running {
        return Err(ApiError::incorrect_status(&group.id, "not running"));
    }
    let container = crate::commands::Container {
        hostname: group.spec.container_group_name.clone(),
        env: group
            .spec
            .container
            .iter()
            .find(|c| *c.name == *run.name)
            .map(|c| {
                c.environment_var
                    .iter()
                    .map(|e| (e.key.clone(), e.value.clone().unwrap_or_default()))
                    .collect()
            })
            .unwrap_or_default(),
    };
    let group_id = group.id.clone();
    let session = call.request_id.replace('-', "").to_ascii_lowercase();
    if sync {
        // Sync mode answers with the output only: ECI documents no exit code for it.
        let (output, _exit_code) = crate::commands::run_to_end(command, &container);
        return respond(&ExecContainerCommandResponse {
            request_id: call.request_id.clone(),
            sync_response: output,
            ..Default::default()
        });
    }
    sim.add_exec_session(
        session.clone(),
        crate::state::ExecSession {
            group_id,
            argv: command.clone(),
            tty: request.tty == Some(true),
            container,
            expires: call.now + TimeDelta::seconds(30),
        },
        call.now,
    );
    respond(&ExecContainerCommandResponse {
        request_id: call.request_id.clone(),
        web_socket_uri: format!("ws://{}/_sim/exec/?s={session}", call.host),
        http_url: format!("http://{}/_sim/terminal?param={session}", call.host),
        sync_response: String::new(),
    })
}

fn metric(sim: &mut Sim, call: &Call<'_>) -> Result<Value, ApiError> {
    let request: DescribeContainerGroupMetricRequest = parse(call)?;
    validate::region(&request.region_id, sim.config())?;
    require_id(&request.container_group_id)?;
    let sample = sim.config().telemetry.metric_sample_seconds.max(1) as i64;
    let group = sim.group(&request.container_group_id).ok_or_else(|| {
        ApiError::not_found(format!(
            "The specified ContainerGroupId {} is not found.",
            request.container_group_id
        ))
    })?;
    let period = match request.period.as_deref() {
        None | Some("") => 60,
        Some(p @ ("15" | "30" | "60" | "600")) => p.parse().unwrap_or(60),
        Some(_) => return Err(ApiError::invalid("Period", "15, 30, 60 or 600.")),
    };
    let start = parse_time("StartTime", request.start_time.as_deref())?;
    let end = parse_time("EndTime", request.end_time.as_deref())?;
    // Without a window ECI answers the last five minutes at its real-time granularity.
    let (start, end, period) = match (start, end) {
        (None, None) => (call.now - TimeDelta::minutes(5), call.now, sample),
        (start, end) => {
            let end = end.unwrap_or(call.now).min(call.now);
            let start = start.unwrap_or(end - TimeDelta::minutes(5));
            (start, end, period.max(sample))
        }
    };
    if start > end {
        return Err(ApiError::invalid(
            "StartTime",
            "StartTime must be before EndTime.",
        ));
    }
    if start < call.now - TimeDelta::days(30) {
        return Err(ApiError::invalid(
            "StartTime",
            "StartTime must be within the last 30 days.",
        ));
    }
    let records = telemetry::records(group, start, end, TimeDelta::seconds(period));
    respond(&DescribeContainerGroupMetricResponse {
        request_id: call.request_id.clone(),
        container_group_id: request.container_group_id,
        records,
    })
}

fn multi_metric(sim: &mut Sim, call: &Call<'_>) -> Result<Value, ApiError> {
    let request: DescribeMultiContainerGroupMetricRequest = parse(call)?;
    validate::region(&request.region_id, sim.config())?;
    let ids = &request.container_group_ids.0;
    if ids.is_empty() {
        return Err(ApiError::missing("ContainerGroupIds"));
    }
    if ids.len() > 20 {
        return Err(ApiError::invalid(
            "ContainerGroupIds",
            "At most 20 ids per call.",
        ));
    }
    if let Some(kind) = request.metric_type.as_deref()
        && !matches!(kind, "" | "summary")
    {
        return Err(ApiError::invalid(
            "MetricType",
            "Only summary is supported.",
        ));
    }
    let sample = TimeDelta::seconds(sim.config().telemetry.metric_sample_seconds.max(1) as i64);
    let start = call.now - TimeDelta::minutes(5);
    // Unknown (or long deleted) ids are left out rather than failing the whole batch.
    let monitor_datas = ids
        .iter()
        .filter_map(|id| sim.group(id))
        .map(|group| GroupMonitorData {
            container_group_id: group.id.clone(),
            records: telemetry::records(group, start, call.now, sample),
        })
        .collect();
    respond(&DescribeMultiContainerGroupMetricResponse {
        request_id: call.request_id.clone(),
        monitor_datas,
    })
}
