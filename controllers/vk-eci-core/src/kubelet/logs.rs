//! `/containerLogs` in terms of `DescribeContainerLog`: the query the API server sends, the
//! ECI calls that answer it, and the de-duplication that turns repeated polls into `follow`.
//!
//! ECI has no follow: the kubelet API polls with `StartTime` at the last line seen
//! (`Timestamps=true`, so each line carries its time) and drops what it already sent. Lines
//! sharing the last timestamp are remembered by content, so a poll that starts at that second
//! neither repeats them nor loses a new line written in the same second.

use chrono::{DateTime, SecondsFormat, TimeDelta, Utc};
use eci_types::wire::DescribeContainerLogRequest;

/// ECI's largest `Tail`.
pub const MAX_TAIL: i64 = 2000;
/// ECI's largest `LimitBytes`.
pub const MAX_LIMIT_BYTES: i64 = 1_048_576;

/// The query of `GET /containerLogs/{ns}/{pod}/{container}`, validated like the API server's
/// `PodLogOptions`.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct LogOptions {
    pub follow: bool,
    pub previous: bool,
    pub timestamps: bool,
    pub since_seconds: Option<i64>,
    pub since_time: Option<DateTime<Utc>>,
    pub tail_lines: Option<i64>,
    pub limit_bytes: Option<i64>,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LogQueryError {
    #[error("{name}: {reason}")]
    Invalid { name: &'static str, reason: String },
    #[error("at most one of sinceSeconds or sinceTime may be specified")]
    BothSince,
}

fn invalid(name: &'static str, reason: impl Into<String>) -> LogQueryError {
    LogQueryError::Invalid {
        name,
        reason: reason.into(),
    }
}

fn flag(name: &'static str, value: &str) -> Result<bool, LogQueryError> {
    match value {
        "" | "1" | "true" | "True" | "TRUE" => Ok(true),
        "0" | "false" | "False" | "FALSE" => Ok(false),
        _ => Err(invalid(name, format!("{value:?} is not a boolean"))),
    }
}

fn number(name: &'static str, value: &str) -> Result<i64, LogQueryError> {
    value
        .parse()
        .map_err(|_| invalid(name, format!("{value:?} is not an integer")))
}

impl LogOptions {
    /// Reads the decoded query pairs. Unknown parameters are ignored, as the kubelet does.
    pub fn parse<'a>(
        pairs: impl IntoIterator<Item = (&'a str, &'a str)>,
    ) -> Result<Self, LogQueryError> {
        let mut options = Self::default();
        for (name, value) in pairs {
            match name {
                "follow" => options.follow = flag("follow", value)?,
                "previous" => options.previous = flag("previous", value)?,
                "timestamps" => options.timestamps = flag("timestamps", value)?,
                "sinceSeconds" => {
                    let seconds = number("sinceSeconds", value)?;
                    if seconds < 1 {
                        return Err(invalid("sinceSeconds", "must be greater than 0"));
                    }
                    options.since_seconds = Some(seconds);
                }
                "sinceTime" => {
                    let at = DateTime::parse_from_rfc3339(value)
                        .map_err(|_| invalid("sinceTime", format!("{value:?} is not RFC 3339")))?;
                    options.since_time = Some(at.to_utc());
                }
                "tailLines" => {
                    let lines = number("tailLines", value)?;
                    if lines < 0 {
                        return Err(invalid("tailLines", "must be greater than or equal to 0"));
                    }
                    options.tail_lines = Some(lines);
                }
                "limitBytes" => {
                    let bytes = number("limitBytes", value)?;
                    if bytes < 1 {
                        return Err(invalid("limitBytes", "must be greater than 0"));
                    }
                    options.limit_bytes = Some(bytes);
                }
                _ => {}
            }
        }
        if options.since_seconds.is_some() && options.since_time.is_some() {
            return Err(LogQueryError::BothSince);
        }
        Ok(options)
    }

    /// Whether the answer is empty without asking ECI (`tailLines=0` and not following).
    pub fn nothing_to_read(&self) -> bool {
        self.tail_lines == Some(0) && !self.follow
    }

    /// The first `DescribeContainerLog` call. Without `tailLines` ECI's maximum is asked for
    /// (ECI cannot return the whole log); following always asks for timestamps, which
    /// [`FollowCursor`] needs and strips again when the client did not ask for them.
    pub fn first_request(&self, group_id: &str, container: &str) -> DescribeContainerLogRequest {
        DescribeContainerLogRequest {
            container_group_id: group_id.into(),
            container_name: container.into(),
            tail: Some(self.tail_lines.unwrap_or(MAX_TAIL).clamp(1, MAX_TAIL)),
            since_seconds: self.since_seconds,
            start_time: self.since_time.map(rfc3339_seconds),
            // Following, the cursor counts the bytes of what it renders itself.
            limit_bytes: self
                .limit_bytes
                .filter(|_| !self.follow)
                .map(|b| b.clamp(1, MAX_LIMIT_BYTES)),
            timestamps: Some(self.timestamps || self.follow),
            last_time: self.previous.then_some(true),
            ..DescribeContainerLogRequest::default()
        }
    }
}

/// RFC 3339 at whole seconds, rounded down (ECI documents `StartTime` without fractions).
fn rfc3339_seconds(at: DateTime<Utc>) -> String {
    let floor = DateTime::from_timestamp(at.timestamp(), 0).unwrap_or(at);
    floor.to_rfc3339_opts(SecondsFormat::Secs, true)
}

/// One log line as ECI sent it with `Timestamps=true`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogLine {
    pub at: DateTime<Utc>,
    pub text: String,
}

impl LogLine {
    /// Splits `<RFC 3339> <text>`; `None` for a line without a readable timestamp.
    pub fn parse(line: &str) -> Option<Self> {
        let (time, text) = line.split_once(' ').unwrap_or((line, ""));
        let at = DateTime::parse_from_rfc3339(time).ok()?.to_utc();
        Some(Self {
            at,
            text: text.to_string(),
        })
    }

    /// The line as the client wants it, newline included.
    pub fn render(&self, timestamps: bool) -> String {
        if timestamps {
            format!(
                "{} {}\n",
                self.at.to_rfc3339_opts(SecondsFormat::Nanos, true),
                self.text
            )
        } else {
            format!("{}\n", self.text)
        }
    }
}

/// Where a followed log stands: the last timestamp sent and the lines sent at it.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct FollowCursor {
    last: Option<DateTime<Utc>>,
    sent_at_last: Vec<String>,
    /// Bytes still allowed by `limitBytes` (`None`: no limit).
    bytes_left: Option<usize>,
}

/// What one poll's answer contributes to the stream.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct FollowStep {
    /// Rendered lines to send, in order.
    pub chunks: Vec<String>,
    /// `limitBytes` is used up: the stream ends after `chunks`.
    pub exhausted: bool,
}

impl FollowCursor {
    pub fn new(options: &LogOptions) -> Self {
        Self {
            bytes_left: options
                .limit_bytes
                .map(|b| usize::try_from(b).unwrap_or(usize::MAX)),
            ..Self::default()
        }
    }

    /// The poll after the first: from the second of the last line seen (inclusive; repeats are
    /// dropped), as many lines as ECI gives, with timestamps. Before any line was seen it
    /// repeats `first` from `started` so that nothing written since the first call is missed.
    pub fn next_request(
        &self,
        first: &DescribeContainerLogRequest,
        started: DateTime<Utc>,
    ) -> DescribeContainerLogRequest {
        DescribeContainerLogRequest {
            tail: Some(MAX_TAIL),
            since_seconds: None,
            start_time: Some(rfc3339_seconds(self.last.unwrap_or(started))),
            limit_bytes: None,
            timestamps: Some(true),
            ..first.clone()
        }
    }

    /// Takes an answer as already sent without sending it: following with `tailLines=0`
    /// starts after what the first call found.
    pub fn skip(&mut self, content: &str) {
        let bytes_left = self.bytes_left.take();
        self.accept(content, false);
        self.bytes_left = bytes_left;
    }

    /// Takes one answer's `Content` (with timestamps) and returns what is new.
    pub fn accept(&mut self, content: &str, timestamps: bool) -> FollowStep {
        let mut step = FollowStep::default();
        // What this answer may repeat: each remembered line matches one line of it, so the
        // same text written twice in one instant is not mistaken for a repeat.
        let mut repeatable = self.sent_at_last.clone();
        for raw in content.lines() {
            let Some(line) = LogLine::parse(raw) else {
                continue;
            };
            match self.last {
                Some(last) if line.at < last => continue,
                Some(last) if line.at == last => {
                    if let Some(index) = repeatable.iter().position(|t| *t == line.text) {
                        repeatable.swap_remove(index);
                        continue;
                    }
                }
                _ => {
                    self.last = Some(line.at);
                    self.sent_at_last.clear();
                    repeatable.clear();
                }
            }
            let mut chunk = line.render(timestamps);
            self.sent_at_last.push(line.text);
            if let Some(left) = self.bytes_left.as_mut() {
                if chunk.len() >= *left {
                    truncate_at_char(&mut chunk, *left);
                    *left = 0;
                    step.chunks.push(chunk);
                    step.exhausted = true;
                    return step;
                }
                *left -= chunk.len();
            }
            step.chunks.push(chunk);
        }
        step
    }
}

fn truncate_at_char(text: &mut String, limit: usize) {
    if text.len() > limit {
        let boundary = (0..=limit)
            .rev()
            .find(|i| text.is_char_boundary(*i))
            .unwrap_or(0);
        text.truncate(boundary);
    }
}

/// Removes the timestamps the follow path asked for when the client did not want them.
pub fn strip_timestamps(content: &str) -> String {
    content
        .lines()
        .map(|raw| match LogLine::parse(raw) {
            Some(line) => line.render(false),
            None => format!("{raw}\n"),
        })
        .collect()
}

/// How long a stream waits between polls when `streams` share `calls_per_minute`: as fast as
/// `floor` allows while the budget covers everyone, slower (evenly) once it does not.
pub fn poll_interval(streams: usize, calls_per_minute: u32, floor: TimeDelta) -> TimeDelta {
    let calls = i64::from(calls_per_minute.max(1));
    let streams = i64::try_from(streams.max(1)).unwrap_or(i64::MAX);
    let even = TimeDelta::milliseconds(60_000i64.saturating_mul(streams) / calls);
    even.max(floor)
}

#[cfg(test)]
mod tests;
