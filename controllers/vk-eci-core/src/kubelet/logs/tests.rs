use super::*;

fn parse(query: &[(&'static str, &'static str)]) -> Result<LogOptions, LogQueryError> {
    LogOptions::parse(query.iter().copied())
}

fn at(second: i64, nanos: u32) -> DateTime<Utc> {
    DateTime::from_timestamp(1_700_000_000 + second, nanos).unwrap()
}

fn stamped(second: i64, text: &str) -> String {
    format!(
        "{} {text}\n",
        at(second, 0).to_rfc3339_opts(SecondsFormat::Nanos, true)
    )
}

#[test]
fn the_query_is_validated_like_pod_log_options() {
    let options = parse(&[
        ("follow", "true"),
        ("previous", "1"),
        ("timestamps", "true"),
        ("sinceSeconds", "30"),
        ("tailLines", "10"),
        ("limitBytes", "100"),
        ("pretty", "x"),
    ])
    .unwrap();
    assert!(options.follow && options.previous && options.timestamps);
    assert_eq!(options.since_seconds, Some(30));
    assert_eq!(options.tail_lines, Some(10));
    assert_eq!(options.limit_bytes, Some(100));

    assert!(parse(&[("sinceSeconds", "0")]).is_err());
    assert!(parse(&[("limitBytes", "0")]).is_err());
    assert!(parse(&[("tailLines", "-1")]).is_err());
    assert!(parse(&[("sinceTime", "yesterday")]).is_err());
    assert!(parse(&[("follow", "perhaps")]).is_err());
    assert_eq!(
        parse(&[("sinceSeconds", "5"), ("sinceTime", "2026-01-01T00:00:00Z")]),
        Err(LogQueryError::BothSince)
    );
    assert!(parse(&[("tailLines", "0")]).unwrap().nothing_to_read());
    assert!(
        !parse(&[("tailLines", "0"), ("follow", "true")])
            .unwrap()
            .nothing_to_read()
    );
}

#[test]
fn the_first_call_maps_every_option_to_eci_within_its_limits() {
    let options = parse(&[
        ("previous", "true"),
        ("sinceTime", "2026-05-01T10:00:00.750Z"),
        ("tailLines", "5000"),
        ("limitBytes", "9999999"),
    ])
    .unwrap();
    let request = options.first_request("eci-1", "app");
    assert_eq!(request.container_group_id, "eci-1");
    assert_eq!(request.container_name, "app");
    assert_eq!(request.tail, Some(MAX_TAIL));
    assert_eq!(request.start_time.as_deref(), Some("2026-05-01T10:00:00Z"));
    assert_eq!(request.limit_bytes, Some(MAX_LIMIT_BYTES));
    assert_eq!(request.timestamps, Some(false));
    assert_eq!(request.last_time, Some(true));

    let plain = LogOptions::default().first_request("eci-1", "app");
    assert_eq!(
        plain.tail,
        Some(MAX_TAIL),
        "no tailLines: as much as ECI gives"
    );
    assert_eq!(plain.last_time, None);

    let follow = parse(&[("follow", "true"), ("limitBytes", "10")])
        .unwrap()
        .first_request("eci-1", "app");
    assert_eq!(follow.timestamps, Some(true), "following needs timestamps");
    assert_eq!(follow.limit_bytes, None, "the cursor applies limitBytes");
}

#[test]
fn follow_polls_from_the_last_second_seen_and_drops_repeats() {
    let options = parse(&[("follow", "true")]).unwrap();
    let first = options.first_request("eci-1", "app");
    let mut cursor = FollowCursor::new(&options);
    let started = at(0, 0);
    assert_eq!(
        cursor.next_request(&first, started).start_time.as_deref(),
        Some("2023-11-14T22:13:20Z"),
        "nothing seen yet: from when following started"
    );

    let step = cursor.accept(&(stamped(1, "one") + &stamped(2, "two")), false);
    assert_eq!(step.chunks, ["one\n", "two\n"]);
    let next = cursor.next_request(&first, started);
    assert_eq!(next.start_time.as_deref(), Some("2023-11-14T22:13:22Z"));
    assert_eq!(next.tail, Some(MAX_TAIL));
    assert_eq!(next.since_seconds, None);

    // The next poll repeats the last second and adds a line in that same second.
    let step = cursor.accept(
        &(stamped(2, "two") + &stamped(2, "two and a half") + &stamped(3, "three")),
        true,
    );
    assert_eq!(step.chunks.len(), 2, "{:?}", step.chunks);
    assert!(step.chunks[0].ends_with(" two and a half\n"));
    assert!(step.chunks[1].starts_with("2023-11-14T22:13:23.000000000Z three"));

    // Lines older than the cursor never come back.
    assert!(cursor.accept(&stamped(1, "one"), false).chunks.is_empty());
}

#[test]
fn the_same_text_twice_in_one_instant_is_not_a_repeat() {
    let mut cursor = FollowCursor::new(&LogOptions::default());
    let twice = stamped(5, "tick") + &stamped(5, "tick");
    assert_eq!(cursor.accept(&twice, false).chunks.len(), 2);
    assert!(cursor.accept(&twice, false).chunks.is_empty());
    let thrice = twice + &stamped(5, "tick");
    assert_eq!(cursor.accept(&thrice, false).chunks, ["tick\n"]);
}

#[test]
fn limit_bytes_ends_a_followed_stream_mid_line() {
    let options = parse(&[("follow", "true"), ("limitBytes", "6")]).unwrap();
    let mut cursor = FollowCursor::new(&options);
    let step = cursor.accept(&(stamped(1, "abc") + &stamped(2, "defgh")), false);
    assert_eq!(step.chunks, ["abc\n", "de"]);
    assert!(step.exhausted);
}

#[test]
fn stripping_timestamps_keeps_the_text() {
    let content = stamped(1, "one") + &stamped(2, "two words");
    assert_eq!(strip_timestamps(&content), "one\ntwo words\n");
    assert_eq!(strip_timestamps("no time here\n"), "no time here\n");
}

#[test]
fn poll_intervals_spread_the_budget_evenly_once_it_is_short() {
    let floor = TimeDelta::milliseconds(1000);
    assert_eq!(poll_interval(1, 400, floor), floor);
    assert_eq!(poll_interval(6, 400, floor), floor);
    assert_eq!(
        poll_interval(40, 400, floor),
        TimeDelta::seconds(6),
        "40 streams on 400 calls/min: each every 6 s"
    );
    assert_eq!(poll_interval(0, 0, floor), TimeDelta::seconds(60));
}

#[test]
fn following_from_zero_lines_skips_what_the_first_call_found() {
    let options = parse(&[("follow", "true"), ("tailLines", "0"), ("limitBytes", "4")]).unwrap();
    let mut cursor = FollowCursor::new(&options);
    cursor.skip(&stamped(1, "old"));
    let step = cursor.accept(&(stamped(1, "old") + &stamped(2, "new")), false);
    assert_eq!(
        step.chunks,
        ["new\n"],
        "limitBytes counts only what is sent"
    );
    assert!(step.exhausted);
}
