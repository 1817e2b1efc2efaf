//! Property-based fuzzing of the Home Assistant command decoder (`…/set` payloads come from any
//! MQTT client): never a panic; a refusal says why.

use proptest::prelude::*;
use zedops_agent::ha::parse_command;

proptest! {
    #[test]
    fn any_set_payload(p in proptest::collection::vec(any::<u8>(), 0..256), word in "(?i)[ \\t\\n]*(start|stop|restart|on|off|ON|OFF|PRESS)[ \\t\\n\\x00]*") {
        for bytes in [p, word.into_bytes()] {
            if let Err(why) = parse_command(&bytes) {
                prop_assert!(!why.to_string().is_empty());
            }
        }
    }
}
