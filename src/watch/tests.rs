//! Unit tests of the watch rules: ordering, no duplicates, no gaps,
//! resume, the compacted refusal, narrowing and framing.

use super::*;

fn v(key: &str, ts: u64, value: Option<&str>) -> RawVersion {
    RawVersion {
        key: key.as_bytes().to_vec(),
        version: Timestamp(ts),
        value: value.map(|s| s.as_bytes().to_vec()),
    }
}

fn ts_of(events: &[WatchEvent]) -> Vec<u64> {
    events.iter().map(|e| e.ts().0).collect()
}

#[test]
fn a_cursor_waits_until_the_frontier_passes_it() {
    let now = Instant::now();
    let c = Cursor::new(Timestamp(100), now);
    assert_eq!(c.step(Timestamp(50), Timestamp::ZERO), Ok(Step::Wait));
    assert_eq!(c.step(Timestamp(100), Timestamp::ZERO), Ok(Step::Wait));
    assert_eq!(
        c.step(Timestamp(101), Timestamp::ZERO),
        Ok(Step::Scan {
            after: Timestamp(100),
            upto: Timestamp(101)
        })
    );
}

#[test]
fn events_come_in_hlc_then_key_order_and_move_the_cursor() {
    let now = Instant::now();
    let mut c = Cursor::new(Timestamp(10), now);
    // As the storage scan returns them: key order, newest first per key.
    let got = c.accept(
        Timestamp(40),
        vec![
            v("a", 30, None),
            v("a", 20, Some("a2")),
            v("b", 20, Some("b1")),
            v("b", 15, Some("b0")),
        ],
        now,
    );
    assert_eq!(ts_of(&got), vec![15, 20, 20, 30]);
    assert_eq!(
        got[1],
        WatchEvent::Put {
            key: b"a".to_vec(),
            value: b"a2".to_vec(),
            ts: Timestamp(20)
        }
    );
    assert_eq!(
        got[3],
        WatchEvent::Delete {
            key: b"a".to_vec(),
            ts: Timestamp(30)
        }
    );
    assert_eq!(c.after(), Timestamp(40));
    assert_eq!(c.step(Timestamp(40), Timestamp::ZERO), Ok(Step::Wait));
}

#[test]
fn nothing_at_or_below_the_cursor_is_ever_emitted() {
    // W5: a resumed watch (after a partition) never goes back in time. The
    // scan's bounds exclude such versions; the cursor drops them anyway.
    let now = Instant::now();
    let mut c = Cursor::new(Timestamp(10), now);
    let versions = vec![v("a", 10, Some("old")), v("a", 11, Some("new"))];
    let got = if cfg!(debug_assertions) {
        // The debug assertion flags the caller's bug; check the filter on
        // the valid part only.
        c.accept(Timestamp(20), versions[1..].to_vec(), now)
    } else {
        c.accept(Timestamp(20), versions, now)
    };
    assert_eq!(ts_of(&got), vec![11]);
}

/// A model of a span's history (every version ever written, as all
/// regions converge to it), split into intervals at successive frontiers
/// by one watch, and a second watch resumed from any point the first saw.
#[test]
fn resuming_from_any_seen_point_yields_the_rest_exactly_once() {
    let history: Vec<RawVersion> = (1..=40)
        .map(|i| {
            let key = format!("k{}", i % 3);
            let value = (i % 5 != 0).then(|| format!("v{i}"));
            v(&key, i * 10, value.as_deref())
        })
        .collect();
    let in_interval = |after: u64, upto: u64| -> Vec<RawVersion> {
        history
            .iter()
            .filter(|x| x.version.0 > after && x.version.0 <= upto)
            .cloned()
            .collect()
    };
    let frontiers = [35u64, 35, 90, 91, 200, 255, 400];
    let now = Instant::now();
    let mut seen = Vec::new();
    let mut c = Cursor::new(Timestamp::ZERO, now);
    for f in frontiers {
        if let Ok(Step::Scan { after, upto }) = c.step(Timestamp(f), Timestamp::ZERO) {
            seen.extend(c.accept(upto, in_interval(after.0, upto.0), now));
            seen.extend(c.progress(now, true));
        }
    }
    let all: Vec<u64> = (1..=40).map(|i| i * 10).collect();
    let events: Vec<u64> = seen
        .iter()
        .filter(|e| !matches!(e, WatchEvent::Progress { .. }))
        .map(|e| e.ts().0)
        .collect();
    assert_eq!(events, all, "one watch sees everything once, in order");
    // Stop after any prefix of what was seen; resume from its resume point.
    for cut in 0..seen.len() {
        let mut resume = ResumePoint(Timestamp::ZERO);
        for (i, e) in seen[..cut].iter().enumerate() {
            // One frame per interval here, so the next event is `seen[i + 1]`
            // only while it is in the cut-off prefix's frame; timestamps
            // are distinct in this history.
            resume.observe(e, seen[..cut].get(i + 1));
        }
        let mut again = Cursor::new(resume.0, now);
        let mut rest = Vec::new();
        if let Ok(Step::Scan { after, upto }) = again.step(Timestamp(400), Timestamp::ZERO) {
            rest = again.accept(upto, in_interval(after.0, upto.0), now);
        }
        let mut joined: Vec<u64> = seen[..cut]
            .iter()
            .filter(|e| !matches!(e, WatchEvent::Progress { .. }))
            .map(|e| e.ts().0)
            .collect();
        joined.extend(ts_of(&rest));
        assert_eq!(joined, all, "cut after {cut} frames");
    }
}

#[test]
fn a_cursor_below_the_gc_horizon_is_refused_naming_the_horizon() {
    let now = Instant::now();
    let c = Cursor::new(Timestamp(10), now);
    let err = c.step(Timestamp(100), Timestamp(50)).unwrap_err();
    assert_eq!(
        err,
        WatchError::Compacted {
            requested: Timestamp(10),
            horizon: Timestamp(50)
        }
    );
    assert_eq!(err.resume_from(), Timestamp(50));
    let api = err.to_api();
    assert_eq!(api.code, ErrorCode::Compacted);
    assert!(api
        .message
        .contains("oldest timestamp a watch can resume from"));
    // At the horizon the interval is intact (gc keeps what is above it).
    let at = Cursor::new(Timestamp(50), now);
    assert!(at.step(Timestamp(100), Timestamp(50)).is_ok());
}

#[test]
fn a_lagged_end_names_the_last_delivered_event() {
    let err = WatchError::Lagged {
        resume_from: Timestamp(77),
        stalled_ms: 5000,
    };
    assert_eq!(err.resume_from(), Timestamp(77));
    assert_eq!(err.to_api().code, ErrorCode::WatchLagged);
    assert!(err.to_string().contains("watch again from"));
}

#[test]
fn progress_is_sent_when_forced_or_quiet_and_only_when_the_cursor_moved() {
    let t0 = Instant::now();
    let mut c = Cursor::new(Timestamp(10), t0);
    assert_eq!(c.progress(t0, true), None, "the cursor has not moved");
    c.accept(Timestamp(20), Vec::new(), t0);
    assert_eq!(c.progress(t0, false), None, "not quiet long enough");
    let later = t0 + Duration::from_millis(PROGRESS_INTERVAL_MS);
    assert_eq!(
        c.progress(later, false),
        Some(WatchEvent::Progress {
            frontier: Timestamp(20)
        })
    );
    assert_eq!(c.progress(later, true), None, "nothing new since");
    c.accept(Timestamp(30), vec![v("a", 25, Some("x"))], later);
    assert_eq!(
        c.progress(later, true),
        Some(WatchEvent::Progress {
            frontier: Timestamp(30)
        })
    );
}

#[test]
fn narrowing_halves_until_one_timestamp_wide() {
    assert_eq!(narrow(Timestamp(10), Timestamp(20)), Some(Timestamp(15)));
    assert_eq!(narrow(Timestamp(10), Timestamp(12)), Some(Timestamp(11)));
    assert_eq!(narrow(Timestamp(10), Timestamp(11)), None);
    assert_eq!(narrow(Timestamp(10), Timestamp(10)), None);
}

#[test]
fn frames_keep_order_and_respect_both_bounds() {
    let big = "x".repeat(MAX_FRAME_BYTES);
    let mut events: Vec<WatchEvent> = (0..(MAX_FRAME_EVENTS as u64 + 3))
        .map(|i| WatchEvent::Delete {
            key: b"k".to_vec(),
            ts: Timestamp(i + 1),
        })
        .collect();
    events.push(WatchEvent::Put {
        key: b"big".to_vec(),
        value: big.into_bytes(),
        ts: Timestamp(10_000),
    });
    let frames = frames(events.clone());
    assert_eq!(
        frames.len(),
        3,
        "full frame, the rest, the large value alone"
    );
    assert_eq!(frames[0].len(), MAX_FRAME_EVENTS);
    assert_eq!(frames[2].len(), 1);
    assert_eq!(frames.concat(), events);
    assert!(super::frames(Vec::new()).is_empty());
}

#[test]
fn a_transaction_never_straddles_frames_and_the_resume_point_waits_for_all_of_it() {
    let group: Vec<WatchEvent> = (0..(MAX_FRAME_EVENTS + 5))
        .map(|i| WatchEvent::Delete {
            key: format!("k{i:04}").into_bytes(),
            ts: Timestamp(7),
        })
        .collect();
    let mut events = vec![WatchEvent::Delete {
        key: b"first".to_vec(),
        ts: Timestamp(5),
    }];
    events.extend(group.clone());
    let frames = frames(events);
    assert_eq!(frames.len(), 1, "the timestamp-7 group stays whole");
    let mut resume = ResumePoint(Timestamp::ZERO);
    resume.observe(&frames[0][0], frames[0].get(1));
    assert_eq!(resume, ResumePoint(Timestamp(5)));
    resume.observe(&frames[0][1], frames[0].get(2));
    assert_eq!(
        resume,
        ResumePoint(Timestamp(6)),
        "inside the group: before it"
    );
    let last = frames[0].len() - 1;
    resume.observe(&frames[0][last], None);
    assert_eq!(resume, ResumePoint(Timestamp(7)));
}

#[test]
fn spans_of_a_key_and_of_a_prefix() {
    let k = WatchSpan::key(b"app/a");
    assert!(k.contains(b"app/a"));
    assert!(!k.contains(b"app/ab"));
    let p = WatchSpan::prefix(b"app/");
    assert!(p.contains(b"app/ab"));
    assert!(!p.contains(b"apq"));
    assert!(WatchSpan::prefix(b"").contains(b"anything"));
}

#[test]
fn hlc_timestamps_parse_in_both_printed_forms_and_bad_ones_are_refused() {
    let ts = Timestamp::from_parts(1_718_000_000_000, 3).unwrap();
    assert_eq!(parse_hlc(&ts.to_string()), Ok(ts));
    assert_eq!(parse_hlc(&ts.0.to_string()), Ok(ts));
    for bad in [
        "",
        "abc",
        "-5",
        "1.2.3",
        "12.",
        ".5",
        "1e9",
        "99999999999999999999",
        "1000.1",
    ] {
        let err = parse_hlc(bad).unwrap_err();
        assert_eq!(err.code, ErrorCode::InvalidArgument, "{bad:?}");
        assert!(err.message.contains("malformed HLC timestamp"), "{bad:?}");
    }
}

#[test]
fn a_from_far_in_the_future_is_refused_and_near_future_accepted() {
    let now = Timestamp::from_parts(1_718_000_000_000, 0).unwrap();
    let soon = Timestamp::from_parts(1_718_000_060_000, 0).unwrap();
    assert!(check_from(soon, now).is_ok());
    let far = Timestamp::from_parts(1_718_000_000_000 + MAX_FROM_AHEAD_MS as i64 + 1, 0).unwrap();
    assert_eq!(
        check_from(far, now).unwrap_err().code,
        ErrorCode::InvalidArgument
    );
}
