//! Property-based fuzzing of what the API decodes from the broker (statuses, snapshots, events,
//! through the fleet cache and the replay checks): never a panic, whatever the bytes.

use proptest::prelude::*;
use zedops_api::cache::Fleet;
use zedops_api::freshness::Freshness;

fn payloads() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        proptest::collection::vec(any::<u8>(), 0..512),
        "[\\{\\}\\[\\]\":,0-9a-z_.\\- ]{0,256}".prop_map(String::into_bytes),
        (0usize..200, any::<u8>()).prop_map(|(at, b)| {
            let mut v = br#"{"agent":"m","state":"online","version":"1","hostname":"h","docker":{"state":"available","version":null,"api_version":null,"error":null},"started_at":"2026-01-01T00:00:00Z","counts":{"total":0,"running":0,"paused":0,"stopped":0},"updated_at":"2026-01-01T00:00:00Z"}"#.to_vec();
            let i = at % v.len();
            v[i] = b;
            v
        }),
    ]
}

proptest! {
    #[test]
    fn broker_messages(p in payloads(), ts in any::<u64>(), now in any::<u64>()) {
        let fleet = Fleet::default();
        let _ = fleet.apply_status("m", &p);
        fleet.apply_snapshot("m", &p);
        let _ = fleet.apply_event("m", &p);
        let f = Freshness::default();
        let _ = f.status("m", ts, &p, now);
        let _ = f.snapshot("m", ts);
        let _ = f.event("m", ts, &p, now);
    }
}
