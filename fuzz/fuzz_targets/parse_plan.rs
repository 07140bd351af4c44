//! Fuzz target: any bytes through the whole frontend (parse, instructions,
//! plan of every stage, dump) must return, never panic.
#![no_main]

use kiln::plan::{plan_source, NoResolver, PlanOptions};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    let opts = PlanOptions {
        all_stages: true,
        ..PlanOptions::default()
    };
    let _ = plan_source(&text, &opts, &NoResolver);
    let _ = kiln::dockerfile::dump::dump(&text);
});
