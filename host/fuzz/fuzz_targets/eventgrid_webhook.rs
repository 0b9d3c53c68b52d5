//! Decoding an Event Grid webhook delivery from arbitrary bytes never
//! panics, and what decodes has JSON data.
#![no_main]

use cqrs_wasi_host::fuzzing::{Delivery, decode_delivery};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|body: &[u8]| {
    if let Ok(Delivery::Notifications(notifications)) = decode_delivery(body) {
        for notification in notifications {
            assert!(serde_json::from_str::<serde_json::Value>(notification.data.get()).is_ok());
        }
    }
});
