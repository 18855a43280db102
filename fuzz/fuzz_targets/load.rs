//! Bytes → what `runbook check FILE` does with a file: decode, parse the YAML, load and
//! validate the runbook (templates and Rhai compiled, references checked), link what it calls
//! (the bundled library), and render every problem found. Any panic, hang or runaway memory is
//! a bug in the loader.

#![no_main]

use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;
use runbook::library::{BUNDLED_PREFIX, Files, Library, LiveFiles, ReadError};
use runbook::link::{Assume, Resolver, link};
use runbook_steps::Registry;

/// Where the input pretends to be.
const ORIGIN: &str = "/fuzz/input.yaml";

/// The input as the one file on disk; the bundled library as it ships.
struct Input<'a>(&'a [u8]);

impl Files for Input<'_> {
    fn read(&self, origin: &str) -> Result<String, ReadError> {
        if origin == ORIGIN {
            return Ok(runbook::source::decode(self.0.to_vec())?);
        }
        if origin.starts_with(BUNDLED_PREFIX) {
            return LiveFiles.read(origin);
        }
        Err(ReadError::Unavailable(format!(
            "no file {origin} in a fuzz input"
        )))
    }
}

fuzz_target!(|data: &[u8]| {
    static REGISTRY: OnceLock<Registry> = OnceLock::new();
    let registry = REGISTRY.get_or_init(Registry::builtin);
    let library = Library::from_env();
    match link(
        ORIGIN,
        &Input(data),
        &Resolver::Library(&library),
        &Assume::Everything,
        registry,
    ) {
        Ok(book) => assert!(book.books.contains_key(ORIGIN)),
        Err(e) => {
            assert!(!e.diags.is_empty(), "a failed load without a problem");
            let _ = e.diags.render(&e.sources, false);
        }
    }
});
