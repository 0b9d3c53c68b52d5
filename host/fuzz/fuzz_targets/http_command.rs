//! Decoding a command from arbitrary HTTP parts never panics, and what
//! decodes is valid.
#![no_main]

use axum::http::{HeaderMap, HeaderName, HeaderValue};
use cqrs_wasi_host::fuzzing::decode_command;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|input: (String, String, String, String, Vec<(String, Vec<u8>)>, Vec<u8>)| {
    let (domain, entity_type, instance_key, command_type, raw_headers, body) = input;
    let mut headers = HeaderMap::new();
    for (name, value) in raw_headers {
        if let (Ok(name), Ok(value)) = (HeaderName::try_from(name), HeaderValue::from_bytes(&value)) {
            headers.append(name, value);
        }
    }
    let stream = (domain.clone(), entity_type.clone(), instance_key.clone());
    if let Ok(request) = decode_command((domain, entity_type, instance_key, command_type), &headers, &body) {
        // What decodes is what was sent, and its payload is JSON.
        assert_eq!(
            (request.stream.domain(), request.stream.entity_type(), request.stream.instance_key()),
            (stream.0.as_str(), stream.1.as_str(), stream.2.as_str())
        );
        assert!(serde_json::from_str::<serde_json::Value>(request.payload.get()).is_ok());
    }
});
