//! Arbitrary bytes into the frame decoder: it must return a frame or an
//! error, never panic or allocate beyond the frame; and what it accepts
//! must encode back to the very same bytes (one encoding per frame, so a
//! frame cannot be smuggled in two shapes).
#![no_main]

use libfuzzer_sys::fuzz_target;
use minishard::wire::{self, DEFAULT_FRAME_LIMIT};

fuzz_target!(|data: &[u8]| {
    if let Ok(frame) = wire::decode(data, DEFAULT_FRAME_LIMIT) {
        let again = wire::encode(&frame);
        assert_eq!(
            wire::decode(&again, DEFAULT_FRAME_LIMIT).as_ref(),
            Ok(&frame)
        );
        assert_eq!(
            again, data,
            "a frame decoded from bytes that are not its encoding"
        );
    }
});
