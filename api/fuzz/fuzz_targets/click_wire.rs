//! Click events as the worker reads them from Kafka: the protobuf value,
//! the trace context header, and the aggregation of what decodes.

#![no_main]

use libfuzzer_sys::fuzz_target;
use links::clicks::{
    Aggregator, UserAgentClassifier,
    wire::{self, SCHEMA_V1, TraceParent},
};

fuzz_target!(|data: &[u8]| {
    let _ = TraceParent::parse(data);
    let schema = Some(SCHEMA_V1.as_bytes());
    let Ok(event) = wire::decode(schema, data) else {
        return;
    };
    // A decoded event encodes to what decodes to itself.
    let encoded = wire::encode(&event);
    let again = wire::decode(schema, &encoded).expect("an encoded event decodes");
    assert_eq!(again, event);
    // And counts as one click, whatever its fields.
    let mut aggregator = Aggregator::new(UserAgentClassifier::shared());
    aggregator.record(&event);
    assert_eq!(aggregator.take().events(), 1);
});
