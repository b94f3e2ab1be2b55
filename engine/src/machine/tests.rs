//! The call's lifecycle on virtual time: every rejoin trigger, the backoff, FLOOD_WAIT, giving
//! up, the ends, the roster's version gaps and refetches, the update stream's resubscription
//! and the `checkGroupCall` poll.

use super::*;

const CALL: CallId = CallId {
    id: 7,
    access_hash: 1,
};
const OWN: u32 = 1000;

fn policy() -> RejoinPolicy {
    RejoinPolicy {
        max_attempts: 3,
        initial_backoff: Duration::from_millis(500),
        max_backoff: Duration::from_secs(30),
    }
}

fn person(source: u32, peer: i64) -> Participant {
    Participant {
        peer: PeerId::User(peer),
        source,
        muted: false,
        can_self_unmute: true,
        left: false,
        just_joined: true,
        is_self: false,
        min: false,
        date: 0,
        volume: None,
        raise_hand_rating: None,
        video_stopped: true,
        video: None,
        presentation: None,
    }
}

fn left(source: u32, peer: i64) -> Participant {
    Participant {
        left: true,
        ..person(source, peer)
    }
}

fn drain(m: &mut Machine) -> Vec<Action> {
    std::iter::from_fn(|| m.poll_action()).collect()
}

/// A machine past its start-up actions, connected.
fn connected(t0: Instant) -> Machine {
    let mut m = Machine::new(policy(), OWN, Some(CALL));
    let start = drain(&mut m);
    assert!(matches!(
        start[..],
        [
            Action::Emit(CallEvent::State(ConnectionState::Connecting)),
            Action::FetchRoster(_)
        ]
    ));
    m.handle(
        t0,
        Input::Roster {
            participants: vec![],
            version: Some(1),
            complete: true,
        },
    );
    m.handle(t0, Input::Connected);
    assert!(matches!(
        drain(&mut m)[..],
        [Action::Emit(CallEvent::State(ConnectionState::Connected))]
    ));
    m
}

fn failed() -> RejoinCause {
    RejoinCause::ConnectionFailed {
        detail: "ICE consent expired".into(),
    }
}

fn network_error() -> Error {
    Error::Signaling(groupcall_signaling::Error::Network {
        method: "phone.joinGroupCall",
        message: "connection reset".into(),
    })
}

fn rejoining_attempt(actions: &[Action]) -> Option<(u32, RejoinCause)> {
    actions.iter().find_map(|a| match a {
        Action::Emit(CallEvent::State(ConnectionState::Rejoining { attempt, cause })) => {
            Some((*attempt, cause.clone()))
        }
        _ => None,
    })
}

fn ended(actions: &[Action]) -> Option<&EndReason> {
    actions.iter().find_map(|a| match a {
        Action::End(r) => Some(r),
        _ => None,
    })
}

#[test]
fn a_failed_transport_rejoins_after_the_backoff_and_counts_once_connected() {
    let t0 = Instant::now();
    let mut m = connected(t0);
    m.handle(t0, Input::ConnectionLost(failed()));
    let a = drain(&mut m);
    assert!(matches!(a[0], Action::CloseConnection));
    assert_eq!(rejoining_attempt(&a), Some((1, failed())));
    assert!(!m.has_connection());
    assert_eq!(m.poll_timeout(), Some(t0 + Duration::from_millis(500)));

    m.handle_timeout(t0 + Duration::from_millis(499));
    assert!(drain(&mut m).is_empty(), "nothing before the backoff");
    m.handle_timeout(t0 + Duration::from_millis(500));
    assert!(matches!(drain(&mut m)[..], [Action::Join]));
    assert_eq!(m.poll_timeout(), None, "no second join while one is out");

    m.handle(
        t0 + Duration::from_millis(600),
        Input::Joined {
            ssrc: 2000,
            call: None,
        },
    );
    let a = drain(&mut m);
    assert!(matches!(
        a[0],
        Action::Emit(CallEvent::Rejoined { ssrc: 2000 })
    ));
    assert_eq!(m.own_ssrc(), 2000);
    assert_eq!(m.rejoins(), 0, "a rejoin counts once its connection is up");
    m.handle(t0 + Duration::from_millis(700), Input::Connected);
    assert_eq!(m.rejoins(), 1);
    assert!(matches!(
        drain(&mut m)[..],
        [Action::Emit(CallEvent::State(ConnectionState::Connected))]
    ));
}

#[test]
fn failed_joins_back_off_exponentially_then_the_call_gives_up() {
    let t0 = Instant::now();
    let mut m = connected(t0);
    m.handle(t0, Input::ConnectionLost(failed()));
    drain(&mut m);
    let mut now = t0;
    let mut waits = Vec::new();
    for _ in 0..3 {
        let at = m.poll_timeout().expect("a join is scheduled");
        waits.push(at - now);
        m.handle_timeout(at);
        assert!(matches!(drain(&mut m)[..], [Action::Join]));
        now = at;
        m.handle(now, Input::JoinFailed(network_error()));
        let a = drain(&mut m);
        if let Some(reason) = ended(&a) {
            let EndReason::RejoinFailed { attempts, cause } = reason else {
                panic!("{reason:?}");
            };
            assert_eq!(*attempts, 3);
            assert!(matches!(cause, RejoinCause::JoinFailed { .. }));
            assert!(cause.to_string().contains("connection reset"), "{cause}");
        }
    }
    assert_eq!(
        waits,
        [500, 1000, 2000].map(Duration::from_millis).to_vec(),
        "the backoff doubles"
    );
    assert!(m.is_ended());
    m.handle_timeout(now + Duration::from_secs(60));
    assert!(drain(&mut m).is_empty(), "an ended call asks for nothing");
}

#[test]
fn a_rejoin_that_never_connects_counts_towards_the_limit() {
    let t0 = Instant::now();
    let mut m = connected(t0);
    m.handle(t0, Input::ConnectionLost(failed()));
    m.handle_timeout(t0 + Duration::from_secs(1));
    m.handle(
        t0 + Duration::from_secs(1),
        Input::Joined {
            ssrc: 2000,
            call: None,
        },
    );
    drain(&mut m);
    // The new connection fails before it ever connects: attempt 2, not 1 again.
    m.handle(
        t0 + Duration::from_secs(20),
        Input::ConnectionLost(failed()),
    );
    let a = drain(&mut m);
    assert_eq!(rejoining_attempt(&a).map(|(n, _)| n), Some(2));
    assert_eq!(
        m.poll_timeout(),
        Some(t0 + Duration::from_secs(20) + Duration::from_millis(1000))
    );
}

#[test]
fn flood_wait_on_a_rejoin_is_waited_out() {
    let t0 = Instant::now();
    let mut m = connected(t0);
    m.handle(t0, Input::ConnectionLost(failed()));
    m.handle_timeout(t0 + Duration::from_millis(500));
    drain(&mut m);
    let t1 = t0 + Duration::from_millis(600);
    m.handle(
        t1,
        Input::JoinFailed(Error::Signaling(groupcall_signaling::Error::FloodWait {
            method: "phone.joinGroupCall",
            seconds: 7,
            max_wait: Duration::from_secs(5),
        })),
    );
    let a = drain(&mut m);
    assert_eq!(rejoining_attempt(&a).map(|(n, _)| n), Some(2));
    assert_eq!(
        m.poll_timeout(),
        Some(t1 + Duration::from_secs(7)),
        "FLOOD_WAIT's 7 s, not the backoff's 1 s"
    );
}

#[test]
fn a_call_that_is_over_is_not_rejoined() {
    let t0 = Instant::now();
    let mut m = connected(t0);
    m.handle(t0, Input::ConnectionLost(failed()));
    m.handle_timeout(t0 + Duration::from_secs(1));
    drain(&mut m);
    m.handle(
        t0 + Duration::from_secs(1),
        Input::JoinFailed(Error::Signaling(
            groupcall_signaling::Error::GroupCallForbidden {
                method: "phone.joinGroupCall",
            },
        )),
    );
    let a = drain(&mut m);
    assert!(matches!(
        ended(&a),
        Some(EndReason::RejoinFailed { attempts: 1, .. })
    ));
    assert!(m.is_ended());
}

#[test]
fn removal_by_the_server_rejoins_but_another_source_does_not() {
    let t0 = Instant::now();
    let mut m = connected(t0);
    m.handle(
        t0,
        Input::Update(SignalingUpdate::SelfRemoved {
            call: CALL,
            source: 4242,
        }),
    );
    assert!(drain(&mut m).is_empty(), "not our source");
    m.handle(
        t0,
        Input::Update(SignalingUpdate::SelfRemoved {
            call: CallId { id: 8, ..CALL },
            source: OWN,
        }),
    );
    assert!(drain(&mut m).is_empty(), "not our call");
    m.handle(
        t0,
        Input::Update(SignalingUpdate::SelfRemoved {
            call: CALL,
            source: OWN,
        }),
    );
    let a = drain(&mut m);
    assert!(matches!(a[0], Action::CloseConnection));
    assert_eq!(
        rejoining_attempt(&a),
        Some((1, RejoinCause::RemovedByServer))
    );
}

#[test]
fn while_disconnected_check_group_call_is_polled_and_a_missing_source_rejoins() {
    let t0 = Instant::now();
    let mut m = connected(t0);
    assert_eq!(m.poll_timeout(), None, "no poll while connected");
    m.handle(t0, Input::Disconnected);
    assert!(matches!(
        drain(&mut m)[..],
        [Action::Emit(CallEvent::State(
            ConnectionState::Disconnected
        ))]
    ));
    assert_eq!(m.poll_timeout(), Some(t0 + CHECK_INTERVAL));
    m.handle_timeout(t0 + CHECK_INTERVAL);
    assert!(matches!(drain(&mut m)[..], [Action::Check(OWN)]));
    m.handle(
        t0 + CHECK_INTERVAL,
        Input::Checked {
            source: OWN,
            present: true,
        },
    );
    assert!(drain(&mut m).is_empty(), "still counted: wait on");
    assert_eq!(m.poll_timeout(), Some(t0 + CHECK_INTERVAL * 2));
    m.handle_timeout(t0 + CHECK_INTERVAL * 2);
    assert!(matches!(drain(&mut m)[..], [Action::Check(OWN)]));
    m.handle(
        t0 + CHECK_INTERVAL * 2,
        Input::Checked {
            source: OWN,
            present: false,
        },
    );
    let a = drain(&mut m);
    assert!(matches!(a[0], Action::CloseConnection));
    assert_eq!(
        rejoining_attempt(&a),
        Some((1, RejoinCause::NotCountedByServer))
    );
}

#[test]
fn recovering_stops_the_poll_and_a_late_check_answer_is_ignored() {
    let t0 = Instant::now();
    let mut m = connected(t0);
    m.handle(t0, Input::Disconnected);
    m.handle_timeout(t0 + CHECK_INTERVAL);
    drain(&mut m);
    m.handle(t0 + CHECK_INTERVAL, Input::Recovered);
    assert!(matches!(
        drain(&mut m)[..],
        [Action::Emit(CallEvent::State(ConnectionState::Connected))]
    ));
    assert_eq!(m.poll_timeout(), None);
    m.handle(
        t0 + CHECK_INTERVAL,
        Input::Checked {
            source: OWN,
            present: false,
        },
    );
    assert!(
        drain(&mut m).is_empty(),
        "connected again: the answer is stale"
    );
}

#[test]
fn discard_and_joined_elsewhere_end_the_call() {
    let t0 = Instant::now();
    let mut m = connected(t0);
    m.handle(
        t0,
        Input::Update(SignalingUpdate::CallDiscarded {
            call: CallId { id: 99, ..CALL },
        }),
    );
    assert!(drain(&mut m).is_empty(), "another call's end");
    m.handle(
        t0,
        Input::Update(SignalingUpdate::CallDiscarded { call: CALL }),
    );
    assert_eq!(ended(&drain(&mut m)), Some(&EndReason::Discarded));
    // Nothing after the end, not even a failure.
    m.handle(t0, Input::ConnectionLost(failed()));
    assert!(drain(&mut m).is_empty());

    let mut m = connected(t0);
    m.handle(
        t0,
        Input::Update(SignalingUpdate::JoinedElsewhere {
            call: CALL,
            source: 5,
        }),
    );
    assert_eq!(ended(&drain(&mut m)), Some(&EndReason::JoinedElsewhere));
}

fn participants(version: i32, list: Vec<Participant>) -> Input {
    Input::Update(SignalingUpdate::Participants {
        call: CALL,
        version,
        participants: list,
    })
}

fn fetches(actions: &[Action]) -> usize {
    actions
        .iter()
        .filter(|a| matches!(a, Action::FetchRoster(q) if q.sources.is_empty()))
        .count()
}

#[test]
fn a_gap_in_participant_versions_refetches_the_roster_once() {
    let t0 = Instant::now();
    let mut m = connected(t0); // at version 1
    m.handle(t0, participants(2, vec![person(10, 1)]));
    let a = drain(&mut m);
    assert_eq!(fetches(&a), 0, "the next version needs no fetch");
    assert!(a.iter().any(|a| matches!(
        a,
        Action::Named {
            ssrc: 10,
            peer: PeerId::User(1)
        }
    )));
    assert!(m.is_known(10));

    m.handle(t0, participants(5, vec![person(11, 2)]));
    let a = drain(&mut m);
    assert_eq!(fetches(&a), 1, "versions 3 and 4 were missed");
    assert!(m.is_known(11), "the update itself is still applied");
    m.handle(t0, participants(8, vec![]));
    assert_eq!(fetches(&drain(&mut m)), 0, "one fetch at a time");

    // A stale update (older than what we have) changes nothing.
    m.handle(t0, participants(4, vec![left(10, 1)]));
    assert!(drain(&mut m).is_empty());
    assert!(m.is_known(10));

    // The fetch answers: 11 is gone, 12 is new.
    m.handle(
        t0,
        Input::Roster {
            participants: vec![person(10, 1), person(12, 3)],
            version: Some(9),
            complete: true,
        },
    );
    let a = drain(&mut m);
    assert!(a.iter().any(|a| matches!(a, Action::Gone { ssrc: 11 })));
    assert!(a
        .iter()
        .any(|a| matches!(a, Action::Emit(CallEvent::ParticipantLeft(p)) if p.source == 11)));
    assert!(a
        .iter()
        .any(|a| matches!(a, Action::Named { ssrc: 12, .. })));
    assert!(!m.is_known(11) && m.is_known(12));
    m.handle(t0, participants(10, vec![]));
    assert_eq!(fetches(&drain(&mut m)), 0, "back in step at version 9");
}

#[test]
fn unnumbered_updates_are_applied_without_version_tracking() {
    let t0 = Instant::now();
    let mut m = connected(t0); // at version 1
    m.handle(t0, participants(0, vec![person(30, 3)]));
    assert!(m.is_known(30), "version 0 means not numbered, not stale");
    m.handle(t0, participants(0, vec![left(30, 3)]));
    assert!(!m.is_known(30));
    m.handle(t0, participants(2, vec![]));
    assert_eq!(fetches(&drain(&mut m)), 0, "still in step at version 1");
}

#[test]
fn roster_events_follow_joins_changes_and_leaves_and_skip_our_own_source() {
    let t0 = Instant::now();
    let mut m = connected(t0);
    m.handle(t0, participants(2, vec![person(OWN, 1), person(20, 2)]));
    let a = drain(&mut m);
    assert_eq!(
        a.iter()
            .filter(|a| matches!(a, Action::Emit(CallEvent::ParticipantJoined(_))))
            .count(),
        1,
        "our own source is not a participant to us"
    );
    let muted = Participant {
        muted: true,
        ..person(20, 2)
    };
    m.handle(t0, participants(3, vec![muted.clone()]));
    assert!(matches!(
        drain(&mut m)[..],
        [Action::Emit(CallEvent::ParticipantUpdated(
            ParticipantInfo { muted: true, .. }
        ))]
    ));
    m.handle(t0, participants(4, vec![muted]));
    assert!(drain(&mut m).is_empty(), "no change, no event");
    m.handle(t0, participants(5, vec![left(20, 2)]));
    let a = drain(&mut m);
    assert!(matches!(a[0], Action::Gone { ssrc: 20 }));
    assert!(matches!(a[1], Action::Emit(CallEvent::ParticipantLeft(_))));
}

#[test]
fn an_ended_update_stream_is_resubscribed_with_backoff_and_the_roster_refetched() {
    let t0 = Instant::now();
    let mut m = connected(t0);
    m.handle(t0, Input::UpdatesClosed);
    assert_eq!(m.poll_timeout(), Some(t0 + Duration::from_secs(1)));
    m.handle_timeout(t0 + Duration::from_secs(1));
    assert!(matches!(drain(&mut m)[..], [Action::Resubscribe]));
    assert_eq!(m.poll_timeout(), None);
    // The new stream ends at once too: the wait doubles.
    let t1 = t0 + Duration::from_secs(1);
    m.handle(t1, Input::UpdatesClosed);
    assert_eq!(m.poll_timeout(), Some(t1 + Duration::from_secs(2)));
    m.handle_timeout(t1 + Duration::from_secs(2));
    assert!(matches!(drain(&mut m)[..], [Action::Resubscribe]));
    m.handle(t1 + Duration::from_secs(2), Input::Resubscribed);
    assert_eq!(
        fetches(&drain(&mut m)),
        1,
        "missed updates come from a fetch"
    );

    // A backend's explicit end of our call's stream does the same.
    let t2 = t1 + Duration::from_secs(3);
    m.handle(
        t2,
        Input::Update(SignalingUpdate::Ended {
            call: Some(CALL),
            reason: "the server closed the event stream".into(),
        }),
    );
    assert_eq!(m.poll_timeout(), Some(t2 + Duration::from_secs(1)));
}

#[test]
fn an_unsolicited_broadcast_answer_ends_the_call() {
    let t0 = Instant::now();
    let mut m = connected(t0);
    m.handle(
        t0,
        Input::Update(SignalingUpdate::Connection {
            presentation: false,
            answer: Box::new(ServerAnswer::Stream),
            answer_json: r#"{"stream":true}"#.into(),
        }),
    );
    let a = drain(&mut m);
    let Some(EndReason::Unsupported { error }) = ended(&a) else {
        panic!("{a:?}");
    };
    assert!(error.to_string().contains("livestream"), "{error}");
}

#[test]
fn the_roster_is_bounded() {
    let t0 = Instant::now();
    let mut m = connected(t0);
    let many: Vec<Participant> = (0..MAX_ROSTER as u32 + 10)
        .map(|i| person(10_000 + i, i64::from(i)))
        .collect();
    m.handle(
        t0,
        Input::Roster {
            participants: many,
            version: Some(2),
            complete: true,
        },
    );
    drain(&mut m);
    assert_eq!(m.roster.len(), MAX_ROSTER);
    assert_eq!(m.roster_overflow(), 10);
}

fn camera(endpoint: &str, first: u32) -> ParticipantVideo {
    ParticipantVideo {
        endpoint: endpoint.into(),
        source_groups: vec![groupcall_signaling::SourceGroup {
            semantics: "SIM".into(),
            sources: vec![first, first + 2, first + 4],
        }],
        audio_source: None,
        paused: false,
    }
}

fn video_events(actions: &[Action]) -> Vec<(VideoKind, VideoState)> {
    actions
        .iter()
        .filter_map(|a| match a {
            Action::Emit(CallEvent::Video { kind, state, .. }) => Some((*kind, *state)),
            _ => None,
        })
        .collect()
}

fn receiver_changes(actions: &[Action]) -> Vec<(VideoKind, bool)> {
    actions
        .iter()
        .filter_map(|a| match a {
            Action::Video { kind, video, .. } => Some((*kind, video.is_some())),
            _ => None,
        })
        .collect()
}

/// A participant's camera and screen: started, paused, stopped (`video_stopped`), a screen
/// share beside it, a partial entry that says nothing about video, and leaving, which stops
/// what was on.
#[test]
fn video_events_follow_the_roster_and_a_leave_stops_what_was_on() {
    use VideoKind::{Camera, Screen};
    use VideoState::{Paused, Started, Stopped};
    let t0 = Instant::now();
    let mut m = connected(t0);
    let on = Participant {
        video_stopped: false,
        video: Some(camera("cam", 21)),
        ..person(20, 2)
    };
    m.handle(t0, participants(2, vec![on.clone()]));
    let a = drain(&mut m);
    assert_eq!(video_events(&a), [(Camera, Started)]);
    assert_eq!(receiver_changes(&a), [(Camera, true)]);
    let mut paused = on.clone();
    paused.video.as_mut().unwrap().paused = true;
    m.handle(t0, participants(3, vec![paused.clone()]));
    let a = drain(&mut m);
    assert_eq!(video_events(&a), [(Camera, Paused)]);
    assert!(
        receiver_changes(&a).is_empty(),
        "same sources: the stream stays"
    );
    let sharing = Participant {
        presentation: Some(camera("screen", 41)),
        ..on.clone()
    };
    m.handle(t0, participants(4, vec![sharing.clone()]));
    let a = drain(&mut m);
    assert_eq!(video_events(&a), [(Camera, Started), (Screen, Started)]);
    assert_eq!(receiver_changes(&a), [(Screen, true)]);
    let min = Participant {
        min: true,
        video: None,
        presentation: None,
        ..sharing.clone()
    };
    m.handle(t0, participants(5, vec![min]));
    assert!(
        video_events(&drain(&mut m)).is_empty(),
        "a partial entry keeps the video"
    );
    let stopped = Participant {
        video_stopped: true,
        ..sharing.clone()
    };
    m.handle(t0, participants(6, vec![stopped]));
    let a = drain(&mut m);
    assert_eq!(video_events(&a), [(Camera, Stopped)]);
    assert_eq!(receiver_changes(&a), [(Camera, false)]);
    m.handle(t0, participants(7, vec![left(20, 2)]));
    let a = drain(&mut m);
    assert_eq!(video_events(&a), [(Screen, Stopped)]);
    assert!(matches!(a[0], Action::Gone { ssrc: 20 }));
}
