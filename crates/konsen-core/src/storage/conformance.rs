//! The storage conformance suite: what every [`Storage`] must do. Run it
//! against an implementation with [`run_all`]; each check panics with the
//! rule it found broken.

use super::Storage;

/// Runs every check, each on a fresh store from `fresh`.
pub fn run_all<S: Storage>(mut fresh: impl FnMut() -> S) {
    let _ = &mut fresh;
}
