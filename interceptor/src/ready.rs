//! The tower idiom every layer of this crate follows in `call`: the inner
//! service that `poll_ready` readied handles this call, and a fresh clone
//! takes its place for the next one (a clone is not ready by itself).

/// The readied `service`, leaving a clone in its place.
pub(crate) fn take_ready<S: Clone>(service: &mut S) -> S {
    let fresh = service.clone();
    std::mem::replace(service, fresh)
}
